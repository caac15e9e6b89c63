/* ace.h: the ACE network semaphore dialect, as a byte-stream parser. The
 * client sends `acquire:NAME|`, then `wait|` keep-alives and `release|`; the
 * server answers `wait|` (heartbeat), `locked|` and `ok|`. Bytes may arrive
 * split or coalesced anyhow; '\r' and '\n' between tokens are skipped (ACE's
 * server takes one trailing newline). Anything else is invalid: the server
 * closes the connection, as ACE does. */
#ifndef SEMFS_ACE_H
#define SEMFS_ACE_H

#include "name.h"

#include <stdbool.h>
#include <stddef.h>

#define ACE_PREFIX "acquire:"

enum ace_event {
	ACE_NONE,      /* need more bytes */
	ACE_ACQUIRE,   /* `name` holds the semaphore's name */
	ACE_KEEPALIVE, /* `wait|` */
	ACE_RELEASE,   /* `release|` */
	ACE_INVALID,   /* `error` says why; the parser stays invalid */
};

struct ace_parser {
	enum { ACE_START, ACE_NAME, ACE_TOKENS, ACE_BROKEN } state;
	char token[16]; /* a keep-alive or release token so far */
	size_t token_length;
	char name[NAME_MAX_LENGTH + 1];
	size_t name_length;
	char error[160];
};

/* 1: the bytes so far open an ACE request, 0: they do not (the native
 * dialect), -1: too few bytes to tell. */
int ace_detect(const char *data, size_t length);

void ace_init(struct ace_parser *parser);

/* Consume bytes until one event (or the end); returns the bytes consumed.
 * Feed the rest again after handling the event. */
size_t ace_feed(struct ace_parser *parser, const char *data, size_t length, enum ace_event *event);

/* The server's tokens. */
#define ACE_WAIT   "wait|"
#define ACE_LOCKED "locked|"
#define ACE_OK	   "ok|"

#endif
