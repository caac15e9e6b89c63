/* mount_xattr.c: the user.semfs.* extended attributes of a semaphore file:
 * reading them through the report module, setting limit (and refusing the
 * rest). */
#include "mount_internal.h"

static const char *attribute_name(const char *name);
static void reply_xattr_text(fuse_req_t req, size_t size, const char *text, size_t length);

/* A `limit` set as an attribute: answered when the store is done, which in
 * cluster mode is after an etcd write, from the cluster's thread. */
struct limit_request {
	struct waiter waiter; /* first: the store hands it back */
	struct command command;
	struct mount *mount;
	struct semaphore *semaphore;
	fuse_req_t req;
};

static void limit_done(struct limit_request *request, int error)
{
	store_close_semaphore(request->mount->store, request->semaphore);
	fuse_reply_err(request->req, error);
	free(request);
}

/* Any store thread, no store lock held. */
static void limit_complete(struct waiter *waiter, int error)
{
	limit_done((struct limit_request *)waiter, error);
}

/* ---- extended attributes ----------------------------------------------------- */

/* The answer for a name semfs does not serve. Outside the user namespace it
 * is EOPNOTSUPP, not ENODATA: that is what lets ls -l (coreutils caches "not
 * supported" per device) stop asking every file for security.selinux and
 * system.posix_acl_access, two FUSE round trips and two lookups per entry. */
static int absent_attribute(const char *name)
{
	return strncmp(name, "user.", strlen("user.")) == 0 ? ENODATA : EOPNOTSUPP;
}

static const char *attribute_name(const char *name)
{
	return strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)) == 0 ? name + strlen(XATTR_PREFIX)
								      : NULL;
}

static void reply_xattr_text(fuse_req_t req, size_t size, const char *text, size_t length)
{
	if (size == 0)
		fuse_reply_xattr(req, length);
	else if (size < length)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, text, length);
}

void mount_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct mount *mount = mount_of(req);
	const char *field = attribute_name(name);
	struct semaphore *semaphore;
	char *text = NULL;

	if (!field) {
		fuse_reply_err(req, absent_attribute(name));
		return;
	}
	if (store_open_semaphore(mount->store, nodeids_ino(&mount->nodeids, ino), &semaphore) < 0) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	int length = report_attribute(mount->store, semaphore, field, &text);
	store_close_semaphore(mount->store, semaphore);
	if (length < 0)
		fuse_reply_err(req, -length);
	else
		reply_xattr_text(req, size, text, (size_t)length);
	free(text);
}

void mount_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct mount *mount = mount_of(req);
	struct semaphore *semaphore;
	char names[512];
	size_t length = 0;

	if (store_open_semaphore(mount->store, nodeids_ino(&mount->nodeids, ino), &semaphore) ==
	    0) {
		store_close_semaphore(mount->store, semaphore);
		for (size_t i = 0; report_attribute_names[i]; i++)
			length += (size_t)snprintf(names + length, sizeof(names) - length, "%s%s",
						   XATTR_PREFIX, report_attribute_names[i]) +
				  1;
	}
	reply_xattr_text(req, size, names, length);
}

void mount_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		    size_t size, int flags)
{
	struct mount *mount = mount_of(req);
	const char *field = attribute_name(name);
	struct semaphore *semaphore;
	struct command command;
	char line[64], error[160];

	if (!field) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	if (strcmp(field, "limit") != 0) {
		fuse_reply_err(req, EPERM); /* the others are read-only */
		return;
	}
	/* The same parser as a written `limit N`: one grammar, one set of errors. */
	if (size > 16 ||
	    command_parse(line,
			  (size_t)snprintf(line, sizeof(line), "limit %.*s", (int)size, value),
			  &command, error, sizeof(error)) < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	struct limit_request *request = calloc(1, sizeof(*request));
	if (!request) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	int r = store_open_semaphore(mount->store, nodeids_ino(&mount->nodeids, ino), &semaphore);
	if (r < 0) {
		free(request);
		fuse_reply_err(req, -r);
		return;
	}
	request->command = command;
	request->mount = mount;
	request->semaphore = semaphore;
	request->req = req;
	request->waiter.commands = &request->command;
	request->waiter.count = 1;
	request->waiter.complete = limit_complete;
	who_of(req, request->waiter.who, sizeof(request->waiter.who));
	r = store_submit(mount->store, semaphore, &request->waiter);
	if (r != STORE_QUEUED) /* on one host a limit never waits */
		limit_done(request, r < 0 ? -r : 0);
}

void mount_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, attribute_name(name) ? EPERM : absent_attribute(name));
}
