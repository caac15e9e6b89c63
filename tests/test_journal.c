/* test_journal.c: appending, reading at offsets, dropping the oldest past the cap. */
#include "journal.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Test(journal, append_and_read_at_offsets)
{
	struct journal j;
	char buffer[64];

	journal_init(&j, 1024);
	cr_assert_eq(journal_append(&j, "one\n", 4), 0);
	cr_assert_eq(journal_append(&j, "two\n", 4), 0);
	cr_assert_eq(j.length, 8);
	cr_assert_eq(journal_read(&j, 0, buffer, sizeof(buffer)), 8);
	cr_assert_eq(memcmp(buffer, "one\ntwo\n", 8), 0);
	cr_assert_eq(journal_read(&j, 4, buffer, 2), 2);
	cr_assert_eq(memcmp(buffer, "tw", 2), 0);
	cr_assert_eq(journal_read(&j, 8, buffer, sizeof(buffer)), 0);
	cr_assert_eq(journal_read(&j, 100, buffer, sizeof(buffer)), 0);
	journal_free(&j);
}

Test(journal, last_line_is_current_state)
{
	struct journal j;
	const char *line;

	journal_init(&j, 1024);
	cr_assert_eq(journal_last_line(&j, &line), 0);
	journal_append(&j, "a b\n", 4);
	journal_append(&j, "c d\n", 4);
	cr_assert_eq(journal_last_line(&j, &line), 3);
	cr_assert_eq(memcmp(line, "c d", 3), 0);
	journal_free(&j);
}

/* Past the cap the oldest lines go, down to half the cap; offsets stay. */
Test(journal, drops_the_oldest_half_past_the_cap)
{
	struct journal j;
	char line[32], buffer[256];
	uint64_t appended = 0;

	journal_init(&j, 100);
	for (int i = 0; i < 50; i++) {
		int n = snprintf(line, sizeof(line), "line %02d\n", i);
		cr_assert_eq(journal_append(&j, line, (size_t)n), 0);
		appended += (uint64_t)n;
		cr_assert_leq(j.length, 100);
		cr_assert_eq(journal_end(&j), appended, "the file size is every byte appended");
	}
	cr_assert_eq(j.lines, 50);
	cr_assert_gt(j.start, 0);
	cr_assert_geq(j.length, 50 - 8, "at least half the cap is kept");
	/* The kept part starts at a line and ends with the newest one. */
	size_t n = journal_read(&j, j.start, buffer, sizeof(buffer));
	cr_assert_eq(n, j.length);
	cr_assert_eq(buffer[0], 'l');
	cr_assert_eq(memcmp(buffer + n - 8, "line 49\n", 8), 0);
	/* The first kept line is number dropped + 1. */
	char expect[16];
	snprintf(expect, sizeof(expect), "line %02u\n", (unsigned)j.dropped);
	cr_assert_eq(memcmp(buffer, expect, 8), 0);
	/* Below start: nothing, and the line that says so. */
	cr_assert_eq(journal_read(&j, 0, buffer, sizeof(buffer)), 0);
	n = journal_gone_line(&j, buffer, sizeof(buffer));
	buffer[n] = '\0';
	snprintf(expect, sizeof(expect), "seq=%u ", (unsigned)j.dropped + 1);
	cr_assert(strstr(buffer, expect), "%s", buffer);
	journal_free(&j);
}

/* A reader that reads at least every half-cap of bytes misses nothing. */
Test(journal, a_reader_every_half_cap_misses_no_line)
{
	struct journal j;
	char line[32], buffer[4096];
	uint64_t offset = 0;
	unsigned next = 0;

	journal_init(&j, 1000);
	for (unsigned i = 0; i < 2000; i++) {
		int n = snprintf(line, sizeof(line), "%05u\n", i);
		cr_assert_eq(journal_append(&j, line, (size_t)n), 0);
		if (i % 80 == 79) { /* 480 bytes: under half of 1000 */
			size_t got = journal_read(&j, offset, buffer, sizeof(buffer));
			cr_assert_gt(got, 0, "the reader fell behind at %u", i);
			for (size_t k = 0; k < got; k += 6) {
				cr_assert_eq((unsigned)atoi(buffer + k), next);
				next++;
			}
			offset += got;
		}
	}
	cr_assert_eq(next, 2000);
	journal_free(&j);
}
