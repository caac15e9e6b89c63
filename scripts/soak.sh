#!/usr/bin/env bash
# soak.sh [SECONDS]: mixed random load on one semfs daemon from both
# front-ends for SECONDS (default 600), the no-leak invariant checked every
# second (see scripts/soak.py). SOAK_SEED=N repeats a run's random choices.
# Needs root (or /dev/fuse access); builds in build/ like test.sh.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-600}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
	echo "usage: $0 [SECONDS]" >&2
	exit 2
fi
source "$top/scripts/deps.sh"
build=${SEMFS_BUILD_DIR:-$top/build}
[ -d "$build" ] || meson setup "$build" "$top" >/dev/null
ninja -C "$build" semfs >/dev/null
exec python3 "$top/scripts/soak.py" "$build" "$seconds"
