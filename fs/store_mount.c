/* store_mount.c: the tree as the mount sees it: lookups, attributes, create,
 * mkdir, unlink, rmdir, chmod/chown, listings, and reading journals. */
#include "store_internal.h"

static void node_fill_attr(struct store *store, struct node *node, struct store_attr *attr);
static int parent_directory(struct store *store, uint64_t ino, struct node **parent);
static int check_new_name(struct store *store, struct node *parent, const char *name);
static int make_entry(struct store *store, uint64_t parent_ino, const char *name, mode_t mode,
		      uid_t uid, gid_t gid, bool directory, struct store_attr *attr);
static int list_push(struct store_entry **entries, size_t *count, size_t *allocated,
		     const struct node *node);

/* ---- the tree, for the mount --------------------------------------------- */

static void node_fill_attr(struct store *store, struct node *node, struct store_attr *attr)
{
	memset(attr, 0, sizeof(*attr));
	attr->nodeid = node->ino;
	attr->ino = node->ino;
	attr->kind = node->kind;
	attr->mode = node->mode;
	attr->uid = node->uid;
	attr->gid = node->gid;
	attr->mtime = node->mtime;
	attr->ctime = node->ctime;
	attr->nlink = node->unlinked ? 0 : node->kind == NODE_DIRECTORY ? 2 : 1;
	if (node->kind == NODE_SEMAPHORE && node->semaphore)
		attr->size = journal_end(&node->semaphore->journal);
	if (node->kind == NODE_STATUS)
		attr->mtime = attr->ctime = store->status_mtime;
}

static int parent_directory(struct store *store, uint64_t ino, struct node **parent)
{
	struct node *node = node_by_ino(store, ino);

	if (!node || node->unlinked)
		return -ENOENT;
	if (node->kind != NODE_DIRECTORY)
		return -ENOTDIR;
	*parent = node;
	return 0;
}

int store_lookup(struct store *store, uint64_t parent_ino, const char *name,
		 struct store_attr *attr)
{
	struct node *parent, *node;
	int r;

