/* native.h: semfs's own line protocol. One request per line, `VERB NAME
 * [ARGS]`; the semaphore commands (lock, unlock, relax, acquire, release,
 * limit, set) are parsed by the command module, the same as a write to a
 * file in the mount. Replies: `ok [key=value...]` or `err ERRNO message`. */
#ifndef SEMFS_NATIVE_H
#define SEMFS_NATIVE_H

#include "command.h"
#include "name.h"

#include <stdbool.h>
#include <stddef.h>

enum native_verb {
	NATIVE_COMMAND, /* `command` holds it */
	NATIVE_CREATE,	/* NAME [LIMIT] */
	NATIVE_DELETE,	/* NAME */
	NATIVE_STATUS,	/* [NAME] */
	NATIVE_WATCH,	/* NAME */
	NATIVE_PING,
	NATIVE_HELP,
	NATIVE_QUIT,
};

struct native_request {
	enum native_verb verb;
	char name[NAME_MAX_LENGTH + 1]; /* "" when the verb takes none */
	struct command command;
	bool has_limit;
	unsigned limit; /* create */
};

/* Parse one line (without its '\n'; a trailing '\r' is fine). Returns 1 for
 * a request, 0 for a blank line (no reply due), or -errno (EINVAL,
 * ENAMETOOLONG) with a message for the `err` reply. */
int native_parse(const char *line, size_t length, struct native_request *request, char *error,
		 size_t error_size);

/* Framing: find the first request line in a byte stream. Returns 1 with
 * `*line_length` (the '\n' not counted) when a line is complete, 0 when more
 * bytes are needed, -E2BIG when the line already exceeds COMMAND_LINE_MAX
 * bytes (the connection cannot recover its framing: close it). */
int native_frame(const char *data, size_t length, size_t *line_length);

/* The text `help` sends: one verb per line. */
extern const char native_help[];

#endif
