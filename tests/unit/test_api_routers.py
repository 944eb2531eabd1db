"""Router, gateway and floating-IP validation: each bad request is a 4xx naming the problem, and
changes nothing in the NB."""
import pytest

from test_api import call  # tests/unit is on sys.path (pytest rootdir-relative imports)


@pytest.fixture
def routed(api):
    for name, cidr in (("blue", "10.1.0.0/24"), ("green", "10.2.0.0/24"), ("clash", "10.1.0.0/16"),
                       ("other", "10.1.0.0/24")):
        assert call(api, "POST", "/v1/networks", {"name": name, "cidr": cidr})[0] == 201
    assert call(api, "POST", "/v1/ports", {"name": "web", "network": "blue"})[0] == 201
    assert call(api, "POST", "/v1/ports", {"name": "lonely", "network": "other"})[0] == 201
    assert call(api, "POST", "/v1/hosts", {"name": "h1", "encap_ip": "192.0.2.101",
                                           "ovsdb": "unix:/nonexistent/db.sock"})[0] == 201
    for router in ("r1", "r2"):
        assert call(api, "POST", "/v1/routers", {"name": router})[0] == 201
    assert call(api, "POST", "/v1/routers/r1/ports", {"network": "blue"})[0] == 201
    assert call(api, "POST", "/v1/routers/r1/ports", {"network": "green"})[0] == 201
    status, _ = call(api, "PUT", "/v1/routers/r1/gateway", {"host": "h1", "uplink": "uplink0",
                                                            "ip": "198.51.100.10/24", "next_hop": "198.51.100.1"})
    assert status == 200
    return api


def snapshot(core):
    state = core.nb_state()
    return state.routers, state.floating_ips, state.networks


BAD = [
    ("POST", "/v1/routers", {"name": "r1"}, 409, ["r1", "already exists"]),
    ("POST", "/v1/routers/r2/ports", {"network": "blue"}, 409, ["blue", "already attached", "r1"]),
    ("POST", "/v1/routers/r1/ports", {"network": "clash"}, 409, ["clash", "overlaps", "blue"]),
    ("POST", "/v1/routers/r1/ports", {"network": "nope"}, 404, ["network", "nope"]),
    ("POST", "/v1/routers/nope/ports", {"network": "other"}, 404, ["nope"]),
    ("POST", "/v1/routers/r1/routes", {"cidr": "172.16.0.0/16", "via": "10.9.0.1"}, 400,
     ["via", "10.9.0.1", "no subnet attached"]),
    ("POST", "/v1/routers/r1/routes", {"cidr": "172.16.0.1/16", "via": "10.1.0.9"}, 400, ["cidr", "host bits"]),
    ("DELETE", "/v1/routers/r1/routes?cidr=172.16.0.0/16", None, 404, ["cidr", "no route"]),
    ("DELETE", "/v1/routers/r1", None, 409, ["r1", "network blue", "gateway"]),
    ("DELETE", "/v1/networks/blue", None, 409, ["blue", "attached to router", "r1"]),
    ("DELETE", "/v1/routers/r2/ports/blue", None, 404, ["blue", "not attached"]),
    ("PUT", "/v1/routers/r2/gateway", {"host": "h9", "uplink": "u0", "ip": "198.51.100.11/24",
                                       "next_hop": "198.51.100.1"}, 404, ["host", "h9"]),
    ("PUT", "/v1/routers/r2/gateway", {"host": "h1", "uplink": "u0", "ip": "198.51.100.11",
                                       "next_hop": "198.51.100.1"}, 400, ["ip", "prefix length"]),
    ("PUT", "/v1/routers/r2/gateway", {"host": "h1", "uplink": "u0", "ip": "198.51.100.11/24",
                                       "next_hop": "203.0.113.1"}, 400, ["next_hop", "not in 198.51.100.0/24"]),
    ("PUT", "/v1/routers/r2/gateway", {"host": "h1", "uplink": "u0", "ip": "198.51.100.10/24",
                                       "next_hop": "198.51.100.1"}, 409, ["ip", "198.51.100.10", "r1"]),
    ("PUT", "/v1/routers/r2/gateway", {"host": "h1", "uplink": "way too long a name", "ip": "198.51.100.11/24",
                                       "next_hop": "198.51.100.1"}, 400, ["uplink", "interface name"]),
    ("POST", "/v1/floating-ips", {"port": "lonely", "ip": "198.51.100.20"}, 409,
     ["lonely", "not attached to a router with a gateway"]),
    ("POST", "/v1/floating-ips", {"port": "web", "ip": "203.0.113.20"}, 400, ["ip", "not in 198.51.100.0/24"]),
    ("POST", "/v1/floating-ips", {"port": "web", "ip": "198.51.100.10"}, 409, ["ip", "reserved"]),
    ("POST", "/v1/floating-ips", {"port": "ghost", "ip": "198.51.100.20"}, 404, ["port", "ghost"]),
    ("GET", "/v1/trace?from=web", None, 400, ["from and to"]),
    ("GET", "/v1/trace?from=web&to=banana", None, 400, ["to", "banana"]),
    ("GET", "/v1/trace?from=ghost&to=10.2.0.5", None, 404, ["ghost"]),
]


@pytest.mark.parametrize("method,path,body,status,words", BAD, ids=[f"{m} {p} {w[0]}" for m, p, _, _, w in BAD])
def test_bad_router_input_is_refused_and_changes_nothing(routed, core, method, path, body, status, words):
    before = snapshot(core)
    path, _, query = path.partition("?")
    got_status, got = call(routed, method, path, body, query)
    assert got_status == status, got
    for word in words:
        assert word in got["error"], got["error"]
    assert snapshot(core) == before


