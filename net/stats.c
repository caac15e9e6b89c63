/* stats.c: the stats directory writer (see stats.h). */
#include "stats.h"

#include "cluster.h"
#include "report.h"

#include "clock.h"
#include "log.h"
#include "name.h"
#include "thread.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The files are for whoever can read stats_dir: they show what any user may
 * see (others' bits), never a name hidden in a private directory. */
static const struct store_caller stats_reader = {.uid = (uid_t)-1, .gid = (gid_t)-1};

struct stats {
	struct store *store;
	char directory[PATH_MAX];
	enum stats_format format;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool dirty, stopping, running;
	pthread_t thread;
};

/* Write `data` to DIRECTORY/NAME through a temporary file and rename(2), so
 * readers see the old file or the new one, never half of one. */
static int write_atomically(const char *directory, const char *name, const char *data,
			    size_t length)
{
	char path[PATH_MAX], temporary[PATH_MAX];
	int r = 0;

	if (snprintf(path, sizeof(path), "%s/%s", directory, name) >= (int)sizeof(path) ||
	    snprintf(temporary, sizeof(temporary), "%s/.%s.tmp", directory, name) >=
		(int)sizeof(temporary))
		return -ENAMETOOLONG;
	int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	for (size_t done = 0; done < length;) {
		ssize_t n = write(fd, data + done, length - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		done += (size_t)n;
	}
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(temporary, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(temporary);
	return r;
}

/* Prometheus label values escape backslash, double quote and newline. */
static void put_label(FILE *out, const char *value)
{
	for (const char *p = value; *p; p++) {
		if (*p == '\\' || *p == '"')
			fprintf(out, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", out);
		else
			fputc(*p, out);
	}
}

static const struct metric_family {
	const char *name, *type, *help;
} families[] = {
    {"semfs_semaphore_limit", "gauge", "Units the semaphore has."},
    {"semfs_semaphore_value", "gauge", "Units free now."},
    {"semfs_semaphore_in_use", "gauge", "Units taken now (limit - value)."},
    {"semfs_semaphore_waiting", "gauge", "Requests queued for a unit."},
    {"semfs_semaphore_grants_total", "counter", "Units granted since semfs started."},
    {"semfs_semaphore_timeouts_total", "counter", "Waits that timed out since semfs started."},
};

struct prometheus {
	FILE *out[sizeof(families) / sizeof(families[0])]; /* one stream per family */
};

static void put_metric(void *context, const struct store_metric *metric)
{
	struct prometheus *prometheus = context;
	const uint64_t values[] = {
	    metric->limit,   (uint64_t)metric->value, metric->limit - (uint64_t)metric->value,
	    metric->waiting, metric->grants,	      metric->timeouts,
	};
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		fprintf(prometheus->out[i], "%s{name=\"", families[i].name);
		put_label(prometheus->out[i], metric->path);
		fprintf(prometheus->out[i], "\"} %" PRIu64 "\n", values[i]);
	}
}

static int prometheus_text(struct store *store, char **text, size_t *length)
{
	struct prometheus prometheus;
	char *parts[sizeof(families) / sizeof(families[0])] = {0};
	size_t sizes[sizeof(families) / sizeof(families[0])] = {0};
	struct store_totals totals;
	int r = 0;
	FILE *out = open_memstream(text, length);

	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		prometheus.out[i] = open_memstream(&parts[i], &sizes[i]);
		if (!prometheus.out[i])
			r = -ENOMEM;
	}
	if (r == 0)
		store_metrics(store, &stats_reader, put_metric, &prometheus, &totals);
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		if (prometheus.out[i] && fclose(prometheus.out[i]) != 0)
			r = -ENOMEM;
		if (r == 0)
			fprintf(out, "# HELP %s %s\n# TYPE %s %s\n%s", families[i].name,
				families[i].help, families[i].name, families[i].type, parts[i]);
		free(parts[i]);
	}
	if (r == 0)
		fprintf(out,
			"# HELP semfs_semaphores Semaphores that exist now.\n"
			"# TYPE semfs_semaphores gauge\nsemfs_semaphores %zu\n"
			"# HELP semfs_grants_total Units granted since semfs started.\n"
			"# TYPE semfs_grants_total counter\nsemfs_grants_total %" PRIu64 "\n"
			"# HELP semfs_timeouts_total Waits that timed out since semfs started.\n"
			"# TYPE semfs_timeouts_total counter\nsemfs_timeouts_total %" PRIu64 "\n",
			totals.semaphores, totals.grants, totals.timeouts);
	struct cluster_health health;
	cluster_store_health(store, &health);
	if (r == 0 && health.endpoints)
		fprintf(out,
			"# HELP semfs_cluster_endpoints etcd endpoints configured.\n"
			"# TYPE semfs_cluster_endpoints gauge\nsemfs_cluster_endpoints %d\n"
			"# HELP semfs_cluster_endpoints_reachable Endpoints that answered their "
			"last request.\n"
			"# TYPE semfs_cluster_endpoints_reachable gauge\n"
			"semfs_cluster_endpoints_reachable %d\n"
			"# HELP semfs_cluster_lease_age_seconds Since this host's lease was last "
			"renewed.\n"
			"# TYPE semfs_cluster_lease_age_seconds gauge\n"
			"semfs_cluster_lease_age_seconds %.3f\n"
			"# HELP semfs_cluster_watch_lag_revisions Revisions etcd has shown that "
			"this host has not applied yet.\n"
			"# TYPE semfs_cluster_watch_lag_revisions gauge\n"
			"semfs_cluster_watch_lag_revisions %" PRId64 "\n"
			"# HELP semfs_cluster_revision The etcd revision this host has applied.\n"
			"# TYPE semfs_cluster_revision gauge\nsemfs_cluster_revision %" PRId64 "\n"
			"# HELP semfs_cluster_lease_lost_total Times etcd dropped this host's "
			"lease.\n"
			"# TYPE semfs_cluster_lease_lost_total counter\n"
			"semfs_cluster_lease_lost_total %" PRIu64 "\n"
			"# HELP semfs_cluster_watch_reopened_total Times the watch had to be "
			"opened again.\n"
			"# TYPE semfs_cluster_watch_reopened_total counter\n"
			"semfs_cluster_watch_reopened_total %" PRIu64 "\n",
			health.endpoints, health.reachable, health.lease_age, health.watch_lag,
			health.revision, health.lease_lost, health.watch_reopened);
	if (fclose(out) != 0 && r == 0)
		r = -ENOMEM;
	if (r < 0) {
		free(*text);
		*text = NULL;
	}
	return r;
}

/* ACE's own shape: `name: count` for each defined semaphore, count being
 * the units in use, the name as ACE clients spell it. */
static void put_ace_line(void *context, const struct store_metric *metric)
{
	char name[NAME_MAX_LENGTH + 1];
	if (!metric->defined ||
	    name_decode(metric->path, strlen(metric->path), name, sizeof(name)) < 0)
		return;
	fprintf(context, "%s: %" PRIu64 "\n", name,
		(uint64_t)metric->limit - (uint64_t)(metric->value < 0 ? 0 : metric->value));
}

static int ace_status_text(struct store *store, char **text, size_t *length)
{
	struct store_totals totals;
	FILE *out = open_memstream(text, length);

	if (!out)
		return -ENOMEM;
	store_metrics(store, &stats_reader, put_ace_line, out, &totals);
	if (fclose(out) != 0) {
		free(*text);
		*text = NULL;
		return -ENOMEM;
	}
	return 0;
}

int stats_write(struct store *store, const char *directory, enum stats_format format)
{
	char *text = NULL;
	size_t length = 0;
	int r = format == STATS_FORMAT_ACE
		    ? ace_status_text(store, &text, &length)
		    : report_status_text(store, &stats_reader, &text, &length);

	if (r == 0)
		r = write_atomically(directory, STATS_STATUS_FILE, text, length);
	free(text);
	text = NULL;
	if (r == 0)
		r = prometheus_text(store, &text, &length);
	if (r == 0)
		r = write_atomically(directory, STATS_PROMETHEUS_FILE, text, length);
	free(text);
	return r;
}

static int make_directories(const char *directory)
{
	char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s", directory) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = saved;
		if (!saved)
			return 0;
	}
}

