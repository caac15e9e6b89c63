/* fake_backend.h: an in-memory backend (backend.h) for unit tests of the
 * store's rules: counters in an array, no kernel, no other processes, except
 * the ones a test plays (fake_outside_adjust, fake_remove). */
#ifndef SEMFS_TEST_FAKE_BACKEND_H
#define SEMFS_TEST_FAKE_BACKEND_H

#include "backend.h"

#include <stdbool.h>
#include <stddef.h>

#define FAKE_COUNTERS 64

extern const struct backend fake_backend;

void fake_reset(void);
int fake_value(int handle);			 /* -EIDRM once removed */
int fake_live(void);				 /* counters not removed */
void fake_outside_adjust(int handle, int delta); /* another "process" moves it */
void fake_remove(int handle);			 /* an outside "ipcrm" */
/* Another "process" moves it by `delta` just before the next adjust_steps:
 * between the store's look at the value and its move. */
void fake_outside_adjust_before_steps(int handle, int delta);
/* `count` other "processes" sleep on it (what `waiting` adds to the store's
 * own sleepers). */
void fake_outside_sleepers(int handle, int count);
int fake_moves(int handle);	 /* moves so far, by anyone */
int fake_asks(int handle);	 /* values the store asked (the backend's `value`) */
int fake_undo_units(int handle); /* units held with undo: what a crash would return */
/* Stamps: each change ticks a clock (a "second" per change); off: the
 * backend cannot give them (ENOTSUP), as without /proc/sysvipc. */
void fake_stamps_off(bool off);
void fake_steps_max(size_t max); /* adjust_steps refuses more (E2BIG), as SEMOPM */

#endif
