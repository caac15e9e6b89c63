#!/usr/bin/env bash
# deps.sh: install what semfs needs to build, run and test (Debian 12).
# Sourced by run.sh and test.sh; installs only what is missing.
set -euo pipefail
semfs_packages=(gcc libc6-dev pkg-config meson ninja-build libfuse3-dev fuse3
	libinih-dev libsystemd-dev libcriterion-dev inotify-tools attr python3 coreutils procps
	gnuplot-nox netcat-openbsd mandoc util-linux iproute2
	libcurl4-openssl-dev libjson-c-dev etcd-server curl)
# A script that needs more (fuzz.sh: clang) names it in SEMFS_EXTRA_PACKAGES.
read -r -a semfs_extra <<<"${SEMFS_EXTRA_PACKAGES:-}"
semfs_packages+=("${semfs_extra[@]}")
semfs_missing=()
for package in "${semfs_packages[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
		semfs_missing+=("$package")
done
if [ ${#semfs_missing[@]} -gt 0 ]; then
	echo "installing: ${semfs_missing[*]}"
	sudo_cmd=""
	[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
	$sudo_cmd apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
		"${semfs_missing[@]}" >/dev/null
fi
