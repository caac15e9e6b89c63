/* allow.c: parsing and matching of the IPv4 allow-list. */
#include "allow.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_item(const char *item, struct allow_range *range)
{
	char address[INET_ADDRSTRLEN];
	const char *slash = strchr(item, '/');
	size_t length = slash ? (size_t)(slash - item) : strlen(item);
	unsigned long bits = 32;
	struct in_addr parsed;

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
	range->mask = bits == 0 ? 0 : 0xffffffffu << (32 - bits);
	range->network = ntohl(parsed.s_addr) & range->mask;
	return 0;
}

int allow_parse(struct allow_list *list, const char *text, char *error, size_t error_size)
{
	const char *p = text;

	list->count = 0;
	for (;;) {
		p += strspn(p, ", \t");
		if (!*p)
			break;
		size_t length = strcspn(p, ", \t");
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
		if (parse_item(item, &list->ranges[list->count]) < 0) {
			snprintf(error, error_size, "'%s': not an IPv4 address or CIDR range",
				 item);
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