int stats_open(struct stats **out, struct store *store, const char *directory,
	       enum stats_format format, char *error, size_t error_size)
{
	int r = make_directories(directory);

	if (r == 0)
		r = stats_write(store, directory, format);
	if (r < 0) {
		snprintf(error, error_size, "stats_dir %s: %s", directory, strerror(-r));
		return r;
	}
	struct stats *stats = calloc(1, sizeof(*stats));
	if (!stats) {
		snprintf(error, error_size, "out of memory");
		return -ENOMEM;
	}
	stats->store = store;
	stats->format = format;
	snprintf(stats->directory, sizeof(stats->directory), "%s", directory);
	pthread_mutex_init(&stats->lock, NULL);
	clock_condition_init(&stats->wake);
	*out = stats;
	return 0;
}

static void *stats_main(void *argument)
{
	struct stats *stats = argument;
	bool complained = false;

	pthread_setname_np(pthread_self(), "semfs-stats");
	pthread_mutex_lock(&stats->lock);
	for (;;) {
		/* At least once a second, as ACE does: the files' mtime says
		 * semfs is alive. */
		struct timespec due = clock_after(CLOCK_MONOTONIC, STATS_MAX_INTERVAL);
		while (!stats->dirty && !stats->stopping &&
		       pthread_cond_timedwait(&stats->wake, &stats->lock, &due) != ETIMEDOUT)
			;
		if (stats->stopping)
			break;
		stats->dirty = false;
		pthread_mutex_unlock(&stats->lock);
		int r = stats_write(stats->store, stats->directory, stats->format);
		if (r < 0 && !complained)
			log_warnx("stats_dir %s: %s", stats->directory, strerror(-r));
		complained = r < 0;
		/* Pace: bursts of changes cost one rewrite per interval. */
		struct timespec until = clock_after(CLOCK_MONOTONIC, STATS_MIN_INTERVAL);
		pthread_mutex_lock(&stats->lock);
		while (!stats->stopping &&
		       pthread_cond_timedwait(&stats->wake, &stats->lock, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&stats->lock);
	return NULL;
}

int stats_start(struct stats *stats)
{
	int r = thread_start(&stats->thread, stats_main, stats);

	if (r < 0)
		return r;
	stats->running = true;
	return 0;
}

void stats_changed(struct stats *stats)
{
	pthread_mutex_lock(&stats->lock);
	if (!stats->dirty) {
		stats->dirty = true;
		pthread_cond_signal(&stats->wake);
	}
	pthread_mutex_unlock(&stats->lock);
}

void stats_close(struct stats *stats)
{
	if (!stats)
		return;
	pthread_mutex_lock(&stats->lock);
	stats->stopping = true;
	pthread_cond_signal(&stats->wake);
	pthread_mutex_unlock(&stats->lock);
	if (stats->running)
		pthread_join(stats->thread, NULL);
	(void)stats_write(stats->store, stats->directory, stats->format); /* the final state */
	pthread_cond_destroy(&stats->wake);
	pthread_mutex_destroy(&stats->lock);
	free(stats);
}
