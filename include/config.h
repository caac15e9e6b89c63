/* config.h: semfs's settings, their built-in defaults and the INI loader.
 * Three sections: [semfs], ACE's own [service_network_semaphore], which
 * loads unchanged (its module/class/description keys are accepted silently),
 * and [cluster] (etcd: the same semaphores on many hosts). */
#ifndef SEMFS_CONFIG_H
#define SEMFS_CONFIG_H

#include "allow.h"
#include "name.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define CONFIG_HOST_MAX		256
#define CONFIG_ENDPOINTS_MAX	16
#define CONFIG_CLUSTER_HOST_MAX 64

/* `semaphore_NAME = LIMIT`: exists from start-up, cannot be deleted. */
struct config_semaphore {
	char name[NAME_MAX_LENGTH + 1];
	unsigned limit;
};

struct config {
	/* [semfs] */
	char state_dir[PATH_MAX]; /* backing files: one per semaphore */
	unsigned default_limit;	  /* limit of a semaphore created without one */
	size_t journal_max;	  /* bytes of journal before it starts over */
	unsigned max_connections; /* open network connections at once */
	unsigned idle_timeout;	  /* s: a connection holding, awaiting, watching nothing */
	unsigned request_timeout; /* s: to finish a request line once begun */
	/* Who network peers are: they act as network_user, for the same
	 * permission checks the kernel makes in the mount; what they make gets
	 * network_mode. admin_ipv4 peers act as semfs's own user instead. */
	char network_user[CONFIG_HOST_MAX];
	uid_t network_uid;
	gid_t network_gid;
	unsigned network_mode;
	struct allow_list admins;

	/* [service_network_semaphore] */
	bool net_enabled;
	char bind_address[CONFIG_HOST_MAX]; /* dotted IPv4 */
	unsigned bind_port;
	char remote_address[CONFIG_HOST_MAX]; /* for clients (msem) */
	unsigned remote_port;
	struct allow_list allowed;
	char stats_dir[PATH_MAX]; /* "" for none; made absolute by config_load */
	bool stats_dir_relative;  /* it was given relative: ACE would read it otherwise */
	bool stats_ace_format;	  /* stats_format = ace: semaphore.status as ACE writes it */
	struct config_semaphore *defined;
	size_t defined_count;

	/* [cluster]: etcd holds the semaphores (cluster mode) once it names
	 * endpoints; cluster_section: the section was there at all. */
	bool cluster_section;
	char cluster_endpoints[CONFIG_ENDPOINTS_MAX][CONFIG_HOST_MAX]; /* http(s)://host:port */
	int cluster_endpoint_count;
	char cluster_prefix[CONFIG_HOST_MAX];	    /* keys live below it: "/semfs/" */
	char cluster_host[CONFIG_CLUSTER_HOST_MAX]; /* this host's name: gethostname() */
	unsigned cluster_lease_ttl;		    /* s: a dead host's acquire units come back */
	unsigned cluster_request_timeout_ms;	    /* an etcd call's whole life */
	char cluster_ca_file[PATH_MAX], cluster_cert_file[PATH_MAX], cluster_key_file[PATH_MAX];
	bool cluster_prefer_leader; /* calls and the watch go to etcd's leader */
};

#define CONFIG_JOURNAL_MIN 256
#define CONFIG_JOURNAL_MAX (64u << 20)
#define CONFIG_PORT	   53559

/* Warnings (unknown keys, malformed lines) go here, one message each. */
typedef void config_warning_fn(const char *message);

/* Built-in defaults; state_dir from /run, $XDG_RUNTIME_DIR or /tmp. The
 * network listens on 127.0.0.1:53559 and allows 127.0.0.0/8 only. */
void config_defaults(struct config *config);

/* Read an INI file over the current settings. Returns 0, or -1 with the first
 * bad value (as "FILE:LINE: message") in `error`; then `config` may be partly
 * updated and must not be used but for config_free(). */
int config_load(struct config *config, const char *path, config_warning_fn *warn, char *error,
		size_t error_size);

void config_free(struct config *config);

/* After the last config_load(): what only the whole configuration can show
 * (a [cluster] section without endpoints). 0, or -1 with the reason. */
int config_check(const struct config *config, char *error, size_t error_size);

#endif
