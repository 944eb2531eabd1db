"""TCP connect prober for bench/policy_enforce.py: one process inside the client container starts a
non-blocking connect to IP:PORT every INTERVAL and records, for each, when it started and whether it
connected within TIMEOUT. A dropped SYN is retried by the kernel only after 1 s, so "not connected
within TIMEOUT" means "blocked". A connected socket is reset at once (SO_LINGER 0): no TIME_WAIT, so
the client's ephemeral ports last the whole run. No fork per try (pitfall 2 of measuring.md).

    python bench/_tcpprobe.py IP PORT TAG [INTERVAL [TIMEOUT]]     (defaults 0.002 and 0.2 s)
TAG: any path under the lab dir (weft.lab.spawn wants one on the command line).
stdin:  "RUN ok|fail WINDOW MAX" starts connecting at once and prints "STARTED <t>"; once the
        attempts of the last WINDOW seconds (by start time, all resolved) all ended as asked ("ok":
        connected, "fail": not), or after MAX seconds, it stops, lets the pending ones resolve and
        prints one JSON line {"attempts": [[start, connected], ...], "settled": true|false}.
        "QUIT" ends.
Times are time.monotonic() (CLOCK_MONOTONIC is system-wide: they compare with the caller's).
"""
import collections
import errno
import json
import selectors
import socket
import struct
import sys
import time

LINGER_RESET = struct.pack("ii", 1, 0)


def settled(attempts, first_pending, want, window, t_begin):
    """Whether the resolved attempts (those before the oldest pending one) end with WINDOW seconds
    of `want` outcomes, all started after t_begin."""
    if first_pending == 0:
        return False
    end = attempts[first_pending - 1][0]
    if end - window < t_begin:
        return False
    for start, ok in reversed(attempts[:first_pending]):
        if start < end - window:
            return True
        if ok is not want:
            return False
    return True


def run(ip, port, interval, timeout, want, window, max_seconds):
    sel = selectors.DefaultSelector()
    attempts = []  # [start, True / False / None while pending]
    pending = collections.deque()  # (index, socket) in start order
    t_begin = next_start = time.monotonic()
    print(f"STARTED {t_begin:.6f}", flush=True)
    stopping = False

    def resolve(i, sock, ok):
        attempts[i][1] = ok
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    while True:
        now = time.monotonic()
        if not stopping and now >= next_start:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            i = len(attempts)
            attempts.append([now, None])
            err = sock.connect_ex((ip, port))
            if err == errno.EINPROGRESS:
                sel.register(sock, selectors.EVENT_WRITE, i)
                pending.append((i, sock))
            else:
                resolve(i, sock, err == 0)
            next_start = max(next_start + interval, now)  # after a stall: on, not a burst
        while pending and (attempts[pending[0][0]][1] is not None or now - attempts[pending[0][0]][0] >= timeout):
            i, sock = pending.popleft()
            if attempts[i][1] is None:
                resolve(i, sock, False)
        first_pending = pending[0][0] if pending else len(attempts)
        if not stopping and (settled(attempts, first_pending, want, window, t_begin)
                             or now - t_begin >= max_seconds):
            stopping = True
        if stopping and not pending:
            ok = settled(attempts, len(attempts), want, window, t_begin)
            print(json.dumps({"attempts": [[round(s, 6), o] for s, o in attempts], "settled": ok}), flush=True)
            return
        wake = [now + 0.01]  # at least every 10 ms: the settled check
        if not stopping:
            wake.append(next_start)
        if pending:
            wake.append(attempts[pending[0][0]][0] + timeout)
        for key, _ in sel.select(max(0.0, min(wake) - time.monotonic())):
            err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            resolve(key.data, key.fileobj, err == 0)


def main():
    ip, port = sys.argv[1], int(sys.argv[2])
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.002
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 0.2
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "QUIT":
            return
        if parts[0] == "RUN":
            run(ip, port, interval, timeout, parts[1] == "ok", float(parts[2]), float(parts[3]))


if __name__ == "__main__":
    main()
