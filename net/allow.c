/* allow.c: parsing and matching of the IPv4 allow-list. */
#include "allow.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 0, or -EINVAL with the reason in `error`. */
static int parse_item(const char *item, struct allow_range *range, char *error, size_t error_size)
{
	char address[INET_ADDRSTRLEN];
	const char *slash = strchr(item, '/');
	size_t length = slash ? (size_t)(slash - item) : strlen(item);
	unsigned long bits = 32;
	struct in_addr parsed;

	snprintf(error, error_size, "'%s': not an IPv4 address or CIDR range", item);
	if (length == 0 || length >= sizeof(address))
		return -EINVAL;
	memcpy(address, item, length);
	address[length] = '\0';
	/* inet_pton takes only the dotted quad: no "10.1", no octal. */
	if (inet_pton(AF_INET, address, &parsed) != 1)
		return -EINVAL;
	if (slash) {
		char *end;
		if (slash[1] < '0' || slash[1] > '9')
			return -EINVAL;
		bits = strtoul(slash + 1, &end, 10);
		if (*end || bits > 32 || end - (slash + 1) > 2)
			return -EINVAL;
	}
	uint32_t host = ntohl(parsed.s_addr);
	/* ACE's shipped 0.0.0.0 means "anyone" (a bind address's wildcard). */
	if (host == 0)
		bits = 0;
	range->mask = bits == 0 ? 0 : 0xffffffffu << (32 - bits);
	range->network = host & range->mask;
	if (range->network != host) {
		/* Masking 10.1.2.3/8 silently would admit more than was written. */
		struct in_addr network = {htonl(range->network)};
		char suggestion[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &network, suggestion, sizeof(suggestion));
		snprintf(error, error_size,
			 "'%s': host bits set below the /%lu prefix (did you mean %s/%lu?)", item,
			 bits, suggestion, bits);
		return -EINVAL;
	}
	return 0;
}

/* Continuation lines of an INI value arrive joined with newlines. */
#define SEPARATORS ", \t\r\n"

int allow_parse(struct allow_list *list, const char *text, char *error, size_t error_size)
{
	const char *p = text;

	list->count = 0;
	for (;;) {
		p += strspn(p, SEPARATORS);
		if (!*p)
			break;
		size_t length = strcspn(p, SEPARATORS);
		char item[64];
		if (length >= sizeof(item)) {
			snprintf(error, error_size, "'%.*s…': not an IPv4 address or CIDR range",
				 20, p);
			list->count = 0;
			return -EINVAL;
		}
		memcpy(item, p, length);
		item[length] = '\0';
		if (list->count == ALLOW_RANGES_MAX) {
			snprintf(error, error_size, "more than %d entries", ALLOW_RANGES_MAX);
			list->count = 0;
			return -E2BIG;
		}
		if (parse_item(item, &list->ranges[list->count], error, error_size) < 0) {
			list->count = 0;
			return -EINVAL;
		}
		list->count++;
		p += length;
	}
	return 0;
}

bool allow_contains(const struct allow_list *list, uint32_t address)
{
	for (size_t i = 0; i < list->count; i++)
		if ((address & list->ranges[i].mask) == list->ranges[i].network)
			return true;
	return false;
}

bool allow_admits_all(const struct allow_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		if (list->ranges[i].mask == 0)
			return true;
	return false;
}
