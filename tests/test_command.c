/* test_command.c: the command parser, every verb and every malformed form. */
#include "command.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

static int parse(const char *line, struct command *command)
{
	char error[160];
	return command_parse(line, strlen(line), command, error, sizeof(error));
}

Test(command, verbs_without_argument)
{
	struct command c;
	cr_assert_eq(parse("unlock", &c), 0);
	cr_assert_eq(c.verb, VERB_UNLOCK);
	cr_assert_eq(parse("relax", &c), 0);
	cr_assert_eq(c.verb, VERB_RELAX);
	cr_assert_eq(parse("release", &c), 0);
	cr_assert_eq(c.verb, VERB_RELEASE);
}

Test(command, lock_and_acquire_timeouts)
{
	struct command c;
	cr_assert_eq(parse("lock", &c), 0);
	cr_assert_eq(c.verb, VERB_LOCK);
	cr_assert_lt(c.timeout, 0);
	cr_assert_eq(parse("lock 0", &c), 0);
	cr_assert_eq(c.timeout, 0);
	cr_assert_eq(parse("lock 2.5", &c), 0);
	cr_assert_float_eq(c.timeout, 2.5, 1e-9);
	cr_assert_eq(parse("acquire .25", &c), 0);
	cr_assert_eq(c.verb, VERB_ACQUIRE);
	cr_assert_float_eq(c.timeout, 0.25, 1e-9);
	cr_assert_eq(parse("  lock\t3.  \r", &c), 0);
	cr_assert_float_eq(c.timeout, 3.0, 1e-9);
}

Test(command, numbers)
{
	struct command c;
	cr_assert_eq(parse("limit 5", &c), 0);
	cr_assert_eq(c.verb, VERB_LIMIT);
	cr_assert_eq(c.number, 5);
	cr_assert_eq(parse("set 0", &c), 0);
	cr_assert_eq(c.verb, VERB_SET);
	cr_assert_eq(c.number, 0);
	cr_assert_eq(parse("limit 32767", &c), 0);
}

Test(command, malformed)
{
	static const char *const bad[] = {
	    "",		  "   ",      "bogus",		 "LOCK",	"lock x",
	    "lock -1",	  "lock 1e3", "lock inf",	 "lock nan",	"lock 0x10",
	    "lock 1.2.3", "lock .",   "lock 1 2",	 "unlock 1",	"relax now",
	    "release x",  "limit",    "limit -1",	 "limit 32768", "limit 1.5",
	    "set",	  "set a",    "lock 1000000001", "lockx",	"unlock\x01",
	};
	struct command c = {.verb = VERB_SET, .number = 77};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(parse(bad[i], &c), -EINVAL, "accepted '%s'", bad[i]);
		cr_assert_eq(c.number, 77, "'%s' changed the output", bad[i]);
	}
	char with_nul[] = {'l', 'o', 'c', 'k', '\0', 'x'};
	char error[160];
	cr_assert_eq(command_parse(with_nul, sizeof(with_nul), &c, error, sizeof(error)), -EINVAL);
}

Test(command, error_messages_name_the_problem)
{
	struct command c;
	char error[160];
	cr_assert_eq(command_parse("fly", 3, &c, error, sizeof(error)), -EINVAL);
	cr_assert(strstr(error, "unknown command 'fly'"), "%s", error);
	cr_assert_eq(command_parse("lock x", 6, &c, error, sizeof(error)), -EINVAL);
	cr_assert(strstr(error, "bad timeout"), "%s", error);
}

Test(command, batch_in_order_all_or_nothing)
{
	struct command c[8];
	char error[160];
	const char *text = "lock\n\nunlock\nlimit 3\nset 1";
	cr_assert_eq(command_parse_batch(text, strlen(text), c, 8, error, sizeof(error)), 4);
	cr_assert_eq(c[0].verb, VERB_LOCK);
	cr_assert_eq(c[1].verb, VERB_UNLOCK);
	cr_assert_eq(c[2].verb, VERB_LIMIT);
	cr_assert_eq(c[3].number, 1);

	text = "lock\nbogus\n";
	cr_assert_eq(command_parse_batch(text, strlen(text), c, 8, error, sizeof(error)), -EINVAL);
	cr_assert(strstr(error, "line 2"), "%s", error);
	cr_assert_eq(command_parse_batch("\n\n", 2, c, 8, error, sizeof(error)), -EINVAL);
	text = "unlock\nunlock\nunlock\n";
	cr_assert_eq(command_parse_batch(text, strlen(text), c, 2, error, sizeof(error)), -E2BIG);
}

Test(command, verb_names_round_trip)
{
	struct command c;
	const char *names[] = {"lock", "unlock", "relax", "acquire", "release"};
	for (size_t i = 0; i < 5; i++) {
		cr_assert_eq(parse(names[i], &c), 0);
		cr_assert_str_eq(command_verb_name(c.verb), names[i]);
	}
}
