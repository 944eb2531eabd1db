"""A constant-rate echo counter: `python -m weft.echo DST [--rate 100]`, run inside a container.

It sends ICMP echo requests to DST on an absolute schedule (the i-th at start + i/rate, so a slow
moment never lowers the rate), from one process and one raw socket (no fork per probe: pitfall 2 of
the measuring notes), and records which were answered. It prints "READY" once the first reply is in
(so a caller can start its fault knowing the path works), and counts from the request that reply
answered; when it is told to stop (SIGTERM,
SIGINT, or stdin closed) it waits one second for late replies and prints one line of JSON:

  {"sent": N, "received": N, "lost": N, "longest_gap_ms": F,
   "outages": [[first lost send time, last lost send time, lost count], ...]}

Times are CLOCK_MONOTONIC seconds, system-wide, so they compare with the caller's time.monotonic().
`longest_gap_ms` is the longest time between two answered requests, less one interval: 0 without loss.
"""
import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time

LATE = 1.0  # seconds a reply may take and still count


def checksum(data):
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident, seq, payload=b"weft-echo-counter"):
    """An ICMP echo request (for a raw socket: the kernel adds the IP header)."""
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload


def summary(sent_at, answered, interval, first=None):
    """The report over sends at `sent_at` (index -> time) of which `answered` (set of indexes, each
    answered within LATE) were, counted from request `first`: the one whose reply made the counter
    print READY (on time or not), so the count starts where the caller was told the path works;
    what went before (the path not yet up, an ARP still resolving) is not an outage of it. None (no
    reply at all): every request counts."""
    first = first or 0
    sent_at = {i: sent_at[i] for i in range(first, len(sent_at))}
    answered = {i for i in answered if i >= first}
    lost = [i for i in sent_at if i not in answered]
    outages = []
    for i in lost:
        if outages and outages[-1][3] == i - 1:
            outages[-1][1], outages[-1][2], outages[-1][3] = sent_at[i], outages[-1][2] + 1, i
        else:
            outages.append([sent_at[i], sent_at[i], 1, i])
    got = sorted(answered)
    gap = max((sent_at[b] - sent_at[a] for a, b in zip(got, got[1:])), default=interval) - interval
    return {"sent": len(sent_at), "received": len(answered), "lost": len(lost),
            "longest_gap_ms": round(max(gap, 0.0) * 1000, 1),
            "outages": [[round(a, 4), round(b, 4), n] for a, b, n, _ in outages]}


def run(dst, rate, out=sys.stdout):
    interval = 1.0 / rate
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    stdin = sys.stdin.fileno()
    watch_stdin = not os.isatty(stdin)
    sent_at, answered, index_of_seq = [], set(), {}
    start = time.monotonic()
    ready_at, stop_at = None, None  # the request whose reply was the first: READY
    while True:
        now = time.monotonic()
        if stop and stop_at is None:
            stop_at = now + LATE
        if not stop:
            while start + len(sent_at) * interval <= now:
                seq = len(sent_at) & 0xFFFF
                index_of_seq[seq] = len(sent_at)
                sent_at.append(time.monotonic())
                try:
                    sock.sendto(echo_request(ident, seq), (dst, 0))
                except OSError:  # no route yet, or a full buffer: that request is lost
                    pass
            wake = start + len(sent_at) * interval
        else:
            if now > stop_at:
                break
            wake = stop_at
        fds = [sock] + ([stdin] if watch_stdin and not stop else [])
        try:
            readable = select.select(fds, [], [], max(0.0, wake - time.monotonic()))[0]
        except InterruptedError:
            readable = []
        if stdin in readable and not os.read(stdin, 4096):
            stop.append(True)
        if sock in readable:
            while True:
                try:
                    packet = sock.recv(2048)
                except BlockingIOError:
                    break
                header = (packet[0] & 0x0F) * 4
                kind, _, _, reply_ident, seq = struct.unpack("!BBHHH", packet[header:header + 8])
                index = index_of_seq.get(seq)
                if kind == 0 and reply_ident == ident and index is not None:
                    if time.monotonic() - sent_at[index] <= LATE:
                        answered.add(index)
                    if ready_at is None:
                        ready_at = index
                        print("READY", file=out, flush=True)
    print(json.dumps(summary(sent_at, answered, interval, ready_at)), file=out, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m weft.echo", description=__doc__.split("\n")[0])
    parser.add_argument("dst", help="the IPv4 address to send echo requests to")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    args = parser.parse_args(argv)
    if not 1 <= args.rate <= 1000:
        parser.error("--rate must be between 1 and 1000")
    try:
        socket.inet_aton(args.dst)
    except OSError:
        parser.error(f"{args.dst!r} is not an IPv4 address")
    run(args.dst, args.rate)


if __name__ == "__main__":
    main()
