/* e2e.h: end-to-end harness. Each test gets its own temporary directory with
 * a mount point, a state directory and a config, runs the real semfs daemon
 * on it, and always cleans up: unmount, its children killed by PID, its SysV
 * sets removed, the directory deleted. */
#ifndef SEMFS_TEST_E2E_H
#define SEMFS_TEST_E2E_H

#include <stdbool.h>
#include <sys/types.h>

#define E2E_CHILDREN_MAX 4096

struct e2e {
	char dir[256], mnt[300], state[300], config[300], log[300];
	pid_t daemon;
	unsigned port; /* the network front-end's, on 127.0.0.1 */
	pid_t children[E2E_CHILDREN_MAX];
	int child_count;
	bool unclean; /* a stop found the daemon hung or failing */
	bool traced;  /* started with -d: libfuse traces every request to the log */
};

extern struct e2e e2e;

/* Write the config (the [semfs] section plus `extra` lines) and mount. */
void e2e_start(const char *extra);
void e2e_start_traced(const char *extra); /* the same, semfs -d */
/* Requests of `opcode` (LOOKUP, GETATTR...) from process `pid` that a traced
 * daemon logged past byte `from` of its log. */
int e2e_traced_requests(long from, const char *opcode, pid_t pid);
long e2e_log_size(void);
unsigned e2e_free_port(void); /* a TCP port on 127.0.0.1 nobody uses now */
void e2e_stop(void);	      /* SIGTERM the daemon, wait, make sure it is unmounted */
void e2e_restart(void);
/* SIGKILL the daemon and reap it. One killed while a thread of its waits in
 * a request to its own mount cannot exit until the connection is aborted:
 * after 2 s that is done (fusectl) and the answer is false. */
bool e2e_kill_daemon(int *status);
/* The suites' .fini. Criterion ignores a failed assertion there, so a
 * daemon that did not stop cleanly aborts the test process instead: the
 * suite then exits non-zero ("crashed during its teardown"). */
void e2e_teardown(void);

const char *e2e_path(const char *name); /* MOUNT/name, in a rotating buffer */

/* Open (O_CREAT|O_TRUNC, as `echo > f`), write, close: 0 or the errno. */
int e2e_write(const char *name, const char *text);
/* fork(): the child dies with the test process, the parent records it so
 * that teardown kills it by PID even when the test fails. */
pid_t e2e_fork(void);
/* e2e_write in a child process; its exit status is the errno. */
pid_t e2e_spawn_write(const char *name, const char *text);
/* A child's exit status; -1 if it is still running after `milliseconds`. */
int e2e_wait_exit(pid_t pid, int milliseconds);
void e2e_kill_children(void);

long e2e_xattr(const char *name, const char *attribute); /* -1 on error */
char *e2e_read(const char *name);			 /* malloc'd, NUL-ended */
/* Fail the test unless MOUNT/name (or ../semfs.log) contains `needle`. */
void e2e_expect_text(const char *name, const char *needle);
/* Poll until the xattr equals `value`; false after `milliseconds`. */
bool e2e_wait_xattr(const char *name, const char *attribute, long value, int milliseconds);
double e2e_now(void);
/* MOUNT/name is gone (ENOENT) within `ms`. */
bool e2e_wait_gone(const char *name, int ms);
int e2e_thread_count(pid_t pid);

#endif
