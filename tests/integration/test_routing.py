"""Distributed routing and the external gateway on a 3-host lab with an `outside` (issue 4).

blue 10.30.1.0/24 and green 10.30.2.0/24 on router r1, containers on every host; solo 10.30.3.0/24
has no router. The gateway is h1's uplink to `outside` (192.0.2.1), SNAT to 192.0.2.10.
"""
import re
import subprocess
import time

import pytest

from weft import lab as weftlab
from weft.testing import UNTAGGED_ECHO_ID, eventually, vlan_probe_frames

SERVER_PORT = 8000


@pytest.fixture(scope="module")
def routed(make_lab):
    lab = make_lab(hosts=3, shared=False, external=True)
    ext = lab.info["external"]
    for name, cidr in (("blue", "10.30.1.0/24"), ("green", "10.30.2.0/24"), ("solo", "10.30.3.0/24")):
        lab.weft("network", "create", name, "--cidr", cidr)
    lab.weft("router", "create", "r1")
    lab.weft("router", "attach", "r1", "blue")
    lab.weft("router", "attach", "r1", "green")
    lab.ports = {}
    for name, host, net in (("b1", "h1", "blue"), ("b2", "h2", "blue"), ("g1", "h1", "green"),
                            ("g3", "h3", "green"), ("s2", "h2", "solo")):
        lab.ports[name] = lab.attach(name, host, net)
    lab.weft("router", "set-gateway", "r1", "--host", ext["host"], "--uplink", ext["uplink"],
             "--ip", f"{ext['free_ips'][0]}/24", "--next-hop", ext["next_hop"])
    lab.external_ip = ext["free_ips"][0]
    assert lab.api.get("/v1/routers/r1")["gateway"]["next_hop_mac"]  # set-gateway waited for it
    yield lab
    lab.down()


def ip(lab, name):
    return lab.ports[name]["ip"]


