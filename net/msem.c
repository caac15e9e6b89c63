/* msem.c: the command-line client. Keeps the classic msem synopsis and
 * works the same on a path inside a semfs mount (commands are writes to the
 * file) and, with -H or SEMFS_HOST, on a remote semfs (native dialect).
 * One file on purpose: a program whose four sections (arguments, local,
 * remote, the actions) all work on its invocation and target; cutting it
 * would only add a private header. */
#include "client.h"
#include "name.h"
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_TIMEOUT	 1
#define EXIT_USAGE	 2
#define EXIT_NO_SUCH	 3
#define EXIT_UNREACHABLE 4
#define EXIT_OTHER	 5
#define LIMIT_MAX	 32767 /* SEMVMX */
/* -x when no unit came in time: EX_TEMPFAIL, which few commands use for
 * themselves; -E CODE chooses another, as flock(1) does. */
#define EXIT_EXEC_BUSY 75

enum action { NONE, CREATE, DELETE, LOCK, UNLOCK, RELAX, FOLLOW, EXEC, STATUS };

struct invocation {
	enum action action;
	const char *verb; /* as the user wrote it, for messages */
	const char *path;
	const char *uid;
	const char *initial; /* create */
	const char *timeout; /* lock, exec */
	char **command;	     /* exec */
	int busy_code;	     /* exec: the exit status when no unit came */
	const char *host;    /* -H, or SEMFS_HOST */
	/* The words after PATH; which is uid, timeout or initial depends on
	 * whether PATH is itself a semaphore (assign_arguments). */
	const char *words[2];
	int word_count;
};

/* Where the semaphore is: a file in a mount, or a name on a server. */
struct target {
	char file[PATH_MAX];   /* local: PATH or PATH/uid */
	char root[PATH_MAX];   /* local: the mount's root */
	char name[PATH_MAX];   /* remote: the name; local: relative to root */
	struct client *client; /* remote */
};

static const char usage_text[] =
    "usage: msem [-H HOST[:PORT]] ACTION ...\n"
    "  -c, --create PATH [uid] [initial]   create (initial: starting value)\n"
    "  -d, --delete PATH [uid]             delete\n"
    "  -l, -p, --lock PATH [uid] [timeout] take a unit, waiting in FIFO order\n"
    "  -u, -v, --unlock PATH [uid]         give a unit back\n"
    "  -u+, -v+, --relax PATH [uid]        hand a unit to every waiter\n"
    "  -f, --follow PATH [uid]             print state lines as they change\n"
    "  -x PATH [timeout] -- COMMAND...     hold a unit while COMMAND runs (PATH is\n"
    "                                      created if missing, as flock(1) does)\n"
    "  -E, --conflict-exit-code CODE       -x's exit status when no unit came\n"
    "                                      in time (default 75)\n"
    "  -s, --status [PATH]                 print status lines\n"
    "  -H, --host HOST[:PORT]              a remote semfs (default: SEMFS_HOST);\n"
    "                                      '-' or a missing PORT: remote_address\n"
    "                                      and remote_port of SEMFS_CONFIG or\n"
    "                                      /etc/semfs.ini (else 127.0.0.1:53559)\n"
    "  -h, --help    -V, --version\n"
    "When PATH is a semaphore, the number after it is the timeout (-l) or\n"
    "the initial value (-c); when PATH is a directory, the word after it is\n"
    "a uid: msem -l nightly 0 tries nightly once, msem -l jobs 0 locks jobs/0.\n"
    "Exit: 0 done, 1 timed out, 2 usage, 3 no such semaphore,\n"
    "      4 cannot reach the mount or server, 5 other failures;\n"
    "      -x: COMMAND's status, or 75 (-E) if no unit came in time.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "msem: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (msem --help for usage)\n");
	return EXIT_USAGE;
}

static int exit_code(int error)
{
	switch (error) {
	case ETIMEDOUT:
	case EAGAIN:
		return EXIT_TIMEOUT;
	case ENOENT:
		return EXIT_NO_SUCH;
	case ENOTCONN:
	case ECONNREFUSED:
	case ECONNRESET:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EPIPE:
		return EXIT_UNREACHABLE;
	default:
		return EXIT_OTHER;
	}
}

