"""Kubernetes NetworkPolicy semantics on the compiled pipeline, through the tracer.

The cases follow the upstream e2e suite (test/e2e/network/netpol): each builds policies, compiles
the whole pipeline of a 3-host topology with a router, and traces a real connection (the first
packet, then its reply, with conntrack) between ports on several hosts and networks.

Topology: networks prod (ns=prod) and dev (ns=dev, team=x) on router r1, and lone (ns=lone, no
router). Ports, with labels:
    web  prod 10.1.0.2 h1  app=web      (named port http = TCP/8080)
    web2 prod 10.1.0.3 h2  app=web      (named port http = TCP/9090)
    db   prod 10.1.0.4 h2  app=db, tier=back
    cli  prod 10.1.0.5 h3  app=client
    dcli dev  10.2.0.2 h1  app=client
    dweb dev  10.2.0.3 h3  app=web
    l1   lone 10.5.0.2 h1
"""
import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from flows.compiler import compile_all
from flows.model import (Binding, HostState, NetworkState, PortState, RouterPortState,
                         RouterState, Topology)
from flows.policy import (IpBlock, Peer, PolicyPort, PolicyRule, PolicyState, Requirement,
                          Selector)
from flows.trace import (DELIVERED, SOURCE_PORT, Conntrack, Tracer, first_hop_mac, format_trace,
                         l4_fields, packet_from_port, trace_to_ip)

PORTS = [  # name, network, ip, host, labels, named ports
    ("web", "prod", "10.1.0.2", "h1", {"app": "web"}, (("http", "TCP", 8080),)),
    ("web2", "prod", "10.1.0.3", "h2", {"app": "web"}, (("http", "TCP", 9090),)),
    ("db", "prod", "10.1.0.4", "h2", {"app": "db", "tier": "back"}, ()),
    ("cli", "prod", "10.1.0.5", "h3", {"app": "client"}, ()),
    ("dcli", "dev", "10.2.0.2", "h1", {"app": "client"}, ()),
    ("dweb", "dev", "10.2.0.3", "h3", {"app": "web"}, ()),
    ("l1", "lone", "10.5.0.2", "h1", {}, ()),
]
IP = {name: ip for name, _, ip, *_ in PORTS}


def labels(mapping):
    return tuple(sorted(mapping.items()))


def topology(*policies, relabel=None):
    nets = [NetworkState("prod", 10, "10.1.0.0/24", "10.1.0.1", labels=labels({"ns": "prod"})),
            NetworkState("dev", 20, "10.2.0.0/24", "10.2.0.1",
                         labels=labels({"ns": "dev", "team": "x"})),
            NetworkState("lone", 30, "10.5.0.0/24", "10.5.0.1", labels=labels({"ns": "lone"}))]
    ports, bindings = [], []
    for key, (name, net, ip, host, lab, named) in enumerate(PORTS, 1):
        lab = (relabel or {}).get(name, lab)
        ports.append(PortState(name, key, net, f"02:00:00:00:00:{key:02x}", ip, labels=labels(lab),
                               named_ports=named))
        bindings.append(Binding(name, host, key))
    router = RouterState("r1", 1000, (RouterPortState("prod", "02:aa:00:00:00:0a"),
                                      RouterPortState("dev", "02:aa:00:00:00:14")))
    hosts = [HostState(f"h{i}", i, f"192.168.0.{i}") for i in (1, 2, 3)]
    return Topology.build(hosts, nets, ports, bindings, routers=[router], policies=policies)


def sel(**match_labels):
    return Selector(labels(match_labels))


def policy(name, selector=Selector(), ingress=None, egress=None, network="prod"):
    return PolicyState(name, network, selector, ingress, egress)


def connect(topo, src, dst, proto="tcp", dport=80, compiled=None):
    """(request delivered, reply delivered) for a new connection src -> dst (a port name or an
    address), the reply traced with the conntrack state the request left."""
    compiled = compiled or compile_all(topo)
    tracer, conntrack = Tracer(topo, compiled), Conntrack()
    dst_ip = IP.get(dst, dst)
    host, pkt = packet_from_port(topo, src, eth_dst=first_hop_mac(topo, src, dst_ip),
                                 ipv4_dst=dst_ip, **l4_fields(proto, dport=dport))
    request = tracer.trace(host, pkt, conntrack)
    if request.verdict.kind != DELIVERED:
        return False, None
    reply_fields = {k.replace("_src", "_tmp"): v for k, v in l4_fields(proto, dport=dport).items()}
    reply_fields = {k.replace("_dst", "_src").replace("_tmp", "_dst"): v
                    for k, v in reply_fields.items()}
    host, pkt = packet_from_port(topo, request.verdict.port,
                                 eth_dst=first_hop_mac(topo, request.verdict.port, IP[src]),
                                 ipv4_dst=IP[src], **reply_fields)
    if proto == "icmp":
        pkt["icmpv4_type"] = 0
    reply = tracer.trace(host, pkt, conntrack)
    return True, reply.verdict.kind == DELIVERED and reply.verdict.port == src


