/* chunks.h: cut a fuzzer's input into a byte stream and the points where the
 * network would split it. The first bytes choose the cut points, so libFuzzer
 * explores splits as well as contents. */
#ifndef SEMFS_FUZZ_CHUNKS_H
#define SEMFS_FUZZ_CHUNKS_H

#include <stddef.h>
#include <stdint.h>

#define CHUNKS_SEED_BYTES 4

struct chunks {
	const uint8_t *data; /* the stream, after the seed bytes */
	size_t length;
	uint32_t state; /* xorshift: a cheap, deterministic choice of cuts */
};

static inline void chunks_init(struct chunks *chunks, const uint8_t *data, size_t size)
{
	uint32_t seed = 0x9e3779b9u;
	size_t skip = size < CHUNKS_SEED_BYTES ? size : CHUNKS_SEED_BYTES;

	for (size_t i = 0; i < skip; i++)
		seed = seed * 31 + data[i];
	chunks->data = data + skip;
	chunks->length = size - skip;
	chunks->state = seed | 1;
}

/* The length of the next piece, 1..remaining: mostly small, sometimes large,
 * as recv() would return them. */
static inline size_t chunks_next(struct chunks *chunks, size_t remaining)
{
	uint32_t x = chunks->state;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	chunks->state = x;
	size_t piece = (x & 0x100) ? x % 7 + 1 : x % 600 + 1;
	return piece < remaining ? piece : remaining;
}

#endif
