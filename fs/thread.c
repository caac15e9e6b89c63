/* thread.c: service threads that take no signals (see thread.h). */
#include "thread.h"

#include <signal.h>

int thread_start(pthread_t *thread, void *(*body)(void *), void *argument)
{
	sigset_t all, previous;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &previous);
	int r = pthread_create(thread, NULL, body, argument);
	pthread_sigmask(SIG_SETMASK, &previous, NULL);
	return -r;
}
