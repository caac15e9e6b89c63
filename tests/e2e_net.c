/* e2e_net.c: the native dialect over raw sockets, for end-to-end tests
 * (see e2e_net.h). */
#include "e2e_net.h"

#include "e2e.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int connect_from(const char *source, unsigned port)
{
	struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	if (source) {
		struct sockaddr_in local = {.sin_family = AF_INET};
		inet_pton(AF_INET, source, &local.sin_addr);
		cr_assert_eq(bind(fd, (struct sockaddr *)&local, sizeof(local)), 0, "bind %s",
			     source);
	}
	inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
	if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

int net_connect(void)
{
	int fd = connect_from(NULL, e2e.port);
	cr_assert_geq(fd, 0, "connect to 127.0.0.1:%u: %s", e2e.port, strerror(-fd));
	return fd;
}

void net_send(int fd, const char *text)
{
	cr_assert_eq(send(fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
}

/* One line without its newline (buffer), or NULL after `ms` or EOF. */
const char *net_line(int fd, int ms)
{
	static char line[8192];
	size_t length = 0;
	double end = e2e_now() + ms / 1000.0;

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)((end - e2e_now()) * 1000);
		if (left < 0 || poll(&p, 1, left) <= 0)
			return NULL;
		char c;
		if (read(fd, &c, 1) != 1) /* read(): sockets and pipes alike */
			return NULL;
		if (c == '\n')
			break;
		if (length < sizeof(line) - 1)
			line[length++] = c;
	}
	line[length] = '\0';
	return line;
}

char *net_long_line(int fd, int ms)
{
	size_t length = 0, allocated = 65536;
	char *line = malloc(allocated);
	double end = e2e_now() + ms / 1000.0;

	cr_assert_not_null(line);
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)((end - e2e_now()) * 1000);
		char c;
		if (left < 0 || poll(&p, 1, left) <= 0 || read(fd, &c, 1) != 1) {
			free(line);
			return NULL;
		}
		if (c == '\n')
			break;
		if (length + 1 == allocated) {
			allocated *= 2;
			line = realloc(line, allocated);
			cr_assert_not_null(line);
		}
		line[length++] = c;
	}
	line[length] = '\0';
	return line;
}

void expect_line(int fd, const char *prefix)
{
	const char *line = net_line(fd, 3000);
	cr_assert_not_null(line, "no reply, expected '%s'", prefix);
	cr_assert(strncmp(line, prefix, strlen(prefix)) == 0, "got '%s', expected '%s...'", line,
		  prefix);
}

/* A request and the start of its one-line reply. */
void ask(int fd, const char *request, const char *prefix)
{
	char text[8300];
	snprintf(text, sizeof(text), "%s\n", request);
	net_send(fd, text);
	expect_line(fd, prefix);
}

/* True if the server closes (EOF or reset) within `ms`, ignoring data. */
bool closed_by_server(int fd, int ms)
{
	double end = e2e_now() + ms / 1000.0;
	char buffer[4096];

	while (e2e_now() < end) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 50) <= 0)
			continue;
		ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
		if (n <= 0)
			return true;
	}
	return false;
}

/* Close with RST instead of FIN. */
void reset_connection(int fd)
{
	struct linger linger = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger));
	close(fd);
}

/* ---- ACE's client, in Python ------------------------------------------------- */

struct ace_client ace_spawn_from(const char *name, const char *source)
{
	const char *script = getenv("ACE_CLIENT");
	int in[2], out[2];
	char port[16];
	struct ace_client client;

	cr_assert_not_null(script, "ACE_CLIENT is not set (run through meson test)");
	cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	snprintf(port, sizeof(port), "%u", e2e.port);
	client.pid = e2e_fork();
	if (client.pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		if (source)
			execlp("python3", "python3", script, port, name, "--source", source,
			       (char *)NULL);
		else
			execlp("python3", "python3", script, port, name, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	client.to = in[1];
	client.from = out[0];
	return client;
}

void ace_say(struct ace_client *client, const char *command)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "%s\n", command);
	cr_assert_eq(write(client->to, line, (size_t)n), n);
}

/* The client's next report, within `ms`. */
const char *ace_hear(struct ace_client *client, int ms)
{
	return net_line(client->from, ms); /* poll + read work on pipes too */
}

void ace_expect(struct ace_client *client, const char *report, int ms)
{
	const char *line = ace_hear(client, ms);
	cr_assert_not_null(line, "the ACE client said nothing within %d ms, expected '%s'", ms,
			   report);
	cr_assert_str_eq(line, report);
}

void ace_kill(struct ace_client *client)
{
	kill(client->pid, SIGKILL);
	waitpid(client->pid, NULL, 0);
	close(client->to);
	close(client->from);
}

struct ace_client ace_spawn(const char *name)
{
	return ace_spawn_from(name, NULL);
}
