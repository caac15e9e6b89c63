/* janitor.h: clean-up that outlives the test process. A test that starts
 * daemons and etcd members cleans up in its teardown; when the test process
 * itself dies first (Criterion's timeout, a crash), the teardown never runs.
 * The janitor, a process of its own, then does it: it waits for the test
 * process to die (or to call janitor_stop), kills every process whose
 * command line names one of its directories, detaches every mount below
 * them and removes them. */
#ifndef SEMFS_TEST_JANITOR_H
#define SEMFS_TEST_JANITOR_H

#include <sys/types.h>

/* Watch over up to 4 directories (absolute paths). */
pid_t janitor_start(const char *const *dirs, int count);
/* The teardown did its part: the janitor checks, cleans what is left, and
 * exits; waited for. */
void janitor_stop(pid_t janitor);

#endif
