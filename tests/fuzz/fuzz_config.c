/* fuzz_config.c: the INI configuration loader (inih underneath). Whatever the
 * file, config_load either fails with a "FILE:LINE: message" or gives
 * settings inside their documented ranges; nothing leaks. */
#include "config.h"
#include "name.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void ignore_warning(const char *message)
{
	if (message[0] == '\0')
		abort(); /* a warning says what */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	char path[64], error[512];
	struct config config;

	if (fd < 0 && (fd = memfd_create("fuzz-config", 0)) < 0)
		abort();
	if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	config_defaults(&config);
	error[0] = '\0';
	int r = config_load(&config, path, ignore_warning, error, sizeof(error));
	if (r < 0) {
		if (strncmp(error, path, strlen(path)) != 0)
			abort(); /* every error names the file (and line) */
	} else {
		if (config.journal_max < CONFIG_JOURNAL_MIN ||
		    config.journal_max > CONFIG_JOURNAL_MAX || config.bind_port > 65535 ||
		    config.remote_port > 65535 || config.state_dir[0] == '\0' ||
		    config.network_mode > 0777 || config.network_user[0] == '\0')
			abort();
		for (size_t i = 0; i < config.defined_count; i++)
			if (config.defined[i].name[0] == '\0' || config.defined[i].limit > 32767 ||
			    name_check(config.defined[i].name, strlen(config.defined[i].name),
				       error, sizeof(error)) != 0)
				abort();
	}
	config_free(&config);
	return 0;
}
