/* config.c: the INI loader (inih). Keys are rows of a table; unknown keys and
 * malformed lines are warnings naming file and line, bad values are errors. */
#include "config.h"

#include <arpa/inet.h>
#include <strings.h>
#include <errno.h>
#include <pwd.h>
#include <ini.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum config_type {
	TYPE_PATH,
	TYPE_UNSIGNED,
	TYPE_BYTES,
	TYPE_BOOL,
	TYPE_IPV4,    /* dotted quad */
	TYPE_HOST,    /* any host name or address */
	TYPE_ALLOW,   /* allow-list */
	TYPE_IGNORED, /* ACE's keys semfs has no use for */
	TYPE_USER,    /* a local user, by name or uid: network_user */
	TYPE_MODE,    /* octal permission bits */
};

#define NET	       "service_network_semaphore"
#define DEFINED_PREFIX "semaphore_"

static const struct config_row {
	const char *section;
	const char *name;
	enum config_type type;
	size_t offset;
	unsigned long long min, max;
} config_rows[] = {
    {"semfs", "state_dir", TYPE_PATH, offsetof(struct config, state_dir), 0, 0},
    {"semfs", "default_limit", TYPE_UNSIGNED, offsetof(struct config, default_limit), 0, 32767},
    {"semfs", "journal_max", TYPE_BYTES, offsetof(struct config, journal_max), CONFIG_JOURNAL_MIN,
     CONFIG_JOURNAL_MAX},
    {"semfs", "max_connections", TYPE_UNSIGNED, offsetof(struct config, max_connections), 1,
     1000000},
    {"semfs", "idle_timeout", TYPE_UNSIGNED, offsetof(struct config, idle_timeout), 0, 86400 * 365},
    {"semfs", "request_timeout", TYPE_UNSIGNED, offsetof(struct config, request_timeout), 1, 3600},
    {"semfs", "network_user", TYPE_USER, offsetof(struct config, network_user), 0, 0},
    {"semfs", "network_mode", TYPE_MODE, offsetof(struct config, network_mode), 0, 0777},
    {"semfs", "admin_ipv4", TYPE_ALLOW, offsetof(struct config, admins), 0, 0},
    {NET, "enabled", TYPE_BOOL, offsetof(struct config, net_enabled), 0, 0},
    {NET, "bind_address", TYPE_IPV4, offsetof(struct config, bind_address), 0, 0},
    {NET, "bind_port", TYPE_UNSIGNED, offsetof(struct config, bind_port), 0, 65535},
    {NET, "remote_address", TYPE_HOST, offsetof(struct config, remote_address), 0, 0},
    {NET, "remote_port", TYPE_UNSIGNED, offsetof(struct config, remote_port), 1, 65535},
    {NET, "allowed_ipv4", TYPE_ALLOW, offsetof(struct config, allowed), 0, 0},
    {NET, "stats_dir", TYPE_PATH, offsetof(struct config, stats_dir), 0, 0},
    {NET, "module", TYPE_IGNORED, 0, 0, 0},
    {NET, "class", TYPE_IGNORED, 0, 0, 0},
    {NET, "description", TYPE_IGNORED, 0, 0, 0},
};

/* network_user: a name from the password database, or a number. */
static int config_set_user(struct config *config, const char *text)
{
	struct passwd *entry = getpwnam(text);
	char *end;

	if (!entry) {
		errno = 0;
		unsigned long uid = strtoul(text, &end, 10);
		if (errno || end == text || *end || uid >= (uid_t)-1)
			return -EINVAL;
		entry = getpwuid((uid_t)uid);
		config->network_uid = (uid_t)uid;
		config->network_gid = entry ? entry->pw_gid : (gid_t)uid;
	} else {
		config->network_uid = entry->pw_uid;
		config->network_gid = entry->pw_gid;
	}
	if (strlen(text) >= sizeof(config->network_user))
		return -EINVAL;
	snprintf(config->network_user, sizeof(config->network_user), "%s", text);
	return 0;
}

void config_defaults(struct config *config)
{
	const char *runtime = getenv("XDG_RUNTIME_DIR");

	memset(config, 0, sizeof(*config));
	if (geteuid() == 0)
		snprintf(config->state_dir, sizeof(config->state_dir), "/run/semfs");
	else if (runtime && runtime[0] == '/')
		snprintf(config->state_dir, sizeof(config->state_dir), "%s/semfs", runtime);
	else
		snprintf(config->state_dir, sizeof(config->state_dir), "/tmp/semfs-%u",
			 (unsigned)geteuid());
	config->default_limit = 1;
	config->journal_max = 64 * 1024;
	config->max_connections = 10000;
	config->idle_timeout = 300;
	config->request_timeout = 10;
	/* Peers are strangers by default: they may use what "others" may. */
	if (config_set_user(config, "nobody") < 0) {
		config->network_uid = config->network_gid =
		    65534; /* nobody, wherever it is missing */
		snprintf(config->network_user, sizeof(config->network_user), "65534");
	}
	config->network_mode = 0666;
	config->net_enabled = true;
	snprintf(config->bind_address, sizeof(config->bind_address), "127.0.0.1");
	config->bind_port = CONFIG_PORT;
	snprintf(config->remote_address, sizeof(config->remote_address), "127.0.0.1");
	config->remote_port = CONFIG_PORT;
	config->allowed.ranges[0] = (struct allow_range){0x7f000000u, 0xff000000u};
	config->allowed.count = 1;
}

