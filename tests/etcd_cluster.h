/* etcd_cluster.h: a real etcd cluster for tests: members on 127.0.0.1 with
 * free ports, data in a temporary directory on disk (etcd preallocates its
 * WAL), started from /usr/bin/etcd and killed by PID with SIGKILL (a clean
 * stop of all members can take 9 s). Skips (exit 77) where etcd is absent. */
#ifndef SEMFS_TEST_ETCD_CLUSTER_H
#define SEMFS_TEST_ETCD_CLUSTER_H

#include <stdbool.h>
#include <sys/types.h>

#define ETCD_CLUSTER_MAX 5

struct etcd_cluster {
	int size;
	char dir[128];
	pid_t pids[ETCD_CLUSTER_MAX];
	int client_ports[ETCD_CLUSTER_MAX];
	int peer_ports[ETCD_CLUSTER_MAX];
	char endpoints[ETCD_CLUSTER_MAX][64];	   /* http://127.0.0.1:PORT */
	char endpoint_list[ETCD_CLUSTER_MAX * 64]; /* comma-separated */
	/* TLS: clients on https:// with a certificate from tls_dir's CA;
	 * /health on a plain metrics port. "" without. */
	char tls_dir[128];
	char tls_server[32]; /* its certificate: tls_dir/NAME.pem */
	int metrics_ports[ETCD_CLUSTER_MAX];
};

/* Start `size` members and wait until each says it is healthy (20 s at
 * most): false with a message on stderr otherwise. */
bool etcd_cluster_start(struct etcd_cluster *cluster, int size);
/* The same with TLS on the client port: etcd presents tls_dir/SERVER.pem
 * (key tls_dir/server-key.pem) and accepts only clients with a certificate
 * from tls_dir/ca.pem (see etcd_tls_files). Peers talk plain HTTP. */
bool etcd_cluster_start_tls(struct etcd_cluster *cluster, int size, const char *tls_dir,
			    const char *server);
/* Make, with openssl, in `dir`: ca.pem; server.pem + server-key.pem for
 * 127.0.0.1, for server and client authentication (etcd's gateway presents
 * it to its own gRPC server), and server-only.pem, the same without client
 * authentication; client.pem + client-key.pem; other-ca.pem, a CA that
 * signed none of them. false with openssl's words on stderr. */
bool etcd_tls_files(const char *dir);
/* SIGKILL one member (and reap it); etcd_cluster_restart brings it back
 * with its data. */
void etcd_cluster_kill(struct etcd_cluster *cluster, int member);
bool etcd_cluster_restart(struct etcd_cluster *cluster, int member);
/* SIGSTOP / SIGCONT of one member. */
void etcd_cluster_pause(struct etcd_cluster *cluster, int member, bool paused);
/* Whether a member answers /health with true. */
bool etcd_cluster_healthy(const struct etcd_cluster *cluster, int member);
/* The member that is the leader now, or -1. */
int etcd_cluster_leader(const struct etcd_cluster *cluster);
/* A request of another etcd user (POST path body to a live member): the
 * HTTP status, or -1 when no member answers. */
int etcd_cluster_post(const struct etcd_cluster *cluster, const char *path, const char *body);
/* Kill every member, remove the data. */
void etcd_cluster_stop(struct etcd_cluster *cluster);

#endif
