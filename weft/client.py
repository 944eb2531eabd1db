"""A small JSON client for Weft's REST API (standard library only, so the CLI starts fast).

Where the API is, and how to prove who you are, comes from (first found wins):
  1. arguments (`weft --api URL --token-file FILE`),
  2. the environment: WEFT_API, WEFT_TOKEN_FILE (or WEFT_TOKEN, the secret itself), WEFT_CA_FILE,
     WEFT_API_TIMEOUT (seconds an answer may take; a request that asks the API to wait, ?wait_up=S,
     gets S more),
  3. a config file: $WEFT_CONFIG, else ~/.config/weft/client.conf, else /etc/weft/client.conf:
        [api]
        url = https://controller.example:8443
        token_file = /etc/weft/token
        ca_file = /etc/weft/pki/ca-cert.pem
        cert_file = ...        (a client certificate and its key, if the API asks for one)
        key_file = ...
  4. the controller's default unix socket, /run/weft/api.sock (no token: its permissions decide).
URLs: unix:/path/to/socket, http://HOST:PORT, https://HOST:PORT; several, comma-separated, for an
active/standby pair of controllers: a request goes to the next one when one refuses the connection or
answers that it is the standby or that it wrote nothing (so that is always safe). The environment's
names are WEFT_CA_FILE, WEFT_CERT_FILE and WEFT_KEY_FILE for the TLS settings.
"""
import configparser
import errno
import http.client
import json
import math
import os
import re
import socket
import ssl
import time
import urllib.parse

DEFAULT_API = "unix:/run/weft/api.sock"
DEFAULT_TIMEOUT = 30.0  # seconds the API has to answer (connect, then each read)
MAX_TIMEOUT = 600.0     # the longest --api-timeout / WEFT_API_TIMEOUT: a hung API is said so, not waited for
FAILOVER_WAIT = 10.0   # seconds a client of an active/standby pair waits for one of them to be active
FAILOVER_PAUSE = 0.1   # seconds between rounds of asking each
CONFIG_FILES = ("~/.config/weft/client.conf", "/etc/weft/client.conf")


class ApiError(Exception):
    """The API answered with an error, or could not be reached. `status` is None when unreachable."""

    def __init__(self, status, message, details=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}  # the error answer's other fields (POST /v1/apply: "document")


class _Dropped(ApiError):
    """The connection ended after a read was sent, before its answer."""


def _config_file():
    explicit = os.environ.get("WEFT_CONFIG")
    candidates = [explicit] if explicit else [os.path.expanduser(p) for p in CONFIG_FILES]
    for path in candidates:
        if os.path.exists(path):
            parser = configparser.ConfigParser()
            try:
                parser.read(path)
            except configparser.Error as err:
                raise ApiError(None, f"cannot read the client config {path}: {err.message.splitlines()[0]}") from None
            return dict(parser["api"]) if parser.has_section("api") else {}
        if explicit:
            raise ApiError(None, f"WEFT_CONFIG names {explicit}, which does not exist")
    return {}


def api_timeout(text, where):
    """An API timeout as written (`where`: the option or variable that gave it): ASCII decimal
    seconds, more than 0 and at most MAX_TIMEOUT."""
    number = float(text) if re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?", text) else None
    if number is None or not 0 < number <= MAX_TIMEOUT:
        raise ApiError(None, f"{where}: {text!r} is not a timeout (seconds, more than 0 and at most "
                             f"{MAX_TIMEOUT:g}, like 30 or 2.5)")
    return number


def default_api():
    return os.environ.get("WEFT_API") or DEFAULT_API


def path(*segments):
    """/v1/SEG/SEG..., each segment percent-encoded (names may hold any character the API refuses)."""
    return "/v1/" + "/".join(urllib.parse.quote(str(s), safe="") for s in segments)


