/* main.c: the semfs daemon: options, configuration, then the store, the
 * mount, the network server and the stats writer, in that order, torn down
 * in reverse. */
#include "cluster.h"
#include "config.h"
#include "log.h"
#include "mount.h"
#include "server.h"
#include "stats.h"
#include "store.h"

#include <fuse_lowlevel.h>
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <grp.h>
#include <sys/stat.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#define CONFIG_FILES_MAX 16

struct semfs_options {
	/* -c may be repeated: later files override earlier ones, as ACE
	 * merges its configuration files. */
	char *configs[CONFIG_FILES_MAX];
	size_t config_count;
	bool too_many_configs;
	int check_only;
	int no_mount; /* the TCP front-ends alone: hosts and containers without /dev/fuse */
	int nonempty; /* -o nonempty: mount over a directory's files, knowingly */
};

enum { KEY_CONFIG, KEY_NONEMPTY };

static const struct fuse_opt semfs_option_table[] = {
    FUSE_OPT_KEY("-c ", KEY_CONFIG),
    FUSE_OPT_KEY("--config=", KEY_CONFIG),
    FUSE_OPT_KEY("config=", KEY_CONFIG),
    {"--check", offsetof(struct semfs_options, check_only), 1},
    {"--no-mount", offsetof(struct semfs_options, no_mount), 1},
    FUSE_OPT_KEY("nonempty", KEY_NONEMPTY),
    FUSE_OPT_END,
};

/* libfuse hands over "-cFILE", "--config=FILE" or "config=FILE". */
static int take_option(void *data, const char *argument, int key, struct fuse_args *args)
{
	struct semfs_options *options = data;
	(void)args;

	if (key == KEY_NONEMPTY) { /* libfuse 3 dropped it: ours to check */
		options->nonempty = 1;
		return 0;
	}
	if (key != KEY_CONFIG)
		return 1; /* keep it for libfuse */
	const char *file = strncmp(argument, "--config=", 9) == 0 ? argument + 9
			   : strncmp(argument, "config=", 7) == 0 ? argument + 7
								  : argument + 2;
	if (options->config_count == CONFIG_FILES_MAX) {
		options->too_many_configs = true;
		return 0;
	}
	/* libfuse frees `argument` when it joined "-c" and "FILE" for us. */
	options->configs[options->config_count] = strdup(file);
	if (!options->configs[options->config_count])
		return -1;
	options->config_count++;
	return 0;
}

static void usage(const char *program)
{
	printf("usage: %s [-f] [-d] [-c CONFIG]... [-o OPTIONS] [SOURCE] MOUNTPOINT\n"
	       "       %s --no-mount [-f] [-c CONFIG]...\n"
	       "\n"
	       "Mount a filesystem whose files are System V semaphores.\n"
	       "\n"
	       "semfs options:\n"
	       "    -c CONFIG, --config=CONFIG, -o config=CONFIG (repeatable: later files win)\n"
	       "                           INI configuration (default: built-in defaults)\n"
	       "    --check                check the configuration, print 'configuration OK'\n"
	       "    --no-mount             serve the network dialects only: no MOUNTPOINT, no\n"
	       "                           /dev/fuse needed (containers)\n"
	       "    -f                     stay in the foreground, log to stderr\n"
	       "    -d                     debug: foreground, libfuse request tracing\n"
	       "    -h, --help             this text\n"
	       "    -V, --version          print the version\n"
	       "    SOURCE                 ignored (mount(8) passes it; see semfs(8), fstab)\n"
	       "\n"
	       "    -o OPTION[,OPTION...]  mount options:\n"
	       "        allow_other        let other users in (root may; others need\n"
	       "                           user_allow_other in /etc/fuse.conf)\n"
	       "        allow_root         let root in besides the owner\n"
	       "        auto_unmount       unmount when semfs dies\n"
	       "        nonempty           mount over a directory that holds files\n"
	       "        config=CONFIG      as -c\n"
	       "\n"
	       "fstab: semfs /mnt/sem fuse.semfs defaults,config=/etc/semfs.ini 0 0\n",
	       program, program);
}

