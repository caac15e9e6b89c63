/* fusectl.h: the kernel's own way out of a FUSE connection nobody will
 * answer, for tests that kill daemons: fusectl's abort file. */
#ifndef SEMFS_TEST_FUSECTL_H
#define SEMFS_TEST_FUSECTL_H

#include <stdbool.h>
#include <sys/types.h>

/* The device of the FUSE mount at `mountpoint` (its connection's number is
 * the minor), or 0 when nothing is mounted there. */
dev_t fusectl_device(const char *mountpoint);
/* Abort connection `device`: every request waiting in it ends (ENOTCONN).
 * Mounts fusectl if it is not. False if the abort file could not be written. */
bool fusectl_abort(dev_t device);

#endif
