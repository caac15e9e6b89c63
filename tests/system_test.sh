#!/usr/bin/env bash
# system_test.sh BUILD_DIR: semfs as a system tool. mount(8) with the fstab
# line the README documents (through mount.fuse3, on a temporary mount
# point), and `meson install --destdir` into a temporary root. Needs root.
set -euo pipefail
build=$(realpath "$1")
work=$(mktemp -d /tmp/semfs-system.XXXXXX)
failures=0

fail() {
	echo "FAIL: $*" >&2
	failures=$((failures + 1))
}

linked=""
cleanup() {
	[ -n "$linked" ] && rm -f "$linked"
	if grep -q " $work/mnt fuse.semfs " /proc/self/mounts; then
		umount "$work/mnt" 2>/dev/null || fusermount3 -u -z "$work/mnt" || true
	fi
	# The SysV sets the state directory records, then everything else.
	for record in $(find "$work/state" -type f 2>/dev/null); do
		key=$(sed -n 's/^key=//p' "$record" | head -n1)
		[ -n "$key" ] && ipcrm -S "$key" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
	echo "SKIP: mount(8) and install into a root need root"
	exit 77
fi

# --- fstab: semfs MOUNTPOINT fuse.semfs defaults,config=FILE 0 0 -------------
mkdir -p "$work/mnt" "$work/state"
cat >"$work/semfs.ini" <<INI
[semfs]
state_dir = $work/state
[service_network_semaphore]
enabled = no
INI
echo "semfs $work/mnt fuse.semfs defaults,config=$work/semfs.ini 0 0" >"$work/fstab"
# mount.fuse3 runs `semfs semfs MOUNTPOINT -o ...` through /bin/sh, and
# mount(8) gives helpers no PATH of ours: the shell's default path must find
# this build's semfs. A link in /usr/local/sbin for the test's duration,
# unless a semfs is installed there already (then that one is tested).
if [ ! -e /usr/local/sbin/semfs ]; then
	mkdir -p /usr/local/sbin
	ln -s "$build/semfs" /usr/local/sbin/semfs
	linked=/usr/local/sbin/semfs
else
	echo "note: /usr/local/sbin/semfs exists; mount(8) runs that one"
fi
if mount -T "$work/fstab" "$work/mnt"; then
	grep -q " $work/mnt fuse.semfs " /proc/self/mounts || fail "mount(8) said yes, nothing mounted"
	touch "$work/mnt/db" || fail "create through the fstab mount"
	echo lock >"$work/mnt/db" || fail "lock through the fstab mount"
	[ "$(getfattr --only-values -n user.semfs.value "$work/mnt/db")" = 0 ] ||
		fail "the lock did not take the unit"
	echo unlock >"$work/mnt/db" || fail "unlock"
	pid=$(pgrep -f "semfs.* $work/mnt" | head -n1 || true)
	[ -n "$pid" ] || fail "no daemon in the background"
	umount "$work/mnt" || fail "umount"
	grep -q " $work/mnt fuse.semfs " /proc/self/mounts && fail "still mounted after umount"
	for _ in $(seq 50); do
		[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && fail "the daemon outlived umount"
else
	fail "mount -T $work/fstab $work/mnt"
fi

# --- meson install --destdir -----------------------------------------------------
root="$work/root"
meson install -C "$build" --destdir "$root" --no-rebuild --quiet >/dev/null ||
	fail "meson install"
prefix=$(meson introspect "$build" --buildoptions |
	python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
for file in sbin/semfs bin/msem share/man/man8/semfs.8 share/man/man1/msem.1 \
	share/man/man5/semfs.ini.5 share/doc/semfs/examples/semfs.ini \
	lib/systemd/system/semfs@.service lib/systemd/system/semfs-net.service; do
	[ -e "$root$prefix/$file" ] || fail "not installed: $prefix/$file"
done
unit="$root$prefix/lib/systemd/system/semfs@.service"
if [ -e "$unit" ]; then
	grep -q "^ExecStart=$prefix/sbin/semfs -f " "$unit" || fail "the unit's ExecStart"
	grep -q "^Restart=on-failure" "$unit" || fail "the unit does not restart on failure"
	grep -q "^ExecStopPost=.*fusermount3 -u" "$unit" || fail "the unit does not unmount"
	if command -v systemd-analyze >/dev/null; then
		systemd-analyze verify "$unit" 2>&1 | grep -v "^$" | grep -iv "not found\|No such file\|is not executable\|Command 'man " &&
			fail "systemd-analyze verify complains"
	fi
fi
net_unit="$root$prefix/lib/systemd/system/semfs-net.service"
grep -q "^ExecStart=$prefix/sbin/semfs --no-mount -f " "$net_unit" ||
	fail "semfs-net.service does not run semfs --no-mount"
if command -v systemd-analyze >/dev/null; then
	systemd-analyze verify "$net_unit" 2>&1 | grep -v "^$" | grep -iv "not found\|No such file\|is not executable\|Command 'man " &&
		fail "systemd-analyze verify complains about semfs-net.service"
fi
source_dir=$(cd "$(dirname "$0")/.." && pwd)
# --- man pages: mandoc -Tlint finds nothing at warning level ------------------
if command -v mandoc >/dev/null; then
	for page in "$source_dir"/doc/semfs.8 "$source_dir"/doc/msem.1 "$source_dir"/doc/semfs.ini.5; do
		lint=$(mandoc -Tlint -W warning "$page" 2>&1) || true
		[ -z "$lint" ] || fail "mandoc -Tlint: $lint"
	done
else
	fail "mandoc is not installed (scripts/deps.sh installs it)"
fi

# --- scripts/run.sh: a taken port is said before the banner ------------------
taken=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$taken" "$source_dir/scripts/run.sh" "$work/runmnt" >"$work/run.out" 2>&1 <<'PY' ||
import socket, subprocess, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
r = subprocess.run(["bash", sys.argv[2], "-p", sys.argv[1], sys.argv[3]], capture_output=True, text=True, timeout=300)
print(r.stdout + r.stderr)
sys.exit(0 if r.returncode == 1 else 1)
PY
	fail "run.sh -p TAKEN did not exit 1: $(cat "$work/run.out")"
grep -q "port $taken is in use" "$work/run.out" || fail "run.sh does not say the port is taken"
grep -q "semfs on" "$work/run.out" && fail "run.sh printed its banner for a taken port"

version=$("$root$prefix/sbin/semfs" --version)
head -n 1 <<<"$version" | grep -q "^semfs " ||
	fail "installed semfs --version: semfs's version is not on the first line"
"$root$prefix/bin/msem" --version | grep -q "^msem " || fail "installed msem --version"

if [ "$failures" -gt 0 ]; then
	echo "$failures failure(s)" >&2
	exit 1
fi
echo "system: fstab mount through mount(8) and meson install --destdir: OK"
