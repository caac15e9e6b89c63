#!/usr/bin/env python3
"""bench.py: semfs's figures next to the floors they run on, measured in the
same run on the same machine (see scripts/bench.sh, which builds first).

Each figure is measured REPS times; the table gives min/median/max, the
floor it is compared with, the ratio median/floor and whether the target is
met. A floor that a figure is divided by is measured in turns with that
figure (floor, figure, floor, figure...): this machine's loopback and FUSE
round trips drift by a third over minutes, and a floor taken at the start
of the run once made a ratio swing from met to missed. Scale figures (RSS, threads, CPU) have no floor: their target bounds the
median itself. Writes bench-results.csv
(figure,unit,min,median,max,floor,ratio,target,met) and, with gnuplot,
bench-results.png (the ratios against their targets).
"""
import argparse
import csv
import glob
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPS = 5


def run(command, timeout=60):
    """First number a benchmark program prints (and the rest of its line)."""
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         timeout=timeout).stdout
    numbers = []
    for word in out.split("\n")[0].replace("=", " ").split():
        try:
            numbers.append(float(word))
        except ValueError:
            pass
    return numbers


def wait_mounted(path, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        with open("/proc/self/mounts") as mounts:
            if any(line.split()[1] == path for line in mounts):
                return
        time.sleep(0.05)
    raise RuntimeError("nothing mounted on " + path)


class Daemon:
    """A foreground process that mounts `mountpoint`; stopped by SIGTERM."""

    def __init__(self, command, mountpoint, log=None):
        self.mountpoint = mountpoint
        self.log = log
        err = open(log, "w") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(command, stderr=err)
        wait_mounted(mountpoint)

    @property
    def pid(self):
        return self.process.pid

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        subprocess.run(["fusermount3", "-u", "-z", self.mountpoint],
                       stderr=subprocess.DEVNULL, check=False)


class Semfs(Daemon):
    """semfs with a fresh state directory (on tmpfs when there is one, as
    the default /run/semfs is on Debian) and its TCP port on 127.0.0.1."""

    def __init__(self, build, work, name, network=True, extra=""):
        self.work = os.path.join(work, name)
        os.mkdir(self.work)
        mount = os.path.join(self.work, "mnt")
        os.mkdir(mount)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else self.work
        self.state = tempfile.mkdtemp(prefix="semfs-bench-state.", dir=shm)
        config = os.path.join(self.work, "semfs.ini")
        with open(config, "w") as out:
            # Loopback clients administer: they use the semaphores made in the mount.
            out.write("[semfs]\nstate_dir = %s\nadmin_ipv4 = 127.0.0.1\n"
                      "[service_network_semaphore]\n" % self.state)
            out.write("bind_port = 0\n" if network else "enabled = no\n")
            out.write(extra)
        log = os.path.join(self.work, "semfs.log")
        super().__init__([os.path.join(build, "semfs"), "-f", "-c", config, mount], mount, log)
        self.port = None
        end = time.time() + 10
        while network and self.port is None and time.time() < end:
            with open(log) as text:
                found = re.search(r"listening on [0-9.]+:(\d+)", text.read())
            self.port = int(found.group(1)) if found else None
            time.sleep(0.02)

    def path(self, name):
        return os.path.join(self.mountpoint, name)

    def stop(self):
        super().stop()
        remove_sets(self.state)
        shutil.rmtree(self.state, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    """A 3-member etcd cluster on 127.0.0.1 (Debian's etcd-server), data on
    disk under `work` (each member preallocates its WAL); killed with
    SIGKILL (a clean stop of all members can take 9 s)."""

    def __init__(self, work):
        clients = [free_port() for _ in range(3)]
        peers = [free_port() for _ in range(3)]
        initial = ",".join("m%d=http://127.0.0.1:%d" % (i, peers[i]) for i in range(3))
        self.endpoints = ",".join("http://127.0.0.1:%d" % port for port in clients)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self.members = []
        for i in range(3):
            client, peer = "http://127.0.0.1:%d" % clients[i], "http://127.0.0.1:%d" % peers[i]
            self.members.append(subprocess.Popen(
                ["etcd", "--name", "m%d" % i, "--data-dir", os.path.join(work, "etcd-m%d" % i),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", work, "--log-level", "warn"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        end = time.time() + 20
        for port in clients:
            while not self.healthy(port):
                if time.time() > end:
                    self.stop()
                    raise RuntimeError("etcd did not become healthy")
                time.sleep(0.1)

    @staticmethod
    def healthy(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                return b'"health":"true"' in s.recv(4096)
        except OSError:
            return False

    def stop(self):
        for member in self.members:
            member.kill()
            member.wait()


def remove_sets(state_dir):
    """The SysV sets a semfs state directory records."""
    for root, _, files in os.walk(state_dir):
        for name in files:
            try:
                with open(os.path.join(root, name)) as record:
                    key = record.readline().strip().split("=")[1]
                subprocess.run(["ipcrm", "-S", key], stderr=subprocess.DEVNULL, check=False)
            except (OSError, IndexError):
                pass


def cpu_seconds(pid):
    """CPU time of every thread of `pid`, in seconds (schedstat: ns)."""
    total = 0
    for path in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(path) as stat:
                total += int(stat.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def status_field(pid, field):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field + " missing")


def waiting(path):
    try:
        return int(os.getxattr(path, "user.semfs.waiting"))
    except OSError:
        return -1


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.tools = os.path.join(args.build, "tests")
        self.rows = []
        self.seconds = 0.3 if self.quick else 2.0  # per rate measurement

    def tool(self, name, *arguments):
        return [os.path.join(self.tools, name)] + [str(a) for a in arguments]

    @staticmethod
    def measure(fn, reps=REPS):
        return Bench.spread([fn() for _ in range(reps)])

    @staticmethod
    def in_turns(floor_fn, fn, reps=REPS):
        """The floor and the figure measured alternately: both spreads."""
        floors, values = [], []
        for _ in range(reps):
            floors.append(floor_fn())
            values.append(fn())
        return Bench.spread(floors), Bench.spread(values)

    def against(self, floor_title, floor_fn, title, unit, fn, target):
        """A figure and its floor, measured in turns: the floor's row, then
        the figure's. Returns the floor's median."""
        floor_values, values = self.in_turns(floor_fn, fn)
        floor = self.figure(floor_title, unit, floor_values)
        self.figure(title, unit, values, floor, target)
        return floor

    def figure(self, name, unit, values, floor=None, target=None):
        """A row; `target` like "<=2.5" or ">=0.6" bounds the ratio, or the
        median itself when there is no floor."""
        low, median, high = values
        ratio = median / floor if floor else None
        met = ""
        if target:
            bound = float(target[2:])
            compared = ratio if ratio is not None else median
            met = "yes" if (compared >= bound if target[0] == ">" else compared <= bound) else "no"
        cell = lambda v: "" if v is None else "%.3f" % v
        row = [name, unit, cell(low), cell(median), cell(high), cell(floor), cell(ratio),
               target or "", met]
        self.rows.append(row)
        print("  " + "  ".join(c for c in row if c), flush=True)
        return median

    # -- floors ----------------------------------------------------------------

    def floors(self):
        f = {}
        self.figure("floor: semop P+V pair", "us",
                    self.measure(lambda: run(self.tool("bench-semop-pair"))[0]))
        f["sysv"] = self.figure("floor: SysV ping-pong, one-way pass", "us",
                                self.measure(lambda: run(self.tool(
                                    "bench-sysv-pingpong", 2000 if self.quick else 20000))[0]))
        # The hand-off's own shape on bare SysV: both sides idle 1 ms between
        # turns, so its tail shows what waking idle CPUs costs here.
        turns = [run(self.tool("bench-handoff", "sysv", 400 if self.quick else 2000))
                 for _ in range(REPS)]
        self.figure("floor: SysV hand-off after 1 ms idle, p50", "us",
                    self.spread([t[0] for t in turns]))
        self.figure("floor: SysV hand-off after 1 ms idle, p99", "us",
                    self.spread([t[1] for t in turns]))
        return f

    @staticmethod
    def serve(*arguments):
        """A floor's server (bench-tcp echo-server ...): the process, its port."""
        server = subprocess.Popen(arguments, stdout=subprocess.PIPE, text=True)
        try:
            return server, int(server.stdout.readline())
        except ValueError:
            server.kill()
            server.wait()
            raise RuntimeError("%s printed no port" % arguments[0])

    @staticmethod
    def unserve(server):
        server.kill()
        server.wait()

    def bash_pairs(self, path, first, second):
        """Microseconds per `echo first > path; echo second > path` in bash."""
        count = 200 if self.quick else 1000
        script = 'for ((i = 0; i < %d; i++)); do echo %s > "$1"; echo %s > "$1"; done' % (
            count, first, second)
        start = time.perf_counter()
        subprocess.run(["bash", "-c", script, "bash", path], check=True)
        return (time.perf_counter() - start) * 1e6 / count

    # -- semfs -----------------------------------------------------------------

    def mount_figures(self, work, f):
        pairs = 2000 if self.quick else 20000
        null_mount = os.path.join(work, "null")
        os.mkdir(null_mount)
        null = Daemon(self.tool("bench-null-fuse", null_mount), null_mount)
        semfs = None
        try:
            null_file = os.path.join(null_mount, "null")
            semfs = Semfs(self.args.build, work, "mount", network=False)
            for name in ("db", "a", "b", "handoff", "bash"):
                open(semfs.path(name), "w").close()
            fuse = self.against(
                "floor: null FUSE write round trip, kept-open fd",
                lambda: run(self.tool("bench-lock-pair", null_file, pairs))[0] / 2,
                "mount: lock+unlock pair, kept-open fd, 1 client", "us",
                lambda: run(self.tool("bench-lock-pair", semfs.path("db"), pairs))[0], "<=2.5")
            self.figure("mount: lock+unlock pair, kept-open fd, 2 clients", "us",
                        self.measure(lambda: self.two_clients(semfs, pairs)), fuse)
            self.against("floor: null FUSE bash `echo x > f` pair",
                         lambda: self.bash_pairs(null_file, "x", "x"),
                         "mount: bash `echo lock/unlock > f` pair", "us",
                         lambda: self.bash_pairs(semfs.path("bash"), "lock", "unlock"), "<=1.4")
            rounds = 400 if self.quick else 2000
            handoffs = [run(self.tool("bench-handoff", semfs.path("handoff"), rounds))
                        for _ in range(REPS)]
            floor = fuse + f["sysv"] + 20
            self.figure("mount: hand-off latency p50 (floor: FUSE + SysV + 20 us)", "us",
                        self.spread([h[0] for h in handoffs]), floor, "<=1.0")
            self.figure("mount: hand-off latency p99", "us",
                        self.spread([h[1] for h in handoffs]), floor, "<=1.3")
        finally:
            if semfs:
                semfs.stop()
            null.stop()

    @staticmethod
    def spread(values):
        return min(values), statistics.median(values), max(values)

    def two_clients(self, semfs, pairs):
        processes = [subprocess.Popen(self.tool("bench-lock-pair", semfs.path(name), pairs),
                                      stdout=subprocess.PIPE, text=True) for name in "ab"]
        times = [float(p.communicate()[0].split()[0]) for p in processes]
        if any(p.returncode for p in processes):
            raise RuntimeError("bench-lock-pair failed")
        return statistics.mean(times)

    def network_figures(self, work):
        echo, echo_port = self.serve(*self.tool("bench-tcp", "echo-server"))
        semfs = None
        try:
            semfs = Semfs(self.args.build, work, "network")
            rr = lambda port, conns, depth, dialect: lambda: run(self.tool(
                "bench-tcp", "rr", "127.0.0.1", port, conns, self.seconds, depth, dialect))
            self.against("floor: TCP 16-byte ping-pong, 1 connection",
                         lambda: rr(echo_port, 1, 1, "echo")()[1],
                         "native: lock/unlock round trip, 1 connection", "us",
                         lambda: rr(semfs.port, 1, 1, "native")()[1], "<=1.3")
            self.against("floor: TCP 16-byte ping-pong, 50 connections",
                         lambda: rr(echo_port, 50, 1, "echo")()[0],
                         "native: lock/unlock, 50 connections", "req/s",
                         lambda: rr(semfs.port, 50, 1, "native")()[0], ">=0.6")
            self.against("floor: TCP 16-byte ping-pong, 64 in flight",
                         lambda: rr(echo_port, 1, 64, "echo")()[0],
                         "native: lock/unlock, 64 pipelined", "req/s",
                         lambda: rr(semfs.port, 1, 64, "native")()[0], ">=0.5")
            self.unserve(echo)
            echo = None
            self.ace_figures("127.0.0.1", semfs.port, "")
        finally:
            if semfs:
                semfs.stop()
            if echo:
                self.unserve(echo)

    def ace_figures(self, host, port, label):
        """ACE's cycles, each in turns with its floor: the same client
        against a server that answers the same bytes and keeps no semaphore
        (undefined names), or TCP's connect-send-reply-close (one name,
        where every cycle waits its turn)."""
        ace, ace_port = self.serve(*self.tool("bench-tcp", "echo-server", "ace"))
        echo = None
        try:
            echo, echo_port = self.serve(*self.tool("bench-tcp", "echo-server"))
            cycles = lambda server, server_port, clients, *shared: lambda: run(self.tool(
                "bench-ace-cycles", server, server_port, clients, self.seconds, *shared))[-1]
            connect = lambda clients: lambda: run(self.tool(
                "bench-tcp", "cycles", "127.0.0.1", echo_port, clients, self.seconds))[0]
            # Distinct names are undefined ones: made on acquire, gone when idle.
            self.against("floor%s: do-nothing ACE server, cycles, 1 client" % label,
                         cycles("127.0.0.1", ace_port, 1),
                         "ACE%s: cycles, 1 client, undefined name" % label, "cycles/s",
                         cycles(host, port, 1), ">=0.8")
            self.against("floor%s: do-nothing ACE server, cycles, 50 clients" % label,
                         cycles("127.0.0.1", ace_port, 50),
                         "ACE%s: cycles, 50 clients, undefined names" % label, "cycles/s",
                         cycles(host, port, 50), ">=0.8")
            self.against("floor%s: TCP connect-send-reply-close, 50 clients" % label,
                         connect(50),
                         "ACE%s: cycles, 50 clients, one name" % label, "cycles/s",
                         cycles(host, port, 50, "shared"), ">=0.5")
        finally:
            self.unserve(ace)
            if echo:
                self.unserve(echo)

    # -- scale -----------------------------------------------------------------

    def waiters_figures(self, work, kind):
        count = 1000 if self.quick else 10000
        window = 0.4 if self.quick else 2.0  # x REPS: the idle period
        semfs = Semfs(self.args.build, work, "waiters-" + kind)
        holder = None
        try:
            path = semfs.path("crowd")
            holder = os.open(path, os.O_WRONLY | os.O_CREAT)
            os.write(holder, b"lock\n")
            if kind == "mount":
                command = self.tool("bench-waiters", "mount", path, count)
            else:
                command = self.tool("bench-waiters", "ace", "127.0.0.1", semfs.port, "crowd",
                                    count)
            crowd = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
            try:
                if crowd.stdout.readline().strip() != "ready":
                    raise RuntimeError("bench-waiters failed")
                end = time.time() + 60
                while waiting(path) < count and time.time() < end:
                    time.sleep(0.1)
                if waiting(path) != count:
                    raise RuntimeError("%d of %d waiters queued" % (waiting(path), count))
                time.sleep(1)  # the rush is over: measure the idle daemon
                rss, threads, cpu = [], [], []
                for _ in range(REPS):
                    before, start = cpu_seconds(semfs.pid), time.perf_counter()
                    time.sleep(window)
                    cpu.append(100 * (cpu_seconds(semfs.pid) - before)
                               / (time.perf_counter() - start))
                    rss.append(status_field(semfs.pid, "VmRSS") / 1024)
                    threads.append(status_field(semfs.pid, "Threads"))
                title = "%s: %d blocked waiters" % (kind, count)
                self.figure(title + ", daemon RSS", "MiB", self.spread(rss), None, "<=64")
                self.figure(title + ", daemon threads", "threads", self.spread(threads), None,
                            "<=64")
                self.figure(title + ", idle CPU", "% of a core", self.spread(cpu), None, "<=2")
            finally:
                crowd.stdin.close()
                status = crowd.wait(60)
                os.write(holder, b"relax\n")
                if status:  # what it heard is on stderr
                    raise RuntimeError("bench-waiters: the server let waiters go")
        finally:
            if holder is not None:
                os.close(holder)
            semfs.stop()

    # -- cluster mode ------------------------------------------------------------

    def cluster_figures(self, work):
        etcd = Etcd(work)
        hosts = []
        try:
            count = 200 if self.quick else 1000
            txn = lambda *prefix: lambda: run(self.tool(
                "bench-etcd-txn", etcd.endpoints, count, *prefix))[0]
            self.figure("floor: etcd transaction round trip, idle cluster", "us",
                        self.measure(txn()))
            for name in ("hosta", "hostb", "hostc"):
                hosts.append(self.cluster_host(work, etcd, name))
            a, b, _ = hosts
            # The floor of the ratios: the same transaction while the three
            # hosts watch it, as they watch every one of semfs's (its keys
            # are sync marks to them: carried, and ignored).
            floor = self.figure("floor: etcd transaction round trip, 3 hosts watching", "us",
                                self.measure(txn("/bench/sync/floor-")))
            rr = lambda host, conns: lambda: run(self.tool(
                "bench-tcp", "rr", "127.0.0.1", host.port, conns, self.seconds, 1, "native"))
            # Medians both: the floor's is one (bench-etcd-txn), and a mean
            # carries etcd's fsync tail.
            self.figure("cluster: uncontended lock+unlock pair, 1 connection", "us",
                        self.measure(lambda: 2 * rr(a, 1)()[3]), floor, "<=2.5")
            self.figure("cluster: hand-off between hosts, p50 (floor: 2 txns + 1 ms)", "us",
                        self.measure(lambda: self.cluster_handoff(a, b)), 2 * floor + 1000,
                        "<=1.0")
            self.figure("cluster: 3 hosts x 50 connections, lock/unlock", "req/s",
                        self.measure(lambda: self.cluster_throughput(hosts)))
            back = []
            for rep in range(1 if self.quick else 3):
                back.append(self.cluster_dead_host(work, etcd, a, rep))
            self.figure("cluster: a killed host's acquire unit back (lease_ttl 2 s)", "s",
                        self.spread(back), None, "<=3.5")
            # Last: the relaxed crowd's entries are deleted one by one for
            # a while after (10,000 transactions).
            self.cluster_waiters(a)
        finally:
            for host in hosts:
                host.stop()
            etcd.stop()

    def cluster_host(self, work, etcd, name):
        return Semfs(self.args.build, work, "cluster-" + name, extra=(
            "[cluster]\nendpoints = %s\nprefix = /bench/\nhost = %s\nlease_ttl = 2\n"
            % (etcd.endpoints, name.split("-")[0])))

    @staticmethod
    def ask(sock, line):
        sock.sendall(line.encode() + b"\n")
        return Bench.reply(sock)

    @staticmethod
    def reply(sock):
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                raise RuntimeError("connection closed")
            data += chunk
        return data.decode().strip()

    def cluster_handoff(self, a, b):
        """Microseconds from hosta's unlock sent to hostb's lock answered."""
        rounds = 20 if self.quick else 100
        times = []
        with socket.create_connection(("127.0.0.1", a.port)) as sa, \
                socket.create_connection(("127.0.0.1", b.port)) as sb:
            self.ask(sa, "create handoff 1")
            while not os.path.exists(b.path("handoff")):
                time.sleep(0.01)
            for _ in range(rounds):
                if not self.ask(sa, "lock handoff").startswith("ok"):
                    raise RuntimeError("hand-off: hosta could not lock")
                sb.sendall(b"lock handoff\n")
                end = time.time() + 5
                while waiting(a.path("handoff")) < 1 and time.time() < end:
                    time.sleep(0.001)
                start = time.perf_counter()
                sa.sendall(b"unlock handoff\n")
                answer = self.reply(sb)
                times.append((time.perf_counter() - start) * 1e6)
                if not answer.startswith("ok") or not self.reply(sa).startswith("ok"):
                    raise RuntimeError("hand-off: " + answer)
                if not self.ask(sb, "unlock handoff").startswith("ok"):
                    raise RuntimeError("hand-off: hostb could not unlock")
        return statistics.median(times)

    def cluster_throughput(self, hosts):
        # Round trips take ms here: a quick run still needs seconds.
        runs = [subprocess.Popen(self.tool("bench-tcp", "rr", "127.0.0.1", host.port, 50,
                                           max(self.seconds, 2.0), 1, "native"),
                                 stdout=subprocess.PIPE, text=True) for host in hosts]
        total = 0.0
        for process in runs:
            out = process.communicate(timeout=120)[0]
            if process.returncode:
                raise RuntimeError("bench-tcp failed")
            total += float(out.split()[0])
        return total

    def cluster_waiters(self, host):
        count = 1000 if self.quick else 10000
        # The holder is a file: a connection of its own would make the
        # 10,000th waiter the 10,001st connection, over max_connections.
        holder = os.open(host.path("crowd"), os.O_WRONLY | os.O_CREAT)
        try:
            os.write(holder, b"lock\n")
            crowd = subprocess.Popen(self.tool("bench-waiters", "ace", "127.0.0.1", host.port,
                                               "crowd", count),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                if crowd.stdout.readline().strip() != "ready":
                    raise RuntimeError("bench-waiters failed")
                end = time.time() + 120
                while waiting(host.path("crowd")) < count and time.time() < end:
                    time.sleep(0.2)
                if waiting(host.path("crowd")) != count:
                    raise RuntimeError("%d of %d waiters queued" % (
                        waiting(host.path("crowd")), count))
                time.sleep(1)
                rss = [status_field(host.pid, "VmRSS") / 1024 for _ in range(REPS)]
                threads = [status_field(host.pid, "Threads") for _ in range(REPS)]
                title = "cluster: %d waiters" % count
                self.figure(title + ", daemon RSS", "MiB", self.spread(rss), None, "<=64")
                self.figure(title + ", daemon threads", "threads", self.spread(threads),
                            None, "<=64")
            finally:
                crowd.stdin.close()
                status = crowd.wait(120)
                os.write(holder, b"relax\n")
                if status:  # what it heard is on stderr
                    raise RuntimeError("bench-waiters: the server let waiters go")
        finally:
            os.close(holder)

    def cluster_dead_host(self, work, etcd, a, rep):
        """Seconds from kill -9 of a host holding an acquire unit to its unit
        being back on another host."""
        victim = self.cluster_host(work, etcd, "hostc-%d" % rep)
        try:
            with socket.create_connection(("127.0.0.1", victim.port)) as s:
                self.ask(s, "create pool-%d 3" % rep)
                if not self.ask(s, "acquire pool-%d" % rep).startswith("ok"):
                    raise RuntimeError("dead host: no acquire")
                path = a.path("pool-%d" % rep)
                end = time.time() + 5
                while time.time() < end:
                    try:
                        if int(os.getxattr(path, "user.semfs.value")) == 2:
                            break
                    except OSError:
                        pass
                    time.sleep(0.01)
                victim.process.kill()
                start = time.perf_counter()
                end = time.time() + 30
                while int(os.getxattr(path, "user.semfs.value")) != 3:
                    if time.time() > end:
                        raise RuntimeError("dead host: the unit never came back")
                    time.sleep(0.01)
                return time.perf_counter() - start
        finally:
            victim.stop()

    @staticmethod
    def create_and_list(directory, count):
        """Seconds to create `count` files in `directory`, then to `ls -l` it."""
        start = time.perf_counter()
        for i in range(count):
            os.close(os.open(os.path.join(directory, "s%d" % i), os.O_WRONLY | os.O_CREAT))
        created = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run(["ls", "-l", directory], check=True, stdout=subprocess.DEVNULL)
        return created, time.perf_counter() - start

    def many_semaphores(self, work):
        count = 2000 if self.quick else 20000
        reps = 3 if self.quick else 1  # 20,000 files a run: one is minutes
        title = "scale: %d semaphores" % count
        # Floor: the same files on the null FUSE fs (a fresh one each time).
        null_create, null_list = [], []
        for rep in range(reps):
            null_mount = os.path.join(work, "null-many%d" % rep)
            os.mkdir(null_mount)
            null = Daemon(self.tool("bench-null-fuse", null_mount), null_mount)
            try:
                created, listed = self.create_and_list(null_mount, count)
            finally:
                null.stop()
            null_create.append(created)
            null_list.append(listed)
        create_floor = self.figure("floor: %d files on the null FUSE fs, create" % count, "s",
                                   self.spread(null_create))
        list_floor = self.figure("floor: %d files on the null FUSE fs, `ls -l`" % count, "s",
                                 self.spread(null_list))
        semfs = Semfs(self.args.build, work, "many", network=False)
        try:
            create, listing, rss = [], [], []
            for rep in range(reps):
                directory = semfs.path("many%d" % rep)
                os.mkdir(directory)
                created, listed = self.create_and_list(directory, count)
                create.append(created)
                listing.append(listed)
                rss.append(status_field(semfs.pid, "VmRSS") / 1024)
                if rep < reps - 1:
                    subprocess.run(["rm", "-r", directory], check=True)
            self.figure(title + ", create (open O_CREAT)", "s", self.spread(create),
                        create_floor, "<=2")
            self.figure(title + ", `ls -l` of the directory", "s", self.spread(listing),
                        list_floor, "<=2")
            self.figure(title + ", daemon RSS after", "MiB", self.spread(rss))
            # The last directory stays: the idle daemon still watches every set.
            # Idle means idle: a set changed in the last two seconds has a stamp
            # that has not settled, and the monitor asks its value each sweep.
            time.sleep(3)
            cpu = []
            for _ in range(REPS):
                before, start = cpu_seconds(semfs.pid), time.perf_counter()
                time.sleep(0.4 if self.quick else 2.0)
                cpu.append(100 * (cpu_seconds(semfs.pid) - before) /
                           (time.perf_counter() - start))
            self.figure(title + ", idle daemon CPU", "% of a core", self.spread(cpu), None, "<=1")
        finally:
            semfs.stop()

    # -- output ----------------------------------------------------------------

    def write(self):
        header = ["figure", "unit", "min", "median", "max", "floor", "ratio", "target", "met"]
        with open(self.args.csv, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            writer.writerows(self.rows)
        widths = [max(len(str(r[i])) for r in self.rows + [header]) for i in range(len(header))]
        print()
        for row in [header] + self.rows:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        print("\nwritten: " + self.args.csv)
        chart = os.path.splitext(self.args.csv)[0] + ".png"
        if self.chart(chart):
            print("written: " + chart)

    def chart(self, path):
        """Ratios against targets as bars; needs gnuplot (gnuplot-nox)."""
        if not shutil.which("gnuplot"):
            print("gnuplot not found: no chart")
            return False
        rows = [r for r in self.rows if r[6] and r[7]]
        data = tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False)
        with data:
            for r in rows:
                label = r[0].replace('"', "'")
                colour = 0x44AA77 if r[8] == "yes" else 0xCC6677
                data.write('"%s" %s %s %d\n' % (label, r[6], r[7][2:], colour))
        script = """
set terminal pngcairo size 1100,%d font ",10" noenhanced
set output "%s"
set title "semfs / floor measured in the same run (bars; green: target met) and target (triangles)"
set style fill solid 0.6
set yrange [-0.5:%d]
set ytics nomirror
set xrange [0:*]
set grid x
unset key
set xlabel "ratio"
plot "%s" using 2:0:(0):2:($0-0.35):($0+0.35):4:yticlabels(1) with boxxyerror lc rgb variable, \\
     "" using 3:0 with points pt 9 ps 1.5 lc rgb "#222222"
""" % (120 + 32 * len(rows), path, len(rows) - 0.5, data.name)
        result = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
        os.unlink(data.name)
        if result.returncode:
            print("gnuplot failed: " + result.stderr.strip())
        return result.returncode == 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ace", metavar="HOST:PORT",
                        help="also measure the ACE figures against this server")
    parser.add_argument("--csv", default="bench-results.csv")
    parser.add_argument("--only", metavar="SECTION[,SECTION]",
                        help="run only these sections (floors always run): mount, network, "
                             "mount waiters, network waiters, many semaphores, cluster")
    args = parser.parse_args()
    if args.ace and not re.fullmatch(r"[0-9.]+:\d+", args.ace):
        parser.error("--ace wants HOST:PORT with an IPv4 address, e.g. 127.0.0.1:53559")
    bench = Bench(args)
    started = time.time()
    work = tempfile.mkdtemp(prefix="semfs-bench.")
    floors = {}
    sections = [("floors", lambda: floors.update(bench.floors())),
                ("mount", lambda: bench.mount_figures(work, floors)),
                ("network", lambda: bench.network_figures(work))]
    if args.ace:
        host, port = args.ace.rsplit(":", 1)
        sections.append(("ACE " + args.ace,
                         lambda: bench.ace_figures(host, port, " [%s]" % args.ace)))
    sections += [("mount waiters", lambda: bench.waiters_figures(work, "mount")),
                 ("network waiters", lambda: bench.waiters_figures(work, "ace")),
                 ("many semaphores", lambda: bench.many_semaphores(work)),
                 ("cluster", lambda: bench.cluster_figures(work))]
    if args.only:
        wanted = {"floors"} | {w.strip() for w in args.only.split(",")}
        unknown = wanted - {name for name, _ in sections}
        if unknown:
            parser.error("no section " + ", ".join(sorted(unknown)))
        sections = [s for s in sections if s[0] in wanted]
    failed = []
    try:
        # A section that fails is reported and the others still run: the
        # table says what could not be measured instead of stopping.
        for name, section in sections:
            try:
                section()
            except (OSError, RuntimeError, KeyError, ValueError,
                    subprocess.SubprocessError) as error:
                detail = getattr(error, "stderr", None) or ""
                print("  %s: FAILED: %s %s" % (name, error, detail.strip()), flush=True)
                failed.append(name)
                bench.rows.append([name + ": not measured (error)", "", "", "", "", "", "",
                                   "", "no"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bench.write()
    print("%.0f s in all%s" % (time.time() - started,
                               "; not measured: " + ", ".join(failed) if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
