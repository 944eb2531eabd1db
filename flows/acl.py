"""NetworkPolicy -> flows: conntrack for statefulness, conjunctive matches for size.

Kubernetes semantics, with a Weft network in the role of a namespace. A port is *selected* for a
direction when a policy of that direction selects it; a selected port's new connections in that
direction pass only if a rule of one of the policies selecting it allows them (the union), and
replies of a connection that passed flow back (conntrack). Egress is judged on the sender's host,
ingress on the receiver's, so a deny on either side wins.

One rule is a conjunction of up to three clauses, each a set of flows ORed together:
  1. the selected port   (reg14 = its key on the sending side, reg15 on the receiving side)
  2. the peer            (ipv4_dst / ipv4_src in the peer's addresses or blocks; absent = any)
  3. protocol and port   (ip_proto + tcp/udp/sctp destination port, masked ranges for endPort;
                          absent = any)
so a rule costs |selected| + |peers| + |ports| flows plus one, not their product. A named port
resolves per destination port, so its flows carry that port (in clause 3). Identical clause flows
of several rules share one flow on the switch (flows.diff merges their conjunction actions).

Owners (cookies): POLICY|id for a policy's rule flows on a host, ACL|port key for a selected
port's ct and default-deny flows. The conntrack zone of a port's ACLs is its network's key, which
must therefore be below ACL_ZONE_LIMIT (the zones above are the load balancer's).
"""
from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Iterable, Mapping
from functools import lru_cache

from flows.diff import merge
from flows.model import (CT_EST, CT_INV, CT_REL, CT_TRK, ETH_TYPE_IPV4, IP_PROTO_SCTP,
                         IP_PROTO_TCP, IP_PROTO_UDP, Flow, PortState, Topology)
from flows.pipeline import (ACL_EGRESS, ACL_EGRESS_EVAL, ACL_INGRESS, ACL_INGRESS_EVAL,
                            LB_ZONE, REG_INPORT, REG_OUTPORT, STATIC_COOKIE, Category,
                            make_cookie, proceed)
from flows.policy import Peer, PolicyRule, PolicyState

ACL_ZONE_LIMIT = LB_ZONE
PRIORITY_CT_STATE = 200  # established / related / invalid, above every rule
PRIORITY_DIRECT = 110  # a rule with no peer and no port clause: its selected ports, directly
PRIORITY_RULE = 100  # conjunctive clauses and their conj_id flows (one priority, as OVS needs)
PRIORITY_PORT_DEFAULT = 10  # a selected port's new connection no rule allowed
MAX_RULES = 128  # per policy and direction: the low 7 bits of a conjunction id

IPV4 = ("eth_type", ETH_TYPE_IPV4)
PROTO = {"TCP": (IP_PROTO_TCP, "tcp_dst"), "UDP": (IP_PROTO_UDP, "udp_dst"),
         "SCTP": (IP_PROTO_SCTP, "sctp_dst")}


class Side:
    """Egress or ingress: which stage, which register names the port, which address is the peer."""

    def __init__(self, name, ct_table, eval_table, port_reg, peer_field, bit):
        self.name, self.ct_table, self.eval_table = name, ct_table, eval_table
        self.port_reg, self.peer_field, self.bit = port_reg, peer_field, bit

    def rules(self, policy: PolicyState) -> tuple[PolicyRule, ...] | None:
        return getattr(policy, self.name)


EGRESS = Side("egress", ACL_EGRESS, ACL_EGRESS_EVAL, REG_INPORT, "ipv4_dst", 0)
INGRESS = Side("ingress", ACL_INGRESS, ACL_INGRESS_EVAL, REG_OUTPORT, "ipv4_src", 1)
SIDES = (EGRESS, INGRESS)


def acl_cookie(port: PortState) -> int:
    return make_cookie(Category.ACL, port.key)


