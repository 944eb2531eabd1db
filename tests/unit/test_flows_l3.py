"""L3: distributed routing, gateway ARP/ping, SNAT/DNAT on the gateway host, trace rendering."""
import json

import pytest

from flows.compiler import compile_all
from flows.examples import routed_topology
from flows.model import (ARP_REPLY, ARP_REQUEST, ETH_TYPE_ARP, ETH_TYPE_IPV4, FloatingIpState,
                         GatewayState, NetworkState, RouterPortState, RouterState, RouteState,
                         Topology)
from flows.pipeline import UPLINK_OFPORT
from flows.compiler import network_cookie, port_cookie, router_cookie
from flows.model import Binding, PortState
from flows.trace import (DELIVERED, DROPPED, SENT_OUT_UPLINK, TO_CONTROLLER, Conntrack, Tracer,
                         first_hop_mac, format_trace, l4_fields, packet_from_port, trace_to_ip,
                         trace_to_json)

TOPO = routed_topology()
R1_BLUE, R1_GREEN = "02:a1:00:00:00:64", "02:a1:00:00:00:65"
GW_MAC, NEXT_HOP_MAC = "02:ee:00:00:00:01", "02:ee:00:00:00:fe"
EXTERNAL_IP, FLOATING_IP, OUTSIDE = "203.0.113.10", "203.0.113.20", "198.51.100.7"


def mac(port):
    return TOPO.ports[port].mac


@pytest.fixture(scope="module")
def tracer():
    return Tracer(TOPO)


def to_ip(tracer, src, dst, **kw):
    """trace_to_ip on the shared tracer."""
    return tracer.trace(*_packet(src, dst, **kw))


def _packet(src, dst, proto="icmp", dport=None, conntrack=None):
    host, packet = packet_from_port(TOPO, src, eth_dst=first_hop_mac(TOPO, src, dst),
                                    ipv4_dst=dst, **l4_fields(proto, dport=dport))
    return host, packet, conntrack


def from_outside(dst_ip, proto="tcp", sport=5555, dport=22, **overrides):
    """A packet arriving on h3's uplink from OUTSIDE."""
    fields = l4_fields(proto, sport, dport)
    return {"in_port": UPLINK_OFPORT, "eth_src": NEXT_HOP_MAC, "eth_dst": GW_MAC,
            "eth_type": ETH_TYPE_IPV4, "ipv4_src": OUTSIDE, "ipv4_dst": dst_ip, "nw_ttl": 60,
            **fields, **overrides}


def reply_of(packet, **overrides):
    """The answer to `packet` as its destination would send it (addresses and ports swapped)."""
    swapped = {**packet, "ipv4_src": packet["ipv4_dst"], "ipv4_dst": packet["ipv4_src"]}
    for a, b in (("tcp_src", "tcp_dst"), ("udp_src", "udp_dst")):
        if a in packet:
            swapped[a], swapped[b] = packet[b], packet[a]
    if packet.get("icmpv4_type") == 8:
        swapped["icmpv4_type"] = 0
    return {**swapped, **overrides}


# ---- east-west ------------------------------------------------------------------------------

def test_routed_same_host_rewrites_macs_and_ttl(tracer):
    result = to_ip(tracer, "a", "10.1.0.2")
    v = result.verdict
    assert (v.kind, v.port, v.host) == (DELIVERED, "b", "h1")
    assert {s.host for s in result.steps} == {"h1"}
    assert [s.table for s in result.steps] == [
        "CLASSIFY", "PORT_SECURITY", "ARP_RESPONDER", "DNS", "SERVICE", "ACL_EGRESS", "L3_GATE",
        "ROUTING", "NEIGHBOR", "L2_LOOKUP", "ACL_INGRESS", "SERVICE_REPLY", "OUTPUT"]
    assert (v.packet["eth_src"], v.packet["eth_dst"]) == (R1_GREEN, mac("b"))
    assert (v.packet["ipv4_src"], v.packet["ipv4_dst"], v.packet["nw_ttl"]) == (
        "10.0.0.2", "10.1.0.2", 63)


