"""Two controller cores on one NB (a real ovsdb-server), on plain threads: the NB lock makes one
active, the other a standby that writes only its own row and refuses writes naming the active; when
the active goes, the standby takes over in a new epoch and claims every switch as master first."""
import json
import shutil
import time

import pytest

from controller.api import NorthboundApi
from controller.config import Config
from controller.core import WeftCore
from ovsdb.idl import ThreadHub
from ovsdb.server import EmbeddedNbServer

from fakeswitch import FakeSwitch

pytestmark = pytest.mark.skipif(not shutil.which("ovsdb-server"),
                                reason="ovsdb-server is not installed (scripts/setup.sh installs it)")


def wait_for(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def pair(tmp_path):
    server = EmbeddedNbServer(str(tmp_path / "nb"))
    remote = server.start()
    cores = {}
    for name in ("c1", "c2"):
        cores[name] = WeftCore(ThreadHub, Config(state_dir=str(tmp_path / name), nb_remote=remote,
                                                 controller_name=name, api_socket=f"/run/{name}.sock"))
        cores[name].start()
        cores[name].nb.conn.wait_synced(10)
        if name == "c1":
            cores[name].wait_active(10)
    yield cores
    for core in cores.values():
        core.stop()
    server.stop()


def call(core, method, path, body=None):
    status, answer = NorthboundApi(core).handle(method, path, json.dumps(body).encode() if body else b"")
    return status, answer


def test_the_lock_holder_is_active_and_the_standby_refuses_writes_naming_it(pair):
    c1, c2 = pair["c1"], pair["c2"]
    wait_for(lambda: set(c1.nb_state().controllers) == {"c1", "c2"})
    assert (c1.role, c1.epoch, c2.role) == ("active", 1, "standby")
    rows = {c.name: (c.role, c.epoch, c.api) for c in c1.nb_state().controllers.values()}
    assert rows == {"c1": ("active", 1, "unix:/run/c1.sock"), "c2": ("standby", 0, "unix:/run/c2.sock")}
    status, answer = call(c2, "POST", "/v1/networks", {"name": "blue", "cidr": "10.0.0.0/24"})
    assert status == 503
    assert answer["error"] == ("this controller (c2) is the standby; send writes to the active one, c1 at "
                               "unix:/run/c1.sock")
    assert answer["active"] == {"name": "c1", "api": "unix:/run/c1.sock", "epoch": 1}
    assert call(c1, "POST", "/v1/networks", {"name": "blue", "cidr": "10.0.0.0/24"})[0] == 201
    wait_for(lambda: "blue" in c2.nb_state().networks)
    assert call(c2, "GET", "/v1/networks")[1] == call(c1, "GET", "/v1/networks")[1]  # reads: its replica
    _, status = call(c2, "GET", "/v1/status")
    assert status["controller"] == {"name": "c2", "role": "standby", "epoch": 0, "api": "unix:/run/c2.sock"}
    assert status["controllers"]["c1"]["role"] == "active"
    assert status["ports_up"] is None  # what the switches acknowledged, only the active knows
    assert call(c1, "POST", "/v1/ports", {"name": "p1", "network": "blue"})[0] == 201
    wait_for(lambda: "p1" in c2.nb_state().ports)
    assert call(c2, "GET", "/v1/ports/p1")[1]["up"] is None and call(c1, "GET", "/v1/ports/p1")[1]["up"] is False


def test_switches_are_slaves_of_the_standby_and_the_new_active_claims_them_in_a_new_epoch(pair):
    c1, c2 = pair["c1"], pair["c2"]
    switch = FakeSwitch()  # one switch, as both controllers see their own connection to it
    c1.switches["h1"], c2.switches["h1"] = switch, FakeSwitch()
    c1._role_wake.set()
    c2._role_wake.set()
    wait_for(lambda: switch.role == ("master", 1) and c2.switches["h1"].role == ("slave", 1))
    c1.stop()  # its NB session closes: the server frees the lock and grants it to c2
    wait_for(lambda: c2.role == "active")
    assert c2.epoch == 2 and c2.switches["h1"].role == ("master", 2)
    rows = {c.name: (c.role, c.epoch) for c in c2.nb_state().controllers.values()}
    assert rows == {"c1": ("gone", 1), "c2": ("active", 2)}
    assert c2.counters.get("failovers") == 1
    assert call(c2, "POST", "/v1/networks", {"name": "red", "cidr": "10.1.0.0/24"})[0] == 201


def test_a_controller_whose_nb_session_drops_stops_and_the_other_takes_over(pair):
    c1, c2 = pair["c1"], pair["c2"]
    switch = FakeSwitch()
    c1.switches["h1"] = switch
    c1._role_wake.set()
    wait_for(lambda: "h1" in c1.syncs or switch.role == ("master", 1))
    with c1.nb.conn.lock:  # the session drops (a network blip): the server frees the lock at once
        c1.nb.conn.idl.force_reconnect()
    wait_for(lambda: c2.role == "active")
    assert c1.role == "standby" and not c1.syncs
    wait_for(lambda: c1.nb.conn.connected)
    time.sleep(0.3)
    assert (c1.role, c2.role) == ("standby", "active")  # back on the NB, c1 waits for the lock
    wait_for(lambda: switch.role == ("slave", 2))


def test_a_switch_that_saw_a_newer_generation_than_the_nb_holds_gets_an_epoch_above_it(pair):
    """A new NB (epochs from 1 again) for switches that ran on: the active takes an epoch above theirs."""
    c1 = pair["c1"]
    switch = FakeSwitch()
    switch.seen = 7
    c1.switches["h1"] = switch
    c1._role_wake.set()
    wait_for(lambda: switch.role == ("master", 8))
    assert c1.epoch == 8 and c1.role == "active"
    assert c1.nb_state().controllers["c1"].epoch == 8


def test_a_host_joins_with_one_openflow_target_per_controller(pair):
    c1 = pair["c1"]
    body = {"name": "h1", "encap_ip": "192.0.2.1", "ovsdb": "unix:/nonexistent/db.sock",
            "of_target": "tcp:127.0.0.1:6653,tcp:127.0.0.1:6654"}
    status, host = call(c1, "POST", "/v1/hosts", body)
    assert status == 201 and host["of_target"] == "tcp:127.0.0.1:6653,tcp:127.0.0.1:6654"
    status, answer = call(c1, "POST", "/v1/hosts", {**body, "name": "h2", "of_target": "tcp:127.0.0.1:6653,nowhere"})
    assert status == 400 and "of_target" in answer["error"] and "nowhere" in answer["error"]
