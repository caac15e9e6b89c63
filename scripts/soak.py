#!/usr/bin/env python3
"""soak.py SEMFS_BUILD SECONDS: mixed random load on one semfs daemon from
both front-ends, with the no-leak invariant checked every second.

Workers (threads, plus the processes some of them spawn and kill):
  mount-lock     lock with short timeouts / unlock, through the mount
  mount-acquire  acquire / release on a kept open file; sometimes closes
                 the file while holding (the daemon must give the unit back)
  mount-kill     a shell that acquires through the mount, SIGKILLed at a
                 random moment while waiting or holding
  native         lock / unlock / acquire / release over the native dialect;
                 sometimes resets the connection (RST) while it holds
                 acquired units or waits for one
  ace            ACE's acquire:NAME| ... release|, or a reset while waiting
                 or holding
  intruder       on the `guarded/` semaphores, where only acquire units are
                 ever out: unlock through the mount and over TCP (EOVERFLOW;
                 in the instant the helper hands a unit on, an unlock may be
                 answered ok, and semfs must then keep that unit from
                 everyone), `set LIMIT` over TCP (ERANGE while any acquire
                 unit is out, else a no-op) and an outside semop +2 on the
                 SysV set (semfs must take it back before anyone is granted
                 it). The
                 invariant, read from the kernel, proves no unit leaked out.

Once a second every worker parks between operations (each operation has a
timeout, so they all park soon), and the checker requires for every
semaphore: the kernel's own value (semctl GETVAL, past the daemon) + the
units the workers know they hold = the limit, nobody waiting, and the
daemon's value equal to the kernel's. Units given back asynchronously (the
RELEASE of a closed file, a reset connection, a killed shell) get a few
seconds to arrive; the time they took is reported. Any other error, a
crash of the daemon or an invariant that does not settle fails the run.
"""
import collections
import ctypes
import errno
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Semfs, status_field  # noqa: E402  (the same daemon harness)

SETTLE_SECONDS = 5
GETVAL = 12
libc = ctypes.CDLL(None, use_errno=True)
libc.semctl.restype = ctypes.c_int


class Failure(Exception):
    pass


class Ledger:
    """Units the workers hold, per semaphore, and the pause protocol."""

    def __init__(self, workers):
        self.lock = threading.Condition()
        self.held = collections.Counter()
        self.workers = workers
        self.parked = 0
        self.pausing = False
        self.stopping = False
        self.counts = collections.Counter()
        self.failures = []

    def take(self, name, units=1):
        with self.lock:
            self.held[name] += units

    def give(self, name, units=1):
        with self.lock:
            self.held[name] -= units
            if self.held[name] < 0:
                self.failures.append("%s: the workers gave back more than they took" % name)

    def count(self, what):
        with self.lock:
            self.counts[what] += 1

    def fail(self, text):
        with self.lock:
            self.failures.append(text)

    def checkpoint(self):
        """Between operations: park while the checker looks. False: stop."""
        with self.lock:
            if self.pausing:
                self.parked += 1
                self.lock.notify_all()
                while self.pausing:
                    self.lock.wait()
                self.parked -= 1
            return not self.stopping

    def pause(self, timeout):
        with self.lock:
            self.pausing = True
            end = time.time() + timeout
            while self.parked < self.workers and time.time() < end:
                self.lock.wait(0.05)
            return self.parked == self.workers

    def resume(self):
        with self.lock:
            self.pausing = False
            self.lock.notify_all()


