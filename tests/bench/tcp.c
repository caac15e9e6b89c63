/* tcp.c: TCP floors and native-dialect figures on 127.0.0.1.
 *
 *   bench-tcp echo-server [ace]
 *       One epoll thread echoing every byte back (the floor's server, built
 *       like semfs's). Prints its port, serves until killed. With `ace`:
 *       a do-nothing ACE server (`locked|` to an acquire, `ok|` and a close
 *       to a release), the floor of bench-ace-cycles.
 *   bench-tcp rr HOST PORT CONNECTIONS SECONDS DEPTH echo|native
 *       Request/reply rate: each connection (own thread) sends DEPTH
 *       requests at once and waits for DEPTH reply lines, until SECONDS pass.
 *       echo: 16-byte lines; native: `lock bench-N` / `unlock bench-N`.
 *       Prints: requests/s and microseconds per round trip (the mean); with
 *       one connection, also the median round trip (median_us=).
 *   bench-tcp cycles HOST PORT CLIENTS SECONDS
 *       Connect, send 16 bytes, read them back, close: the floor of ACE's
 *       connect-acquire-release-close cycle. Prints: cycles/s. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ECHO_LINE "ping-0123456789\n" /* 16 bytes */
#define DEPTH_MAX 1024

static struct sockaddr_in server;
static double deadline;
static int depth;
static bool native;
static atomic_ulong done, failures;
/* One connection: each round trip, for the median (etcd's floor is a
 * median, and a mean carries its fsync tail). */
static double *samples;
static size_t sample_count, sample_room;