void config_free(struct config *config)
{
	free(config->defined);
	config->defined = NULL;
	config->defined_count = 0;
}

struct config_parse {
	struct config *config;
	const char *path;
	FILE *file;
	unsigned line;
	bool line_complete; /* the last chunk read ended a line */
	config_warning_fn *warn;
	char *error;
	size_t error_size;
	bool failed;
};

static void config_warn(struct config_parse *parse, const char *text)
{
	char message[512];

	snprintf(message, sizeof(message), "%s:%u: %s", parse->path, parse->line, text);
	if (parse->warn)
		parse->warn(message);
}

static void config_fail(struct config_parse *parse, const char *key, const char *value,
			const char *reason)
{
	if (parse->failed)
		return;
	parse->failed = true;
	snprintf(parse->error, parse->error_size, "%s:%u: %s = %s: %s", parse->path, parse->line,
		 key, value, reason);
}

/* inih's reader, wrapped to count lines and flag lines it would skip. */
static char *config_read_line(char *buffer, int size, void *stream)
{
	struct config_parse *parse = stream;
	char *line = fgets(buffer, size, parse->file);

	if (!line)
		return NULL;
	if (parse->line_complete)
		parse->line++;
	size_t length = strlen(line);
	parse->line_complete = length > 0 && line[length - 1] == '\n';

	const char *p = line + strspn(line, " \t\r\n");
	if (*p && *p != ';' && *p != '#') {
		if (*p == '[' ? !strchr(p, ']') : !strpbrk(p, "=:")) {
			char text[128];
			snprintf(text, sizeof(text), "malformed line ignored: %.60s", p);
			text[strcspn(text, "\r\n")] = '\0';
			config_warn(parse, text);
		}
	}
	return line;
}

static bool parse_unsigned(const char *text, unsigned long long *out, bool allow_suffix)
{
	char *end;
	unsigned long long value;

	if (*text < '0' || *text > '9')
		return false;
	errno = 0;
	value = strtoull(text, &end, 10);
	if (errno)
		return false;
	if (allow_suffix && *end) {
		unsigned shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' ? 20 : 0;
		if (!shift)
			return false;
		if (value > (ULLONG_MAX >> shift))
			return false;
		value <<= shift;
		end++;
	}
	if (*end)
		return false;
	*out = value;
	return true;
}

static bool parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(text, yes[i]) == 0)
			return *out = true, true;
		if (strcasecmp(text, no[i]) == 0)
			return *out = false, true;
	}
	return false;
}

/* ACE's `semaphore_NAME = LIMIT`: a later line for the same name wins. */
static void define_semaphore(struct config_parse *parse, const char *key, const char *value)
{
	struct config *config = parse->config;
	const char *name = key + strlen(DEFINED_PREFIX);
	unsigned long long limit;
	char reason[160];

	if (name_check(name, strlen(name), reason, sizeof(reason)) < 0) {
		char text[256];
		snprintf(text, sizeof(text), "bad semaphore name: %s", reason);
		config_fail(parse, key, value, text);
		return;
	}
	if (!parse_unsigned(value, &limit, false) || limit > 32767) {
		config_fail(parse, key, value, "expected a limit 0..32767");
		return;
	}
	for (size_t i = 0; i < config->defined_count; i++) {
		if (strcmp(config->defined[i].name, name) == 0) {
			config->defined[i].limit = (unsigned)limit;
			return;
		}
	}
	struct config_semaphore *bigger =
	    realloc(config->defined, (config->defined_count + 1) * sizeof(*bigger));
	if (!bigger) {
		config_fail(parse, key, value, "out of memory");
		return;
	}
	config->defined = bigger;
	snprintf(bigger[config->defined_count].name, sizeof(bigger->name), "%s", name);
	bigger[config->defined_count].limit = (unsigned)limit;
	config->defined_count++;
}

