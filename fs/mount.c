/* mount.c: the FUSE low-level handlers. Each handler is thin: the store
 * computes, the handler replies exactly once. A write that must wait becomes a
 * store waiter and the handler returns; whoever ends the wait (a grant, a
 * timeout, relax, rm, or the interrupt callback) answers it.
 *
 * Locks, in order: poll_lock -> store lock -> notify_lock. session_lock only
 * guards calls into the session from the poller against its destruction. */
#include "mount_internal.h"

static void stat_of(const struct store_attr *attr, struct stat *st);
static void reply_entry(fuse_req_t req, int r, const struct store_attr *attr);
static void reply_attr(fuse_req_t req, int r, const struct store_attr *attr);
static void status_size(struct mount *mount, int r, struct store_attr *attr);
static void mount_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
static void forget_reference(struct mount *mount, uint64_t nodeid);
static void mount_forget(fuse_req_t req, fuse_ino_t ino, uint64_t count);
static void mount_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
static void mount_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
static void mount_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *st, int to_set,
			  struct fuse_file_info *fi);
static void mount_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			dev_t rdev);
static void mount_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
static void mount_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
static void mount_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
static void listing_free(struct mount *mount, struct directory_listing *listing);
static void mount_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
static void mount_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			  struct fuse_file_info *fi);
static void mount_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
static int reply_open_parallel(fuse_req_t req, struct open_file *file);
static void open_file_free(struct mount *mount, struct open_file *file);
static int status_for_opener(fuse_req_t req, struct store *store, struct open_file *file);
static int open_file_new(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
			 struct open_file **out);
static void mount_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
static void mount_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			 struct fuse_file_info *fi);
static void mount_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
static void mount_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
static void mount_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi);
static void write_answer(struct write_request *request, int error);
static void write_complete(struct waiter *waiter, int error);
static void write_queued(struct waiter *waiter, int delta);
static void write_interrupted(fuse_req_t req, void *data);
static void mount_write(fuse_req_t req, fuse_ino_t ino, const char *buffer, size_t size,
			off_t offset, struct fuse_file_info *fi);
static void mount_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		       struct fuse_pollhandle *handle);
static void mount_init(void *userdata, struct fuse_conn_info *connection);
static void mount_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t new_parent,
			 const char *new_name, unsigned int flags);
static void mount_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name);

/* ---- helpers for every handler ----------------------------------------- */

struct mount *mount_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

void who_of(fuse_req_t req, char *who, size_t size)
{
	snprintf(who, size, "pid:%d", (int)fuse_req_ctx(req)->pid);
}

static void stat_of(const struct store_attr *attr, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = attr->ino;
	st->st_mode = attr->mode;
	st->st_nlink = attr->nlink;
	st->st_uid = attr->uid;
	st->st_gid = attr->gid;
	st->st_size = (off_t)attr->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((attr->size + 511) / 512);
	st->st_mtim = attr->mtime;
	st->st_ctim = attr->ctime;
	st->st_atim = attr->mtime;
}

/* A directory's mode and owner change only through the mount (whose
 * SETATTR reply refreshes the kernel's copy); its size, nlink and mtime may
 * lag a create made over TCP by up to this. Cached, a path walk skips one
 * GETATTR per directory (each `echo lock > f` asks for the root's). */
static double attr_timeout(const struct store_attr *attr)
{
	return attr->kind == NODE_DIRECTORY ? ENTRY_TIMEOUT : ATTR_TIMEOUT;
}