def test_router_port_takes_the_gateway_address_and_its_own_mac(routed):
    status, router = call(routed, "GET", "/v1/routers/r1")
    assert status == 200
    assert [(p["network"], p["ip"]) for p in router["ports"]] == [("blue", "10.1.0.1"), ("green", "10.2.0.1")]
    assert len({p["mac"] for p in router["ports"]}) == 2
    assert router["gateway"]["next_hop_mac"] is None  # nothing answered ARP: no switch here


def test_a_reattached_leg_keeps_its_mac(routed):
    before = {p["network"]: p["mac"] for p in call(routed, "GET", "/v1/routers/r1")[1]["ports"]}
    assert call(routed, "DELETE", "/v1/routers/r1/ports/green")[0] == 200
    assert call(routed, "POST", "/v1/routers/r1/ports", {"network": "green"})[0] == 201
    after = {p["network"]: p["mac"] for p in call(routed, "GET", "/v1/routers/r1")[1]["ports"]}
    assert after == before and before["green"].startswith("0a:")


def test_router_keys_never_collide_with_network_vnis(routed, core):
    state = core.nb_state()
    vnis = {n.vni for n in state.networks.values()}
    assert not vnis & {r.key for r in state.routers.values()}
    status, net = call(routed, "POST", "/v1/networks", {"name": "n9", "cidr": "10.9.0.0/24",
                                                        "vni": state.routers["r1"].key})
    assert status == 409 and "router 'r1'" in net["error"]


def test_floating_ip_lifecycle_and_deleting_its_port(routed, core):
    assert call(routed, "POST", "/v1/floating-ips", {"port": "web", "ip": "198.51.100.20"})[0] == 201
    status, err = call(routed, "POST", "/v1/floating-ips", {"port": "web", "ip": "198.51.100.21"})
    assert status == 409 and "already has a floating IP" in err["error"]
    assert call(routed, "DELETE", "/v1/routers/r1/gateway")[0] == 409  # a floating IP still needs it
    assert call(routed, "DELETE", "/v1/ports/web")[0] == 200
    assert core.nb_state().floating_ips == {}


@pytest.mark.parametrize("refused", [1, 2])
def test_a_port_delete_refused_at_any_nb_write_changes_nothing_its_floating_ip_and_plug_included(
        routed, core, monkeypatch, refused):
    """Forced, with a floating IP and its interface plugged on h1: the NB refuses the request's
    `refused`-th transaction (its leader lost, say). Either the delete is whole (200: port and
    floating IP gone, then unplugged) or refused with nothing changed (503: both still there, still
    plugged); never a refused request that took the floating IP or the interface away."""
    from ovsdb.idl import Unavailable
    assert call(routed, "POST", "/v1/floating-ips", {"port": "web", "ip": "198.51.100.20"})[0] == 201
    unplugged = []

    class PluggedHere:  # h1's agent, with web's interface plugged there
        def cannot_unplug(self):
            return None

        def unplug(self, port):
            unplugged.append(port)
    monkeypatch.setattr(core, "plugged_hosts", lambda port: ["h1"] if port == "web" and not unplugged else [])
    monkeypatch.setitem(core.agents, "h1", PluggedHere())
    transact, count = core.nb.conn.transact, iter(range(1, 100))

    def refusing(build, *args, **kwargs):
        if next(count) == refused:
            raise Unavailable("the NB cluster has no leader: nothing was written")
        return transact(build, *args, **kwargs)
    monkeypatch.setattr(core.nb.conn, "transact", refusing)
    status, body = call(routed, "DELETE", "/v1/ports/web", query="force=true")
    state = core.nb_state()
    if status == 200:
        assert "web" not in state.ports and state.floating_ips == {} and unplugged == ["web"], body
    else:
        assert status == 503 and body.get("retry"), body
        assert "web" in state.ports and state.floating_ips == {"198.51.100.20": "web"} and unplugged == []


def test_static_routes_and_detach(routed, core):
    assert call(routed, "POST", "/v1/routers/r1/routes", {"cidr": "172.16.0.0/16", "via": "10.2.0.254"})[0] == 201
    status, err = call(routed, "DELETE", "/v1/routers/r1/ports/green")
    assert status == 409 and "172.16.0.0/16" in err["error"]
    assert call(routed, "DELETE", "/v1/routers/r1/routes", query="cidr=172.16.0.0/16")[0] == 200
    assert call(routed, "DELETE", "/v1/routers/r1/ports/green")[0] == 200
    assert list(core.nb_state().routers["r1"].ports) == ["blue"]


def test_inconsistent_nb_freezes_flows_and_says_why(routed, core):
    """Two racing writes can each pass the API's checks and together break a rule (here: overlapping
    subnets on one router, written straight to the NB as a racing second writer would). The
    controller keeps the last consistent flows and reports the problem instead of compiling it."""
    import time
    time.sleep(0.3)  # let the controller settle on the fixture's writes
    before = {host: dict(flows) for host, flows in core.compiler.flows.items()}
    core.nb.attach_router("r1", "clash", "0a:00:00:00:00:99")
    deadline = time.monotonic() + 5
    while not core.topology_error and time.monotonic() < deadline:
        time.sleep(0.02)
    status, body = call(routed, "GET", "/v1/status")
    assert "overlap" in body["nb"]["error"]
    assert {host: dict(flows) for host, flows in core.compiler.flows.items()} == before
    core.nb.detach_router("r1", "clash")
    deadline = time.monotonic() + 5
    while core.topology_error and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "error" not in call(routed, "GET", "/v1/status")[1]["nb"]
