/* e2e_net.h: talk to the daemon's network front-end over raw sockets on
 * 127.0.0.1, for end-to-end tests. Failures to connect or send fail the test. */
#ifndef SEMFS_TEST_E2E_NET_H
#define SEMFS_TEST_E2E_NET_H

#include <stdbool.h>

/* A connection to `port`, optionally from `source`; -errno if refused. */
int connect_from(const char *source, unsigned port);
int net_connect(void); /* to e2e.port; fails the test if refused */
void net_send(int fd, const char *text);
/* One line without its newline (static buffer), or NULL after `ms` or EOF. */
const char *net_line(int fd, int ms);
/* A line of any length, malloc'd, or NULL after `ms` or EOF. */
char *net_long_line(int fd, int ms);
void expect_line(int fd, const char *prefix);
/* A request and the start of its one-line reply. */
void ask(int fd, const char *request, const char *prefix);
/* True if the server closes (EOF or reset) within `ms`, ignoring data. */
bool closed_by_server(int fd, int ms);
/* Close with RST instead of FIN. */
void reset_connection(int fd);

#endif