static int config_handle(void *user, const char *section, const char *name, const char *value)
{
	struct config_parse *parse = user;
	const struct config_row *row = NULL;
	bool known_section = false;

	if (strcmp(section, NET) == 0 &&
	    strncmp(name, DEFINED_PREFIX, strlen(DEFINED_PREFIX)) == 0) {
		define_semaphore(parse, name, value);
		return 1;
	}

	for (size_t i = 0; i < sizeof(config_rows) / sizeof(config_rows[0]); i++) {
		if (strcmp(config_rows[i].section, section) != 0)
			continue;
		known_section = true;
		if (strcmp(config_rows[i].name, name) == 0)
			row = &config_rows[i];
	}
	if (!known_section) {
		char text[400];
		snprintf(text, sizeof(text), "unknown section [%.100s]: key '%.100s' ignored",
			 section, name);
		config_warn(parse, text);
		return 1;
	}
	if (!row) {
		char text[400];
		snprintf(text, sizeof(text), "unknown key '%.100s' in [%.100s] ignored", name,
			 section);
		config_warn(parse, text);
		return 1;
	}

	char *field = (char *)parse->config + row->offset;
	unsigned long long number;
	char reason[300];
	struct in_addr address;

	switch (row->type) {
	case TYPE_IGNORED:
		break;
	case TYPE_USER:
		if (config_set_user(parse->config, value) < 0)
			config_fail(parse, name, value, "expected a local user name or uid");
		break;
	case TYPE_MODE: {
		char *end;
		errno = 0;
		unsigned long mode = strtoul(value, &end, 8);
		if (errno || end == value || *end || mode > row->max)
			config_fail(parse, name, value, "expected octal permission bits 0..0777");
		else
			*(unsigned *)field = (unsigned)mode;
		break;
	}
	case TYPE_BOOL:
		if (!parse_bool(value, (bool *)field))
			config_fail(parse, name, value, "expected yes or no");
		break;
	case TYPE_IPV4:
		if (inet_pton(AF_INET, value, &address) != 1)
			config_fail(parse, name, value,
				    "expected an IPv4 address such as 127.0.0.1");
		else
			snprintf(field, CONFIG_HOST_MAX, "%s", value);
		break;
	case TYPE_HOST:
		if (value[0] == '\0' || strlen(value) >= CONFIG_HOST_MAX)
			config_fail(parse, name, value, "expected a host name or address");
		else
			snprintf(field, CONFIG_HOST_MAX, "%s", value);
		break;
	case TYPE_ALLOW:
		if (allow_parse((struct allow_list *)field, value, reason, sizeof(reason)) < 0)
			config_fail(parse, name, value, reason);
		break;
	case TYPE_PATH:
		if (value[0] == '\0')
			config_fail(parse, name, value, "empty path");
		else if (strlen(value) >= PATH_MAX)
			config_fail(parse, name, value, "path too long");
		else
			snprintf(field, PATH_MAX, "%s", value);
		break;
	case TYPE_UNSIGNED:
	case TYPE_BYTES:
		if (!parse_unsigned(value, &number, row->type == TYPE_BYTES) || number < row->min ||
		    number > row->max) {
			snprintf(reason, sizeof(reason), "expected %s %llu..%llu",
				 row->type == TYPE_BYTES ? "bytes (K or M suffix allowed)"
							 : "a whole number",
				 row->min, row->max);
			config_fail(parse, name, value, reason);
		} else if (row->type == TYPE_BYTES) {
			*(size_t *)field = (size_t)number;
		} else {
			*(unsigned *)field = (unsigned)number;
		}
		break;
	}
	return 1;
}

int config_load(struct config *config, const char *path, config_warning_fn *warn, char *error,
		size_t error_size)
{
	struct config_parse parse = {
	    .config = config,
	    .path = path,
	    .line = 0,
	    .line_complete = true,
	    .warn = warn,
	    .error = error,
	    .error_size = error_size,
	};

	parse.file = fopen(path, "re");
	if (!parse.file) {
		snprintf(error, error_size, "%s: %s", path, strerror(errno));
		return -1;
	}
	int r = ini_parse_stream(config_read_line, &parse, config_handle, &parse);
	fclose(parse.file);
	if (r == -2) {
		snprintf(error, error_size, "%s: out of memory", path);
		return -1;
	}
	if (parse.failed)
		return -1;
	/* ACE's stats_dir is relative to its data directory; ours to state_dir. */
	if (config->stats_dir[0] && config->stats_dir[0] != '/') {
		char relative[PATH_MAX];
		snprintf(relative, sizeof(relative), "%s", config->stats_dir);
		if (snprintf(config->stats_dir, sizeof(config->stats_dir), "%s/%s",
			     config->state_dir, relative) >= (int)sizeof(config->stats_dir)) {
			snprintf(error, error_size, "%s: stats_dir: path too long", path);
			return -1;
		}
	}
	/* state_dir/tree holds records only: a stats file there would be read
	 * as a broken record at the next start. */
	char tree[PATH_MAX + 8];
	snprintf(tree, sizeof(tree), "%s/tree", config->state_dir);
	char stats[PATH_MAX];
	size_t length = strlen(tree);
	snprintf(stats, sizeof(stats), "%s", config->stats_dir);
	for (char *dot; (dot = strstr(stats, "/./"));) /* a/./b is a/b */
		memmove(dot, dot + 2, strlen(dot + 2) + 1);
	if (stats[0] && strncmp(stats, tree, length) == 0 &&
	    (stats[length] == '\0' || stats[length] == '/')) {
		snprintf(error, error_size,
			 "%s: stats_dir = %s: inside %s, where every file is a semaphore's record; "
			 "choose another directory",
			 path, config->stats_dir, tree);
		return -1;
	}
	return 0;
}
