#!/usr/bin/env python3
"""bench.py: semfs's figures next to the floors they run on, measured in the
same run on the same machine (see scripts/bench.sh, which builds first).

Each figure is measured REPS times; the table gives min/median/max, the
floor's median, the ratio median/floor and whether the target is met.
Writes bench-results.csv (figure,unit,min,median,max,floor,ratio,target,met).
"""
import argparse
import csv
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def run(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(out.split()[0])


def wait_mounted(path, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        with open("/proc/self/mounts") as mounts:
            if any(line.split()[1] == path for line in mounts):
                return
        time.sleep(0.05)
    raise RuntimeError("nothing mounted on " + path)


class Daemon:
    """A background process that mounts `mountpoint`; stopped by SIGTERM."""

    def __init__(self, command, mountpoint):
        self.mountpoint = mountpoint
        self.process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        wait_mounted(mountpoint)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        subprocess.run(["fusermount3", "-u", "-z", self.mountpoint],
                       stderr=subprocess.DEVNULL, check=False)


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--csv", default="bench-results.csv")
    args = parser.parse_args()
    tools = os.path.join(args.build, "tests")
    reps = 5
    pairs = "2000" if args.quick else "20000"
    rows = []

    def measure(fn):
        values = [fn() for _ in range(reps)]
        return min(values), statistics.median(values), max(values)

    def figure(name, unit, values, floor, target, higher_is_better=False):
        low, median, high = values
        ratio = median / floor if floor else float("nan")
        bound = float(target[2:]) if target else None
        met = ""
        if bound is not None:
            ok = ratio >= bound if higher_is_better else ratio <= bound
            met = "yes" if ok else "no"
        rows.append([name, unit, "%.3f" % low, "%.3f" % median, "%.3f" % high,
                     "%.3f" % floor if floor else "", "%.3f" % ratio if floor else "",
                     target or "", met])

    work = tempfile.mkdtemp(prefix="semfs-bench.")
    try:
        # Floors.
        semop = measure(lambda: run([os.path.join(tools, "bench-semop-pair")]))
        figure("floor: semop P+V pair", "us", semop, None, None)
        null_mount = os.path.join(work, "null")
        os.mkdir(null_mount)
        null = Daemon([os.path.join(tools, "bench-null-fuse"), null_mount], null_mount)
        try:
            null_pair = measure(lambda: run([os.path.join(tools, "bench-lock-pair"),
                                             os.path.join(null_mount, "null"), pairs]))
        finally:
            null.stop()
        null_round_trip = null_pair[1] / 2
        figure("floor: null FUSE write round trip", "us",
               tuple(v / 2 for v in null_pair), None, None)

        # semfs through the mount.
        mount = os.path.join(work, "mnt")
        state = os.path.join(work, "state")
        os.mkdir(mount)
        config = os.path.join(work, "semfs.ini")
        with open(config, "w") as out:
            out.write("[semfs]\nstate_dir = %s\n[service_network_semaphore]\nenabled = no\n"
                      % state)
        semfs = Daemon([os.path.join(args.build, "semfs"), "-f", "-c", config, mount], mount)
        try:
            open(os.path.join(mount, "db"), "w").close()
            pair = measure(lambda: run([os.path.join(tools, "bench-lock-pair"),
                                        os.path.join(mount, "db"), pairs]))
            figure("mount: lock+unlock pair, kept-open fd", "us", pair, null_round_trip, "<=2.5")
        finally:
            semfs.stop()
            remove_sets(state)
    finally:
        subprocess.run(["rm", "-rf", work], check=False)

    header = ["figure", "unit", "min", "median", "max", "floor", "ratio", "target", "met"]
    with open(args.csv, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    print("\nwritten: " + args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