static void reply_entry(fuse_req_t req, int r, const struct store_attr *attr)
{
	struct fuse_entry_param entry;

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	memset(&entry, 0, sizeof(entry));
	entry.ino = attr->nodeid;
	entry.generation = 1;
	entry.attr_timeout = attr_timeout(attr);
	/* An alias's attributes serve the permission check of the open() that
	 * follows its lookup (may_open, default_permissions) instead of a
	 * GETATTR, one request less per `echo lock > f`. They are this
	 * instant's, only this path walk reaches the alias's inode before the
	 * tick (every other walk looks up again: entry valid for no time), and
	 * the open drops them (attributes_served). */
	if (attr->kind == NODE_SEMAPHORE && nodeids_is_alias(attr->nodeid))
		entry.attr_timeout = ALIAS_ATTR_TIMEOUT;
	/* Semaphores: every path walk asks again, so that it can be sent to an
	 * alias while a write waits on the inode (see mount_nodeids.c). */
	entry.entry_timeout = attr->kind == NODE_DIRECTORY ? ENTRY_TIMEOUT : 0.0;
	stat_of(attr, &entry.attr);
	fuse_reply_entry(req, &entry);
}

static void reply_attr(fuse_req_t req, int r, const struct store_attr *attr)
{
	struct stat st;

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	stat_of(attr, &st);
	fuse_reply_attr(req, &st, attr_timeout(attr));
}

/* ---- the tree ------------------------------------------------------------ */

/* semaphore.status's size: its whole text (what a reader may see can only
 * be shorter; readers read to EOF). */
static void status_size(struct mount *mount, int r, struct store_attr *attr)
{
	char *text;
	size_t length;

	if (r == 0 && attr->kind == NODE_STATUS &&
	    report_status_text(mount->store, NULL, &text, &length) == 0) {
		attr->size = length;
		free(text);
	}
}

static void mount_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mount *mount = mount_of(req);
	struct store_attr attr;
	bool own = fuse_req_ctx(req)->pid == mount->notifier_tid;
	int r = store_lookup(mount->store, nodeids_ino(&mount->nodeids, parent), name, &attr);

	if (r == 0 && attr.kind == NODE_SEMAPHORE)
		attr.nodeid = nodeids_looked_up(&mount->nodeids, attr.ino, own);

	status_size(mount, r, &attr);
	reply_entry(req, r, &attr);
}

/* Drop `count` kernel references to `nodeid`. */
static void forget_references(struct mount *mount, uint64_t nodeid, uint64_t count)
{
	uint64_t node = nodeids_forget(&mount->nodeids, nodeid, count);
	if (node)
		store_forget(mount->store, node, count);
}

/* A reply carrying a reference that never reached the kernel. */
static void forget_reference(struct mount *mount, uint64_t nodeid)
{
	forget_references(mount, nodeid, 1);
}

static void mount_forget(fuse_req_t req, fuse_ino_t ino, uint64_t count)
{
	forget_references(mount_of(req), ino, count);
	fuse_reply_none(req);
}

static void mount_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		forget_references(mount_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void mount_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct store_attr attr;
	struct mount *mount = mount_of(req);
	int r = store_getattr(mount->store, nodeids_ino(&mount->nodeids, ino), &attr);

	status_size(mount_of(req), r, &attr);
	reply_attr(req, r, &attr);
}

static void mount_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *st, int to_set,
			  struct fuse_file_info *fi)
{
	mode_t mode = st->st_mode;
	uid_t uid = st->st_uid;
	gid_t gid = st->st_gid;
	struct timespec mtime = st->st_mtim;
	struct store_attr attr;

	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		clock_gettime(CLOCK_REALTIME, &mtime);
	/* FUSE_SET_ATTR_SIZE: the journal cannot be truncated; `echo > f` opens
	 * with O_TRUNC and must still work, so a size change is ignored. */
	int r = store_setattr(
	    mount_of(req)->store, nodeids_ino(&mount_of(req)->nodeids, ino),
	    to_set & FUSE_SET_ATTR_MODE ? &mode : NULL, to_set & FUSE_SET_ATTR_UID ? &uid : NULL,
	    to_set & FUSE_SET_ATTR_GID ? &gid : NULL,
	    to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW) ? &mtime : NULL, &attr);
	reply_attr(req, r, &attr);
}

