"""L3 over random topologies (isolation, reachability, incremental == full) and at scale."""
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from flows import compiler as compiler_module
from flows.compiler import Compiler, compile_all, port_cookie, router_cookie
from incremental import L2_EDITS, apply_l2_edit, update_and_check  # tests/unit is on sys.path
from flows.examples import routed_scale_topology, scale_topology
from flows.model import (ARP_REPLY, ARP_REQUEST, ETH_TYPE_ARP, ETH_TYPE_IPV4, Binding,
                         FloatingIpState, GatewayState, HostState, NetworkState, PortState,
                         RouterPortState, RouterState, RouteState, Topology)
from flows.pipeline import UPLINK_OFPORT
from flows.trace import DELIVERED, DROPPED, SENT_OUT_UPLINK, TO_CONTROLLER, Tracer, l4_fields
from tags import MAYBE_TAGGED, TAGGED_VLAN_VIDS  # tests/unit is on sys.path

CIDRS = ["10.0.0.0/24", "10.1.0.0/24", "10.2.0.0/24"]


@st.composite
def routed_topologies(draw):
    """1-3 hosts, 2-5 networks over 3 CIDRs (overlapping across routers), 0-2 routers each
    attaching networks with distinct CIDRs, maybe a gateway; ports reuse IPs across networks."""
    hosts = [HostState(f"h{i}", i, f"192.168.0.{i}") for i in range(1, draw(st.integers(1, 3)) + 1)]
    nets = []
    for i in range(1, draw(st.integers(2, 5)) + 1):
        cidr = draw(st.sampled_from(CIDRS))
        nets.append(NetworkState(f"n{i}", i, cidr, cidr.replace("0/24", "1")))
    routers, taken = [], set()
    for r in range(draw(st.integers(0, 2))):
        members, cidrs = [], set()
        for net in draw(st.permutations(nets)):
            if net.name not in taken and net.cidr not in cidrs and draw(st.booleans()):
                members.append(net)
                cidrs.add(net.cidr)
                taken.add(net.name)
        if not members:
            continue
        gateway = GatewayState(draw(st.sampled_from(hosts)).name, f"02:ee:00:00:00:0{r}",
                               f"203.0.113.{r + 1}", 24, "203.0.113.254",
                               "02:ee:00:00:00:fe") if draw(st.booleans()) else None
        routers.append(RouterState(
            f"r{r}", 1000 + r,
            tuple(RouterPortState(n.name, f"02:a0:00:00:0{r}:{n.key:02x}") for n in members),
            gateway=gateway))
    ports, bindings, used = [], [], set()
    next_ofport = {h.name: 1 for h in hosts}
    for key in range(1, draw(st.integers(2, 10)) + 1):
        net = draw(st.sampled_from(nets))
        mac = f"02:00:00:00:00:{draw(st.integers(1, 6)):02x}"
        ip = net.cidr.replace("0/24", str(draw(st.integers(2, 5))))
        if (net.name, mac) in used or (net.name, ip) in used:
            continue
        used |= {(net.name, mac), (net.name, ip)}
        ports.append(PortState(f"p{key}", key, net.name, mac, ip))
        host = draw(st.sampled_from(hosts)).name
        bindings.append(Binding(f"p{key}", host, next_ofport[host]))
        next_ofport[host] += 1
    return Topology.build(hosts, nets, ports, bindings, routers=routers)


def router_name_of(topo, network):
    router = topo.router_of(network)
    return router.name if router else None


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(routed_topologies(), st.data())
def test_frames_reach_only_their_network_or_their_routers_networks(topo, data):
    tracer = Tracer(topo)
    src = topo.ports[data.draw(st.sampled_from(sorted(topo.bindings)))]
    own_router = router_name_of(topo, src.network)
    macs = sorted({p.mac for p in topo.ports.values()}
                  | {rp.mac for r in topo.routers.values() for rp in r.ports})
    ips = sorted({p.ip for p in topo.ports.values()} | {"10.0.0.1", "10.1.0.1", "8.8.8.8"})
    for _ in range(4):
        dst_mac, dst_ip = data.draw(st.sampled_from(macs)), data.draw(st.sampled_from(ips))
        vlan_vid = data.draw(MAYBE_TAGGED)
        verdict = tracer.from_port(src.name, eth_dst=dst_mac, ipv4_dst=dst_ip, vlan_vid=vlan_vid,
                                   **l4_fields("tcp")).verdict
        if vlan_vid is not None:  # tagged: not switched, not routed, not out the uplink
            assert (verdict.kind, verdict.table) == (DROPPED, "CLASSIFY"), verdict
        elif verdict.kind == DELIVERED:
            dst = topo.ports[verdict.port]
            assert dst.network == src.network or (
                own_router is not None and router_name_of(topo, dst.network) == own_router), \
                (src.name, verdict)
        elif verdict.kind == SENT_OUT_UPLINK:
            assert topo.routers[own_router].gateway is not None
        else:
            assert verdict.kind == DROPPED, verdict


