/* store_restore.c: bringing a state directory back at start-up: a record
 * per semaphore (its key, limit, owner, mode, token reservation), a set
 * adopted only if it is ours, a new one otherwise; unreadable records set
 * aside so that the others start; undefined semaphores left idle by a crash
 * removed. */
#include "store_internal.h"

struct restore {
	struct store *store;
	char *error;
	size_t error_size;
};

static int restore_entry(void *context, const char *path, bool is_directory,
			 const struct stat *status)
{
	struct restore *restore = context;
	struct store *store = restore->store;
	const char *leaf;
	struct node *parent;

	if (walk_to_parent(store, path, NULL, &parent, &leaf) < 0 ||
	    (parent == store->root && strcmp(leaf, STORE_STATUS_NAME) == 0))
		return 0; /* not one of ours: leave it */
	if (is_directory) {
		return node_new(store, parent, leaf, NODE_DIRECTORY,
				S_IFDIR | (status->st_mode & 07777), status->st_uid, status->st_gid)
			   ? 0
			   : -ENOMEM;
	}

	struct backing_record record;
	char full[PATH_MAX], moved[PATH_MAX];
	int semid, r = backing_read(&store->backing, path, &record);
	bool fresh = false;

	if (r < 0) {
		/* One bad record (a full disk at create, a stray file) must not
		 * keep every other semaphore from starting. */
		int moving = backing_set_aside(&store->backing, path, moved, sizeof(moved));
		log_warnx("%s/%s: unreadable record (%s): %s%s; the other semaphores start",
			  store->backing.root, path, strerror(-r),
			  moving == 0 ? "moved to " : "left in place: ",
			  moving == 0 ? moved : strerror(-moving));
		return 0;
	}
	/* Adopt only a set that is ours: one semaphore, made by this user. */
	r = be_attach(store, record.key, geteuid(), &semid);
	if (r == -ENOENT) {
		/* After a reboot: the same key again if free, else a new one. */
		r = be_create_at(store, record.key, (int)record.mode, &semid);
		if (r == -EEXIST) {
			backing_full_path(&store->backing, path, full, sizeof(full));
			r = be_create(store, full, (int)record.mode, &record.key, &semid);
		}
		if (r == 0)
			r = be_adjust(store, semid, (int)record.limit, false);
		fresh = true;
	} else if (r == -EINVAL) {
		log_warnx("%s/%s: the SysV set at key 0x%08x is not ours (not one semaphore, or "
			  "made by another user): a new set replaces it",
			  store->backing.root, path, (unsigned)record.key);
		backing_full_path(&store->backing, path, full, sizeof(full));
		r = be_create(store, full, (int)record.mode, &record.key, &semid);
		if (r == 0)
			r = be_adjust(store, semid, (int)record.limit, false);
		fresh = true;
	}
	if (r == 0)
		r = be_set_owner(store, semid, record.uid, record.gid, record.mode);
	if (r < 0) {
		snprintf(restore->error, restore->error_size, "%s/%s: semaphore key 0x%08x: %s",
			 store->backing.root, path, (unsigned)record.key, strerror(-r));
		return r;
	}
	struct node *node = node_new(store, parent, leaf, NODE_SEMAPHORE,
				     S_IFREG | (record.mode & 07777), record.uid, record.gid);
	struct semaphore *semaphore =
	    node ? semaphore_new(store, record.key, semid, record.limit) : NULL;
	if (!semaphore)
		return -ENOMEM;
	node_attach_semaphore(node, semaphore);
	/* Tokens below the reservation may have been handed out; the first
	 * grant reserves a new block. */
	semaphore->token = semaphore->token_reserved = record.token_reserved;
	if (record.token_reserved > store->token_floor)
		store->token_floor = record.token_reserved;
	semaphore->undefined = record.undefined;
	semaphore->defined = semaphore->defined_unconfirmed = record.defined;
	if (fresh) {
		r = semaphore_save(store, semaphore); /* a new key */
		if (r < 0)
			log_warnx("%s/%s: cannot record its new key 0x%08x: %s",
				  store->backing.root, path, (unsigned)record.key, strerror(-r));
	}
	journal_event(store, semaphore, fresh ? "create" : "restore", "semfs", 0, NULL,
		      CHANGE_UNANNOUNCED);
	if (!fresh)
		(void)limit_guard(store, semaphore); /* value <= limit, as recorded */
	return 0;
}

int store_restore(struct store *store, char *error, size_t error_size)
{
	struct restore restore = {store, error, error_size};
	int r = backing_walk(&store->backing, restore_entry, &restore);
	if (r < 0)
		return r;
	/* Undefined semaphores whose users went with a crash go now. */
	struct done_list done = {0};
	for (struct semaphore *s = store->live, *next; s; s = next) {
		next = s->live_next;
		reap_idle_now(store, s, &done);
	}
	run_done(&done);
	return 0;
}
