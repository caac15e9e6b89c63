/* fuzz_native.c: the native dialect as a byte stream: framed into lines by
 * native_frame and parsed by native_parse, once whole and once cut where
 * chunks.h says, into a buffer of the server's size. Both must give the same
 * requests and errors; every accepted name passes name_check, every refusal
 * has a reason and a known errno. */
#include "chunks.h"
#include "name.h"
#include "native.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BUFFER_MAX (2 * COMMAND_LINE_MAX) /* the server's input bound */
#define RESULTS_MAX 4096

struct results {
	int result[RESULTS_MAX];
	size_t digest[RESULTS_MAX];
	size_t count;
	bool overlong; /* framing gave up: the server closes */
};

static size_t digest_of(const void *bytes, size_t length, size_t h)
{
	const unsigned char *p = bytes;
	for (size_t i = 0; i < length; i++)
		h = h * 33 + p[i];
	return h;
}

static void parse_line(const char *line, size_t length, struct results *results)
{
	struct native_request request;
	char error[256];

	error[0] = '\0';
	int r = native_parse(line, length, &request, error, sizeof(error));
	size_t digest = 5381;
	if (r == 1) {
		digest = digest_of(&request.verb, sizeof(request.verb), digest);
		digest = digest_of(request.name, strlen(request.name), digest);
		if (request.verb == NATIVE_COMMAND) {
			digest = digest_of(&request.command.verb, sizeof(request.command.verb),
					   digest);
			digest = digest_of(&request.command.number, sizeof(int), digest);
			digest = digest_of(&request.command.timeout, sizeof(double), digest);
		}
		if (request.has_limit && request.limit > COMMAND_NUMBER_MAX)
			abort();
		char reason[160];
		if (request.name[0] &&
		    name_check(request.name, strlen(request.name), reason, sizeof(reason)) != 0)
			abort(); /* an accepted name the rest of semfs would refuse */
	} else if (r < 0) {
		if ((r != -EINVAL && r != -ENAMETOOLONG) || error[0] == '\0')
			abort();
		digest = digest_of(error, strlen(error), digest);
	} else if (r != 0) {
		abort();
	}
	if (results->count < RESULTS_MAX) {
		results->result[results->count] = r;
		results->digest[results->count] = digest;
		results->count++;
	}
}

/* Take every complete line off the front of the buffer, as the server does. */
static size_t take_lines(const char *buffer, size_t length, struct results *results)
{
	size_t used = 0, line_length;

	for (;;) {
		int framed = native_frame(buffer + used, length - used, &line_length);
		if (framed < 0) {
			results->overlong = true;
			return used;
		}
		if (framed == 0)
			return used;
		if (line_length > COMMAND_LINE_MAX || buffer[used + line_length] != '\n')
			abort();
		parse_line(buffer + used, line_length, results);
		used += line_length + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct results whole, split;
	static char buffer[BUFFER_MAX];
	struct chunks chunks;

	chunks_init(&chunks, data, size);
	const char *stream = (const char *)chunks.data;
	size_t length = chunks.length;

	memset(&whole, 0, sizeof(whole));
	memset(&split, 0, sizeof(split));
	take_lines(stream, length, &whole);

	size_t offset = 0, held = 0;
	while (offset < length && !split.overlong) {
		size_t room = BUFFER_MAX - held;
		size_t piece = chunks_next(&chunks, length - offset);
		if (piece > room)
			piece = room;
		memcpy(buffer + held, stream + offset, piece);
		held += piece;
		offset += piece;
		size_t used = take_lines(buffer, held, &split);
		memmove(buffer, buffer + used, held - used);
		held -= used;
		if (held == BUFFER_MAX && !split.overlong)
			abort(); /* a full buffer that is neither a line nor too long */
	}
	if (whole.count != split.count || whole.overlong != split.overlong ||
	    memcmp(whole.result, split.result, whole.count * sizeof(int)) != 0 ||
	    memcmp(whole.digest, split.digest, whole.count * sizeof(size_t)) != 0)
		abort(); /* the cut points changed the meaning */
	return 0;
}
