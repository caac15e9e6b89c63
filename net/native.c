/* native.c: the native dialect's request parser (see native.h). */
#include "native.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum name_rule { NAME_NONE, NAME_REQUIRED, NAME_OPTIONAL };

static const struct native_row {
	const char *verb;
	enum native_verb kind;
	enum name_rule name;
	const char *usage;
} native_rows[] = {
    {"lock", NATIVE_COMMAND, NAME_REQUIRED, "lock NAME [SECONDS]"},
    {"unlock", NATIVE_COMMAND, NAME_REQUIRED, "unlock NAME"},
    {"relax", NATIVE_COMMAND, NAME_REQUIRED, "relax NAME"},
    {"acquire", NATIVE_COMMAND, NAME_REQUIRED, "acquire NAME [SECONDS]"},
    {"release", NATIVE_COMMAND, NAME_REQUIRED, "release NAME"},
    {"limit", NATIVE_COMMAND, NAME_REQUIRED, "limit NAME N"},
    {"set", NATIVE_COMMAND, NAME_REQUIRED, "set NAME N"},
    {"create", NATIVE_CREATE, NAME_REQUIRED, "create NAME [LIMIT]"},
    {"delete", NATIVE_DELETE, NAME_REQUIRED, "delete NAME"},
    {"status", NATIVE_STATUS, NAME_OPTIONAL, "status [NAME]"},
    {"watch", NATIVE_WATCH, NAME_REQUIRED, "watch NAME"},
    {"ping", NATIVE_PING, NAME_NONE, "ping"},
    {"help", NATIVE_HELP, NAME_NONE, "help"},
    {"quit", NATIVE_QUIT, NAME_NONE, "quit"},
};

const char native_help[] = "lock NAME [SECONDS]\n"
			   "unlock NAME\n"
			   "relax NAME\n"
			   "acquire NAME [SECONDS]\n"
			   "release NAME\n"
			   "limit NAME N\n"
			   "set NAME N\n"
			   "create NAME [LIMIT]\n"
			   "delete NAME\n"
			   "status [NAME]\n"
			   "watch NAME\n"
			   "ping\n"
			   "help\n"
			   "quit\n";

int native_frame(const char *data, size_t length, size_t *line_length)
{
	size_t window = length < COMMAND_LINE_MAX + 1 ? length : COMMAND_LINE_MAX + 1;
	const char *newline = window ? memchr(data, '\n', window) : NULL;

	if (newline) {
		*line_length = (size_t)(newline - data);
		return 1;
	}
	return length > COMMAND_LINE_MAX ? -E2BIG : 0;
}

static int usage(char *error, size_t error_size, const struct native_row *row)
{
	snprintf(error, error_size, "usage: %s", row->usage);
	return -EINVAL;
}

/* A limit for `create`: strict decimal, 0..COMMAND_NUMBER_MAX. */
static bool parse_limit(const char *word, size_t length, unsigned *out)
{
	unsigned value = 0;

	if (length == 0 || length > 5)
		return false;
	for (size_t i = 0; i < length; i++) {
		if (word[i] < '0' || word[i] > '9')
			return false;
		value = value * 10 + (unsigned)(word[i] - '0');
	}
	if (value > COMMAND_NUMBER_MAX)
		return false;
	*out = value;
	return true;
}

static int refuse_long_name(char *error, size_t error_size)
{
	snprintf(error, error_size, "name longer than %d bytes", NAME_MAX_LENGTH);
	return -ENAMETOOLONG;
}

int native_parse(const char *line, size_t length, struct native_request *request, char *error,
		 size_t error_size)
{
	const char *cursor = line, *end = line + length, *verb, *name, *word;
	size_t verb_length, name_length, word_length;
	const struct native_row *row = NULL;

	memset(request, 0, sizeof(*request));
	if (memchr(line, '\0', length)) {
		snprintf(error, error_size, "NUL byte in request");
		return -EINVAL;
	}
	if (!command_next_word(&cursor, end, &verb, &verb_length))
		return 0;
	for (size_t i = 0; i < sizeof(native_rows) / sizeof(native_rows[0]); i++) {
		if (strlen(native_rows[i].verb) == verb_length &&
		    memcmp(native_rows[i].verb, verb, verb_length) == 0)
			row = &native_rows[i];
	}
	if (!row) {
		snprintf(error, error_size, "unknown verb '%.*s' (try: help)",
			 (int)(verb_length > 40 ? 40 : verb_length), verb);
		return -EINVAL;
	}
	request->verb = row->kind;

	bool has_name =
	    row->name != NAME_NONE && command_next_word(&cursor, end, &name, &name_length);
	if (row->name == NAME_REQUIRED && !has_name)
		return usage(error, error_size, row);
	if (has_name) {
		/* The line cannot carry blanks or '%' in a name: %XX does. */
		int n = name_decode(name, name_length, request->name, sizeof(request->name));
		if (n == -EINVAL) {
			snprintf(error, error_size, "bad %%XX escape in name '%.*s'",
				 (int)(name_length > 60 ? 60 : name_length), name);
			return n;
		}
		if (n < 0)
			return refuse_long_name(error, error_size);
		int r = name_check(request->name, (size_t)n, error, error_size);
		if (r < 0)
			return r;
	}

	const char *arguments = cursor;
	switch (row->kind) {
	case NATIVE_COMMAND: {
		/* The command module parses "VERB ARGS", as written to a file. */
		char command_line[COMMAND_LINE_MAX + 1];
		size_t n = verb_length + (size_t)(end - arguments);
		if (n >= sizeof(command_line)) {
			snprintf(error, error_size, "request too long");
			return -EINVAL;
		}
		memcpy(command_line, verb, verb_length);
		memcpy(command_line + verb_length, arguments, (size_t)(end - arguments));
		command_line[n] = '\0';
		return command_parse(command_line, n, &request->command, error, error_size) < 0
			   ? -EINVAL
			   : 1;
	}
	case NATIVE_CREATE:
		if (command_next_word(&cursor, end, &word, &word_length)) {
			if (!parse_limit(word, word_length, &request->limit)) {
				snprintf(error, error_size, "limit must be a whole number 0..%d",
					 COMMAND_NUMBER_MAX);
				return -EINVAL;
			}
			request->has_limit = true;
		}
		break;
	default:
		break;
	}
	if (command_next_word(&cursor, end, &word, &word_length))
		return usage(error, error_size, row);
	return 1;
}
