"""Services on the compiled pipeline, through the tracer: select groups, ct(nat), replies,
affinity, hairpin, no backends, backends going away, and policies after DNAT."""
from collections import Counter

from flows.compiler import compile_all
from flows.model import Group
from flows.policy import Peer, PolicyRule, PolicyState, Selector, ServicePort, ServiceState
from flows.services import group_id
from flows.trace import DELIVERED, TO_CONTROLLER, Conntrack, Tracer, first_hop_mac, packet_from_port

from test_policy_conformance import IP, labels, sel, topology

VIP = "10.96.0.10"


def service(selector=(("app", "web"),), ports=(ServicePort("http", "TCP", 80, 8080),),
            affinity=False, name="web"):
    return ServiceState(name, "prod", 7, selector, ports, VIP, session_affinity=affinity)


def with_services(*services, policies=(), relabel=None):
    return topology(*policies, relabel=relabel).replace(services=services)


def request(topo, src, dport=80, sport=40000, compiled=None, conntrack=None, proto="tcp"):
    compiled = compiled or compile_all(topo)
    conntrack = conntrack if conntrack is not None else Conntrack()
    fields = {"tcp": {"ip_proto": 6, "tcp_src": sport, "tcp_dst": dport},
              "udp": {"ip_proto": 17, "udp_src": sport, "udp_dst": dport}}[proto]
    host, pkt = packet_from_port(topo, src, eth_dst=first_hop_mac(topo, src, VIP), ipv4_dst=VIP,
                                 **fields)
    return Tracer(topo, compiled).trace(host, pkt, conntrack), conntrack


def reply_to(topo, trace, compiled, conntrack):
    """The backend answers the packet it got, as its IP stack would."""
    v = trace.verdict
    pkt = v.packet
    host, back = packet_from_port(topo, v.port, eth_dst=first_hop_mac(topo, v.port, pkt["ipv4_src"]),
                                  ipv4_dst=pkt["ipv4_src"], ip_proto=6, tcp_src=pkt["tcp_dst"],
                                  tcp_dst=pkt["tcp_src"])
    return Tracer(topo, compiled).trace(host, back, conntrack)


def test_a_connection_reaches_a_backend_on_its_target_port_and_the_reply_comes_from_the_vip():
    topo = with_services(service())
    compiled = compile_all(topo)
    trace, ct = request(topo, "cli", compiled=compiled)
    v = trace.verdict
    assert v.kind == DELIVERED and v.port in ("web", "web2")
    assert v.packet["ipv4_dst"] == IP[v.port] and v.packet["tcp_dst"] == 8080
    back = reply_to(topo, trace, compiled, ct)
    assert (back.verdict.kind, back.verdict.port) == (DELIVERED, "cli")
    assert (back.verdict.packet["ipv4_src"], back.verdict.packet["tcp_src"]) == (VIP, 80)


def test_named_target_ports_resolve_per_backend():
    topo = with_services(service(ports=(ServicePort("http", "TCP", 80, "http"),)))
    seen = {}
    for sport in range(40000, 40040):
        v = request(topo, "cli", sport=sport)[0].verdict
        seen[v.port] = v.packet["tcp_dst"]
    assert seen == {"web": 8080, "web2": 9090}


def test_new_connections_spread_over_every_backend_on_every_host():
    three = service(selector=(("tier", "x"),), ports=(ServicePort("", "TCP", 80, 80),))
    topo = with_services(three, relabel={"web": {"tier": "x"}, "db": {"tier": "x"},
                                         "cli": {"tier": "x"}})
    [group] = [e for e in compile_all(topo)["h1"][8 << 40 | 7] if isinstance(e, Group)]
    assert len(group.buckets) == 3
    hits = Counter(request(topo, "dcli", sport=s)[0].verdict.port for s in range(40000, 40090))
    assert set(hits) == {"web", "db", "cli"}  # h1, h2, h3; dcli is on another network


