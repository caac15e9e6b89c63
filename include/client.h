/* client.h: the client side of the native dialect (see native.h), as msem
 * uses it: one connection, one request line at a time, replies read as
 * lines. Errors are negative errnos; `err ERRNO_NAME message` replies come
 * back as that errno with the message. */
#ifndef SEMFS_CLIENT_H
#define SEMFS_CLIENT_H

#include <stddef.h>

#define CLIENT_DEFAULT_PORT 53559u

struct client;

/* Resolve and connect to HOST:PORT. On failure `error` says why. */
int client_connect(const char *host, unsigned port, struct client **out, char *error, size_t size);

/* Send `request` (no newline) and read its reply line. Returns 0 for `ok`,
 * with what follows "ok" (maybe "") in `reply`; -errno for `err`, with the
 * server's explanation in `reply`; -ECONNRESET when the connection ended. */
int client_request(struct client *client, const char *request, char *reply, size_t size);

/* The next line the server sends, without its newline: 1, or 0 at the end
 * of the connection, or -errno. Longer lines are cut to `size` - 1 bytes. */
int client_read_line(struct client *client, char *line, size_t size);

void client_close(struct client *client);

/* "ETIMEDOUT" -> ETIMEDOUT; 0 for a name this libc does not know. */
int client_errno_named(const char *name);

/* "HOST" or "HOST:PORT" (port 1..65535) into its parts; -EINVAL if malformed. */
int client_parse_address(const char *text, char *host, size_t host_size, unsigned *port);

#endif
