"""Connection rate client for bench/service_dataplane.py, run inside the client container: N short
TCP connections to IP:PORT (bench/_tcpserver.py answers one byte), at most K open at a time, all
from this one process (no fork per connection). Each connection is connect, read the byte, close
(the client first; the server closes on seeing it): a handshake, a reply and a teardown through the
path under test. Each connection holds its client port in TIME_WAIT for 60 s afterwards, so the
client's ip_local_port_range bounds the connections per minute.

    python bench/_connrate.py IP PORT N K
prints one JSON line: {"n", "seconds" (first connect to last close), "failed", "ms": [per-connection
time, connect to the byte]}. Python's start-up is outside the timed part.
"""
import errno
import json
import selectors
import socket
import sys
import time

TIMEOUT = 2.0  # a connection not done by then counts as failed


def main():
    ip, port, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    sel = selectors.DefaultSelector()
    started = failed = 0
    times = []

    def start():
        nonlocal started, failed
        started += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((ip, port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            failed += 1
            return
        sel.register(sock, selectors.EVENT_WRITE, [time.monotonic(), "connecting"])

    t0 = time.monotonic()
    while started < min(k, n):
        start()
    while sel.get_map():
        events = sel.select(TIMEOUT)
        now = time.monotonic()
        if not events:
            for key in list(sel.get_map().values()):
                sel.unregister(key.fileobj)
                key.fileobj.close()
                failed += 1
        for key, _ in events:
            sock, state = key.fileobj, key.data
            if state[1] == "connecting":
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    sel.unregister(sock)
                    sock.close()
                    failed += 1
                else:
                    state[1] = "reading"
                    sel.modify(sock, selectors.EVENT_READ, state)
                    continue
            else:
                try:
                    if sock.recv(64):
                        times.append(now - state[0])
                    else:
                        failed += 1  # closed without the byte
                except OSError:
                    failed += 1
                sel.unregister(sock)
                sock.close()  # first: TIME_WAIT stays here (see _tcpserver.py)
            while started < n and len(sel.get_map()) < k:
                start()
        if not sel.get_map():
            while started < n and len(sel.get_map()) < k:
                start()
    print(json.dumps({"n": n, "seconds": time.monotonic() - t0, "failed": failed,
                      "ms": [round(t * 1000, 3) for t in times]}))


if __name__ == "__main__":
    main()
