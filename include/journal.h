/* journal.h: a semaphore's history, one text line per state change, as read
 * from its file. File offsets are absolute and only grow: the file's size is
 * every byte ever appended, so a follower (tail -f) never sees it shrink.
 * Past the cap the oldest lines are dropped, down to half the cap, so a
 * reader that comes back before another half-cap of lines is written misses
 * nothing; offsets below the first kept line are gone. */
#ifndef SEMFS_JOURNAL_H
#define SEMFS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

struct journal {
	char *data;	  /* the kept lines: file offsets [start, start + length) */
	size_t length;	  /* bytes kept */
	size_t allocated; /* bytes of data */
	size_t max;	  /* the cap: journal_max */
	uint64_t start;	  /* file offset of data[0]: bytes dropped so far */
	uint64_t lines;	  /* lines appended: the newest one's sequence number */
	uint64_t dropped; /* lines dropped: the first kept one is dropped + 1 */
};

void journal_init(struct journal *journal, size_t max);
void journal_free(struct journal *journal);

/* Append one line (must end in '\n'), dropping the oldest lines if the cap
 * would be passed. -ENOMEM leaves the journal unchanged. */
int journal_append(struct journal *journal, const char *line, size_t length);

/* The file size: start + length. */
uint64_t journal_end(const struct journal *journal);

/* Copy up to `size` bytes from file offset `offset`; 0 at or past the end,
 * and 0 below `start` (gone: see journal_gone_line). */
size_t journal_read(const struct journal *journal, uint64_t offset, char *buffer, size_t size);

/* What a reader below `start` gets instead of the dropped lines: one line,
 * "... lines before seq=N were dropped (journal_max)\n". Its length. */
size_t journal_gone_line(const struct journal *journal, char *buffer, size_t size);

/* The last line (without its newline), or an empty string. */
size_t journal_last_line(const struct journal *journal, const char **line);

#endif
