"""The HTTP front of the northbound API, as a plain WSGI application: who is calling, whether they
may, and whether the request is well-formed, before controller/api.py sees it.

Who may drive Weft:
- over the unix socket (the default listener), whoever the socket's permissions let connect: the
  caller is named by its peer credentials (uid), and no token is needed;
- over TCP (opt-in), only a caller with a bearer token from the controller's token directory.
  `tokens/NAME` may read and write; `tokens/read-only/NAME` may only read.
Every request must name the listener itself as its Host (no DNS rebinding), every write must be
`Content-Type: application/json` (a browser cannot send that cross-site without CORS, which Weft
never grants), bodies are bounded, and each caller has a bounded number of requests in flight, so
a slow or waiting client cannot starve the others. Every write is logged with its caller.
GET /metrics (Prometheus' text format, controller/metrics.py) is behind the same rules: a read-only
token may scrape it.
"""
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import pwd
import secrets
import stat
import time
import urllib.parse


LOG = logging.getLogger("weft.api")
MAX_BODY = 64 * 1024
MAX_MANIFEST_BODY = 1024 * 1024  # POST /v1/apply: a file of manifests (kubectl's are often a few KiB each)
MAX_REQUESTS_PER_CALLER = 512    # in flight at once, waits included
MAX_WAITS_PER_CALLER = 256       # requests in flight that wait (wait_up=...): a burst of attaches waits too
WRITES = ("POST", "PUT", "DELETE", "PATCH")
ADMIN_TOKEN = "admin"
METRICS_PATH = "/metrics"  # where Prometheus looks by default, outside /v1


@dataclasses.dataclass(frozen=True)
class Peer:
    """Who is at the other end of a connection, as the listener saw it (not as the caller claims)."""
    listener: str            # "unix" or "tcp"
    address: str             # the uid for unix, the IP for tcp
    tls_subject: str = ""    # the verified client certificate's CN, if one was presented

    def describe(self):
        if self.listener == "unix":
            try:
                return f"uid {self.address} ({pwd.getpwuid(int(self.address)).pw_name})"
            except (KeyError, ValueError):
                return f"uid {self.address}"
        return f"{self.address}" + (f" (certificate {self.tls_subject})" if self.tls_subject else "")


@dataclasses.dataclass(frozen=True)
class Caller:
    name: str                # for the log: "uid 0 (root) on the unix socket", "token admin from 127.0.0.1"
    key: str                 # what its limits count against
    read_only: bool = False


