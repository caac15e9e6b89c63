/* replay.c: main() for a fuzz target built without libFuzzer. Runs every
 * file under the given files or directories through LLVMFuzzerTestOneInput,
 * so the seed corpus and every input that once crashed run in the ordinary
 * test suite (plain and under ASan + UBSan). A crash is a test failure. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
	FILE *file = fopen(path, "rb");
	if (!file) {
		perror(path);
		return -1;
	}
	size_t size = 0, allocated = 4096;
	uint8_t *data = malloc(allocated);
	size_t n;
	while (data && (n = fread(data + size, 1, allocated - size, file)) > 0) {
		size += n;
		if (size == allocated) {
			uint8_t *bigger = realloc(data, allocated *= 2);
			if (!bigger)
				free(data);
			data = bigger;
		}
	}
	fclose(file);
	if (!data) {
		fprintf(stderr, "%s: out of memory\n", path);
		return -1;
	}
	LLVMFuzzerTestOneInput(data, size);
	free(data);
	return 0;
}

static int replay(const char *path, int *count)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		perror(path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		(*count)++;
		return replay_file(path);
	}
	DIR *dir = opendir(path);
	if (!dir) {
		perror(path);
		return -1;
	}
	int status = 0;
	struct dirent *entry;
	while ((entry = readdir(dir))) {
		if (entry->d_name[0] == '.')
			continue;
		char child[4096];
		snprintf(child, sizeof(child), "%s/%s", path, entry->d_name);
		if (replay(child, count) < 0)
			status = -1;
	}
	closedir(dir);
	return status;
}

int main(int argc, char **argv)
{
	int count = 0, status = 0;

	for (int i = 1; i < argc; i++)
		if (replay(argv[i], &count) < 0)
			status = 1;
	printf("replayed %d inputs\n", count);
	if (count == 0) {
		fprintf(stderr, "no inputs: a replay that runs nothing proves nothing\n");
		return 1;
	}
	return status;
}
