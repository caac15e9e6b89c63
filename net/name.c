/* name.c: validation of semaphore names received over the network. */
#include "name.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int refuse(char *error, size_t error_size, int code, const char *reason)
{
	snprintf(error, error_size, "%s", reason);
	return code;
}

int name_check(const char *name, size_t length, char *error, size_t error_size)
{
	size_t component_start = 0;

	if (length == 0)
		return refuse(error, error_size, -EINVAL, "empty name");
	if (length > NAME_MAX_LENGTH)
		return refuse(error, error_size, -ENAMETOOLONG, "name longer than 1024 bytes");
	for (size_t i = 0; i <= length; i++) {
		unsigned char c = i < length ? (unsigned char)name[i] : '/';
		if (c == '/') {
			size_t size = i - component_start;
			const char *component = name + component_start;
			if (size == 0)
				return refuse(
				    error, error_size, -EINVAL,
				    "empty path component (leading, trailing or double '/')");
			if ((size == 1 && component[0] == '.') ||
			    (size == 2 && component[0] == '.' && component[1] == '.'))
				return refuse(error, error_size, -EINVAL,
					      "'.' and '..' are not names");
			if (size > NAME_COMPONENT_MAX)
				return refuse(error, error_size, -ENAMETOOLONG,
					      "path component longer than 255 bytes");
			component_start = i + 1;
			continue;
		}
		if (c < 0x20 || c == 0x7f)
			return refuse(error, error_size, -EINVAL, "control character in name");
		if (c == ' ' || c == '|')
			return refuse(error, error_size, -EINVAL, "space or '|' in name");
	}
	return 0;
}
