/* ace_section.h: ACE's own configuration section, byte for byte, as the
 * issue quotes it; semfs must load it unchanged. */
#ifndef SEMFS_TEST_ACE_SECTION_H
#define SEMFS_TEST_ACE_SECTION_H

#define ACE_SECTION_PORT 53559
#define ACE_SECTION                                                                                \
	"[service_network_semaphore]\n"                                                            \
	"module = saq.network_semaphore\n"                                                         \
	"class = NetworkSemaphoreServer\n"                                                         \
	"description = Network Semaphore - global network service for controlling "                \
	"concurrent access to limited resources\n"                                                 \
	"enabled = yes\n"                                                                          \
	"bind_address = 127.0.0.1\n"                                                               \
	"bind_port = 53559\n"                                                                      \
	"remote_address = 127.0.0.1\n"                                                             \
	"remote_port = 53559\n"                                                                    \
	"allowed_ipv4 = 127.0.0.1\n"                                                               \
	"stats_dir = var/network_semaphore\n"

#endif
