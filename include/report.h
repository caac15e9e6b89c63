/* report.h: the store's semaphores as text — semaphore.status lines (the
 * mount's file, `status` over TCP, stats_dir) and the user.semfs.*
 * attributes. Reads the store only through its snapshots (store_metrics,
 * store_semaphore_metric); owns the formats. */
#ifndef SEMFS_REPORT_H
#define SEMFS_REPORT_H

#include "store.h"

#include <stddef.h>

/* semaphore.status: one line per semaphore, "NAME: IN_USE key=value...",
 * only those `caller` may see (every directory above searchable, the file
 * readable); NULL: all. Control characters and '\\' in names are written as
 * \ooo, so no name can forge a line. 0 or -ENOMEM. */
int report_status_text(struct store *store, const struct store_caller *caller, char **text,
		       size_t *length);

/* One semaphore.status line (no newline), malloc'd; -EIDRM once deleted. */
int report_semaphore_status(struct store *store, struct semaphore *semaphore, char **text);

/* Extended attributes: "value", "limit", "waiting", "key", "semid", "holders",
 * "token". Returns the length and a malloc'd text, or -ENODATA, -EIDRM. */
extern const char *const report_attribute_names[];
int report_attribute(struct store *store, struct semaphore *semaphore, const char *name,
		     char **text);

#endif