def test_routed_cross_host_tunnels_with_the_destination_vni(tracer):
    result = to_ip(tracer, "a", "10.1.0.3")
    v = result.verdict
    assert (v.kind, v.port, v.host) == (DELIVERED, "c", "h2")
    tunnel = next(s for s in result.steps if s.note.startswith("tunnel"))
    assert tunnel.host == "h1" and dict(tunnel.changes)["tunnel_id"] == 101  # green, not blue
    assert [s.table for s in result.steps if s.host == "h2"] == ["CLASSIFY", "L2_LOOKUP",
                                                                  "ACL_INGRESS", "SERVICE_REPLY", "OUTPUT"]  # no hairpin
    assert (v.packet["eth_src"], v.packet["eth_dst"], v.packet["nw_ttl"]) == (
        R1_GREEN, mac("c"), 63)


def test_longest_prefix_static_route_vs_attached_subnet():
    # 10.1.0.0/16 via vm is shorter than the attached 10.1.0.0/24 but longer than 10.0.0.0/8.
    r1 = TOPO.routers["r1"]
    routes = (RouteState("10.0.0.0/8", "10.1.0.3"), RouteState("10.1.0.0/16", "10.1.0.10"))
    topo = TOPO.replace(routers=[RouterState(r1.name, r1.key, r1.ports, routes)])
    tracer = Tracer(topo)
    for dst, port in (("10.1.0.3", "c"), ("10.1.7.7", "vm"), ("10.7.7.7", "c"),
                      ("10.0.0.3", "a2")):
        host, packet = _packet("a", dst)[:2]
        verdict = tracer.trace(host, {**packet, "eth_dst": R1_BLUE}).verdict
        assert (verdict.kind, verdict.port) == (DELIVERED, port), dst
        assert verdict.packet["ipv4_dst"] == dst  # a next hop changes the MAC, not the IP


def test_static_route_to_a_next_hop_port(tracer):
    v = to_ip(tracer, "a", "10.9.1.1").verdict
    assert (v.kind, v.port) == (DELIVERED, "vm")
    assert (v.packet["eth_dst"], v.packet["ipv4_dst"]) == (mac("vm"), "10.9.1.1")


def test_ttl_one_is_dropped(tracer):
    host, packet, _ = _packet("a", "10.1.0.2")
    v = tracer.trace(host, {**packet, "nw_ttl": 1}).verdict
    assert (v.kind, v.table, v.reason) == (DROPPED, "ROUTING", "TTL exceeded")


def test_gateway_arp_answered_on_the_senders_host(tracer):
    result = tracer.from_port("a", eth_type=ETH_TYPE_ARP, arp_tpa="10.0.0.1")
    v = result.verdict
    assert (v.kind, v.port) == (DELIVERED, "a") and {s.host for s in result.steps} == {"h1"}
    assert (v.packet["arp_op"], v.packet["arp_sha"], v.packet["arp_spa"]) == (
        ARP_REPLY, R1_BLUE, "10.0.0.1")
    assert (v.packet["eth_src"], v.packet["eth_dst"]) == (R1_BLUE, mac("a"))


def test_gateway_ping_answered_in_flows(tracer):
    v = to_ip(tracer, "b", "10.1.0.1").verdict
    assert (v.kind, v.port, v.host) == (DELIVERED, "b", "h1")
    assert (v.packet["icmpv4_type"], v.packet["ipv4_src"], v.packet["ipv4_dst"]) == (
        0, "10.1.0.1", "10.1.0.2")
    assert (v.packet["eth_src"], v.packet["eth_dst"]) == (R1_GREEN, mac("b"))


def test_ping_to_the_routers_address_on_another_network_is_answered_on_the_senders_host(tracer):
    """a (blue) pings green's gateway address: the router answers from that address, through the
    leg a reached it by (its MAC), without leaving a's host."""
    result = to_ip(tracer, "a", "10.1.0.1")
    v = result.verdict
    assert (v.kind, v.port, v.host) == (DELIVERED, "a", "h1") and {s.host for s in result.steps} == {"h1"}
    assert (v.packet["icmpv4_type"], v.packet["ipv4_src"], v.packet["ipv4_dst"]) == (
        0, "10.1.0.1", TOPO.ports["a"].ip)
    assert (v.packet["eth_src"], v.packet["eth_dst"], v.packet["nw_ttl"]) == (R1_BLUE, mac("a"), 64)


