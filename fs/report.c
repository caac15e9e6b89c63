/* report.c: semaphore.status lines and attributes (see report.h). */
#include "report.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A name may hold any byte but '/': a newline must not start a line.
 * Control characters and '\\' are written as \ooo, the rest as is. */
static void put_name(FILE *out, const char *path)
{
	for (const char *p = path; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c == 0x7f || c == '\\')
			fprintf(out, "\\%03o", c);
		else
			fputc(c, out);
	}
}

static void put_status_line(void *context, const struct store_metric *m)
{
	FILE *out = context;

	if (m->gone)
		return; /* no line: the caller says EIDRM */
	put_name(out, m->path);
	fprintf(out,
		": %d limit=%u value=%d waiting=%zu holders=%s token=%" PRIu64
		" key=0x%08x semid=%d\n",
		(int)m->limit - m->value, m->limit, m->value, m->waiting,
		m->holders[0] ? m->holders : "-", m->token, (unsigned)m->key, m->semid);
}

/* open_memstream's text, or -ENOMEM with nothing left allocated. */
static int finish(FILE *out, char **text, size_t *length)
{
	bool failed = ferror(out);
	if (fclose(out) != 0 || failed || !*text) {
		free(*text);
		*text = NULL;
		return -ENOMEM;
	}
	(void)length;
	return 0;
}

int report_status_text(struct store *store, const struct store_caller *caller, char **text,
		       size_t *length)
{
	*text = NULL;
	FILE *out = open_memstream(text, length);
	if (!out)
		return -ENOMEM;
	store_metrics(store, caller, put_status_line, out, NULL);
	return finish(out, text, length);
}

int report_semaphore_status(struct store *store, struct semaphore *semaphore, char **text)
{
	size_t length = 0;
	*text = NULL;
	FILE *out = open_memstream(text, &length);
	if (!out)
		return -ENOMEM;
	int r = store_semaphore_metric(store, semaphore, put_status_line, out);
	int f = finish(out, text, &length);
	if (r < 0 || f < 0) {
		free(*text);
		*text = NULL;
		return r < 0 ? r : f;
	}
	if (length == 0) {
		free(*text);
		*text = NULL;
		return -EIDRM;
	}
	(*text)[length - 1] = '\0'; /* no newline */
	return 0;
}

const char *const report_attribute_names[] = {"value", "limit",	  "waiting", "key",
					      "semid", "holders", "token",   NULL};

struct attribute_request {
	const char *name;
	FILE *out;
	bool known;
};

static void put_attribute(void *context, const struct store_metric *m)
{
	struct attribute_request *request = context;
	const char *name = request->name;
	FILE *out = request->out;

	request->known = true;
	if (strcmp(name, "value") == 0)
		fprintf(out, "%d", m->value);
	else if (strcmp(name, "limit") == 0)
		fprintf(out, "%u", m->limit);
	else if (strcmp(name, "waiting") == 0)
		fprintf(out, "%zu", m->waiting);
	else if (strcmp(name, "key") == 0)
		fprintf(out, "0x%08x", (unsigned)m->key);
	else if (strcmp(name, "semid") == 0)
		fprintf(out, "%d", m->semid);
	else if (strcmp(name, "token") == 0)
		fprintf(out, "%" PRIu64, m->token);
	else if (strcmp(name, "holders") == 0) {
		/* One holder a line: "pid:1\npid:1\ntcp:...\n". */
		for (const char *p = m->holders; *p; p++)
			fputc(*p == ',' ? '\n' : *p, out);
		if (m->holders[0])
			fputc('\n', out);
	} else
		request->known = false;
}

int report_attribute(struct store *store, struct semaphore *semaphore, const char *name,
		     char **text)
{
	size_t length = 0;
	*text = NULL;
	FILE *out = open_memstream(text, &length);
	if (!out)
		return -ENOMEM;
	struct attribute_request request = {name, out, false};
	int r = store_semaphore_metric(store, semaphore, put_attribute, &request);
	int f = finish(out, text, &length);
	if (r == 0 && !request.known)
		r = -ENODATA;
	if (r < 0 || f < 0) {
		free(*text);
		*text = NULL;
		return r < 0 ? r : f;
	}
	return (int)length;
}
