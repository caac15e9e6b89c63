/* journal.c: the capped, restartable line buffer behind each semaphore file. */
#include "journal.h"

#include <errno.h>
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

int journal_append(struct journal *journal, const char *line, size_t length)
{
	size_t start = journal->length;

	if (start + length > journal->max)
		start = 0; /* start over from the current state: this line */
	if (start + length > journal->allocated) {
		size_t allocated = journal->allocated ? journal->allocated : 256;
		while (allocated < start + length)
			allocated *= 2;
		if (allocated > journal->max && journal->max >= start + length)
			allocated = journal->max;
		char *data = realloc(journal->data, allocated);
		if (!data)
			return -ENOMEM;
		journal->data = data;
		journal->allocated = allocated;
	}
	memcpy(journal->data + start, line, length);
	if (start == 0 && journal->length > 0)
		journal->restarts++;
	journal->length = start + length;
	return 0;
}

size_t journal_read(const struct journal *journal, off_t offset, char *buffer, size_t size)
{
	if (offset < 0 || (size_t)offset >= journal->length)
		return 0;
	size_t available = journal->length - (size_t)offset;
	size_t count = size < available ? size : available;
	memcpy(buffer, journal->data + offset, count);
	return count;
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