def test_network_without_a_router_reaches_no_other_subnet(tracer):
    assert to_ip(tracer, "l", "10.0.0.2").verdict.kind == DROPPED
    # Even aimed at a router MAC: the lone network has no way into any router.
    for router_mac in (R1_BLUE, "02:a2:00:00:00:c8"):
        host, packet, _ = _packet("l", "10.0.0.2")
        v = tracer.trace(host, {**packet, "eth_dst": router_mac}).verdict
        assert (v.kind, v.table) == (DROPPED, "L2_LOOKUP")


def test_destination_without_a_port_is_dropped(tracer):
    v = to_ip(tracer, "a", "10.1.0.99").verdict
    assert (v.kind, v.table) == (DROPPED, "NEIGHBOR")


def test_routers_with_overlapping_subnets_stay_apart(tracer):
    # b (r1, green) and o (r2, orange) share 10.1.0.2; a and r share 10.0.0.2.
    assert to_ip(tracer, "a", "10.1.0.2").verdict.port == "b"
    assert to_ip(tracer, "r", "10.1.0.2").verdict.port == "o"
    assert to_ip(tracer, "o", "10.0.0.2").verdict.port == "r"
    # r2 has no gateway: no way out.
    assert to_ip(tracer, "r", OUTSIDE).verdict.kind == DROPPED


def test_host_needs_every_network_of_its_routers():
    compiled = compile_all(TOPO)
    # h1 has blue and green ports (r1) and red (r2): it can deliver to c, o, ... on h2.
    for port in ("c", "a2", "o", "vm"):
        assert port_cookie(TOPO.ports[port]) in compiled["h1"]
    # h3 has no port at all, but is r1's gateway: it needs r1 and its networks, not r2's.
    assert router_cookie(TOPO.routers["r1"]) in compiled["h3"]
    assert router_cookie(TOPO.routers["r2"]) not in compiled["h3"]
    assert port_cookie(TOPO.ports["a"]) in compiled["h3"]
    assert port_cookie(TOPO.ports["o"]) not in compiled["h3"]
    # Tunnel ingress of a network only where it has a port.
    assert network_cookie(TOPO.networks["blue"]) not in compiled["h3"]


# ---- north-south ----------------------------------------------------------------------------

def test_snat_out_and_the_reply_back(tracer):
    conntrack = Conntrack()
    out = to_ip(tracer, "a", OUTSIDE, proto="tcp", dport=443, conntrack=conntrack)
    v = out.verdict
    assert (v.kind, v.host) == (SENT_OUT_UPLINK, "h3")
    assert (v.packet["ipv4_src"], v.packet["ipv4_dst"]) == (EXTERNAL_IP, OUTSIDE)
    assert (v.packet["eth_src"], v.packet["eth_dst"]) == (GW_MAC, NEXT_HOP_MAC)
    assert v.packet["nw_ttl"] == 63
    assert dict(next(s for s in out.steps if s.note.startswith("tunnel")).changes)[
        "tunnel_id"] == 1000  # the router key
    back = tracer.trace("h3", reply_of(v.packet, in_port=UPLINK_OFPORT, eth_src=NEXT_HOP_MAC,
                                       eth_dst=GW_MAC), conntrack).verdict
    assert (back.kind, back.port, back.host) == (DELIVERED, "a", "h1")
    assert (back.packet["ipv4_src"], back.packet["ipv4_dst"]) == (OUTSIDE, "10.0.0.2")
    assert (back.packet["eth_src"], back.packet["eth_dst"]) == (R1_BLUE, mac("a"))
    assert back.packet["tcp_dst"] == v.packet["tcp_src"]


def test_ping_out_and_back(tracer):
    conntrack = Conntrack()
    v = to_ip(tracer, "c", OUTSIDE, conntrack=conntrack).verdict
    assert (v.kind, v.packet["ipv4_src"]) == (SENT_OUT_UPLINK, EXTERNAL_IP)
    back = tracer.trace("h3", reply_of(v.packet, in_port=UPLINK_OFPORT), conntrack).verdict
    assert (back.kind, back.port, back.packet["ipv4_dst"]) == (DELIVERED, "c", "10.1.0.3")


