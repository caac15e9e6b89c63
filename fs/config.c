/* config.c: the INI loader (inih). Keys are rows of a table; unknown keys and
 * malformed lines are warnings naming file and line, bad values are errors. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
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
	TYPE_IPV4,	/* dotted quad */
	TYPE_HOST,	/* any host name or address */
	TYPE_ALLOW,	/* allow-list */
	TYPE_IGNORED,	/* ACE's keys semfs has no use for */
	TYPE_USER,	/* a local user, by name or uid: network_user */
	TYPE_MODE,	/* octal permission bits */
	TYPE_FORMAT,	/* stats_format: semfs or ace */
	TYPE_ENDPOINTS, /* etcd members: http(s)://host:port, comma or blank separated */
	TYPE_PREFIX,	/* a key prefix: /semfs/ */
	TYPE_HOSTNAME,	/* this host in the cluster: letters, digits, '.', '-', '_' */
	TYPE_MILLIS,	/* seconds, decimals allowed: 1.5 */
};

#define NET	       "service_network_semaphore"
#define DEFINED_PREFIX "semaphore_"
#define CLUSTER	       "cluster"

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
    {NET, "stats_format", TYPE_FORMAT, offsetof(struct config, stats_ace_format), 0, 0},
    {NET, "module", TYPE_IGNORED, 0, 0, 0},
    {NET, "class", TYPE_IGNORED, 0, 0, 0},
    {NET, "description", TYPE_IGNORED, 0, 0, 0},
    {CLUSTER, "endpoints", TYPE_ENDPOINTS, 0, 0, 0},
    {CLUSTER, "prefix", TYPE_PREFIX, offsetof(struct config, cluster_prefix), 0, 0},
    {CLUSTER, "host", TYPE_HOSTNAME, offsetof(struct config, cluster_host), 0, 0},
    /* etcd raises a TTL under 2 s silently: refused here instead. */
    {CLUSTER, "lease_ttl", TYPE_UNSIGNED, offsetof(struct config, cluster_lease_ttl), 2, 3600},
    {CLUSTER, "request_timeout", TYPE_MILLIS, offsetof(struct config, cluster_request_timeout_ms),
     100, 600000},
    {CLUSTER, "ca_file", TYPE_PATH, offsetof(struct config, cluster_ca_file), 0, 0},
    {CLUSTER, "cert_file", TYPE_PATH, offsetof(struct config, cluster_cert_file), 0, 0},
    {CLUSTER, "key_file", TYPE_PATH, offsetof(struct config, cluster_key_file), 0, 0},
    {CLUSTER, "prefer_leader", TYPE_BOOL, offsetof(struct config, cluster_prefer_leader), 0, 0},
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
	config->journal_max = 256 * 1024;
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
	snprintf(config->cluster_prefix, sizeof(config->cluster_prefix), "/semfs/");
	if (gethostname(config->cluster_host, sizeof(config->cluster_host)) != 0 ||
	    !config->cluster_host[0])
		snprintf(config->cluster_host, sizeof(config->cluster_host), "localhost");
	config->cluster_host[strcspn(config->cluster_host, "./@ \t")] = '\0';
	config->cluster_lease_ttl = 5;
	config->cluster_request_timeout_ms = 2000;
	config->cluster_prefer_leader = true;
}

int config_check(const struct config *config, char *error, size_t error_size)
{
	if (config->cluster_section && config->cluster_endpoint_count == 0) {
		snprintf(error, error_size,
			 "[cluster] without endpoints: name etcd's members (endpoints = "
			 "http://HOST:2379, ...) or remove the section");
		return -1;
	}
	if (config->cluster_endpoint_count &&
	    (config->cluster_cert_file[0] != 0) != (config->cluster_key_file[0] != 0)) {
		snprintf(error, error_size,
			 "[cluster]: a client certificate needs both cert_file and key_file");
		return -1;
	}
	return 0;
}

/* endpoints: up to CONFIG_ENDPOINTS_MAX http(s)://HOST:PORT, separated by
 * commas or blanks (continuation lines too). */
