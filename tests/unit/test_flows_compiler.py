"""Golden flows, counts and incremental compilation."""
import pytest
from hypothesis import given, settings, strategies as st

from flows.compiler import Compiler, changed_objects, compile_all, compile_host
from incremental import L2_EDITS, apply_l2_edit, update_and_check  # tests/unit is on sys.path
from flows.examples import scale_topology, small_topology
from flows.model import Binding, Flow, HostState, NetworkState, PortState, Topology, sorted_flows
from flows.ofctl import to_ofctl
from flows.pipeline import ARP_RESPONDER, CLASSIFY, STATIC_COOKIE, TUNNEL_OFPORT, Category, make_cookie

# A change in the compiler must update these consciously (they are the contract with OVS).
# Regenerate: python3 -c "from tests.unit.test_flows_compiler import dump; dump()"
GOLDEN = {
    "h1": [
        "meter=1 pktps burst bands=type=drop rate=200 burst_size=50",
        "meter=2 pktps burst bands=type=drop rate=100 burst_size=20",
        "table=0, priority=100, cookie=0x40000000001, in_port=1,vlan_tci=0x0000/0x1fff, actions=set_field:0x64->metadata,set_field:0x1->reg14,goto_table:10",
        "table=0, priority=100, cookie=0x40000000003, in_port=2,vlan_tci=0x0000/0x1fff, actions=set_field:0xc8->metadata,set_field:0x3->reg14,goto_table:10",
        "table=0, priority=100, cookie=0x30000000064, in_port=65000,tun_id=0x64, actions=set_field:0x64->metadata,set_field:0x1->reg10,goto_table:90",
        "table=0, priority=100, cookie=0x300000000c8, in_port=65000,tun_id=0xc8, actions=set_field:0xc8->metadata,set_field:0x1->reg10,goto_table:90",
        "table=0, priority=100, cookie=0x10000000000, in_port=65001,vlan_tci=0x0000/0x1fff, actions=goto_table:35",
        "table=10, priority=100, cookie=0x40000000001, arp_sha=02:00:00:00:00:01,arp_spa=10.0.0.2,dl_src=02:00:00:00:00:01,dl_type=0x0806,reg14=0x1, actions=goto_table:20",
        "table=10, priority=100, cookie=0x40000000003, arp_sha=02:00:00:00:00:01,arp_spa=10.0.0.2,dl_src=02:00:00:00:00:01,dl_type=0x0806,reg14=0x3, actions=goto_table:20",
        "table=10, priority=100, cookie=0x40000000001, dl_src=02:00:00:00:00:01,dl_type=0x0800,nw_src=10.0.0.2,reg14=0x1, actions=goto_table:20",
        "table=10, priority=100, cookie=0x40000000003, dl_src=02:00:00:00:00:01,dl_type=0x0800,nw_src=10.0.0.2,reg14=0x3, actions=goto_table:20",
        "table=20, priority=100, cookie=0x30000000064, arp_op=1,arp_tpa=10.0.0.1,dl_type=0x0806,metadata=0x64, actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:00:00:00:00:64->dl_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:0a:00:00:00:00:64->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.1->arp_spa,output:IN_PORT",
        "table=20, priority=100, cookie=0x300000000c8, arp_op=1,arp_tpa=10.0.0.1,dl_type=0x0806,metadata=0xc8, actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:00:00:00:00:c8->dl_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:0a:00:00:00:00:c8->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.1->arp_spa,output:IN_PORT",
        "table=20, priority=100, cookie=0x40000000001, arp_op=1,arp_tpa=10.0.0.2,dl_type=0x0806,metadata=0x64, actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:00:01->dl_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:00:00:00:00:01->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.2->arp_spa,output:IN_PORT",
        "table=20, priority=100, cookie=0x40000000003, arp_op=1,arp_tpa=10.0.0.2,dl_type=0x0806,metadata=0xc8, actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:00:01->dl_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:00:00:00:00:01->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.2->arp_spa,output:IN_PORT",
        "table=20, priority=100, cookie=0x40000000002, arp_op=1,arp_tpa=10.0.0.3,dl_type=0x0806,metadata=0x64, actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:00:02->dl_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:00:00:00:00:02->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.3->arp_spa,output:IN_PORT",
        "table=20, priority=50, cookie=0x10000000000, arp_op=1,dl_type=0x0806, actions=drop",
        "table=20, priority=0, cookie=0x10000000000, actions=goto_table:22",
        "table=22, priority=100, cookie=0x30000000064, dl_type=0x0800,nw_proto=17,nw_dst=10.0.0.1,metadata=0x64,udp_dst=53, actions=meter:1,CONTROLLER:65535",
        "table=22, priority=100, cookie=0x300000000c8, dl_type=0x0800,nw_proto=17,nw_dst=10.0.0.1,metadata=0xc8,udp_dst=53, actions=meter:1,CONTROLLER:65535",
        "table=22, priority=0, cookie=0x10000000000, actions=goto_table:24",
        "table=24, priority=0, cookie=0x10000000000, actions=goto_table:30",
        "table=25, priority=100, cookie=0x10000000000, ct_state=+est+trk, actions=goto_table:28",
        "table=30, priority=0, cookie=0x10000000000, actions=goto_table:40",
        "table=32, priority=210, cookie=0x10000000000, ct_state=+inv+trk, actions=drop",
        "table=32, priority=200, cookie=0x10000000000, ct_state=+est-inv+trk, actions=goto_table:40",
        "table=32, priority=200, cookie=0x10000000000, ct_state=+rel-inv+trk, actions=goto_table:40",
        "table=40, priority=0, cookie=0x10000000000, actions=goto_table:90",
        "table=90, priority=100, cookie=0x40000000001, dl_dst=02:00:00:00:00:01,metadata=0x64, actions=set_field:0x1->reg15,goto_table:100",
        "table=90, priority=100, cookie=0x40000000003, dl_dst=02:00:00:00:00:01,metadata=0xc8, actions=set_field:0x3->reg15,goto_table:100",
        "table=90, priority=100, cookie=0x40000000002, dl_dst=02:00:00:00:00:02,metadata=0x64,reg10=0x0/0x1, actions=set_field:192.168.0.2->tun_dst,set_field:0x64->tun_id,output:65000",
        "table=100, priority=0, cookie=0x10000000000, actions=goto_table:105",
        "table=102, priority=210, cookie=0x10000000000, ct_state=+inv+trk, actions=drop",
        "table=102, priority=200, cookie=0x10000000000, ct_state=+est-inv+trk, actions=goto_table:105",
        "table=102, priority=200, cookie=0x10000000000, ct_state=+rel-inv+trk, actions=goto_table:105",
        "table=105, priority=0, cookie=0x10000000000, actions=goto_table:110",
        "table=110, priority=100, cookie=0x40000000001, reg15=0x1, actions=output:1",
        "table=110, priority=100, cookie=0x40000000003, reg15=0x3, actions=output:2",
    ],
    "h2": [
        "meter=1 pktps burst bands=type=drop rate=200 burst_size=50",
        "meter=2 pktps burst bands=type=drop rate=100 burst_size=20",
        "table=0, priority=100, cookie=0x40000000002, in_port=1,vlan_tci=0x0000/0x1fff, actions=set_field:0x64->metadata,set_field:0x2->reg14,goto_table:10",
        "table=0, priority=100, cookie=0x30000000064, in_port=65000,tun_id=0x64, actions=set_field:0x64->metadata,set_field:0x1->reg10,goto_table:90",
        "table=0, priority=100, cookie=0x10000000000, in_port=65001,vlan_tci=0x0000/0x1fff, actions=goto_table:35",
        "table=10, priority=100, cookie=0x40000000002, arp_sha=02:00:00:00:00:02,arp_spa=10.0.0.3,dl_src=02:00:00:00:00:02,dl_type=0x0806,reg14=0x2, actions=goto_table:20",
        "table=10, priority=100, cookie=0x40000000002, dl_src=02:00:00:00:00:02,dl_type=0x0800,nw_src=10.0.0.3,reg14=0x2, actions=goto_table:20",
        "table=20, priority=100, cookie=0x30000000064, arp_op=1,arp_tpa=10.0.0.1,dl_type=0x0806,metadata=0x64, actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:00:00:00:00:64->dl_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:0a:00:00:00:00:64->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.1->arp_spa,output:IN_PORT",
        "table=20, priority=100, cookie=0x40000000001, arp_op=1,arp_tpa=10.0.0.2,dl_type=0x0806,metadata=0x64, actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:00:01->dl_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:00:00:00:00:01->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.2->arp_spa,output:IN_PORT",
        "table=20, priority=100, cookie=0x40000000002, arp_op=1,arp_tpa=10.0.0.3,dl_type=0x0806,metadata=0x64, actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:00:02->dl_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:00:00:00:00:02->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.3->arp_spa,output:IN_PORT",
        "table=20, priority=50, cookie=0x10000000000, arp_op=1,dl_type=0x0806, actions=drop",
        "table=20, priority=0, cookie=0x10000000000, actions=goto_table:22",
        "table=22, priority=100, cookie=0x30000000064, dl_type=0x0800,nw_proto=17,nw_dst=10.0.0.1,metadata=0x64,udp_dst=53, actions=meter:1,CONTROLLER:65535",
        "table=22, priority=0, cookie=0x10000000000, actions=goto_table:24",
        "table=24, priority=0, cookie=0x10000000000, actions=goto_table:30",
        "table=25, priority=100, cookie=0x10000000000, ct_state=+est+trk, actions=goto_table:28",
        "table=30, priority=0, cookie=0x10000000000, actions=goto_table:40",
        "table=32, priority=210, cookie=0x10000000000, ct_state=+inv+trk, actions=drop",
        "table=32, priority=200, cookie=0x10000000000, ct_state=+est-inv+trk, actions=goto_table:40",
        "table=32, priority=200, cookie=0x10000000000, ct_state=+rel-inv+trk, actions=goto_table:40",
        "table=40, priority=0, cookie=0x10000000000, actions=goto_table:90",
        "table=90, priority=100, cookie=0x40000000001, dl_dst=02:00:00:00:00:01,metadata=0x64,reg10=0x0/0x1, actions=set_field:192.168.0.1->tun_dst,set_field:0x64->tun_id,output:65000",
        "table=90, priority=100, cookie=0x40000000002, dl_dst=02:00:00:00:00:02,metadata=0x64, actions=set_field:0x2->reg15,goto_table:100",
        "table=100, priority=0, cookie=0x10000000000, actions=goto_table:105",
        "table=102, priority=210, cookie=0x10000000000, ct_state=+inv+trk, actions=drop",
        "table=102, priority=200, cookie=0x10000000000, ct_state=+est-inv+trk, actions=goto_table:105",
        "table=102, priority=200, cookie=0x10000000000, ct_state=+rel-inv+trk, actions=goto_table:105",
        "table=105, priority=0, cookie=0x10000000000, actions=goto_table:110",
        "table=110, priority=100, cookie=0x40000000002, reg15=0x2, actions=output:1",
    ],
}


