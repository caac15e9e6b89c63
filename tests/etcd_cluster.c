/* etcd_cluster.c: real etcd members for the cluster tests (see the header). */
#include "etcd_cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* A port nobody listens on now; its socket stays open in *fd so that the
 * next call cannot get the same one (closed once all are chosen). */
static int free_port(int *fd)
{
	*fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t length = sizeof(a);
	if (*fd < 0 || bind(*fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(*fd, (struct sockaddr *)&a, &length) != 0)
		return -1;
	return ntohs(a.sin_port);
}

/* One HTTP/1.0 POST (or GET without a body) to 127.0.0.1:port: the status
 * code, the body in `out`; -1 when nobody answers within a second. */
static int http(int port, const char *path, const char *body, char *out, size_t size)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval second = {.tv_sec = 1};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof(second));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &second, sizeof(second));
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	char request[1024];
	int n = body ? snprintf(request, sizeof(request),
				"POST %s HTTP/1.0\r\nContent-Type: application/json\r\n"
				"Content-Length: %zu\r\n\r\n%s",
				path, strlen(body), body)
		     : snprintf(request, sizeof(request), "GET %s HTTP/1.0\r\n\r\n", path);
	char response[8192];
	size_t got = 0;
	if (write(fd, request, (size_t)n) != n) {
		close(fd);
		return -1;
	}
	ssize_t r;
	while (got < sizeof(response) - 1 &&
	       (r = read(fd, response + got, sizeof(response) - 1 - got)) > 0)
		got += (size_t)r;
	close(fd);
	response[got] = '\0';
	int status;
	if (sscanf(response, "HTTP/%*s %d", &status) != 1)
		return -1;
	const char *start = strstr(response, "\r\n\r\n");
	snprintf(out, size, "%s", start ? start + 4 : "");
	return status;
}

static bool spawn(struct etcd_cluster *c, int member, bool fresh)
{
	char name[16], data[200], client[64], peer[64], initial[ETCD_CLUSTER_MAX * 64] = "",
										   log_path[220];
	snprintf(name, sizeof(name), "m%d", member);
	snprintf(data, sizeof(data), "%s/%s", c->dir, name);
	snprintf(client, sizeof(client), "%s://127.0.0.1:%d", c->tls_dir[0] ? "https" : "http",
		 c->client_ports[member]);
	snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", c->peer_ports[member]);
	for (int i = 0; i < c->size; i++) {
		size_t used = strlen(initial);
		snprintf(initial + used, sizeof(initial) - used, "%sm%d=http://127.0.0.1:%d",
			 i ? "," : "", i, c->peer_ports[i]);
	}
	snprintf(log_path, sizeof(log_path), "%s/%s.log", c->dir, name);
	pid_t pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0) {
		/* Gone with the test process, even when its teardown never runs. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* ETCD_* variables are read as flags: none may leak in. */
		for (char **e = environ; *e;)
			if (strncmp(*e, "ETCD_", 5) == 0) {
				char variable[256];
				snprintf(variable, sizeof(variable), "%.*s",
					 (int)(strchr(*e, '=') - *e), *e);
				unsetenv(variable);
			} else
				e++;
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		char cert[200], key[200], ca[200], metrics[64];
		const char *argv[40] = {"etcd",
					"--name",
					name,
					"--data-dir",
					data,
					"--listen-client-urls",
					client,
					"--advertise-client-urls",
					client,
					"--listen-peer-urls",
					peer,
					"--initial-advertise-peer-urls",
					peer,
					"--initial-cluster",
					initial,
					"--initial-cluster-state",
					fresh ? "new" : "existing",
					"--initial-cluster-token",
					c->dir,
					"--heartbeat-interval",
					"100",
					"--election-timeout",
					"1000",
					"--log-level",
					"warn"};
		int n = 0;
		while (argv[n])
			n++;
		if (c->tls_dir[0]) {
			snprintf(cert, sizeof(cert), "%s/%s.pem", c->tls_dir, c->tls_server);
			snprintf(key, sizeof(key), "%s/server-key.pem", c->tls_dir);
			snprintf(ca, sizeof(ca), "%s/ca.pem", c->tls_dir);
			snprintf(metrics, sizeof(metrics), "http://127.0.0.1:%d",
				 c->metrics_ports[member]);
			const char *tls[] = {"--cert-file",
					     cert,
					     "--key-file",
					     key,
					     "--trusted-ca-file",
					     ca,
					     "--client-cert-auth",
					     "--listen-metrics-urls",
					     metrics,
					     NULL};
			for (int i = 0; tls[i]; i++)
				argv[n++] = tls[i];
		}
		argv[n] = NULL;
		execv("/usr/bin/etcd", (char *const *)argv);
		_exit(127);
	}
	c->pids[member] = pid;
	return true;
}

