/* store_waiters.c: the waiter queue of a semaphore, FIFO, and the done list:
 * whatever ends a queued request (a grant, a timeout, relax, delete,
 * shutdown) only moves it onto a local done list under the store lock;
 * run_done() completes them once the lock is dropped. */
#include "store_internal.h"

void done_push(struct done_list *done, struct waiter *waiter, int result)
{
	waiter->state = WAITER_DONE;
	waiter->result = result;
	waiter->queue_next = NULL;
	if (done->last)
		done->last->queue_next = waiter;
	else
		done->first = waiter;
	done->last = waiter;
}

void run_done(struct done_list *done)
{
	struct waiter *waiter = done->first;

	while (waiter) {
		struct waiter *next = waiter->queue_next; /* complete() may free it */
		waiter->complete(waiter, waiter->result < 0 ? -waiter->result : 0);
		waiter = next;
	}
	done->first = done->last = NULL;
}

/* A queued write holds its inode's lock: the front-end that sent it counts. */
void note_queued(struct waiter *waiter, int delta)
{
	if (waiter->queued)
		waiter->queued(waiter, delta);
}

void queue_remove(struct semaphore *semaphore, struct waiter *waiter)
{
	note_queued(waiter, -1);
	if (waiter->queue_prev)
		waiter->queue_prev->queue_next = waiter->queue_next;
	else
		semaphore->head = waiter->queue_next;
	if (waiter->queue_next)
		waiter->queue_next->queue_prev = waiter->queue_prev;
	else
		semaphore->tail = waiter->queue_prev;
	waiter->queue_prev = waiter->queue_next = NULL;
	semaphore->waiting--;
}

void queue_append(struct semaphore *semaphore, struct waiter *waiter)
{
	waiter->queue_next = NULL;
	waiter->queue_prev = semaphore->tail;
	if (semaphore->tail)
		semaphore->tail->queue_next = waiter;
	else
		semaphore->head = waiter;
	semaphore->tail = waiter;
	semaphore->waiting++;
	waiter->state = WAITER_QUEUED;
	note_queued(waiter, 1);
}
