"""`weft docker-plugin`: a libnetwork remote network driver (and IPAM driver) backed by Weft.

dockerd calls it over a unix socket in /run/docker/plugins with POSTs of JSON; each answer is JSON,
and a failure is {"Err": "message"}, which Docker shows its user as is.
"""
import errno
import http.server
import json
import os
import signal
import socket
import socketserver
import stat
import sys
import threading

DEFAULT_SOCKET = "/run/docker/plugins/weft.sock"
DEFAULT_DOCKER = "unix:///run/docker.sock"
CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"


class PluginError(Exception):
    """A call refused with a message for the Docker user."""


class Plugin:
    """The driver's calls, by their protocol name, each taking the decoded body."""

    def __init__(self, api=None, docker=DEFAULT_DOCKER, ovsdb=None):
        self.api, self.docker, self.ovsdb = api, docker, ovsdb

    def call(self, name, body):
        handler = self.handlers().get(name)
        if handler is None:
            raise PluginError(f"weft does not implement {name}")
        return handler(body)

    def handlers(self):
        return {"/Plugin.Activate": self.activate,
                "/NetworkDriver.GetCapabilities": self.capabilities}

    def activate(self, body):
        return {"Implements": ["NetworkDriver"]}

    def capabilities(self, body):
        # local: each daemon keeps its own view of the network; Weft is what joins them
        return {"Scope": "local", "ConnectivityScope": "global"}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's naming
        plugin = self.server.plugin
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                raise PluginError(f"the request to {self.path} is not JSON") from None
            status, answer = 200, plugin.call(self.path, body)
        except PluginError as err:
            status, answer = 200, {"Err": str(err)}
        except Exception as err:  # noqa: BLE001 - Docker shows the user one line, the log gets the rest
            import traceback
            traceback.print_exc()
            status, answer = 500, {"Err": f"internal error in weft docker-plugin ({type(err).__name__}: {err})"}
        if "Err" in answer:
            print(f"weft docker-plugin: {self.path}: {answer['Err']}", file=sys.stderr, flush=True)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):  # quiet: errors are logged above
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _claim(path):
    """Removes a stale socket at `path`; refuses if another process still serves on it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise PluginError(f"{path} exists and is not a socket; remove it or give another --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as err:
        if err.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        os.unlink(path)  # nobody listens: a plugin that died left it
        return
    finally:
        probe.close()
    raise PluginError(f"another plugin is serving on {path}; stop it first, or give another --socket")


def serve(plugin, path=DEFAULT_SOCKET, ready=None):
    """Serves `plugin` on the unix socket `path` (mode 0660) until SIGTERM or SIGINT."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    _claim(path)
    old_umask = os.umask(0o117)  # the socket is born 0660: no window where anyone may connect
    try:
        server = _Server(path, _Handler)
    finally:
        os.umask(old_umask)
    server.plugin = plugin
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        if ready:
            ready()
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def main(args, api):
    """The CLI verb: `weft docker-plugin [--socket PATH] [--docker URL]`."""
    plugin = Plugin(api, docker=args.docker, ovsdb=args.ovsdb)
    try:
        serve(plugin, args.socket, ready=lambda: print(f"weft docker-plugin: serving on {args.socket}",
                                                       file=sys.stderr, flush=True))
    except PluginError as err:
        from weft.errors import WeftError
        raise WeftError(str(err)) from None
