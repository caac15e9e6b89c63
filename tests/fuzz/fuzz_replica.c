/* fuzz_replica.c: the cluster replica's rule under any sequence of events.
 * Each input byte pair is one step: a meta put (limit, plain, relax), an
 * entry put or delete, a lease dropped, a semaphore removed, a planner's
 * write applied, a host's open mark put or deleted, or a raw key/value
 * from the input. After every step, for
 * every semaphore: holders never pass limit - plain, the value is never
 * negative, holders are exactly the oldest non-relaxed entries, and a
 * second replica fed the same accepted events agrees. */
#include "replica.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	struct replica *replica, *twin;
	int64_t revision;
	int holders_seen; /* reports: granted minus released/demoted */
	int marks;	  /* open marks put (raw keys included): hosts can be no more */
};

static const char *const names[] = {"a", "b", "c%2Fd"};

static int step(struct run *run, bool deleted, const char *key, const char *value, int64_t create,
		int64_t lease)
{
	char error[256];
	struct replica_event e = {
	    .deleted = deleted,
	    .key = key,
	    .key_length = strlen(key),
	    .value = value,
	    .value_length = value ? strlen(value) : 0,
	    .revision = run->revision + 1,
	    .create_revision = create ? create : run->revision + 1,
	    .lease = lease,
	};
	int r = replica_apply(run->replica, &e, NULL, NULL, error, sizeof(error));
	if (r == 0) {
		run->revision++;
		run->marks += !deleted && strstr(key, "/open/") != NULL;
		if (replica_apply(run->twin, &e, NULL, NULL, error, sizeof(error)) != 0)
			abort(); /* the same event cannot fail on a twin */
	} else if (replica_revision(run->replica) != run->revision)
		abort(); /* a refused event moved the revision */
	return r;
}

static void check(void *context, const char *name, const struct replica_state *state)
{
	struct run *run = context;
	if (state->holders > state->meta.limit - state->meta.plain || state->value < 0 ||
	    state->holders < 0 || state->waiting < 0)
		abort();
	/* Waiters only while every slot is taken. */
	if (state->waiting > 0 && state->holders < state->meta.limit - state->meta.plain)
		abort();
	struct replica_state twin;
	if (replica_state(run->twin, name, &twin) != 0 || twin.holders != state->holders ||
	    twin.value != state->value || twin.waiting != state->waiting ||
	    twin.opened != state->opened || state->opened < 0 || state->opened > run->marks)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run run = {.replica = replica_new(), .twin = replica_new()};
	if (!run.replica || !run.twin)
		abort();
	for (size_t i = 0; i + 1 < size; i += 2) {
		uint8_t op = data[i] % 10, arg = data[i + 1];
		const char *name = names[arg % 3];
		char key[2048], value[256], entry[REPLICA_ENTRY_MAX];
		snprintf(entry, sizeof(entry), "h%u.%u.%u", arg % 3, 1 + arg / 3 % 2, arg / 6 % 5);
		struct replica_meta meta;
		char forgive[8][REPLICA_ENTRY_MAX];
		switch (op) {
		case 0: /* meta put */
			snprintf(key, sizeof(key), "sem/%s/meta", name);
			snprintf(value, sizeof(value), "limit=%u plain=%u", arg / 3 % 5,
				 arg / 15 % 3);
			step(&run, false, key, value, 0, 0);
			break;
		case 1: /* a new entry (or a re-put of one) */
		case 2:
			snprintf(key, sizeof(key), "sem/%s/q/%s", name, entry);
			snprintf(value, sizeof(value), "kind=%s who=pid:%u@h",
				 op == 1 ? "lock" : "acquire", arg);
			if (step(&run, false, key, value, 0, 1 + arg % 2) != 0)
				step(&run, true, key, NULL, 0, 0);
			break;
		case 3: /* an entry goes */
			snprintf(key, sizeof(key), "sem/%s/q/%s", name, entry);
			step(&run, true, key, NULL, 0, 0);
			break;
		case 4: /* limit */
			snprintf(key, sizeof(key), "sem/%s/meta", name);
			if (replica_plan_limit(run.replica, name, arg % 6, &meta) == 0 &&
			    replica_meta_format(&meta, value, sizeof(value)) > 0)
				step(&run, false, key, value, 0, 0);
			break;
		case 5: /* relax */
			snprintf(key, sizeof(key), "sem/%s/meta", name);
			if (replica_plan_relax(run.replica, name, &meta) == 0 &&
			    replica_meta_format(&meta, value, sizeof(value)) > 0)
				step(&run, false, key, value, 0, 0);
			break;
		case 6: { /* set, forgiving lock entries */
			int n = replica_plan_set(run.replica, name, arg % 5, &meta, forgive, 8);
			for (int f = 0; f < n; f++) {
				snprintf(key, sizeof(key), "sem/%s/q/%s", name, forgive[f]);
				step(&run, true, key, NULL, 0, 0);
			}
			snprintf(key, sizeof(key), "sem/%s/meta", name);
			if (n >= 0 && replica_meta_format(&meta, value, sizeof(value)) > 0)
				step(&run, false, key, value, 0, 0);
			break;
		}
		case 7: /* rm */
			snprintf(key, sizeof(key), "sem/%s/meta", name);
			step(&run, true, key, NULL, 0, 0);
			break;
		case 9: /* a host's open mark comes or goes */
			snprintf(key, sizeof(key), "sem/%s/open/h%u", name, arg / 3 % 3);
			step(&run, arg / 9 % 2 == 1, key, "pid=1", 0, 1 + arg % 2);
			break;
		case 8: { /* raw bytes as a key and a value */
			size_t length = arg % 32;
			if (i + 2 + length > size)
				length = size - i - 2;
			char raw[64];
			memcpy(raw, data + i + 2, length);
			raw[length] = '\0';
			char *split = strchr(raw, '=');
			if (split)
				*split++ = '\0';
			step(&run, false, raw, split ? split : "", 0, arg % 3);
			i += length;
			break;
		}
		}
		replica_each(run.replica, check, &run);
	}
	replica_free(run.replica);
	replica_free(run.twin);
	return 0;
}
