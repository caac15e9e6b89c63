/* lock_pair.c: the cost of one uncontended `lock` + `unlock` pair written
 * through a kept-open file descriptor of a semfs semaphore.
 * usage: bench-lock-pair FILE [PAIRS]   (prints microseconds per pair) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE [PAIRS]\n", argv[0]);
		return 2;
	}
	long pairs = argc > 2 ? atol(argv[2]) : 20000;
	int fd = open(argv[1], O_WRONLY | O_CREAT, 0644);
	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (long i = 0; i < pairs / 10 + 1; i++) /* warm up */
		if (write(fd, "lock\n", 5) != 5 || write(fd, "unlock\n", 7) != 7)
			goto failed;
	double start = now();
	for (long i = 0; i < pairs; i++)
		if (write(fd, "lock\n", 5) != 5 || write(fd, "unlock\n", 7) != 7)
			goto failed;
	double elapsed = now() - start;
	printf("%.2f us per lock+unlock pair (%ld pairs)\n", elapsed * 1e6 / (double)pairs, pairs);
	close(fd);
	return 0;
failed:
	fprintf(stderr, "write: %s\n", strerror(errno));
	return 1;
}