static void mount_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			dev_t rdev)
{
	const struct fuse_ctx *context = fuse_req_ctx(req);
	struct store_attr attr;

	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM); /* only semaphores and directories */
		return;
	}
	struct mount *mount = mount_of(req);
	int r = store_create(mount->store, nodeids_ino(&mount->nodeids, parent), name, mode,
			     context->uid, context->gid, &attr);
	/* An alias, as for a lookup: the creating descriptor may wait in a
	 * write, and the notifier touches the node's own inode. */
	if (r == 0)
		attr.nodeid = nodeids_looked_up(&mount->nodeids, attr.ino, false);
	reply_entry(req, r, &attr);
}

static void mount_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	const struct fuse_ctx *context = fuse_req_ctx(req);
	struct store_attr attr;

	reply_entry(req,
		    store_mkdir(mount_of(req)->store, nodeids_ino(&mount_of(req)->nodeids, parent),
				name, mode, context->uid, context->gid, &attr),
		    &attr);
}

static void mount_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -store_unlink(mount_of(req)->store,
					  nodeids_ino(&mount_of(req)->nodeids, parent), name));
}

static void mount_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -store_rmdir(mount_of(req)->store,
					 nodeids_ino(&mount_of(req)->nodeids, parent), name));
}

static void listing_free(struct mount *mount, struct directory_listing *listing)
{
	pthread_mutex_lock(&mount->poll_lock);
	if (listing->prev)
		listing->prev->next = listing->next;
	else
		mount->listings = listing->next;
	if (listing->next)
		listing->next->prev = listing->prev;
	pthread_mutex_unlock(&mount->poll_lock);
	store_list_free(listing->entries, listing->count);
	free(listing);
}

static void mount_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct directory_listing *listing = calloc(1, sizeof(*listing));
	int r = listing
		    ? store_list(mount_of(req)->store, nodeids_ino(&mount_of(req)->nodeids, ino),
				 &listing->entries, &listing->count)
		    : -ENOMEM;

	if (r < 0) {
		free(listing);
		fuse_reply_err(req, -r);
		return;
	}
	struct mount *mount = mount_of(req);
	pthread_mutex_lock(&mount->poll_lock);
	listing->next = mount->listings;
	if (mount->listings)
		mount->listings->prev = listing;
	mount->listings = listing;
	pthread_mutex_unlock(&mount->poll_lock);
	fi->fh = (uintptr_t)listing;
	if (fuse_reply_open(req, fi) < 0)
		listing_free(mount, listing);
}

static void mount_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			  struct fuse_file_info *fi)
{
	struct directory_listing *listing = (struct directory_listing *)(uintptr_t)fi->fh;
	char *buffer = malloc(size);
	size_t used = 0;

	if (!buffer) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Offsets: 0 ".", 1 "..", then 2 + index; each entry names the next. */
	for (off_t i = offset; (size_t)i < listing->count + 2; i++) {
		struct stat st = {0};
		const char *name;
		if (i < 2) {
			name = i == 0 ? "." : "..";
			st.st_ino = ino;
			st.st_mode = S_IFDIR;
		} else {
			const struct store_entry *entry = &listing->entries[i - 2];
			name = entry->name;
			st.st_ino = entry->ino;
			st.st_mode = entry->kind == NODE_DIRECTORY ? S_IFDIR : S_IFREG;
		}
		size_t needed =
		    fuse_add_direntry(req, buffer + used, size - used, name, &st, i + 1);
		if (needed > size - used)
			break;
		used += needed;
	}
	fuse_reply_buf(req, buffer, used);
	free(buffer);
}

