/* ace.c: the ACE dialect's parser (see ace.h). */
#include "ace.h"

#include <stdio.h>
#include <string.h>

#define PREFIX_LENGTH (sizeof(ACE_PREFIX) - 1)

int ace_detect(const char *data, size_t length)
{
	size_t n = length < PREFIX_LENGTH ? length : PREFIX_LENGTH;

	if (memcmp(data, ACE_PREFIX, n) != 0)
		return 0;
	return n == PREFIX_LENGTH ? 1 : -1;
}

void ace_init(struct ace_parser *parser)
{
	memset(parser, 0, sizeof(*parser));
}

static size_t broken(struct ace_parser *parser, size_t consumed, enum ace_event *event,
		     const char *reason)
{
	parser->state = ACE_BROKEN;
	snprintf(parser->error, sizeof(parser->error), "%s", reason);
	*event = ACE_INVALID;
	return consumed;
}

static const char *const client_tokens[] = {"wait|", "release|"};
static const enum ace_event client_events[] = {ACE_KEEPALIVE, ACE_RELEASE};

size_t ace_feed(struct ace_parser *parser, const char *data, size_t length, enum ace_event *event)
{
	size_t i = 0;

	*event = ACE_NONE;
	if (parser->state == ACE_BROKEN) {
		*event = ACE_INVALID;
		return length;
	}
	while (i < length) {
		char c = data[i++];
		switch (parser->state) {
		case ACE_START:
			if (c != ACE_PREFIX[parser->token_length])
				return broken(parser, i, event, "not an ACE request");
			if (++parser->token_length == PREFIX_LENGTH) {
				parser->token_length = 0;
				parser->state = ACE_NAME;
			}
			break;
		case ACE_NAME:
			if (c != '|') {
				if (parser->name_length == NAME_MAX_LENGTH)
					return broken(parser, i, event, "name too long");
				parser->name[parser->name_length++] = c;
				break;
			}
			parser->name[parser->name_length] = '\0';
			char reason[120];
			if (name_check(parser->name, parser->name_length, reason, sizeof(reason)) <
			    0) {
				char message[sizeof(parser->error)];
				snprintf(message, sizeof(message), "bad name: %s", reason);
				return broken(parser, i, event, message);
			}
			parser->state = ACE_TOKENS;
			*event = ACE_ACQUIRE;
			return i;
		case ACE_TOKENS:
			if (parser->token_length == 0 && (c == '\r' || c == '\n'))
				break;
			parser->token[parser->token_length++] = c;
			for (size_t t = 0; t < 2; t++) {
				const char *token = client_tokens[t];
				if (strncmp(parser->token, token, parser->token_length) != 0)
					continue;
				if (parser->token_length == strlen(token)) {
					parser->token_length = 0;
					*event = client_events[t];
					return i;
				}
				goto next_byte; /* a prefix of this token so far */
			}
			return broken(parser, i, event, "unknown token");
		case ACE_BROKEN:
			*event = ACE_INVALID;
			return length;
		}
	next_byte:;
	}
	return i;
}
