/* config.h: semfs's settings, their built-in defaults and the INI loader. */
#ifndef SEMFS_CONFIG_H
#define SEMFS_CONFIG_H

#include <limits.h>
#include <stddef.h>

struct config {
	char state_dir[PATH_MAX]; /* backing files: one per semaphore */
	unsigned default_limit;	  /* limit of a semaphore created without one */
	size_t journal_max;	  /* bytes of journal before it starts over */
};

#define CONFIG_JOURNAL_MIN 256
#define CONFIG_JOURNAL_MAX (64u << 20)

/* Warnings (unknown keys, malformed lines) go here, one message each. */
typedef void config_warning_fn(const char *message);

/* Built-in defaults; state_dir from /run, $XDG_RUNTIME_DIR or /tmp. */
void config_defaults(struct config *config);

/* Read an INI file over the current settings. Returns 0, or -1 with the first
 * bad value (as "FILE:LINE: message") in `error`; then `config` may be partly
 * updated and must not be used. */
int config_load(struct config *config, const char *path, config_warning_fn *warn, char *error,
		size_t error_size);

#endif