/* One line on stderr naming what failed; the exit status for it. */
static int failed(const struct invocation *inv, const struct target *t, int error,
		  const char *detail)
{
	const char *what = t->client ? t->name : t->file;
	const char *reason = strerror(error);

	if (error == ETIMEDOUT || error == EAGAIN)
		reason = inv->timeout && strtod(inv->timeout, NULL) == 0
			     ? "no unit free (timeout 0)"
			     : "timed out";
	if (error == ENOENT)
		reason = "no such semaphore";
	if (error == EOVERFLOW)
		reason = "already at its limit (nothing to unlock)";
	if (detail && *detail && !strstr(reason, detail))
		fprintf(stderr, "msem: %s %s: %s (%s)\n", inv->verb, what, reason, detail);
	else
		fprintf(stderr, "msem: %s %s: %s\n", inv->verb, what, reason);
	return exit_code(error);
}

/* ---- arguments ----------------------------------------------------------- */

static bool valid_uid(const char *uid)
{
	return uid[0] && !strchr(uid, '/') && strcmp(uid, ".") != 0 && strcmp(uid, "..") != 0;
}

static bool valid_timeout(const char *text)
{
	char *end;
	double value = strtod(text, &end);
	return end != text && !*end && isfinite(value) && value >= 0 && value < 1e9;
}

static bool valid_initial(const char *text)
{
	char *end;
	long value = strtol(text, &end, 10);
	return end != text && !*end && value >= 0 && value <= LIMIT_MAX;
}

static const struct {
	const char *flag[4];
	enum action action;
} actions[] = {
    {{"-c", "--create"}, CREATE},	{{"-d", "--delete"}, DELETE},
    {{"-l", "-p", "--lock"}, LOCK},	{{"-u", "-v", "--unlock"}, UNLOCK},
    {{"-u+", "-v+", "--relax"}, RELAX}, {{"-f", "--follow"}, FOLLOW},
    {{"-x", "--exec"}, EXEC},		{{"-s", "--status"}, STATUS},
};

static enum action action_named(const char *flag)
{
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
		for (size_t j = 0; j < 4 && actions[i].flag[j]; j++)
			if (strcmp(flag, actions[i].flag[j]) == 0)
				return actions[i].action;
	return NONE;
}

/* Returns -1 to go on, or an exit status. */
static int parse_arguments(int argc, char **argv, struct invocation *inv)
{
	char **rest = NULL;
	int rest_count = 0, i;

	inv->host = getenv("SEMFS_HOST");
	if (inv->host && !*inv->host)
		inv->host = NULL;
	for (i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			fputs(usage_text, stdout);
			return 0;
		}
		if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
			printf("msem (semfs) %s\n", SEMFS_VERSION);
			return 0;
		}
		if (strcmp(arg, "-H") == 0 || strcmp(arg, "--host") == 0) {
			if (++i == argc)
				return usage_error("%s needs HOST[:PORT]", arg);
			inv->host = argv[i];
			continue;
		}
		if (strncmp(arg, "--host=", 7) == 0) {
			inv->host = arg + 7;
			continue;
		}
		if (strcmp(arg, "-E") == 0 || strcmp(arg, "--conflict-exit-code") == 0) {
			char *end;
			if (++i == argc)
				return usage_error("%s needs a CODE", arg);
			long code = strtol(argv[i], &end, 10);
			if (end == argv[i] || *end || code < 0 || code > 255)
				return usage_error("bad exit code '%s' (0..255)", argv[i]);
			inv->busy_code = (int)code;
			continue;
		}
		enum action action = action_named(arg);
		if (action != NONE) {
			if (inv->action != NONE)
				return usage_error("one action at a time (%s)", arg);
			inv->action = action;
			inv->verb = arg;
			rest = argv + i + 1;
			for (rest_count = 0; i + 1 + rest_count < argc; rest_count++) {
				const char *next = rest[rest_count];
				if (action == EXEC && strcmp(next, "--") == 0)
					break;
				if (next[0] == '-' && next[1] && action_named(next) != NONE)
					break;
				if (strcmp(next, "-H") == 0 || strcmp(next, "--host") == 0 ||
				    strncmp(next, "--host=", 7) == 0 || strcmp(next, "-E") == 0 ||
				    strcmp(next, "--conflict-exit-code") == 0)
					break;
			}
			i += rest_count;
			if (action == EXEC) {
				if (i + 1 >= argc || strcmp(argv[i + 1], "--") != 0)
					return usage_error("%s needs -- COMMAND...", arg);
				if (i + 2 >= argc)
					return usage_error("%s: no COMMAND after --", arg);
				inv->command = argv + i + 2;
				break;
			}
			continue;
		}
		return usage_error("unknown option or argument: %s", arg);
	}
	if (inv->action == NONE)
		return usage_error("%s", "no action given");

	int most = inv->action == CREATE || inv->action == LOCK ? 3
		   : inv->action == EXEC			? 2
		   : inv->action == STATUS			? 1
								: 2;
	if (rest_count > most)
		return usage_error("too many arguments after %s", inv->verb);
	if (rest_count == 0 && inv->action != STATUS)
		return usage_error("%s needs a PATH", inv->verb);
	inv->path = rest_count > 0 ? rest[0] : NULL;
	if (inv->path && !inv->path[0])
		return usage_error("%s", "empty PATH");
	inv->word_count = rest_count > 1 ? rest_count - 1 : 0;
	for (int w = 0; w < inv->word_count; w++)
		inv->words[w] = rest[1 + w];
	return -1;
}

