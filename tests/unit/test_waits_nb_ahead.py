"""A wait that arrives before the reconcile pass has seen the write it waits for: `set-gateway`'s
GET ?wait_up comes right after its PUT, `weft attach`'s right after its port is created. Up then
must mean up for the NB as it is now, never for the flows compiled before. The pass is held back
(its `_reconcile` gated) so that the NB is ahead of the compiler for as long as the test needs."""
import json
import threading
import time

import pytest

from test_metrics_collector import StubAgent, join_fake_host, wait_for  # tests/unit is on sys.path

GATEWAY = {"host": "h1", "uplink": "uplink0", "ip": "198.51.100.10/24", "next_hop": "198.51.100.1"}
NEXT_HOP_MAC = "02:00:00:00:00:99"


class UplinkAgent(StubAgent):
    """A host agent whose uplink is plugged as soon as the core asks for it (as a real one does)."""
    uplink = None

    def set_uplink(self, iface):
        self.uplink = iface

    @property
    def uplink_plugged(self):
        return self.uplink is not None

    def unplug(self, iface_id):  # what a forced delete asks: the host's OVSDB then reports it gone
        self.core.port_plugged(self.name, iface_id, None)


@pytest.fixture
def joined(core, api):
    """A core with network blue, host h1 (its switch a FakeSwitch, its uplink pluggable) and router r1."""
    join_fake_host(core, api, UplinkAgent)
    assert api.handle("POST", "/v1/routers", b'{"name": "r1"}')[0] == 201
    assert api.handle("POST", "/v1/routers/r1/ports", b'{"network": "blue"}')[0] == 201
    return core


@pytest.fixture
def held(core, joined):
    """`hold()` waits for a pass under way to end and stops the next ones from starting; `release()`
    lets them go."""
    lock, passes = threading.Lock(), {"open": True}
    reconcile = core._reconcile

    def gated(state):
        while True:
            with lock:
                if passes["open"]:
                    return reconcile(state)
            time.sleep(0.01)
    core._reconcile = gated

    class Held:
        @staticmethod
        def hold():
            assert core.wait_enforced(10) == []  # what came before is compiled and acked
            with lock:
                passes["open"] = False

        @staticmethod
        def release():
            with lock:
                passes["open"] = True
    yield Held
    Held.release()


def set_gateway(api, gateway):
    status, answer = api.handle("PUT", "/v1/routers/r1/gateway", json.dumps(gateway).encode())
    assert status == 200, answer


def waiting_for_arp(core):
    return "has not answered ARP" in (core.router_waiting_for("r1") or "")


def gateway_up(core, api, gateway):
    """Sets r1's gateway and waits until it forwards (its next hop answered ARP)."""
    set_gateway(api, gateway)
    wait_for(lambda: waiting_for_arp(core))
    core.arp_reply(core.switches["h1"], gateway["next_hop"], NEXT_HOP_MAC)
    assert core.wait_router_up("r1", 10), core.router_waiting_for("r1")


def test_a_gateway_set_before_the_pass_saw_it_is_not_up_on_the_router_compiled_without_it(core, api, held):
    assert core.wait_router_up("r1", 10)  # no gateway: up once its flows are acked
    held.hold()
    set_gateway(api, GATEWAY)
    assert core.router_waiting_for("r1") == "the controller has not compiled its new gateway yet"
    assert not core.wait_router_up("r1", 0.5)
    status, shown = api.handle("GET", "/v1/routers/r1", query="wait_up=0.5")
    assert status == 200 and shown["up"] is False and "not compiled" in shown["waiting_for"]
    held.release()
    wait_for(lambda: "has not answered ARP on uplink0 of h1" in (core.router_waiting_for("r1") or ""))
    core.arp_reply(core.switches["h1"], GATEWAY["next_hop"], NEXT_HOP_MAC)
    assert core.wait_router_up("r1", 10), core.router_waiting_for("r1")


def test_a_gateway_changed_before_the_pass_saw_it_is_not_up_on_the_old_gateway(core, api, held):
    gateway = dict(GATEWAY)
    gateway_up(core, api, gateway)
    for change in ({"next_hop": "198.51.100.2"}, {"ip": "198.51.100.11/24"}, {"uplink": "uplink1"}):
        held.hold()
        gateway.update(change)
        set_gateway(api, gateway)
        assert core.router_waiting_for("r1") == "the controller has not compiled its new gateway yet", change
        held.release()
        if "next_hop" in change:  # a new next hop, to resolve
            wait_for(lambda: waiting_for_arp(core))
            core.arp_reply(core.switches["h1"], change["next_hop"], NEXT_HOP_MAC)
        assert core.wait_router_up("r1", 10), (change, core.router_waiting_for("r1"))


def test_a_cleared_gateway_before_the_pass_saw_it_is_not_up_on_the_gateway_compiled(core, api, held):
    gateway_up(core, api, GATEWAY)
    held.hold()
    assert api.handle("DELETE", "/v1/routers/r1/gateway")[0] == 200
    assert core.router_waiting_for("r1") == "the controller has not compiled its new gateway yet"
    held.release()
    assert core.wait_router_up("r1", 10), core.router_waiting_for("r1")


def test_a_port_created_again_under_its_name_is_not_up_on_its_old_flows(core, api, held):
    """Detach then attach of a container under the same port name, faster than a pass: the old
    port's flows (its key, IP and MAC), acked and plugged, must not make the new one up."""
    assert api.handle("POST", "/v1/ports", b'{"name": "p1", "network": "blue", "ip": "10.0.0.5"}')[0] == 201
    core.port_plugged("h1", "p1", 5)
    assert core.wait_port_up("p1", 10)
    held.hold()
    assert api.handle("DELETE", "/v1/ports/p1", query="force=true")[0] == 200
    assert api.handle("POST", "/v1/ports", b'{"name": "p1", "network": "blue", "ip": "10.0.0.6"}')[0] == 201
    core.port_plugged("h1", "p1", 5)  # the new container's interface, under the same iface-id
    assert not core.port_up("p1")
    status, shown = api.handle("GET", "/v1/ports/p1", query="wait_up=0.5")
    assert status == 200 and shown["up"] is False and shown["ip"] == "10.0.0.6"
    held.release()
    assert core.wait_port_up("p1", 10)
