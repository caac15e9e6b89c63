#!/usr/bin/env bash
# fuzz.sh TARGET|all SECONDS: run a libFuzzer target (command, ace, native,
# config, replica) for SECONDS, starting from its committed seed corpus
# (tests/fuzz/corpus/TARGET) and its regressions. `all` runs every target,
# two at a time. New corpus entries go to build-fuzz/corpus/TARGET, crashes
# to build-fuzz/crashes/: copy a crash to tests/fuzz/regressions/TARGET/ and
# it replays in the ordinary test suite from then on.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
targets=(command ace native config replica)
if [ $# -ne 2 ] || ! [[ $2 =~ ^[0-9]+$ ]]; then
	echo "usage: $0 {${targets[*]// /|}|all} SECONDS" >&2
	exit 2
fi
target=$1 seconds=$2
if [ "$target" != all ] && [[ ! " ${targets[*]} " =~ " $target " ]]; then
	echo "fuzz.sh: unknown target '$target' (one of: ${targets[*]}, all)" >&2
	exit 2
fi

SEMFS_EXTRA_PACKAGES="clang libclang-rt-14-dev" source "$top/scripts/deps.sh"

build=$top/build-fuzz
if [ ! -d "$build" ]; then
	CC=clang meson setup "$build" "$top" -Dfuzzing=true -Db_sanitize=address,undefined \
		-Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link >/dev/null
fi
[ "$target" = all ] && selected=("${targets[@]}") || selected=("$target")
ninja -C "$build" "${selected[@]/#/tests/fuzz/fuzz-}" >/dev/null

run_one() {
	local name=$1 corpus=$build/corpus/$1 log=$build/fuzz-$1.log
	local inputs=("$top/tests/fuzz/corpus/$name" "$top/tests/fuzz/regressions/$name")
	mkdir -p "$corpus" "$build/crashes"
	local status=0
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
		"$build/tests/fuzz/fuzz-$name" -max_total_time="$seconds" -timeout=10 \
		-rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
		-artifact_prefix="$build/crashes/$name-" "$corpus" "${inputs[@]}" >"$log" 2>&1 ||
		status=$?
	local runs
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
	if [ $status -ne 0 ]; then
		echo "fuzz $name: FAILED after ${runs:-?} executions; log $log:" >&2
		grep -E "ERROR|SUMMARY|runtime error|==[0-9]+==|Test unit written" "$log" | head -20 >&2
		return 1
	fi
	echo "fuzz $name: ${runs:-?} executions in $seconds s, no failure" \
		"(corpus $(ls "$corpus" | wc -l) new + $(ls "$top/tests/fuzz/corpus/$name" | wc -l) seeds)"
}

# Two at a time: CI has two cores.
status=0
pids=()
for name in "${selected[@]}"; do
	run_one "$name" &
	pids+=($!)
	if [ ${#pids[@]} -eq 2 ]; then
		for pid in "${pids[@]}"; do wait "$pid" || status=1; done
		pids=()
	fi
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
