#!/usr/bin/env bash
# run.sh [MOUNTPOINT]: install what is missing, build, and run semfs in the
# foreground with its built-in defaults on ./mnt (or MOUNTPOINT). Ctrl-C
# unmounts.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
source "$top/scripts/deps.sh"
[ -d "$top/build" ] || meson setup "$top/build" "$top" >/dev/null
ninja -C "$top/build" >/dev/null
mountpoint=${1:-$PWD/mnt}
mkdir -p "$mountpoint"
cat <<TEXT
semfs on $mountpoint (Ctrl-C to unmount). In another shell, try:
  touch $mountpoint/db                       # a semaphore, limit 1
  echo lock > $mountpoint/db                 # take the unit
  echo 'lock 2' > $mountpoint/db             # waits 2 s, then ETIMEDOUT
  echo unlock > $mountpoint/db               # give it back
  cat $mountpoint/db                         # its journal; tail -f follows it
  cat $mountpoint/semaphore.status           # every semaphore at a glance
  getfattr -d $mountpoint/db                 # value, limit, waiting, holders...
TEXT
exec "$top/build/semfs" -f "$mountpoint"