	pthread_mutex_lock(&store->lock);
	r = parent_directory(store, parent_ino, &parent);
	if (r == 0) {
		node = parent == store->root && strcmp(name, STORE_STATUS_NAME) == 0
			   ? store->status
			   : node_child(store, parent, name);
		if (!node) {
			r = -ENOENT;
		} else {
			node->lookups++;
			node_fill_attr(store, node, attr);
		}
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

void store_forget(struct store *store, uint64_t ino, uint64_t count)
{
	pthread_mutex_lock(&store->lock);
	struct node *node = node_by_ino(store, ino);
	if (node) {
		node->lookups = node->lookups > count ? node->lookups - count : 0;
		node_release_if_unused(store, node);
	}
	pthread_mutex_unlock(&store->lock);
}

int store_getattr(struct store *store, uint64_t ino, struct store_attr *attr)
{
	int r = 0;

	pthread_mutex_lock(&store->lock);
	struct node *node = node_by_ino(store, ino);
	if (node) {
		node_fill_attr(store, node, attr);
		attr->nodeid = ino;
	} else {
		r = -ENOENT;
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

static int check_new_name(struct store *store, struct node *parent, const char *name)
{
	if (!name_valid(name))
		return -EINVAL;
	if (parent == store->root && strcmp(name, STORE_STATUS_NAME) == 0)
		return -EEXIST;
	if (node_child(store, parent, name))
		return -EEXIST;
	return 0;
}

/* Under the lock: a new semaphore `name` in `parent`, counted as looked up
 * by nobody. */
int create_semaphore(struct store *store, struct node *parent, const char *name, mode_t mode,
		     uid_t uid, gid_t gid, unsigned limit, bool undefined, const char *who,
		     struct node **out)
{
	struct node *node = NULL;
	char path[PATH_MAX], full[PATH_MAX];
	key_t key;
	int semid = -1;
	int r = check_new_name(store, parent, name);

	if (r == 0)
		r = child_path(parent, name, path, sizeof(path));
	if (r < 0)
		return r;
	r = backing_create(&store->backing, path);
	if (r == -EEXIST) { /* a leftover no semaphore claims: reuse it */
		(void)backing_remove(&store->backing, path);
		r = backing_create(&store->backing, path);
	}
	if ((r == -ENOSPC || r == -EDQUOT) && time(NULL) - store->state_full_logged >= 60) {
		store->state_full_logged = time(NULL);
		log_warnx("cannot create semaphore %s: state_dir %s is full (%s)", path,
			  store->state_dir, strerror(-r));
	}
	if (r < 0)
		return r;
	backing_full_path(&store->backing, path, full, sizeof(full));
	r = be_create_owned(store, full, uid, gid, mode, &key, &semid);
	if (r == -ENOSPC && time(NULL) - store->enospc_logged >= 60) {
		/* Once a minute: a client retrying in a loop must not flood the log. */
		store->enospc_logged = time(NULL);
		log_warnx("cannot create semaphore %s: the kernel's limit on SysV semaphore sets "
			  "is reached (kernel.sem: SEMMNI sets, SEMMNS semaphores; ipcs -l shows "
			  "them)",
			  path);
	}
	if (r == 0)
		r = be_adjust(store, semid, (int)limit, false);
	if (r == 0) {
		node = node_new(store, parent, name, NODE_SEMAPHORE, S_IFREG | (mode & 07777), uid,
				gid);
		struct semaphore *semaphore = node ? semaphore_new(store, key, semid, limit) : NULL;
		if (!semaphore) {
			r = -ENOMEM;
		} else {
			node_attach_semaphore(node, semaphore);
			/* Above every token a deleted semaphore of any name had. */
			semaphore->token = store->token_floor;
			semaphore->token_reserved = store->token_floor + TOKEN_BLOCK;
			semaphore->undefined = undefined;
			/* A new set holds what it was given: the journal's first
			 * line needs no GETVAL (an outside semop meanwhile is the
			 * monitor's to see). */
			semaphore->value_known = true;
			semaphore->known_value = (int)limit;
			r = semaphore_save(store, semaphore);
		}
		if (r == 0) {
			/* Announced already (IN_CREATE on the directory), and no
			 * touch: the creator opens and may wait in a write on this
			 * very inode before the notifier would get to it. */
			journal_event(store, node->semaphore, "create", who, 0, NULL, CHANGE_NEW);
			parent->mtime = parent->ctime = node->mtime;
			if (undefined) /* as ACE logs "adding undefined semaphore" */
				log_undefined(store, path, "created (limit 1)");
			*out = node;
		}
	}
	if (r < 0) {
		if (node) {
			if (node->semaphore)
				live_remove(store, node->semaphore); /* the monitor's list */
			node_detach(store, node);
			node_free(store, node);
		}
		if (semid >= 0)
			(void)be_remove(store, semid);
		(void)backing_remove(&store->backing, path);
	}
	return r;
}

int make_directory(struct store *store, struct node *parent, const char *name, mode_t mode,
		   uid_t uid, gid_t gid, struct node **out)
{
	char full[PATH_MAX];
	int r = check_new_name(store, parent, name);

	if (r == 0)
		r = child_path(parent, name, full, sizeof(full));
	if (r == 0)
		r = backing_mkdir(&store->backing, full, mode);
	if (r == -EEXIST)
		r = 0; /* a leftover empty directory */
	if (r < 0)
		return r;
	(void)backing_chmod_dir(&store->backing, full, mode, uid, gid);
	struct node *node =
	    node_new(store, parent, name, NODE_DIRECTORY, S_IFDIR | (mode & 07777), uid, gid);
	if (!node) {
		(void)backing_rmdir(&store->backing, full);
		return -ENOMEM;
	}
	parent->mtime = parent->ctime = node->mtime;
	*out = node;
	return 0;
}

/* Cluster mode: the semaphore or directory is made in etcd, and is here
 * once the watch brought it back. */
static int cluster_entry(struct store *store, uint64_t parent_ino, const char *name, mode_t mode,
			 uid_t uid, gid_t gid, bool directory, struct store_attr *attr)
{
	struct node *parent, *node;
	char path[PATH_MAX];

	pthread_mutex_lock(&store->lock);
	int r = parent_directory(store, parent_ino, &parent);
	if (r == 0)
		r = check_new_name(store, parent, name);
	if (r == 0)
		r = child_path(parent, name, path, sizeof(path));
	pthread_mutex_unlock(&store->lock);
	if (r == 0 && directory)
		r = cluster_store_mkdir(store, path, mode, uid, gid);
	else if (r == 0)
		r = cluster_store_create(store, path, mode, uid, gid, store->options.default_limit,
					 false, "mount");
	/* Another host made it since the kernel's lookup here: `echo lock > f`
	 * opens that one (O_EXCL across hosts is best effort, as on NFS). */
	if (r == -EEXIST && !directory)
		r = 0;
	if (r < 0)
		return r;
	pthread_mutex_lock(&store->lock);
	node = cluster_store_node(store, path);
	if (!node || node->kind != (directory ? NODE_DIRECTORY : NODE_SEMAPHORE))
		r = -EIO; /* removed again before it could be opened */
	else {
		node->lookups++;
		node_fill_attr(store, node, attr);
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

/* A new entry below `parent_ino`, made from the mount: counted as looked up
 * once, since the kernel now holds a reference to it. */
static int make_entry(struct store *store, uint64_t parent_ino, const char *name, mode_t mode,
		      uid_t uid, gid_t gid, bool directory, struct store_attr *attr)
{
	struct node *parent, *node;
	int r;

	if (store->cluster)
		return cluster_entry(store, parent_ino, name, mode, uid, gid, directory, attr);
	pthread_mutex_lock(&store->lock);
	r = parent_directory(store, parent_ino, &parent);
	if (r == 0 && directory)
		r = make_directory(store, parent, name, mode, uid, gid, &node);
	else if (r == 0)
		r = create_semaphore(store, parent, name, mode, uid, gid,
				     store->options.default_limit, false, "semfs", &node);
	if (r == 0) {
		node->lookups++;
		node_fill_attr(store, node, attr);
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

int store_create(struct store *store, uint64_t parent_ino, const char *name, mode_t mode, uid_t uid,
		 gid_t gid, struct store_attr *attr)
{
	return make_entry(store, parent_ino, name, mode, uid, gid, false, attr);
}

int store_mkdir(struct store *store, uint64_t parent_ino, const char *name, mode_t mode, uid_t uid,
		gid_t gid, struct store_attr *attr)
{
	return make_entry(store, parent_ino, name, mode, uid, gid, true, attr);
}

int store_unlink(struct store *store, uint64_t parent_ino, const char *name)
{
	struct node *parent, *node = NULL;
	struct done_list done = {0};
	int r;

	pthread_mutex_lock(&store->lock);
	r = parent_directory(store, parent_ino, &parent);
	if (r == 0 && parent == store->root && strcmp(name, STORE_STATUS_NAME) == 0)
		r = -EPERM;
	if (r == 0) {
		node = node_child(store, parent, name);
		if (!node)
			r = -ENOENT;
		else if (node->kind == NODE_DIRECTORY)
			r = -EISDIR;
	}
	if (r == 0 && node->semaphore->defined)
		r = -EPERM;
	if (r == 0 && store->cluster) {
		char path[PATH_MAX];
		r = node_path(node, path, sizeof(path));
		pthread_mutex_unlock(&store->lock);
		return r < 0 ? r : cluster_store_remove(store, path, "mount");
	}
	if (r == 0)
		r = delete_node(store, node, "semfs", &done);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	return r;
}

int store_rmdir(struct store *store, uint64_t parent_ino, const char *name)
{
	struct node *parent, *node = NULL;
	char path[PATH_MAX];
	int r;

	pthread_mutex_lock(&store->lock);
	r = parent_directory(store, parent_ino, &parent);
	if (r == 0) {
		node = node_child(store, parent, name);
		if (!node)
			r = -ENOENT;
		else if (node->kind != NODE_DIRECTORY)
			r = -ENOTDIR;
		else if (node->first_child)
			r = -ENOTEMPTY;
	}
	if (r == 0)
		r = node_path(node, path, sizeof(path));
	if (r == 0 && store->cluster && node->clustered) {
		/* Made with mkdir in the cluster: removed there, here by the watch. */
		pthread_mutex_unlock(&store->lock);
		return cluster_store_rmdir(store, path);
	}
	if (r == 0)
		r = remove_directory(store, node);
	pthread_mutex_unlock(&store->lock);
	return r;
}

/* Under the lock: an empty directory node and its backing directory go. */
int remove_directory(struct store *store, struct node *node)
{
	char path[PATH_MAX];
	int r = node_path(node, path, sizeof(path));
	if (r == 0)
		r = backing_rmdir(&store->backing, path);
	if (r == 0) {
		struct node *parent = node->parent;
		node_detach(store, node);
		timespec_now(CLOCK_REALTIME, &parent->mtime);
		parent->ctime = parent->mtime;
		node_release_if_unused(store, node);
	}
	return r;
}

int store_setattr(struct store *store, uint64_t ino, const mode_t *mode, const uid_t *uid,
		  const gid_t *gid, const struct timespec *mtime, struct store_attr *attr)
{
	int r = 0;

	pthread_mutex_lock(&store->lock);
	struct node *node = node_by_ino(store, ino);
	if (!node) {
		r = -ENOENT;
		goto out;
	}
	if ((mode || uid || gid) && node->kind == NODE_STATUS) {
		r = -EPERM;
		goto out;
	}
	if ((mode || uid || gid) && store->cluster &&
	    ((node->kind == NODE_SEMAPHORE && node->semaphore && !node->unlinked) ||
	     (node->kind == NODE_DIRECTORY && node->clustered))) {
		/* The cluster's record changes; every host's watch, this one's
		 * included (before cluster_store_chown returns), applies it. */
		char path[PATH_MAX];
		r = node_path(node, path, sizeof(path));
		pthread_mutex_unlock(&store->lock);
		if (r == 0)
			r = cluster_store_chown(store, path, mode, uid, gid);
		pthread_mutex_lock(&store->lock);
		node = r == 0 ? node_by_ino(store, ino) : NULL;
		if (r == 0 && !node)
			r = -ENOENT; /* removed meanwhile */
		if (r < 0)
			goto out;
		mode = NULL; /* applied: nothing left to do here */
		uid = NULL;
		gid = NULL;
	}
	mode_t old_mode = node->mode;
	uid_t old_uid = node->uid;
	gid_t old_gid = node->gid;
	if (mode)
		node->mode = (node->mode & S_IFMT) | (*mode & 07777);
	if (uid)
		node->uid = *uid;
	if (gid)
		node->gid = *gid;
	if (mode || uid || gid) {
		char path[PATH_MAX];
		/* Saved first, then the SysV set follows: it must never admit
		 * anyone the file (as recorded) would refuse. */
		if (node->kind == NODE_SEMAPHORE && node->semaphore && !node->unlinked) {
			r = semaphore_save(store, node->semaphore);
			if (r == 0)
				r = be_set_owner(store, node->semaphore->semid, node->uid,
						 node->gid, node->mode);
		} else if (node->kind == NODE_DIRECTORY && node->parent) {
			r = node_path(node, path, sizeof(path));
			if (r == 0)
				r = backing_chmod_dir(&store->backing, path, node->mode, node->uid,
						      node->gid);
		}
		if (r < 0) {
			node->mode = old_mode;
			node->uid = old_uid;
			node->gid = old_gid;
			if (node->kind == NODE_SEMAPHORE && node->semaphore && !node->unlinked)
				(void)semaphore_save(store, node->semaphore);
			goto out;
		}
		timespec_now(CLOCK_REALTIME, &node->ctime);
	}
	if (mtime && node->kind != NODE_STATUS)
		node->mtime = *mtime;
	node_fill_attr(store, node, attr);
out:
	pthread_mutex_unlock(&store->lock);
	return r;
}

void store_list_free(struct store_entry *entries, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(entries[i].name);
	free(entries);
}

static int list_push(struct store_entry **entries, size_t *count, size_t *allocated,
		     const struct node *node)
{
	if (*count == *allocated) {
		size_t bigger_size = *allocated ? *allocated * 2 : 16;
		struct store_entry *bigger = realloc(*entries, bigger_size * sizeof(**entries));
		if (!bigger)
			return -ENOMEM;
		*entries = bigger;
		*allocated = bigger_size;
	}
	struct store_entry *entry = &(*entries)[*count];
	entry->name = strdup(node->name);
	if (!entry->name)
		return -ENOMEM;
	entry->ino = node->ino;
	entry->kind = node->kind;
	(*count)++;
	return 0;
}

int store_list(struct store *store, uint64_t ino, struct store_entry **out, size_t *out_count)
{
	struct node *directory = NULL;
	struct store_entry *entries = NULL;
	size_t count = 0, allocated = 0;
	int r;

	pthread_mutex_lock(&store->lock);
	r = parent_directory(store, ino, &directory);
	if (r == 0 && directory == store->root)
		r = list_push(&entries, &count, &allocated, store->status);
	for (struct node *child = r == 0 ? directory->first_child : NULL; r == 0 && child;
	     child = child->next_sibling)
		r = list_push(&entries, &count, &allocated, child);
	pthread_mutex_unlock(&store->lock);
	if (r < 0) {
		store_list_free(entries, count);
		return r;
	}
	*out = entries;
	*out_count = count;
	return 0;
}

int store_open_semaphore(struct store *store, uint64_t ino, struct semaphore **out)
{
	int r = 0;
	char path[PATH_MAX];
	bool mark = false;

	pthread_mutex_lock(&store->lock);
	struct node *node = node_by_ino(store, ino);
	if (!node)
		r = -ENOENT;
	else if (node->kind == NODE_DIRECTORY)
		r = -EISDIR;
	else if (node->kind != NODE_SEMAPHORE || !node->semaphore)
		r = -EINVAL;
	else {
		struct semaphore *semaphore = node->semaphore;
		semaphore->references++;
		semaphore->mount_opens++;
		/* Cluster mode: an idle undefined name stays while a file is
		 * open on it on any host, as it does on one. */
		mark = store->cluster && semaphore->undefined &&
		       node_path(node, path, sizeof(path)) == 0;
		*out = semaphore;
	}
	pthread_mutex_unlock(&store->lock);
	if (mark && (r = cluster_store_mark_open(store, *out, path)) < 0)
		store_close_semaphore(store, *out);
	return r;
}

void store_close_semaphore(struct store *store, struct semaphore *semaphore)
{
	struct done_list done = {0};
	char path[PATH_MAX];
	int64_t unmark = 0;

	pthread_mutex_lock(&store->lock);
	if (semaphore->mount_opens > 0 && --semaphore->mount_opens == 0 &&
	    semaphore->open_mark != 0) {
		/* -1, unknown: the mark may be there, whatever its revision. */
		if (semaphore->node && node_path(semaphore->node, path, sizeof(path)) == 0)
			unmark = semaphore->open_mark; /* else removed: the mark went with it */
		semaphore->open_mark = 0;
	}
	semaphore_let_go(store, semaphore, &done);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	if (unmark)
		cluster_store_unmark_open(store, path, unmark);
}

size_t store_read_journal(struct store *store, struct semaphore *semaphore, uint64_t *offset,
			  char *buffer, size_t size)
{
	size_t n;

	pthread_mutex_lock(&store->lock);
	if (*offset < semaphore->journal.start) {
		n = journal_gone_line(&semaphore->journal, buffer, size);
		*offset = semaphore->journal.start;
	} else {
		n = journal_read(&semaphore->journal, *offset, buffer, size);
		*offset += n;
	}
	pthread_mutex_unlock(&store->lock);
	return n;
}

uint64_t store_journal_seq(struct store *store, struct semaphore *semaphore)
{
	pthread_mutex_lock(&store->lock);
	uint64_t lines = semaphore->journal.lines;
	pthread_mutex_unlock(&store->lock);
	return lines;
}

void store_journal_position(struct store *store, struct semaphore *semaphore, uint64_t *start,
			    uint64_t *end)
{
	pthread_mutex_lock(&store->lock);
	*start = semaphore->journal.start;
	*end = journal_end(&semaphore->journal);
	pthread_mutex_unlock(&store->lock);
}