def test_clients_on_another_network_of_the_router_are_routed_to_the_backend():
    topo = with_services(service())
    trace, _ = request(topo, "dcli")
    v = trace.verdict
    assert v.kind == DELIVERED and v.port in ("web", "web2")
    assert v.packet["eth_src"] == "02:aa:00:00:00:0a"  # the router's leg in prod
    assert v.packet["nw_ttl"] == 63


def test_session_affinity_keeps_a_client_on_one_backend():
    topo = with_services(service(affinity=True))
    ports = {request(topo, "cli", sport=s)[0].verdict.port for s in range(40000, 40030)}
    assert len(ports) == 1
    others = {request(topo, src)[0].verdict.port for src in ("cli", "dcli", "db", "dweb")}
    assert others <= {"web", "web2"}


def test_hairpin_a_backend_reaches_its_own_service():
    only_web = service(selector=(("app", "web"), ("hair", "pin")))
    topo = with_services(only_web, relabel={"web": {"app": "web", "hair": "pin"}})
    compiled = compile_all(topo)
    trace, ct = request(topo, "web", compiled=compiled)
    v = trace.verdict
    assert (v.kind, v.port) == (DELIVERED, "web"), trace
    assert v.packet["ipv4_src"] == VIP and v.packet["ipv4_dst"] == IP["web"]  # SNATed to the VIP
    back = reply_to(topo, trace, compiled, ct)
    assert (back.verdict.kind, back.verdict.port) == (DELIVERED, "web"), back
    assert (back.verdict.packet["ipv4_src"], back.verdict.packet["tcp_src"]) == (VIP, 80)
    assert back.verdict.packet["ipv4_dst"] == IP["web"]


def test_a_service_without_backends_hands_the_connection_to_the_controller_to_reject():
    topo = with_services(service(selector=(("app", "nobody"),)))
    trace, _ = request(topo, "cli")
    assert trace.verdict.kind == TO_CONTROLLER
    assert any(a == ("meter", 2) for s in trace.steps for a in s.flow.actions)


def test_a_backend_that_goes_away_gets_no_new_connections():
    topo = with_services(service())
    gone = topo.replace(remove_ports=["web2"])
    hits = {request(gone, "cli", sport=s)[0].verdict.port for s in range(40000, 40030)}
    assert hits == {"web"}
    groups = [e for e in compile_all(gone)["h3"].get(8 << 40 | 7, ()) if isinstance(e, Group)]
    assert [len(g.buckets) for g in groups] == [1] and groups[0].group_id == group_id(service(), 0)


def test_an_established_connection_keeps_its_backend():
    topo = with_services(service())
    compiled = compile_all(topo)
    first, ct = request(topo, "cli", compiled=compiled)
    reply_to(topo, first, compiled, ct)
    again, _ = request(topo, "cli", compiled=compiled, conntrack=ct)
    assert again.verdict.port == first.verdict.port


def test_egress_policy_is_judged_on_the_backend_not_the_vip():
    deny_db = PolicyState("cli-out", "prod", sel(app="client"), None,
                          (PolicyRule(peers=(Peer(Selector(labels({"app": "web"}))),)),))
    topo = with_services(service(), policies=(deny_db,))
    assert request(topo, "cli")[0].verdict.kind == DELIVERED  # the VIP is not a peer, web is
    to_db = with_services(service(selector=(("app", "db"),), ports=(ServicePort("", "TCP", 80, 5432),)),
                          policies=(deny_db,))
    assert request(to_db, "cli")[0].verdict.kind != DELIVERED


def test_udp_services():
    dns = service(ports=(ServicePort("dns", "UDP", 53, 5353),))
    topo = with_services(dns)
    v = request(topo, "cli", dport=53, proto="udp")[0].verdict
    assert v.kind == DELIVERED and v.packet["udp_dst"] == 5353


