/* handoff.c: hand-off latency through a semaphore file. Two processes take
 * turns: the holder waits until the other is queued, notes the time and
 * writes `unlock`; the other's blocked `lock` write returns and it notes the
 * latency. With `sysv` instead of a file: the same turns on a private SysV
 * semaphore (semop -1 / +1), the floor of that shape — the tail included, as
 * both sides idle 1 ms between turns and the CPUs with them.
 * usage: bench-handoff FILE|sysv [ROUNDS]   prints p50 and p99 in microseconds */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct shared {
	_Atomic long long unlocked_at; /* ns, written by the holder */
	long long samples[];	       /* ns, one per hand-off */
};

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int compare(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return (x > y) - (x < y);
}

static int semid = -1; /* sysv: the private set; else -1 */

static int move(int fd, short delta)
{
	if (semid >= 0) {
		struct sembuf op = {.sem_num = 0, .sem_op = delta};
		return semop(semid, &op, 1);
	}
	const char *text = delta < 0 ? "lock\n" : "unlock\n";
	return write(fd, text, strlen(text)) == (ssize_t)strlen(text) ? 0 : -1;
}

/* Each side: take the unit (blocking), record, let the other queue, give it. */
static int take_turns(const char *path, struct shared *shared, long first, long rounds)
{
	int fd = semid >= 0 ? -1 : open(path, O_WRONLY);
	if (semid < 0 && fd < 0)
		return -1;
	for (long i = first; i < rounds; i += 2) {
		if (move(fd, -1) < 0)
			return -1;
		long long unlocked_at = atomic_load(&shared->unlocked_at);
		if (unlocked_at)
			shared->samples[i] = now_ns() - unlocked_at;
		usleep(1000); /* the other side is queued well before this ends */
		atomic_store(&shared->unlocked_at, now_ns());
		if (move(fd, 1) < 0)
			return -1;
	}
	if (fd >= 0)
		close(fd);
	return 0;
}

int main(int argc, char *argv[])
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|sysv [ROUNDS]\n", argv[0]);
		return 2;
	}
	if (strcmp(argv[1], "sysv") == 0) {
		struct sembuf up = {.sem_num = 0, .sem_op = 1};
		semid = semget(IPC_PRIVATE, 1, 0600);
		if (semid < 0 || semop(semid, &up, 1) < 0) {
			perror("semget");
			return 1;
		}
	}
	long rounds = argc > 2 ? atol(argv[2]) : 2000;
	size_t size = sizeof(struct shared) + (size_t)rounds * sizeof(long long);
	struct shared *shared =
	    mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED || rounds < 4) {
		if (semid >= 0)
			semctl(semid, 0, IPC_RMID);
		return 2;
	}
	pid_t child = fork();
	if (child == 0)
		_exit(take_turns(argv[1], shared, 1, rounds) < 0 ? 1 : 0);
	int r = take_turns(argv[1], shared, 0, rounds);
	int status = 1;
	if (child > 0)
		waitpid(child, &status, 0);
	if (semid >= 0)
		semctl(semid, 0, IPC_RMID);
	if (r < 0 || child < 0 || status != 0) {
		fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	long count = 0;
	for (long i = 0; i < rounds; i++)
		if (shared->samples[i] > 0)
			shared->samples[count++] = shared->samples[i];
	qsort(shared->samples, (size_t)count, sizeof(long long), compare);
	printf("%.2f p50_us %.2f p99_us (%ld hand-offs)\n", shared->samples[count / 2] / 1e3,
	       shared->samples[count * 99 / 100] / 1e3, count);
	return 0;
}