/* PATH [uid] [timeout|initial]: with both words there is no doubt. With
 * one, a number is a timeout (-l) or initial value (-c) unless PATH is a
 * directory: for -l, one holding PATH/WORD; for -c, any. */
static int assign_arguments(struct invocation *inv, bool path_is_semaphore, bool path_is_directory)
{
	const char *first = inv->word_count > 0 ? inv->words[0] : NULL;
	const char *second = inv->word_count > 1 ? inv->words[1] : NULL;

	switch (inv->action) {
	case EXEC:
		inv->timeout = first;
		break;
	case LOCK:
		if (!second && first && valid_timeout(first) &&
		    (path_is_semaphore || !path_is_directory)) {
			inv->timeout = first;
		} else {
			inv->uid = first;
			inv->timeout = second;
		}
		break;
	case CREATE:
		if (!second && first && !path_is_directory && valid_initial(first)) {
			inv->initial = first;
		} else {
			inv->uid = first;
			inv->initial = second;
		}
		break;
	case STATUS:
	case NONE:
		break;
	default:
		inv->uid = first;
		break;
	}
	if (inv->uid && !valid_uid(inv->uid))
		return usage_error("bad uid '%s' (one path component)", inv->uid);
	if (inv->timeout && !valid_timeout(inv->timeout))
		return usage_error("bad timeout '%s' (seconds, >= 0)", inv->timeout);
	if (inv->initial && !valid_initial(inv->initial))
		return usage_error("bad initial value '%s' (0..32767)", inv->initial);
	return -1;
}

/* ---- local: a path in a mount -------------------------------------------- */

static bool is_semfs_mount(const char *dir)
{
	char line[PATH_MAX * 2];
	FILE *mounts = fopen("/proc/self/mounts", "re");
	bool found = false;

	while (mounts && !found && fgets(line, sizeof(line), mounts)) {
		char source[256], point[PATH_MAX], type[64];
		if (sscanf(line, "%255s %4095s %63s", source, point, type) != 3)
			continue;
		/* /proc/self/mounts escapes spaces as \040: paths with them
		 * simply do not match, and the error says so. */
		found = strcmp(point, dir) == 0 && strcmp(type, "fuse.semfs") == 0;
	}
	if (mounts)
		fclose(mounts);
	return found;
}