static int parse_endpoints(struct config *config, const char *value, char *reason, size_t size)
{
	int count = 0;
	char list[CONFIG_ENDPOINTS_MAX][CONFIG_HOST_MAX];
	for (const char *p = value; *p;) {
		size_t skip = strspn(p, ", \t\n");
		p += skip;
		size_t length = strcspn(p, ", \t\n");
		if (length == 0)
			break;
		const char *rest = strncmp(p, "http://", 7) == 0    ? p + 7
				   : strncmp(p, "https://", 8) == 0 ? p + 8
								    : NULL;
		const char *colon = rest ? memchr(rest, ':', length - (size_t)(rest - p)) : NULL;
		if (!rest || rest == p + length || !colon || colon == rest ||
		    memchr(rest, '/', length - (size_t)(rest - p)) || length >= CONFIG_HOST_MAX) {
			snprintf(reason, size,
				 "'%.*s' is not http://HOST:PORT or https://HOST:PORT",
				 (int)(length > 200 ? 200 : length), p);
			return -1;
		}
		char *end;
		unsigned long port = strtoul(colon + 1, &end, 10);
		if (end != p + length || port == 0 || port > 65535) {
			snprintf(reason, size, "'%.*s': expected a port 1..65535 after the colon",
				 (int)length, p);
			return -1;
		}
		if (count == CONFIG_ENDPOINTS_MAX) {
			snprintf(reason, size, "more than %d endpoints", CONFIG_ENDPOINTS_MAX);
			return -1;
		}
		snprintf(list[count++], CONFIG_HOST_MAX, "%.*s", (int)length, p);
		p += length;
	}
	if (count == 0) {
		snprintf(reason, size, "no endpoint given");
		return -1;
	}
	memcpy(config->cluster_endpoints, list, sizeof(list));
	config->cluster_endpoint_count = count;
	return 0;
}

void config_free(struct config *config)
{
	free(config->defined);
	config->defined = NULL;
	config->defined_count = 0;
}

/* One file being read. inih hands over a line at a time; what configparser
 * (ACE's reader) does beyond that is done here: keys lower-cased, indented
 * lines joined to the value above with '\n', long lines read whole. */
struct config_parse {
	struct config *config;
	const char *path;
	FILE *file;
	unsigned line;		/* of the line last read */
	bool line_complete;	/* the last chunk read ended a line */
	size_t line_length;	/* bytes of the current line so far */
	bool line_indented;	/* it begins with a blank: a continuation, if a key is open */
	const char *line_needs; /* what the line must contain: "=:" for a key, "]" */
	bool line_has_need;
	bool after_section; /* a section header since the open key */
	/* The open key: applied once its last continuation line is read. */
	bool pending;
	char section[CONFIG_HOST_MAX];
	char *name;
	char *value;
	unsigned pending_line;
	/* Keys of semfs's sections, for configparser's duplicate-key rule. */
	struct config_seen {
		char *key; /* "section\nname" */
		unsigned line;
	} * seen;
	size_t seen_count;
	/* Sections semfs does not use: said once, in one line. */
	unsigned unused_sections, unused_keys;
	char unused_names[256];
	char last_unused[CONFIG_HOST_MAX];
	config_warning_fn *warn;
	char *error;
	size_t error_size;
	bool failed;  /* the first error is in `error`; later lines are still checked */
	bool stopped; /* nothing more is read */
};

/* Lines longer than this are refused, never cut: inih's heap buffer grows to
 * ini_max_line, then would split the line (semfs once read the tail of a
 * 295-byte allowed_ipv4 as an entry of its own). */
#define CONFIG_LINE_MAX (1u << 20)

static void config_warn_at(struct config_parse *parse, unsigned line, const char *text)
{
	char message[512];

	snprintf(message, sizeof(message), "%s:%u: %s", parse->path, line, text);
	if (parse->warn)
		parse->warn(message);
}

static void config_warn(struct config_parse *parse, const char *text)
{
	config_warn_at(parse, parse->line, text);
}

static void config_fail(struct config_parse *parse, const char *key, const char *value,
			const char *reason)
{
	if (parse->failed)
		return;
	parse->failed = true;
	snprintf(parse->error, parse->error_size, "%s:%u: %s = %.200s%s: %s", parse->path,
		 parse->line, key, value, strlen(value) > 200 ? "…" : "", reason);
}

/* A line ended: one that is neither blank, a comment, a continuation, a
 * section nor a key is said, as configparser would refuse it. */
static void config_line_ended(struct config_parse *parse)
{
	if (parse->line_needs && !parse->line_has_need)
		config_warn(parse, "malformed line ignored (neither [section] nor key = value)");
	parse->line_needs = NULL;
}

/* inih's reader, wrapped to count lines, measure them and flag lines it
 * would skip. inih asks again with more room while a line has no end. */
