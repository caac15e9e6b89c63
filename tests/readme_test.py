#!/usr/bin/env python3
"""readme_test.py BUILD_DIR SOURCE_DIR: the README is a contract.

Every ```console block of README.md runs, command by command, in one bash
session of its own, in a fresh directory with a fresh semfs mounted on
./mnt (its network front-end on a free port, written 53559 in the README),
msem on PATH. Each command's output must match the lines the block shows
below it, and its exit status must be what they imply: non-zero when they
show an error (`bash: ...`, `msem: ...`), else zero. Time stamps, pids,
keys, semids, tokens and peer ports match as patterns; `  # comment` after
an output line is commentary. A command whose output ends in `^C` runs for
1.5 s and is then interrupted (its status is not checked).

A block that opens with `nc 127.0.0.1 53559` alone is a native-dialect
dialogue: lines beginning `ok`/`err` (and the lines an `ok lines=N`
announces) are replies, the others are requests sent in turn.

A block preceded by `<!-- illustrative -->` is not run (and counted).
msem(1)'s EXAMPLES run the same way, with /mnt/sem as the mount, checking
exit statuses only (they show no output).

Run under `unshare --ipc` (meson does) so that the SysV sets of every
block vanish with the namespace.
"""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

PORT_IN_DOCS = "53559"
SOURCE = ""  # the source tree: main() sets it


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- reading the documents -------------------------------------------------

class Block:
    def __init__(self, source, line):
        self.source, self.line = source, line
        self.steps = []  # (command, [expected lines])
        self.illustrative = False


def readme_blocks(path):
    blocks, block, previous = [], None, ""
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if block is None:
                if line.strip() == "```console":
                    block = Block(os.path.basename(path), number)
                    block.illustrative = previous.strip().startswith("<!-- illustrative")
                elif line.strip():
                    previous = line
                continue
            if line.strip() == "```":
                blocks.append(block)
                block, previous = None, ""
                continue
            # The block's first line sets its prompt ("$ " or "# "); the
            # other one is output (getfattr prints "# file: ...").
            if not block.steps and (line.startswith("# ") or line.startswith("$ ")):
                block.prompt = line[:2]
            if block.steps is not None and getattr(block, "prompt", None) and \
                    line.startswith(block.prompt):
                block.steps.append((line[2:], []))
            elif block.steps:
                block.steps[-1][1].append(line)
    return blocks


def man_examples(path):
    """The .EX/.EE lines of an EXAMPLES section: commands, no output."""
    block, inside, section = None, False, ""
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.startswith(".SH"):
                section = line[3:].strip().strip('"')
            if section != "EXAMPLES":
                continue
            if line.startswith(".EX"):
                block, inside = Block(os.path.basename(path), number), True
                continue
            if line.startswith(".EE"):
                inside = False
                continue
            if inside:
                command = line.replace("\\-", "-").replace("\\(dq", '"')
                block.steps.append((command, None))  # None: output not shown
    return [block] if block else []


# ---- matching ---------------------------------------------------------------

