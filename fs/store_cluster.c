/* store_cluster.c: the store in cluster mode (include/cluster.h). The tree,
 * journals and the SysV mirror of every value stay here; what a command does
 * is decided cluster-wide: requests go to the cluster loop and come back
 * through the hooks below, which keep the local tree equal to etcd's. */
#include "store_internal.h"

#include "cluster.h"

/* ---- hooks: the cluster loop tells the store ------------------------------ */

static struct node *node_at(struct store *store, const char *path)
{
	struct node *parent;
	const char *leaf;
	if (walk_to_parent(store, path, NULL, &parent, &leaf) < 0)
		return NULL;
	return node_child(store, parent, leaf);
}

static mode_t directory_bits(mode_t mode)
{
	return (mode & 0777) | ((mode & 0444) >> 2);
}

/* The SysV set shows the cluster's value; outsiders may only read it. */
static void mirror(struct store *store, struct semaphore *s, int value)
{
	int current = be_value(store, s->semid);
	if (current >= 0 && current != value)
		(void)be_adjust(store, s->semid, value - current, false);
	s->cluster_value = value;
}

static void hook_sync(void *context, const char *path, const struct replica_meta *meta, int value,
		      int waiting, const char *holders)
{
	struct store *store = context;
	pthread_mutex_lock(&store->lock);
	struct node *node = node_at(store, path);
	if (!node) {
		struct maker maker = {meta->uid, meta->gid, directory_bits(meta->mode)};
		struct node *parent = NULL;
		const char *leaf;
		int r = walk_to_parent(store, path, &maker, &parent, &leaf);
		if (r == 0)
			r = create_semaphore(store, parent, leaf, meta->mode, meta->uid, meta->gid,
					     (unsigned)meta->limit,
					     meta->undefined && !meta->defined,
					     meta->by[0] ? meta->by : "cluster", &node);
		if (r < 0) {
			if (parent)
				prune_implicit(store, parent);
			log_warnx("cluster: semaphore %s cannot be shown here: %s", path,
				  strerror(-r));
			pthread_mutex_unlock(&store->lock);
			return;
		}
	}
	if (node->kind != NODE_SEMAPHORE || !node->semaphore) {
		log_warnx("cluster: semaphore %s is a directory here: not shown", path);
		pthread_mutex_unlock(&store->lock);
		return;
	}
	struct semaphore *s = node->semaphore;
	if (!s->cluster_seen)
		s->token = 0; /* tokens are the cluster's revisions */
	if (!s->cluster_seen || (node->mode & 07777) != (meta->mode & 07777) ||
	    node->uid != meta->uid || node->gid != meta->gid) {
		/* The owner and mode the cluster says, also after a chmod or
		 * chown on any host (be_set_owner keeps the mirror read-only to
		 * other users). */
		bool changed = s->cluster_seen;
		node->mode = S_IFREG | (meta->mode & 07777);
		node->uid = meta->uid;
		node->gid = meta->gid;
		int r = be_set_owner(store, s->semid, meta->uid, meta->gid, meta->mode);
		if (r < 0) /* the monitor makes a set that went again, with this owner */
			log_warnx("cluster: semaphore %s: its SysV set's owner and mode: %s", path,
				  strerror(-r));
		if (changed) {
			timespec_now(CLOCK_REALTIME, &node->ctime);
			r = semaphore_save(store, s);
			if (r < 0)
				log_warnx(
				    "cluster: semaphore %s: its new owner and mode are not in "
				    "its record here: %s (the cluster has them)",
				    path, strerror(-r));
		}
	}
	s->limit = (unsigned)meta->limit;
	s->defined = meta->defined;
	s->undefined = meta->undefined && !meta->defined;
	s->waiting = (size_t)waiting;
	s->cluster_seen = true;
	if (!s->cluster_holders || strcmp(s->cluster_holders, holders) != 0) {
		char *copy = strdup(holders);
		if (copy) { /* else the old list stays: only the status text is stale */
			free(s->cluster_holders);
			s->cluster_holders = copy;
		}
	}
	mirror(store, s, value);
	if (s->reap_when_home)
		reap_if_idle(store, s, NULL);
	pthread_mutex_unlock(&store->lock);
}

static void hook_gone(void *context, const char *path)
{
	struct store *store = context;
	struct done_list done = {0};
	pthread_mutex_lock(&store->lock);
	struct node *node = node_at(store, path);
	if (node && node->kind == NODE_SEMAPHORE && node->semaphore)
		(void)delete_node(store, node, "cluster", &done);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
}