static void mount_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	listing_free(mount_of(req), (struct directory_listing *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- open files ------------------------------------------------------------ */

/* libfuse 3.14 cannot ask for FOPEN_PARALLEL_DIRECT_WRITES, and without it the
 * kernel lets one write per file in at a time: a blocked `echo lock` would
 * hold up `echo unlock`. So the open reply is built here. FOPEN_NOFLUSH: a
 * close sends no FLUSH (there is nothing to flush, and units are returned at
 * RELEASE), two round trips less per `echo lock > f`. */
#define OPEN_FLAGS (FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES | FOPEN_NOFLUSH)

static int reply_open_parallel(fuse_req_t req, struct open_file *file)
{
	struct fuse_open_out out = {
	    .fh = (uintptr_t)file,
	    .open_flags = OPEN_FLAGS,
	};
	struct iovec iov = {.iov_base = &out, .iov_len = sizeof(out)};
	return fuse_reply_iov(req, &iov, 1);
}

static void open_file_free(struct mount *mount, struct open_file *file)
{
	pthread_mutex_lock(&mount->poll_lock);
	if (file->poll_handle) {
		fuse_pollhandle_destroy(file->poll_handle);
		file->poll_handle = NULL;
		atomic_fetch_sub(&mount->pollers_armed, 1);
		if (file->poll_prev)
			file->poll_prev->poll_next = file->poll_next;
		else
			mount->pollers = file->poll_next;
		if (file->poll_next)
			file->poll_next->poll_prev = file->poll_prev;
	}
	if (file->all_prev)
		file->all_prev->all_next = file->all_next;
	else
		mount->open_files = file->all_next;
	if (file->all_next)
		file->all_next->all_prev = file->all_prev;
	pthread_mutex_unlock(&mount->poll_lock);

	if (file->semaphore) {
		store_release_owner(mount->store, &file->owner, "close");
		{
			store_close_semaphore(mount->store, file->semaphore);
			nodeids_opened(&mount->nodeids, file->nodeid, -1);
		}
	}
	free(file->status_text);
	free(file);
}

/* semaphore.status as its opener may see it: the kernel's own rules for
 * each directory above a semaphore (x) and the semaphore itself (r). */
static int status_for_opener(fuse_req_t req, struct store *store, struct open_file *file)
{
	const struct fuse_ctx *context = fuse_req_ctx(req);
	gid_t groups[64];
	int count = fuse_req_getgroups(req, 64, groups);
	struct store_caller caller = {
	    .uid = context->uid,
	    .gid = context->gid,
	    .groups = groups,
	    .group_count = count < 0	? 0
			   : count > 64 ? 64
					: (size_t)count,
	};
	return report_status_text(store, &caller, &file->status_text, &file->status_length);
}

/* A file opened through nodeid `ino`, in the mount's list of open files. */
static int open_file_new(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
			 struct open_file **out)
{
	struct mount *mount = mount_of(req);
	struct open_file *file = calloc(1, sizeof(*file));
	int r = 0;

	/* Cluster mode: what is read shows every write finished before the
	 * open, on any host (a no-op on one host). */
	if ((fi->flags & O_ACCMODE) != O_WRONLY)
		store_read_barrier(mount->store);

	if (!file)
		return -ENOMEM;
	if (ino == STORE_STATUS_INO) {
		file->kind = OPEN_STATUS;
		if ((fi->flags & O_ACCMODE) != O_RDONLY)
			r = -EACCES;
		else
			r = status_for_opener(req, mount->store, file);
	} else {
		file->kind = OPEN_SEMAPHORE;
		file->nodeid = ino;
		r = store_open_semaphore(mount->store, nodeids_ino(&mount->nodeids, ino),
					 &file->semaphore);
		if (r == 0)
			nodeids_opened(&mount->nodeids, ino, 1);
	}
	if (r < 0) {
		free(file->status_text);
		free(file);
		return r;
	}
	pthread_mutex_lock(&mount->poll_lock);
	file->all_next = mount->open_files;
	if (mount->open_files)
		mount->open_files->all_prev = file;
	mount->open_files = file;
	pthread_mutex_unlock(&mount->poll_lock);
	*out = file;
	return 0;
}

/* The attributes of an alias's lookup served its open's permission check
 * (reply_entry); from here on fstat() asks again, so that st_size and
 * st_mtime are current for the opener too. One notification, no round trip. */
static void attributes_served(struct mount *mount, fuse_ino_t ino)
{
	pthread_mutex_lock(&mount->session_lock);
	if (!mount->session_closed)
		(void)fuse_lowlevel_notify_inval_inode(mount->session, ino, -1, 0);
	pthread_mutex_unlock(&mount->session_lock);
}

static void mount_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mount *mount = mount_of(req); /* req is gone once answered */
	struct open_file *file;
	int r = open_file_new(req, ino, fi, &file);

	if (r < 0)
		fuse_reply_err(req, -r);
	else if (reply_open_parallel(req, file) < 0)
		open_file_free(mount, file); /* the opener is gone: no release will come */
	else if (nodeids_is_alias(ino))
		attributes_served(mount, ino);
}

static void attr_of(const struct stat *st, struct fuse_attr *attr)
{
	*attr = (struct fuse_attr){
	    .ino = st->st_ino,
	    .size = (uint64_t)st->st_size,
	    .blocks = (uint64_t)st->st_blocks,
	    .atime = (uint64_t)st->st_atim.tv_sec,
	    .mtime = (uint64_t)st->st_mtim.tv_sec,
	    .ctime = (uint64_t)st->st_ctim.tv_sec,
	    .atimensec = (uint32_t)st->st_atim.tv_nsec,
	    .mtimensec = (uint32_t)st->st_mtim.tv_nsec,
	    .ctimensec = (uint32_t)st->st_ctim.tv_nsec,
	    .mode = st->st_mode,
	    .nlink = (uint32_t)st->st_nlink,
	    .uid = st->st_uid,
	    .gid = st->st_gid,
	    .blksize = (uint32_t)st->st_blksize,
	};
}

/* open(O_CREAT) of a new name in one round trip (FUSE_CREATE) instead of
 * MKNOD, GETATTR and OPEN. The reply is built here, with the open flags of
 * reply_open_parallel, which libfuse 3.14's fuse_reply_create cannot set. */
static void mount_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			 struct fuse_file_info *fi)
{
	const struct fuse_ctx *context = fuse_req_ctx(req);
	struct mount *mount = mount_of(req);
	struct store_attr attr;
	struct open_file *file;

	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	int r = store_create(mount->store, nodeids_ino(&mount->nodeids, parent), name, mode,
			     context->uid, context->gid, &attr);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	/* An alias, as for a lookup (see mount_mknod). */
	attr.nodeid = nodeids_looked_up(&mount->nodeids, attr.ino, false);
	r = open_file_new(req, attr.nodeid, fi, &file);
	if (r < 0) {
		forget_reference(mount, attr.nodeid);
		fuse_reply_err(req, -r);
		return;
	}
	struct stat st;
	stat_of(&attr, &st);
	/* The entry is valid for no time, as reply_entry's; the attributes for
	 * the kernel's next tick only (1 ns rounds up to a jiffy), so that the
	 * permission check this open() makes next (may_open, default_permissions)
	 * uses them instead of asking with a GETATTR. They are this instant's,
	 * and only the creator's descriptor sees this inode: a write through it
	 * invalidates them, any other path walk gets an inode of its own. */
	struct fuse_entry_out entry = {
	    .nodeid = attr.nodeid, .generation = 1, .attr_valid_nsec = 1};
	attr_of(&st, &entry.attr);
	struct fuse_open_out open = {
	    .fh = (uintptr_t)file,
	    .open_flags = OPEN_FLAGS,
	};
	struct iovec iov[] = {{.iov_base = &entry, .iov_len = sizeof(entry)},
			      {.iov_base = &open, .iov_len = sizeof(open)}};
	if (fuse_reply_iov(req, iov, 2) < 0) {
		/* The opener is gone: neither a release nor a forget will come. */
		open_file_free(mount, file);
		forget_reference(mount, attr.nodeid);
	}
}