def render(host_flows):
    return [to_ofctl(f) for f in sorted_flows(f for fs in host_flows.values() for f in fs)]


def dump():
    for host, flows in compile_all(small_topology()).items():
        print(host)
        print("\n".join(render(flows)))


def test_golden_flows_small_topology():
    compiled = compile_all(small_topology())
    assert sorted(compiled) == sorted(GOLDEN)
    for host, expected in GOLDEN.items():
        assert render(compiled[host]) == expected, host


def test_container_ports_and_the_uplink_take_only_untagged_frames():
    """vlan_vid=OFPVID_NONE, as ovs-ofctl prints it. Frames from the tunnel passed that check on
    the sender's host."""
    for host_flows in compile_all(scale_topology(3, 5, 2)).values():
        classify = [f for fs in host_flows.values() for f in fs
                    if isinstance(f, Flow) and f.table == CLASSIFY.id]
        assert classify
        for flow in classify:
            from_tunnel = dict(flow.match)["in_port"] == TUNNEL_OFPORT
            assert ("vlan_tci=0x0000/0x1fff" in to_ofctl(flow)) is not from_tunnel, flow


def test_compile_host_matches_compile_all():
    topo = small_topology()
    assert compile_host(topo, "h2") == compile_all(topo)["h2"]
    assert compile_host(topo, "nowhere") == {}