class TokenStore:
    """Bearer tokens, one file each under `directory` (first line: the secret), re-read when the
    directory changes, so adding or revoking a token needs no restart. Files others may read are
    ignored, as ssh ignores such keys."""

    def __init__(self, directory):
        self.directory = directory
        self._stamp = None
        self._tokens = {}        # secret -> (name, read_only)

    def ensure_admin(self):
        """Creates the directory (0700) and the admin token (0600) at first start; returns its path."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        path = os.path.join(self.directory, ADMIN_TOKEN)
        if not os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
            LOG.info("created the API token %s (for `weft --token-file %s`)", path, path)
        return path

    def lookup(self, secret):
        """(name, read_only) of the token with this secret, or None."""
        self._reload_if_changed()
        for known, entry in self._tokens.items():
            if hmac.compare_digest(known.encode(), secret.encode()):
                return entry
        return None

    def _reload_if_changed(self):
        read_only_dir = os.path.join(self.directory, "read-only")
        stamp = tuple(_mtime(d) for d in (self.directory, read_only_dir))
        if stamp == self._stamp:
            return
        tokens = {}
        for directory, read_only in ((self.directory, False), (read_only_dir, True)):
            for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
                secret = _read_token(os.path.join(directory, name))
                if secret:
                    tokens[secret] = (name, read_only)
        self._tokens, self._stamp = tokens, stamp


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def _read_token(path):
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_mode & 0o077:
            LOG.warning("ignoring token file %s: others may read it (chmod 600 it)", path)
            return None
        with open(path) as f:
            secret = f.readline().strip()
    except (OSError, UnicodeDecodeError) as err:
        LOG.warning("ignoring token file %s: %s", path, err)
        return None
    return secret if len(secret) >= 16 else None


class HostCheck:
    """Which Host headers name this listener. DNS rebinding makes a browser send an attacker's name
    for a loopback address; a literal address or a name the operator listed cannot be rebound."""

    def __init__(self, listener, bound_ip=None, port=None, names=()):
        self.listener, self.port, self.names = listener, port, {n.lower() for n in names}
        self.bound_ip = bound_ip

    def allows(self, host_header):
        if host_header is None:
            return False
        host, port = _split_host(host_header.strip().lower())
        if self.listener == "unix":
            return host == "localhost"
        if port is not None and self.port is not None and port != self.port:
            return False
        if host in self.names:
            return True
        if host == "localhost":
            return self.bound_ip is not None and ipaddress.ip_address(self.bound_ip).is_loopback
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        wildcard = self.bound_ip is None or ipaddress.ip_address(self.bound_ip).is_unspecified
        return wildcard or address == ipaddress.ip_address(self.bound_ip)


def _split_host(value):
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    else:
        host, _, port = value.partition(":")
        port = port or None
    if port is not None:
        port = int(port) if port.isascii() and port.isdigit() else -1
    return host, port


class HttpFront:
    """The WSGI application. `api` is a NorthboundApi; `tokens` a TokenStore (None: no TCP listener);
    `host_checks` maps a listener ("unix", "tcp") to its HostCheck. The server puts the connection's
    Peer in environ["weft.peer"]. `metrics`: a controller.metrics.Metrics (None: no /metrics)."""

    def __init__(self, api, tokens, host_checks, metrics=None):
        self.api, self.tokens, self.host_checks, self.metrics = api, tokens, host_checks, metrics
        self._in_flight = {}     # caller key -> requests in flight
        self._waiting = {}       # caller key -> waiting requests in flight
        self.stopping = False    # set at SIGTERM: new requests are refused, those in flight finish

    def __call__(self, environ, start_response):
        started = time.monotonic()
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("RAW_PATH_INFO", environ.get("PATH_INFO", ""))
        caller = None
        try:
            caller = self._caller(environ)
            status, body = self._handle(environ, method, path, caller)
        except _Refused as refused:
            status, body = refused.status, {"error": refused.message, **refused.details}
        except Exception:  # a bug: the client gets no traceback, the log gets one
            LOG.exception("internal error answering %s %s", method, path)
            status, body = 500, {"error": "internal error in the controller (details in its log)"}
        if method in WRITES:
            LOG.info("%s %s by %s -> %d", method, _printable(path), caller.name if caller else
                     environ.get("weft.peer", Peer("?", "?")).describe(), status)
        if isinstance(body, _Text):
            content_type, data = body.content_type, body.data
        else:
            content_type, data = "application/json", (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()
        headers = [("Content-Type", content_type), ("Cache-Control", "no-store"),
                   ("X-Content-Type-Options", "nosniff")]
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="weft"'))
        if self.metrics is not None:
            self.metrics.api_request(method, status, time.monotonic() - started)
        start_response(f"{status} {_REASONS.get(status, 'Error')}", headers + [("Content-Length", str(len(data)))])
        return [data]

    def _caller(self, environ):
        peer = environ.get("weft.peer")
        if not isinstance(peer, Peer):
            raise _Refused(403, "the request did not come through a Weft listener")
        check = self.host_checks.get(peer.listener)
        if check is None or not check.allows(environ.get("HTTP_HOST")):
            raise _Refused(421, f"Host {environ.get('HTTP_HOST')!r} does not name this API "
                                "(requests must be addressed to the listener itself)")
        if peer.listener == "unix":
            return Caller(f"{peer.describe()} on the unix socket", f"uid:{peer.address}")
        scheme, _, secret = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _Refused(401, "this API needs a bearer token over TCP (Authorization: Bearer TOKEN; "
                                "weft --token-file FILE, or WEFT_TOKEN_FILE)")
        token = self.tokens.lookup(secret.strip()) if self.tokens else None
        if token is None:
            raise _Refused(401, "the bearer token is not valid")
        name, read_only = token
        return Caller(f"token {name} from {peer.describe()}", f"token:{name}", read_only)

    def requests_in_flight(self):
        return sum(self._in_flight.values())

    def _handle(self, environ, method, path, caller):
        if self.stopping:  # before anything is read or done: a refused write changed nothing
            raise _Refused(503, "the controller is shutting down: nothing was done; retry once it is back "
                                "(or on another controller)", {"retry": True})
        if method in WRITES:
            if caller.read_only:
                raise _Refused(403, f"{caller.name} may only read")
            content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                raise _Refused(415, "writes must be sent as Content-Type: application/json")
        limit = MAX_MANIFEST_BODY if path == "/v1/apply" else MAX_BODY
        raw = _read_body(environ, limit) if method in ("POST", "PUT", "PATCH") else b""
        query = environ.get("QUERY_STRING", "")
        # as the API will read the query: "wait%5Fup" is wait_up too
        waits = any(urllib.parse.unquote(item.partition("=")[0]) == "wait_up" for item in query.split("&"))
        self._admit(caller, waits)
        try:
            if path == METRICS_PATH and self.metrics is not None:
                if method != "GET":
                    raise _Refused(405, f"{method} is not allowed here (allowed: GET)")
                return 200, _Text(self.metrics.content_type, self.metrics.exposition())
            return self.api.handle(method, path, raw, query)
        finally:
            self._release(caller, waits)

    def _admit(self, caller, waits):
        if self._in_flight.get(caller.key, 0) >= MAX_REQUESTS_PER_CALLER:
            raise _Refused(429, f"{caller.name} already has {MAX_REQUESTS_PER_CALLER} requests in flight")
        if waits and self._waiting.get(caller.key, 0) >= MAX_WAITS_PER_CALLER:
            raise _Refused(429, f"{caller.name} already has {MAX_WAITS_PER_CALLER} waiting requests in "
                                "flight; wait for one to answer")
        self._in_flight[caller.key] = self._in_flight.get(caller.key, 0) + 1
        if waits:
            self._waiting[caller.key] = self._waiting.get(caller.key, 0) + 1

    def _release(self, caller, waits):
        for counts, counted in ((self._in_flight, True), (self._waiting, waits)):
            if counted:
                counts[caller.key] -= 1
                if not counts[caller.key]:
                    del counts[caller.key]


@dataclasses.dataclass(frozen=True)
class _Text:
    """An answer that is not JSON (the metrics)."""
    content_type: str
    data: bytes


class _Refused(Exception):
    def __init__(self, status, message, details=None):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or {}


def _read_body(environ, limit):
    length = environ.get("CONTENT_LENGTH") or ""
    if not (length.isascii() and length.isdigit()):
        raise _Refused(411, "a request body needs a Content-Length")
    if int(length) > limit:
        raise _Refused(413, f"the request body is {length} bytes; the limit is {limit}")
    return environ["wsgi.input"].read(int(length))


def _printable(path):
    return path if len(path) <= 200 else path[:200] + "..."


_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
            413: "Payload Too Large", 415: "Unsupported Media Type", 421: "Misdirected Request",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