bool etcd_cluster_healthy(const struct etcd_cluster *c, int member)
{
	char body[512];
	int port = c->tls_dir[0] ? c->metrics_ports[member] : c->client_ports[member];
	return c->pids[member] > 0 && http(port, "/health", NULL, body, sizeof(body)) == 200 &&
	       strstr(body, "\"health\":\"true\"") != NULL;
}

static bool wait_healthy(struct etcd_cluster *c, int member, int seconds)
{
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		if (etcd_cluster_healthy(c, member))
			return true;
		int status;
		if (waitpid(c->pids[member], &status, WNOHANG) == c->pids[member]) {
			/* Its log goes with the directory: its end is said here. */
			char path[256], tail[1024] = "";
			snprintf(path, sizeof(path), "%s/m%d.log", c->dir, member);
			FILE *log = fopen(path, "re");
			if (log) {
				fseek(log, 0, SEEK_END);
				long size = ftell(log);
				fseek(log, size > 1000 ? size - 1000 : 0, SEEK_SET);
				size_t got = fread(tail, 1, sizeof(tail) - 1, log);
				tail[got] = '\0';
				fclose(log);
			}
			fprintf(stderr, "etcd member %d exited; the end of its log:\n%s\n", member,
				tail);
			c->pids[member] = 0;
			return false;
		}
		usleep(50000);
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (now.tv_sec - start.tv_sec < seconds);
	fprintf(stderr, "etcd member %d not healthy after %d s (see %s/m%d.log)\n", member, seconds,
		c->dir, member);
	return false;
}

static bool start_once(struct etcd_cluster *c, int size, const char *tls_dir,
		       const char *tls_server)
{
	memset(c, 0, sizeof(*c));
	c->size = size;
	snprintf(c->tls_dir, sizeof(c->tls_dir), "%s", tls_dir ? tls_dir : "");
	snprintf(c->tls_server, sizeof(c->tls_server), "%s", tls_server ? tls_server : "");
	/* On disk, not tmpfs: each member preallocates 64 MB of WAL. */
	snprintf(c->dir, sizeof(c->dir), "/var/tmp/semfs-etcd.XXXXXX");
	if (!mkdtemp(c->dir))
		return false;
	int held[3 * ETCD_CLUSTER_MAX];
	for (int i = 0; i < size; i++) {
		c->client_ports[i] = free_port(&held[3 * i]);
		c->peer_ports[i] = free_port(&held[3 * i + 1]);
		c->metrics_ports[i] = free_port(&held[3 * i + 2]);
		snprintf(c->endpoints[i], sizeof(c->endpoints[i]), "%s://127.0.0.1:%d",
			 c->tls_dir[0] ? "https" : "http", c->client_ports[i]);
		size_t used = strlen(c->endpoint_list);
		snprintf(c->endpoint_list + used, sizeof(c->endpoint_list) - used, "%s%s",
			 i ? "," : "", c->endpoints[i]);
	}
	for (int i = 0; i < 3 * size; i++)
		if (held[i] >= 0)
			close(held[i]);
	for (int i = 0; i < size; i++)
		if (!spawn(c, i, true)) {
			etcd_cluster_stop(c);
			return false;
		}
	for (int i = 0; i < size; i++)
		if (!wait_healthy(c, i, 20)) {
			etcd_cluster_stop(c);
			return false;
		}
	return true;
}

/* A member can still lose its port between the choice and its bind (an
 * outgoing connection takes it as its local port): a start that fails so
 * is tried again with new ports, twice. */
