/* null_fuse.c: the FUSE floor. A low-level filesystem with one file, "null",
 * whose writes are answered at once, and a flat root where files can be
 * created, looked up and listed (kept in memory: names only); run on
 * libfuse's single-threaded loop, as semfs is. bench.sh times writes, creates
 * and `ls -l` on it next to the same on semfs.
 * usage: bench-null-fuse MOUNTPOINT   (foreground; SIGTERM unmounts) */
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_INO  2
#define FIRST_INO 3 /* created files: FIRST_INO + their index */
#define FILES_MAX 100000
#define BUCKETS	  (1 << 18)

static char *names[FILES_MAX];
static int file_count;
static int buckets[BUCKETS]; /* index + 1, open addressing */

static unsigned hash(const char *name)
{
	unsigned h = 2166136261u;
	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 16777619u;
	return h;
}

/* Its index, or -1; with `add`, made when missing (-1 when full). */
static int file_find(const char *name, int add)
{
	for (unsigned i = hash(name) & (BUCKETS - 1);; i = (i + 1) & (BUCKETS - 1)) {
		if (buckets[i] == 0) {
			if (!add || file_count == FILES_MAX)
				return -1;
			names[file_count] = strdup(name);
			buckets[i] = ++file_count;
			return file_count - 1;
		}
		if (strcmp(names[buckets[i] - 1], name) == 0)
			return buckets[i] - 1;
	}
}

static void fill(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = ino == FUSE_ROOT_ID ? S_IFDIR | 0755 : S_IFREG | 0666;
	st->st_nlink = ino == FUSE_ROOT_ID ? 2 : 1;
}

static void null_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param entry = {.ino = FILE_INO};
	int index = strcmp(name, "null") == 0 ? -2 : file_find(name, 0);
	if (parent != FUSE_ROOT_ID || index == -1) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (index >= 0)
		entry.ino = FIRST_INO + (fuse_ino_t)index;
	fill(entry.ino, &entry.attr);
	fuse_reply_entry(req, &entry);
}

static void null_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			struct fuse_file_info *fi)
{
	int index = parent == FUSE_ROOT_ID ? file_find(name, 1) : -1;
	if (index < 0) {
		fuse_reply_err(req, parent == FUSE_ROOT_ID ? ENOSPC : ENOENT);
		return;
	}
	struct fuse_entry_param entry = {.ino = FIRST_INO + (fuse_ino_t)index};
	fill(entry.ino, &entry.attr);
	fi->direct_io = 1;
	fuse_reply_create(req, &entry, fi);
}

static void null_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			 struct fuse_file_info *fi)
{
	char *buffer = malloc(size);
	size_t used = 0;
	if (!buffer) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Offsets: 0 ".", 1 "..", 2 "null", 3 + i the files. */
	for (off_t at = offset; at < 3 + file_count; at++) {
		struct stat st = {.st_mode = S_IFREG};
		const char *name = at == 0   ? "."
				   : at == 1 ? ".."
				   : at == 2 ? "null"
					     : names[at - 3];
		st.st_ino = at < 2    ? FUSE_ROOT_ID
			    : at == 2 ? FILE_INO
				      : FIRST_INO + (fuse_ino_t)(at - 3);
		size_t n = fuse_add_direntry(req, buffer + used, size - used, name, &st, at + 1);
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buffer, used);
	free(buffer);
}

static void null_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	fill(ino, &st);
	fuse_reply_attr(req, &st, 0);
}

static void null_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			 struct fuse_file_info *fi)
{
	null_getattr(req, ino, fi);
}

static void null_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fi->direct_io = 1; /* as semfs: every write reaches the daemon */
	fuse_reply_open(req, fi);
}

static void null_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	fuse_reply_write(req, size);
}

static const struct fuse_lowlevel_ops null_ops = {
    .lookup = null_lookup,
    .getattr = null_getattr,
    .setattr = null_setattr,
    .open = null_open,
    .write = null_write,
    .create = null_create,
    .readdir = null_readdir,
};

int main(int argc, char *argv[])
{
	char *fuse_argv[] = {argv[0], NULL};
	struct fuse_args args = FUSE_ARGS_INIT(1, fuse_argv);
	int r = 1;

	if (argc != 2) {
		fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
		return 2;
	}
	struct fuse_session *session = fuse_session_new(&args, &null_ops, sizeof(null_ops), NULL);
	if (session && fuse_set_signal_handlers(session) == 0) {
		if (fuse_session_mount(session, argv[1]) == 0) {
			r = fuse_session_loop(session) < 0;
			fuse_session_unmount(session);
		}
		fuse_remove_signal_handlers(session);
	}
	if (session)
		fuse_session_destroy(session);
	return r;
}
