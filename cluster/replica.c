/* replica.c: the cluster's semaphores rebuilt from etcd's events, and the
 * one rule that says who holds (see replica.h). Pure: no I/O, no clock, no
 * locks; the caller serialises. */
#include "replica.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum entry_state { ENTRY_WAITING, ENTRY_HOLDING, ENTRY_RELAXED };

struct entry {
	char id[REPLICA_ENTRY_MAX];
	char who[REPLICA_WHO_MAX];
	enum replica_kind kind;
	int64_t create_revision;
	int64_t lease;
	enum entry_state state, next; /* next: computed by settle() */
};

struct semaphore {
	struct semaphore *chain;
	char *name;
	bool has_meta;
	struct replica_meta meta;
	struct entry *entries; /* by create revision */
	size_t count, allocated;
	char **openers; /* hosts with a file open on it (sem/NAME/open/HOST) */
	size_t opener_count;
	int holders; /* as of the last settle */
	int64_t last_revision, meta_revision;
};

/* A directory made with mkdir: few, so a list. */
struct directory {
	struct directory *next;
	char *name;
	mode_t mode;
	uid_t uid;
	gid_t gid;
};

struct replica {
	struct directory *directories;
	struct semaphore **buckets;
	size_t bucket_count; /* a power of two */
	size_t count;
	int64_t revision;
};

static int fail(char *error, size_t size, int code, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *error, size_t size, int code, const char *format, ...)
{
	if (error && size) {
		va_list args;
		va_start(args, format);
		vsnprintf(error, size, format, args);
		va_end(args);
	}
	return code;
}

/* ---- the table of semaphores ---------------------------------------------- */

static uint64_t hash(const char *text, size_t length)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < length; i++)
		h = (h ^ (unsigned char)text[i]) * 1099511628211ull;
	return h;
}

struct replica *replica_new(void)
{
	struct replica *replica = calloc(1, sizeof(*replica));
	if (!replica)
		return NULL;
	replica->bucket_count = 64;
	replica->buckets = calloc(replica->bucket_count, sizeof(*replica->buckets));
	if (!replica->buckets) {
		free(replica);
		return NULL;
	}
	return replica;
}

static void semaphore_free(struct semaphore *semaphore)
{
	for (size_t i = 0; i < semaphore->opener_count; i++)
		free(semaphore->openers[i]);
	free(semaphore->openers);
	free(semaphore->entries);
	free(semaphore->name);
	free(semaphore);
}

void replica_free(struct replica *replica)
{
	if (!replica)
		return;
	for (struct directory *d = replica->directories, *next; d; d = next) {
		next = d->next;
		free(d->name);
		free(d);
	}
	for (size_t b = 0; b < replica->bucket_count; b++)
		for (struct semaphore *s = replica->buckets[b], *next; s; s = next) {
			next = s->chain;
			semaphore_free(s);
		}
	free(replica->buckets);
	free(replica);
}

static struct semaphore **slot(const struct replica *replica, const char *name, size_t length)
{
	struct semaphore **at = &replica->buckets[hash(name, length) & (replica->bucket_count - 1)];
	for (; *at; at = &(*at)->chain)
		if (strlen((*at)->name) == length && memcmp((*at)->name, name, length) == 0)
			break;
	return at;
}

static struct semaphore *find(const struct replica *replica, const char *name)
{
	return *slot(replica, name, strlen(name));
}

static void grow(struct replica *replica)
{
	size_t count = replica->bucket_count * 2;
	struct semaphore **buckets = calloc(count, sizeof(*buckets));
	if (!buckets)
		return; /* longer chains, still correct */
	for (size_t b = 0; b < replica->bucket_count; b++)
		for (struct semaphore *s = replica->buckets[b], *next; s; s = next) {
			next = s->chain;
			size_t at = hash(s->name, strlen(s->name)) & (count - 1);
			s->chain = buckets[at];
			buckets[at] = s;
		}
	free(replica->buckets);
	replica->buckets = buckets;
	replica->bucket_count = count;
}

static struct semaphore *find_or_add(struct replica *replica, const char *name, size_t length)
{
	struct semaphore **at = slot(replica, name, length);
	if (*at)
		return *at;
	struct semaphore *s = calloc(1, sizeof(*s));
	if (!s || !(s->name = strndup(name, length))) {
		free(s);
		return NULL;
	}
	*at = s;
	if (++replica->count > replica->bucket_count)
		grow(replica);
	return s;
}