def allowed(topo, src, dst, proto="tcp", dport=80):
    request, reply = connect(topo, src, dst, proto, dport)
    assert reply is not False, f"{src} -> {dst}: the request passed, its reply did not"
    return request


def test_no_policy_everything_flows():
    topo = topology()
    for src, dst in (("cli", "web"), ("dcli", "db"), ("web", "dweb"), ("db", "cli")):
        assert allowed(topo, src, dst)


def test_deny_all_ingress():
    topo = topology(policy("deny", ingress=()))
    for src, dst in (("cli", "web"), ("dcli", "db"), ("web2", "web")):
        assert not allowed(topo, src, dst)
    assert allowed(topo, "web", "dweb")  # egress is not selected: out, and the reply back in
    assert allowed(topo, "dcli", "dweb")  # other networks are untouched


def test_deny_all_both_ways():
    topo = topology(policy("deny", ingress=(), egress=()))
    assert not allowed(topo, "web", "dweb")
    assert not allowed(topo, "web", "db")
    assert not allowed(topo, "dcli", "web")


def test_allow_from_pods_by_match_labels():
    topo = topology(policy("db-from-web", sel(app="db"),
                           ingress=(PolicyRule(peers=(Peer(pod_selector=sel(app="web")),)),)))
    assert allowed(topo, "web", "db") and allowed(topo, "web2", "db")
    assert not allowed(topo, "cli", "db")
    assert not allowed(topo, "dweb", "db")  # a podSelector alone means the policy's own network
    assert allowed(topo, "cli", "web")  # web is not selected


def test_allow_from_pods_by_match_expressions():
    exprs = Selector((), (Requirement("app", "In", ("web", "client")),
                          Requirement("tier", "DoesNotExist")))
    topo = topology(policy("db", sel(app="db"), ingress=(PolicyRule(peers=(Peer(exprs),)),)))
    assert allowed(topo, "web", "db") and allowed(topo, "cli", "db")
    notin = Selector((), (Requirement("app", "NotIn", ("client",)),))
    topo = topology(policy("db", sel(app="db"), ingress=(PolicyRule(peers=(Peer(notin),)),)))
    assert allowed(topo, "web", "db") and not allowed(topo, "cli", "db")


def test_allow_from_all_networks():
    topo = topology(policy("web", sel(app="web"),
                           ingress=(PolicyRule(peers=(Peer(namespace_selector=Selector()),)),)))
    assert allowed(topo, "dcli", "web") and allowed(topo, "cli", "web")
    # an empty rule (no from) also allows everything, addresses outside included
    topo = topology(policy("web", sel(app="web"), ingress=(PolicyRule(),)))
    assert allowed(topo, "dcli", "web")


def test_allow_from_networks_by_label():
    topo = topology(policy("web", sel(app="web"),
                           ingress=(PolicyRule(peers=(Peer(namespace_selector=sel(team="x")),)),)))
    assert allowed(topo, "dcli", "web") and allowed(topo, "dweb", "web")
    assert not allowed(topo, "cli", "web")  # prod has no team=x


def test_pod_and_namespace_selector_in_one_peer_is_and_in_two_peers_is_or():
    both = Peer(pod_selector=sel(app="client"), namespace_selector=sel(ns="dev"))
    topo = topology(policy("web", sel(app="web"), ingress=(PolicyRule(peers=(both,)),)))
    assert allowed(topo, "dcli", "web")
    assert not allowed(topo, "dweb", "web")  # in dev, but not app=client
    assert not allowed(topo, "cli", "web")  # app=client, but not in dev
    either = (Peer(pod_selector=sel(app="client")), Peer(namespace_selector=sel(ns="dev")))
    topo = topology(policy("web", sel(app="web"), ingress=(PolicyRule(peers=either),)))
    assert allowed(topo, "dcli", "web") and allowed(topo, "dweb", "web")
    assert allowed(topo, "cli", "web")  # app=client in prod
    assert not allowed(topo, "db", "web")