static char *config_read_line(char *buffer, int size, void *stream)
{
	struct config_parse *parse = stream;

	if (parse->stopped)
		return NULL;
	char *chunk = fgets(buffer, size, parse->file);
	if (!chunk) {
		if (!parse->line_complete)
			config_line_ended(parse);
		return NULL;
	}
	size_t length = strlen(chunk);
	bool ends = length > 0 && chunk[length - 1] == '\n';

	if (parse->line_complete) { /* a new line begins */
		parse->line++;
		parse->line_length = 0;
		const char *p = chunk + strspn(chunk, " \t\r\n");
		parse->line_indented = p != chunk && *p;
		parse->line_needs = NULL;
		parse->line_has_need = false;
		if (!*p || *p == ';' || *p == '#')
			;
		else if (parse->line_indented && parse->pending && !parse->after_section)
			; /* a continuation */
		else if (*p == '[')
			parse->line_needs = "]", parse->after_section = true;
		else
			parse->line_needs = "=:";
	}
	parse->line_length += length;
	if (parse->line_needs && strpbrk(chunk, parse->line_needs))
		parse->line_has_need = true;
	if (parse->line_length > CONFIG_LINE_MAX - 4) {
		if (!parse->failed)
			snprintf(parse->error, parse->error_size,
				 "%s:%u: line longer than %u bytes: refused rather than cut",
				 parse->path, parse->line, CONFIG_LINE_MAX - 4);
		parse->failed = parse->stopped = true;
		return NULL;
	}
	parse->line_complete = ends;
	if (ends)
		config_line_ended(parse);
	return chunk;
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

/* Apply one complete `name = value` (name lower-cased) of `section`. */
static void config_apply(struct config_parse *parse, const char *section, const char *name,
			 const char *value)
{
	const struct config_row *row = NULL;

	if (strcmp(section, CLUSTER) == 0)
		parse->config->cluster_section = true;
	if (strcmp(section, NET) == 0 &&
	    strncmp(name, DEFINED_PREFIX, strlen(DEFINED_PREFIX)) == 0) {
		define_semaphore(parse, name, value);
		return;
	}

	for (size_t i = 0; i < sizeof(config_rows) / sizeof(config_rows[0]); i++) {
		if (strcmp(config_rows[i].section, section) != 0)
			continue;
		if (strcmp(config_rows[i].name, name) == 0)
			row = &config_rows[i];
	}
	if (!row) {
		char text[400];
		snprintf(text, sizeof(text), "unknown key '%.100s' in [%.100s] ignored", name,
			 section);
		config_warn(parse, text);
		return;
	}

	char *field = (char *)parse->config + row->offset;
	unsigned long long number;
	char reason[300];
	struct in_addr address;

	switch (row->type) {
	case TYPE_IGNORED:
		break;
	case TYPE_ENDPOINTS:
		if (parse_endpoints(parse->config, value, reason, sizeof(reason)) < 0)
			config_fail(parse, name, value, reason);
		break;
	case TYPE_PREFIX:
		if (value[0] != '/' || strlen(value) >= 200 || strpbrk(value, " \t\n"))
			config_fail(parse, name, value,
				    "expected a key prefix that starts with '/', such as /semfs/");
		else
			snprintf(field, CONFIG_HOST_MAX, "%s%s", value,
				 value[strlen(value) - 1] == '/' ? "" : "/");
		break;
	case TYPE_HOSTNAME:
		if (!value[0] || strlen(value) >= CONFIG_CLUSTER_HOST_MAX ||
		    strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "0123456789-_") != strlen(value))
			config_fail(parse, name, value,
				    "expected a host name of letters, digits, '-' and '_' "
				    "(at most 63)");
		else
			snprintf(field, CONFIG_CLUSTER_HOST_MAX, "%s", value);
		break;
	case TYPE_MILLIS: {
		char *end;
		errno = 0;
		double seconds = strtod(value, &end);
		if (errno || end == value || *end || !(seconds * 1000 >= (double)row->min) ||
		    seconds * 1000 > (double)row->max) {
			snprintf(reason, sizeof(reason), "expected seconds %.1f..%.0f",
				 (double)row->min / 1000, (double)row->max / 1000);
			config_fail(parse, name, value, reason);
		} else
			*(unsigned *)field = (unsigned)(seconds * 1000 + 0.5);
		break;
	}
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
	case TYPE_FORMAT:
		if (strcmp(value, "semfs") == 0 || strcmp(value, "ace") == 0)
			*(bool *)field = strcmp(value, "ace") == 0;
		else
			config_fail(parse, name, value, "expected semfs or ace");
		break;
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
		else if (allow_admits_all((struct allow_list *)field))
			config_warn(parse,
				    strcmp(name, "admin_ipv4") == 0
					? "admin_ipv4 admits every address: any peer "
					  "acts as semfs's own user"
					: "allowed_ipv4 admits every address (0.0.0.0): any "
					  "host that reaches the port may use the semaphores "
					  "(ACE never enforced this list; semfs does: list "
					  "your clients' addresses to restrict it)");
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
}

static bool section_used(const char *section)
{
	for (size_t i = 0; i < sizeof(config_rows) / sizeof(config_rows[0]); i++)
		if (strcmp(config_rows[i].section, section) == 0)
			return true;
	return false;
}

/* configparser refuses a key given twice in one section of one file; ACE
 * would not start. semfs takes the later value and says so. */
static void note_duplicate(struct config_parse *parse, const char *section, const char *name)
{
	size_t length = strlen(section) + strlen(name) + 2;
	char *key = malloc(length);
	if (!key)
		return;
	snprintf(key, length, "%s\n%s", section, name);
	for (size_t i = 0; i < parse->seen_count; i++) {
		if (strcmp(parse->seen[i].key, key) == 0) {
			char text[400];
			snprintf(text, sizeof(text),
				 "'%.100s' in [%.100s] given again (first on line %u): the later "
				 "value wins here; Python's configparser (ACE) refuses such a file",
				 name, section, parse->seen[i].line);
			config_warn_at(parse, parse->pending_line, text);
			free(key);
			return;
		}
	}
	struct config_seen *bigger =
	    realloc(parse->seen, (parse->seen_count + 1) * sizeof(*parse->seen));
	if (!bigger) {
		free(key);
		return;
	}
	parse->seen = bigger;
	parse->seen[parse->seen_count++] = (struct config_seen){key, parse->pending_line};
}

/* The open key is complete: apply it, with errors naming its first line. */
static void commit_pending(struct config_parse *parse)
{
	if (!parse->pending)
		return;
	parse->pending = false;
	if (!section_used(parse->section)) {
		parse->unused_keys++;
		if (strcmp(parse->section, parse->last_unused) != 0) {
			snprintf(parse->last_unused, sizeof(parse->last_unused), "%s",
				 parse->section);
			parse->unused_sections++;
			size_t used = strlen(parse->unused_names);
			if (parse->unused_sections <= 4)
				snprintf(parse->unused_names + used,
					 sizeof(parse->unused_names) - used, "%s[%.40s]",
					 used ? ", " : "", parse->section);
		}
	} else if (!parse->stopped) {
		unsigned line = parse->line;
		parse->line = parse->pending_line;
		note_duplicate(parse, parse->section, parse->name);
		config_apply(parse, parse->section, parse->name, parse->value);
		parse->line = line;
	}
	free(parse->name);
	free(parse->value);
	parse->name = parse->value = NULL;
}

static int config_handle(void *user, const char *section, const char *name, const char *value)
{
	struct config_parse *parse = user;

	if (parse->stopped)
		return 1;
	if (parse->line_indented && parse->pending && !parse->after_section) {
		/* configparser joins continuation lines with a newline. */
		size_t old = strlen(parse->value), more = strlen(value);
		char *longer = realloc(parse->value, old + more + 2);
		if (!longer) {
			config_fail(parse, parse->name, "", "out of memory");
			parse->stopped = true;
			return 0;
		}
		longer[old] = '\n';
		memcpy(longer + old + 1, value, more + 1);
		parse->value = longer;
		return 1;
	}
	commit_pending(parse);
	parse->after_section = false;
	parse->name = strdup(name);
	parse->value = strdup(value);
	if (!parse->name || !parse->value) {
		config_fail(parse, name, "", "out of memory");
		parse->stopped = true;
		return 0;
	}
	/* configparser's optionxform: `Bind_Port` is `bind_port`, and
	 * `semaphore_PCAP` defines `pcap`. Section names keep their case. */
	for (char *c = parse->name; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	snprintf(parse->section, sizeof(parse->section), "%s", section);
	parse->pending_line = parse->line;
	parse->pending = true;
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
	/* Debian's libinih takes its build options at run time: a heap line
	 * buffer that grows, so no line is cut (see CONFIG_LINE_MAX). */
	ini_use_stack = false;
	ini_allow_realloc = true;
	ini_max_line = (int)CONFIG_LINE_MAX;
	ini_allow_multiline = true;
	int r = ini_parse_stream(config_read_line, &parse, config_handle, &parse);
	fclose(parse.file);
	commit_pending(&parse);
	free(parse.name);
	free(parse.value);
	for (size_t i = 0; i < parse.seen_count; i++)
		free(parse.seen[i].key);
	free(parse.seen);
	if (r == -2) {
		snprintf(error, error_size, "%s: out of memory", path);
		return -1;
	}
	if (parse.failed)
		return -1;
	if (parse.unused_sections && warn) {
		/* ACE keeps one file for all its services: one line for the rest. */
		char message[600];
		snprintf(message, sizeof(message),
			 "%s: %u section%s semfs does not use ignored (%u key%s): %s%s", path,
			 parse.unused_sections, parse.unused_sections == 1 ? "" : "s",
			 parse.unused_keys, parse.unused_keys == 1 ? "" : "s", parse.unused_names,
			 parse.unused_sections > 4 ? ", …" : "");
		warn(message);
	}
	/* ACE's stats_dir is relative to its data directory; ours to state_dir. */
	if (config->stats_dir[0] && config->stats_dir[0] != '/') {
		config->stats_dir_relative = true;
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