@PROPERTY_SETTINGS
@given(routed_topologies(), st.data())
def test_every_port_reaches_every_port_behind_its_router(topo, data):
    tracer = Tracer(topo)
    src = topo.ports[data.draw(st.sampled_from(sorted(topo.bindings)))]
    router = topo.router_of(src.network)
    if router is None:
        return
    gateway_mac = next(rp.mac for rp in router.ports if rp.network == src.network)
    for dst in topo.ports.values():
        if dst.network == src.network or topo.router_of(dst.network) is not router:
            continue
        verdict = tracer.from_port(src.name, eth_dst=gateway_mac, ipv4_dst=dst.ip).verdict
        assert (verdict.kind, verdict.port) == (DELIVERED, dst.name)
        assert verdict.packet["nw_ttl"] == 63 and verdict.packet["eth_dst"] == dst.mac


@PROPERTY_SETTINGS
@given(routed_topologies(), st.data())
def test_tagged_frames_from_the_outside_reach_no_one(topo, data):
    """On a gateway's uplink only untagged frames are taken: tagged, neither the next hop's ARP
    reply (to the controller), nor an ARP request, nor IPv4 to the external or a floating IP."""
    tracer = Tracer(topo)
    for router in topo.routers.values():
        gw = router.gateway
        if gw is None:
            continue
        arp = {"in_port": UPLINK_OFPORT, "eth_src": gw.next_hop_mac, "eth_type": ETH_TYPE_ARP,
               "arp_sha": gw.next_hop_mac, "arp_spa": gw.next_hop, "arp_tpa": gw.ip}
        frames = [
            {**arp, "eth_dst": gw.mac, "arp_op": ARP_REPLY, "arp_tha": gw.mac},
            {**arp, "eth_dst": "ff:ff:ff:ff:ff:ff", "arp_op": ARP_REQUEST,
             "arp_tha": "00:00:00:00:00:00"},
            {"in_port": UPLINK_OFPORT, "eth_src": gw.next_hop_mac, "eth_dst": gw.mac,
             "eth_type": ETH_TYPE_IPV4, "ipv4_src": "198.51.100.7", "ipv4_dst": gw.ip,
             "nw_ttl": 60, **l4_fields("tcp", 5555, 22)},
        ]
        assert tracer.trace(gw.host, frames[0]).verdict.kind == TO_CONTROLLER  # untagged
        for frame in frames:
            verdict = tracer.trace(gw.host, {**frame, "vlan_vid": data.draw(TAGGED_VLAN_VIDS)}
                                   ).verdict
            assert (verdict.kind, verdict.table) == (DROPPED, "CLASSIFY"), (frame, verdict)


# ---- incremental == full compile, with routers -----------------------------------------------

HOSTS = [HostState(f"h{i}", i, f"192.168.0.{i}") for i in range(1, 4)]
NETS = [NetworkState(f"n{i}", i, f"10.0.{i}.0/24", f"10.0.{i}.1") for i in range(1, 4)]
ROUTER_NAMES = ["ra", "rb"]

edits = st.lists(st.tuples(
    st.sampled_from([*L2_EDITS, "attach",
                     "detach", "gateway", "no_gateway", "next_hop_mac", "fip", "route",
                     "drop_router"]),
    st.integers(1, 6), st.integers(0, 2), st.integers(0, 2)), max_size=14)


def _router(topo, name):
    return topo.routers.get(name) or RouterState(name, 500 + ROUTER_NAMES.index(name), ())


def _edit_router(topo, name, **changes):
    r = _router(topo, name)
    fields = {"name": r.name, "key": r.key, "ports": r.ports, "routes": r.routes,
              "gateway": r.gateway, "floating_ips": r.floating_ips, **changes}
    return topo.replace(routers=[RouterState(**fields)])


