/* etcd_txn.c: the cluster floor — one etcd transaction round trip through
 * semfs's own client code (cluster/etcd.c), as a lock's entry put is: a
 * put-if-absent of a fresh key, then its delete.
 *
 *   bench-etcd-txn ENDPOINTS COUNT [KEY_PREFIX]
 *
 * ENDPOINTS: comma-separated http://HOST:PORT. KEY_PREFIX (default
 * /bench-floor/): where the keys go; under hosts' PREFIX/sync/ the hosts'
 * watches carry each event too (and their replicas ignore it), as they do
 * semfs's own transactions. Prints the median
 * microseconds of one transaction, then the mean. */
#include "etcd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool done;
static int failed;

static void on_done(void *context, int error, const char *message, struct json_object *response)
{
	done = true;
	if (error < 0) {
		fprintf(stderr, "bench-etcd-txn: %s\n", message);
		failed = 1;
	}
}

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double call(struct etcd *etcd, struct json_object *body)
{
	double start = now_us();
	done = false;
	if (etcd_call(etcd, "/v3/kv/txn", body, true, on_done, NULL) < 0)
		exit(1);
	while (!done)
		etcd_poll(etcd, 100);
	if (failed)
		exit(1);
	return now_us() - start;
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: bench-etcd-txn ENDPOINTS COUNT [KEY_PREFIX]\n");
		return 2;
	}
	struct etcd_options options = {.request_timeout_ms = 5000};
	char *list = strdup(argv[1]);
	for (char *p = strtok(list, ", "); p && options.endpoint_count < ETCD_ENDPOINTS_MAX;
	     p = strtok(NULL, ", "))
		options.endpoints[options.endpoint_count++] = p;
	char error[256];
	struct etcd *etcd = etcd_new(&options, error, sizeof(error));
	if (!etcd) {
		fprintf(stderr, "bench-etcd-txn: %s\n", error);
		return 1;
	}
	int count = atoi(argv[2]);
	double *times = calloc((size_t)count, sizeof(*times)), sum = 0;
	for (int i = 0; i < count; i++) {
		char key[256];
		int length =
		    snprintf(key, sizeof(key), "%s%d", argc == 4 ? argv[3] : "/bench-floor/", i);
		struct json_object *compare = json_object_new_object();
		json_object_object_add(compare, "target", json_object_new_string("CREATE"));
		json_object_object_add(compare, "key", etcd_bytes(key, (size_t)length));
		json_object_object_add(compare, "result", json_object_new_string("EQUAL"));
		json_object_object_add(compare, "create_revision", etcd_int64(0));
		struct json_object *put = json_object_new_object(), *op = json_object_new_object();
		json_object_object_add(put, "key", etcd_bytes(key, (size_t)length));
		json_object_object_add(put, "value", etcd_bytes("kind=lock who=bench", 19));
		json_object_object_add(op, "request_put", put);
		struct json_object *txn = json_object_new_object();
		struct json_object *compares = json_object_new_array(),
				   *ops = json_object_new_array();
		json_object_array_add(compares, compare);
		json_object_array_add(ops, op);
		json_object_object_add(txn, "compare", compares);
		json_object_object_add(txn, "success", ops);
		times[i] = call(etcd, txn);
		sum += times[i];
		struct json_object *delete = json_object_new_object();
		json_object_object_add(delete, "key", etcd_bytes(key, (size_t)length));
		done = false;
		etcd_call(etcd, "/v3/kv/deleterange", delete, true, on_done, NULL);
		while (!done)
			etcd_poll(etcd, 100);
	}
	qsort(times, (size_t)count, sizeof(*times), compare_doubles);
	printf("%.1f us (median of %d transactions; mean %.1f us)\n", times[count / 2], count,
	       sum / count);
	etcd_free(etcd);
	free(times);
	free(list);
	return 0;
}