static void drop_if_empty(struct replica *replica, struct semaphore *semaphore)
{
	if (semaphore->has_meta || semaphore->count || semaphore->opener_count)
		return;
	struct semaphore **at = slot(replica, semaphore->name, strlen(semaphore->name));
	*at = semaphore->chain;
	replica->count--;
	semaphore_free(semaphore);
}

/* ---- the rule --------------------------------------------------------------- */

static bool relaxed(const struct replica_meta *meta, int64_t revision)
{
	for (int i = 0; i < meta->relaxed_count; i++)
		if (revision >= meta->relaxed[i].from && revision <= meta->relaxed[i].to)
			return true;
	return false;
}

/* Who holds now: the first `limit - plain` entries outside relaxed ranges.
 * Fills each entry's `next` and returns the holders' count. A semaphore
 * without meta keeps its states until its entries go (rm deletes them in
 * the same revision). */
static int settle(struct semaphore *semaphore)
{
	int holders = 0;
	if (!semaphore->has_meta) {
		for (size_t i = 0; i < semaphore->count; i++) {
			semaphore->entries[i].next = semaphore->entries[i].state;
			holders += semaphore->entries[i].state == ENTRY_HOLDING;
		}
		return holders;
	}
	int slots = semaphore->meta.limit - semaphore->meta.plain;
	for (size_t i = 0; i < semaphore->count; i++) {
		struct entry *e = &semaphore->entries[i];
		if (relaxed(&semaphore->meta, e->create_revision))
			e->next = ENTRY_RELAXED;
		else if (holders < slots) {
			e->next = ENTRY_HOLDING;
			holders++;
		} else
			e->next = ENTRY_WAITING;
	}
	return holders;
}

static int value_of(const struct semaphore *semaphore, int holders)
{
	if (!semaphore->has_meta)
		return 0;
	return semaphore->meta.limit - semaphore->meta.plain - holders;
}

static void say(replica_report_fn *report, void *context, enum replica_change change,
		const struct semaphore *semaphore, const struct entry *entry, int64_t revision,
		int value)
{
	if (!report)
		return;
	struct replica_report r = {
	    .change = change,
	    .name = semaphore->name,
	    .entry = entry ? entry->id : NULL,
	    .who = entry ? entry->who : "",
	    .kind = entry ? entry->kind : REPLICA_LOCK,
	    .token = entry ? entry->create_revision : 0,
	    .revision = revision,
	    .value = value,
	};
	report(context, &r);
}

/* Take what settle() computed; each entry's `next` keeps its old state for
 * announce(), so that every report sees the state after the event. */
static void commit(struct semaphore *semaphore, int holders)
{
	for (size_t i = 0; i < semaphore->count; i++) {
		struct entry *e = &semaphore->entries[i];
		enum entry_state old = e->state;
		e->state = e->next;
		e->next = old;
	}
	semaphore->holders = holders;
}

/* Report every entry whose state the last commit changed. */
static void announce(struct semaphore *semaphore, int64_t revision, replica_report_fn *report,
		     void *context)
{
	int value = value_of(semaphore, semaphore->holders);
	for (size_t i = 0; i < semaphore->count; i++) {
		struct entry *e = &semaphore->entries[i];
		enum entry_state old = e->next;
		e->next = e->state;
		if (old == e->state)
			continue;
		if (old == ENTRY_HOLDING)
			say(report, context, REPLICA_DEMOTED, semaphore, e, revision, value);
		if (e->state == ENTRY_HOLDING)
			say(report, context, REPLICA_GRANTED, semaphore, e, revision, value);
		else if (e->state == ENTRY_RELAXED)
			say(report, context, REPLICA_RELAXED, semaphore, e, revision, value);
	}
}

/* ---- parsing keys and values ------------------------------------------------ */

static bool number(const char *text, size_t length, int base, int64_t low, int64_t high,
		   int64_t *out)
{
	char buffer[32];
	if (length == 0 || length >= sizeof(buffer))
		return false;
	memcpy(buffer, text, length);
	buffer[length] = '\0';
	char *end;
	errno = 0;
	long long v = strtoll(buffer, &end, base);
	if (errno || *end || buffer[0] == '-' || buffer[0] == '+' || buffer[0] == ' ' || v < low ||
	    v > high)
		return false;
	*out = v;
	return true;
}

