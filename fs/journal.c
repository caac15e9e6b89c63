/* journal.c: the capped line buffer behind each semaphore file (see
 * journal.h). */
#include "journal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void journal_init(struct journal *journal, size_t max)
{
	memset(journal, 0, sizeof(*journal));
	journal->max = max;
}

void journal_free(struct journal *journal)
{
	free(journal->data);
	journal->data = NULL;
	journal->length = journal->allocated = 0;
}

/* Drop the oldest lines: at least `bytes`, up to a line's end. Dropping by
 * halves keeps the memmove cost per appended byte constant. */
static void drop_oldest(struct journal *journal, size_t bytes)
{
	size_t cut = bytes < journal->length ? bytes : journal->length;
	while (cut < journal->length && journal->data[cut - 1] != '\n')
		cut++;
	for (size_t i = 0; i < cut; i++)
		journal->dropped += journal->data[i] == '\n';
	memmove(journal->data, journal->data + cut, journal->length - cut);
	journal->length -= cut;
	journal->start += cut;
}

int journal_append(struct journal *journal, const char *line, size_t length)
{
	size_t needed = journal->length + length;

	if (needed > journal->max && journal->length > 0) {
		size_t keep = journal->max / 2 > length ? journal->max / 2 - length : 0;
		drop_oldest(journal, journal->length > keep ? journal->length - keep : 0);
		needed = journal->length + length;
	}
	if (needed > journal->allocated) {
		size_t allocated = journal->allocated ? journal->allocated : 256;
		while (allocated < needed)
			allocated *= 2;
		if (allocated > journal->max && journal->max >= needed)
			allocated = journal->max;
		char *data = realloc(journal->data, allocated);
		if (!data)
			return -ENOMEM;
		journal->data = data;
		journal->allocated = allocated;
	}
	memcpy(journal->data + journal->length, line, length);
	journal->length = needed;
	journal->lines++;
	return 0;
}

uint64_t journal_end(const struct journal *journal)
{
	return journal->start + journal->length;
}

size_t journal_read(const struct journal *journal, uint64_t offset, char *buffer, size_t size)
{
	if (offset < journal->start || offset >= journal_end(journal))
		return 0;
	size_t at = (size_t)(offset - journal->start);
	size_t available = journal->length - at;
	size_t count = size < available ? size : available;
	memcpy(buffer, journal->data + at, count);
	return count;
}

size_t journal_gone_line(const struct journal *journal, char *buffer, size_t size)
{
	int n =
	    snprintf(buffer, size, "... lines before seq=%" PRIu64 " were dropped (journal_max)\n",
		     journal->dropped + 1);
	return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

size_t journal_last_line(const struct journal *journal, const char **line)
{
	size_t end = journal->length;

	*line = "";
	if (end == 0)
		return 0;
	if (journal->data[end - 1] == '\n')
		end--;
	size_t start = end;
	while (start > 0 && journal->data[start - 1] != '\n')
		start--;
	*line = journal->data + start;
	return end - start;
}