def test_unsolicited_inbound_to_the_external_ip_dropped(tracer):
    v = tracer.trace("h3", from_outside(EXTERNAL_IP), Conntrack()).verdict
    assert (v.kind, v.host, v.table) == (DROPPED, "h3", "L3_GATE")
    # A "reply" that belongs to no connection is new, hence dropped too.
    v = tracer.trace("h3", from_outside(EXTERNAL_IP, sport=443, dport=40000)).verdict
    assert v.kind == DROPPED


def test_floating_ip_inbound_dnat_and_reply_snat(tracer):
    conntrack = Conntrack()
    inbound = tracer.trace("h3", from_outside(FLOATING_IP), conntrack)
    v = inbound.verdict
    assert (v.kind, v.port, v.host) == (DELIVERED, "b", "h1")
    assert (v.packet["ipv4_src"], v.packet["ipv4_dst"]) == (OUTSIDE, "10.1.0.2")
    host, _, _ = _packet("b", OUTSIDE)
    reply = reply_of(v.packet, in_port=TOPO.bindings["b"].ofport, eth_src=mac("b"),
                     eth_dst=R1_GREEN, nw_ttl=64)
    out = tracer.trace(host, reply, conntrack).verdict
    assert (out.kind, out.packet["ipv4_src"], out.packet["ipv4_dst"]) == (
        SENT_OUT_UPLINK, FLOATING_IP, OUTSIDE)
    assert (out.packet["tcp_src"], out.packet["tcp_dst"]) == (22, 5555)


def test_floating_ip_port_connects_out_with_its_floating_ip(tracer):
    v = to_ip(tracer, "b", OUTSIDE, proto="udp", dport=53).verdict
    assert (v.kind, v.packet["ipv4_src"]) == (SENT_OUT_UPLINK, FLOATING_IP)
    v = to_ip(tracer, "a", OUTSIDE, proto="udp", dport=53).verdict  # no FIP: external IP
    assert (v.kind, v.packet["ipv4_src"]) == (SENT_OUT_UPLINK, EXTERNAL_IP)


def test_next_hop_unknown_drops_egress():
    topo = routed_topology(next_hop_mac=None)
    v = trace_to_ip(topo, "a", OUTSIDE).verdict
    assert (v.kind, v.host, v.table) == (DROPPED, "h3", "UPLINK_OUT")


def test_next_hop_arp_reply_goes_to_the_controller(tracer):
    arp = {"in_port": UPLINK_OFPORT, "eth_src": NEXT_HOP_MAC, "eth_dst": GW_MAC,
           "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REPLY, "arp_sha": NEXT_HOP_MAC,
           "arp_spa": "203.0.113.1", "arp_tha": GW_MAC, "arp_tpa": EXTERNAL_IP}
    result = tracer.trace("h3", arp)
    assert (result.verdict.kind, result.verdict.host) == (TO_CONTROLLER, "h3")
    # Anyone else's ARP reply is not control plane.
    spoofed = tracer.trace("h3", {**arp, "arp_spa": "203.0.113.66"}).verdict
    assert spoofed.kind == DROPPED


@pytest.mark.parametrize("ip", [EXTERNAL_IP, FLOATING_IP])
def test_arp_request_on_the_uplink_answered(tracer, ip):
    request = {"in_port": UPLINK_OFPORT, "eth_src": NEXT_HOP_MAC, "eth_dst": "ff:ff:ff:ff:ff:ff",
               "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST, "arp_sha": NEXT_HOP_MAC,
               "arp_spa": "203.0.113.1", "arp_tha": "00:00:00:00:00:00", "arp_tpa": ip}
    v = tracer.trace("h3", request).verdict
    assert (v.kind, v.host) == (SENT_OUT_UPLINK, "h3")
    assert (v.packet["arp_op"], v.packet["arp_sha"], v.packet["arp_spa"]) == (
        ARP_REPLY, GW_MAC, ip)
    assert (v.packet["eth_dst"], v.packet["arp_tpa"]) == (NEXT_HOP_MAC, "203.0.113.1")
    unknown = tracer.trace("h3", {**request, "arp_tpa": "203.0.113.99"}).verdict
    assert unknown.kind == DROPPED