/* Who hears of a change to a semaphore. */
struct observers {
	struct mount *mount;
	struct server *server;
	struct stats *stats;
};

static void changed(void *context, uint64_t ino, const char *path, enum store_change change)
{
	struct observers *observers = context;

	if (observers->mount)
		mount_changed(observers->mount, ino, path, change);
	if (observers->server)
		server_changed(observers->server);
	if (observers->stats)
		stats_changed(observers->stats);
}

/* Each connection is a descriptor: a soft limit of 1024 would cap the
 * server far below max_connections, so take what the hard limit allows. */
static void raise_file_limit(unsigned max_connections)
{
	struct rlimit files;
	rlim_t wanted = (rlim_t)max_connections + 256;

	if (getrlimit(RLIMIT_NOFILE, &files) < 0 || files.rlim_cur >= wanted)
		return;
	files.rlim_cur = files.rlim_max < wanted ? files.rlim_max : wanted;
	if (setrlimit(RLIMIT_NOFILE, &files) < 0 || files.rlim_cur < wanted)
		log_info("open files limited to %llu: fewer than max_connections = %u",
			 (unsigned long long)files.rlim_cur, max_connections);
}

static void config_warning(const char *message)
{
	log_warnx("%s", message);
}

/* Settings an ACE operator reads one way and semfs another: said once at
 * start-up, so that nobody learns it from a refused client. */
static void log_ace_differences(const struct config *config)
{
	if (config->net_enabled && !allow_admits_all(&config->allowed))
		log_info("allowed_ipv4 is enforced: peers outside it are refused (ACE ignores "
			 "the list)");
	if (config->stats_dir_relative)
		log_info("stats_dir is relative: it lands under state_dir, in %s (ACE puts it "
			 "under its data_dir)",
			 config->stats_dir);
}

/* The mount point as given: the last argument that is no option's. */
static const char *last_positional(const struct fuse_args *args)
{
	const char *found = NULL;
	for (int i = 1; i < args->argc; i++) {
		if (strcmp(args->argv[i], "-o") == 0) {
			i++;
			continue;
		}
		if (args->argv[i][0] != '-')
			found = args->argv[i];
	}
	return found;
}

/* Whether `path` is a mount point of a FUSE filesystem; its type in `type`. */
static bool is_fuse_mount(const char *path, char *type, size_t size)
{
	char resolved[PATH_MAX], line[PATH_MAX * 2];
	FILE *mounts = fopen("/proc/self/mounts", "re");
	bool found = false;

	if (!realpath(path, resolved))
		snprintf(resolved, sizeof(resolved), "%s", path);
	while (mounts && fgets(line, sizeof(line), mounts)) {
		char point[PATH_MAX], kind[64];
		if (sscanf(line, "%*s %4095s %63s", point, kind) == 2 &&
		    strcmp(point, resolved) == 0 && strncmp(kind, "fuse", 4) == 0) {
			snprintf(type, size, "%s", kind);
			found = true;
		}
	}
	if (mounts)
		fclose(mounts);
	return found;
}