/* Fill t->root and t->name from `file`. -errno (ENOTCONN: not a mount). */
static int find_mount(struct target *t, const char *file)
{
	char dir[PATH_MAX], tail[PATH_MAX] = "", resolved[PATH_MAX], full[PATH_MAX];
	struct stat here, up;

	/* The nearest part that exists (the rest may be created yet), resolved,
	 * and what follows it. */
	snprintf(dir, sizeof(dir), "%s", file);
	while (!realpath(dir, resolved)) {
		if (errno == ENOTCONN)
			return -ENOTCONN;
		char *slash = strrchr(dir, '/');
		const char *last = slash ? slash + 1 : dir;
		size_t last_length = strlen(last), tail_length = strlen(tail);
		if (last_length + 1 + tail_length >= sizeof(tail))
			return -ENAMETOOLONG;
		/* tail = last "/" tail */
		memmove(tail + last_length + (tail_length ? 1 : 0), tail, tail_length + 1);
		memcpy(tail, last, last_length);
		if (tail_length)
			tail[last_length] = '/';
		if (!slash)
			snprintf(dir, sizeof(dir), ".");
		else if (slash == dir)
			dir[1] = '\0';
		else
			*slash = '\0';
	}
	size_t length = strlen(resolved), tail_length = strlen(tail);
	if (length + 1 + tail_length >= sizeof(full))
		return -ENAMETOOLONG;
	memcpy(full, resolved, length + 1);
	if (tail_length) {
		if (full[length - 1] != '/')
			full[length++] = '/';
		memcpy(full + length, tail, tail_length + 1);
	}
	if (stat(resolved, &here) < 0)
		return -errno;
	if (!S_ISDIR(here.st_mode)) {
		char *slash = strrchr(resolved, '/');
		*(slash == resolved ? slash + 1 : slash) = '\0';
		if (stat(resolved, &here) < 0)
			return -errno;
	}
	/* Up while the parent is on the same filesystem. */
	while (strcmp(resolved, "/") != 0) {
		char parent[PATH_MAX];
		memcpy(parent, resolved, strlen(resolved) + 1);
		char *slash = strrchr(parent, '/');
		*(slash == parent ? slash + 1 : slash) = '\0';
		if (stat(parent, &up) < 0 || up.st_dev != here.st_dev)
			break;
		memcpy(resolved, parent, strlen(parent) + 1);
	}
	if (!is_semfs_mount(resolved))
		return -ENOTCONN;
	memcpy(t->root, resolved, strlen(resolved) + 1);
	/* The name, as the status file spells it: relative to the root. */
	size_t root_length = strcmp(t->root, "/") == 0 ? 0 : strlen(t->root);
	const char *name = full + root_length;
	while (*name == '/')
		name++;
	snprintf(t->name, sizeof(t->name), "%s", name);
	return 0;
}

