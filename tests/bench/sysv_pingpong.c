/* sysv_pingpong.c: the SysV hand-off floor. Two processes pass a turn back
 * and forth through two semaphores of one private set; each pass wakes a
 * process blocked in semop().
 * usage: bench-sysv-pingpong [ROUNDS]   (prints microseconds per one-way pass) */
#include <stdio.h>
#include <stdlib.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int pass(int semid, unsigned short take, unsigned short give)
{
	struct sembuf p = {take, -1, 0}, v = {give, 1, 0};
	return semop(semid, &p, 1) < 0 || semop(semid, &v, 1) < 0 ? -1 : 0;
}

int main(int argc, char *argv[])
{
	long rounds = argc > 1 ? atol(argv[1]) : 100000;
	int semid = semget(IPC_PRIVATE, 2, 0600);
	int r = 0;

	if (semid < 0) {
		perror("semget");
		return 1;
	}
	pid_t child = fork();
	if (child == 0) {
		for (long i = 0; i < rounds; i++)
			if (pass(semid, 1, 0) < 0)
				_exit(1);
		_exit(0);
	}
	double start = now();
	struct sembuf first = {1, 1, 0};
	if (child < 0 || semop(semid, &first, 1) < 0)
		r = 1;
	for (long i = 0; i < rounds && !r; i++) {
		struct sembuf p = {0, -1, 0}, v = {1, 1, 0};
		if (semop(semid, &p, 1) < 0 || (i + 1 < rounds && semop(semid, &v, 1) < 0))
			r = 1;
	}
	double elapsed = now() - start;
	int status = 1;
	if (child > 0)
		waitpid(child, &status, 0);
	semctl(semid, 0, IPC_RMID);
	if (r || status != 0) {
		perror("semop");
		return 1;
	}
	printf("%.2f us per one-way pass (%ld round trips)\n", elapsed * 1e6 / (double)rounds / 2,
	       rounds);
	return 0;
}
