/* null_fuse.c: the FUSE floor. A low-level filesystem with one file, "null",
 * whose writes are answered at once; run on libfuse's single-threaded loop,
 * as semfs is. bench.sh times writes to it next to writes to semfs.
 * usage: bench-null-fuse MOUNTPOINT   (foreground; SIGTERM unmounts) */
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_INO 2

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
	if (parent != FUSE_ROOT_ID || strcmp(name, "null") != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill(FILE_INO, &entry.attr);
	fuse_reply_entry(req, &entry);
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