static int write_command(const char *file, const char *command)
{
	int fd = open(file, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, command, strlen(command));
	int r = n < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* Print the status lines of `name` (or all, or a directory's) from the
 * mount's semaphore.status. -ENOENT when none matched. */
static int local_status(const struct target *t, const char *name)
{
	char path[PATH_MAX + 32], line[8192];
	size_t length = strlen(name);
	int matched = 0;

	snprintf(path, sizeof(path), "%s/semaphore.status", t->root);
	FILE *status = fopen(path, "re");
	if (!status)
		return -errno;
	while (fgets(line, sizeof(line), status)) {
		if (length == 0 ||
		    (strncmp(line, name, length) == 0 &&
		     (strncmp(line + length, ": ", 2) == 0 || line[length] == '/'))) {
			fputs(line, stdout);
			matched++;
		}
	}
	fclose(status);
	fflush(stdout);
	return matched || length == 0 ? 0 : -ENOENT;
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int signal_number)
{
	(void)signal_number;
	interrupted = 1;
}

/* Journal lines, printed as they come; a gap in their seq= numbers (lines
 * dropped past journal_max before we read them) is said, never hidden. */
struct follower {
	uint64_t last_seq; /* 0: none seen yet */
	char partial[8192];
	size_t partial_length;
};

static void follow_line(struct follower *f, const char *line, size_t length)
{
	/* The daemon's own "dropped" line: our count below says it exactly. */
	if (length >= 4 && memcmp(line, "... ", 4) == 0)
		return;
	const char *seq = NULL;
	for (const char *p = line; (p = memmem(p, (size_t)(line + length - p), " seq=", 5)); p += 5)
		seq = p + 5;
	if (seq) {
		uint64_t number = strtoull(seq, NULL, 10);
		if (f->last_seq && number > f->last_seq + 1)
			printf("... %" PRIu64 " lines skipped\n", number - f->last_seq - 1);
		f->last_seq = number;
	}
	fwrite(line, 1, length, stdout);
	putchar('\n');
}

static void follow_bytes(struct follower *f, const char *data, size_t length)
{
	for (size_t i = 0; i < length; i++) {
		if (data[i] != '\n') {
			if (f->partial_length < sizeof(f->partial) - 1)
				f->partial[f->partial_length++] = data[i];
			continue;
		}
		f->partial[f->partial_length] = '\0'; /* strtoull stops here */
		follow_line(f, f->partial, f->partial_length);
		f->partial_length = 0;
	}
	fflush(stdout);
}

/* Current state, then every journal line as it is appended. The file only
 * grows (semfs drops old lines without moving offsets). */
static int local_follow(const struct target *t)
{
	int fd = open(t->file, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char buffer[8192];
	struct follower follower = {0};

	if (fd < 0)
		return -errno;
	int r = local_status(t, t->name);
	if (r == 0 && fstat(fd, &st) < 0)
		r = -errno;
	if (r == 0 && lseek(fd, st.st_size, SEEK_SET) < 0)
		r = -errno;
	if (r == 0) { /* the newest line's seq=, so that a first gap shows too */
		char tail[1024];
		off_t from =
		    st.st_size > (off_t)sizeof(tail) - 1 ? st.st_size - (off_t)sizeof(tail) + 1 : 0;
		ssize_t n = pread(fd, tail, sizeof(tail) - 1, from);
		tail[n > 0 ? n : 0] = '\0';
		const char *seq = NULL;
		for (const char *p = tail; (p = strstr(p, " seq=")); p += 5)
			seq = p + 5;
		if (seq)
			follower.last_seq = strtoull(seq, NULL, 10);
	}
	while (r == 0 && !interrupted) {
		struct pollfd ready = {.fd = fd, .events = POLLIN};
		if (poll(&ready, 1, 1000) < 0) {
			if (errno != EINTR)
				r = -errno;
			continue;
		}
		ssize_t n = read(fd, buffer, sizeof(buffer));
		if (n < 0) {
			r = errno == EINTR ? 0 : -errno;
			continue;
		}
		if (n > 0) {
			follow_bytes(&follower, buffer, (size_t)n);
			continue;
		}
		if (fstat(fd, &st) < 0 || st.st_nlink == 0)
			break; /* deleted: its last line said so */
	}
	close(fd);
	return r;
}

/* ---- remote: a name on a server ------------------------------------------- */

/* remote_address and remote_port of SEMFS_CONFIG or /etc/semfs.ini, if it
 * can be read; else 127.0.0.1:53559. */
static void configured_remote(char *host, size_t size, unsigned *port)
{
	const char *file = getenv("SEMFS_CONFIG");
	struct config config;
	char error[512];

	if (!file)
		file = "/etc/semfs.ini";
	config_defaults(&config);
	if (access(file, R_OK) == 0)
		(void)config_load(&config, file, NULL, error, sizeof(error));
	snprintf(host, size, "%s", config.remote_address);
	*port = config.remote_port ? config.remote_port : CLIENT_DEFAULT_PORT;
	config_free(&config);
}

static int remote(struct client *client, char *reply, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int remote(struct client *client, char *reply, size_t size, const char *fmt, ...)
{
	char request[PATH_MAX + 64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(request, sizeof(request), fmt, ap);
	va_end(ap);
	return client_request(client, request, reply, size);
}

static int remote_follow(struct target *t, char *reply, size_t size)
{
	char line[8192];
	int r = remote(t->client, reply, size, "status %s", t->name);
	if (r < 0)
		return r;
	printf("%s\n", reply);
	fflush(stdout);
	r = remote(t->client, reply, size, "watch %s", t->name);
	struct follower follower = {0};
	const char *seq = strstr(reply, " seq="); /* the newest line's, so a gap shows */
	if (seq)
		follower.last_seq = strtoull(seq + 5, NULL, 10);
	while (r == 0 && !interrupted) {
		int n = client_read_line(t->client, line, sizeof(line));
		if (n <= 0) /* 0: deleted, the server ended the stream */
			return n == -EINTR ? 0 : n;
		follow_line(&follower, line, strlen(line));
		fflush(stdout);
	}
	return r;
}

/* As local_status: one semaphore, or every one below a directory. */
static int remote_status(struct target *t, char *reply, size_t size)
{
	char line[8192], directory[PATH_MAX] = "";
	int r = t->name[0] ? remote(t->client, reply, size, "status %s", t->name) : -ENOENT;
	if (r == 0) {
		printf("%s\n", reply);
		return 0;
	}
	if (r != -ENOENT)
		return r;
	if (t->name[0]) { /* perhaps a directory: its semaphores' lines */
		int n = name_decode(t->name, strlen(t->name), directory, sizeof(directory) - 1);
		if (n < 0)
			return n;
		directory[n] = '/';
		directory[n + 1] = '\0';
	}
	r = remote(t->client, reply, size, "status");
	if (r < 0)
		return r;
	unsigned long lines = strtoul(reply + strlen("lines="), NULL, 10), matched = 0;
	for (unsigned long i = 0; i < lines; i++) {
		if ((r = client_read_line(t->client, line, sizeof(line))) <= 0)
			return r < 0 ? r : -ECONNRESET;
		if (strncmp(line, directory, strlen(directory)) == 0) {
			printf("%s\n", line);
			matched++;
		}
	}
	return matched || !directory[0] ? 0 : -ENOENT;
}

/* ---- the actions, either way ------------------------------------------------ */

static int run_command(char **command, int *status)
{
	pid_t child = fork();
	if (child < 0)
		return -errno;
	if (child == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		execvp(command[0], command);
		fprintf(stderr, "msem: %s: %s\n", command[0], strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	int wait_status;
	while (waitpid(child, &wait_status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	*status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
	return 0;
}

static int execute(const struct invocation *inv, struct target *t)
{
	char reply[8192] = "", command[64];
	const char *timeout = inv->timeout;
	bool local = !t->client;
	int r = 0, status = 0;

	switch (inv->action) {
	case CREATE: {
		long initial = inv->initial ? strtol(inv->initial, NULL, 10) : -1;
		/* The limit follows msem's patterns: a mutex (1), a pool (N), or
		 * a feed that starts empty (0: limit 1, value 0). */
		long limit = initial > 1 ? initial : 1;
		if (local) {
			if (inv->uid && mkdir(inv->path, 0755) < 0 && errno != EEXIST)
				return failed(inv, t, errno, NULL);
			int fd = open(t->file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
			if (fd < 0)
				return failed(inv, t, errno, NULL);
			if (initial >= 0) {
				snprintf(command, sizeof(command), "limit %ld\nset %ld\n", limit,
					 initial);
				if (write(fd, command, strlen(command)) < 0)
					r = -errno;
			}
			close(fd);
			if (r < 0) /* a failed create leaves nothing behind */
				(void)unlink(t->file);
		} else {
			r = initial >= 0
				? remote(t->client, reply, sizeof(reply), "create %s %ld", t->name,
					 limit)
				: remote(t->client, reply, sizeof(reply), "create %s", t->name);
			if (r == 0 && initial >= 0) {
				r = remote(t->client, reply, sizeof(reply), "set %s %ld", t->name,
					   initial);
				char ignored[256];
				if (r < 0) /* a failed create leaves nothing behind */
					(void)remote(t->client, ignored, sizeof(ignored),
						     "delete %s", t->name);
			}
		}
		break;
	}
	case DELETE:
		if (local) {
			r = unlink(t->file) < 0 ? -errno : 0;
			if (r == 0 && inv->uid)
				(void)rmdir(inv->path); /* the last tag takes its directory */
		} else {
			r = remote(t->client, reply, sizeof(reply), "delete %s", t->name);
		}
		break;
	case LOCK:
	case UNLOCK:
	case RELAX: {
		const char *verb = inv->action == LOCK	   ? "lock"
				   : inv->action == UNLOCK ? "unlock"
							   : "relax";
		if (local) {
			snprintf(command, sizeof(command), "%s%s%s\n", verb, timeout ? " " : "",
				 timeout ? timeout : "");
			r = write_command(t->file, command);
		} else {
			r = remote(t->client, reply, sizeof(reply), "%s %s%s%s", verb, t->name,
				   timeout ? " " : "", timeout ? timeout : "");
		}
		break;
	}
	case FOLLOW:
		r = local ? local_follow(t) : remote_follow(t, reply, sizeof(reply));
		break;
	case STATUS:
		r = local ? local_status(t, t->name) : remote_status(t, reply, sizeof(reply));
		break;
	case EXEC: {
		/* The unit belongs to the open file (or the connection): if msem
		 * itself dies, it goes back. The command does not inherit it. */
		int fd = -1;
		if (local) {
			/* Made if missing, as flock(1) makes its file. */
			fd = open(t->file, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
			snprintf(command, sizeof(command), "acquire%s%s\n", timeout ? " " : "",
				 timeout ? timeout : "");
			r = fd < 0 ? -errno : write(fd, command, strlen(command)) < 0 ? -errno : 0;
		} else {
			/* Made if missing; any refusal but EEXIST is the answer. */
			r = remote(t->client, reply, sizeof(reply), "create %s", t->name);
			if (r == 0 || r == -EEXIST)
				r = remote(t->client, reply, sizeof(reply), "acquire %s%s%s",
					   t->name, timeout ? " " : "", timeout ? timeout : "");
		}
		if (r == -ETIMEDOUT || r == -EAGAIN) {
			if (fd >= 0)
				close(fd);
			(void)failed(inv, t, -r, reply);
			return inv->busy_code;
		}
		if (r == 0) {
			int run = run_command(inv->command, &status);
			int released =
			    local ? (write(fd, "release\n", 8) < 0 ? -errno : 0)
				  : remote(t->client, reply, sizeof(reply), "release %s", t->name);
			r = run < 0 ? run : released;
		}
		if (fd >= 0)
			close(fd);
		if (r == 0)
			return status;
		break;
	}
	case NONE:
		break;
	}
	return r < 0 ? failed(inv, t, -r, reply) : 0;
}

/* PATH/uid as the user wrote it, and its wire name for a server. */
static int name_target(const struct invocation *inv, struct target *t)
{
	if (!inv->path)
		return -1;
	if (snprintf(t->file, sizeof(t->file), "%s%s%s", inv->path, inv->uid ? "/" : "",
		     inv->uid ? inv->uid : "") >= (int)sizeof(t->file))
		return usage_error("PATH too long: '%s'", inv->path);
	if (!t->client)
		return -1;
	const char *name = t->file;
	while (*name == '/')
		name++;
	/* The server takes any name; blanks and '%' travel as %XX. */
	if (name_wire(name, t->name, sizeof(t->name)) < 0)
		return usage_error("name too long: '%s'", name);
	return -1;
}

int main(int argc, char **argv)
{
	struct invocation inv = {.busy_code = EXIT_EXEC_BUSY};
	struct target t = {0};
	char error[512];

	int r = parse_arguments(argc, argv, &inv);
	if (r >= 0)
		return r;
	/* Ctrl-C ends a follow cleanly; a blocked lock is interrupted anyway. */
	struct sigaction stop = {.sa_handler = on_interrupt};
	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGTERM, &stop, NULL);

	if (inv.host) {
		char host[256];
		unsigned port;
		configured_remote(host, sizeof(host), &port);
		if (strcmp(inv.host, "-") != 0 &&
		    client_parse_address(inv.host, host, sizeof(host), &port) < 0)
			return usage_error("bad HOST[:PORT] '%s'", inv.host);
		r = client_connect(host, port, &t.client, error, sizeof(error));
		if (r < 0) {
			fprintf(stderr, "msem: cannot reach %s\n", error);
			return EXIT_UNREACHABLE;
		}
		/* Is PATH itself a semaphore there? Then a number after it is
		 * not a uid. A name on a server has no directory to tag. */
		bool semaphore = false, directory = false;
		if (inv.path && inv.word_count == 1) {
			char reply[8192];
			struct invocation bare = inv;
			bare.uid = NULL;
			if ((r = name_target(&bare, &t)) >= 0)
				goto out;
			semaphore =
			    remote(t.client, reply, sizeof(reply), "status %s", t.name) == 0;
			/* A directory there, as far as -l cares: PATH/WORD exists. */
			bare.uid = inv.words[0];
			if (!semaphore && valid_uid(bare.uid) && (r = name_target(&bare, &t)) < 0)
				directory = remote(t.client, reply, sizeof(reply), "status %s",
						   t.name) == 0;
		}
		if ((r = assign_arguments(&inv, semaphore, directory)) >= 0 ||
		    (r = name_target(&inv, &t)) >= 0)
			goto out;
	} else {
		struct stat st;
		bool exists = inv.path && stat(inv.path, &st) == 0;
		if ((r = assign_arguments(&inv, exists && S_ISREG(st.st_mode),
					  exists && S_ISDIR(st.st_mode))) >= 0 ||
		    (r = name_target(&inv, &t)) >= 0)
			return r;
		r = find_mount(&t, inv.path ? t.file : ".");
		if (r < 0 && !inv.path)
			return usage_error("%s", "-s without PATH needs -H, or a directory "
						 "inside a semfs mount");
		if (r < 0) {
			fprintf(stderr, "msem: %s: %s\n", t.file,
				r == -ENOTCONN ? "not inside a semfs mount (or it is not "
						 "connected); use -H HOST for a remote semfs"
					       : strerror(-r));
			return EXIT_UNREACHABLE;
		}
		if (!inv.path)
			t.name[0] = '\0';
	}
	r = execute(&inv, &t);
out:
	client_close(t.client);
	return r;
}
