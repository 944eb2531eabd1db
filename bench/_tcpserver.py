"""A tiny TCP server for the connection benchmarks, run inside a container: it accepts, sends one
byte and closes, one connection after another in one process (no fork per connection: socat's
`fork` costs a process per connection, pitfall 2 of measuring.md).

    python bench/_tcpserver.py PORT TAG
TAG is any path under the lab dir (weft.lab.spawn wants one on the command line). Closing first
leaves TIME_WAIT on the server side, where it costs nothing: the client's ports stay free.
"""
import socket
import sys


def main():
    port = int(sys.argv[1])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(4096)
    while True:
        conn, _ = srv.accept()
        try:
            conn.send(b"x")
        except OSError:
            pass  # the prober resets its connections as soon as they are up
        conn.close()


if __name__ == "__main__":
    main()