class Soak:
    def __init__(self, semfs, seconds, seed):
        self.semfs = semfs
        self.seconds = seconds
        self.random = random.Random(seed)
        self.names = ["s%d" % i for i in range(6)] + ["jobs/a", "jobs/b"]
        # Only acquire units are ever out here: any unlock must fail.
        self.guarded = ["guarded/a", "guarded/b"]
        self.limits = {}
        os.mkdir(semfs.path("jobs"))
        os.mkdir(semfs.path("guarded"))
        for name in self.names + self.guarded:
            limit = self.random.randint(1, 4)
            fd = os.open(semfs.path(name), os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"limit %d\n" % limit)
            os.close(fd)
            self.limits[name] = limit
        self.kinds = (["mount_lock"] * 3 + ["mount_acquire"] * 3 + ["mount_kill"] * 2 +
                      ["native"] * 4 + ["ace"] * 4 + ["intruder"] * 2)
        self.ledger = Ledger(len(self.kinds))

    # ---- the workers --------------------------------------------------------

    def pick(self, rng, acquire_only=False):
        return rng.choice(self.names + self.guarded if acquire_only else self.names)

    def mount_lock(self, rng):
        held = collections.Counter()
        fds = {}
        while self.ledger.checkpoint():
            name = self.pick(rng)
            fd = fds.get(name) or fds.setdefault(name, os.open(self.semfs.path(name), os.O_WRONLY))
            if held[name] and rng.random() < 0.6:
                os.write(fd, b"unlock\n")
                held[name] -= 1
                self.ledger.give(name)
                self.ledger.count("mount unlock")
                continue
            try:
                os.write(fd, b"lock %.2f\n" % rng.uniform(0, 0.3))
            except OSError as error:
                if error.errno not in (errno.ETIMEDOUT, errno.EAGAIN):
                    raise
                self.ledger.count("mount lock timeout")
                continue
            held[name] += 1
            self.ledger.take(name)
            self.ledger.count("mount lock")
        for name, units in held.items():
            for _ in range(units):
                os.write(fds[name], b"unlock\n")
                self.ledger.give(name)
        for fd in fds.values():
            os.close(fd)

    def mount_acquire(self, rng):
        while self.ledger.checkpoint():
            name = self.pick(rng, acquire_only=True)
            fd = os.open(self.semfs.path(name), os.O_WRONLY)
            units = 0
            try:
                for _ in range(rng.randint(1, 3)):
                    os.write(fd, b"acquire %.2f\n" % rng.uniform(0, 0.3))
                    units += 1
                    self.ledger.take(name)
                    self.ledger.count("mount acquire")
            except OSError as error:
                if error.errno not in (errno.ETIMEDOUT, errno.EAGAIN):
                    raise
                self.ledger.count("mount acquire timeout")
            if units and rng.random() < 0.5:
                os.write(fd, b"release\n")
                units -= 1
                self.ledger.give(name)
                self.ledger.count("mount release")
            # The rest goes back when the file closes (as for a dying process).
            os.close(fd)
            self.ledger.give(name, units)

    def mount_kill(self, rng):
        while self.ledger.checkpoint():
            name = self.pick(rng, acquire_only=True)
            shell = subprocess.Popen(
                ["sh", "-c", 'exec 9>"$1" && echo acquire 1 >&9 && exec sleep 5', "sh",
                 self.semfs.path(name)], stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0, 0.3))
            shell.kill()
            shell.wait()
            self.ledger.count("mount kill")

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.semfs.port), timeout=30)

    @staticmethod
    def reset(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def native(self, rng):
        sock = self.connect()
        reader = sock.makefile("rb")
        held = collections.Counter()   # lock units: the connection may go, they stay
        acquired = collections.Counter()

        def ask(line):
            sock.sendall(line.encode() + b"\n")
            reply = reader.readline().decode()
            if not reply:
                raise Failure("native: connection closed by the server after " + line)
            return reply.strip()

        while self.ledger.checkpoint():
            name = self.pick(rng)
            action = rng.random()
            if action < 0.1 and acquired:
                # Reset while holding acquired units, or while waiting for one.
                if rng.random() < 0.5:
                    sock.sendall(b"acquire %s 1\n" % self.pick(rng).encode())
                    time.sleep(rng.uniform(0, 0.05))
                reader.close()
                self.reset(sock)
                for acquired_name, units in acquired.items():
                    self.ledger.give(acquired_name, units)
                acquired.clear()
                sock = self.connect()
                reader = sock.makefile("rb")
                self.ledger.count("native reset")
                continue
            if action < 0.35 and held[name]:
                reply = ask("unlock " + name)
                verb, units = "unlock", held
            elif action < 0.6 and acquired[name]:
                reply = ask("release " + name)
                verb, units = "release", acquired
            else:
                verb = rng.choice(["lock", "acquire"])
                units = held if verb == "lock" else acquired
                reply = ask("%s %s %.2f" % (verb, name, rng.uniform(0, 0.3)))
            if reply.startswith("err ETIMEDOUT") or reply.startswith("err EAGAIN"):
                self.ledger.count("native timeout")
                continue
            if not reply.startswith("ok"):
                raise Failure("native: %s %s: %s" % (verb, name, reply))
            if verb in ("lock", "acquire"):
                units[name] += 1
                self.ledger.take(name)
            else:
                units[name] -= 1
                self.ledger.give(name)
            self.ledger.count("native " + verb)
        for name, units in held.items():
            for _ in range(units):
                if not ask("unlock " + name).startswith("ok"):
                    raise Failure("native: final unlock of " + name)
                self.ledger.give(name)
        reader.close()
        sock.close()
        for name, units in acquired.items():
            self.ledger.give(name, units)

    def ace(self, rng):
        while self.ledger.checkpoint():
            name = self.pick(rng, acquire_only=True)
            sock = self.connect()
            sock.sendall(b"acquire:%s|" % name.encode())
            sock.settimeout(rng.uniform(0.05, 0.4))
            seen = b""
            try:
                while b"locked|" not in seen:
                    data = sock.recv(256)
                    if not data:
                        raise Failure("ace: closed by the server while waiting for " + name)
                    seen += data
            except socket.timeout:
                self.reset(sock)  # gone while waiting
                self.ledger.count("ace reset waiting")
                continue
            self.ledger.take(name)
            time.sleep(rng.uniform(0, 0.05))
            if rng.random() < 0.3:
                self.reset(sock)  # gone while holding
                self.ledger.give(name)
                self.ledger.count("ace reset holding")
                continue
            sock.settimeout(10)
            sock.sendall(b"release|")
            seen = b""
            while not seen.endswith(b"ok|"):
                data = sock.recv(256)
                if not data:
                    raise Failure("ace: closed before ok| for " + name)
                seen += data
            sock.close()
            self.ledger.give(name)
            self.ledger.count("ace release")

    def intruder(self, rng):
        sock = self.connect()
        reader = sock.makefile("rb")

        def verdict(request, refusal, ok_count, refused_count):
            """A request over TCP that must be refused, or be harmless if ok."""
            sock.sendall(request.encode() + b"\n")
            reply = reader.readline().decode().strip()
            if reply == "ok":
                self.ledger.count(ok_count)
            elif reply.startswith(refusal):
                self.ledger.count(refused_count)
            else:
                raise Failure("intruder: %s over TCP: %s" % (request, reply))
        while self.ledger.checkpoint():
            name = rng.choice(self.guarded)
            action = rng.random()
            if action < 0.4:
                fd = os.open(self.semfs.path(name), os.O_WRONLY)
                try:
                    os.write(fd, b"unlock\n")
                    self.ledger.count("intruder unlock absorbed")
                except OSError as error:
                    if error.errno != errno.EOVERFLOW:
                        raise
                    self.ledger.count("intruder unlock refused")
                finally:
                    os.close(fd)
            elif action < 0.55:
                verdict("set %s %d" % (name, self.limits[name]), "err ERANGE",
                        "intruder set, nothing out", "intruder set refused")
            elif action < 0.75:
                verdict("unlock " + name, "err EOVERFLOW",
                        "intruder unlock absorbed", "intruder unlock refused")
            else:
                key = int(os.getxattr(self.semfs.path(name), "user.semfs.key"), 0)
                semid = libc.semget(ctypes.c_int(key), 0, 0)
                up = struct.pack("Hhh", 0, 2, 0x800)  # +2, IPC_NOWAIT
                if semid < 0 or libc.semop(semid, up, 1) < 0:
                    raise Failure("intruder: semop: %s" % os.strerror(ctypes.get_errno()))
                self.ledger.count("intruder outside +2")
            time.sleep(rng.uniform(0, 0.05))
        reader.close()
        sock.close()

    def run_worker(self, kind, seed):
        rng = random.Random(seed)
        try:
            getattr(self, kind)(rng)
        except Exception as error:  # noqa: BLE001 -- report any worker's end
            self.ledger.fail("%s worker: %r" % (kind, error))
            with self.ledger.lock:
                self.ledger.workers -= 1
                self.ledger.lock.notify_all()

    # ---- the checker --------------------------------------------------------

    def kernel_value(self, name):
        key = int(os.getxattr(self.semfs.path(name), "user.semfs.key"), 0)
        semid = libc.semget(ctypes.c_int(key), 0, 0)
        value = libc.semctl(semid, 0, GETVAL) if semid >= 0 else -1
        if value < 0:
            raise Failure("%s: semctl: %s" % (name, os.strerror(ctypes.get_errno())))
        return value

    def attribute(self, name, attribute):
        return int(os.getxattr(self.semfs.path(name), "user.semfs." + attribute), 0)

    def check(self):
        """Seconds until every invariant held, or a Failure."""
        start = time.time()
        while True:
            wrong = []
            for name in self.names + self.guarded:
                value = self.kernel_value(name)
                held = self.ledger.held[name]
                limit = self.attribute(name, "limit")
                waiting = self.attribute(name, "waiting")
                daemon_value = self.attribute(name, "value")
                if value + held != limit or waiting or daemon_value != value:
                    wrong.append("%s: kernel value %d + held %d != limit %d (waiting %d, "
                                 "daemon's value %d)" % (name, value, held, limit, waiting,
                                                         daemon_value))
            if not wrong:
                return time.time() - start
            if time.time() - start > SETTLE_SECONDS:
                raise Failure("invariant broken for %.0f s: %s" % (SETTLE_SECONDS,
                                                                   "; ".join(wrong)))
            time.sleep(0.02)

    def run(self):
        threads = [threading.Thread(target=self.run_worker, args=(kind, self.random.random()),
                                    daemon=True) for kind in self.kinds]
        for thread in threads:
            thread.start()
        rss_start = status_field(self.semfs.pid, "VmRSS")
        checks, settle, parking = 0, [], []
        end = time.time() + self.seconds
        next_check = time.time() + 1
        try:
            while time.time() < end and not self.ledger.failures:
                time.sleep(max(0.0, next_check - time.time()))
                next_check += 1  # a check a second, whatever the last one took
                if self.semfs.process.poll() is not None:
                    raise Failure("semfs died: status %s" % self.semfs.process.returncode)
                pause_start = time.time()
                if not self.ledger.pause(30):
                    raise Failure("workers did not park within 30 s (a hung operation?)")
                parking.append(time.time() - pause_start)
                try:
                    settle.append(self.check())
                    checks += 1
                finally:
                    self.ledger.resume()
            with self.ledger.lock:
                self.ledger.stopping = True
        finally:
            with self.ledger.lock:
                self.ledger.stopping = True
            self.ledger.resume()
        for thread in threads:
            thread.join(60)
        if self.ledger.failures:
            raise Failure("; ".join(self.ledger.failures))
        if any(thread.is_alive() for thread in threads):
            raise Failure("a worker did not finish")
        settle.append(self.check())  # every unit back: held is 0 everywhere
        if any(self.ledger.held.values()):
            raise Failure("the workers' ledger is not empty at the end")
        return {
            "checks": checks,
            "settle_max": max(settle),
            "parking_max": max(parking, default=0.0),
            "rss_start": rss_start,
            "rss_end": status_field(self.semfs.pid, "VmRSS"),
            "threads": status_field(self.semfs.pid, "Threads"),
        }


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: soak.py SEMFS_BUILD_DIR SECONDS")
    build, seconds = sys.argv[1], int(sys.argv[2])
    seed = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
    work = tempfile.mkdtemp(prefix="semfs-soak.")
    semfs = Semfs(build, work, "soak")
    print("soak: %d s, seed %d (SOAK_SEED=%d repeats the choices), daemon pid %d" %
          (seconds, seed, seed, semfs.pid), flush=True)
    failure = None
    started = time.time()
    try:
        soak = Soak(semfs, seconds, seed)
        figures = soak.run()
    except Failure as error:
        failure = str(error)
    finally:
        semfs.stop()
        status = semfs.process.returncode
        log = os.path.join(semfs.work, "semfs.log")
        with open(log) as text:
            log_text = text.read()
        subprocess.run(["rm", "-rf", work], check=False)
    if status != 0 and failure is None:
        failure = "semfs exited with status %s on SIGTERM:\n%s" % (status, log_text[-2000:])
    if failure:
        print("soak: FAILED after %.0f s: %s" % (time.time() - started, failure))
        sys.exit(1)
    elapsed = time.time() - started
    total = sum(soak.ledger.counts.values())
    print("soak: passed %d invariant checks in %.0f s; %d operations (%.0f/s)" %
          (figures["checks"], elapsed, total, total / elapsed))
    for what, count in sorted(soak.ledger.counts.items()):
        print("  %-24s %8d" % (what, count))
    print("  workers parked for a check within %.2f s; units back after that within %.2f s" %
          (figures["parking_max"], figures["settle_max"]))
    print("  daemon: RSS %d -> %d KiB, %d threads, clean exit on SIGTERM" %
          (figures["rss_start"], figures["rss_end"], figures["threads"]))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
