/* fusectl.c: aborting FUSE connections (see fusectl.h). */
#include "fusectl.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <unistd.h>

dev_t fusectl_device(const char *mountpoint)
{
	/* From mountinfo: a stat of a mount whose daemon is dead or stuck
	 * would wait as long as it is. */
	FILE *info = fopen("/proc/self/mountinfo", "re");
	char line[4096], point[4096];
	unsigned major_number, minor_number;
	dev_t device = 0;
	while (info && fgets(line, sizeof(line), info))
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &major_number, &minor_number, point) ==
			3 &&
		    strcmp(point, mountpoint) == 0 && strstr(line, " - fuse"))
			device = makedev(major_number, minor_number);
	if (info)
		fclose(info);
	return device;
}

bool fusectl_abort(dev_t device)
{
	char path[96];
	(void)mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, NULL); /* or there */
	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", minor(device));
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	bool written = write(fd, "1", 1) == 1;
	close(fd);
	return written;
}
