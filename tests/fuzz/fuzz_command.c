/* fuzz_command.c: the command parser shared by the mount and the network.
 * Whatever the bytes, a batch is all or nothing, every command it returns is
 * in range, and each of its lines parses alone to the same command. */
#include "command.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_command(const struct command *command)
{
	switch (command->verb) {
	case VERB_LOCK:
	case VERB_ACQUIRE:
		if (command->timeout != COMMAND_NO_TIMEOUT &&
		    !(command->timeout >= 0 && command->timeout <= COMMAND_TIMEOUT_MAX))
			abort();
		break;
	case VERB_LIMIT:
	case VERB_SET:
		if (command->number < 0 || command->number > COMMAND_NUMBER_MAX)
			abort();
		break;
	case VERB_UNLOCK:
	case VERB_RELAX:
	case VERB_RELEASE:
		break;
	default:
		abort(); /* a verb the parser does not know */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct command commands[COMMAND_BATCH_MAX];
	char error[256];

	error[0] = '\0';
	int count = command_parse_batch(text, size, commands, COMMAND_BATCH_MAX, error,
					sizeof(error));
	if (count < 0) {
		if ((count != -EINVAL && count != -E2BIG) || error[0] == '\0' ||
		    !memchr(error, '\0', sizeof(error)))
			abort(); /* every refusal says why */
		return 0;
	}
	if (count > COMMAND_BATCH_MAX)
		abort();

	/* The batch is its lines: parse them one by one and compare. */
	const char *cursor = text, *end = text + size;
	int seen = 0;
	while (cursor < end) {
		const char *newline = memchr(cursor, '\n', (size_t)(end - cursor));
		size_t length = newline ? (size_t)(newline - cursor) : (size_t)(end - cursor);
		const char *word, *scan = cursor;
		size_t word_length;
		if (command_next_word(&scan, cursor + length, &word, &word_length)) {
			struct command alone;
			if (seen >= count ||
			    command_parse(cursor, length, &alone, error, sizeof(error)) != 0)
				abort();
			check_command(&commands[seen]);
			if (alone.verb != commands[seen].verb ||
			    alone.number != commands[seen].number ||
			    memcmp(&alone.timeout, &commands[seen].timeout, sizeof(double)) != 0)
				abort();
			seen++;
		}
		cursor += length + 1;
	}
	if (seen != count)
		abort();
	return 0;
}