static int parse_ranges(const char *text, size_t length, struct replica_meta *meta, char *error,
			size_t error_size)
{
	meta->relaxed_count = 0;
	size_t at = 0;
	while (at < length) {
		size_t end = at;
		while (end < length && text[end] != ',')
			end++;
		const char *dash = memchr(text + at, '-', end - at);
		int64_t from, to;
		if (!dash ||
		    !number(text + at, (size_t)(dash - text - at), 10, 1, INT64_MAX, &from) ||
		    !number(dash + 1, (size_t)(text + end - dash - 1), 10, 1, INT64_MAX, &to) ||
		    to < from)
			return fail(error, error_size, -EINVAL,
				    "relaxed: '%.*s' is not a range FROM-TO of revisions",
				    (int)(end - at), text + at);
		if (meta->relaxed_count == REPLICA_RELAXED_MAX)
			return fail(error, error_size, -EINVAL, "relaxed: more than %d ranges",
				    REPLICA_RELAXED_MAX);
		meta->relaxed[meta->relaxed_count++] = (struct replica_range){from, to};
		at = end + 1;
	}
	return 0;
}

int replica_meta_parse(const char *text, size_t length, struct replica_meta *meta, char *error,
		       size_t error_size)
{
	struct replica_meta m = {.mode = 0644};
	bool have_limit = false;
	size_t at = 0;
	while (at < length) {
		if (text[at] == ' ') {
			at++;
			continue;
		}
		size_t end = at;
		while (end < length && text[end] != ' ')
			end++;
		const char *eq = memchr(text + at, '=', end - at);
		if (!eq)
			return fail(error, error_size, -EINVAL, "meta: '%.*s' is not KEY=VALUE",
				    (int)(end - at), text + at);
		size_t key_length = (size_t)(eq - text - at);
		const char *v = eq + 1;
		size_t v_length = (size_t)(text + end - v);
		int64_t n;
#define KEY(k) (key_length == sizeof(k) - 1 && memcmp(text + at, k, key_length) == 0)
		if (KEY("by")) { /* the rest of the record */
			size_t rest = length - (size_t)(v - text);
			if (rest >= sizeof(m.by) || memchr(v, '\n', rest) || memchr(v, '\0', rest))
				return fail(error, error_size, -EINVAL,
					    "meta: by= too long or not one line");
			memcpy(m.by, v, rest);
			m.by[rest] = '\0';
			break;
		}
		if (KEY("relaxed")) {
			int r = parse_ranges(v, v_length, &m, error, error_size);
			if (r < 0)
				return r;
		} else if (KEY("limit") && number(v, v_length, 10, 0, 32767, &n)) {
			m.limit = (int)n;
			have_limit = true;
		} else if (KEY("plain") && number(v, v_length, 10, 0, 32767, &n))
			m.plain = (int)n;
		else if (KEY("mode") && number(v, v_length, 8, 0, 07777, &n))
			m.mode = (mode_t)n;
		else if (KEY("uid") && number(v, v_length, 10, 0, UINT32_MAX - 1, &n))
			m.uid = (uid_t)n;
		else if (KEY("gid") && number(v, v_length, 10, 0, UINT32_MAX - 1, &n))
			m.gid = (gid_t)n;
		else if (KEY("defined") && number(v, v_length, 10, 0, 1, &n))
			m.defined = n == 1;
		else if (KEY("undefined") && number(v, v_length, 10, 0, 1, &n))
			m.undefined = n == 1;
		else
			return fail(error, error_size, -EINVAL, "meta: '%.*s' not understood",
				    (int)(end - at), text + at);
#undef KEY
		at = end;
	}
	if (!have_limit)
		return fail(error, error_size, -EINVAL, "meta: no limit=");
	if (m.plain > m.limit)
		return fail(error, error_size, -EINVAL, "meta: plain=%d above limit=%d", m.plain,
			    m.limit);
	*meta = m;
	return 0;
}

int replica_meta_format(const struct replica_meta *meta, char *out, size_t size)
{
	size_t used = 0;
	/* undefined= only when set: a record without it reads as before. */
	int n =
	    snprintf(out, size,
		     "limit=%d plain=%d mode=%04o uid=%u gid=%u defined=%d%s relaxed=", meta->limit,
		     meta->plain, (unsigned)meta->mode, (unsigned)meta->uid, (unsigned)meta->gid,
		     meta->defined ? 1 : 0, meta->undefined ? " undefined=1" : "");
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	used = (size_t)n;
	for (int i = 0; i < meta->relaxed_count; i++) {
		n = snprintf(out + used, size - used, "%s%" PRId64 "-%" PRId64, i ? "," : "",
			     meta->relaxed[i].from, meta->relaxed[i].to);
		if (n < 0 || (size_t)n >= size - used)
			return -ENAMETOOLONG;
		used += (size_t)n;
	}
	if (meta->by[0]) {
		n = snprintf(out + used, size - used, " by=%s", meta->by);
		if (n < 0 || (size_t)n >= size - used)
			return -ENAMETOOLONG;
		used += (size_t)n;
	}
	return (int)used;
}

