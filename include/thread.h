/* thread.h: starting the daemon's service threads. */
#ifndef SEMFS_THREAD_H
#define SEMFS_THREAD_H

#include <pthread.h>

/* pthread_create with every signal blocked in the new thread, so SIGTERM,
 * SIGINT and SIGHUP reach the FUSE loop, which must see them to stop.
 * Returns 0 or -errno. */
int thread_start(pthread_t *thread, void *(*body)(void *), void *argument);

#endif
