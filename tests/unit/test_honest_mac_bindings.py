"""A gateway's next-hop MAC learned by ARP is stored in the NB's MAC_Binding table (written when it
is learned or changes, not at each refresh, deleted with the gateway), and a restarted controller
compiles the gateway with it at once, before any ARP answer."""
import time

from controller.api import NorthboundApi
from controller.config import Config
from controller.core import WeftCore
from ovsdb import rpc
from ovsdb.idl import ThreadHub
from ovsdb.nb import DATABASE
from test_api import call  # tests/unit is on sys.path

NEXT_HOP, MAC, NEW_MAC = "198.51.100.1", "02:00:5e:00:01:01", "02:00:5e:00:01:02"


class Uplink:
    """Where the core's ARP requests go (the gateway host's switch): counted, sent nowhere."""
    def __init__(self):
        self.asked = []

    def send_arp_request(self, port, src_mac, src_ip, target_ip):
        self.asked.append(target_ip)


def start(state_dir):
    core = WeftCore(ThreadHub, Config(state_dir=str(state_dir), underlay_mtu=1600))
    core.start()
    core.nb.conn.wait_synced(10)
    return core


def wait_for(what, timeout=10):
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def binding_rows(core):
    return rpc.transact(core.nb.conn.remote, DATABASE, [{"op": "select", "table": "MAC_Binding", "where": [],
                                                         "columns": ["router", "ip", "mac", "_version"]}])[0]["rows"]


def test_a_learned_next_hop_mac_is_stored_once_and_used_at_start(tmp_path):
    core = start(tmp_path / "state")
    try:
        api = NorthboundApi(core)
        assert call(api, "POST", "/v1/networks", {"name": "blue", "cidr": "10.1.0.0/24"})[0] == 201
        assert call(api, "POST", "/v1/hosts", {"name": "h1", "encap_ip": "192.0.2.101",
                                               "ovsdb": "unix:/nonexistent/db.sock"})[0] == 201
        assert call(api, "POST", "/v1/routers", {"name": "r1"})[0] == 201
        assert call(api, "POST", "/v1/routers/r1/ports", {"network": "blue"})[0] == 201
        assert call(api, "PUT", "/v1/routers/r1/gateway", {"host": "h1", "uplink": "uplink0",
                                                           "ip": "198.51.100.10/24", "next_hop": NEXT_HOP})[0] == 200
        switch = core.switches["h1"] = Uplink()  # as if h1's br-int were connected
        core.arp_reply(switch, NEXT_HOP, MAC)
        wait_for(lambda: [(r["router"], r["ip"], r["mac"]) for r in binding_rows(core)] == [("r1", NEXT_HOP, MAC)])
        version = binding_rows(core)[0]["_version"]
        core.arp_reply(switch, NEXT_HOP, MAC)  # a refresh with the same answer writes nothing
        passes = core._passes_done
        core._wake.set()
        wait_for(lambda: core._passes_done > passes)
        assert binding_rows(core)[0]["_version"] == version
        core.arp_reply(switch, NEXT_HOP, NEW_MAC)
        wait_for(lambda: binding_rows(core)[0]["mac"] == NEW_MAC)
    finally:
        core.stop()

    core = start(tmp_path / "state")  # no switch, no ARP answer yet
    try:
        wait_for(lambda: core._passes_done >= 1)
        assert core.compiler.topo.routers["r1"].gateway.next_hop_mac == NEW_MAC
        api = NorthboundApi(core)
        assert call(api, "GET", "/v1/routers/r1")[1]["gateway"]["next_hop_mac"] == NEW_MAC
        switch = core.switches["h1"] = Uplink()  # ARP goes on as before: asked at once, and a new answer wins
        wait_for(lambda: NEXT_HOP in switch.asked)
        core.arp_reply(switch, NEXT_HOP, MAC)
        wait_for(lambda: binding_rows(core)[0]["mac"] == MAC)
        wait_for(lambda: core.compiler.topo.routers["r1"].gateway.next_hop_mac == MAC)
        assert call(api, "DELETE", "/v1/routers/r1/gateway")[0] == 200
        wait_for(lambda: binding_rows(core) == [])
    finally:
        core.stop()
