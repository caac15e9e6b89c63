/* log.h: the daemon's one voice. To stderr in the foreground, syslog in the
 * background. Only the daemon logs; library modules return errors. */
#ifndef SEMFS_LOG_H
#define SEMFS_LOG_H

#include <stdbool.h>

void log_init(const char *ident, bool to_syslog, bool verbose);

/* log_warn appends ": strerror(errno)"; the x variants do not. */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