def serve_peer_address(lab, target, port=SERVER_PORT):
    """A TCP server in target that answers each connection with the address it came from."""
    # -t: socat's child would end the answer 0.5 s after the client's end, however far it got.
    return weftlab.spawn(lab.name, target, ["socat", "-t", "5", f"TCP-LISTEN:{port},reuseaddr,fork",
                                            f"SYSTEM:echo $SOCAT_PEERADDR # {lab.dir}/server"],
                         what=f"{target}: test server", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def connect(lab, src, dst_ip, port=SERVER_PORT, timeout=2):
    """What the server at dst_ip:port said (the source address it saw), or None if no connection."""
    res = lab.exec(src, "socat", "-T", str(timeout), "-t", str(timeout), "-",
                   f"TCP:{dst_ip}:{port},connect-timeout={timeout}", check=False, timeout=timeout + 10)
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None


def wait_listening(lab, target, port=SERVER_PORT):
    deadline = time.monotonic() + 5
    while f":{port} " not in lab.exec(target, "ss", "-Hltn").stdout:
        assert time.monotonic() < deadline, f"no server listening in {target}"
        time.sleep(0.05)


@pytest.mark.parametrize("src,dst", [("b1", "g1"), ("b2", "g3"), ("g3", "b1"), ("g1", "b2")])
def test_ping_across_subnets_same_host_and_cross_host(routed, src, dst):
    assert routed.ping(src, ip(routed, dst))


def test_the_receiver_sees_ttl_one_less_than_sent(routed):
    with routed.tcpdump("g3", "eth0", f"icmp and src {ip(routed, 'b1')}", count=1,
                        read_flags=("-nn", "-v")) as capture:
        assert routed.ping("b1", ip(routed, "g3"))
    assert re.search(r"\bttl 63\b", capture.text), capture.text  # Linux sends 64; one routed hop


def test_ttl_one_is_not_routed_and_raises_no_packet_in(routed):
    before = routed.api.get("/v1/status")["packet_ins"]
    ping = ["ping", "-n", "-c", "1", "-W", "1", "-t"]
    assert routed.exec("b1", *ping, "1", ip(routed, "g3"), check=False).returncode != 0
    assert routed.exec("b1", *ping, "2", ip(routed, "g3"), check=False).returncode == 0  # one hop is enough
    assert routed.exec("b1", *ping, "1", ip(routed, "b2"), check=False).returncode == 0  # switched: no hop
    assert routed.api.get("/v1/status")["packet_ins"] == before


@pytest.mark.parametrize("receiver", ["g1", "g3"])  # green, on b1's host and on another
def test_a_vlan_tagged_frame_is_not_routed(routed, receiver):
    """A tagged frame to the router's MAC, with b1's own MAC and IP, is dropped before routing;
    the same frame untagged is routed to the receiver."""
    src, dst = routed.ports["b1"], routed.ports[receiver]
    router_mac = next(p["mac"] for p in routed.api.get("/v1/routers/r1")["ports"] if p["network"] == "blue")
    before = routed.api.get("/v1/status")["packet_ins"]
    frames = vlan_probe_frames(src["mac"], router_mac, src["ip"], dst["ip"])
    first, capture = routed.first_echo_request("b1", receiver, frames)
    assert first == UNTAGGED_ECHO_ID, capture
    assert routed.api.get("/v1/status")["packet_ins"] == before


def test_gateway_answers_ping_and_arp_with_zero_packet_ins(routed):
    before = routed.api.get("/v1/status")["packet_ins"]
    router_mac = next(p["mac"] for p in routed.api.get("/v1/routers/r1")["ports"] if p["network"] == "green")
    routed.exec("g3", "ip", "neigh", "flush", "dev", "eth0")
    assert routed.ping("g3", "10.30.2.1")
    assert router_mac in routed.exec("g3", "ip", "neigh", "show", "10.30.2.1").stdout
    assert routed.api.get("/v1/status")["packet_ins"] == before


def test_the_router_answers_ping_on_its_other_addresses_too(routed):
    before = routed.api.get("/v1/status")["packet_ins"]
    assert routed.ping("b2", "10.30.2.1")  # green's gateway, from blue on h2
    assert routed.ping("g3", "10.30.1.1")  # blue's gateway, from green on h3
    assert routed.api.get("/v1/status")["packet_ins"] == before


def test_a_network_without_router_reaches_no_other_subnet(routed):
    assert not routed.ping("s2", ip(routed, "b2"), timeout=1)
    assert not routed.ping("s2", "10.30.3.1", timeout=1)  # its gateway address answers only with a router
    assert not routed.ping("s2", "10.30.1.1", timeout=1)  # nor does another network's router


def test_outbound_tcp_is_source_natted_to_the_external_ip(routed):
    server = serve_peer_address(routed, "outside")
    try:
        wait_listening(routed, "outside")
        for src in ("b1", "g3"):  # from the gateway host and from another host
            assert connect(routed, src, routed.info["external"]["next_hop"]) == routed.external_ip
    finally:
        server.terminate()
        server.wait(timeout=5)


def test_unsolicited_inbound_connections_fail_but_a_floating_ip_accepts(routed):
    outside, fip = "outside", routed.info["external"]["free_ips"][1]
    routed.exec(outside, "ip", "route", "replace", "10.30.0.0/16", "via", routed.external_ip)
    server = serve_peer_address(routed, "b2")
    try:
        wait_listening(routed, "b2")
        assert connect(routed, outside, ip(routed, "b2"), timeout=1) is None
        assert connect(routed, outside, routed.external_ip, timeout=1) is None
        routed.weft("floating-ip", "create", "--port", "b2", "--ip", fip)  # does not wait for the switches
        eventually(lambda: connect(routed, outside, fip) == routed.info["external"]["next_hop"], timeout=10,
                   what=f"a connection to floating IP {fip} from outside")
    finally:
        server.terminate()
        server.wait(timeout=5)
    out = serve_peer_address(routed, outside)
    try:
        wait_listening(routed, outside)
        # Outbound from the port with a floating IP leaves with that address.
        assert connect(routed, "b2", routed.info["external"]["next_hop"]) == fip
    finally:
        out.terminate()
        out.wait(timeout=5)
        routed.weft("floating-ip", "delete", fip)


def test_trace_explains_a_routed_path(routed):
    result = routed.weft("trace", "--from", "b1", "--to", ip(routed, "g3")).stdout
    assert "router r1" in result and "h3" in result and "delivered" in result.lower()


def test_gateway_switch_reconnect_sends_nothing(routed):
    """Conntrack/NAT flows read back from the switch compare equal to the compiled ones."""
    routed.wait_flows_in_sync("h1")
    before = routed.flow_ages("h1")
    assert routed.reconnect_switch("h1")["flow_mods"] == 0
    assert routed.flow_ages("h1").keys() == before.keys()


def test_detaching_the_router_port_cuts_routing_and_removes_its_flows(routed):
    assert routed.ping("b1", ip(routed, "g3"))
    routed.weft("router", "detach", "r1", "green")
    try:
        deadline = time.monotonic() + 5
        hosts = ("h1", "h2", "h3")
        dumps = {}
        while time.monotonic() < deadline:
            dumps = {h: routed.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout for h in hosts}
            if not any("10.30.2.0/24" in d for d in dumps.values()):
                break
            time.sleep(0.1)
        assert not any("10.30.2.0/24" in d for d in dumps.values()), "routes to green still on a switch"
        assert not routed.ping("b1", ip(routed, "g3"), timeout=1)
    finally:
        routed.weft("router", "attach", "r1", "green")
    assert routed.api.get("/v1/ports/g3?wait_up=5")["up"]


def set_gateway(lab, next_hop, timeout=10):
    ext = lab.info["external"]
    return lab.weft("router", "set-gateway", "r1", "--host", ext["host"], "--uplink", ext["uplink"], "--ip",
                    f"{lab.external_ip}/24", "--next-hop", next_hop, "--timeout", timeout, check=False)


def test_set_gateway_returns_once_it_forwards_so_the_first_ping_gets_through(routed):
    """Its wait comes right after its PUT, maybe before the controller compiled the gateway: it
    must not find the router up on the flows it had without one. Three rounds, to meet that race."""
    ext = routed.info["external"]
    for _ in range(3):
        routed.weft("router", "clear-gateway", "r1")  # returns once the NB has it, not the switches
        assert routed.api.get("/v1/routers/r1?wait_up=10")["up"]
        eventually(lambda: not routed.ping("g3", ext["next_hop"], timeout=1), timeout=5,
                   what="the next hop unreachable once the gateway is cleared")
        result = set_gateway(routed, ext["next_hop"])
        assert result.returncode == 0, result.stderr
        assert routed.ping("g3", ext["next_hop"], count=1, timeout=1)  # one echo, answered: no loss


def test_set_gateway_says_what_is_missing_when_the_next_hop_does_not_answer(routed):
    ext = routed.info["external"]
    try:
        result = set_gateway(routed, "192.0.2.99", timeout=1)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "weft: error: router r1's gateway is set but does not forward after 1 s: the next hop 192.0.2.99 "
            f"has not answered ARP on {ext['uplink']} of {ext['host']} " +
            re.search(r"\(\d+ requests so far; is it up, and on that link\?\)", result.stderr).group(0)]
    finally:
        assert set_gateway(routed, ext["next_hop"]).returncode == 0