static void mount_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	open_file_free(mount_of(req), (struct open_file *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void mount_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void mount_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi)
{
	struct mount *mount = mount_of(req);
	struct open_file *file = (struct open_file *)(uintptr_t)fi->fh;

	if (file->kind == OPEN_STATUS) {
		size_t available =
		    (size_t)offset < file->status_length ? file->status_length - (size_t)offset : 0;
		fuse_reply_buf(req, file->status_text + (available ? offset : 0),
			       size < available ? size : available);
		return;
	}
	/* Cluster mode: its acquire units went with a lost lease. */
	if (file->kind == OPEN_SEMAPHORE && store_owner_lost(mount->store, &file->owner)) {
		fuse_reply_err(req, EIO);
		return;
	}
	char *buffer = malloc(size ? size : 1);
	if (!buffer) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&mount->poll_lock);
	int64_t skew = file->skew;
	pthread_mutex_unlock(&mount->poll_lock);
	uint64_t at = (uint64_t)((int64_t)offset + skew);
	size_t count = store_read_journal(mount->store, file->semaphore, &at, buffer, size);
	pthread_mutex_lock(&mount->poll_lock);
	/* After a "dropped" line the next kernel offset maps to the first
	 * kept line; reads of one file come in order (no parallel reads of a
	 * direct-I/O file share an offset that matters here). */
	file->skew = (int64_t)at - (int64_t)(offset + (off_t)count);
	file->read_end = at;
	pthread_mutex_unlock(&mount->poll_lock);
	fuse_reply_buf(req, buffer, count);
	free(buffer);
}