def test_every_flow_carries_the_cookie_it_is_filed_under():
    for host_flows in compile_all(scale_topology(5, 10, 3)).values():
        for cookie, flows in host_flows.items():
            assert flows and all(getattr(f, "cookie", cookie) == cookie for f in flows)  # meters: none


def test_flow_counts_per_port():
    topo = scale_topology(hosts=4, ports_per_host=5, networks=2, seed=1)
    compiled = compile_all(topo)
    for port in topo.ports.values():
        cookie = make_cookie(Category.PORT, port.key)
        own = topo.bindings[port.name].host
        assert len(compiled[own][cookie]) == 6  # OVN budget: <= 8
        for host, host_flows in compiled.items():
            if host != own and cookie in host_flows:
                assert len(host_flows[cookie]) == 2  # OVN budget: <= 3


def test_network_flows_only_on_hosts_with_a_port_of_it():
    topo = small_topology()
    compiled = compile_all(topo)
    red = make_cookie(Category.NETWORK, 200)
    c_cookie = make_cookie(Category.PORT, 3)
    assert red in compiled["h1"] and red not in compiled["h2"]
    assert c_cookie not in compiled["h2"]  # h2 has no red port: no red flows at all
    assert STATIC_COOKIE in compiled["h2"]


def test_an_unbound_port_is_answered_by_arp_where_its_network_is_and_nothing_more():
    # (OVN does the same: a peer's first ARP for a port being plugged is never lost.)
    topo = small_topology().replace(
        ports=[PortState("unbound", 9, "blue", "02:00:00:00:00:09", "10.0.0.9"),
               PortState("bound-nowhere-known", 11, "blue", "02:00:00:00:00:0b", "10.0.0.11"),
               PortState("lost", 10, "green", "02:00:00:00:00:0a", "10.0.0.10")],
        bindings=[Binding("bound-nowhere-known", "h9", 7), Binding("ghost", "h9", 1)])
    compiled, before = compile_all(topo), compile_all(small_topology())
    for host in ("h1", "h2"):  # both have blue; green is in no known network
        extra = {c: f for c, f in compiled[host].items() if before[host].get(c) != f}
        assert {c & 0xFFFFFFFFFF for c in extra} == {9, 11}
        for flows in extra.values():
            assert [f.table for f in flows] == [ARP_RESPONDER.id]
            (flow,) = flows
            assert dict(flow.match)["arp_tpa"] in ("10.0.0.9", "10.0.0.11")


