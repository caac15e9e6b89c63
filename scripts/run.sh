#!/usr/bin/env bash
# run.sh [-p PORT] [-c CONFIG] [MOUNTPOINT]: install what is missing, build,
# and run semfs in the foreground on ./mnt (or MOUNTPOINT), with its built-in
# defaults or CONFIG, its network front-end on PORT (default: CONFIG's
# bind_port, else 53559). Ctrl-C unmounts.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
usage() {
	echo "usage: scripts/run.sh [-p PORT] [-c CONFIG] [MOUNTPOINT]" >&2
	exit 2
}
port="" config=""
while getopts "p:c:h" option; do
	case $option in
	p) port=$OPTARG ;;
	c) config=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage
mountpoint=${1:-$PWD/mnt}
if [ -n "$port" ] && ! [[ $port =~ ^[0-9]+$ && $port -le 65535 ]]; then
	echo "run.sh: -p $port: not a port number" >&2
	exit 2
fi
if [ -n "$config" ] && [ ! -r "$config" ]; then
	echo "run.sh: -c $config: cannot read it" >&2
	exit 2
fi

source "$top/scripts/deps.sh"
if [ ! -d "$top/build" ]; then
	echo "run.sh: configuring the build in $top/build ..."
	meson setup "$top/build" "$top" >/dev/null
fi
echo "run.sh: building (ninja -C build) ..."
ninja -C "$top/build" | sed -u 's/^/  /'

# The options semfs gets: the user's file, then a port override.
args=(-f)
[ -n "$config" ] && args+=(-c "$config")
if [ -n "$port" ]; then
	override=$(mktemp /tmp/semfs-run.XXXXXX.ini)
	trap 'rm -f "$override"' EXIT
	printf '[service_network_semaphore]\nbind_port = %s\nremote_port = %s\n' "$port" "$port" >"$override"
	args+=(-c "$override")
fi
"$top/build/semfs" --check "${args[@]:1}" >/dev/null || exit 1

# Fail before the banner if the port is taken: semfs would refuse it anyway.
if [ -z "$port" ]; then
	port=53559
	if [ -n "$config" ]; then
		configured=$(sed -n 's/^[[:space:]]*[Bb][Ii][Nn][Dd]_[Pp][Oo][Rr][Tt][[:space:]]*[=:][[:space:]]*\([0-9]*\).*/\1/p' "$config" | tail -n 1)
		[ -n "$configured" ] && port=$configured
	fi
fi
if [ "$port" != 0 ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
	echo "run.sh: port $port is in use (another semfs?); choose another with -p PORT" >&2
	exit 1
fi
mkdir -p "$mountpoint"

cat <<TEXT
semfs on $mountpoint, network on 127.0.0.1:$port (Ctrl-C to unmount).
msem is $top/build/msem; for this shell: export PATH=$top/build:\$PATH
In another shell, try:
  touch $mountpoint/db                       # a semaphore, limit 1
  echo lock > $mountpoint/db                 # take the unit
  echo 'lock 2' > $mountpoint/db             # waits 2 s, then ETIMEDOUT
  echo unlock > $mountpoint/db               # give it back
  cat $mountpoint/db                         # its journal; tail -f follows it
  cat $mountpoint/semaphore.status           # every semaphore at a glance
  getfattr -d $mountpoint/db                 # value, limit, waiting, holders...
  $top/build/msem -H 127.0.0.1:$port -s      # the same over TCP
TEXT
exec "$top/build/semfs" "${args[@]}" "$mountpoint"
