/* store_paths.c: the tree as the network and the configuration see it:
 * paths, names, permission checks for a caller, defined semaphores. */
#include "store_internal.h"

static bool caller_in_group(const struct store_caller *caller, gid_t gid);
static int find_semaphore(struct store *store, const char *path, struct node **out);
static mode_t directory_mode(mode_t mode);
static enum name_kind kind_of_path(void *context, const char *path);
static void undefine(struct store *store, struct semaphore *semaphore, struct done_list *done);

/* ---- names, for the network and the configuration ------------------------- */

/* "a/b/c": the directory holding the last component, and that component.
 * `make` creates missing directories (at most STORE_DEPTH_MAX deep), marked
 * implicit: they go again when they empty. */
int walk_to_parent(struct store *store, const char *path, const struct maker *make,
		   struct node **parent, const char **leaf)
{
	char component[STORE_NAME_MAX + 1];
	struct node *node = store->root;
	const char *p = path;

	for (unsigned depth = 0;; depth++) {
		const char *slash = strchr(p, '/');
		if (!slash) {
			if (!name_valid(p))
				return -EINVAL;
			*parent = node;
			*leaf = p;
			return 0;
		}
		size_t length = (size_t)(slash - p);
		if (length == 0 || length > STORE_NAME_MAX)
			return -EINVAL;
		memcpy(component, p, length);
		component[length] = '\0';
		if (!name_valid(component))
			return -EINVAL;
		struct node *child = node_child(store, node, component);
		if (!child) {
			if (!make)
				return -ENOENT;
			int r = depth >= STORE_DEPTH_MAX
				    ? -ENAMETOOLONG
				    : make_directory(store, node, component, make->mode, make->uid,
						     make->gid, &child);
			if (r < 0) {
				prune_implicit(store, node); /* what this walk made */
				return r;
			}
			child->implicit = true;
		} else if (child->kind != NODE_DIRECTORY) {
			return -ENOTDIR;
		}
		node = child;
		p = slash + 1;
	}
}

/* Directories made for a name go when their last entry goes. */
void prune_implicit(struct store *store, struct node *directory)
{
	char path[PATH_MAX];

	while (directory != store->root && directory->implicit && !directory->first_child &&
	       !directory->unlinked) {
		struct node *up = directory->parent;
		if (node_path(directory, path, sizeof(path)) < 0 ||
		    backing_rmdir(&store->backing, path) < 0)
			return;
		node_detach(store, directory);
		timespec_now(CLOCK_REALTIME, &up->mtime);
		up->ctime = up->mtime;
		node_release_if_unused(store, directory);
		directory = up;
	}
}

/* ---- permissions, for the network and semaphore.status -------------------- */

static bool caller_in_group(const struct store_caller *caller, gid_t gid)
{
	if (caller->gid == gid)
		return true;
	for (size_t i = 0; i < caller->group_count; i++)
		if (caller->groups[i] == gid)
			return true;
	return false;
}

/* The kernel's rule for a mode: owner bits, else group bits, else others. */
bool node_permits(const struct node *node, const struct store_caller *caller, unsigned bits)
{
	if (!caller || caller->uid == 0)
		return true;
	unsigned have = node->mode & 7;
	if (caller->uid == node->uid)
		have = (node->mode >> 6) & 7;
	else if (caller_in_group(caller, node->gid))
		have = (node->mode >> 3) & 7;
	return (have & bits) == bits;
}

int store_access_path(struct store *store, const char *path, const struct store_caller *caller,
		      enum store_access access)
{
	char component[STORE_NAME_MAX + 1];
	int r = 0;

