/* journal.h: a semaphore's history, one text line per state change, as read
 * from its file. Append-only up to a cap; past the cap it starts over (like
 * log rotation), so readers at an old offset see the file shrink. */
#ifndef SEMFS_JOURNAL_H
#define SEMFS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct journal {
	char *data;
	size_t length;	   /* bytes readable now: the file size */
	size_t allocated;  /* bytes of data */
	size_t max;	   /* the cap: journal_max */
	uint64_t restarts; /* times it started over */
};

void journal_init(struct journal *journal, size_t max);
void journal_free(struct journal *journal);

/* Append one line (must end in '\n'). If it would pass the cap, the journal
 * starts over with this line. -ENOMEM leaves the journal unchanged. */
int journal_append(struct journal *journal, const char *line, size_t length);

/* Copy up to `size` bytes from `offset`; 0 at or past the end. */
size_t journal_read(const struct journal *journal, off_t offset, char *buffer, size_t size);

/* The last line (without its newline), or an empty string. */
size_t journal_last_line(const struct journal *journal, const char **line);

#endif
