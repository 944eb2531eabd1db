"""weft/client.py given an active/standby pair's endpoints: it goes on to the next one when one
refuses the connection or answers that it did nothing (a standby), and only then."""
import http.server
import json
import socketserver
import threading

import pytest

from weft import client as weftclient
from weft.client import ApiClient, ApiError


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(path, status, body):
    """A unix-socket HTTP server answering every request with `status` and JSON `body`; returns the
    list of (method, path) it was asked."""
    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            asked.append((self.command, self.path))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        do_GET = do_POST = _answer

        def address_string(self):
            return "unix"

        def log_message(self, *args):
            pass
    server = _Server(str(path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    serve.servers.append(server)
    return asked


serve.servers = []


@pytest.fixture(autouse=True)
def stop_servers():
    yield
    for server in serve.servers:
        server.shutdown()
        server.server_close()
    serve.servers.clear()


STANDBY = {"error": "this controller (c2) is the standby; send writes to the active one, c1 at unix:/x",
           "active": {"name": "c1", "api": "unix:/x", "epoch": 3}}


def test_a_refused_connection_and_a_standby_send_the_request_on(tmp_path):
    standby = serve(tmp_path / "c2.sock", 503, STANDBY)
    active = serve(tmp_path / "c1.sock", 201, {"name": "blue"})
    api = ApiClient(f"unix:{tmp_path}/gone.sock,unix:{tmp_path}/c2.sock,unix:{tmp_path}/c1.sock")
    assert api.post("/v1/networks", {"name": "blue"}) == {"name": "blue"}
    assert standby == [("POST", "/v1/networks")] and active == [("POST", "/v1/networks")]
    assert api.get("/v1/status") == {"name": "blue"}  # the one that answered is asked first next time
    assert len(standby) == 1 and len(active) == 2


def test_an_error_that_did_something_or_may_have_is_not_sent_elsewhere(tmp_path):
    first = serve(tmp_path / "a.sock", 409, {"error": "network 'blue' exists"})
    second = serve(tmp_path / "b.sock", 201, {})
    api = ApiClient(f"unix:{tmp_path}/a.sock,unix:{tmp_path}/b.sock")
    with pytest.raises(ApiError) as err:
        api.post("/v1/networks", {"name": "blue"})
    assert err.value.status == 409 and first and not second


def test_when_every_controller_is_standby_it_asks_again_then_gives_the_standby_answer(tmp_path, monkeypatch):
    monkeypatch.setattr(weftclient, "FAILOVER_WAIT", 0.3)
    asked = serve(tmp_path / "c2.sock", 503, STANDBY)
    api = ApiClient(f"unix:{tmp_path}/gone.sock,unix:{tmp_path}/c2.sock")
    with pytest.raises(ApiError) as err:
        api.post("/v1/networks", {"name": "blue"})
    assert err.value.status == 503 and err.value.message == STANDBY["error"]
    assert len(asked) >= 2  # rounds, FAILOVER_PAUSE apart


def test_with_every_controller_down_one_round_is_enough(tmp_path, monkeypatch):
    monkeypatch.setattr(weftclient, "FAILOVER_PAUSE", 5.0)  # a second round would show
    with pytest.raises(ApiError) as err:
        ApiClient(f"unix:{tmp_path}/c1.sock,unix:{tmp_path}/c2.sock").get("/v1/status")
    assert err.value.status is None and "c2.sock" in err.value.message


def test_one_endpoint_alone_is_not_retried(tmp_path):
    asked = serve(tmp_path / "c2.sock", 503, STANDBY)
    with pytest.raises(ApiError):
        ApiClient(f"unix:{tmp_path}/c2.sock").post("/v1/networks", {"name": "blue"})
    assert len(asked) == 1


def test_a_read_dropped_by_a_dying_controller_is_asked_again_of_the_other(tmp_path):
    """A controller killed under a read may still take a connection or two before its socket goes:
    the read is asked again of the next one first, not of the dying one."""
    dropped = []

    class Drop(socketserver.BaseRequestHandler):
        def handle(self):  # reads the request, closes without an answer
            dropped.append(self.request.recv(65536))
    dying = _Server(str(tmp_path / "c1.sock"), Drop)
    threading.Thread(target=dying.serve_forever, daemon=True).start()
    serve.servers.append(dying)
    other = serve(tmp_path / "c2.sock", 200, {"up": True})
    api = ApiClient(f"unix:{tmp_path}/c1.sock,unix:{tmp_path}/c2.sock")
    assert api.get("/v1/ports/p?wait_up=5") == {"up": True}
    assert len(dropped) == 1 and other == [("GET", "/v1/ports/p?wait_up=5")]
