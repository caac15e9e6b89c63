/* waiters.c: park N blocked waiters on one semaphore, then idle, so that the
 * daemon's footprint with them can be read from /proc.
 *
 *   bench-waiters mount FILE N        N threads, each blocked in a `lock`
 *                                     write on its own fd of FILE
 *   bench-waiters ace HOST PORT NAME N
 *                                     N connections waiting in acquire:NAME|,
 *                                     heartbeats read and dropped
 * Prints "ready" once every request is sent; exits when stdin closes (the
 * waiters go with it: FUSE requests are interrupted, sockets closed). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static void *blocked_writer(void *argument)
{
	int fd = (int)(intptr_t)argument;
	if (write(fd, "lock\n", 5) == 5) /* granted: hand the unit back */
		(void)!write(fd, "unlock\n", 7);
	return NULL;
}

static int mount_waiters(const char *path, int count)
{
	pthread_attr_t attributes;
	pthread_attr_init(&attributes);
	pthread_attr_setstacksize(&attributes, 64 * 1024);
	for (int i = 0; i < count; i++) {
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		pthread_t thread;
		if (fd < 0 || pthread_create(&thread, &attributes, blocked_writer,
					     (void *)(intptr_t)fd) != 0) {
			perror(path);
			return 1;
		}
		pthread_detach(thread);
	}
	return 0;
}

/* What the waiters heard other than `wait|`: said on exit, for a waiter
 * that the server let go (closed) or granted cannot pass unseen. */
static atomic_ulong closed_count, other_count;
static char other_sample[128];

static void *drain(void *argument)
{
	int epoll = (int)(intptr_t)argument;
	for (;;) {
		struct epoll_event events[256];
		int n = epoll_wait(epoll, events, 256, -1);
		for (int i = 0; i < n; i++) {
			char buffer[256];
			ssize_t got = recv(events[i].data.fd, buffer, sizeof(buffer) - 1, 0);
			if (got <= 0) {
				atomic_fetch_add(&closed_count, 1);
				epoll_ctl(epoll, EPOLL_CTL_DEL, events[i].data.fd, NULL);
				continue;
			}
			buffer[got] = '\0';
			for (char *at = buffer; *at; at += strlen("wait|")) {
				if (strncmp(at, "wait|", 5) != 0) {
					if (atomic_fetch_add(&other_count, 1) == 0)
						snprintf(other_sample, sizeof(other_sample),
							 "%.100s", at);
					break;
				}
			}
		}
	}
	return NULL;
}

static int ace_waiters(const char *host, int port, const char *name, int count)
{
	struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	char request[300];
	int length = snprintf(request, sizeof(request), "acquire:%s|", name);
	int epoll = epoll_create1(EPOLL_CLOEXEC);
	pthread_t thread;

	if (inet_pton(AF_INET, host, &server.sin_addr) != 1)
		return 2;
	for (int i = 0; i < count; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
		if (fd < 0 || connect(fd, (struct sockaddr *)&server, sizeof(server)) < 0 ||
		    send(fd, request, (size_t)length, MSG_NOSIGNAL) != length ||
		    epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) < 0) {
			perror("connect");
			return 1;
		}
	}
	return pthread_create(&thread, NULL, drain, (void *)(intptr_t)epoll) != 0;
}

int main(int argc, char *argv[])
{
	struct rlimit files;
	int r;

	/* Every waiter holds a descriptor. */
	if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
		files.rlim_cur = files.rlim_max;
		setrlimit(RLIMIT_NOFILE, &files);
	}
	if (argc == 4 && strcmp(argv[1], "mount") == 0)
		r = mount_waiters(argv[2], atoi(argv[3]));
	else if (argc == 6 && strcmp(argv[1], "ace") == 0)
		r = ace_waiters(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]));
	else {
		fprintf(stderr, "usage: bench-waiters mount FILE N\n"
				"       bench-waiters ace HOST PORT NAME N\n");
		return 2;
	}
	if (r)
		return r;
	printf("ready\n");
	fflush(stdout);
	char buffer[64];
	while (read(0, buffer, sizeof(buffer)) > 0)
		;
	if (closed_count || other_count) {
		fprintf(stderr, "bench-waiters: %lu closed by the server, %lu other replies (%s)\n",
			(unsigned long)closed_count, (unsigned long)other_count, other_sample);
		_exit(1);
	}
	_exit(0);
}
