/* name.h: what a semaphore name from the network may be. A name is a path
 * below the mount root: "db" or "jobs/nightly". */
#ifndef SEMFS_NAME_H
#define SEMFS_NAME_H

#include <stddef.h>

#define NAME_COMPONENT_MAX 255
#define NAME_MAX_LENGTH	   1024

/* 0, or -EINVAL / -ENAMETOOLONG with the reason in `error`: empty, empty or
 * "." or ".." components (so no leading, trailing or double '/'), control
 * characters, spaces, '|', a component over 255 bytes, over 1024 in all. */
int name_check(const char *name, size_t length, char *error, size_t error_size);

#endif
