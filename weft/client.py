"""A small JSON client for Weft's REST API (standard library only, so the CLI starts fast).

The API is addressed as http://HOST:PORT, or as unix:/path/to/socket where a relay exposes it on a
unix socket (the lab does, so commands run inside a host's network namespace reach the controller).
"""
import http.client
import json
import os
import socket
import urllib.parse

DEFAULT_API = "http://127.0.0.1:8080"


def default_api():
    return os.environ.get("WEFT_API") or DEFAULT_API


class ApiError(Exception):
    """The API answered with an error, or could not be reached. `status` is None when unreachable."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class ApiClient:
    def __init__(self, base=None, timeout=30.0):
        self.base = (base or default_api()).rstrip("/")
        self.timeout = timeout

    def request(self, method, path, body=None):
        return self.send(method, path, body)()

    def send(self, method, path, body=None):
        """Sends a request and returns a function that reads its answer, so the caller can do other
        work while the controller handles it (attach makes the veth meanwhile)."""
        data = None if body is None else json.dumps(body).encode()
        if self.base.startswith("unix:"):
            conn = _UnixHTTPConnection(self.base[len("unix:"):], self.timeout)
        else:
            url = urllib.parse.urlsplit(self.base)
            if url.scheme != "http" or not url.hostname:
                raise ApiError(None, f"{self.base!r} is not an API address (http://HOST:PORT or unix:/PATH)")
            conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=self.timeout)
        try:
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        except OSError as err:
            conn.close()
            raise self._unreachable(err) from None

        def answer():
            try:
                resp = conn.getresponse()
                raw = resp.read()
            except OSError as err:
                raise self._unreachable(err) from None
            finally:
                conn.close()
            if resp.status >= 400:
                raise ApiError(resp.status, _error_message(raw, resp.reason))
            return json.loads(raw) if raw else None
        return answer

    def _unreachable(self, err):
        return ApiError(None, f"cannot reach the Weft API at {self.base}: {err}")

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body):
        return self.request("POST", path, body)

    def delete(self, path):
        return self.request("DELETE", path)


def _error_message(raw, fallback):
    try:
        return json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip() or str(fallback)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)
