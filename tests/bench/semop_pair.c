/* semop_pair.c: the SysV floor: an uncontended P+V pair on a private set.
 * usage: bench-semop-pair [PAIRS]   (prints microseconds per pair) */
#include <stdio.h>
#include <stdlib.h>
#include <sys/sem.h>
#include <time.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char *argv[])
{
	long pairs = argc > 1 ? atol(argv[1]) : 200000;
	int semid = semget(IPC_PRIVATE, 1, 0600);
	struct sembuf v = {0, 1, 0}, p = {0, -1, 0};

	if (semid < 0 || semop(semid, &v, 1) < 0) {
		perror("semget");
		return 1;
	}
	double start = now();
	for (long i = 0; i < pairs; i++)
		if (semop(semid, &p, 1) < 0 || semop(semid, &v, 1) < 0) {
			perror("semop");
			break;
		}
	double elapsed = now() - start;
	semctl(semid, 0, IPC_RMID);
	printf("%.3f\n", elapsed / (double)pairs * 1e6);
	return 0;
}