def policy_ids(keys: Iterable[str]) -> dict[str, int]:
    """A 24-bit id per policy ("network/name"), stable across restarts: a hash of the name,
    probing on a collision in name order, so an unchanged NB always gives the same ids."""
    ids: dict[str, int] = {}
    taken: set[int] = set()
    for key in sorted(keys):
        candidate = zlib.crc32(key.encode()) & 0xFFFFFF or 1
        while candidate in taken:
            candidate = candidate % 0xFFFFFF + 1
        ids[key] = candidate
        taken.add(candidate)
    return ids


def conj_id(policy_id: int, side: Side, rule: int) -> int:
    return policy_id << 8 | side.bit << 7 | rule


def describe_conj_id(conj: int, ids: Mapping[str, int]) -> str:
    """E.g. "policy blue/allow-web ingress rule 0" for a conj_id (the tracer's explanation)."""
    by_id = {v: k for k, v in ids.items()}
    name = by_id.get(conj >> 8, f"#{conj >> 8}")
    return f"policy {name} {SIDES[conj >> 7 & 1].name} rule {conj & 0x7F}"


# ---------------------------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def static_acl_flows() -> frozenset[Flow]:
    """Both ACL stages let everything pass unless a port is selected; after ct, established and
    related packets pass and invalid ones are dropped."""
    flows = set()
    for side in SIDES:
        flows.add(Flow(side.ct_table.id, 0, (), (proceed(side.ct_table),), STATIC_COOKIE))
        for bit in (CT_EST, CT_REL):
            flows.add(Flow(side.eval_table.id, PRIORITY_CT_STATE,
                           (("ct_state", (CT_TRK | bit, CT_TRK | bit | CT_INV)),),
                           (proceed(side.eval_table),), STATIC_COOKIE))
        flows.add(Flow(side.eval_table.id, PRIORITY_CT_STATE + 10,
                       (("ct_state", (CT_TRK | CT_INV, CT_TRK | CT_INV)),), (), STATIC_COOKIE))
    return frozenset(flows)


def _commit(side: Side, zone: int) -> tuple:
    return (("ct", True, zone, None, None), proceed(side.eval_table))


@lru_cache(maxsize=1 << 14)
def port_acl_flows(port: PortState, zone: int, egress: bool, ingress: bool) -> frozenset[Flow]:
    """A selected port's flows on its host: into conntrack on both sides (replies must find the
    connection whichever side started it), and what a new connection no rule allowed meets:
    dropped in a direction the port is selected for, committed in the other."""
    cookie = acl_cookie(port)
    flows = set()
    for side, selected in ((EGRESS, egress), (INGRESS, ingress)):
        this_port = ((side.port_reg, port.key), IPV4)  # (ct needs the IPv4 match: OVS refuses it otherwise)
        flows.add(Flow(side.ct_table.id, 100, this_port,
                       (("ct", False, zone, side.eval_table.name, None),), cookie))
        flows.add(Flow(side.eval_table.id, PRIORITY_PORT_DEFAULT, this_port,
                       () if selected else _commit(side, zone), cookie))
    return frozenset(flows)


def _port_ranges(low: int, high: int) -> list[tuple[int, int]]:
    """[low, high] as the fewest (value, mask) pairs of 16-bit port matches."""
    out = []
    while low <= high:
        size = low & -low or 1 << 16
        while size > high - low + 1:
            size >>= 1
        out.append((low, 0xFFFF & ~(size - 1)))
        low += size
    return out


def _blocks(cidr: str, excepts: tuple[str, ...]) -> list[ipaddress.IPv4Network]:
    """The CIDR minus its excepts, as prefixes."""
    blocks = [ipaddress.IPv4Network(cidr)]
    for text in excepts:
        hole = ipaddress.IPv4Network(text)
        next_blocks = []
        for block in blocks:
            if hole.subnet_of(block):
                next_blocks.extend(block.address_exclude(hole))
            elif not block.subnet_of(hole):
                next_blocks.append(block)
        blocks = next_blocks
    return sorted(blocks)