def test_egress_from_a_port_on_the_gateway_host_stays_local():
    topo = TOPO.replace(ports=[PortState("g", 50, "blue", "02:00:00:00:02:01", "10.0.0.50")],
                        bindings=[Binding("g", "h3", 1)])
    result = trace_to_ip(topo, "g", OUTSIDE)
    assert result.verdict.kind == SENT_OUT_UPLINK
    assert {s.host for s in result.steps} == {"h3"}


# ---- rendering ------------------------------------------------------------------------------

def test_format_trace_names_objects_hops_and_verdict():
    text = format_trace(trace_to_ip(TOPO, "a", OUTSIDE), TOPO)
    for expected in ("port a", "router r1", "ROUTING", "tunnel to h3, tun_id=1000",
                     "snat 203.0.113.10", "=> sent-out-uplink on host h3",
                     "ipv4_src=203.0.113.10"):
        assert expected in text, expected
    text = format_trace(trace_to_ip(TOPO, "a", "10.1.0.3"), TOPO)
    assert "network green" in text and "=> delivered to port c on host h2" in text


def test_trace_to_json_is_serialisable():
    body = trace_to_json(trace_to_ip(TOPO, "a", OUTSIDE, proto="tcp", dport=80), TOPO)
    assert json.loads(json.dumps(body)) == body
    assert body["verdict"]["kind"] == SENT_OUT_UPLINK
    assert body["verdict"]["packet"]["ipv4_src"] == EXTERNAL_IP
    assert body["steps"][0]["owner"] == "port a" and body["steps"][0]["host"] == "h1"
    assert "table=0" in body["steps"][0]["flow"]


def test_trace_to_ip_rejects_what_it_cannot_trace():
    with pytest.raises(ValueError, match="unknown port"):
        trace_to_ip(TOPO, "nope", "10.0.0.3")
    with pytest.raises(ValueError):
        trace_to_ip(TOPO, "a", "not-an-ip")


# ---- validation -----------------------------------------------------------------------------

def _with_router(router, extra_networks=()):
    return Topology.build(networks=[*TOPO.networks.values(), *extra_networks],
                          routers=[router])


@pytest.mark.parametrize("router, problem", [
    (RouterState("x", 5000, (RouterPortState("blue", "02:a1:00:00:00:01"),
                             RouterPortState("red", "02:a1:00:00:00:02"))), "overlaps"),
    (RouterState("x", 100, (RouterPortState("blue", "02:a1:00:00:00:01"),)), "key 100"),
    (RouterState("x", 5000, (RouterPortState("blue", "02:a1:00:00:00:01"),),
                 routes=(RouteState("10.9.0.0/16", "10.7.0.1"),)), "no attached subnet"),
    (RouterState("x", 5000, (RouterPortState("blue", "02:A1:00:00:00:01"),)), "lowercase"),
    (RouterState("x", 70000, (RouterPortState("blue", "02:a1:00:00:00:01"),),
                 gateway=GatewayState("h3", "02:ee:00:00:00:01", "203.0.113.10", 24,
                                      "203.0.113.1", None)), "16 bits"),
    (RouterState("x", 5000, (RouterPortState("blue", "02:a1:00:00:00:01"),),
                 floating_ips=(FloatingIpState("203.0.113.20", "a"),)), "need a gateway"),
])
def test_validate_rejects_bad_routers(router, problem):
    with pytest.raises(ValueError, match=problem):
        _with_router(router)


def test_validate_rejects_a_network_on_two_routers():
    r1, r2 = TOPO.routers["r1"], TOPO.routers["r2"]
    stolen = RouterState(r2.name, r2.key, (*r2.ports, RouterPortState("blue", "02:a2:00:00:00:01")))
    with pytest.raises(ValueError, match="already attached"):
        Topology.build(networks=TOPO.networks.values(), routers=[r1, stolen])
    extra = NetworkState("x", 999, "10.99.0.0/24", "10.99.0.1")
    Topology.build(networks=[*TOPO.networks.values(), extra], routers=[r1, r2])  # fine