@settings(max_examples=80, deadline=None)
@given(edits)
def test_incremental_equals_full_compile_with_routers(steps):
    topo = Topology.build(HOSTS, NETS)
    compiler = Compiler()
    compiler.update(topo)
    for kind, n, a, b in steps:
        name, router = f"p{n}", ROUTER_NAMES[a % 2]
        net = NETS[b]
        if kind in L2_EDITS:
            topo = apply_l2_edit(topo, kind, n, a, b, HOSTS, NETS)
        elif kind == "attach":  # move the network to this router
            for other in topo.routers.values():
                if other.name != router:
                    topo = _edit_router(topo, other.name, ports=tuple(
                        rp for rp in other.ports if rp.network != net.name))
            r = _router(topo, router)
            rp = RouterPortState(net.name, f"02:a0:00:00:{a % 2:02x}:{b:02x}")
            kept = tuple(p for p in r.ports if p.network != net.name)
            topo = _edit_router(topo, router, ports=(*kept, rp))
        elif kind == "detach":
            r = _router(topo, router)
            topo = _edit_router(topo, router,
                                ports=tuple(p for p in r.ports if p.network != net.name))
        elif kind == "gateway":
            topo = _edit_router(topo, router, gateway=GatewayState(
                HOSTS[b].name, "02:ee:00:00:00:01", f"203.0.113.{a % 2 + 1}", 24,
                "203.0.113.254", "02:ee:00:00:00:fe" if n % 2 else None))
        elif kind == "no_gateway":
            topo = _edit_router(topo, router, gateway=None, floating_ips=())
        elif kind == "next_hop_mac" and _router(topo, router).gateway is not None:
            gw = _router(topo, router).gateway
            topo = _edit_router(topo, router, gateway=GatewayState(
                gw.host, gw.mac, gw.ip, gw.prefixlen, gw.next_hop, f"02:ee:00:00:00:{n:02x}"))
        elif kind == "fip" and _router(topo, router).gateway is not None:
            topo = _edit_router(topo, router, floating_ips=(
                FloatingIpState(f"203.0.114.{n}", name),))
        elif kind == "route":
            topo = _edit_router(topo, router,
                                routes=(RouteState(f"10.9.{n}.0/24", f"10.0.{b + 1}.9"),))
        elif kind == "drop_router":
            topo = topo.replace(remove_routers=[router])
        update_and_check(compiler, topo)


def test_a_port_change_patches_only_its_cookie_on_routed_hosts():
    topo = routed_scale_topology(hosts=10, ports_per_host=10, routers=2, networks_per_router=2)
    compiler = Compiler()
    compiler.update(topo)
    old = topo.ports["p1"]
    changes = compiler.update(topo.replace(ports=[PortState(
        old.name, old.key, old.network, "02:ff:00:00:00:01", old.ip)]))
    assert changes and all(set(c) == {port_cookie(old)} for c in changes.values())
    assert compiler.flows == compile_all(compiler.topo)


# ---- counts and speed -----------------------------------------------------------------------

def test_flow_counts_with_routing():
    topo = routed_scale_topology(hosts=10, ports_per_host=100, routers=10, networks_per_router=10)
    compiled = compile_all(topo)
    gateway_host = topo.routers["r0"].gateway.host
    for host, host_flows in compiled.items():
        for port in topo.ports.values():
            flows = host_flows.get(port_cookie(port))
            if flows:  # every network here is routed: + NEIGHBOR
                assert len(flows) == (7 if topo.bindings[port.name].host == host else 3)
        for router in topo.routers.values():
            flows = host_flows.get(router_cookie(router))
            if flows:
                extra = 10 if host == gateway_host and router.gateway else 0
                assert len(flows) == 5 * len(router.ports) + bool(router.gateway) + extra
    # Linear in ports: a host holds 7 flows per local port, 3 per remote port of the networks
    # it needs, 5 per router port, 2 per network (tunnel, DNS), and a constant (static,
    # gateway).
    router_ports = sum(len(r.ports) for r in topo.routers.values())
    for host, host_flows in compiled.items():
        local = sum(1 for b in topo.bindings.values() if b.host == host)
        bound = 4 * local + 3 * len(topo.ports) + 5 * router_ports + 2 * len(topo.networks) + 32
        assert sum(map(len, host_flows.values())) <= bound


def _fresh_compile_seconds(topo):
    for fragment in (compiler_module.local_port_flows, compiler_module.remote_port_flows,
                     compiler_module._arp_responder, compiler_module._neighbor,
                     compiler_module.network_flows, compiler_module.router_flows):
        fragment.cache_clear()
    start = time.perf_counter()
    compiled = compile_all(topo)
    return time.perf_counter() - start, sum(len(f) for h in compiled.values() for f in h.values())


def test_compile_speed_with_routers_is_reported(capsys):
    """Not an assertion on time (machines differ): prints L2-only vs routed, 100 x 100."""
    l2 = min(_fresh_compile_seconds(scale_topology(100, 100, 50)) for _ in range(2))
    l3 = min(_fresh_compile_seconds(routed_scale_topology(100, 100, 10, 5)) for _ in range(2))
    with capsys.disabled():
        print(f"\ncompile_all 100 hosts x 100 ports: L2 {l2[0]:.2f}s ({l2[1]} flows), "
              f"routed (10 routers x 5 networks) {l3[0]:.2f}s ({l3[1]} flows), "
              f"ratio {l3[0] / l2[0]:.2f}")