int replica_key_name(const char *path, char *out, size_t size)
{
	size_t used = 0;
	for (const char *p = path; *p; p++) {
		bool escape = *p == '%' || *p == '/';
		size_t need = escape ? 3 : 1;
		if (used + need >= size)
			return -ENAMETOOLONG;
		if (escape)
			used +=
			    (size_t)snprintf(out + used, size - used, "%%%02X", (unsigned char)*p);
		else
			out[used++] = *p;
	}
	if (used == 0 || used >= size)
		return used ? -ENAMETOOLONG : -EINVAL;
	out[used] = '\0';
	return (int)used;
}

static int parse_entry_value(const char *text, size_t length, struct entry *entry, char *error,
			     size_t error_size)
{
	static const char lock[] = "kind=lock who=", acquire[] = "kind=acquire who=";
	size_t skip;
	if (length >= sizeof(lock) - 1 && memcmp(text, lock, sizeof(lock) - 1) == 0) {
		entry->kind = REPLICA_LOCK;
		skip = sizeof(lock) - 1;
	} else if (length >= sizeof(acquire) - 1 &&
		   memcmp(text, acquire, sizeof(acquire) - 1) == 0) {
		entry->kind = REPLICA_ACQUIRE;
		skip = sizeof(acquire) - 1;
	} else
		return fail(error, error_size, -EINVAL,
			    "entry: value is not 'kind=lock|acquire who=WHO'");
	size_t who = length - skip;
	if (who == 0 || who >= sizeof(entry->who) || memchr(text + skip, '\0', who) ||
	    memchr(text + skip, '\n', who))
		return fail(error, error_size, -EINVAL,
			    "entry: who= empty, too long or not a line");
	memcpy(entry->who, text + skip, who);
	entry->who[who] = '\0';
	return 0;
}

/* ---- applying events ---------------------------------------------------------- */

static struct entry *find_entry(const struct semaphore *semaphore, const char *id, size_t length)
{
	for (size_t i = 0; i < semaphore->count; i++)
		if (strlen(semaphore->entries[i].id) == length &&
		    memcmp(semaphore->entries[i].id, id, length) == 0)
			return &semaphore->entries[i];
	return NULL;
}

