/* client.c: the native dialect from the client's side (see client.h). */
#include "client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLIENT_BUFFER 8192

struct client {
	int fd;
	size_t start, length; /* unread bytes in `buffer` */
	char buffer[CLIENT_BUFFER];
};

int client_parse_address(const char *text, char *host, size_t host_size, unsigned *port)
{
	const char *colon = strrchr(text, ':');
	size_t host_length = colon ? (size_t)(colon - text) : strlen(text);

	if (host_length == 0 || host_length >= host_size)
		return -EINVAL;
	memcpy(host, text, host_length);
	host[host_length] = '\0';
	if (colon) {
		char *end;
		errno = 0;
		unsigned long value = strtoul(colon + 1, &end, 10);
		if (errno || end == colon + 1 || *end || value == 0 || value > 65535)
			return -EINVAL;
		*port = (unsigned)value;
	}
	return 0;
}

int client_connect(const char *host, unsigned port, struct client **out, char *error, size_t size)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *addresses = NULL;
	char service[16];
	int r = -EHOSTUNREACH;

	snprintf(service, sizeof(service), "%u", port);
	int gai = getaddrinfo(host, service, &hints, &addresses);
	if (gai != 0) {
		snprintf(error, size, "%s: %s", host, gai_strerror(gai));
		return -EHOSTUNREACH;
	}
	struct client *client = calloc(1, sizeof(*client));
	if (!client) {
		freeaddrinfo(addresses);
		snprintf(error, size, "out of memory");
		return -ENOMEM;
	}
	client->fd = -1;
	for (struct addrinfo *a = addresses; a && client->fd < 0; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
			r = -errno;
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		client->fd = fd;
	}
	freeaddrinfo(addresses);
	if (client->fd < 0) {
		snprintf(error, size, "%s:%u: %s", host, port, strerror(-r));
		free(client);
		return r;
	}
	*out = client;
	return 0;
}

int client_read_line(struct client *client, char *line, size_t size)
{
	size_t copied = 0;

	for (;;) {
		char *newline = memchr(client->buffer + client->start, '\n', client->length);
		size_t take =
		    newline ? (size_t)(newline - (client->buffer + client->start)) : client->length;
		size_t room = size - 1 - copied;
		memcpy(line + copied, client->buffer + client->start, take < room ? take : room);
		copied += take < room ? take : room;
		client->start += take;
		client->length -= take;
		if (newline) {
			client->start++; /* the newline */
			client->length--;
			line[copied] = '\0';
			return 1;
		}
		client->start = 0;
		ssize_t n = recv(client->fd, client->buffer, sizeof(client->buffer), 0);
		if (n < 0 && errno == EINTR)
			return -EINTR;
		if (n < 0)
			return -errno;
		if (n == 0) {
			line[copied] = '\0';
			return 0;
		}
		client->length = (size_t)n;
	}
}

int client_errno_named(const char *name)
{
	for (int e = 1; e < 200; e++) {
		const char *known = strerrorname_np(e);
		if (known && strcmp(known, name) == 0)
			return e;
	}
	return 0;
}

int client_request(struct client *client, const char *request, char *reply, size_t size)
{
	size_t length = strlen(request);
	char line[CLIENT_BUFFER];

	/* One send for the line and its newline. */
	if (length + 1 > sizeof(line))
		return -E2BIG;
	memcpy(line, request, length);
	line[length] = '\n';
	for (size_t sent = 0; sent < length + 1;) {
		ssize_t n = send(client->fd, line + sent, length + 1 - sent, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			return -EINTR;
		if (n < 0)
			return -errno;
		sent += (size_t)n;
	}
	int r = client_read_line(client, line, sizeof(line));
	if (r <= 0) {
		snprintf(reply, size, "connection closed by the server");
		return r < 0 ? r : -ECONNRESET;
	}
	if (strncmp(line, "ok", 2) == 0 && (line[2] == '\0' || line[2] == ' ')) {
		snprintf(reply, size, "%s", line[2] ? line + 3 : "");
		return 0;
	}
	if (strncmp(line, "err ", 4) == 0) {
		char name[64];
		const char *message = strchr(line + 4, ' ');
		size_t name_length = message ? (size_t)(message - (line + 4)) : strlen(line + 4);
		snprintf(name, sizeof(name), "%.*s", (int)name_length, line + 4);
		snprintf(reply, size, "%s", message ? message + 1 : name);
		int e = client_errno_named(name);
		return -(e ? e : EPROTO);
	}
	snprintf(reply, size, "unexpected reply: %.200s", line);
	return -EPROTO;
}

void client_close(struct client *client)
{
	if (!client)
		return;
	close(client->fd);
	free(client);
}
