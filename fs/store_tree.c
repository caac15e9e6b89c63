/* store_tree.c: the name tree: nodes, their hash tables (ino, parent+name),
 * paths. Knows nothing of SysV, nor of the kernel's nodeids (the mount's). */
#include "store_internal.h"

static uint64_t hash_name(uint64_t parent, const char *name);
static uint64_t hash_ino(uint64_t ino);
static struct node **hash_chain(struct hash *hash, struct node *node, bool by_name);
static int hash_insert(struct hash *hash, struct node *node, bool by_name);

/* ---- small helpers ------------------------------------------------------ */

void timespec_now(clockid_t clock, struct timespec *now)
{
	clock_gettime(clock, now);
}

/* ---- hash tables: ino -> node, (parent, name) -> node ------------------- */

static uint64_t hash_name(uint64_t parent, const char *name)
{
	uint64_t h = 1469598103934665603ULL ^ parent;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return h;
}

static uint64_t hash_ino(uint64_t ino)
{
	return ino * 0x9E3779B97F4A7C15ULL;
}

static struct node **hash_chain(struct hash *hash, struct node *node, bool by_name)
{
	uint64_t h = by_name ? hash_name(node->parent->ino, node->name) : hash_ino(node->ino);
	return &hash->buckets[h & (hash->size - 1)];
}

int hash_grow(struct hash *hash, bool by_name)
{
	struct hash bigger = {.size = hash->size ? hash->size * 2 : 1024};

	bigger.buckets = calloc(bigger.size, sizeof(*bigger.buckets));
	if (!bigger.buckets)
		return -ENOMEM;
	for (size_t i = 0; i < hash->size; i++) {
		struct node *node = hash->buckets[i];
		while (node) {
			struct node *next = by_name ? node->name_chain : node->ino_chain;
			hash_insert(&bigger, node, by_name);
			node = next;
		}
	}
	free(hash->buckets);
	*hash = bigger;
	return 0;
}

static int hash_insert(struct hash *hash, struct node *node, bool by_name)
{
	if (hash->count >= hash->size) {
		int r = hash_grow(hash, by_name);
		if (r < 0)
			return r;
	}
	struct node **chain = hash_chain(hash, node, by_name);
	if (by_name)
		node->name_chain = *chain;
	else
		node->ino_chain = *chain;
	*chain = node;
	hash->count++;
	return 0;
}

void hash_remove(struct hash *hash, struct node *node, bool by_name)
{
	for (struct node **p = hash_chain(hash, node, by_name); *p;
	     p = by_name ? &(*p)->name_chain : &(*p)->ino_chain) {
		if (*p == node) {
			*p = by_name ? node->name_chain : node->ino_chain;
			hash->count--;
			return;
		}
	}
}

struct node *node_by_ino(struct store *store, uint64_t ino)
{
	struct node *node = store->by_ino.buckets[hash_ino(ino) & (store->by_ino.size - 1)];
	while (node && node->ino != ino)
		node = node->ino_chain;
	return node;
}

struct node *node_child(struct store *store, struct node *parent, const char *name)
{
	uint64_t h = hash_name(parent->ino, name);
	struct node *node = store->by_name.buckets[h & (store->by_name.size - 1)];
	while (node && !(node->parent == parent && strcmp(node->name, name) == 0))
		node = node->name_chain;
	return node;
}

/* ---- nodes --------------------------------------------------------------- */

int node_path(const struct node *node, char *out, size_t size)
{
	const struct node *chain[PATH_MAX / 2];
	size_t depth = 0, used = 0;

	for (; node && node->parent; node = node->parent) {
		if (depth == sizeof(chain) / sizeof(chain[0]))
			return -ENAMETOOLONG;
		chain[depth++] = node;
	}
	out[0] = '\0';
	while (depth-- > 0) {
		int n =
		    snprintf(out + used, size - used, "%s%s", used ? "/" : "", chain[depth]->name);
		if (n < 0 || (size_t)n >= size - used)
			return -ENAMETOOLONG;
		used += (size_t)n;
	}
	return 0;
}

/* The path of a new child `name` of `parent`. */
int child_path(const struct node *parent, const char *name, char *out, size_t size)
{
	char path[PATH_MAX];
	int r = node_path(parent, path, sizeof(path));

	if (r == 0 && snprintf(out, size, "%s%s%s", path, path[0] ? "/" : "", name) >= (int)size)
		r = -ENAMETOOLONG;
	return r;
}

bool name_valid(const char *name)
{
	size_t length = strlen(name);
	return length > 0 && length <= STORE_NAME_MAX && !strchr(name, '/') &&
	       strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

struct node *node_new(struct store *store, struct node *parent, const char *name,
		      enum store_node_kind kind, mode_t mode, uid_t uid, gid_t gid)
{
	struct node *node = calloc(1, sizeof(*node));
	if (!node)
		return NULL;
	node->name = strdup(name);
	if (!node->name) {
		free(node);
		return NULL;
	}
	node->ino = store->next_ino++;
	node->kind = kind;
	node->parent = parent;
	node->mode = mode;
	node->uid = uid;
	node->gid = gid;
	timespec_now(CLOCK_REALTIME, &node->mtime);
	node->ctime = node->mtime;
	if (hash_insert(&store->by_ino, node, false) < 0) {
		free(node->name);
		free(node);
		return NULL;
	}
	if (parent) {
		if (hash_insert(&store->by_name, node, true) < 0) {
			hash_remove(&store->by_ino, node, false);
			free(node->name);
			free(node);
			return NULL;
		}
		node->prev_sibling = parent->last_child;
		if (parent->last_child)
			parent->last_child->next_sibling = node;
		else
			parent->first_child = node;
		parent->last_child = node;
	}
	return node;
}

/* Take a node out of the namespace; it lives on while the kernel knows it. */
void node_detach(struct store *store, struct node *node)
{
	struct node *parent = node->parent;

	hash_remove(&store->by_name, node, true);
	if (node->prev_sibling)
		node->prev_sibling->next_sibling = node->next_sibling;
	else
		parent->first_child = node->next_sibling;
	if (node->next_sibling)
		node->next_sibling->prev_sibling = node->prev_sibling;
	else
		parent->last_child = node->prev_sibling;
	node->prev_sibling = node->next_sibling = NULL;
	node->unlinked = true;
}

void node_free(struct store *store, struct node *node)
{
	hash_remove(&store->by_ino, node, false);
	if (node->semaphore) {
		node->semaphore->node = NULL;
		semaphore_unreference(store, node->semaphore);
	}
	free(node->name);
	free(node);
}

void node_release_if_unused(struct store *store, struct node *node)
{
	if (node->unlinked && node->lookups == 0)
		node_free(store, node);
}
