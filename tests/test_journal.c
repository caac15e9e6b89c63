/* test_journal.c: appending, reading at offsets, and starting over at the cap. */
#include "journal.h"

#include <criterion/criterion.h>
#include <stdio.h>
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
	cr_assert_eq(journal_read(&j, -1, buffer, sizeof(buffer)), 0);
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

Test(journal, starts_over_past_the_cap)
{
	struct journal j;
	char line[32], buffer[128];

	journal_init(&j, 100);
	for (int i = 0; i < 50; i++) {
		int n = snprintf(line, sizeof(line), "line %02d\n", i);
		cr_assert_eq(journal_append(&j, line, (size_t)n), 0);
		cr_assert_leq(j.length, 100);
	}
	cr_assert_gt(j.restarts, 0);
	/* What remains ends with the newest line, intact. */
	size_t n = journal_read(&j, 0, buffer, sizeof(buffer));
	cr_assert_geq(n, 8);
	cr_assert_eq(memcmp(buffer + n - 8, "line 49\n", 8), 0);
	cr_assert_eq(buffer[0], 'l');
	journal_free(&j);
}

Test(journal, restart_shrinks_size)
{
	struct journal j;
	journal_init(&j, 20);
	journal_append(&j, "0123456789\n", 11);
	size_t before = j.length;
	journal_append(&j, "abcdefghij\n", 11);
	cr_assert_lt(j.length, before + 11);
	cr_assert_eq(j.length, 11);
	cr_assert_eq(j.restarts, 1);
	journal_free(&j);
}