def test_port_restricted_allow():
    rule = PolicyRule(ports=(PolicyPort("TCP", 80),))
    topo = topology(policy("web", sel(app="web"), ingress=(rule,)))
    assert allowed(topo, "cli", "web", dport=80)
    assert not allowed(topo, "cli", "web", dport=81)
    assert not allowed(topo, "cli", "web", "udp", 80)
    assert not allowed(topo, "cli", "web", "icmp")


def test_named_ports_resolve_per_destination():
    rule = PolicyRule(ports=(PolicyPort("TCP", "http"),))
    topo = topology(policy("web", sel(app="web"), ingress=(rule,)))
    assert allowed(topo, "cli", "web", dport=8080) and not allowed(topo, "cli", "web", dport=9090)
    assert allowed(topo, "cli", "web2", dport=9090) and not allowed(topo, "cli", "web2", dport=8080)
    # egress to a named port: the destination's number
    out = PolicyRule(peers=(Peer(pod_selector=sel(app="web")),), ports=(PolicyPort("TCP", "http"),))
    topo = topology(policy("cli-out", sel(app="client"), egress=(out,)))
    assert allowed(topo, "cli", "web", dport=8080) and allowed(topo, "cli", "web2", dport=9090)
    assert not allowed(topo, "cli", "web", dport=9090) and not allowed(topo, "cli", "db", dport=8080)


def test_end_port_ranges():
    rule = PolicyRule(ports=(PolicyPort("TCP", 1000, 1999),))
    topo = topology(policy("web", sel(app="web"), ingress=(rule,)))
    for port, expected in ((999, False), (1000, True), (1024, True), (1500, True), (1999, True),
                           (2000, False), (65535, False)):
        assert allowed(topo, "cli", "web", dport=port) is expected, port


def test_ip_block_with_except():
    block = Peer(ip_block=IpBlock("10.2.0.0/24", ("10.2.0.3/32",)))
    topo = topology(policy("web", sel(app="web"), ingress=(PolicyRule(peers=(block,)),)))
    assert allowed(topo, "dcli", "web")  # 10.2.0.2
    assert not allowed(topo, "dweb", "web")  # 10.2.0.3: excepted
    assert not allowed(topo, "cli", "web")  # 10.1.0.5: outside the block


def test_egress_to_a_cidr():
    rule = PolicyRule(peers=(Peer(ip_block=IpBlock("10.2.0.0/24")),))
    topo = topology(policy("out", sel(app="client"), egress=(rule,)))
    assert allowed(topo, "cli", "dweb")
    assert not allowed(topo, "cli", "web")
    assert allowed(topo, "web", "cli")  # cli is selected for egress only: the reply goes back


def test_multiple_policies_add_up():
    from_web = policy("a", sel(app="db"), ingress=(PolicyRule(peers=(Peer(sel(app="web")),)),))
    from_cli = policy("b", sel(app="db"), ingress=(PolicyRule(peers=(Peer(sel(app="client")),)),))
    assert not allowed(topology(from_web), "cli", "db")
    topo = topology(from_web, from_cli)
    assert allowed(topo, "web", "db") and allowed(topo, "cli", "db")
    assert not allowed(topo, "dcli", "db")


def test_a_policy_updated_or_deleted():
    before = topology(policy("web", sel(app="web"), ingress=()))
    assert not allowed(before, "cli", "web")
    updated = before.replace(policies=[policy("web", sel(app="web"), ingress=(PolicyRule(),))])
    assert allowed(updated, "cli", "web")
    deleted = before.replace(remove_policies=["prod/web"])
    assert allowed(deleted, "cli", "web")


def test_a_label_change_adds_or_removes_access():
    pol = policy("db", sel(app="db"), ingress=(PolicyRule(peers=(Peer(sel(app="web")),)),))
    assert not allowed(topology(pol), "cli", "db")
    assert allowed(topology(pol, relabel={"cli": {"app": "web"}}), "cli", "db")  # gains access
    assert allowed(topology(pol, relabel={"db": {"app": "other"}}), "cli", "db")  # no longer selected


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_udp_or_sctp_only_rules_do_not_allow_tcp(protocol):
    rule = PolicyRule(ports=(PolicyPort(protocol, 80),))
    topo = topology(policy("web", sel(app="web"), ingress=(rule,)))
    assert allowed(topo, "cli", "web", protocol.lower(), 80)
    assert not allowed(topo, "cli", "web", "tcp", 80)


def test_egress_deny_on_the_client_wins_over_ingress_allow_on_the_server():
    topo = topology(policy("open-web", sel(app="web"), ingress=(PolicyRule(),)),
                    policy("shut", sel(app="client"), egress=()))
    assert not allowed(topo, "cli", "web")
    assert allowed(topo, "db", "web")


