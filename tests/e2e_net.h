/* e2e_net.h: talk to the daemon's network front-end over raw sockets on
 * 127.0.0.1, for end-to-end tests. Failures to connect or send fail the test. */
#ifndef SEMFS_TEST_E2E_NET_H
#define SEMFS_TEST_E2E_NET_H

#include <stdbool.h>
#include <sys/types.h>

/* A connection to `port`, optionally from `source`; -errno if refused. */
int connect_from(const char *source, unsigned port);
int net_connect(void); /* to e2e.port; fails the test if refused */
void net_send(int fd, const char *text);
/* One line without its newline (static buffer), or NULL after `ms` or EOF. */
const char *net_line(int fd, int ms);
/* A line of any length, malloc'd, or NULL after `ms` or EOF. */
char *net_long_line(int fd, int ms);
void expect_line(int fd, const char *prefix);
/* A request and the start of its one-line reply. */
void ask(int fd, const char *request, const char *prefix);
/* True if the server closes (EOF or reset) within `ms`, ignoring data. */
bool closed_by_server(int fd, int ms);
/* Close with RST instead of FIN. */
void reset_connection(int fd);

/* ACE's client logic (tests/clients/ace_client.py), steered over pipes. It
 * prints "wait", "locked", "ok", "closed", or "fallback REASON" where ACE's
 * client would have fallen back to a local semaphore. */
struct ace_client {
	pid_t pid;
	int to, from; /* its stdin, its stdout */
};
struct ace_client ace_spawn(const char *name);
struct ace_client ace_spawn_from(const char *name, const char *source);
void ace_say(struct ace_client *client, const char *command);
const char *ace_hear(struct ace_client *client, int ms); /* its next report */
void ace_expect(struct ace_client *client, const char *report, int ms);
void ace_kill(struct ace_client *client);

#endif
