/* stats.h: the stats directory (ACE's stats_dir): semaphore.status, as the
 * virtual file shows it, and semfs.prom for node_exporter's textfile
 * collector. Both are rewritten atomically (write, then rename) after a
 * change, at most a few times a second, by a thread of this module. */
#ifndef SEMFS_STATS_H
#define SEMFS_STATS_H

#include "store.h"

#include <stddef.h>

#define STATS_STATUS_FILE     "semaphore.status"
#define STATS_PROMETHEUS_FILE "semfs.prom"
#define STATS_MIN_INTERVAL    0.25 /* seconds between rewrites */

struct stats;

/* Make the directory (and its parents) and write both files once. */
int stats_open(struct stats **out, struct store *store, const char *directory, char *error,
	       size_t error_size);
int stats_start(struct stats *stats); /* the writer thread, after daemonizing */
/* Something changed: called with the store lock held, so it only flags. */
void stats_changed(struct stats *stats);
/* Write what is pending, stop the thread, free. NULL is fine. */
void stats_close(struct stats *stats);

/* Write both files now: 0 or -errno. */
int stats_write(struct store *store, const char *directory);

#endif