def test_the_tracer_names_the_policy_and_rule():
    pol = policy("db", sel(app="db"), ingress=(PolicyRule(peers=(Peer(sel(app="web")),)),))
    topo = topology(pol)
    compiled = compile_all(topo)
    tracer = Tracer(topo, compiled)
    host, pkt = packet_from_port(topo, "web", eth_dst=first_hop_mac(topo, "web", IP["db"]),
                                 ipv4_dst=IP["db"], **l4_fields("tcp", dport=5432))
    text = format_trace(tracer.trace(host, pkt), topo)
    assert "allowed by policy prod/db ingress rule 0" in text, text
    host, pkt = packet_from_port(topo, "cli", eth_dst=first_hop_mac(topo, "cli", IP["db"]),
                                 ipv4_dst=IP["db"], **l4_fields("tcp", dport=5432))
    text = format_trace(tracer.trace(host, pkt), topo)
    assert "dropped" in text and "no rule of prod/db allows" in text, text


def test_weft_trace_of_sctp_names_the_policy_and_rule_that_allows_it():
    rules = (PolicyRule(ports=(PolicyPort("TCP", 5432),)), PolicyRule(ports=(PolicyPort("SCTP", 5432),)))
    topo = topology(policy("db", sel(app="db"), ingress=rules))
    text = format_trace(trace_to_ip(topo, "web", IP["db"], proto="sctp", dport=5432), topo)
    assert "allowed by policy prod/db ingress rule 1" in text, text
    assert trace_to_ip(topo, "web", IP["db"], proto="sctp", dport=5433).verdict.kind != DELIVERED


def test_flows_grow_with_the_sum_not_the_product():
    """Rules x peers x selected ports: doubling one of them adds, never multiplies."""
    def acl_flows(n_selected, n_peers, n_ports):
        nets = [NetworkState("n", 10, "10.0.0.0/16", "10.0.0.1")]
        ports, bindings = [], []
        for i in range(n_selected + n_peers):
            role = "sel" if i < n_selected else "peer"
            ports.append(PortState(f"p{i}", i + 1, "n", f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",
                                   str(ipaddress.IPv4Address("10.0.1.0") + i),
                                   labels=labels({"role": role})))
            bindings.append(Binding(f"p{i}", "h1", i + 1))
        rule = PolicyRule(peers=(Peer(sel(role="peer")),),
                          ports=tuple(PolicyPort("TCP", 1000 + j) for j in range(n_ports)))
        pol = PolicyState("p", "n", sel(role="sel"), (rule,), None)
        topo = Topology.build([HostState("h1", 1, "192.168.0.1")], nets, ports, bindings,
                              policies=[pol])
        return sum(len(f) for c, f in compile_all(topo)["h1"].items() if c >> 40 in (6, 7))
    base = acl_flows(10, 10, 10)
    # a selected port: its clause flow, and per side a ct flow and its default (deny or commit)
    assert acl_flows(20, 10, 10) - base == 10 * 5
    assert acl_flows(10, 20, 10) - base == 10  # a peer: one clause flow
    assert acl_flows(10, 10, 20) - base == 10  # a port number: one clause flow
    assert acl_flows(100, 100, 100) < 1000  # not 10^6


# --- property: once a port is selected, nothing reaches it that no policy allows ----------------

NETWORK_LABELS = {"prod": {"ns": "prod"}, "dev": {"ns": "dev", "team": "x"}}
ROUTED = [p for p in PORTS if p[1] in NETWORK_LABELS]  # lone has no router: it reaches nobody
L4 = [("tcp", 80), ("tcp", 8080), ("udp", 53), ("sctp", 80), ("icmp", None)]
POLICY_PORTS = [PolicyPort("TCP", 80), PolicyPort("TCP", 8000, 8100), PolicyPort("UDP", 53),
                PolicyPort("SCTP")]