/* A directory made with mkdir on some host. */
static void hook_directory(void *context, const char *path, mode_t mode, uid_t uid, gid_t gid)
{
	struct store *store = context;
	pthread_mutex_lock(&store->lock);
	struct node *node = node_at(store, path);
	if (!node) {
		struct maker maker = {uid, gid, directory_bits(mode)};
		struct node *parent = NULL;
		const char *leaf;
		int r = walk_to_parent(store, path, &maker, &parent, &leaf);
		if (r == 0)
			r = make_directory(store, parent, leaf, mode, uid, gid, &node);
		if (r < 0) {
			if (parent)
				prune_implicit(store, parent);
			log_warnx("cluster: directory %s cannot be shown here: %s", path,
				  strerror(-r));
			pthread_mutex_unlock(&store->lock);
			return;
		}
	}
	if (node->kind == NODE_DIRECTORY) {
		node->implicit = false; /* it stays until rmdir */
		node->clustered = true;
		node->mode = S_IFDIR | (mode & 07777);
		node->uid = uid;
		node->gid = gid;
	}
	pthread_mutex_unlock(&store->lock);
}

static void hook_directory_gone(void *context, const char *path)
{
	struct store *store = context;
	pthread_mutex_lock(&store->lock);
	struct node *node = node_at(store, path);
	if (node && node->kind == NODE_DIRECTORY) {
		node->clustered = false;
		if (node->first_child)
			node->implicit = true; /* goes with its last entry */
		else
			(void)remove_directory(store, node);
	}
	pthread_mutex_unlock(&store->lock);
}

static void hook_load_begin(void *context)
{
	struct store *store = context;
	pthread_mutex_lock(&store->lock);
	for (struct semaphore *s = store->live; s; s = s->live_next)
		s->cluster_seen = false;
	pthread_mutex_unlock(&store->lock);
}

/* What the cluster does not have is not here either: left from a run
 * before (restored from state_dir), or removed while this host was away.
 * An undefined name idle in the cluster is reaped from here: the host whose
 * client let go of it last may have died before it could (or all hosts
 * restarted), and no other host would ever look again. */
static void hook_load_end(void *context)
{
	struct store *store = context;
	struct done_list done = {0};
	pthread_mutex_lock(&store->lock);
	for (bool again = true; again;) {
		again = false;
		for (struct semaphore *s = store->live; s; s = s->live_next)
			if (!s->cluster_seen && s->node && !s->node->unlinked) {
				(void)delete_node(store, s->node, "cluster", &done);
				again = true; /* the live list changed */
				break;
			}
	}
	for (struct semaphore *s = store->live; s; s = s->live_next)
		if (s->undefined && !s->idle_pending)
			reap_if_idle(store, s, &done); /* guarded in etcd: see cluster_reap */
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
}

static void hook_journal(void *context, const char *path, const char *event, const char *who,
			 int64_t token, const char *extra)
{
	struct store *store = context;
	pthread_mutex_lock(&store->lock);
	struct node *node = node_at(store, path);
	if (node && node->kind == NODE_SEMAPHORE && node->semaphore) {
		struct semaphore *s = node->semaphore;
		if (strcmp(event, "lock") == 0 || strcmp(event, "acquire") == 0) {
			s->grants++;
			store->grants_total++;
			if ((uint64_t)token > s->token)
				s->token = (uint64_t)token;
		}
		journal_event(store, s, event, who, token > 0 ? (uint64_t)token : 0, extra,
			      CHANGE_UNANNOUNCED);
	}
	pthread_mutex_unlock(&store->lock);
}

static void hook_complete(void *context, struct waiter *waiter, int error, int64_t token,
			  unsigned lock_units)
{
	struct store *store = context;
	pthread_mutex_lock(&store->lock);
	struct semaphore *s = waiter->semaphore;
	waiter->token = token > 0 ? (uint64_t)token : 0;
	waiter->lock_units = lock_units;
	waiter->changed_something = error == 0;
	if (error == -ETIMEDOUT) {
		s->timeouts++;
		store->timeouts_total++;
	}
	note_queued(waiter, -1);
	waiter->state = WAITER_DONE;
	pthread_mutex_unlock(&store->lock);
	waiter->complete(waiter, -error);
}

/* Another host's file closed (or its lease took the mark): an undefined
 * name that is idle here may go now; each such host asks (job_reap). */
static void hook_closed(void *context, const char *path)
{
	struct store *store = context;
	pthread_mutex_lock(&store->lock);
	struct node *node = node_at(store, path);
	if (node && node->kind == NODE_SEMAPHORE && node->semaphore && node->semaphore->undefined &&
	    !node->semaphore->idle_pending)
		reap_if_idle(store, node->semaphore, NULL);
	pthread_mutex_unlock(&store->lock);
}

static void hook_lease(void *context)
{
	struct store *store = context;
	pthread_mutex_lock(&store->lock);
	store->remark_opens = true;
	pthread_cond_signal(&store->monitor_wake);
	pthread_mutex_unlock(&store->lock);
}