static bool start(struct etcd_cluster *c, int size, const char *tls_dir, const char *tls_server)
{
	if (access("/usr/bin/etcd", X_OK) != 0) {
		fprintf(stderr, "no /usr/bin/etcd (Debian package etcd-server): skipped\n");
		exit(77);
	}
	for (int attempt = 0; attempt < 3; attempt++) {
		if (start_once(c, size, tls_dir, tls_server))
			return true;
		fprintf(stderr, "etcd: start %d of 3 failed%s\n", attempt + 1,
			attempt < 2 ? "; again with new ports" : "");
	}
	return false;
}

bool etcd_cluster_start(struct etcd_cluster *c, int size)
{
	return start(c, size, NULL, NULL);
}

bool etcd_cluster_start_tls(struct etcd_cluster *c, int size, const char *tls_dir,
			    const char *server)
{
	return start(c, size, tls_dir, server);
}

bool etcd_tls_files(const char *dir)
{
	/* P-256 keys: quick to make; etcd's Go TLS and curl's OpenSSL both
	 * take them. */
	char command[4096];
	snprintf(
	    command, sizeof(command),
	    "cd '%s' && set -e; key='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'; "
	    "openssl req -x509 $key -keyout ca-key.pem -out ca.pem -days 2 "
	    "-subj /CN=semfs-test-ca; "
	    "openssl req -x509 $key -keyout other-ca-key.pem -out other-ca.pem -days 2 "
	    "-subj /CN=semfs-other-ca; "
	    "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' "
	    ">server.ext; "
	    "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' "
	    ">server-only.ext; "
	    "openssl req $key -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1; "
	    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial "
	    "-out server.pem -days 2 -extfile server.ext; "
	    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial "
	    "-out server-only.pem -days 2 -extfile server-only.ext; "
	    "printf 'extendedKeyUsage=clientAuth\\n' >client.ext; "
	    "openssl req $key -keyout client-key.pem -out client.csr -subj /CN=semfs-host; "
	    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial "
	    "-out client.pem -days 2 -extfile client.ext",
	    dir);
	char quiet[4200];
	snprintf(quiet, sizeof(quiet),
		 "( %s ) >'%s/openssl.log' 2>&1 || { cat '%s/openssl.log' >&2; "
		 "exit 1; }",
		 command, dir, dir);
	return system(quiet) == 0;
}

void etcd_cluster_kill(struct etcd_cluster *c, int member)
{
	if (c->pids[member] <= 0)
		return;
	kill(c->pids[member], SIGKILL);
	waitpid(c->pids[member], NULL, 0);
	c->pids[member] = 0;
}

bool etcd_cluster_restart(struct etcd_cluster *c, int member)
{
	etcd_cluster_kill(c, member);
	return spawn(c, member, false) && wait_healthy(c, member, 20);
}

void etcd_cluster_pause(struct etcd_cluster *c, int member, bool paused)
{
	if (c->pids[member] > 0)
		kill(c->pids[member], paused ? SIGSTOP : SIGCONT);
}

int etcd_cluster_leader(const struct etcd_cluster *c)
{
	for (int i = 0; i < c->size; i++) {
		char body[1024];
		if (c->pids[i] <= 0 || http(c->client_ports[i], "/v3/maintenance/status", "{}",
					    body, sizeof(body)) != 200)
			continue;
		const char *member = strstr(body, "\"member_id\":\"");
		const char *leader = strstr(body, "\"leader\":\"");
		if (member && leader &&
		    strncmp(member + 13, leader + 10, strcspn(leader + 10, "\"")) == 0)
			return i;
	}
	return -1;
}

int etcd_cluster_post(const struct etcd_cluster *c, const char *path, const char *body)
{
	for (int i = 0; i < c->size; i++) {
		char out[1024];
		int status =
		    c->pids[i] > 0 ? http(c->client_ports[i], path, body, out, sizeof(out)) : -1;
		if (status >= 0)
			return status;
	}
	return -1;
}

void etcd_cluster_stop(struct etcd_cluster *c)
{
	for (int i = 0; i < c->size; i++) {
		if (c->pids[i] > 0) {
			kill(c->pids[i], SIGCONT);
			etcd_cluster_kill(c, i);
		}
	}
	if (c->dir[0]) {
		char command[200];
		snprintf(command, sizeof(command), "rm -rf '%s'", c->dir);
		if (system(command) != 0)
			fprintf(stderr, "could not remove %s\n", c->dir);
	}
}
