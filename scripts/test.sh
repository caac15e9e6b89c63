#!/usr/bin/env bash
# test.sh: install what is missing, build, and run every test (unit and
# end-to-end: real FUSE mounts, real daemons). Needs root or /dev/fuse access.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
source "$top/scripts/deps.sh"
build=${SEMFS_BUILD_DIR:-$top/build}
[ -d "$build" ] || meson setup "$build" "$top" >/dev/null
ninja -C "$build"
status=0
meson test -C "$build" --print-errorlogs --num-processes 1 "$@" || status=$?
# A test killed mid-way cannot clean up after itself: sweep what it left.
"$top/scripts/cleanup-tests.sh"
exit $status