static int insert_entry(struct semaphore *semaphore, const struct entry *entry)
{
	if (semaphore->count == semaphore->allocated) {
		size_t allocated = semaphore->allocated ? semaphore->allocated * 2 : 4;
		struct entry *grown = realloc(semaphore->entries, allocated * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		semaphore->entries = grown;
		semaphore->allocated = allocated;
	}
	size_t at = semaphore->count;
	while (at > 0 && semaphore->entries[at - 1].create_revision > entry->create_revision)
		at--;
	memmove(&semaphore->entries[at + 1], &semaphore->entries[at],
		(semaphore->count - at) * sizeof(*entry));
	semaphore->entries[at] = *entry;
	semaphore->count++;
	return 0;
}

static int apply_meta(struct replica *replica, const struct replica_event *event, const char *name,
		      size_t name_length, replica_report_fn *report, void *context, char *error,
		      size_t error_size)
{
	struct replica_meta meta;
	if (!event->deleted) {
		int r =
		    replica_meta_parse(event->value, event->value_length, &meta, error, error_size);
		if (r < 0)
			return r;
	}
	struct semaphore *s = event->deleted ? *slot(replica, name, name_length)
					     : find_or_add(replica, name, name_length);
	if (!s)
		return event->deleted ? 0 : -ENOMEM;
	bool had = s->has_meta;
	if (event->deleted) {
		if (!had)
			return 0;
		s->has_meta = false;
	} else {
		s->meta = meta;
		s->has_meta = true;
		s->meta_revision = event->mod_revision ? event->mod_revision : event->revision;
	}
	s->last_revision = event->revision;
	int holders = settle(s);
	enum replica_change change = event->deleted ? REPLICA_REMOVED
				     : had	    ? REPLICA_CHANGED
						    : REPLICA_CREATED;
	commit(s, holders);
	say(report, context, change, s, NULL, event->revision, value_of(s, holders));
	announce(s, event->revision, report, context);
	drop_if_empty(replica, s);
	return 0;
}

static int apply_entry(struct replica *replica, const struct replica_event *event, const char *name,
		       size_t name_length, const char *id, size_t id_length,
		       replica_report_fn *report, void *context, char *error, size_t error_size)
{
	if (id_length == 0 || id_length >= REPLICA_ENTRY_MAX || memchr(id, '/', id_length))
		return fail(error, error_size, -EINVAL, "entry: id empty, too long or with '/'");
	struct entry fresh = {0};
	if (!event->deleted) {
		int r =
		    parse_entry_value(event->value, event->value_length, &fresh, error, error_size);
		if (r < 0)
			return r;
		if (event->create_revision <= 0 || event->create_revision > event->revision)
			return fail(error, error_size, -EINVAL,
				    "entry: create revision %" PRId64 " at revision %" PRId64,
				    event->create_revision, event->revision);
	}
	struct semaphore *s = event->deleted ? *slot(replica, name, name_length)
					     : find_or_add(replica, name, name_length);
	if (!s)
		return event->deleted ? 0 : -ENOMEM;
	struct entry *e = find_entry(s, id, id_length);
	if (event->deleted) {
		if (!e)
			return 0; /* etcd sends no event for an absent key: nothing to do */
		struct entry gone = *e;
		size_t at = (size_t)(e - s->entries);
		memmove(e, e + 1, (s->count - at - 1) * sizeof(*e));
		s->count--;
		s->last_revision = event->revision;
		int holders = settle(s);
		commit(s, holders);
		say(report, context,
		    gone.state == ENTRY_HOLDING ? REPLICA_RELEASED : REPLICA_CANCELLED, s, &gone,
		    event->revision, value_of(s, holders));
		announce(s, event->revision, report, context);
		drop_if_empty(replica, s);
		return 0;
	}
	if (e) {
		if (e->create_revision != event->create_revision)
			return fail(error, error_size, -EINVAL,
				    "entry %.*s: created again at %" PRId64
				    " without a delete of %" PRId64,
				    (int)id_length, id, event->create_revision, e->create_revision);
		bool persisted = e->lease && !event->lease && e->state == ENTRY_HOLDING;
		e->lease = event->lease;
		e->kind = fresh.kind;
		memcpy(e->who, fresh.who, sizeof(e->who));
		s->last_revision = event->revision;
		if (persisted)
			say(report, context, REPLICA_PERSISTED, s, e, event->revision,
			    value_of(s, s->holders));
		return 0;
	}
	memcpy(fresh.id, id, id_length);
	fresh.id[id_length] = '\0';
	fresh.create_revision = event->create_revision;
	fresh.lease = event->lease;
	fresh.state = ENTRY_WAITING;
	int r = insert_entry(s, &fresh);
	if (r < 0) {
		drop_if_empty(replica, s);
		return r;
	}
	s->last_revision = event->revision;
	int holders = settle(s);
	e = find_entry(s, id, id_length);
	commit(s, holders);
	if (e->state == ENTRY_WAITING)
		say(report, context, REPLICA_QUEUED, s, e, event->revision, value_of(s, holders));
	announce(s, event->revision, report, context);
	return 0;
}

static int apply_directory(struct replica *replica, const struct replica_event *event,
			   const char *name, size_t length, replica_report_fn *report,
			   void *context, char *error, size_t error_size)
{
	if (memchr(name, '/', length))
		return fail(error, error_size, -EINVAL, "dir/ key with a '/' in its name");
	struct directory **at = &replica->directories;
	while (*at && !(strlen((*at)->name) == length && memcmp((*at)->name, name, length) == 0))
		at = &(*at)->next;
	struct replica_report r = {.revision = event->revision};
	if (event->deleted) {
		struct directory *gone = *at;
		if (!gone)
			return 0;
		*at = gone->next;
		r.change = REPLICA_DIRECTORY_REMOVED;
		r.name = gone->name;
		r.who = "";
		if (report)
			report(context, &r);
		free(gone->name);
		free(gone);
		return 0;
	}
	unsigned mode, uid, gid;
	char text[128];
	int consumed = -1;
	if (event->value_length >= sizeof(text))
		return fail(error, error_size, -EINVAL, "dir/: value too long");
	memcpy(text, event->value, event->value_length);
	text[event->value_length] = '\0';
	if (sscanf(text, "mode=%o uid=%u gid=%u%n", &mode, &uid, &gid, &consumed) != 3 ||
	    consumed != (int)event->value_length || mode > 07777)
		return fail(error, error_size, -EINVAL,
			    "dir/: value is not 'mode=OCTAL uid=N gid=N'");
	struct directory *d = *at;
	if (!d) {
		d = calloc(1, sizeof(*d));
		if (!d || !(d->name = strndup(name, length))) {
			free(d);
			return -ENOMEM;
		}
		*at = d;
	}
	d->mode = (mode_t)mode;
	d->uid = (uid_t)uid;
	d->gid = (gid_t)gid;
	r.change = REPLICA_DIRECTORY;
	r.name = d->name;
	r.who = "";
	if (report)
		report(context, &r);
	return 0;
}

void replica_each_directory(const struct replica *replica, replica_directory_fn *each,
			    void *context)
{
	for (const struct directory *d = replica->directories; d; d = d->next)
		each(context, d->name, d->mode, d->uid, d->gid);
}

int replica_directory(const struct replica *replica, const char *name, mode_t *mode, uid_t *uid,
		      gid_t *gid)
{
	for (const struct directory *d = replica->directories; d; d = d->next)
		if (strcmp(d->name, name) == 0) {
			*mode = d->mode;
			*uid = d->uid;
			*gid = d->gid;
			return 0;
		}
	return -ENOENT;
}

/* sem/NAME/open/HOST: HOST has a file open on the semaphore (under its
 * lease). Not part of the rule: it keeps an idle undefined name from being
 * reaped; its delete (a close, or the host's lease gone) is reported. */
static int apply_open(struct replica *replica, const struct replica_event *event, const char *name,
		      size_t name_length, const char *host, size_t host_length,
		      replica_report_fn *report, void *context, char *error, size_t error_size)
{
	if (host_length == 0 || host_length >= REPLICA_ENTRY_MAX || memchr(host, '/', host_length))
		return fail(error, error_size, -EINVAL, "open: host empty, too long or with '/'");
	struct semaphore *s = event->deleted ? *slot(replica, name, name_length)
					     : find_or_add(replica, name, name_length);
	if (!s)
		return event->deleted ? 0 : -ENOMEM;
	size_t at = 0;
	while (at < s->opener_count && (strlen(s->openers[at]) != host_length ||
					memcmp(s->openers[at], host, host_length) != 0))
		at++;
	if (event->deleted) {
		if (at == s->opener_count)
			return 0;
		free(s->openers[at]);
		s->openers[at] = s->openers[--s->opener_count];
		s->last_revision = event->revision;
		say(report, context, REPLICA_CLOSED, s, NULL, event->revision,
		    value_of(s, s->holders));
		drop_if_empty(replica, s);
		return 0;
	}
	if (at < s->opener_count)
		return 0; /* opened again on that host: still open */
	char **grown = realloc(s->openers, (s->opener_count + 1) * sizeof(*grown));
	char *copy = grown ? strndup(host, host_length) : NULL;
	if (grown)
		s->openers = grown;
	if (!copy) {
		drop_if_empty(replica, s);
		return -ENOMEM;
	}
	s->openers[s->opener_count++] = copy;
	s->last_revision = event->revision;
	return 0;
}

int replica_apply(struct replica *replica, const struct replica_event *event,
		  replica_report_fn *report, void *context, char *error, size_t error_size)
{
	if (event->revision < replica->revision)
		return fail(error, error_size, -ESTALE,
			    "revision %" PRId64 " after %" PRId64 ": events out of order",
			    event->revision, replica->revision);
	const char *key = event->key;
	size_t length = event->key_length;
	if (memchr(key, '\0', length))
		return fail(error, error_size, -EINVAL, "key with a NUL byte");
	int r;
	if ((length > 6 && memcmp(key, "hosts/", 6) == 0) ||
	    (length > 5 && memcmp(key, "sync/", 5) == 0))
		r = 0; /* incarnations and sync marks: not part of the rule */
	else if (length > 4 && memcmp(key, "dir/", 4) == 0)
		r = apply_directory(replica, event, key + 4, length - 4, report, context, error,
				    error_size);
	else if (length > 4 && memcmp(key, "sem/", 4) == 0) {
		const char *name = key + 4;
		const char *slash = memchr(name, '/', length - 4);
		if (!slash || slash == name)
			return fail(error, error_size, -EINVAL, "key '%.*s': no sem/NAME/...",
				    (int)length, key);
		size_t name_length = (size_t)(slash - name);
		const char *rest = slash + 1;
		size_t rest_length = length - 4 - name_length - 1;
		if (rest_length == 4 && memcmp(rest, "meta", 4) == 0)
			r = apply_meta(replica, event, name, name_length, report, context, error,
				       error_size);
		else if (rest_length > 2 && memcmp(rest, "q/", 2) == 0)
			r = apply_entry(replica, event, name, name_length, rest + 2,
					rest_length - 2, report, context, error, error_size);
		else if (rest_length > 5 && memcmp(rest, "open/", 5) == 0)
			r = apply_open(replica, event, name, name_length, rest + 5, rest_length - 5,
				       report, context, error, error_size);
		else
			return fail(error, error_size, -EINVAL,
				    "key '%.*s': neither meta, q/ENTRY nor open/HOST", (int)length,
				    key);
	} else
		return fail(error, error_size, -EINVAL,
			    "key '%.*s': not sem/, dir/, hosts/ or sync/",
			    (int)(length > 80 ? 80 : length), key);
	if (r == 0)
		replica->revision = event->revision;
	return r;
}

static bool is_meta(const struct replica_event *event)
{
	return event->key_length >= 5 &&
	       memcmp(event->key + event->key_length - 5, "/meta", 5) == 0;
}

static int load_order(const void *a, const void *b)
{
	const struct replica_event *x = a, *y = b;
	if (is_meta(x) != is_meta(y))
		return is_meta(x) ? -1 : 1;
	return (x->create_revision > y->create_revision) -
	       (x->create_revision < y->create_revision);
}

int replica_load(struct replica *replica, struct replica_event *events, size_t count,
		 replica_report_fn *report, void *context, size_t *failed, char *error,
		 size_t error_size)
{
	qsort(events, count, sizeof(*events), load_order);
	for (size_t i = 0; i < count; i++) {
		int r = replica_apply(replica, &events[i], report, context, error, error_size);
		if (r < 0) {
			if (failed)
				*failed = i;
			return r;
		}
	}
	return 0;
}

int64_t replica_revision(const struct replica *replica)
{
	return replica->revision;
}

/* ---- reading -------------------------------------------------------------------- */

static void state_of(const struct semaphore *s, struct replica_state *state)
{
	memset(state, 0, sizeof(*state));
	state->meta = s->meta;
	for (size_t i = 0; i < s->count; i++) {
		state->holders += s->entries[i].state == ENTRY_HOLDING;
		state->waiting += s->entries[i].state == ENTRY_WAITING;
	}
	state->value = value_of(s, state->holders);
	state->last_revision = s->last_revision;
	state->meta_revision = s->meta_revision;
	state->opened = (int)s->opener_count;
}

int replica_state(const struct replica *replica, const char *name, struct replica_state *state)
{
	const struct semaphore *s = find(replica, name);
	if (!s || !s->has_meta)
		return -ENOENT;
	state_of(s, state);
	return 0;
}

bool replica_open_on(const struct replica *replica, const char *name, const char *host)
{
	const struct semaphore *s = find(replica, name);
	for (size_t i = 0; s && i < s->opener_count; i++)
		if (strcmp(s->openers[i], host) == 0)
			return true;
	return false;
}

int replica_entry(const struct replica *replica, const char *name, const char *entry,
		  int64_t *token)
{
	const struct semaphore *s = find(replica, name);
	const struct entry *e = s ? find_entry(s, entry, strlen(entry)) : NULL;
	if (!e)
		return -ENOENT;
	if (token)
		*token = e->create_revision;
	return e->state == ENTRY_HOLDING ? 1 : e->state == ENTRY_RELAXED ? 2 : 0;
}

void replica_holders(const struct replica *replica, const char *name, char *out, size_t size)
{
	const struct semaphore *s = find(replica, name);
	size_t used = 0;
	if (size)
		out[0] = '\0';
	for (size_t i = 0; s && i < s->count; i++) {
		const struct entry *e = &s->entries[i];
		size_t who = strlen(e->who);
		if (e->state != ENTRY_HOLDING)
			continue;
		if (used + (used ? 1 : 0) + who + 1 > size)
			break;
		if (used)
			out[used++] = ',';
		memcpy(out + used, e->who, who + 1);
		used += who;
	}
}

void replica_each(const struct replica *replica, replica_each_fn *each, void *context)
{
	for (size_t b = 0; b < replica->bucket_count; b++)
		for (const struct semaphore *s = replica->buckets[b]; s; s = s->chain) {
			if (!s->has_meta)
				continue;
			struct replica_state state;
			state_of(s, &state);
			each(context, s->name, &state);
		}
}

/* ---- planners ----------------------------------------------------------------------- */

static const struct semaphore *planned(const struct replica *replica, const char *name,
				       struct replica_meta *meta)
{
	const struct semaphore *s = find(replica, name);
	if (!s || !s->has_meta)
		return NULL;
	*meta = s->meta;
	return s;
}

int replica_plan_limit(const struct replica *replica, const char *name, int limit,
		       struct replica_meta *meta)
{
	const struct semaphore *s = planned(replica, name, meta);
	if (!s)
		return -ENOENT;
	if (limit < 0 || limit > 32767)
		return -EINVAL;
	if (limit < s->meta.plain + s->holders)
		return -EBUSY;
	meta->limit = limit;
	return 0;
}

int replica_plan_set(const struct replica *replica, const char *name, int value,
		     struct replica_meta *meta, char forgive[][REPLICA_ENTRY_MAX], int forgive_max)
{
	const struct semaphore *s = planned(replica, name, meta);
	if (!s)
		return -ENOENT;
	int acquired = 0;
	for (size_t i = 0; i < s->count; i++)
		acquired +=
		    s->entries[i].state == ENTRY_HOLDING && s->entries[i].kind == REPLICA_ACQUIRE;
	/* An acquire unit belongs to its owner: never forgiven. Plain units
	 * are forgiven first, then lock units (their entries deleted). */
	if (value < 0 || value > s->meta.limit - acquired)
		return -ERANGE;
	int in_use = s->meta.limit - value;
	if (in_use >= s->holders) {
		meta->plain = in_use - s->holders;
		return 0;
	}
	meta->plain = 0;
	int count = 0;
	for (size_t i = 0; i < s->count && count < s->holders - in_use; i++) {
		const struct entry *e = &s->entries[i];
		if (e->state != ENTRY_HOLDING || e->kind != REPLICA_LOCK)
			continue;
		if (count == forgive_max)
			return -E2BIG;
		memcpy(forgive[count++], e->id, REPLICA_ENTRY_MAX);
	}
	return count;
}

static bool range_in_use(const struct semaphore *s, const struct replica_range *range)
{
	for (size_t i = 0; i < s->count; i++)
		if (s->entries[i].create_revision >= range->from &&
		    s->entries[i].create_revision <= range->to)
			return true;
	return false;
}

int replica_plan_relax(const struct replica *replica, const char *name, struct replica_meta *meta)
{
	const struct semaphore *s = planned(replica, name, meta);
	if (!s)
		return -ENOENT;
	int64_t first = 0, last = 0;
	for (size_t i = 0; i < s->count; i++)
		if (s->entries[i].state == ENTRY_WAITING) {
			if (!first)
				first = s->entries[i].create_revision;
			last = s->entries[i].create_revision;
		}
	if (!first)
		return 0;
	meta->relaxed_count = 0;
	for (int i = 0; i < s->meta.relaxed_count; i++)
		if (range_in_use(s, &s->meta.relaxed[i]))
			meta->relaxed[meta->relaxed_count++] = s->meta.relaxed[i];
	if (meta->relaxed_count == REPLICA_RELAXED_MAX)
		return -ENOSPC;
	meta->relaxed[meta->relaxed_count++] = (struct replica_range){first, last};
	return 0;
}

int replica_plan_unlock(const struct replica *replica, const char *name, char *entry,
			size_t entry_size, struct replica_meta *meta)
{
	const struct semaphore *s = planned(replica, name, meta);
	if (!s)
		return -ENOENT;
	for (size_t i = 0; i < s->count; i++) {
		const struct entry *e = &s->entries[i];
		if (e->state == ENTRY_HOLDING && e->kind == REPLICA_LOCK && e->lease == 0) {
			if (snprintf(entry, entry_size, "%s", e->id) >= (int)entry_size)
				return -ENAMETOOLONG;
			return 1;
		}
	}
	if (s->meta.plain == 0)
		return -EOVERFLOW;
	meta->plain--;
	return 0;
}
