"""Ping prober: one process, one raw ICMP socket, run inside the probe container's namespace.

stdin:  "ADD <ip>" starts pinging <ip> (every 5 ms for 1 s, then backing off x1.2 up to 20 ms, so the
        reply time is quantized by at most 5 ms in the first second and 20 ms after);
        "QUIT" ends.
stdout: "UP <ip> <time.monotonic() of the first echo reply>" once per target, then it stops pinging it.
        "READY" once at start. CLOCK_MONOTONIC is system-wide, so times compare with other processes.
No fork/exec per try (pitfall 2 of measuring.md).
"""
import os
import select
import socket
import struct
import sys
import time

from weft.echo import echo_request  # the lab runs this with the repo on PYTHONPATH


def echo(ident, seq):
    return echo_request(ident, seq, b"weft-bench-probe")


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    pending = {}  # ip -> [added, next_send, interval]
    seq = 0
    stdin = sys.stdin.buffer.raw
    buf = b""
    print("READY", flush=True)
    while True:
        now = time.monotonic()
        for ip, st in pending.items():
            if now >= st[1]:
                seq = (seq + 1) & 0xFFFF
                try:
                    sock.sendto(echo(ident, seq), (ip, 0))
                except OSError:
                    pass  # e.g. EHOSTUNREACH while ARP fails: keep trying
                if now - st[0] > 1.0:
                    st[2] = min(st[2] * 1.2, 0.02)
                st[1] = now + st[2]
        timeout = max(0.0, min((st[1] for st in pending.values()), default=now + 1) - time.monotonic())
        ready, _, _ = select.select([sock, stdin], [], [], timeout)
        if sock in ready:
            while True:
                try:
                    pkt, (src, _) = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                t = time.monotonic()
                ihl = (pkt[0] & 0xF) * 4
                typ, _, _, rid, _ = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
                if typ == 0 and rid == ident and src in pending:
                    del pending[src]
                    print(f"UP {src} {t:.6f}", flush=True)
        if stdin in ready:
            chunk = os.read(stdin.fileno(), 65536)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.decode().split()
                if not parts:
                    continue
                if parts[0] == "QUIT":
                    return
                if parts[0] == "ADD":
                    t = time.monotonic()
                    pending[parts[1]] = [t, t, 0.005]


if __name__ == "__main__":
    main()
