"""What a write reports when the connection to the NB breaks around it, against a real ovsdb-server
behind a relay the test can cut: a write is re-run only when it was never sent or the server said it
did not commit; one whose answer was lost is checked in the replica (committed: success) or reported
as of unknown outcome, never sent twice (the 409 "already exists" a restart used to give for a write
that had committed)."""
import json
import shutil
import socket
import threading
import time

import pytest

from ovsdb import rpc
from ovsdb.idl import OutcomeUnknown, ThreadHub, TransactionError, Unavailable
from ovsdb.nb import DATABASE, Nb
from ovsdb.server import EmbeddedNbServer

pytestmark = pytest.mark.skipif(not shutil.which("ovsdb-server"),
                                reason="ovsdb-server is not installed (scripts/setup.sh installs it)")


class Relay:
    """A unix-socket relay between the IDL and the server. `cut` ("before" or "after") ends the
    connection at the next transact request: before forwarding it (never reached the server), or after
    the server had 0.3 s to commit it, without passing its answer on. `refuse` turns new connections
    away (a server that is down)."""

    def __init__(self, path, target):
        self.path, self.target = path, target
        self.cut, self.refuse = None, False
        self.cuts = 0
        self.pairs = []
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.target)
            pair = (client, server)
            self.pairs.append(pair)
            threading.Thread(target=self._pump, args=(client, server, pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, pair, False), daemon=True).start()

    def _pump(self, src, dst, pair, to_server):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if to_server and self.cut and b'"transact"' in data:
                    cut, self.cut = self.cut, None
                    src.shutdown(socket.SHUT_RDWR)  # the client's side goes first: no answer reaches it
                    if cut == "after":
                        dst.sendall(data)
                        time.sleep(0.3)  # the server commits and answers, to a connection going away
                    self.cuts += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self):
        """Ends every connection (the server going away)."""
        for pair in self.pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()
        self.drop()


@pytest.fixture
def nb(tmp_path):
    server = EmbeddedNbServer(str(tmp_path / "state"))
    server.start()
    relay = Relay(str(tmp_path / "relay.sock"), server.sock_path)
    nb = Nb(ThreadHub, "unix:" + relay.path).start()
    nb.conn.wait_synced(10)
    nb.relay, nb.server = relay, server
    yield nb
    nb.stop()
    relay.close()
    server.stop()


def routers_in_db(nb):
    rows = rpc.transact(nb.server.remote, DATABASE, [{"op": "select", "table": "Router", "where": []}])[0]["rows"]
    return sorted(r["name"] for r in rows)


def create_router(nb, name, key):
    nb.create_router(name, lambda taken, name_in_use: key)


def test_a_create_whose_answer_was_lost_is_found_committed_and_reported_so(nb):
    nb.relay.cut = "after"
    create_router(nb, "r1", 100)  # the old loop sent it again on reconnecting: "duplicate name"
    assert nb.relay.cuts == 1
    assert routers_in_db(nb) == ["r1"] and "r1" in nb.replica.routers


def test_a_create_lost_on_its_way_is_reported_unknown_not_sent_again(nb):
    nb.relay.cut = "before"
    with pytest.raises(OutcomeUnknown, match="cannot tell whether the write committed"):
        create_router(nb, "r1", 100)
    assert nb.relay.cuts == 1 and routers_in_db(nb) == []


def test_an_update_whose_answer_was_lost_is_reported_unknown(nb):
    create_router(nb, "r1", 100)
    nb.relay.cut = "after"
    with pytest.raises(OutcomeUnknown):  # nothing it inserted to look for: it did commit, but who can tell
        nb.set_route("r1", "10.9.0.0/16", "10.0.0.254")
    assert nb.relay.cuts == 1


def test_a_write_refused_by_the_database_still_fails_with_its_reason(nb):
    create_router(nb, "r1", 100)
    with pytest.raises(TransactionError) as err:
        create_router(nb, "r1", 101)
    assert not isinstance(err.value, (OutcomeUnknown, Unavailable)) and "r1" in str(err.value)


def down(nb):
    nb.relay.refuse = True
    nb.relay.drop()
    while nb.connected:
        time.sleep(0.01)


def test_a_write_never_sent_waits_for_the_connection_and_commits_once(nb):
    down(nb)
    threading.Timer(1.5, setattr, (nb.relay, "refuse", False)).start()
    create_router(nb, "r1", 100)  # queued while disconnected, sent once connected again
    assert routers_in_db(nb) == ["r1"]


