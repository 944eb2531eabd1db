"""The offline tracer on compiled flows: delivery, tunnels, ARP, drops, isolation, spoofing,
VLAN tags."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flows.compiler import compile_all
from flows.examples import small_topology
from flows.model import (ARP_REPLY, ETH_TYPE_ARP, OFPVID_NONE, OFPVID_PRESENT, Binding, Flow,
                         HostState, NetworkState, PortState, Topology)
from flows.pipeline import OFPP_IN_PORT, TUNNEL_OFPORT
from flows.trace import (DELIVERED, DROPPED, LOOP, TUNNELLED_TO_UNKNOWN, Tracer, format_trace,
                         trace, trace_from_port)
from tags import MAYBE_TAGGED  # tests/unit is on sys.path

A_MAC, B_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


def small_with_a2():
    """small_topology plus a2, a second blue port next to a on h1."""
    return small_topology().replace(
        ports=[PortState("a2", 5, "blue", "02:00:00:00:00:05", "10.0.0.5")],
        bindings=[Binding("a2", "h1", 3)])


def test_same_host_delivery():
    result = trace_from_port(small_with_a2(), "a", eth_dst="02:00:00:00:00:05",
                             ipv4_dst="10.0.0.5")
    assert result.verdict.kind == DELIVERED
    assert (result.verdict.port, result.verdict.host) == ("a2", "h1")
    assert [s.table for s in result.steps] == [
        "CLASSIFY", "PORT_SECURITY", "ARP_RESPONDER", "DNS", "SERVICE", "ACL_EGRESS", "L3_GATE",
        "L2_LOOKUP", "ACL_INGRESS", "SERVICE_REPLY", "OUTPUT"]
    assert {s.host for s in result.steps} == {"h1"}
    assert str(result.verdict) == "delivered to port a2 on host h1"


def test_cross_host_via_tunnel():
    result = trace_from_port(small_topology(), "a", eth_dst=B_MAC, ipv4_dst="10.0.0.3")
    assert result.verdict.kind == DELIVERED
    assert (result.verdict.port, result.verdict.host) == ("b", "h2")
    tunnel_step = next(s for s in result.steps if s.table == "L2_LOOKUP" and s.host == "h1")
    actions = tunnel_step.flow.actions
    assert ("set_field", "tunnel_id", 100) in actions
    assert ("set_field", "tun_ipv4_dst", "192.168.0.2") in actions
    assert actions[-1] == ("output", TUNNEL_OFPORT)
    assert (tunnel_step.category, tunnel_step.key) == ("PORT", 2)  # b's remote flow
    on_h2 = [s.table for s in result.steps if s.host == "h2"]
    assert on_h2 == ["CLASSIFY", "L2_LOOKUP", "ACL_INGRESS", "SERVICE_REPLY", "OUTPUT"]  # no port security/ARP twice


def test_arp_request_answered_on_the_senders_host():
    result = trace_from_port(small_topology(), "a", eth_type=ETH_TYPE_ARP, arp_tpa="10.0.0.3")
    verdict = result.verdict
    assert verdict.kind == DELIVERED and (verdict.port, verdict.host) == ("a", "h1")
    assert {s.host for s in result.steps} == {"h1"}
    reply = verdict.packet
    assert reply["arp_op"] == ARP_REPLY
    assert (reply["arp_sha"], reply["arp_spa"]) == (B_MAC, "10.0.0.3")
    assert (reply["arp_tha"], reply["arp_tpa"]) == (A_MAC, "10.0.0.2")
    assert (reply["eth_src"], reply["eth_dst"]) == (B_MAC, A_MAC)


def test_arp_request_for_unknown_ip_dropped():
    result = trace_from_port(small_topology(), "a", eth_type=ETH_TYPE_ARP, arp_tpa="10.0.0.99")
    assert result.verdict.kind == DROPPED and result.verdict.table == "ARP_RESPONDER"


def test_arp_is_per_network_even_with_the_same_ip():
    # c (red) asks for 10.0.0.3, which only exists in blue.
    result = trace_from_port(small_topology(), "c", eth_type=ETH_TYPE_ARP, arp_tpa="10.0.0.3")
    assert result.verdict.kind == DROPPED


def test_unknown_destination_dropped():
    result = trace_from_port(small_topology(), "a", eth_dst="02:00:00:00:99:99")
    assert (result.verdict.kind, result.verdict.table) == (DROPPED, "L2_LOOKUP")
    assert str(result.verdict) == "dropped on host h1 in table L2_LOOKUP (table miss)"


def test_broadcast_dropped():
    result = trace_from_port(small_topology(), "a", eth_dst="ff:ff:ff:ff:ff:ff")
    assert (result.verdict.kind, result.verdict.table) == (DROPPED, "L2_LOOKUP")


def test_tunnel_frame_never_retunnelled():
    # A frame arrives on h2 for a's MAC (which lives on h1): h2 must not send it back out.
    packet = {"in_port": TUNNEL_OFPORT, "tunnel_id": 100, "eth_src": B_MAC, "eth_dst": A_MAC,
              "eth_type": 0x0800, "ipv4_src": "10.0.0.3", "ipv4_dst": "10.0.0.2"}
    result = trace(small_topology(), "h2", packet)
    assert (result.verdict.kind, result.verdict.table) == (DROPPED, "L2_LOOKUP")
    assert not any(a == ("output", TUNNEL_OFPORT) for s in result.steps for a in s.flow.actions)


def test_tunnel_frame_for_unknown_vni_dropped():
    packet = {"in_port": TUNNEL_OFPORT, "tunnel_id": 200, "eth_dst": A_MAC, "eth_type": 0x0800}
    result = trace(small_topology(), "h2", packet)  # h2 has no red port
    assert (result.verdict.kind, result.verdict.table) == (DROPPED, "CLASSIFY")


def test_tunnel_to_unknown_host():
    topo = small_topology()
    compiled = compile_all(topo)
    # Same flows, but h2 vanished from the tracer's view of the hosts.
    gone = Topology(hosts={"h1": topo.hosts["h1"]}, networks=topo.networks, ports=topo.ports,
                    bindings=topo.bindings)
    result = trace_from_port(gone, "a", compiled=compiled, eth_dst=B_MAC)
    assert result.verdict.kind == TUNNELLED_TO_UNKNOWN


def test_spoofed_sources_dropped_in_port_security():
    topo = small_topology()
    for overrides in ({"eth_src": "02:00:00:00:00:66"}, {"ipv4_src": "10.0.0.3"},
                      {"eth_type": 0x86DD, "ipv4_src": None},
                      {"eth_type": ETH_TYPE_ARP, "arp_spa": "10.0.0.3", "arp_tpa": "10.0.0.3"},
                      {"eth_type": ETH_TYPE_ARP, "arp_sha": B_MAC, "arp_tpa": "10.0.0.3"}):
        result = trace_from_port(topo, "a", eth_dst=B_MAC, **overrides)
        assert (result.verdict.kind, result.verdict.table) == (DROPPED, "PORT_SECURITY"), \
            overrides


@pytest.mark.parametrize("vlan_vid", [OFPVID_PRESENT | 10, OFPVID_PRESENT, OFPVID_PRESENT | 4095])
@pytest.mark.parametrize("frame", [{"eth_dst": B_MAC, "ipv4_dst": "10.0.0.3"},
                                   {"eth_type": ETH_TYPE_ARP, "arp_tpa": "10.0.0.3"}])
def test_tagged_frames_with_the_ports_own_addresses_are_dropped_in_classify(vlan_vid, frame):
    topo = small_topology()
    result = trace_from_port(topo, "a", vlan_vid=vlan_vid, **frame)
    assert (result.verdict.kind, result.verdict.table) == (DROPPED, "CLASSIFY")
    assert f"VLAN-tagged (vlan_vid={vlan_vid:#x})" in result.verdict.reason
    assert "untagged frames" in format_trace(result, topo)


def test_an_explicitly_untagged_frame_is_an_untagged_frame():
    untagged = trace_from_port(small_topology(), "a", eth_dst=B_MAC, ipv4_dst="10.0.0.3",
                               vlan_vid=OFPVID_NONE)
    assert (untagged.verdict.kind, untagged.verdict.port) == (DELIVERED, "b")
    assert "vlan_vid" not in untagged.verdict.packet  # shown as given: without a tag


# ---- properties over random topologies ----------------------------------------------------

@st.composite
def topologies(draw):
    """1-5 hosts, 1-4 networks that may share CIDRs, ports reusing IPs/MACs across networks."""
    n_hosts = draw(st.integers(1, 5))
    n_nets = draw(st.integers(1, 4))
    hosts = [HostState(f"h{i}", i, f"192.168.0.{i}") for i in range(1, n_hosts + 1)]
    nets = [NetworkState(f"n{i}", i, draw(st.sampled_from(["10.0.0.0/24", "10.1.0.0/24"])),
                         "10.0.0.1", 1450) for i in range(1, n_nets + 1)]
    ports, bindings, used = [], [], set()
    next_ofport = {h.name: 1 for h in hosts}
    for key in range(1, draw(st.integers(1, 12)) + 1):
        net = draw(st.sampled_from(nets)).name
        mac = f"02:00:00:00:00:{draw(st.integers(1, 6)):02x}"  # small pools: reuse across nets
        ip = f"10.0.0.{draw(st.integers(2, 7))}"
        if (net, mac) in used or (net, ip) in used:
            continue
        used |= {(net, mac), (net, ip)}
        ports.append(PortState(f"p{key}", key, net, mac, ip))
        if draw(st.booleans()) or key == 1:
            host = draw(st.sampled_from(hosts)).name
            bindings.append(Binding(f"p{key}", host, next_ofport[host]))
            next_ofport[host] += 1
    return Topology.build(hosts, nets, ports, bindings)


def bound_ports(topo):
    return sorted(name for name in topo.bindings if name in topo.ports)


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(topologies(), st.data())
def test_no_frame_crosses_networks(topo, data):
    tracer = Tracer(topo)
    src = data.draw(st.sampled_from(bound_ports(topo)))
    macs = sorted({p.mac for p in topo.ports.values()} | {"ff:ff:ff:ff:ff:ff"})
    ips = sorted({p.ip for p in topo.ports.values()})
    dst_mac, dst_ip = data.draw(st.sampled_from(macs)), data.draw(st.sampled_from(ips))
    vlan_vid = data.draw(MAYBE_TAGGED)
    for overrides in ({"eth_dst": dst_mac, "ipv4_dst": dst_ip},
                      {"eth_type": ETH_TYPE_ARP, "arp_tpa": dst_ip},
                      {"eth_type": ETH_TYPE_ARP, "eth_dst": dst_mac, "arp_tpa": dst_ip}):
        verdict = tracer.from_port(src, vlan_vid=vlan_vid, **overrides).verdict
        if vlan_vid is not None:  # own MAC and IP, but tagged: nowhere
            assert (verdict.kind, verdict.table) == (DROPPED, "CLASSIFY"), verdict
        elif verdict.kind == DELIVERED:
            assert topo.ports[verdict.port].network == topo.ports[src].network
        else:
            assert verdict.kind == DROPPED


@PROPERTY_SETTINGS
@given(topologies(), st.data())
def test_spoofed_frames_are_never_delivered(topo, data):
    tracer = Tracer(topo)
    src = topo.ports[data.draw(st.sampled_from(bound_ports(topo)))]
    other_mac = data.draw(st.sampled_from(["02:00:00:00:00:01", "02:00:00:00:00:07"]).filter(
        lambda m: m != src.mac))
    other_ip = data.draw(st.sampled_from(["10.0.0.2", "10.0.0.8", "0.0.0.0"]).filter(
        lambda ip: ip != src.ip))
    dst_mac = data.draw(st.sampled_from(sorted({p.mac for p in topo.ports.values()})))
    dst_ip = data.draw(st.sampled_from(sorted({p.ip for p in topo.ports.values()})))
    arp = {"eth_type": ETH_TYPE_ARP, "arp_tpa": dst_ip}
    vlan_vid = data.draw(MAYBE_TAGGED)
    for overrides in ({"eth_src": other_mac}, {"ipv4_src": other_ip},
                      {"eth_src": other_mac, "ipv4_src": other_ip},
                      {**arp, "eth_src": other_mac}, {**arp, "arp_sha": other_mac},
                      {**arp, "arp_spa": other_ip}, {**arp, "eth_dst": dst_mac,
                                                     "arp_sha": other_mac, "eth_src": other_mac}):
        verdict = tracer.from_port(src.name, **{"eth_dst": dst_mac, "ipv4_dst": dst_ip,
                                                "vlan_vid": vlan_vid, **overrides}).verdict
        assert verdict.kind == DROPPED, (overrides, verdict)
        assert verdict.table == ("PORT_SECURITY" if vlan_vid is None else "CLASSIFY")


@PROPERTY_SETTINGS
@given(topologies(), st.data())
def test_every_port_reaches_every_port_of_its_network(topo, data):
    """The other side of isolation: legitimate unicast and ARP always work."""
    tracer = Tracer(topo)
    src = topo.ports[data.draw(st.sampled_from(bound_ports(topo)))]
    for dst in bound_ports(topo):
        dst_port = topo.ports[dst]
        if dst_port.network != src.network or dst == src.name:
            continue
        verdict = tracer.from_port(src.name, eth_dst=dst_port.mac,
                                   ipv4_dst=dst_port.ip).verdict
        assert (verdict.kind, verdict.port) == (DELIVERED, dst)
        reply = tracer.from_port(src.name, eth_type=ETH_TYPE_ARP, arp_tpa=dst_port.ip).verdict
        assert (reply.kind, reply.port) == (DELIVERED, src.name)
        assert reply.packet["arp_sha"] == dst_port.mac


def test_loop_guard():
    topo = small_topology()
    bounce = {"h1": "192.168.0.2", "h2": "192.168.0.1"}
    # Back into the tunnel it came from: IN_PORT, since OpenFlow drops an output to the in_port.
    compiled = {host: {1: frozenset({
        Flow(0, 2, (("in_port", 1),), (("set_field", "tun_ipv4_dst", ip), ("output", TUNNEL_OFPORT)), 1),
        Flow(0, 1, (), (("set_field", "tun_ipv4_dst", ip), ("output", OFPP_IN_PORT)), 1)})}
        for host, ip in bounce.items()}
    result = Tracer(topo, compiled, max_hops=4).trace("h1", {"in_port": 1})
    assert result.verdict.kind == LOOP and len(result.steps) == 4