def test_validate_rejects_colliding_inputs():
    blue = NetworkState("blue", 100, "10.0.0.0/24", "10.0.0.1", 1450)
    with pytest.raises(ValueError, match="network, mac"):
        Topology.build(networks=[blue], ports=[
            PortState("a", 1, "blue", "02:00:00:00:00:01", "10.0.0.2"),
            PortState("b", 2, "blue", "02:00:00:00:00:01", "10.0.0.3")])
    with pytest.raises(ValueError, match="gateway"):
        Topology.build(networks=[blue], ports=[
            PortState("a", 1, "blue", "02:00:00:00:00:01", "10.0.0.1")])
    with pytest.raises(ValueError, match="ofport"):
        Topology.build(bindings=[Binding("a", "h1", 65000)])


# ---- incremental -------------------------------------------------------------------------

NEW_PORT = PortState("new", 4242, "n1", "02:ff:00:00:00:01", "10.0.200.1")


def test_adding_a_port_changes_only_its_cookie_where_the_network_exists():
    topo = scale_topology(hosts=10, ports_per_host=10, networks=5, seed=3)
    compiler = Compiler()
    compiler.update(topo)
    before = {h: dict(f) for h, f in compiler.flows.items()}
    host = next(b.host for b in topo.bindings.values() if topo.ports[b.port].network == "n1")
    changes = compiler.update(topo.replace(ports=[NEW_PORT],
                                           bindings=[Binding("new", host, 999)]))
    cookie = make_cookie(Category.PORT, NEW_PORT.key)
    assert changes  # the new port shows up
    for changed_host, changed in changes.items():
        assert set(changed) == {cookie}
        assert changed_objects(before[changed_host], compiler.flows[changed_host]) == {cookie}
    assert len(changes[host][cookie]) == 6
    assert compiler.flows == compile_all(compiler.topo)