/* sshfs and mount(8) refuse these too: each refusal says what to do. */
static int check_mount_point(const char *path, bool nonempty_ok, char *error, size_t size)
{
	struct stat status;
	char type[64];

	if (stat(path, &status) < 0) {
		if (errno == ENOTCONN)
			snprintf(error, size,
				 "mount point %s is a FUSE mount whose daemon is gone: "
				 "fusermount3 -u %s first",
				 path, path);
		else if (errno == ENOENT)
			snprintf(error, size, "mount point %s does not exist: mkdir -p %s first",
				 path, path);
		else
			snprintf(error, size, "mount point %s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(status.st_mode)) {
		snprintf(error, size, "mount point %s is not a directory: choose a directory",
			 path);
		return -1;
	}
	if (is_fuse_mount(path, type, sizeof(type))) {
		snprintf(error, size,
			 "%s is already a FUSE mount (%s): unmount it first (fusermount3 -u %s)",
			 path, type, path);
		return -1;
	}
	DIR *directory = opendir(path);
	if (!directory) {
		snprintf(error, size, "mount point %s: %s", path, strerror(errno));
		return -1;
	}
	const char *found = NULL;
	for (struct dirent *entry; !found && (entry = readdir(directory));)
		if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0)
			found = entry->d_name;
	char first[256] = "";
	if (found)
		snprintf(first, sizeof(first), "%s", found);
	closedir(directory);
	if (found && !nonempty_ok) {
		snprintf(error, size,
			 "mount point %s is not empty (it holds %s): the mount would hide its "
			 "files; choose an empty directory, or pass -o nonempty to do it anyway",
			 path, first);
		return -1;
	}
	return 0;
}

/* Going to the background as fuse_daemonize does, but with the word from the
 * child later: the parent exits only when the child says it is serving
 * (status 0), or with 1 when it dies first, so every start-up failure is
 * printed on the terminal and reaches the exit status. */
static int daemon_fork(int *ready_fd)
{
	int pipe_fds[2];

	if (pipe2(pipe_fds, O_CLOEXEC) < 0)
		return -1;
	pid_t child = fork();
	if (child < 0)
		return -1;
	if (child > 0) {
		char status = 1;
		close(pipe_fds[1]);
		while (read(pipe_fds[0], &status, 1) < 0 && errno == EINTR)
			;
		_exit(status); /* EOF without a word: the child failed, and said why */
	}
	close(pipe_fds[0]);
	if (setsid() < 0)
		log_warn("setsid");
	*ready_fd = pipe_fds[1];
	return 0;
}

/* The child is serving: let the parent go, and leave the terminal. */
static void daemon_ready(int ready_fd)
{
	if (ready_fd < 0)
		return;
	if (chdir("/") < 0)
		log_warn("chdir /");
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		close(null);
	}
	char status = 0;
	if (write(ready_fd, &status, 1) < 0)
		log_warn("telling the parent");
	close(ready_fd);
}

/* --no-mount: no FUSE loop to return on a signal; the main thread waits
 * for one instead. The signals are blocked before any thread starts. */
static void block_stop_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, set, NULL);
}

/* Linux >= 6.15 can abort a FUSE request that outlives a timeout; waits
 * must end before that. Returns the wait cap in seconds, 0 for none. */
static double wait_cap(void)
{
	static const char *const files[] = {"/proc/sys/fs/fuse/max_request_timeout",
					    "/proc/sys/fs/fuse/default_request_timeout"};
	double cap = 0;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		FILE *file = fopen(files[i], "re");
		unsigned long seconds = 0;
		if (!file)
			continue;
		if (fscanf(file, "%lu", &seconds) == 1 && seconds > 0) {
			double safe = seconds > 10 ? (double)seconds - 5 : (double)seconds / 2;
			if (cap == 0 || safe < cap)
				cap = safe;
		}
		fclose(file);
	}
	return cap;
}

/* mount(8) runs `semfs SOURCE MOUNTPOINT -o OPTIONS` (via mount.fuse3, for
 * fstab type fuse.semfs): with two positional arguments, the first is the
 * source, which names nothing for semfs and is dropped. */
static int drop_mount_source(int argc, char *argv[])
{
	int positional[3], count = 0;

	for (int i = 1; i < argc && count < 3; i++) {
		if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "-c") == 0) {
			i++; /* its value */
			continue;
		}
		if (argv[i][0] != '-')
			positional[count++] = i;
	}
	if (count != 2)
		return argc;
	for (int i = positional[0]; i < argc - 1; i++)
		argv[i] = argv[i + 1];
	argv[argc - 1] = NULL;
	return argc - 1;
}