static bool hook_alive(void *context)
{
	struct store *store = context;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 1;
	if (pthread_mutex_timedlock(&store->lock, &until) != 0)
		return false;
	pthread_mutex_unlock(&store->lock);
	return true;
}

int store_attach_cluster(struct store *store, const struct cluster_options *options, char *error,
			 size_t error_size)
{
	static const struct cluster_hooks hooks = {
	    .sync = hook_sync,
	    .gone = hook_gone,
	    .directory = hook_directory,
	    .directory_gone = hook_directory_gone,
	    .load_begin = hook_load_begin,
	    .load_end = hook_load_end,
	    .journal = hook_journal,
	    .complete = hook_complete,
	    .alive = hook_alive,
	    .closed = hook_closed,
	    .lease = hook_lease,
	};
	struct cluster_hooks mine = hooks;
	mine.context = store;
	struct cluster_options o = *options;
	o.max_wait = store->options.max_wait;
	return cluster_open(&store->cluster, &o, &mine, error, error_size);
}

/* ---- the store's calls, in cluster mode ------------------------------------ */

int cluster_store_submit(struct store *store, struct semaphore *semaphore, struct waiter *waiter)
{
	char path[PATH_MAX];
	pthread_mutex_lock(&store->lock);
	waiter->semaphore = semaphore;
	waiter->next = 0;
	int r = store->stopping ? -ECANCELED
		: semaphore->removed || !semaphore->node
		    ? -EIDRM
		    : node_path(semaphore->node, path, sizeof(path));
	if (r < 0) {
		waiter->state = WAITER_DONE;
		pthread_mutex_unlock(&store->lock);
		return r;
	}
	if (waiter->owner && !waiter->owner->id)
		waiter->owner->id = ++store->owner_ids;
	waiter->state = WAITER_QUEUED;
	note_queued(waiter, 1);
	pthread_mutex_unlock(&store->lock);
	/* complete() may run before this returns. */
	r = cluster_submit(store->cluster, path, waiter);
	if (r < 0) {
		pthread_mutex_lock(&store->lock);
		note_queued(waiter, -1);
		waiter->state = WAITER_DONE;
		pthread_mutex_unlock(&store->lock);
		return r;
	}
	return STORE_QUEUED;
}

bool cluster_store_cancel(struct store *store, struct waiter *waiter)
{
	pthread_mutex_lock(&store->lock);
	bool queued = waiter->state == WAITER_QUEUED;
	waiter->interrupted = true;
	pthread_mutex_unlock(&store->lock);
	if (queued)
		cluster_cancel(store->cluster, waiter);
	return false; /* it completes with EINTR, or with what it had */
}

void cluster_store_return_units(struct store *store, struct waiter *waiter)
{
	char path[PATH_MAX];
	pthread_mutex_lock(&store->lock);
	unsigned units = waiter->lock_units;
	waiter->lock_units = 0;
	int r = waiter->semaphore->node ? node_path(waiter->semaphore->node, path, sizeof(path))
					: -ENOENT;
	pthread_mutex_unlock(&store->lock);
	if (r == 0 && units)
		cluster_return_units(store->cluster, path, units, waiter->who);
}

/* Creates go through etcd; the local node appears when the watch brings
 * the record back (hook_sync), before cluster_create returns. */
int cluster_store_create(struct store *store, const char *path, mode_t mode, uid_t uid, gid_t gid,
			 unsigned limit, bool undefined, const char *who)
{
	struct replica_meta meta = {.limit = (int)limit,
				    .mode = mode & 07777,
				    .uid = uid,
				    .gid = gid,
				    .undefined = undefined};
	snprintf(meta.by, sizeof(meta.by), "%s", who);
	/* The caller takes the lock again to find it. */
	return cluster_create(store->cluster, path, &meta);
}

/* The idle undefined semaphores reap_idle_now found: asked of the cluster
 * without the store lock (its loop takes it). Called with it held. */
void cluster_store_reap(struct store *store)
{
	struct reap_request *reaps = store->reaps;
	store->reaps = NULL;
	pthread_mutex_unlock(&store->lock);
	while (reaps) {
		struct reap_request *next = reaps->next;
		cluster_reap(store->cluster, reaps->path);
		free(reaps);
		reaps = next;
	}
	pthread_mutex_lock(&store->lock);
}

/* What the last close removes: this host's newest mark (its revision), or
 * -1 once a write's answer was missing — it may have landed, even after a
 * later one, so the close then removes whatever mark there is. Unknown
 * stays unknown until that close. With the store lock. */
static void open_mark_note(struct semaphore *semaphore, int r, int64_t revision)
{
	if (r == 0 && semaphore->open_mark >= 0 && revision > semaphore->open_mark)
		semaphore->open_mark = revision;
	else if (r < 0 && r != -ENOENT)
		semaphore->open_mark = -1;
}

