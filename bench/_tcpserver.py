"""A tiny TCP server for the connection benchmarks, run inside a container: it accepts, sends one
byte, and closes once the client has closed. One process, no fork per connection (socat's `fork`
costs a process per connection, pitfall 2 of measuring.md).

    python bench/_tcpserver.py PORT TAG
TAG is any path under the lab dir (weft.lab.spawn wants one on the command line).

The client closes first, so TIME_WAIT stays on the client, whose kernel then never reuses that
port for a new connection. Were it on the server, a client reusing the port within its 60 s would
meet it: this kernel offsets TCP timestamps per connection, so half such SYNs fail PAWS and get a
challenge ACK, and the client's RST that would clear the TIME_WAIT is out of window for a
conntrack on the way (a Service's), which drops it (docs/benchmarks.md, issue 10).
"""
import selectors
import socket
import sys


def main():
    port = int(sys.argv[1])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(4096)
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is srv:
                try:
                    conn, _ = srv.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                try:
                    conn.send(b"x")
                except OSError:  # the prober resets its connections as soon as they are up
                    conn.close()
                    continue
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                if key.fileobj.recv(64):
                    continue
            except OSError:
                pass
            sel.unregister(key.fileobj)
            key.fileobj.close()


if __name__ == "__main__":
    main()