WILDCARDS = [
    (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z"),
    (r"pid:\d+", r"pid:\d+"),
    (r"key=0x[0-9a-f]+", r"key=0x[0-9a-f]+"),
    (r"semid=\d+", r"semid=\d+"),
    (r"token=\d+", r"token=\d+"),
    (r"tcp:127\.0\.0\.1:\d+", r"tcp:127\.0\.0\.1:\d+"),
    (r'user\.semfs\.(key|semid|holders|token)="[^"]*"', r'user\.semfs\.\1="[^"]*"'),
]
WILDCARD = re.compile("|".join("(?:%s)" % w for w, _ in WILDCARDS))


def pattern(expected):
    """A regex for one shown output line."""
    expected = re.sub(r"\s{2,}#\s.*$", "", expected).rstrip()
    out, at = "", 0
    for m in WILDCARD.finditer(expected):
        out += re.escape(expected[at:m.start()])
        text = m.group(0)
        for literal, regex in WILDCARDS:
            if re.fullmatch(literal, text):
                out += re.sub(r"\\1", lambda _: re.match(literal, text).group(1) or "", regex) \
                    if "\\1" in regex else regex
                break
        at = m.end()
    return out + re.escape(expected[at:])


def normalise(text):
    """bash -c says `bash: line N: echo:`, an interactive shell `bash: echo:`."""
    text = re.sub(r"^(bash|/dev/fd/\d+): line \d+: ", "bash: ", text, flags=re.M)
    return [line.rstrip() for line in text.split("\n")]


def matches(shown, actual_lines):
    shown = [s for s in shown if s.strip() != "^C"]
    actual = [a for a in actual_lines if a != ""]
    shown_kept = [s for s in shown if s.strip() != ""]
    if len(actual) != len(shown_kept):
        return False
    return all(re.fullmatch(pattern(s), a) for s, a in zip(shown_kept, actual))


# ---- running ----------------------------------------------------------------

class Session:
    """A fresh directory, a fresh semfs on ./mnt, one bash for the block."""

    def __init__(self, build):
        self.dir = tempfile.mkdtemp(prefix="semfs-readme.")
        self.mnt = os.path.join(self.dir, "mnt")
        os.mkdir(self.mnt)
        self.port = free_port()
        self.config = os.path.join(self.dir, "semfs.ini")
        with open(self.config, "w") as f:
            f.write("[service_network_semaphore]\nbind_port = %d\nremote_port = %d\n"
                    "[semfs]\nstate_dir = %s/state\n" % (self.port, self.port, self.dir))
        self.log = open(os.path.join(self.dir, "semfs.log"), "w")
        self.daemon = subprocess.Popen(
            [os.path.join(build, "semfs"), "-f", "-c", self.config, self.mnt],
            stdout=self.log, stderr=self.log)
        deadline = time.time() + 5
        while not self.mounted():
            if self.daemon.poll() is not None or time.time() > deadline:
                message = "semfs did not mount: " + self.daemon_log()
                self.daemon.kill()  # leave nothing behind: no daemon, no directory
                self.daemon.wait()
                self.log.close()
                subprocess.run(["fusermount3", "-u", "-z", self.mnt], stderr=subprocess.DEVNULL)
                subprocess.run(["rm", "-rf", self.dir])
                raise RuntimeError(message)
            time.sleep(0.02)
        env = dict(os.environ)
        env["PATH"] = build + ":" + env["PATH"]
        env["SEMFS_CONFIG"] = self.config
        env.pop("SEMFS_HOST", None)
        read_end, self.script = os.pipe()
        self.shell = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "/dev/fd/%d" % read_end], pass_fds=(read_end,),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=self.dir, env=env, start_new_session=True)
        os.close(read_end)

    def mounted(self):
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == self.mnt for line in f)

    def daemon_log(self):
        self.log.flush()
        with open(os.path.join(self.dir, "semfs.log")) as f:
            return f.read()[-2000:]

    def run(self, command, interrupt_after=None):
        command = command.replace(PORT_IN_DOCS, str(self.port))
        if interrupt_after:
            command = "timeout -s INT %s %s" % (interrupt_after, command)
        os.write(self.script, (command + "\n__rc=$?; printf '\\n@@DONE@@ %d\\n' $__rc\n")
                 .encode())
        out, deadline = b"", time.time() + 30
        while not re.search(rb"\n@@DONE@@ -?\d+\n$", out):
            ready, _, _ = select.select([self.shell.stdout], [], [], 1)
            if ready:
                chunk = os.read(self.shell.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
            if time.time() > deadline:
                raise RuntimeError("command did not finish in 30 s: " + command)
        m = re.search(rb"\n@@DONE@@ (-?\d+)\n$", out)
        text = out[:m.start()].decode(errors="replace") if m else out.decode()
        return (int(m.group(1)) if m else -1), text

    def dialogue(self, steps):
        """A native-dialect session typed into `nc`: requests and replies."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        reader = sock.makefile("r", encoding="utf-8", newline="\n")
        failures = []
        for request, replies in steps:
            sock.sendall((request.replace(PORT_IN_DOCS, str(self.port)) + "\n").encode())
            for shown in replies:
                got = reader.readline().rstrip("\n")
                if not re.fullmatch(pattern(shown), got):
                    failures.append("  %s\n    shown: %s\n    got:   %s" % (request, shown, got))
        sock.close()
        return failures

    def close(self):
        try:
            os.close(self.script)
        except OSError:
            pass
        try:
            os.killpg(self.shell.pid, signal.SIGKILL)
        except OSError:
            pass
        self.shell.wait()
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(10)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
        if self.mounted():
            subprocess.run(["fusermount3", "-u", "-z", self.mnt])
        self.log.close()
        subprocess.run(["rm", "-rf", self.dir])


def native_dialogue(block):
    """[(request, [replies])] if the block is a typed nc session, else None."""
    if not block.steps or block.steps[0][0].split("#")[0].strip() != "nc 127.0.0.1 " + PORT_IN_DOCS:
        return None
    steps, pending = [], 0
    for line in block.steps[0][1]:
        if pending:
            steps[-1][1].append(line)
            pending -= 1
        elif line.startswith("ok") or line.startswith("err"):
            steps[-1][1].append(line)
            m = re.match(r"ok lines=(\d+)", line)
            pending = int(m.group(1)) if m else 0
        else:
            steps.append((line, []))
    return steps


def expected_status(command, shown):
    if shown is None:
        return 0
    if "echo $?" in command:
        return 0
    errors = [s for s in shown if re.match(r"(bash|msem|semfs|nc|cat): ", s)]
    return "nonzero" if errors else 0


def run_block(block, build):
    try:
        session = Session(build)
    except RuntimeError as error:
        return ["  " + str(error)]
    failures = []
    try:
        dialogue = native_dialogue(block)
        if dialogue is not None:
            return session.dialogue(dialogue)
        for command, shown in block.steps:
            # The repository's scripts, wherever the block runs.
            command = re.sub(r"(^|\s)scripts/", r"\1" + SOURCE + "/scripts/", command)
            if block.source.endswith(".1"):
                command = command.replace("/mnt/sem", session.mnt)
                command = command.replace("build01", "127.0.0.1:%d" % session.port)
            interrupted = shown is not None and any(s.strip() == "^C" for s in shown)
            status, text = session.run(command, "1.5" if interrupted else None)
            if command.split("#")[0].rstrip().endswith("&"):
                time.sleep(0.3)  # as a person types: the job has started
            actual = normalise(text)
            want = expected_status(command, shown)
            if not interrupted and ((want == 0 and status != 0) or
                                    (want == "nonzero" and status == 0)):
                failures.append("  %s\n    exit status %d, expected %s\n    output: %s"
                                % (command, status, want, text.strip()))
            elif shown is not None and not matches(shown, actual):
                failures.append("  %s\n    shown:\n      %s\n    got:\n      %s" % (
                    command, "\n      ".join(shown) or "(nothing)",
                    "\n      ".join(a for a in actual if a) or "(nothing)"))
    except RuntimeError as error:
        failures.append("  " + str(error) + "\n" + session.daemon_log())
    finally:
        session.close()
    return failures


def main():
    global SOURCE
    build, source = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    SOURCE = os.path.dirname(os.path.abspath(__file__)) + "/.."
    blocks = readme_blocks(os.path.join(source, "README.md"))
    blocks += man_examples(os.path.join(source, "doc", "msem.1"))
    ran = skipped = failed = 0
    for block in blocks:
        where = "%s:%d" % (block.source, block.line)
        if block.illustrative:
            skipped += 1
            print("skip %s (illustrative)" % where)
            continue
        failures = run_block(block, build)
        ran += 1
        if failures:
            failed += 1
            print("FAIL %s\n%s" % (where, "\n".join(failures)))
        else:
            print("ok   %s (%d commands)" % (where, len(block.steps)))
    print("%d blocks run, %d illustrative, %d failed" % (ran, skipped, failed))
    return 1 if failed or ran == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