/* What network peers act as: network_user with its groups. */
static const struct store_caller *network_caller(const struct config *config,
						 struct store_caller *caller)
{
	static gid_t groups[256];
	int count = 256;

	if (getgrouplist(config->network_user, config->network_gid, groups, &count) < 0)
		count = 0; /* a bare uid, or too many groups: the primary one only */
	*caller = (struct store_caller){
	    .uid = config->network_uid,
	    .gid = config->network_gid,
	    .groups = groups,
	    .group_count = (size_t)count,
	};
	return caller;
}

static void run_server(void *server)
{
	server_run(server);
}

/* In cluster mode the cluster's loop thread runs the server too: a
 * request goes to etcd and its answer back to the client with no thread
 * woken between (each wake-up costs 50-300 us on a VM, two per request).
 * Otherwise the server has a thread of its own. */
static int start_server(struct server *server, struct store *store, bool *driven)
{
	*driven = store_drive(store, server_fd(server), run_server, server) == 0;
	return *driven ? 0 : server_start(server);
}

/* [cluster]: etcd holds the semaphores. Start-up waits until the cluster
 * answered and the tree is the cluster's; a cluster that does not answer is
 * a start-up failure with its reason, never a quiet single host. */
static int attach_cluster(struct store *store, const struct config *config)
{
	struct cluster_options options = {
	    .etcd = {.endpoint_count = config->cluster_endpoint_count,
		     .request_timeout_ms = (int)config->cluster_request_timeout_ms,
		     .ca_file = config->cluster_ca_file[0] ? config->cluster_ca_file : NULL,
		     .cert_file = config->cluster_cert_file[0] ? config->cluster_cert_file : NULL,
		     .key_file = config->cluster_key_file[0] ? config->cluster_key_file : NULL,
		     .listed_order = !config->cluster_prefer_leader},
	    .prefix = config->cluster_prefix,
	    .host = config->cluster_host,
	    .lease_ttl = config->cluster_lease_ttl,
	};
	for (int i = 0; i < config->cluster_endpoint_count; i++)
		options.etcd.endpoints[i] = config->cluster_endpoints[i];
	char lease_file[PATH_MAX + 16], error[1200];
	snprintf(lease_file, sizeof(lease_file), "%s/cluster.lease", config->state_dir);
	options.lease_file = lease_file;
	if (store_attach_cluster(store, &options, error, sizeof(error)) < 0) {
		log_warnx("cluster: %s", error);
		return -1;
	}
	log_info("cluster mode: host %s, %d etcd endpoint%s, keys under %s, lease_ttl %u s",
		 config->cluster_host, config->cluster_endpoint_count,
		 config->cluster_endpoint_count == 1 ? "" : "s", config->cluster_prefix,
		 config->cluster_lease_ttl);
	return 0;
}

