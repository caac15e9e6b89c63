#!/usr/bin/env bash
# cleanup-tests.sh: unmount and remove what crashed tests left in
# ${TMPDIR:-/tmp}/semfs-test.*: mounts, daemons, SysV sets, directories.
set -uo pipefail
for dir in "${TMPDIR:-/tmp}"/semfs-test.*; do
	[ -d "$dir" ] || continue
	if [ -f "$dir/daemon.pid" ]; then
		kill -TERM "$(cat "$dir/daemon.pid")" 2>/dev/null && sleep 0.5
	fi
	if grep -q " $dir/mnt " /proc/mounts; then
		fusermount3 -u -z "$dir/mnt" 2>/dev/null || umount -l "$dir/mnt" 2>/dev/null
	fi
	if [ -d "$dir/state/tree" ]; then
		grep -rh '^key=' "$dir/state/tree" 2>/dev/null | cut -d= -f2 |
			while read -r key; do ipcrm -S "$key" 2>/dev/null; done
	fi
	rm -rf "$dir"
done
exit 0
