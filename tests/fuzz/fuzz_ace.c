/* fuzz_ace.c: the ACE dialect as a byte stream. The stream is parsed once
 * whole and once cut at the points chunks.h picks, the way the server feeds
 * what recv() returns; both must give the same events, names and errors, and
 * ace_detect must never change its mind as bytes arrive. */
#include "ace.h"
#include "chunks.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define EVENTS_MAX 4096

struct events {
	enum ace_event kind[EVENTS_MAX];
	size_t name_hash[EVENTS_MAX];
	size_t count;
	char error[sizeof(((struct ace_parser *)0)->error)];
};

static size_t hash(const char *text)
{
	size_t h = 5381;
	while (*text)
		h = h * 33 + (unsigned char)*text++;
	return h;
}

/* Feed one piece as the server does: until it is used up or the parser broke. */
static bool feed(struct ace_parser *parser, const char *piece, size_t length,
		 struct events *events)
{
	size_t used = 0;

	while (used < length) {
		enum ace_event event;
		size_t n = ace_feed(parser, piece + used, length - used, &event);
		if (n > length - used || (n == 0 && event == ACE_NONE))
			abort(); /* overran the piece, or made no progress */
		used += n;
		if (event == ACE_NONE)
			continue;
		if (events->count == EVENTS_MAX)
			return false;
		events->kind[events->count] = event;
		events->name_hash[events->count] = event == ACE_ACQUIRE ? hash(parser->name) : 0;
		events->count++;
		if (event == ACE_ACQUIRE && !memchr(parser->name, '\0', sizeof(parser->name)))
			abort();
		if (event == ACE_INVALID) {
			if (parser->error[0] == '\0')
				abort(); /* a refusal says why */
			memcpy(events->error, parser->error, sizeof(events->error));
			return false;
		}
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct events whole, split;
	static struct ace_parser parser;
	struct chunks chunks;

	chunks_init(&chunks, data, size);
	const char *stream = (const char *)chunks.data;
	size_t length = chunks.length;

	memset(&whole, 0, sizeof(whole));
	memset(&split, 0, sizeof(split));
	int verdict = ace_detect(stream, length);
	if (verdict < 0 && length >= sizeof(ACE_PREFIX) - 1)
		abort(); /* enough bytes to decide, yet undecided */
	if (verdict == 0)
		return 0; /* the native dialect's business */

	ace_init(&parser);
	feed(&parser, stream, length, &whole);

	ace_init(&parser);
	size_t offset = 0;
	while (offset < length) {
		size_t piece = chunks_next(&chunks, length - offset);
		int seen = ace_detect(stream, offset + piece);
		if (seen == 0 || (seen < 0 && offset + piece >= sizeof(ACE_PREFIX) - 1))
			abort(); /* a prefix of an ACE request is never native */
		if (!feed(&parser, stream + offset, piece, &split))
			break;
		offset += piece;
	}
	if (whole.count != split.count ||
	    memcmp(whole.kind, split.kind, whole.count * sizeof(whole.kind[0])) != 0 ||
	    memcmp(whole.name_hash, split.name_hash, whole.count * sizeof(size_t)) != 0 ||
	    strcmp(whole.error, split.error) != 0)
		abort(); /* the cut points changed the meaning */
	return 0;
}
