/* store_snapshot.c: snapshots of semaphores for the report module and the
 * stats writer, taken under the store lock. */
#include "store_internal.h"

struct holders_text;

static const char *holders_join(struct holders_text *buffer, const struct semaphore *semaphore);
static void metric_of(const struct semaphore *s, const char *path, struct holders_text *holders,
		      struct store_metric *metric);
static void metrics_of_subtree(struct store *store, struct node *directory,
			       const struct store_caller *caller, store_metric_fn *visit,
			       void *context, struct holders_text *holders);

/* ---- snapshots, for the report module and the stats writer ---------------- */

/* Holders as "who,who,...", one entry per unit, in a buffer reused across
 * one visit. */
struct holders_text {
	char *data;
	size_t allocated;
};

static const char *holders_join(struct holders_text *buffer, const struct semaphore *semaphore)
{
	size_t length = 0;

	if (semaphore->cluster_holders) /* cluster mode: every host's, from the replica */
		return semaphore->cluster_holders;
	for (const struct holder *h = semaphore->holders; h; h = h->next_in_semaphore) {
		size_t who = strlen(h->who);
		for (unsigned i = 0; i < h->units; i++) {
			if (length + who + 2 > buffer->allocated) {
				size_t allocated = buffer->allocated ? buffer->allocated * 2 : 256;
				while (allocated < length + who + 2)
					allocated *= 2;
				char *data = realloc(buffer->data, allocated);
				if (!data)
					return buffer->data
						   ? (buffer->data[length] = '\0', buffer->data)
						   : "";
				buffer->data = data;
				buffer->allocated = allocated;
			}
			if (length)
				buffer->data[length++] = ',';
			memcpy(buffer->data + length, h->who, who);
			length += who;
		}
	}
	if (!length)
		return "";
	buffer->data[length] = '\0';
	return buffer->data;
}

static void metric_of(const struct semaphore *s, const char *path, struct holders_text *holders,
		      struct store_metric *metric)
{
	int value = s->removed ? 0 : be_value(s->store, s->semid);
	*metric = (struct store_metric){
	    .path = path,
	    .limit = s->limit,
	    .value = value < 0 ? 0 : value,
	    .waiting = s->waiting,
	    .grants = s->grants,
	    .timeouts = s->timeouts,
	    .token = s->token,
	    .key = s->key,
	    .semid = s->semid,
	    .holders = holders_join(holders, s),
	    .defined = s->defined,
	    .undefined = s->undefined,
	};
}

static void metrics_of_subtree(struct store *store, struct node *directory,
			       const struct store_caller *caller, store_metric_fn *visit,
			       void *context, struct holders_text *holders)
{
	if (!node_permits(directory, caller, 1))
		return; /* what a reader cannot reach, it does not see */
	for (struct node *node = directory->first_child; node; node = node->next_sibling) {
		if (node->kind == NODE_DIRECTORY) {
			metrics_of_subtree(store, node, caller, visit, context, holders);
			continue;
		}
		if (!node_permits(node, caller, 4))
			continue;
		char path[PATH_MAX];
		if (node_path(node, path, sizeof(path)) < 0)
			continue;
		struct store_metric metric;
		metric_of(node->semaphore, path, holders, &metric);
		visit(context, &metric);
	}
}

void store_metrics(struct store *store, const struct store_caller *caller, store_metric_fn *visit,
		   void *context, struct store_totals *totals)
{
	struct holders_text holders = {0};

	pthread_mutex_lock(&store->lock);
	metrics_of_subtree(store, store->root, caller, visit, context, &holders);
	if (totals) {
		totals->semaphores = store->live_count;
		totals->grants = store->grants_total;
		totals->timeouts = store->timeouts_total;
	}
	pthread_mutex_unlock(&store->lock);
	free(holders.data);
}

int store_semaphore_metric(struct store *store, struct semaphore *semaphore, store_metric_fn *visit,
			   void *context)
{
	struct holders_text holders = {0};
	char path[PATH_MAX];
	int r;

	pthread_mutex_lock(&store->lock);
	bool gone = !semaphore->node || semaphore->node->unlinked || semaphore->removed ||
		    node_path(semaphore->node, path, sizeof(path)) < 0;
	struct store_metric metric;
	metric_of(semaphore, gone ? "" : path, &holders, &metric);
	metric.gone = gone;
	visit(context, &metric);
	r = 0;
	pthread_mutex_unlock(&store->lock);
	free(holders.data);
	return r;
}