def policies_about(src, dst):
    """Policies of one of the two networks whose selectors and peers are mostly about src and dst
    (their apps, networks and addresses), so that most draws decide their connection."""
    apps = st.sampled_from([src[4]["app"], dst[4]["app"], "other"])
    selectors = st.one_of(st.just(Selector()), apps.map(lambda app: sel(app=app)))
    namespaces = st.sampled_from([{}, {"ns": "dev"}, {"team": "x"}, {"ns": "prod"}])
    cidrs = st.sampled_from([(f"{src[2]}/32", ()), ("10.0.0.0/8", (f"{src[2]}/32",)),
                             ("10.0.0.0/8", (f"{dst[2]}/32",)), ("10.2.0.0/16", ("10.2.0.2/31",))])
    ip_blocks = cidrs.map(lambda c: Peer(ip_block=IpBlock(*c)))
    peers = st.one_of(
        selectors.map(lambda s: Peer(s)),
        namespaces.map(lambda labels_: Peer(namespace_selector=sel(**labels_))),
        st.tuples(namespaces, selectors).map(lambda t: Peer(pod_selector=t[1], namespace_selector=sel(**t[0]))),
        ip_blocks, ip_blocks)
    rules = st.builds(PolicyRule, st.one_of(st.just(()), peers.map(lambda p: (p,)),
                                            st.lists(peers, min_size=2, max_size=2).map(tuple)),
                      st.one_of(st.just(()), st.lists(st.sampled_from(POLICY_PORTS), min_size=1, max_size=2,
                                                      unique=True).map(tuple)))
    directions = st.one_of(st.none(), st.just(()), st.lists(rules, min_size=1, max_size=2).map(tuple))
    return st.lists(st.builds(
        lambda i, net, selector, ingress, egress: policy(
            f"p{i}", selector, ingress, egress if ingress is not None or egress is not None else (), net),
        st.integers(0, 9), st.sampled_from([src[1], dst[1]]), selectors, directions, directions),
        min_size=1, max_size=2, unique_by=lambda p: (p.network, p.name))


def _peer_matches(peer, pol, port):
    _, network, ip, _, port_labels, _ = port
    if peer.ip_block:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(peer.ip_block.cidr) and not any(
            ipaddress.ip_address(ip) in ipaddress.ip_network(e) for e in peer.ip_block.excepts)
    if peer.namespace_selector is None and network != pol.network:
        return False  # a podSelector alone: the policy's own network
    if peer.namespace_selector and not peer.namespace_selector.matches(NETWORK_LABELS[network]):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(port_labels)


def _port_matches(policy_port, proto, dport):
    if proto != policy_port.protocol.lower():
        return False
    low = policy_port.port
    return low is None or low <= dport <= (policy_port.end_port or low)


def _judged(pols, side, port, peer, proto, dport):
    """Kubernetes' answer for one side: not selected, or a rule of a policy selecting it allows."""
    selecting = [p for p in pols if getattr(p, side) is not None and p.network == port[1]
                 and p.pod_selector.matches(port[4])]
    return not selecting or any(
        (not r.peers or any(_peer_matches(x, p, peer) for x in r.peers))
        and (not r.ports or any(_port_matches(pp, proto, dport) for pp in r.ports))
        for p in selecting for r in getattr(p, side))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ROUTED), st.sampled_from(ROUTED), st.sampled_from(L4), st.data())
def test_nothing_is_delivered_that_no_policy_allows(src, dst, l4, data):
    """Random policies (one or two; ingress, egress or both; pod, namespace, pod-and-namespace and
    ipBlock peers; port ranges and protocols) against an oracle written from Kubernetes' rules:
    egress judged for the sender, ingress for the receiver, each the union of its policies."""
    if src == dst:
        return
    pols = data.draw(policies_about(src, dst))
    proto, dport = l4
    delivered = allowed(topology(*pols), src[0], dst[0], proto, dport or 80)
    expected = _judged(pols, "egress", src, dst, proto, dport) and _judged(pols, "ingress", dst, src, proto,
                                                                           dport)
    assert delivered == expected, (pols, src[0], dst[0], l4)


def test_incremental_updates_equal_a_fresh_compile():
    from flows.compiler import Compiler
    compiler = Compiler()
    pol = policy("db", sel(app="db"), ingress=(PolicyRule(peers=(Peer(sel(app="web")),)),))
    steps = [topology()]
    steps.append(steps[-1].replace(policies=[pol]))
    steps.append(steps[-1].replace(ports=[PortState("cli", 4, "prod", "02:00:00:00:00:04",
                                                    "10.1.0.5", labels=labels({"app": "web"}))]))
    steps.append(steps[-1].replace(remove_ports=["web2"]))
    steps.append(steps[-1].replace(policies=[policy("db", sel(app="db"), egress=())]))
    steps.append(steps[-1].replace(remove_policies=["prod/db"]))
    for topo in steps:
        compiler.update(topo)
        fresh = compile_all(topo)
        assert {h: {c: f for c, f in flows.items() if f} for h, flows in compiler.flows.items()} \
            == fresh
