#!/usr/bin/env bash
# test.sh [--sanitize] [MESON-TEST-ARGS...]: install what is missing, build,
# and run every test (unit and end-to-end: real FUSE mounts, real daemons).
# --sanitize builds in build-asan with AddressSanitizer + UBSan and fails on
# any report, the daemon's included. Needs root (or /dev/fuse access).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# gdb: the fault tests stop the daemon at an exact request before killing it;
# strace: a mount test counts the getxattr calls the real ls -l makes.
SEMFS_EXTRA_PACKAGES="gdb strace ${SEMFS_EXTRA_PACKAGES:-}" source "$top/scripts/deps.sh"
build=${SEMFS_BUILD_DIR:-$top/build}
options=()
if [ "${1:-}" = "--sanitize" ]; then
	shift
	build=$top/build-asan
	options=(-Db_sanitize=address,undefined -Db_lundef=false)
fi
[ -d "$build" ] || meson setup "$build" "$top" "${options[@]}" >/dev/null
ninja -C "$build"
status=0
meson test -C "$build" --print-errorlogs --num-processes 1 "$@" || status=$?
# A test killed mid-way cannot clean up after itself: sweep what it left.
"$top/scripts/cleanup-tests.sh"
exit $status
