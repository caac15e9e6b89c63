/* name.c: names and their files in the mount (see name.h). */
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
	if (length == 0)
		return refuse(error, error_size, -EINVAL, "empty name");
	if (length > NAME_MAX_LENGTH)
		return refuse(error, error_size, -ENAMETOOLONG, "name longer than 1024 bytes");
	if (memchr(name, '|', length))
		return refuse(error, error_size, -EINVAL, "'|' in name (ACE's separator)");
	if (memchr(name, '\0', length))
		return refuse(error, error_size, -EINVAL, "NUL byte in name");
	return 0;
}

static bool is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

bool name_is_plain(const char *name, size_t length)
{
	size_t start = 0;
	unsigned depth = 0;

	if (length == strlen(NAME_STATUS_FILE) && memcmp(name, NAME_STATUS_FILE, length) == 0)
		return false;
	for (size_t i = 0; i <= length; i++) {
		unsigned char c = i < length ? (unsigned char)name[i] : '/';
		if (c == '/') {
			size_t size = i - start;
			const char *component = name + start;
			if (size == 0 || size > NAME_COMPONENT_MAX ||
			    (size == 1 && component[0] == '.') ||
			    (size == 2 && component[0] == '.' && component[1] == '.'))
				return false;
			if (i < length && ++depth > NAME_DEPTH_MAX)
				return false;
			start = i + 1;
		} else if (c == '%' || is_control(c)) {
			return false;
		}
	}
	return true;
}

static const char hex[] = "0123456789ABCDEF";

/* %XX for every byte `escaped` picks; the first byte too if none was. */
static int percent_encode(const char *name, size_t length, bool (*escaped)(unsigned char),
			  bool force_one, char *out, size_t size)
{
	size_t used = 0;
	bool any = false;

	for (size_t i = 0; i < length; i++) {
		unsigned char c = (unsigned char)name[i];
		if (escaped(c)) {
			if (used + 3 >= size)
				return -ENAMETOOLONG;
			out[used++] = '%';
			out[used++] = hex[c >> 4];
			out[used++] = hex[c & 15];
			any = true;
		} else {
			if (used + 1 >= size)
				return -ENAMETOOLONG;
			out[used++] = (char)c;
		}
	}
	out[used] = '\0';
	if (force_one && !any && length > 0) {
		/* Nothing needed escaping: the first byte is, so the form holds
		 * a '%' and cannot be anybody's plain path. */
		if (used + 2 >= size)
			return -ENAMETOOLONG;
		memmove(out + 3, out + 1, used); /* the rest, and its NUL */
		unsigned char c = (unsigned char)name[0];
		out[0] = '%';
		out[1] = hex[c >> 4];
		out[2] = hex[c & 15];
		used += 2;
	}
	return (int)used;
}

static bool file_escaped(unsigned char c)
{
	return c == '%' || c == '/' || is_control(c);
}

int name_escape(const char *name, size_t length, char *out, size_t size)
{
	char form[3 * NAME_MAX_LENGTH + 1];
	int n = percent_encode(name, length, file_escaped, true, form, sizeof(form));

	if (n < 0 || n > NAME_COMPONENT_MAX || (size_t)n >= size)
		return -ENAMETOOLONG;
	memcpy(out, form, (size_t)n + 1);
	return 0;
}

static bool wire_escaped(unsigned char c)
{
	return c == '%' || c == ' ' || is_control(c);
}

int name_wire(const char *name, char *out, size_t size)
{
	int n = percent_encode(name, strlen(name), wire_escaped, false, out, size);
	return n < 0 ? n : 0;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int name_decode(const char *text, size_t length, char *out, size_t size)
{
	size_t used = 0;

	for (size_t i = 0; i < length; i++) {
		char c = text[i];
		if (c == '%') {
			if (i + 3 > length)
				return -EINVAL;
			int h = hex_value(text[i + 1]), l = hex_value(text[i + 2]);
			if (h < 0 || l < 0)
				return -EINVAL;
			c = (char)(h << 4 | l);
			i += 2;
		}
		if (used + 1 >= size)
			return -ENAMETOOLONG;
		out[used++] = c;
	}
	out[used] = '\0';
	return (int)used;
}

int name_resolve(const char *name, size_t length, name_kind_fn *kind, void *context, char *out,
		 size_t size)
{
	char escaped[NAME_COMPONENT_MAX + 1];
	int escape = name_escape(name, length, escaped, sizeof(escaped));

	/* A name keeps the file it has: its escaped form, if that exists. */
	if (escape == 0 && kind(context, escaped) == NAME_SEMAPHORE)
		return snprintf(out, size, "%s", escaped) < (int)size ? 0 : -ENAMETOOLONG;
	if (name_is_plain(name, length) && length < size) {
		memcpy(out, name, length);
		out[length] = '\0';
		if (kind(context, out) != NAME_BLOCKED)
			return 0;
	}
	if (escape < 0)
		return escape;
	return snprintf(out, size, "%s", escaped) < (int)size ? 0 : -ENAMETOOLONG;
}