def test_adding_a_port_to_a_host_new_to_the_network_brings_the_network():
    topo = small_topology()
    compiler = Compiler()
    compiler.update(topo)
    port = PortState("d", 4, "red", "02:00:00:00:00:04", "10.0.0.4")
    changes = compiler.update(topo.replace(ports=[port], bindings=[Binding("d", "h2", 2)]))
    red_ports = {make_cookie(Category.PORT, k) for k in (3, 4)}
    assert set(changes["h2"]) == {make_cookie(Category.NETWORK, 200)} | red_ports
    assert set(changes["h1"]) == {make_cookie(Category.PORT, 4)}


def test_removing_the_last_port_removes_the_network_from_the_host():
    topo = small_topology()
    compiler = Compiler()
    compiler.update(topo)
    changes = compiler.update(topo.replace(remove_ports=["c"]))
    assert changes == {"h1": {make_cookie(Category.NETWORK, 200): frozenset(),
                              make_cookie(Category.PORT, 3): frozenset()}}


def test_no_change_no_update():
    topo = small_topology()
    compiler = Compiler()
    compiler.update(topo)
    assert compiler.update(topo) == {}
    assert compiler.update(Topology.build(topo.hosts.values(), topo.networks.values(),
                                          topo.ports.values(), topo.bindings.values())) == {}


HOSTS = [HostState(f"h{i}", i, f"192.168.0.{i}") for i in range(1, 4)]
NETS = [NetworkState(f"n{i}", i, "10.0.0.0/24", "10.0.0.1", 1450) for i in range(1, 4)]

edits = st.lists(st.tuples(
    st.sampled_from(L2_EDITS),
    st.integers(1, 6), st.integers(0, 2), st.integers(0, 2)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(edits)
def test_incremental_equals_full_compile(steps):
    """Whatever sequence of edits, Compiler.update ends where a full compile would."""
    topo = Topology.build(HOSTS, NETS)
    compiler = Compiler()
    compiler.update(topo)
    for kind, n, a, b in steps:
        update_and_check(compiler, apply_l2_edit(topo, kind, n, a, b, HOSTS, NETS))
        topo = compiler.topo


def test_a_replaced_topology_is_not_kept_alive_by_its_descendants():
    # Each topology copies the maps it changes; if each kept its parent, a long-running controller
    # would keep every copy it ever made (it did: 145 KiB per NB port at 10,000 ports).
    import gc
    import weakref
    topo = small_topology()
    first = weakref.ref(topo)
    for n in range(3):
        topo = topo.replace(ports=[PortState(f"x{n}", 90 + n, "blue", f"02:00:00:00:01:{n:02x}", f"10.0.0.{90 + n}")])
    gc.collect()
    assert first() is None
    compiler = Compiler()
    compiler.update(topo)
    update_and_check(compiler, topo.replace(remove_ports=["x0"]))  # the delta is still used while fresh