def _address_match(field: str, block: ipaddress.IPv4Network):
    if block.prefixlen == 32:
        return (field, str(block.network_address))
    return (field, (str(block.network_address), str(block.netmask)))


# ---------------------------------------------------------------------------------------------
# Whole topology -> ACL flows per host
# ---------------------------------------------------------------------------------------------

class _View:
    """Lookups a policy compile needs, built once per compile."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.ports_of: dict[str, list[PortState]] = {}
        for port in topo.ports.values():
            self.ports_of.setdefault(port.network, []).append(port)
        self.reachable: dict[str, set[str]] = {}  # network -> networks its packets can reach
        for router in topo.routers.values():
            legs = {rp.network for rp in router.ports}
            for net in legs:
                self.reachable[net] = legs
        self.labels = {name: dict(p.labels) for name, p in topo.ports.items()}

    def reach(self, network: str) -> set[str]:
        return self.reachable.get(network, {network})

    def selected(self, policy: PolicyState) -> list[PortState]:
        return [p for p in self.ports_of.get(policy.network, ())
                if policy.pod_selector.matches(self.labels[p.name])]

    def peer_ports(self, policy: PolicyState, peer: Peer) -> list[PortState]:
        if peer.namespace_selector is None:
            networks = [policy.network]
        else:
            networks = [n for n in sorted(self.reach(policy.network))
                        if n in self.topo.networks
                        and peer.namespace_selector.matches(dict(self.topo.networks[n].labels))]
        found = []
        for net in networks:
            for port in self.ports_of.get(net, ()):
                if peer.pod_selector is None or peer.pod_selector.matches(self.labels[port.name]):
                    found.append(port)
        return found

    def all_ports(self, network: str) -> list[PortState]:
        return [p for net in sorted(self.reach(network)) for p in self.ports_of.get(net, ())]


def _peer_matches(view: _View, policy: PolicyState, side: Side, rule: PolicyRule) -> list | None:
    """Clause 2 as matches, or None when the rule allows every peer."""
    if not rule.peers:
        return None
    matches = set()
    for peer in rule.peers:
        if peer.ip_block is not None:
            matches.update(_address_match(side.peer_field, b)
                           for b in _blocks(peer.ip_block.cidr, peer.ip_block.excepts))
        else:
            matches.update((side.peer_field, p.ip) for p in view.peer_ports(policy, peer))
    return sorted(((m, IPV4) for m in matches), key=repr)


def _port_matches(view: _View, policy: PolicyState, side: Side, rule: PolicyRule,
                  selected: list[PortState]) -> list | None:
    """Clause 3 as matches, or None when the rule allows every protocol and port. A named port
    is the destination's: on the receiving side the selected port's, on the sending side each
    peer's (every port the sender may reach, when the rule has no peer)."""
    if not rule.ports:
        return None
    matches = set()
    for pp in rule.ports:
        proto, field = PROTO[pp.protocol]
        base = (IPV4, ("ip_proto", proto))
        if pp.port is None:
            matches.add(base)
        elif isinstance(pp.port, int):
            for value, mask in _port_ranges(pp.port, pp.end_port or pp.port):
                matches.add((*base, (field, value if mask == 0xFFFF else (value, mask))))
        else:
            if side is INGRESS:
                owners = [(p, (REG_OUTPORT, p.key)) for p in selected]
            else:
                peers = ([q for peer in rule.peers if peer.ip_block is None
                          for q in view.peer_ports(policy, peer)]
                         if rule.peers else view.all_ports(policy.network))
                owners = [(q, ("ipv4_dst", q.ip)) for q in peers]
            for port, where in owners:
                for name, protocol, number in port.named_ports:
                    if name == pp.port and protocol == pp.protocol:
                        matches.add((*base, (field, number), where))
    return sorted(matches, key=repr)


def _fragment(flows: Iterable[Flow]) -> frozenset[Flow]:
    """One owner's flows, clause flows of the same match merged into one (flows.diff.merge)."""
    by_key: dict = {}
    for flow in flows:
        by_key.setdefault(flow.key, []).append(flow)
    return frozenset(merge(same) for same in by_key.values())