/* ---- writes: commands ------------------------------------------------------ */

/* Answer a write whose interrupt callback is unregistered (or running us). */
static void write_answer(struct write_request *request, int error)
{
	int r = error ? fuse_reply_err(request->req, error)
		      : fuse_reply_write(request->req, request->size);
	if (r < 0 && error == 0)
		store_return_units(request->mount->store, &request->waiter);
	free(request);
}

/* The store queued or unqueued the write (under its lock). */
static void write_queued(struct waiter *waiter, int delta)
{
	struct write_request *request = (struct write_request *)waiter;
	nodeids_queued(&request->mount->nodeids, request->nodeid, delta);
}

/* The store ended the wait (any store thread, no store lock held). */
static void write_complete(struct waiter *waiter, int error)
{
	struct write_request *request = (struct write_request *)waiter;

	/* Waits out a running interrupt callback; after this none can start. */
	fuse_req_interrupt_func(request->req, NULL, NULL);
	write_answer(request, error);
}

/* libfuse calls this with the request's lock held, at registration already if
 * the interrupt came first; unregistering from here would deadlock. */
static void write_interrupted(fuse_req_t req, void *data)
{
	struct write_request *request = data;

	if (store_cancel(request->mount->store, &request->waiter)) {
		fuse_reply_err(req, EINTR);
		free(request);
	}
}

static void mount_write(fuse_req_t req, fuse_ino_t ino, const char *buffer, size_t size,
			off_t offset, struct fuse_file_info *fi)
{
	struct mount *mount = mount_of(req);
	struct open_file *file = (struct open_file *)(uintptr_t)fi->fh;
	struct command commands[COMMAND_BATCH_MAX];
	char error[160];

	if (file->kind != OPEN_SEMAPHORE) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (size > WRITE_MAX) {
		fuse_reply_err(req, E2BIG);
		return;
	}
	int count =
	    command_parse_batch(buffer, size, commands, COMMAND_BATCH_MAX, error, sizeof(error));
	if (count < 0) {
		log_debug("write to inode %llu refused: %s", (unsigned long long)ino, error);
		fuse_reply_err(req, -count);
		return;
	}
	struct write_request *request =
	    calloc(1, sizeof(*request) + (size_t)count * sizeof(struct command));
	if (!request) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(request->commands, commands, (size_t)count * sizeof(struct command));
	request->mount = mount;
	request->req = req;
	request->size = size;
	request->waiter.commands = request->commands;
	request->waiter.count = (size_t)count;
	request->waiter.owner = &file->owner;
	request->waiter.complete = write_complete;
	/* IN_MODIFY from a write lands on the inode it came through: only the
	 * node's own is what a watch by path holds; changes through an alias
	 * get a touch. */
	request->waiter.announced_by_reply = !nodeids_is_alias(ino);
	request->nodeid = ino;
	request->waiter.queued = write_queued;
	who_of(req, request->waiter.who, sizeof(request->waiter.who));

	/* Before the waiter is visible to anyone who could grant it. */
	fuse_req_interrupt_func(req, write_interrupted, request);
	int r = store_submit(mount->store, file->semaphore, &request->waiter);
	if (r == STORE_QUEUED)
		return; /* answered later, maybe already */
	fuse_req_interrupt_func(req, NULL, NULL);
	write_answer(request, r < 0 ? -r : 0);
}

