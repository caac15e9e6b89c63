/* ace_cycles.c: full ACE-dialect cycles per second against any ACE-protocol
 * server: connect, acquire:NAME|, await locked|, release|, await ok|, close.
 *
 * usage: bench-ace-cycles HOST PORT CLIENTS SECONDS [shared]
 * Each client thread uses its own name (bench-N) unless "shared" is given,
 * then all contend for one. Prints: cycles, seconds, cycles/s. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in server;
static double deadline;
static bool shared;
static atomic_ulong cycles, failures;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Read until `token` has been seen (tokens may come coalesced). */
static bool await(int fd, const char *token)
{
	char buffer[256];
	size_t length = 0;

	for (;;) {
		ssize_t n = recv(fd, buffer + length, sizeof(buffer) - 1 - length, 0);
		if (n <= 0)
			return false;
		length += (size_t)n;
		buffer[length] = '\0';
		if (strstr(buffer, token))
			return true;
		if (length > sizeof(buffer) / 2) { /* heartbeats only: keep the tail */
			memmove(buffer, buffer + length - 16, 16);
			length = 16;
		}
	}
}

static void *client(void *argument)
{
	char request[64];
	int one = 1;

	snprintf(request, sizeof(request), "acquire:bench-%s|",
		 shared ? "shared" : (char *)argument);
	while (now() < deadline) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&server, sizeof(server)) == 0 &&
			  send(fd, request, strlen(request), MSG_NOSIGNAL) > 0 &&
			  await(fd, "locked|") && send(fd, "release|", 8, MSG_NOSIGNAL) == 8 &&
			  await(fd, "ok|");
		if (fd >= 0)
			close(fd);
		if (ok)
			atomic_fetch_add(&cycles, 1);
		else
			atomic_fetch_add(&failures, 1);
	}
	return NULL;
}

int main(int argc, char *argv[])
{
	if (argc < 5) {
		fprintf(stderr, "usage: %s HOST PORT CLIENTS SECONDS [shared]\n", argv[0]);
		return 2;
	}
	server.sin_family = AF_INET;
	server.sin_port = htons((uint16_t)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) {
		fprintf(stderr, "%s: not an IPv4 address\n", argv[1]);
		return 2;
	}
	int clients = atoi(argv[3]);
	double seconds = atof(argv[4]);
	shared = argc > 5 && strcmp(argv[5], "shared") == 0;
	if (clients < 1 || clients > 1000 || seconds <= 0) {
		fprintf(stderr, "CLIENTS 1..1000, SECONDS > 0\n");
		return 2;
	}
	pthread_t *threads = calloc((size_t)clients, sizeof(*threads));
	char(*names)[16] = calloc((size_t)clients, sizeof(*names));
	double start = now();
	deadline = start + seconds;
	for (int i = 0; i < clients; i++) {
		snprintf(names[i], sizeof(names[i]), "%d", i);
		pthread_create(&threads[i], NULL, client, names[i]);
	}
	for (int i = 0; i < clients; i++)
		pthread_join(threads[i], NULL);
	double elapsed = now() - start;
	printf("cycles=%lu failures=%lu seconds=%.2f cycles_per_second=%.0f\n",
	       (unsigned long)cycles, (unsigned long)failures, elapsed, (double)cycles / elapsed);
	free(threads);
	free(names);
	return failures ? 1 : 0;
}
