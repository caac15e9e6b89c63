/* command.h: the one command language of semfs. A write to a semaphore file
 * and (later) a network line are parsed here into the same struct command. */
#ifndef SEMFS_COMMAND_H
#define SEMFS_COMMAND_H

#include <stdbool.h>
#include <stddef.h>

enum command_verb {
	VERB_LOCK,    /* P, unit outlives the writer */
	VERB_UNLOCK,  /* V */
	VERB_RELAX,   /* complete every current waiter */
	VERB_ACQUIRE, /* P, unit belongs to the open file / connection */
	VERB_RELEASE, /* V of an acquired unit */
	VERB_LIMIT,   /* change the capacity */
	VERB_SET,     /* set the value */
};

#define COMMAND_NO_TIMEOUT  (-1.0)
#define COMMAND_TIMEOUT_MAX 1e9	  /* seconds: ~31 years, "forever" in practice */
#define COMMAND_NUMBER_MAX  32767 /* SEMVMX: the kernel's largest semaphore value */
#define COMMAND_LINE_MAX    4096
#define COMMAND_BATCH_MAX   256 /* commands in one write */

struct command {
	enum command_verb verb;
	double timeout; /* lock/acquire: seconds, or COMMAND_NO_TIMEOUT */
	int number;	/* limit/set */
};

/* Parse one line (no newline). Returns 0, or -EINVAL with a message. */
int command_parse(const char *line, size_t length, struct command *out, char *error,
		  size_t error_size);

/* Parse newline-separated commands; blank lines are skipped. All or nothing:
 * on error nothing is returned. -EINVAL for a bad line (the message names its
 * number), -E2BIG for more than `max` commands. Returns the count otherwise. */
int command_parse_batch(const char *text, size_t length, struct command *out, size_t max,
			char *error, size_t error_size);

const char *command_verb_name(enum command_verb verb);

/* The words of a request: split the next blank-separated (space, tab, '\r')
 * word off [*cursor, end). false when only blanks are left. The network's
 * line dialect splits with it too. */
bool command_next_word(const char **cursor, const char *end, const char **word, size_t *length);

#endif