/* ---- poll -------------------------------------------------------------------- */

bool file_readable(struct mount *mount, struct open_file *file)
{
	uint64_t start, end;

	if (file->kind != OPEN_SEMAPHORE)
		return true;
	store_journal_position(mount->store, file->semaphore, &start, &end);
	return end > file->read_end;
}

static void mount_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		       struct fuse_pollhandle *handle)
{
	struct mount *mount = mount_of(req);
	struct open_file *file = (struct open_file *)(uintptr_t)fi->fh;
	unsigned events = POLLOUT | POLLWRNORM;

	pthread_mutex_lock(&mount->poll_lock);
	/* Armed first, looked at after: a change that mount_changed saw no
	 * poller for is one this look sees. */
	if (handle) {
		if (file->poll_handle) {
			fuse_pollhandle_destroy(file->poll_handle);
		} else {
			file->poll_prev = NULL;
			file->poll_next = mount->pollers;
			if (mount->pollers)
				mount->pollers->poll_prev = file;
			mount->pollers = file;
			atomic_fetch_add(&mount->pollers_armed, 1);
		}
		file->poll_handle = handle;
	}
	bool readable = file_readable(mount, file);
	if (readable)
		events |= POLLIN | POLLRDNORM;
	if (file->kind == OPEN_SEMAPHORE && store_owner_lost(mount->store, &file->owner))
		events |= POLLERR;
	pthread_mutex_unlock(&mount->poll_lock);
	fuse_reply_poll(req, events);
}

/* ---- the operations table -------------------------------------------------- */

static void mount_init(void *userdata, struct fuse_conn_info *connection)
{
	/* Every byte goes to the store: no write-back, no cached pages. */
	connection->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_AUTO_INVAL_DATA);
}

/* A semaphore's name is its identity (its SysV key, its records, its
 * holders'): no renames, no links. EPERM says so more plainly than ENOSYS;
 * mv out of the mount still copies the journal and deletes the semaphore,
 * as it does for any file across filesystems. */
static void mount_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t new_parent,
			 const char *new_name, unsigned int flags)
{
	fuse_reply_err(req, EPERM);
}

static void mount_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EPERM);
}

static const struct fuse_lowlevel_ops mount_operations = {
    .init = mount_init,
    .lookup = mount_lookup,
    .forget = mount_forget,
    .forget_multi = mount_forget_multi,
    .getattr = mount_getattr,
    .setattr = mount_setattr,
    .mknod = mount_mknod,
    .create = mount_create,
    .mkdir = mount_mkdir,
    .unlink = mount_unlink,
    .rmdir = mount_rmdir,
    .rename = mount_rename,
    .symlink = mount_symlink,
    .open = mount_open,
    .read = mount_read,
    .write = mount_write,
    .flush = mount_flush,
    .release = mount_release,
    .opendir = mount_opendir,
    .readdir = mount_readdir,
    .releasedir = mount_releasedir,
    .setxattr = mount_setxattr,
    .getxattr = mount_getxattr,
    .listxattr = mount_listxattr,
    .removexattr = mount_removexattr,
    .poll = mount_poll,
};

/* ---- life cycle ---------------------------------------------------------------- */

struct mount *mount_new(void)
{
	struct mount *mount = calloc(1, sizeof(*mount));

