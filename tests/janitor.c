/* janitor.c: see janitor.h. */
#include "janitor.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static bool mounted_below(const char *dir, bool detach)
{
	char line[1024], point[1024], prefix[1024];
	bool found = false;
	snprintf(prefix, sizeof(prefix), "%s/", dir);
	FILE *mounts = fopen("/proc/self/mounts", "re");
	while (mounts && fgets(line, sizeof(line), mounts))
		if (sscanf(line, "%*s %1023s", point) == 1 &&
		    strncmp(point, prefix, strlen(prefix)) == 0) {
			found = true;
			if (detach)
				(void)umount2(point, MNT_DETACH);
		}
	if (mounts)
		fclose(mounts);
	return found;
}

/* SIGKILL every process whose command line mentions `dir`. */
static void kill_users(const char *dir)
{
	DIR *proc = opendir("/proc");
	struct dirent *entry;
	while (proc && (entry = readdir(proc))) {
		pid_t pid = (pid_t)atoi(entry->d_name);
		if (pid <= 0 || pid == getpid())
			continue;
		char path[64], line[4096];
		snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, line, sizeof(line) - 1);
		close(fd);
		if (n <= 0)
			continue;
		for (ssize_t i = 0; i < n; i++)
			if (line[i] == '\0')
				line[i] = ' ';
		line[n] = '\0';
		if (strstr(line, dir))
			kill(pid, SIGKILL);
	}
	if (proc)
		closedir(proc);
}

static void clean(const char *const *dirs, int count)
{
	/* Daemons told by their own death signal get a moment to unmount. */
	for (int t = 0; t < 100; t++) {
		bool any = false;
		for (int i = 0; i < count; i++)
			any |= mounted_below(dirs[i], false);
		if (!any)
			break;
		usleep(50000);
	}
	for (int i = 0; i < count; i++)
		kill_users(dirs[i]);
	usleep(100000);
	for (int i = 0; i < count; i++) {
		mounted_below(dirs[i], true);
		char command[1200];
		snprintf(command, sizeof(command), "rm -rf '%s'", dirs[i]);
		if (system(command) != 0)
			fprintf(stderr, "janitor: could not remove %s\n", dirs[i]);
	}
}

pid_t janitor_start(const char *const *dirs, int count)
{
	sigset_t signals, previous;
	sigemptyset(&signals);
	sigaddset(&signals, SIGUSR1);
	sigaddset(&signals, SIGUSR2);
	sigprocmask(SIG_BLOCK, &signals, &previous);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid != 0) {
		sigprocmask(SIG_SETMASK, &previous, NULL);
		return pid;
	}
	/* Not in the test's process group, not told of its signals. */
	setsid();
	prctl(PR_SET_PDEATHSIG, SIGUSR1);
	if (getppid() == parent) { /* else it died already */
		int signal_number;
		sigwait(&signals, &signal_number);
	}
	clean(dirs, count);
	_exit(0);
}

void janitor_stop(pid_t janitor)
{
	if (janitor <= 0)
		return;
	kill(janitor, SIGUSR2);
	waitpid(janitor, NULL, 0);
}