def test_a_load_balancer_service_answers_from_outside_and_replies_leave_as_its_address():
    from dataclasses import replace
    from flows.model import GatewayState
    from flows.pipeline import UPLINK_OFPORT
    from flows.trace import SENT_OUT_UPLINK
    lb = replace(service(), load_balancer_ip="203.0.113.50")
    base = with_services(lb)
    gateway = GatewayState("h3", "02:ee:00:00:00:01", "203.0.113.10", 24, "203.0.113.1",
                           "02:ee:00:00:00:fe")
    topo = base.replace(routers=[replace(base.routers["r1"], gateway=gateway)])
    compiled = compile_all(topo)
    tracer, ct = Tracer(topo, compiled), Conntrack()
    outside = {"in_port": UPLINK_OFPORT, "eth_src": "02:ee:00:00:00:fe",
               "eth_dst": "02:ee:00:00:00:01", "eth_type": 0x0800, "ipv4_src": "198.51.100.7",
               "ipv4_dst": "203.0.113.50", "nw_ttl": 64, "ip_proto": 6, "tcp_src": 50000,
               "tcp_dst": 80}
    arp = tracer.trace("h3", {"in_port": UPLINK_OFPORT, "eth_src": "02:ee:00:00:00:fe",
                              "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0806, "arp_op": 1,
                              "arp_spa": "203.0.113.1", "arp_tpa": "203.0.113.50",
                              "arp_sha": "02:ee:00:00:00:fe", "arp_tha": "00:00:00:00:00:00"})
    assert arp.verdict.packet["arp_sha"] == "02:ee:00:00:00:01"
    inbound = tracer.trace("h3", outside, ct)
    v = inbound.verdict
    assert v.kind == DELIVERED and v.port in ("web", "web2"), inbound
    assert (v.packet["ipv4_dst"], v.packet["tcp_dst"]) == (IP[v.port], 8080)
    back = reply_to(topo, inbound, compiled, ct)
    assert back.verdict.kind == SENT_OUT_UPLINK, back
    assert (back.verdict.packet["ipv4_src"], back.verdict.packet["tcp_src"]) == ("203.0.113.50", 80)
    assert back.verdict.packet["ipv4_dst"] == "198.51.100.7"


def test_every_goto_goes_forward_as_openflow_requires():
    """A goto-table to an earlier table is refused (OFPBIC_BAD_TABLE_ID); ct recirculation may."""
    from dataclasses import replace
    from flows.model import Flow, GatewayState
    from flows.pipeline import TABLE_BY_NAME
    base = with_services(replace(service(), load_balancer_ip="203.0.113.50"),
                         service(name="aff", affinity=True))
    gateway = GatewayState("h3", "02:ee:00:00:00:01", "203.0.113.10", 24, "203.0.113.1",
                           "02:ee:00:00:00:fe")
    topo = base.replace(routers=[replace(base.routers["r1"], gateway=gateway)])
    for host in compile_all(topo).values():
        for entries in host.values():
            for flow in entries:
                if isinstance(flow, Flow) and flow.actions and flow.actions[-1][0] == "goto":
                    assert TABLE_BY_NAME[flow.actions[-1][1]].id > flow.table, flow


def test_every_ct_flow_matches_ipv4_as_ovs_requires():
    """OVS refuses ct() in a flow whose match does not pin eth_type (OFPBAC_MATCH_INCONSISTENT)."""
    from flows.model import Flow
    from flows.policy import PolicyRule
    from test_policy_conformance import policy
    topo = with_services(service(), service(name="aff", affinity=True),
                         policies=(policy("in", sel(app="db"), ingress=(PolicyRule(),)),
                                   policy("out", sel(app="web"), egress=(PolicyRule(
                                       peers=(Peer(sel(app="db")),)),))))
    for host in compile_all(topo).values():
        for entries in host.values():
            for flow in entries:
                if isinstance(flow, Flow) and any(a[0] == "ct" for a in flow.actions):
                    assert ("eth_type", 0x0800) in flow.match, flow