	if (!mount)
		return NULL;
	mount->toucher_channel = -1;
	if (nodeids_init(&mount->nodeids) < 0) {
		nodeids_free(&mount->nodeids);
		free(mount);
		return NULL;
	}
	pthread_mutex_init(&mount->poll_lock, NULL);
	pthread_mutex_init(&mount->notify_lock, NULL);
	pthread_mutex_init(&mount->session_lock, NULL);
	clock_condition_init(&mount->notify_wake);
	clock_condition_init(&mount->poll_wake);
	return mount;
}

int mount_attach(struct mount *mount, struct store *store, struct fuse_args *args,
		 const char *mountpoint, char *error, size_t error_size)
{
	mount->store = store;
	if (!realpath(mountpoint, mount->mountpoint)) {
		snprintf(error, error_size, "mount point %s: %s", mountpoint, strerror(errno));
		return -1;
	}
	if (fuse_opt_add_arg(args, "-odefault_permissions,fsname=semfs,subtype=semfs") < 0) {
		snprintf(error, error_size, "out of memory");
		return -1;
	}
	mount->session = fuse_session_new(args, &mount_operations, sizeof(mount_operations), mount);
	if (!mount->session) {
		snprintf(error, error_size, "bad FUSE options (see semfs --help)");
		return -1;
	}
	if (fuse_set_signal_handlers(mount->session) != 0) {
		snprintf(error, error_size, "cannot install signal handlers");
		return -1;
	}
	if (fuse_session_mount(mount->session, mount->mountpoint) != 0) {
		snprintf(error, error_size, "cannot mount on %s", mount->mountpoint);
		return -1;
	}
	mount->mounted = true;
	return 0;
}

int mount_fork_toucher(struct mount *mount)
{
	int r = toucher_start(mount);

	if (r < 0) {
		log_warnx("cannot start the toucher process: %s", strerror(-r));
		return -1;
	}
	return 0;
}

int mount_run(struct mount *mount)
{
	int r = thread_start(&mount->notifier, notifier_main, mount);
	if (r < 0) {
		log_warnx("cannot start the notifier thread: %s", strerror(-r));
		return -1;
	}
	mount->notifier_running = true;
	r = thread_start(&mount->poller, poller_main, mount);
	if (r < 0) {
		log_warnx("cannot start the poller thread: %s", strerror(-r));
		return -1;
	}
	mount->poller_running = true;
	/* The unmount is mount_destroy's: the store answers its waiting
	 * writes first, while the device is still open (else libfuse says
	 * "fuse: writing device: Bad file descriptor" for each). */
	return fuse_session_loop(mount->session);
}

void mount_destroy(struct mount *mount)
{
	if (!mount)
		return;
	pthread_mutex_lock(&mount->notify_lock);
	mount->notifier_stop = true;
	pthread_cond_signal(&mount->notify_wake);
	pthread_cond_signal(&mount->poll_wake);
	pthread_mutex_unlock(&mount->notify_lock);

	pthread_mutex_lock(&mount->session_lock);
	mount->session_closed = true;
	pthread_mutex_unlock(&mount->session_lock);
	if (mount->session) {
		if (mount->mounted)
			fuse_session_unmount(mount->session);
		fuse_remove_signal_handlers(mount->session);
		/* Closing /dev/fuse aborts a touch the toucher may wait in. */
		fuse_session_destroy(mount->session);
	}
	toucher_stop(mount);
	if (mount->notifier_running)
		pthread_join(mount->notifier, NULL);
	if (mount->toucher_channel >= 0)
		close(mount->toucher_channel);
	if (mount->poller_running)
		pthread_join(mount->poller, NULL);
	while (mount->changes) {
		struct change *next = mount->changes->next;
		free(mount->changes);
		mount->changes = next;
	}
	while (mount->open_files)
		open_file_free(mount, mount->open_files);
	while (mount->listings)
		listing_free(mount, mount->listings);
	pthread_cond_destroy(&mount->notify_wake);
	pthread_cond_destroy(&mount->poll_wake);
	pthread_mutex_destroy(&mount->session_lock);
	pthread_mutex_destroy(&mount->notify_lock);
	pthread_mutex_destroy(&mount->poll_lock);
	nodeids_free(&mount->nodeids);
	free(mount);
}