int cluster_store_mark_open(struct store *store, struct semaphore *semaphore, const char *path)
{
	int64_t revision = 0;
	int r = cluster_open_mark(store->cluster, path, &revision);
	if (r == -ENOENT)
		return r;
	pthread_mutex_lock(&store->lock);
	open_mark_note(semaphore, r, revision);
	pthread_mutex_unlock(&store->lock);
	if (r < 0) /* the open goes on: a read shows what this host knows */
		log_warnx("cluster: %s may be open here without its open mark (%s): another host "
			  "may remove it once idle",
			  path, strerror(-r));
	return 0;
}

void cluster_store_unmark_open(struct store *store, const char *path, int64_t revision)
{
	cluster_open_unmark(store->cluster, path, revision);
}

void cluster_store_remark(struct store *store)
{
	store->remark_opens = false;
	struct reap_request *open = NULL; /* the paths, as for reaps */
	for (struct semaphore *s = store->live; s; s = s->live_next) {
		char path[PATH_MAX];
		if (!s->mount_opens || !s->undefined || !s->node ||
		    node_path(s->node, path, sizeof(path)) < 0)
			continue;
		struct reap_request *request = malloc(sizeof(*request) + strlen(path) + 1);
		if (!request) {
			log_warnx("cluster: out of memory: %s is open here without its open mark",
				  path);
			continue;
		}
		strcpy(request->path, path);
		request->next = open;
		open = request;
	}
	pthread_mutex_unlock(&store->lock);
	while (open) {
		struct reap_request *next = open->next;
		int64_t revision = 0;
		int r = cluster_open_mark(store->cluster, open->path, &revision);
		bool unknown = r < 0 && r != -ENOENT; /* written or not */
		int64_t stale = 0;
		pthread_mutex_lock(&store->lock);
		struct node *node = node_at(store, open->path);
		if (node && node->kind == NODE_SEMAPHORE && node->semaphore &&
		    node->semaphore->mount_opens > 0)
			open_mark_note(node->semaphore, r, revision);
		else if (r == 0 || unknown) /* closed meanwhile, with no mark to remove */
			stale = r == 0 ? revision : -1;
		pthread_mutex_unlock(&store->lock);
		if (stale)
			cluster_open_unmark(store->cluster, open->path, stale);
		if (r < 0)
			log_warnx("cluster: %s may be open here without its open mark after "
				  "lease-lost (%s)",
				  open->path, r == -ENOENT ? "removed meanwhile" : strerror(-r));
		free(open);
		open = next;
	}
	pthread_mutex_lock(&store->lock);
}

int cluster_store_chown(struct store *store, const char *path, const mode_t *mode, const uid_t *uid,
			const gid_t *gid)
{
	return cluster_chown(store->cluster, path, mode, uid, gid, "mount");
}

int cluster_store_remove(struct store *store, const char *path, const char *who)
{
	return cluster_remove(store->cluster, path, false, who);
}

int cluster_store_define(struct store *store, const char *path, unsigned limit, char *error,
			 size_t error_size)
{
	int r = cluster_define(store->cluster, path, limit);
	if (r == -EBUSY) /* defined all the same: said, not refused */
		log_warnx("semaphore %s: limit %u is below the units in use in the cluster: "
			  "defined with its current limit",
			  path, limit);
	else if (r < 0)
		snprintf(error, error_size, "semaphore %s: cannot define it in the cluster: %s",
			 path, strerror(-r));
	return r == -EBUSY ? 0 : r;
}

struct node *cluster_store_node(struct store *store, const char *path)
{
	return node_at(store, path);
}

void cluster_store_health(struct store *store, struct cluster_health *health)
{
	if (store->cluster)
		cluster_health(store->cluster, health);
	else
		memset(health, 0, sizeof(*health));
}

bool store_owner_lost(struct store *store, const struct owner *owner)
{
	return store->cluster && owner->id && cluster_owner_lost(store->cluster, owner->id);
}

bool store_is_cluster(const struct store *store)
{
	return store->cluster != NULL;
}

int cluster_store_mkdir(struct store *store, const char *path, mode_t mode, uid_t uid, gid_t gid)
{
	return cluster_mkdir(store->cluster, path, mode & 07777, uid, gid);
}

int cluster_store_rmdir(struct store *store, const char *path)
{
	return cluster_rmdir(store->cluster, path);
}

int store_drive(struct store *store, int fd, void (*run)(void *context), void *context)
{
	if (!store->cluster)
		return -ENOTSUP;
	cluster_drive(store->cluster, fd, run, context);
	return 0;
}

void store_read_barrier(struct store *store)
{
	if (store->cluster)
		(void)cluster_barrier(store->cluster);
}
