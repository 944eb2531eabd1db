"""A keep-alive JSON client for Weft's REST API, for benchmarks that time single API calls.

weft.client.ApiClient opens a connection per request (what the CLI and attach do); a benchmark of the
API itself wants the controller's cost, not a TCP or unix-socket handshake per call, so this one keeps
one HTTP/1.1 connection open (and counts the times it had to open another).

    api = KeepAlive(base, token_file=None)     # base: http://HOST:PORT or unix:/path/to/socket
    status, body = api.request("POST", "/v1/ports", {"name": "p1", "network": "n1"})

With a token file, every request carries `Authorization: Bearer <its first line>`.
"""
import http.client
import json
import socket
import urllib.parse


def lab_endpoint(info):
    """(base, token file or None) of a lab's API, from weft.lab.info(): the TCP address when the lab
    has one, else its unix socket; the token file when the lab records one."""
    base = info.get("api") or info.get("api_unix")
    if not base:
        raise RuntimeError("the lab records no API address (neither api nor api_unix)")
    return base, info.get("api_token_file")


class KeepAlive:
    def __init__(self, base, token_file=None, timeout=120.0):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        if token_file:
            with open(token_file) as f:
                self.headers["Authorization"] = f"Bearer {f.readline().strip()}"
        self.conn = None
        self.connects = 0  # 1 for a run that kept its connection throughout

    def _connect(self):
        if self.base.startswith("unix:"):
            # The socket is made here and handed over: this client reconnects itself, so
            # http.client never has to know how to open one.
            conn = http.client.HTTPConnection("localhost", timeout=self.timeout)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.base[len("unix:"):])
            conn.sock = sock
        else:
            url = urllib.parse.urlsplit(self.base)
            if url.scheme != "http" or not url.hostname:
                raise ValueError(f"{self.base!r} is not an API address (http://HOST:PORT or unix:/PATH)")
            conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=self.timeout)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # pitfall 7
        self.connects += 1
        return conn

    def request(self, method, path, body=None):
        """(status, decoded JSON body or None). When the server had closed a kept connection (a
        keep-alive server may), the request is sent again on a new one; any other error is raised."""
        data = None if body is None else json.dumps(body).encode()
        while True:
            reused = self.conn is not None
            if not reused:
                self.conn = self._connect()
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if not reused:  # a fresh connection failed: not a keep-alive timeout
                    raise
                continue
            if resp.will_close:
                self.close()
            return resp.status, (json.loads(raw) if raw else None)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
