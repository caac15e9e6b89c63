#!/usr/bin/env python3
"""An ACE network semaphore client, written the way ACE's own client
(saq/network_semaphore/client.py) speaks: send `acquire:NAME|`, read with
recv(128), split on '|', `locked` ends the wait, `wait` tokens are
heartbeats; while holding, send `wait|` keep-alives; `release|` expects
exactly `ok|`.

Driven over stdin/stdout so that end-to-end tests can steer it:
  prints "wait" per heartbeat, "locked" once granted, then reads commands
  from stdin, one per line:
    release   send release|, print "ok" if the reply is exactly ok|
    keepalive send wait|
    drop      close the socket (FIN) and exit
    reset     abort the connection (RST) and exit
  A disconnect by the server prints "closed".

ACE's client never fails an acquire it cannot make over the network: a
refused, reset or closed connection (or a reply it does not understand)
before `locked|` makes it take a process-local fallback semaphore instead,
and the global limit is silently gone. This client prints
"fallback REASON" and exits 3 where ACE's would have fallen back, so that
a test can fail on it.

usage: ace_client.py PORT NAME [--keepalive SECONDS] [--source ADDRESS]
"""
import socket
import struct
import sys
import threading


FALLBACK = 3


def fallback(reason):
    print("fallback " + reason, flush=True)
    return FALLBACK


def option(flag, default):
    if flag in sys.argv:
        return sys.argv[sys.argv.index(flag) + 1]
    return default


def main():
    port, name = int(sys.argv[1]), sys.argv[2]
    keepalive = float(option("--keepalive", 0))
    source = option("--source", None)
    sock = socket.socket()
    try:
        if source:
            sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        # As ACE: the name goes out ASCII-encoded, whatever it holds.
        sock.sendall("acquire:{}|".format(name).encode("ascii"))
    except (OSError, UnicodeError) as error:
        return fallback("connect: {}".format(error))
    while True:
        try:
            command = sock.recv(128).decode("ascii")
        except (OSError, UnicodeError) as error:
            return fallback("waiting: {}".format(error))
        if command == "":
            return fallback("closed before locked|")
        commands = command[:-1].split("|")
        if "locked" in commands:
            # Heartbeats that came in the same read are still reported.
            for token in commands:
                if token == "wait":
                    print("wait", flush=True)
            print("locked", flush=True)
            if "ok" in commands:
                print("ok", flush=True)
            break
        if all(x == "wait" for x in commands):
            for _ in commands:
                print("wait", flush=True)
            continue
        return fallback("invalid reply " + repr(command))

    stop = threading.Event()
    if keepalive > 0:
        def beat():
            while not stop.wait(keepalive):
                try:
                    sock.sendall(b"wait|")
                except OSError:
                    return
        threading.Thread(target=beat, daemon=True).start()

    for line in sys.stdin:
        line = line.strip()
        if line == "release":
            sock.sendall(b"release|")
            reply = sock.recv(128).decode("ascii")
            print("ok" if reply == "ok|" else "bad " + reply, flush=True)
            rest = sock.recv(128)
            print("closed" if rest == b"" else "extra " + rest.decode(), flush=True)
            stop.set()
            return 0
        if line == "keepalive":
            sock.sendall(b"wait|")
        elif line == "drop":
            sock.close()
            return 0
        elif line == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