def policy_flows(view: _View, policy: PolicyState, selected: list[PortState], pid: int,
                 zone: int) -> dict[str, frozenset[Flow]]:
    """A policy's rule flows per host (the hosts of the `selected` ports)."""
    cookie = make_cookie(Category.POLICY, pid)
    shared: list[Flow] = []  # the same on every host
    per_port: list[tuple[PortState, Flow]] = []  # clause 1 / direct flows: on the port's host
    for side in SIDES:
        rules = side.rules(policy)
        if not rules:
            continue
        if len(rules) > MAX_RULES:
            raise ValueError(f"policy {policy.key}: more than {MAX_RULES} {side.name} rules")
        table = side.eval_table.id
        for index, rule in enumerate(rules):
            clauses = [c for c in (_peer_matches(view, policy, side, rule),
                                   _port_matches(view, policy, side, rule, selected))
                       if c is not None]
            if any(not c for c in clauses):
                continue  # a clause nothing can satisfy: the rule allows nothing
            if not clauses:
                per_port += [(p, Flow(table, PRIORITY_DIRECT, ((side.port_reg, p.key), IPV4),
                                      _commit(side, zone), cookie)) for p in selected]
                continue
            conj = conj_id(pid, side, index)
            n = len(clauses) + 1
            per_port += [(p, Flow(table, PRIORITY_RULE, ((side.port_reg, p.key),),
                                  (("conjunction", conj, 1, n),), cookie)) for p in selected]
            for clause, matches in enumerate(clauses, start=2):
                shared += [Flow(table, PRIORITY_RULE, m, (("conjunction", conj, clause, n),), cookie)
                           for m in matches]
            shared.append(Flow(table, PRIORITY_RULE, (("conj_id", conj), IPV4),
                               _commit(side, zone), cookie))
    by_host: dict[str, list[Flow]] = {}
    for port, flow in per_port:
        binding = view.topo.bindings.get(port.name)
        if binding is not None and binding.host in view.topo.hosts:
            by_host.setdefault(binding.host, []).append(flow)
    hosts = {view.topo.bindings[p.name].host for p in selected
             if p.name in view.topo.bindings and view.topo.bindings[p.name].host in view.topo.hosts}
    everywhere = _fragment(shared)  # merged once: per-port flows never share a key with these
    return {host: _fragment(by_host.get(host, ())) | everywhere for host in hosts}


def compile_acls(topo: Topology) -> dict[str, dict[int, frozenset[Flow]]]:
    """Every host's ACL flows: {host: {cookie: flows}}. Only hosts with a selected port appear
    (the static ACL flows are part of the compiler's static set)."""
    if not topo.policies:
        return {}
    view = _View(topo)
    ids = policy_ids(topo.policies)
    result: dict[str, dict[int, frozenset[Flow]]] = {}
    directions: dict[str, list[bool]] = {}  # port name -> [egress, ingress] selected
    for key, policy in sorted(topo.policies.items()):
        network = topo.networks.get(policy.network)
        if network is None or network.key >= ACL_ZONE_LIMIT:
            continue  # not in the NB yet, or refused by the API (its zone would be a LB zone)
        selected = view.selected(policy)
        for port in selected:
            flags = directions.setdefault(port.name, [False, False])
            flags[0] |= policy.egress is not None
            flags[1] |= policy.ingress is not None
        for host, flows in policy_flows(view, policy, selected, ids[key], network.key).items():
            if flows:
                result.setdefault(host, {})[make_cookie(Category.POLICY, ids[key])] = flows
    for name, (egress, ingress) in directions.items():
        port, binding = topo.ports[name], topo.bindings.get(name)
        if binding is None or binding.host not in topo.hosts:
            continue
        zone = topo.networks[port.network].key
        result.setdefault(binding.host, {})[acl_cookie(port)] = port_acl_flows(
            port, zone, egress, ingress)
    return result