int main(int argc, char *argv[])
{
	argc = drop_mount_source(argc, argv);
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct semfs_options options = {0};
	struct fuse_cmdline_opts command_line = {0};
	struct config config;
	static struct store_caller peer, admin; /* read by the server thread until exit */
	struct store *store = NULL;
	struct mount *mount = NULL;
	struct server *server = NULL;
	bool server_driven = false;
	struct stats *stats = NULL;
	static struct observers observers; /* read by store threads until exit */
	char error[512];
	int status = 1;

	log_init("semfs", false, false);
	if (fuse_opt_parse(&args, &options, semfs_option_table, take_option) != 0) {
		fprintf(stderr, "semfs: bad arguments (see semfs --help)\n");
		goto out_args;
	}
	/* libfuse would only say "bad mount point": say what to do instead. */
	const char *named = last_positional(&args);
	if (named && access(named, F_OK) < 0 && errno == ENOENT) {
		fprintf(stderr, "semfs: mount point %s does not exist: mkdir -p %s first\n", named,
			named);
		goto out_args;
	}
	if (fuse_parse_cmdline(&args, &command_line) != 0) {
		fprintf(stderr, "semfs: bad arguments (see semfs --help)\n");
		goto out_args;
	}
	if (command_line.show_help) {
		usage(argv[0]);
		status = 0;
		goto out_args;
	}
	if (command_line.show_version) {
		/* Ours first: libfuse's lines follow, written past stdio. */
		printf("semfs %s\n", SEMFS_VERSION);
		fflush(stdout);
		fuse_lowlevel_version();
		status = 0;
		goto out_args;
	}

	config_defaults(&config);
	if (options.too_many_configs) {
		log_warnx("more than %d configuration files (-c)", CONFIG_FILES_MAX);
		goto out_config;
	}
	for (size_t i = 0; i < options.config_count; i++) {
		if (config_load(&config, options.configs[i], config_warning, error, sizeof(error)) <
		    0) {
			log_warnx("%s", error);
			goto out_config;
		}
	}
	if (config_check(&config, error, sizeof(error)) < 0) {
		log_warnx("%s", error);
		goto out_config;
	}
	if (options.check_only) {
		printf("configuration OK\n");
		status = 0;
		goto out_config;
	}
	if (options.no_mount && command_line.mountpoint) {
		fprintf(stderr,
			"semfs: --no-mount serves the network only: drop the mount point "
			"%s\n",
			command_line.mountpoint);
		status = 2;
		goto out_config;
	}
	if (options.no_mount && !config.net_enabled) {
		fprintf(stderr, "semfs: --no-mount with the network front-end disabled (enabled = "
				"no) would serve nothing\n");
		status = 2;
		goto out_config;
	}
	if (!command_line.mountpoint && !options.no_mount) {
		fprintf(
		    stderr,
		    "usage: semfs [-f] [-d] [-c CONFIG]... [-o OPTIONS] [SOURCE] MOUNTPOINT\n"
		    "       semfs --no-mount [-f] [-c CONFIG]...  (the network front-end only)\n");
		status = 2;
		goto out_config;
	}

	/* Stderr until semfs is in the background: a start-up failure must reach
	 * the terminal, not only a syslog that many hosts lack. */
	log_init("semfs", false, command_line.debug);
	if (command_line.mountpoint && check_mount_point(command_line.mountpoint, options.nonempty,
							 error, sizeof(error)) < 0) {
		log_warnx("%s", error);
		goto out_config;
	}
	if (!options.no_mount) {
		mount = mount_new();
		if (!mount)
			fatalx("out of memory");
	}
	struct store_options store_options = {
	    .state_dir = config.state_dir,
	    .network_uid = config.network_uid,
	    .network_gid = config.network_gid,
	    .network_mode = config.network_mode,
	    .default_limit = config.default_limit,
	    .journal_max = config.journal_max,
	    .max_wait = wait_cap(),
	    .changed = changed,
	    .changed_context = &observers,
	};
	observers.mount = mount;
	admin = (struct store_caller){.uid = geteuid(), .gid = getegid()};
	if (store_open(&store, &store_options, error, sizeof(error)) < 0) {
		log_warnx("state directory %s: %s", config.state_dir, error);
		goto out_mount;
	}
	if (config.cluster_endpoint_count && attach_cluster(store, &config) < 0)
		goto out_store;
	if (store_options.max_wait > 0)
		log_info("the kernel aborts FUSE requests after a timeout: waits end with "
			 "ETIMEDOUT after %.0f s",
			 store_options.max_wait);
	for (size_t i = 0; i < config.defined_count; i++) {
		if (store_define(store, config.defined[i].name, config.defined[i].limit, error,
				 sizeof(error)) < 0) {
			log_warnx("%s", error);
			goto out_store;
		}
	}
	store_defines_done(store);
	/* Sockets and files are opened before daemonizing, so that errors reach
	 * the terminal; threads start after, since fork() keeps none. */
	if (config.net_enabled) {
		raise_file_limit(config.max_connections);
		struct server_options server_options = {
		    .store = store,
		    .bind_address = config.bind_address,
		    .port = config.bind_port,
		    .allowed = &config.allowed,
		    .max_connections = config.max_connections,
		    .idle_timeout = config.idle_timeout,
		    .request_timeout = config.request_timeout,
		    .default_limit = config.default_limit,
		    .peer = network_caller(&config, &peer),
		    .admin = &admin,
		    .admins = &config.admins,
		};
		if (server_open(&server, &server_options, error, sizeof(error)) < 0) {
			log_warnx("%s", error);
			goto out_store;
		}
		observers.server = server;
	}
	if (config.stats_dir[0] &&
	    stats_open(&stats, store, config.stats_dir,
		       config.stats_ace_format ? STATS_FORMAT_ACE : STATS_FORMAT_SEMFS, error,
		       sizeof(error)) < 0) {
		log_warnx("%s", error);
		goto out_store;
	}
	observers.stats = stats;
	/* Mounted last: once the mount shows, the port already accepts. */
	if (mount &&
	    mount_attach(mount, store, &args, command_line.mountpoint, error, sizeof(error)) < 0) {
		log_warnx("%s", error);
		goto out_store;
	}
	sigset_t stop_signals;
	if (!mount)
		block_stop_signals(&stop_signals);
	int ready_fd = -1;
	if (!command_line.foreground && daemon_fork(&ready_fd) < 0) {
		log_warn("cannot go to the background");
		goto out_store;
	}
	if (mount && mount_fork_toucher(mount) < 0)
		goto out_store; /* still on the terminal */
	if (store_start(store) < 0 || (stats && stats_start(stats) < 0) ||
	    (server && start_server(server, store, &server_driven) < 0)) {
		log_warnx("cannot start a thread"); /* still on the terminal */
		goto out_store;
	}
	log_init("semfs", !command_line.foreground, command_line.debug);
	daemon_ready(ready_fd);
	if (mount)
		log_info("mounted on %s, state in %s", command_line.mountpoint, config.state_dir);
	else
		log_info("no mount (--no-mount): the network front-end only, state in %s",
			 config.state_dir);
	log_ace_differences(&config);
	if (server)
		log_info("listening on %s:%u (ACE and native dialects)", config.bind_address,
			 server_port(server));
	/* Under systemd (Type=notify): the mount exists and the port listens,
	 * so `systemctl start` may return. Outside systemd this does nothing. */
	(void)sd_notifyf(0, "READY=1\nSTATUS=%s%s%s", mount ? "mounted on " : "network only",
			 mount ? command_line.mountpoint : "", server ? ", listening" : "");
	if (mount) {
		/* The loop returns 0 after an unmount, the signal's number after
		 * SIGTERM/SIGINT/SIGHUP (both clean), a negative errno on failure. */
		status = mount_run(mount) < 0 ? 1 : 0;
		(void)sd_notify(0, "STOPPING=1");
		log_info("stopping: unmounting %s", command_line.mountpoint);
	} else {
		int signal_number = 0;
		sigwait(&stop_signals, &signal_number);
		(void)sd_notify(0, "STOPPING=1");
		log_info("stopping on signal %d", signal_number);
		status = 0;
	}

out_store:
	/* The server's requests come back before the store cancels the rest;
	 * observers stay allocated until no store thread is left to call them. */
	if (server_driven)
		(void)store_drive(store, -1, NULL, NULL);
	server_stop(server);
	store_shutdown(store);
	stats_close(stats);
	server_free(server);
out_mount:
	mount_destroy(mount);
	store_close(store);
out_config:
	config_free(&config);
out_args:
	free(command_line.mountpoint);
	for (size_t i = 0; i < options.config_count; i++)
		free(options.configs[i]);
	fuse_opt_free_args(&args);
	return status;
}
