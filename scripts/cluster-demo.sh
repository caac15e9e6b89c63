#!/usr/bin/env bash
# cluster-demo.sh start|stop DIR: three hosts on one machine. `start` runs a
# 3-member etcd cluster (free ports on 127.0.0.1, data in DIR/etcd) and three
# semfs daemons — hosta, hostb, hostc — mounted on DIR/a, DIR/b, DIR/c, each
# with its own state directory and port, all on the same semaphores. `stop`
# stops the hosts (SIGTERM: they unmount) and kills etcd (SIGKILL: a clean
# stop of all members can take 9 s). Uses the semfs on PATH, else build/.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
usage() {
	echo "usage: $0 start|stop DIR" >&2
	exit 2
}
[ $# -eq 2 ] || usage
action=$1 given=$2
dir=$(realpath -m "$given")
semfs=$(command -v semfs || echo "$top/build/semfs")

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop() {
	for host in a b c; do
		[ -f "$dir/$host.pid" ] && kill "$(cat "$dir/$host.pid")" 2>/dev/null || true
	done
	for host in a b c; do
		for _ in $(seq 1 100); do
			grep -q " $dir/$host " /proc/mounts || break
			sleep 0.05
		done
		if grep -q " $dir/$host " /proc/mounts; then
			fusermount3 -u -z "$dir/$host" 2>/dev/null || umount -l "$dir/$host"
		fi
		rm -f "$dir/$host.pid"
		# The hosts' SysV mirror sets, as their records name them.
		if [ -d "$dir/$host.state/tree" ]; then
			grep -rhs '^key=0x' "$dir/$host.state/tree" | cut -d= -f2 |
				while read -r key; do ipcrm -S "$key" 2>/dev/null || true; done
		fi
	done
	for member in 0 1 2; do
		[ -f "$dir/etcd$member.pid" ] && kill -9 "$(cat "$dir/etcd$member.pid")" 2>/dev/null || true
		rm -f "$dir/etcd$member.pid"
	done
	rm -rf "$dir/etcd"
}

case $action in
start)
	command -v etcd >/dev/null || {
		echo "$0: no etcd (Debian package etcd-server)" >&2
		exit 1
	}
	mkdir -p "$dir/etcd"
	endpoints="" peers=""
	declare -a client_ports peer_ports
	for member in 0 1 2; do
		client_ports[member]=$(free_port)
		peer_ports[member]=$(free_port)
		peers+="${peers:+,}m$member=http://127.0.0.1:${peer_ports[member]}"
		endpoints+="${endpoints:+, }http://127.0.0.1:${client_ports[member]}"
	done
	for member in 0 1 2; do
		# ETCD_* variables are read as flags: none may leak in.
		env $(env | sed -n 's/^\(ETCD_[^=]*\)=.*/-u \1/p') etcd --name "m$member" \
			--data-dir "$dir/etcd/m$member" \
			--listen-client-urls "http://127.0.0.1:${client_ports[member]}" \
			--advertise-client-urls "http://127.0.0.1:${client_ports[member]}" \
			--listen-peer-urls "http://127.0.0.1:${peer_ports[member]}" \
			--initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[member]}" \
			--initial-cluster "$peers" --initial-cluster-state new \
			--initial-cluster-token "semfs-demo-$$" --log-level warn \
			>"$dir/etcd/m$member.log" 2>&1 &
		echo $! >"$dir/etcd$member.pid"
	done
	for member in 0 1 2; do
		for _ in $(seq 1 200); do
			curl -s "http://127.0.0.1:${client_ports[member]}/health" 2>/dev/null |
				grep -q '"health":"true"' && break
			sleep 0.1
		done
		curl -s "http://127.0.0.1:${client_ports[member]}/health" | grep -q '"health":"true"' || {
			echo "$0: etcd member m$member is not healthy (see $dir/etcd/m$member.log)" >&2
			stop
			exit 1
		}
	done
	echo "etcd: 3 members healthy"
	for host in a b c; do
		mkdir -p "$dir/$host" "$dir/$host.state"
		cat >"$dir/$host.ini" <<EOF
[semfs]
state_dir = $dir/$host.state
[service_network_semaphore]
bind_port = $(free_port)
[cluster]
endpoints = $endpoints
host = host$host
EOF
		# In the background once mounted; a cluster that does not answer
		# is an exit 1 with the reason.
		"$semfs" -c "$dir/$host.ini" "$dir/$host" 2>"$dir/$host.log" || {
			cat "$dir/$host.log" >&2
			stop
			exit 1
		}
		pgrep -f -o "semfs -c $dir/$host.ini" >"$dir/$host.pid"
		echo "host$host: $given/$host"
	done
	;;
stop)
	stop
	echo "stopped"
	;;
*)
	usage
	;;
esac
