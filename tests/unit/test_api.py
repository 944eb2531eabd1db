"""API validation: every bad input gets a 4xx naming the field and the problem, and changes nothing."""
import json

import pytest


def call(api, method, path, body=None, query=""):
    raw = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    return api.handle(method, path, raw.encode() if isinstance(raw, str) else raw, query)


@pytest.fixture
def populated(api):
    assert call(api, "POST", "/v1/networks", {"name": "blue", "cidr": "10.0.0.0/24", "vni": 100})[0] == 201
    assert call(api, "POST", "/v1/ports", {"name": "p1", "network": "blue", "ip": "10.0.0.5"})[0] == 201
    assert call(api, "POST", "/v1/hosts", {"name": "h1", "encap_ip": "192.0.2.1",
                                           "ovsdb": "unix:/nonexistent/db.sock"})[0] == 201
    return api


def nb_contents(core):
    state = core.nb_state()
    strip = lambda d: {k: (v.settings() if hasattr(v, "settings") else v) for k, v in d.items()}  # noqa: E731
    return strip(state.hosts), state.networks, {k: (p.network, p.ip, p.mac) for k, p in state.ports.items()}


BAD_REQUESTS = [
    # (method, path, body, status, words the message must contain)
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.0.0.300/24"}, 400, ["cidr", "not a valid IPv4 network"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.1/24"}, 400, ["cidr", "host bits", "10.9.0.0/24"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "banana"}, 400, ["cidr", "CIDR"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24", "mtu": 1600}, 400,
     ["mtu", "too large for the underlay", "1550"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24", "mtu": 100}, 400, ["mtu", "out of range"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24", "vni": 0}, 400, ["vni", "out of range"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24", "vni": 2**24}, 400, ["vni", "out of range"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24", "vni": "7"}, 400, ["vni", "expected an integer, got a string"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24", "vni": 100}, 409, ["vni", "100", "blue"]),
    ("POST", "/v1/networks", {"name": "blue", "cidr": "10.9.0.0/24"}, 409, ["name", "blue", "already exists"]),
    ("POST", "/v1/networks", {"name": "bad name!", "cidr": "10.9.0.0/24"}, 400, ["name", "not a valid name"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24", "gateway": "10.8.0.1"}, 400,
     ["gateway", "not in 10.9.0.0/24"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24", "colour": "red"}, 400, ["colour", "unknown"]),
    ("POST", "/v1/networks", {"cidr": "10.9.0.0/24"}, 400, ["name", "required"]),
    ("POST", "/v1/networks", "{not json", 400, ["not valid JSON"]),
    ("POST", "/v1/networks", "[1, 2]", 400, ["JSON object"]),
    ("DELETE", "/v1/networks/blue", None, 409, ["blue", "port", "p1"]),
    ("DELETE", "/v1/networks/nope", None, 404, ["nope"]),
    ("POST", "/v1/ports", {"name": "p2", "network": "nope"}, 404, ["network", "nope"]),
    ("POST", "/v1/ports", {"name": "p1", "network": "blue"}, 409, ["name", "p1", "already exists"]),
    ("POST", "/v1/ports", {"name": "p2", "network": "blue", "ip": "10.0.0.5"}, 409, ["ip", "10.0.0.5", "p1"]),
    ("POST", "/v1/ports", {"name": "p2", "network": "blue", "ip": "10.0.0.1"}, 409, ["ip", "gateway"]),
    ("POST", "/v1/ports", {"name": "p2", "network": "blue", "ip": "10.0.1.5"}, 400, ["ip", "not in 10.0.0.0/24"]),
    ("POST", "/v1/ports", {"name": "p2", "network": "blue", "ip": "10.0.0.255"}, 400, ["ip", "broadcast"]),
    ("POST", "/v1/ports", {"name": "p2", "network": "blue", "mac": "01:00:00:00:00:01"}, 400, ["mac", "multicast"]),
    ("POST", "/v1/ports", {"name": "p2", "network": "blue", "mac": "zz"}, 400, ["mac", "not a MAC"]),
    ("POST", "/v1/hosts", {"name": "h2", "encap_ip": "192.0.2.1", "ovsdb": "tcp:192.0.2.9:6640"}, 409,
     ["encap_ip", "192.0.2.1", "h1"]),
    ("POST", "/v1/hosts", {"name": "h1", "encap_ip": "192.0.2.7", "ovsdb": "tcp:192.0.2.7:6640"}, 409,
     ["name", "h1", "different settings"]),
    ("POST", "/v1/hosts", {"name": "h2", "encap_ip": "300.1.1.1", "ovsdb": "tcp:192.0.2.9:6640"}, 400,
     ["encap_ip", "not an IPv4 address"]),
    ("POST", "/v1/hosts", {"name": "h2", "encap_ip": "192.0.2.9", "ovsdb": "http://x"}, 400, ["ovsdb", "remote"]),
    ("POST", "/v1/hosts", {"name": "h2", "encap_ip": "192.0.2.9", "ovsdb": "tcp:192.0.2.9:6640",
                           "datapath_type": "dpdk"}, 400, ["datapath_type", "dpdk"]),
    ("DELETE", "/v1/hosts/h1", None, 409, ["h1", "OVSDB", "force"]),
    ("GET", "/v1/nothing", None, 404, ["/v1/nothing"]),
    ("PUT", "/v1/networks", "{}", 405, ["PUT", "GET, POST"]),
]


@pytest.mark.parametrize("method,path,body,status,words", BAD_REQUESTS,
                         ids=[f"{m} {p} {w[0]}" for m, p, _, _, w in BAD_REQUESTS])
def test_bad_input_is_refused_and_changes_nothing(populated, core, method, path, body, status, words):
    before = nb_contents(core)
    got_status, got = call(populated, method, path, body)
    assert got_status == status, got
    for word in words:
        assert word in got["error"], got["error"]
    assert nb_contents(core) == before


def test_defaults_allocate_vni_gateway_mtu_ip_and_mac(api):
    status, net = call(api, "POST", "/v1/networks", {"name": "red", "cidr": "10.5.0.0/24"})
    assert status == 201
    assert (net["vni"], net["gateway"], net["mtu"]) == (100, "10.5.0.1", 1550)
    status, port = call(api, "POST", "/v1/ports", {"name": "a", "network": "red"})
    assert status == 201 and port["ip"] == "10.5.0.2" and port["mac"].startswith("02:")
    status, port = call(api, "POST", "/v1/ports", {"name": "b", "network": "red"})
    assert port["ip"] == "10.5.0.3"
    assert call(api, "POST", "/v1/networks", {"name": "green", "cidr": "10.6.0.0/24"})[1]["vni"] == 101


def test_a_freed_address_is_handed_out_again_only_after_the_others(api):
    """A container given the address of one just removed would carry a new MAC while its peers' ARP
    caches still map the address to the old one: its first seconds of traffic would be lost."""
    call(api, "POST", "/v1/networks", {"name": "tiny", "cidr": "10.7.0.0/29"})  # .2 to .6 for ports
    ips = [call(api, "POST", "/v1/ports", {"name": f"t{i}", "network": "tiny"})[1]["ip"] for i in range(3)]
    assert ips == ["10.7.0.2", "10.7.0.3", "10.7.0.4"]
    assert call(api, "DELETE", "/v1/ports/t1")[0] == 200
    assert call(api, "POST", "/v1/ports", {"name": "n1", "network": "tiny"})[1]["ip"] == "10.7.0.5"
    assert call(api, "POST", "/v1/ports", {"name": "n2", "network": "tiny"})[1]["ip"] == "10.7.0.6"
    assert call(api, "POST", "/v1/ports", {"name": "n3", "network": "tiny"})[1]["ip"] == "10.7.0.3"  # wraps
    status, answer = call(api, "POST", "/v1/ports", {"name": "n4", "network": "tiny"})
    assert status == 409 and "no free address" in answer["error"]


def _concurrently(api, bodies, path="/v1/ports"):
    """POSTs every body at once (as a CNI attaching many containers does) -> [(status, reply)].
    A body may be (path, body) to mix collections."""
    import threading
    results = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def post(i):
        where, body = bodies[i] if isinstance(bodies[i], tuple) else (path, bodies[i])
        start.wait()
        results[i] = call(api, "POST", where, body)
    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_creates_get_distinct_addresses(populated, core):
    results = _concurrently(populated, [{"name": f"c{i}", "network": "blue"} for i in range(20)])
    assert [status for status, _ in results] == [201] * 20, results
    ports = core.nb_state().ports
    assert len({p.ip for p in ports.values()}) == len({p.mac for p in ports.values()}) == len(ports) == 21


def test_concurrent_creates_of_one_ip_or_name_give_one_port_and_a_clear_409(populated, core):
    results = _concurrently(populated, [{"name": "x1", "network": "blue", "ip": "10.0.0.9"},
                                        {"name": "x2", "network": "blue", "ip": "10.0.0.9"},
                                        {"name": "y", "network": "blue"}, {"name": "y", "network": "blue"}])
    assert sorted(status for status, _ in results) == [201, 201, 409, 409], results
    errors = sorted(reply["error"] for status, reply in results if status == 409)
    assert "ip: 10.0.0.9 is already used by port 'x" in errors[0], errors
    assert "name: port 'y' already exists" in errors[1], errors
    assert sorted(core.nb_state().ports) in (["p1", "x1", "y"], ["p1", "x2", "y"])


def test_concurrent_networks_and_routers_get_distinct_tunnel_keys(populated, core):
    """Network VNIs and router keys share one space that no unique index covers: allocated inside
    the transaction, concurrent creates cannot collide (a collision would freeze every flow)."""
    bodies = [("/v1/networks", {"name": f"n{i}", "cidr": f"10.{i + 1}.0.0/24"}) for i in range(6)]
    bodies += [("/v1/routers", {"name": f"r{i}"}) for i in range(6)]
    results = _concurrently(populated, bodies)
    assert [status for status, _ in results] == [201] * 12, results
    state = core.nb_state()
    keys = [n.vni for n in state.networks.values()] + [r.key for r in state.routers.values()]
    assert len(keys) == len(set(keys)) == 13 and core.topology_error is None


def test_rejoining_with_same_settings_is_a_no_op(populated):
    body = {"name": "h1", "encap_ip": "192.0.2.1", "ovsdb": "unix:/nonexistent/db.sock"}
    status, host = call(populated, "POST", "/v1/hosts", body)
    assert status == 200 and host["key"] == 1


def test_force_leave_forgets_an_unreachable_host(populated, core):
    status, _ = call(populated, "DELETE", "/v1/hosts/h1", query="force=true")
    assert status == 200
    assert core.nb_state().hosts == {}


def test_unreachable_host_reports_the_error(populated, core):
    status, host = call(populated, "GET", "/v1/hosts/h1")
    assert status == 200 and host["status"]["ovsdb_connected"] is False


def test_a_freed_address_comes_back_with_its_mac(api):
    """A port given an address that was in use gets the MAC its last holder had (peers' neighbour
    caches stay right: Weft answers ARP itself, so they never hear the new port's ARP); the MAC
    depends on the network too, and a MAC asked for is kept."""
    def call(method, path, body=None):
        status, value = api.handle(method, path, json.dumps(body).encode() if body is not None else b"")
        assert status < 300, value
        return value
    call("POST", "/v1/networks", {"name": "m1", "cidr": "10.9.0.0/24"})
    call("POST", "/v1/networks", {"name": "m2", "cidr": "10.9.0.0/24"})
    first = call("POST", "/v1/ports", {"name": "pa", "network": "m1", "ip": "10.9.0.7"})
    call("DELETE", "/v1/ports/pa")
    again = call("POST", "/v1/ports", {"name": "pb", "network": "m1", "ip": "10.9.0.7"})
    assert again["mac"] == first["mac"]
    other = call("POST", "/v1/ports", {"name": "pc", "network": "m2", "ip": "10.9.0.7"})
    assert other["mac"] != first["mac"]
    asked = call("POST", "/v1/ports", {"name": "pd", "network": "m1", "mac": "02:00:00:00:00:42"})
    assert asked["mac"] == "02:00:00:00:00:42"