static void sample(double seconds)
{
	if (sample_count == sample_room) {
		size_t room = sample_room ? 2 * sample_room : 4096;
		double *grown = realloc(samples, room * sizeof(*grown));
		if (!grown)
			return;
		samples = grown;
		sample_room = room;
	}
	samples[sample_count++] = seconds;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int dial(void)
{
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A reply that never comes is a failure to report, not a hang. */
	struct timeval patience = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof(patience));
	if (connect(fd, (struct sockaddr *)&server, sizeof(server)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool send_all(int fd, const char *data, size_t length)
{
	while (length > 0) {
		ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
		if (n <= 0)
			return false;
		data += n;
		length -= (size_t)n;
	}
	return true;
}

/* Read until `lines` newlines arrived; replies starting "err" fail. */
static bool await_lines(int fd, int lines)
{
	char buffer[4096];
	bool line_start = true;

	while (lines > 0) {
		ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
		if (n <= 0)
			return false;
		for (ssize_t i = 0; i < n; i++) {
			if (line_start && buffer[i] == 'e')
				return false;
			line_start = buffer[i] == '\n';
			lines -= line_start;
		}
	}
	return true;
}

static bool recording; /* one connection, depth 1 */

static void *rr_client(void *argument)
{
	char batch[DEPTH_MAX * 48];
	size_t length = 0;
	int fd = dial();

	if (fd < 0) {
		atomic_fetch_add(&failures, 1);
		return NULL;
	}
	if (native) {
		char create[64], reply[128];
		int n = snprintf(create, sizeof(create), "create bench-%s 1\n", (char *)argument);
		/* An existing one answers EEXIST: fine; any other err is not. */
		ssize_t got;
		if (!send_all(fd, create, (size_t)n) ||
		    (got = recv(fd, reply, sizeof(reply) - 1, 0)) <= 0)
			goto failed;
		reply[got] = '\0';
		if (strncmp(reply, "ok", 2) != 0 && strncmp(reply, "err EEXIST", 10) != 0) {
			fprintf(stderr, "connection %s: %s", (char *)argument, reply);
			goto failed;
		}
	} else {
		for (int i = 0; i < depth; i++)
			memcpy(batch + 16 * i, ECHO_LINE, 16);
		length = (size_t)depth * 16;
	}
	for (unsigned long sent = 0; now() < deadline;) {
		if (native) { /* lock and unlock alternate, across batches too */
			length = 0;
			for (int i = 0; i < depth; i++, sent++)
				length += (size_t)snprintf(batch + length, sizeof(batch) - length,
							   sent % 2 ? "unlock bench-%s\n"
								    : "lock bench-%s\n",
							   (char *)argument);
		}
		double sent_at = now();
		if (!send_all(fd, batch, length) || !await_lines(fd, depth)) {
			fprintf(stderr, "connection %s: no reply to %.*s (%s)\n", (char *)argument,
				(int)length, batch, strerror(errno));
			goto failed;
		}
		atomic_fetch_add(&done, (unsigned long)depth);
		if (recording)
			sample(now() - sent_at);
		if (native && now() >= deadline && sent % 2) { /* leave it unlocked */
			length = (size_t)snprintf(batch, sizeof(batch), "unlock bench-%s\n",
						  (char *)argument);
			if (!send_all(fd, batch, length) || !await_lines(fd, 1))
				goto failed;
		}
	}
	close(fd);
	return NULL;
failed:
	atomic_fetch_add(&failures, 1);
	close(fd);
	return NULL;
}

static void *cycle_client(void *argument)
{
	(void)argument;
	while (now() < deadline) {
		int fd = dial();
		bool ok = fd >= 0 && send_all(fd, ECHO_LINE, 16) && await_lines(fd, 1);
		if (fd >= 0)
			close(fd);
		atomic_fetch_add(ok ? &done : &failures, 1);
	}
	return NULL;
}

/* A do-nothing ACE server: `locked|` for each `acquire:NAME|`, `ok|` and
 * a close for `release|` — the same bytes as semfs, and no semaphore. */
static bool ace_answer(int fd, const char *data, size_t length)
{
	for (const char *at = data, *end = data + length, *bar; at < end; at = bar + 1) {
		bar = memchr(at, '|', (size_t)(end - at));
		if (!bar)
			return true; /* the rest of a message: clients send whole ones */
		bool release = bar - at == 7 && memcmp(at, "release", 7) == 0;
		const char *reply = release ? "ok|" : "locked|";
		if (send(fd, reply, strlen(reply), MSG_NOSIGNAL) != (ssize_t)strlen(reply) ||
		    release)
			return false;
	}
	return true;
}

static int echo_server(bool ace)
{
	struct sockaddr_in address = {.sin_family = AF_INET,
				      .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t size = sizeof(address);
	int one = 1;
	int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int epoll = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event event = {.events = EPOLLIN, .data.fd = listener};

	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(listener, (struct sockaddr *)&address, sizeof(address)) < 0 ||
	    listen(listener, 65535) < 0 ||
	    getsockname(listener, (struct sockaddr *)&address, &size) < 0 ||
	    epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &event) < 0) {
		perror("echo-server");
		return 1;
	}
	printf("%u\n", ntohs(address.sin_port));
	fflush(stdout);
	for (;;) {
		struct epoll_event events[256];
		int count = epoll_wait(epoll, events, 256, -1);
		for (int i = 0; i < count; i++) {
			int fd = events[i].data.fd;
			if (fd == listener) {
				int peer;
				while ((peer = accept4(listener, NULL, NULL,
						       SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					setsockopt(peer, IPPROTO_TCP, TCP_NODELAY, &one,
						   sizeof(one));
					struct epoll_event in = {.events = EPOLLIN,
								 .data.fd = peer};
					epoll_ctl(epoll, EPOLL_CTL_ADD, peer, &in);
				}
				continue;
			}
			char buffer[65536];
			ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
			if (n <= 0) {
				if (n == 0 || errno != EAGAIN)
					close(fd);
				continue;
			}
			/* Replies are small; a full socket buffer would mean a
			 * client that does not read, which ours always do. */
			if (ace ? !ace_answer(fd, buffer, (size_t)n)
				: send(fd, buffer, (size_t)n, MSG_NOSIGNAL) != n)
				close(fd);
		}
	}
}

static int usage(void)
{
	fprintf(stderr, "usage: bench-tcp echo-server [ace]\n"
			"       bench-tcp rr HOST PORT CONNECTIONS SECONDS DEPTH echo|native\n"
			"       bench-tcp cycles HOST PORT CLIENTS SECONDS\n");
	return 2;
}

int main(int argc, char *argv[])
{
	if ((argc == 2 || (argc == 3 && strcmp(argv[2], "ace") == 0)) &&
	    strcmp(argv[1], "echo-server") == 0)
		return echo_server(argc == 3);
	bool rr = argc == 8 && strcmp(argv[1], "rr") == 0;
	if (!rr && !(argc == 6 && strcmp(argv[1], "cycles") == 0))
		return usage();
	server.sin_family = AF_INET;
	server.sin_port = htons((uint16_t)atoi(argv[3]));
	int clients = atoi(argv[4]);
	double seconds = atof(argv[5]);
	if (inet_pton(AF_INET, argv[2], &server.sin_addr) != 1 || clients < 1 || clients > 1000 ||
	    seconds <= 0)
		return usage();
	if (rr) {
		depth = atoi(argv[6]);
		native = strcmp(argv[7], "native") == 0;
		if (depth < 1 || depth > DEPTH_MAX)
			return usage();
	}
	recording = rr && clients == 1 && depth == 1;
	pthread_t *threads = calloc((size_t)clients, sizeof(*threads));
	char(*names)[16] = calloc((size_t)clients, sizeof(*names));
	double start = now();
	deadline = start + seconds;
	for (int i = 0; i < clients; i++) {
		snprintf(names[i], sizeof(names[i]), "%d", i);
		pthread_create(&threads[i], NULL, rr ? rr_client : cycle_client, names[i]);
	}
	for (int i = 0; i < clients; i++)
		pthread_join(threads[i], NULL);
	double elapsed = now() - start;
	double rate = (double)done / elapsed;
	/* Per connection: the time one request takes (a round trip at depth 1). */
	double round_trip_us = rr ? 1e6 * clients / rate : 0;
	printf("%.1f per_second %.2f round_trip_us failures=%lu", rate, round_trip_us,
	       (unsigned long)failures);
	if (sample_count) {
		qsort(samples, sample_count, sizeof(*samples), by_value);
		printf(" median_us=%.2f", 1e6 * samples[sample_count / 2]);
	}
	printf("\n");
	free(samples);
	free(threads);
	free(names);
	return failures ? 1 : 0;
}
