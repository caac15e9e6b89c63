/* allow.h: the IPv4 allow-list (`allowed_ipv4`): addresses and CIDR ranges.
 * A peer outside it is closed before a byte of its is read. */
#ifndef SEMFS_ALLOW_H
#define SEMFS_ALLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ALLOW_RANGES_MAX 256

struct allow_range {
	uint32_t network; /* host byte order, already masked */
	uint32_t mask;
};

struct allow_list {
	struct allow_range ranges[ALLOW_RANGES_MAX];
	size_t count;
};

/* "10.0.0.1, 192.168.0.0/16": separated by commas, blanks or newlines.
 * 0.0.0.0 (any prefix) is every address, as ACE's shipped file means it; a
 * range with host bits set (10.1.2.3/8) is refused, not masked. Returns 0,
 * or -EINVAL (-E2BIG past ALLOW_RANGES_MAX) with the offending item named
 * in `error`; the list is then left empty. */
int allow_parse(struct allow_list *list, const char *text, char *error, size_t error_size);

/* `address` in host byte order. */
bool allow_contains(const struct allow_list *list, uint32_t address);

/* Whether some entry admits every address (0.0.0.0, 0.0.0.0/0, x/0). */
bool allow_admits_all(const struct allow_list *list);

#endif