class ApiClient:
    def __init__(self, base=None, timeout=None, token_file=None, token=None, ca_file=None):
        """Arguments first, then the environment, then the config file (see the module docstring)."""
        config = {}
        if not (base or os.environ.get("WEFT_API")) or not (token_file or token) or not ca_file:
            config = _config_file()
        self.base = (base or os.environ.get("WEFT_API") or config.get("url") or DEFAULT_API).rstrip("/")
        if timeout is None:
            env = os.environ.get("WEFT_API_TIMEOUT")
            timeout = api_timeout(env, "WEFT_API_TIMEOUT") if env else DEFAULT_TIMEOUT
        self.timeout = timeout
        self._token, self._token_file = None, None
        if token_file or token:
            self._token_file, self._token = token_file, token
        elif os.environ.get("WEFT_TOKEN_FILE") or os.environ.get("WEFT_TOKEN"):
            self._token_file, self._token = os.environ.get("WEFT_TOKEN_FILE"), os.environ.get("WEFT_TOKEN")
        else:
            self._token_file = config.get("token_file")
        self._ca_file = ca_file or os.environ.get("WEFT_CA_FILE") or config.get("ca_file")
        self._client_cert = (os.environ.get("WEFT_CERT_FILE") or config.get("cert_file"),
                             os.environ.get("WEFT_KEY_FILE") or config.get("key_file"))
        endpoints = [b.strip().rstrip("/") for b in self.base.split(",") if b.strip()] or [self.base]
        self._endpoints = [(endpoint, self._connector(endpoint)) for endpoint in endpoints]
        self._first = 0  # the endpoint that answered last: asked first next time

    def _connector(self, base):
        if base.startswith("unix:"):
            sock_path = base[len("unix:"):]
            if not sock_path:
                raise ApiError(None, f"{base!r} names no socket (unix:/PATH)")
            return lambda timeout: UnixHTTPConnection(sock_path, timeout)
        try:
            url = urllib.parse.urlsplit(base)
            host, port = url.hostname, url.port
        except ValueError as err:
            raise ApiError(None, f"{base!r} is not an API address ({err}); use unix:/PATH, "
                                 "http://HOST:PORT or https://HOST:PORT") from None
        # (http.client would refuse a space or a control character in the host only when connecting)
        if url.scheme not in ("http", "https") or not host or url.path not in ("", "/") \
                or re.search(r"[\x00-\x20\x7f]", host):
            raise ApiError(None, f"{base!r} is not an API address (unix:/PATH, http://HOST:PORT or "
                                 "https://HOST:PORT)")
        if url.scheme == "http":
            return lambda timeout: http.client.HTTPConnection(host, port or 80, timeout=timeout)
        try:
            context = ssl.create_default_context(cafile=self._ca_file)
            if self._client_cert[0]:
                context.load_cert_chain(*self._client_cert)
        except (OSError, ssl.SSLError) as err:
            files = " ".join(filter(None, (self._ca_file, *self._client_cert)))
            raise ApiError(None, f"cannot use the TLS files {files}: {getattr(err, 'strerror', None) or err}") from None
        return lambda timeout: http.client.HTTPSConnection(host, port or 443, timeout=timeout, context=context)

    def _headers(self, body):
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = self._token
        if self._token_file:
            try:
                with open(self._token_file, "rb") as f:
                    token = f.readline().strip().decode("latin-1")
            except OSError as err:
                raise ApiError(None, f"cannot read the token file {self._token_file}: {err.strerror}") from None
        if token and not re.fullmatch(r"[\x21-\x7e]+", token):  # else http.client fails on it, or sends it
            raise ApiError(None, f"the token in {self._token_file or 'WEFT_TOKEN'} is not a bearer token "
                                 "(one line of printable ASCII)")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Length"] = str(len(body))
        return headers

    def request(self, method, path, body=None):
        try:
            return self.send(method, path, body)()
        except _Dropped:
            if method != "GET":
                raise
            return self.send(method, path, body)()  # a read is safe to ask again, once

    def send(self, method, path, body=None):
        """Sends a request and returns a function that reads its answer, so the caller can do other
        work while the controller handles it (attach makes the veth meanwhile)."""
        data = None if body is None else json.dumps(body).encode()
        headers = self._headers(data)
        order = list(range(self._first, len(self._endpoints))) + list(range(self._first))
        deadline = time.monotonic() + FAILOVER_WAIT
        return self._send_to(order, method, path, body, data, headers, deadline)

    def _send_to(self, order, method, path, body, data, headers, deadline, tried=0, standby=None):
        """Sends to the first endpoint of `order` (indexes into self._endpoints); goes on to the next
        when one refuses the connection, or answers that it is the standby. With several endpoints,
        when all did and one was a standby, starts over after a pause, for up to FAILOVER_WAIT: it may be
        taking over. Out of
        time, the last standby's answer (it names the active) is the error, rather than a refusal."""
        index = order[tried % len(order)]
        if tried and not tried % len(order):
            time.sleep(FAILOVER_PAUSE)
        more = len(order) > 1 and time.monotonic() < deadline
        where, connect = self._endpoints[index]
        conn = connect(self._answer_within(path))
        try:
            conn.request(method, path, body=data, headers=headers)
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            # Nothing was received whole, so nothing was done: refused, or the controller died as it
            # accepted us (reset, broken pipe: a request cut short is never handled).
            refused = getattr(err, "errno", None) in (errno.ECONNREFUSED, errno.ENOENT, errno.ECONNRESET,
                                                      errno.EPIPE)
            # Another round only once a standby answered: with all down, one is enough.
            if more and refused and (tried < len(order) - 1 or standby is not None):
                return self._send_to(order, method, path, body, data, headers, deadline, tried + 1, standby)
            raise (standby if refused and standby else self._unreachable(err, where, conn.timeout)) from None

        def answer():
            try:
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as err:
                if isinstance(err, TimeoutError):  # no answer in time: said so, not asked again
                    raise (self._unreachable(err, where, conn.timeout) if method == "GET"
                           else went_away(method, path, body, self._silent(where, conn.timeout))) from None
                if isinstance(err, ssl.SSLError):
                    raise self._unreachable(err, where) from None
                if method != "GET":
                    raise went_away(method, path, body) from None
                # Asked again (request), of the next controller first: this one may be dying, and
                # still take a connection or two before its socket goes.
                self._first = order[(tried + 1) % len(order)]
                raise _Dropped(None, self._unreachable(err, where).message) from None
            finally:
                conn.close()
            try:
                value = self._decode(resp, raw, where)
            except ApiError as err:
                # A standby, or a controller that wrote nothing and says so: the next one may take it.
                if more and err.status == 503 and ("active" in err.details or err.details.get("retry") is True):
                    return self._send_to(order, method, path, body, data, headers, deadline, tried + 1, err)()
                raise
            self._first = index
            return value
        return answer

    def _decode(self, resp, raw, where):
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            value = _NOT_JSON
        if resp.status >= 400:
            message = value.get("error") if isinstance(value, dict) and isinstance(value.get("error"), str) \
                else f"HTTP {resp.status} {resp.reason}" + (f": {_excerpt(raw)}" if raw else "")
            if resp.status == 401:
                message += " (give a token with --token-file FILE or WEFT_TOKEN_FILE)"
            raise ApiError(resp.status, message, value if isinstance(value, dict) else None)
        if value is _NOT_JSON:
            raise ApiError(resp.status, f"the API at {where} answered with something that is not JSON "
                                        f"({resp.getheader('Content-Type') or 'no content type'}): {_excerpt(raw)}")
        return value

    def _answer_within(self, path):
        """Seconds the API has to answer a request: a request that asks it to wait (?wait_up=S, at
        most validate.MAX_WAIT) gets S more."""
        wait = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("wait_up", ["0"])[0]
        try:
            wait = float(wait)
        except ValueError:  # the API refuses it at once
            wait = 0.0
        return self.timeout + (wait if math.isfinite(wait) and wait > 0 else 0.0)

    def _silent(self, where, timeout):
        return (f"the Weft API at {where} did not answer within {timeout:g} s (is the controller overloaded or "
                "stuck? --api-timeout or WEFT_API_TIMEOUT gives it longer)")

    def _unreachable(self, err, where, timeout=None):
        if isinstance(err, TimeoutError):
            return ApiError(None, self._silent(where, timeout or self.timeout))
        if where.startswith("unix:") and isinstance(err, OSError):
            sock = where[len("unix:"):]
            if err.errno in (errno.EACCES, errno.EPERM):
                return ApiError(None, f"permission denied on {sock}: only root and the socket's group may "
                                      "drive Weft (run as root, or ask for that group)")
            if err.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return ApiError(None, f"no Weft controller is listening on {sock} (is it running? "
                                      "point WEFT_API or --api elsewhere otherwise)")
        if isinstance(err, http.client.BadStatusLine) and not isinstance(err, http.client.RemoteDisconnected):
            sent = _excerpt(err.line.encode("latin-1"))  # (http.client read the line as latin-1)
            return ApiError(None, f"the API at {where} does not answer in HTTP (it sent {sent!r})")
        if isinstance(err, ssl.SSLError):
            return ApiError(None, f"TLS with the Weft API at {where} failed: {err.reason or err} "
                                  "(is WEFT_CA_FILE / ca_file the controller's CA?)")
        return ApiError(None, f"cannot reach the Weft API at {where}: {getattr(err, 'strerror', None) or err}")

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body):
        return self.request("POST", path, body)

    def put(self, path, body):
        return self.request("PUT", path, body)

    def delete(self, path):
        return self.request("DELETE", path)