	pthread_mutex_lock(&store->lock);
	struct node *directory = store->root;
	const char *p = path;
	for (;;) {
		if (!node_permits(directory, caller, 1)) {
			r = -EACCES;
			break;
		}
		const char *slash = strchr(p, '/');
		size_t length = slash ? (size_t)(slash - p) : strlen(p);
		if (length == 0 || length > STORE_NAME_MAX) {
			r = -EINVAL;
			break;
		}
		memcpy(component, p, length);
		component[length] = '\0';
		struct node *child =
		    directory == store->root && strcmp(component, STORE_STATUS_NAME) == 0 && !slash
			? store->status
			: node_child(store, directory, component);
		if (!child) {
			/* Made from here on down: the last directory must let us. */
			if (access == STORE_CREATE)
				r = node_permits(directory, caller, 3) ? 0 : -EACCES;
			else
				r = -ENOENT;
			break;
		}
		if (slash) {
			if (child->kind != NODE_DIRECTORY) {
				r = -ENOTDIR;
				break;
			}
			directory = child;
			p = slash + 1;
			continue;
		}
		switch (access) {
		case STORE_READ:
			r = node_permits(child, caller, 4) ? 0 : -EACCES;
			break;
		case STORE_WRITE:
			r = node_permits(child, caller, 2) ? 0 : -EACCES;
			break;
		case STORE_CREATE:
			r = 0; /* taken: the create itself says EEXIST */
			break;
		case STORE_DELETE:
			if (!node_permits(directory, caller, 3))
				r = -EACCES;
			else if ((directory->mode & S_ISVTX) && caller && caller->uid != 0 &&
				 caller->uid != child->uid && caller->uid != directory->uid)
				r = -EPERM;
			break;
		}
		break;
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

static int find_semaphore(struct store *store, const char *path, struct node **out)
{
	struct node *parent, *node;
	const char *leaf;
	int r = walk_to_parent(store, path, NULL, &parent, &leaf);

	if (r < 0)
		return r;
	if (parent == store->root && strcmp(leaf, STORE_STATUS_NAME) == 0)
		return -EINVAL;
	node = node_child(store, parent, leaf);
	if (!node)
		return -ENOENT;
	if (node->kind != NODE_SEMAPHORE || !node->semaphore)
		return -EISDIR;
	*out = node;
	return 0;
}

/* A directory for a network name: x wherever the semaphores' mode has r. */
static mode_t directory_mode(mode_t mode)
{
	return (mode & 0777) | ((mode & 0444) >> 2);
}

static enum name_kind kind_of_path(void *context, const char *path)
{
	struct node *node;
	int r = find_semaphore(context, path, &node);
	return r == 0 ? NAME_SEMAPHORE : r == -ENOENT ? NAME_ABSENT : NAME_BLOCKED;
}

int store_name_path(struct store *store, const char *name, char *path, size_t size)
{
	pthread_mutex_lock(&store->lock);
	int r = name_resolve(name, strlen(name), kind_of_path, store, path, size);
	pthread_mutex_unlock(&store->lock);
	return r;
}

int store_open_path(struct store *store, const char *path, bool undefined_if_missing,
		    struct semaphore **out)
{
	struct node *node, *parent;
	const char *leaf;

	pthread_mutex_lock(&store->lock);
	int r = store->stopping ? -ECANCELED : find_semaphore(store, path, &node);
	if (r == -ENOENT && undefined_if_missing && store->cluster) {
		/* ACE's undefined name, cluster-wide: limit 1, removed when idle. */
		pthread_mutex_unlock(&store->lock);
		r = cluster_store_create(store, path, store->options.network_mode,
					 store->options.network_uid, store->options.network_gid, 1,
					 true, "semfs:undefined");
		pthread_mutex_lock(&store->lock);
		if (r == 0 || r == -EEXIST)
			r = find_semaphore(store, path, &node);
	} else if (r == -ENOENT && undefined_if_missing) {
		/* ACE's "jobs/nightly": its directories come and go with it. */
		struct maker network = {store->options.network_uid, store->options.network_gid,
					directory_mode(store->options.network_mode)};
		parent = NULL;
		r = walk_to_parent(store, path, &network, &parent, &leaf);
		if (r == 0)
			r = create_semaphore(store, parent, leaf, store->options.network_mode,
					     store->options.network_uid, store->options.network_gid,
					     1, true, "semfs:undefined", &node);
		if (r < 0 && parent)
			prune_implicit(store, parent);
	}
	if (r == 0) {
		node->semaphore->references++;
		*out = node->semaphore;
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

int store_create_path(struct store *store, const char *path, unsigned limit, const char *who)
{
	struct node *parent = NULL, *node;
	const char *leaf;

	struct maker network = {store->options.network_uid, store->options.network_gid,
				directory_mode(store->options.network_mode)};

	if (store->cluster)
		return cluster_store_create(store, path, store->options.network_mode,
					    store->options.network_uid, store->options.network_gid,
					    limit, false, who);
	pthread_mutex_lock(&store->lock);
	int r = walk_to_parent(store, path, &network, &parent, &leaf);
	if (r == 0)
		r = create_semaphore(store, parent, leaf, store->options.network_mode,
				     store->options.network_uid, store->options.network_gid, limit,
				     false, who, &node);
	if (r < 0 && parent)
		prune_implicit(store, parent); /* what this request made for nothing */
	pthread_mutex_unlock(&store->lock);
	return r;
}

int store_delete_path(struct store *store, const char *path, const char *who)
{
	struct done_list done = {0};
	struct node *node;

	pthread_mutex_lock(&store->lock);
	int r = find_semaphore(store, path, &node);
	if (r == 0 && node->semaphore->defined)
		r = -EPERM;
	if (r == 0 && store->cluster) {
		pthread_mutex_unlock(&store->lock);
		return cluster_store_remove(store, path, who);
	}
	if (r == 0)
		r = delete_node(store, node, who, &done);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	return r;
}

int store_define(struct store *store, const char *name, unsigned limit, char *error,
		 size_t error_size)
{
	struct done_list done = {0};
	struct node *node, *parent;
	const char *leaf;
	char path[PATH_MAX];

	pthread_mutex_lock(&store->lock);
	int r = name_resolve(name, strlen(name), kind_of_path, store, path, sizeof(path));
	if (r < 0) {
		snprintf(error, error_size, "semaphore_%s: no file name can hold it: %s", name,
			 strerror(-r));
		pthread_mutex_unlock(&store->lock);
		return r;
	}
	if (store->cluster) {
		pthread_mutex_unlock(&store->lock);
		return cluster_store_define(store, path, limit, error, error_size);
	}
	r = find_semaphore(store, path, &node);
	if (r == -ENOENT) {
		struct maker daemon = {geteuid(), getegid(), 0755};
		r = walk_to_parent(store, path, &daemon, &parent, &leaf);
		if (r == 0)
			r = create_semaphore(store, parent, leaf, STORE_DEFINED_MODE, geteuid(),
					     getegid(), limit, false, "config", &node);
		if (r == 0)
			log_info("defined semaphore %s created (limit %u)", path, limit);
	} else if (r == 0 && node->semaphore->limit != limit) {
		struct command command = {.verb = VERB_LIMIT, .number = (int)limit};
		struct waiter waiter = {.commands = &command, .count = 1, .who = "config"};
		waiter.semaphore = node->semaphore;
		r = command_limit(store, node->semaphore, &waiter, &command, &done);
		if (r == -EBUSY)
			snprintf(error, error_size,
				 "semaphore_%s = %u: more units than that are in use", name, limit);
	}
	if (r == 0) {
		bool was_undefined = node->semaphore->undefined;
		bool was_defined = node->semaphore->defined;
		node->semaphore->undefined = false;
		node->semaphore->defined = true;
		r = semaphore_save(store, node->semaphore);
		if (r == 0) {
			node->semaphore->defined_unconfirmed = false;
		} else {
			node->semaphore->undefined = was_undefined;
			node->semaphore->defined = was_defined;
		}
	}
	if (r < 0 && r != -EBUSY) {
		snprintf(error, error_size, "semaphore_%s: %s", name, strerror(-r));
	}
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	return r;
}

/* A semaphore_NAME line gone from the configuration: as in ACE, NAME is an
 * ordinary undefined semaphore again (limit 1, removed when idle). */
static void undefine(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	char path[PATH_MAX] = "?";
	unsigned old_limit = semaphore->limit;

	if (semaphore->node)
		(void)node_path(semaphore->node, path, sizeof(path));
	semaphore->defined = semaphore->defined_unconfirmed = false;
	semaphore->undefined = true;
	if (semaphore->limit != 1) {
		struct command command = {.verb = VERB_LIMIT, .number = 1};
		struct waiter waiter = {.commands = &command, .count = 1, .who = "config"};
		waiter.semaphore = semaphore;
		if (command_limit(store, semaphore, &waiter, &command, done) < 0)
			log_warnx("%s: no longer defined, but more than 1 unit is in use: its "
				  "limit stays %u until they come back",
				  path, semaphore->limit);
	}
	int r = semaphore_save(store, semaphore);
	if (r < 0)
		log_warnx("%s: cannot record that it is no longer defined: %s", path, strerror(-r));
	char detail[64];
	snprintf(detail, sizeof(detail), "was-limit=%u", old_limit);
	journal_event(store, semaphore, "undefine", "config", 0, detail, CHANGE_UNANNOUNCED);
	log_info("semaphore_%s is no longer in the configuration: %s is an undefined "
		 "semaphore again (limit %u, removed when idle)",
		 path, path, semaphore->limit);
	reap_idle_now(store, semaphore, done); /* nobody is about to come back */
}

void store_defines_done(struct store *store)
{
	struct done_list done = {0};

	if (store->cluster)
		return; /* what is defined is the cluster's, whatever this host's file says */

	pthread_mutex_lock(&store->lock);
	for (struct semaphore *s = store->live, *next; s; s = next) {
		next = s->live_next;
		if (s->defined_unconfirmed && !s->removed)
			undefine(store, s, &done);
	}
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
}

bool store_semaphore_removed(struct store *store, struct semaphore *semaphore)
{
	pthread_mutex_lock(&store->lock);
	bool removed = semaphore->removed;
	pthread_mutex_unlock(&store->lock);
	return removed;
}
