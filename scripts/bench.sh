#!/usr/bin/env bash
# bench.sh [--quick]: build with optimisation in build-bench/, then measure
# semfs next to the floors it runs on (scripts/bench.py prints the table and
# writes bench-results.csv). Run as root: it mounts FUSE filesystems.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
if [ ! -d build-bench ]; then
	meson setup build-bench --buildtype=release >/dev/null
fi
ninja -C build-bench >/dev/null
exec python3 scripts/bench.py --build build-bench "$@"
