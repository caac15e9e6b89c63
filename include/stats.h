/* stats.h: the stats directory (ACE's stats_dir): semaphore.status, as the
 * virtual file shows it (or in ACE's own shape), and semfs.prom for
 * node_exporter's textfile collector. Both are rewritten atomically (write,
 * then rename) after a change, at most 4 times a second, and at least once a
 * second (ACE's mtime liveness), by a thread of this module. */
#ifndef SEMFS_STATS_H
#define SEMFS_STATS_H

#include "store.h"

#include <stddef.h>

#define STATS_STATUS_FILE     "semaphore.status"
#define STATS_PROMETHEUS_FILE "semfs.prom"
#define STATS_MIN_INTERVAL    0.25 /* seconds between rewrites */
#define STATS_MAX_INTERVAL    1.0  /* rewritten at least this often */

enum stats_format {
	STATS_FORMAT_SEMFS, /* the status file's lines */
	STATS_FORMAT_ACE,   /* `name: count` per defined semaphore, as ACE writes it */
};

struct stats;

/* Make the directory (and its parents) and write both files once. */
int stats_open(struct stats **out, struct store *store, const char *directory,
	       enum stats_format format, char *error, size_t error_size);
int stats_start(struct stats *stats); /* the writer thread, after daemonizing */
/* Something changed: called with the store lock held, so it only flags. */
void stats_changed(struct stats *stats);
/* Write what is pending, stop the thread, free. NULL is fine. */
void stats_close(struct stats *stats);

/* Write both files now: 0 or -errno. */
int stats_write(struct store *store, const char *directory, enum stats_format format);

#endif
