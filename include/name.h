/* name.h: semaphore names and where they live in the mount.
 *
 * A name is what a client asks for: ACE's `acquire:NAME|` (any bytes but
 * '|' and NUL), a native request's name (the same names, written with %XX
 * escapes for what a line cannot carry), a semaphore_NAME line, msem -H.
 * Each name has one file in the mount:
 *  - a plain name is its own path, directories and all: "db", "jobs/nightly",
 *    "a b". Plain: components non-empty, not "." or "..", at most 255 bytes
 *    and 16 deep, no '%' and no control character, not "semaphore.status";
 *  - any other name, or a plain one that cannot be a path now (a component
 *    is a semaphore: "one/sub" below a file "one"; or it is a directory), is
 *    one file at the root: its escaped form, the name with '%', '/' and
 *    control characters written %XX (and its first byte too if nothing else
 *    was, so that an escaped form always holds a '%' and never meets a
 *    plain path): "http:%2F%2Fhost%2Fx", "a%2F", "%2E%2E", "one%2Fsub".
 * The escaped form is looked for first, so a name keeps its file while it
 * exists. Decoding %XX turns any of these files back into its name. */
#ifndef SEMFS_NAME_H
#define SEMFS_NAME_H

#include <stdbool.h>
#include <stddef.h>

#define NAME_COMPONENT_MAX 255
#define NAME_MAX_LENGTH	   1024
#define NAME_DEPTH_MAX	   16 /* directories a plain name may have */
#define NAME_STATUS_FILE   "semaphore.status"

/* 0, or -EINVAL / -ENAMETOOLONG with the reason in `error`: empty, '|' or
 * NUL in it, over 1024 bytes. */
int name_check(const char *name, size_t length, char *error, size_t error_size);

/* Whether `name` (checked) may be its own path. */
bool name_is_plain(const char *name, size_t length);

/* The escaped form of `name` (checked) into `out`: 0, or -ENAMETOOLONG when
 * it would pass one file name's 255 bytes. */
int name_escape(const char *name, size_t length, char *out, size_t size);

/* %XX decoded: a mount path back to its name, a native token to a name.
 * Returns the length, or -EINVAL for a '%' without two hex digits after it,
 * -ENAMETOOLONG when `out` is too small. */
int name_decode(const char *text, size_t length, char *out, size_t size);

/* For a native line: %XX for '%', blanks, control characters. */
int name_wire(const char *name, char *out, size_t size);

/* What a path is in the tree, as name_resolve needs to know. */
enum name_kind {
	NAME_ABSENT,	/* nothing there (directories may be missing) */
	NAME_SEMAPHORE, /* a semaphore: use it */
	NAME_BLOCKED,	/* a directory, a semaphore in the way, the status file */
};
typedef enum name_kind name_kind_fn(void *context, const char *path);

/* The path of `name` (checked) in the mount, as described above. 0, or
 * -ENAMETOOLONG when even the escaped form does not fit. */
int name_resolve(const char *name, size_t length, name_kind_fn *kind, void *context, char *out,
		 size_t size);

#endif