_NOT_JSON = object()
_CLI_KINDS = {"hosts": "host", "networks": "network", "ports": "port", "routers": "router",
              "floating-ips": "floating-ip", "policies": "policy", "services": "service"}
_DOING = {"POST": "creating", "PUT": "the change to", "DELETE": "deleting"}


def went_away(method, path, body, why="the controller went away before answering"):
    """The error for a write sent to a controller that then went away (or fell silent) without
    answering: it may or may not have happened ("outcome": "unknown"), so the user is told what to
    check before retrying."""
    parts = [urllib.parse.unquote(p) for p in path.partition("?")[0].split("/")[2:] if p]
    kind = _CLI_KINDS.get(parts[0]) if parts else None
    named = 2 if kind in ("policy", "service") else 1
    if len(parts) > named:
        name = "/".join(parts[1:1 + named])
    else:
        name = (body.get("name") or body.get("ip")) if isinstance(body, dict) else None
    if kind is None or name is None:
        what, check = f"{method} {path}", "`weft status`, then what the write was to change"
    else:
        what = f"{_DOING.get(method, method)} {kind} {name}" + (f" ({method} {path})" if len(parts) > named + 1 else "")
        check = f"`weft {kind} list`" if kind == "floating-ip" else f"`weft {kind} show {name}`"
    return ApiError(None, f"{why}: whether {what} happened is unknown; "
                          f"check with {check} before trying again", {"outcome": "unknown", "name": name})


def _excerpt(raw, limit=80):
    text = " ".join(raw.decode("utf-8", errors="replace").split())
    return text if len(text) <= limit else text[:limit] + "..."


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: the API's, dockerd's, a Docker plugin's."""
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)