def test_a_write_without_a_connection_for_too_long_is_unavailable_and_never_sent(nb):
    nb.conn.patience = 1.0
    down(nb)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="nothing was written"):
        create_router(nb, "r1", 100)
    assert time.monotonic() - started < 5
    nb.relay.refuse = False
    nb.conn.wait_synced(10)
    time.sleep(0.5)
    assert routers_in_db(nb) == []


def test_a_write_in_flight_when_the_server_stays_away_is_unknown_within_the_patience(nb):
    nb.conn.patience = 1.0
    nb.relay.refuse, nb.relay.cut = True, "after"  # it commits; then nobody can be asked
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown, match="whether it committed is unknown"):
        create_router(nb, "r1", 100)
    assert time.monotonic() - started < 5 and routers_in_db(nb) == ["r1"]


def test_a_write_stopped_before_it_was_sent_is_unavailable(nb):
    nb.conn.patience = 60
    down(nb)
    threading.Timer(0.5, nb.stop).start()
    with pytest.raises(Unavailable, match="before the write was sent: nothing was written"):
        create_router(nb, "r1", 100)


@pytest.fixture
def api(nb, tmp_path):
    """The API of a core whose NB connection goes through the relay."""
    from controller.api import NorthboundApi
    from controller.config import Config
    from controller.core import WeftCore
    core = WeftCore(ThreadHub, Config(state_dir=str(tmp_path / "core"), nb_remote="unix:" + nb.relay.path,
                                      underlay_mtu=1600))
    core.start()
    core.nb.conn.wait_synced(10)
    core.wait_active(10)
    yield NorthboundApi(core)
    core.stop()


def post(api, path, body):
    return api.handle("POST", path, json.dumps(body).encode())


def test_the_api_answers_a_create_whose_answer_was_lost_as_committed(api, nb):
    nb.relay.cut = "after"
    status, answer = post(api, "/v1/networks", {"name": "blue", "cidr": "10.0.0.0/24"})
    assert (status, answer["name"], nb.relay.cuts) == (201, "blue", 1)


def test_the_api_answers_an_unknown_outcome_with_the_name_and_where_to_look(api, nb):
    assert post(api, "/v1/networks", {"name": "blue", "cidr": "10.0.0.0/24"})[0] == 201
    nb.relay.cut = "before"
    status, answer = post(api, "/v1/ports", {"name": "web-1", "network": "blue"})
    assert (status, answer["outcome"], answer["name"]) == (503, "unknown", "web-1")
    assert "outcome of creating port 'web-1' is unknown" in answer["error"]
    assert "check with GET /v1/ports/web-1 and retry" in answer["error"]
    assert post(api, "/v1/ports", {"name": "web-2", "network": "blue"})[0] == 201
    nb.relay.cut = "after"  # an update inserts nothing to look for: committed, but the replica cannot tell
    status, answer = api.handle("PUT", "/v1/ports/web-2/labels", b'{"labels": {"app": "web"}}')
    assert (status, answer["outcome"], answer["name"]) == (503, "unknown", "web-2")
    assert "outcome of PUT labels of port 'web-2' is unknown" in answer["error"]


def test_the_api_answers_a_write_with_no_nb_to_take_it_503_retry(api, nb):
    api.core.nb.conn.patience = 0.5
    down(nb)
    status, answer = post(api, "/v1/networks", {"name": "blue", "cidr": "10.0.0.0/24"})
    assert status == 503 and "try again" in answer["error"]


def test_until_the_monitor_reply_is_in_the_api_answers_503_not_an_empty_list(nb, tmp_path):
    """The session to the NB is up but the server has not answered the monitor request yet (it is
    stopped): the replica is not loaded, so every request is a 503, never an empty list."""
    import os
    import signal
    from controller.api import NorthboundApi
    from controller.config import Config
    from controller.core import WeftCore
    create_router(nb, "r1", 100)
    os.kill(nb.server.pid, signal.SIGSTOP)
    core = WeftCore(ThreadHub, Config(state_dir=str(tmp_path / "core"), nb_remote=nb.server.remote))
    try:
        core.start()
        api = NorthboundApi(core)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            status, answer = api.handle("GET", "/v1/routers")
            assert status == 503 and "not loaded the NB" in answer["error"], (status, answer)
        assert core.nb.conn.idl._session.is_connected()  # connected, waiting for the server's answers
        os.kill(nb.server.pid, signal.SIGCONT)
        core.nb.conn.wait_synced(10)
        assert [r["name"] for r in api.handle("GET", "/v1/routers")[1]] == ["r1"]
    finally:
        os.kill(nb.server.pid, signal.SIGCONT)
        core.stop()
