/* command.c: the command parser shared by every front-end. Verbs are rows of
 * a table; arguments are checked strictly (no strtod: no "inf", hex or
 * exponents), so what is accepted is exactly what the manual documents. */
#include "command.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum command_argument { ARGUMENT_NONE, ARGUMENT_TIMEOUT, ARGUMENT_NUMBER };

static const struct command_row {
	const char *name;
	enum command_verb verb;
	enum command_argument argument;
	bool argument_required;
} command_rows[] = {
    {"lock", VERB_LOCK, ARGUMENT_TIMEOUT, false},
    {"unlock", VERB_UNLOCK, ARGUMENT_NONE, false},
    {"relax", VERB_RELAX, ARGUMENT_NONE, false},
    {"acquire", VERB_ACQUIRE, ARGUMENT_TIMEOUT, false},
    {"release", VERB_RELEASE, ARGUMENT_NONE, false},
    {"limit", VERB_LIMIT, ARGUMENT_NUMBER, true},
    {"set", VERB_SET, ARGUMENT_NUMBER, true},
};

const char *command_verb_name(enum command_verb verb)
{
	for (size_t i = 0; i < sizeof(command_rows) / sizeof(command_rows[0]); i++)
		if (command_rows[i].verb == verb)
			return command_rows[i].name;
	return "?";
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

bool command_next_word(const char **cursor, const char *end, const char **word, size_t *length)
{
	const char *p = *cursor;

	while (p < end && is_blank(*p))
		p++;
	if (p == end)
		return false;
	*word = p;
	while (p < end && !is_blank(*p))
		p++;
	*length = (size_t)(p - *word);
	*cursor = p;
	return true;
}

/* Decimal seconds: DIGITS[.DIGITS] or .DIGITS, at most COMMAND_TIMEOUT_MAX. */
static bool parse_timeout(const char *word, size_t length, double *out)
{
	double whole = 0, scale = 1;
	bool seen_digit = false, seen_point = false;

	for (size_t i = 0; i < length; i++) {
		char c = word[i];
		if (c == '.' && !seen_point) {
			seen_point = true;
		} else if (c >= '0' && c <= '9') {
			seen_digit = true;
			if (seen_point) {
				scale /= 10;
				whole += (c - '0') * scale;
			} else {
				whole = whole * 10 + (c - '0');
				if (whole > COMMAND_TIMEOUT_MAX)
					return false;
			}
		} else {
			return false;
		}
	}
	if (!seen_digit || whole > COMMAND_TIMEOUT_MAX)
		return false;
	*out = whole;
	return true;
}

static bool parse_number(const char *word, size_t length, int *out)
{
	long value = 0;

	if (length == 0)
		return false;
	for (size_t i = 0; i < length; i++) {
		if (word[i] < '0' || word[i] > '9')
			return false;
		value = value * 10 + (word[i] - '0');
		if (value > COMMAND_NUMBER_MAX)
			return false;
	}
	*out = (int)value;
	return true;
}

int command_parse(const char *line, size_t length, struct command *out, char *error,
		  size_t error_size)
{
	const char *cursor = line, *end = line + length, *word, *extra;
	size_t word_length, extra_length;
	const struct command_row *row = NULL;

	if (memchr(line, '\0', length)) {
		snprintf(error, error_size, "NUL byte in command");
		return -EINVAL;
	}
	if (!command_next_word(&cursor, end, &word, &word_length)) {
		snprintf(error, error_size, "empty command");
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(command_rows) / sizeof(command_rows[0]); i++) {
		if (strlen(command_rows[i].name) == word_length &&
		    memcmp(command_rows[i].name, word, word_length) == 0) {
			row = &command_rows[i];
			break;
		}
	}
	if (!row) {
		snprintf(error, error_size, "unknown command '%.*s'",
			 (int)(word_length > 32 ? 32 : word_length), word);
		return -EINVAL;
	}

	struct command command = {.verb = row->verb, .timeout = COMMAND_NO_TIMEOUT};
	bool has_argument = command_next_word(&cursor, end, &word, &word_length);

	if (has_argument && row->argument == ARGUMENT_NONE) {
		snprintf(error, error_size, "%s takes no argument", row->name);
		return -EINVAL;
	}
	if (!has_argument && row->argument_required) {
		snprintf(error, error_size, "%s needs a number", row->name);
		return -EINVAL;
	}
	if (has_argument && row->argument == ARGUMENT_TIMEOUT &&
	    !parse_timeout(word, word_length, &command.timeout)) {
		snprintf(error, error_size, "%s: bad timeout '%.*s' (seconds, e.g. 2.5)", row->name,
			 (int)(word_length > 32 ? 32 : word_length), word);
		return -EINVAL;
	}
	if (has_argument && row->argument == ARGUMENT_NUMBER &&
	    !parse_number(word, word_length, &command.number)) {
		snprintf(error, error_size, "%s: bad number '%.*s' (0..%d)", row->name,
			 (int)(word_length > 32 ? 32 : word_length), word, COMMAND_NUMBER_MAX);
		return -EINVAL;
	}
	if (command_next_word(&cursor, end, &extra, &extra_length)) {
		snprintf(error, error_size, "%s: unexpected '%.*s'", row->name,
			 (int)(extra_length > 32 ? 32 : extra_length), extra);
		return -EINVAL;
	}
	*out = command;
	return 0;
}

int command_parse_batch(const char *text, size_t length, struct command *out, size_t max,
			char *error, size_t error_size)
{
	const char *line = text, *end = text + length;
	size_t count = 0, line_number = 0;

	while (line < end) {
		const char *newline = memchr(line, '\n', (size_t)(end - line));
		const char *line_end = newline ? newline : end;
		const char *p = line;
		char reason[160];

		line_number++;
		while (p < line_end && is_blank(*p))
			p++;
		if (p < line_end) {
			if ((size_t)(line_end - line) > COMMAND_LINE_MAX) {
				snprintf(error, error_size, "line %zu: longer than %d bytes",
					 line_number, COMMAND_LINE_MAX);
				return -EINVAL;
			}
			if (count == max) {
				snprintf(error, error_size, "more than %zu commands in one write",
					 max);
				return -E2BIG;
			}
			int r = command_parse(line, (size_t)(line_end - line), &out[count], reason,
					      sizeof(reason));
			if (r < 0) {
				snprintf(error, error_size, "line %zu: %s", line_number, reason);
				return r;
			}
			count++;
		}
		line = newline ? newline + 1 : end;
	}
	if (count == 0) {
		snprintf(error, error_size, "no command");
		return -EINVAL;
	}
	return (int)count;
}
