"""Offline packet tracer over compiled flows, following OpenFlow 1.3 / OVS semantics.

Each host starts the packet with metadata, registers and ct_state at 0, as a switch does. In
each table the highest-priority matching flow wins (masked matches supported; a field the
packet does not have never matches). Its actions run in order; "goto" continues in another
table; with no goto the packet leaves the pipeline through the collected output.
Output to TUNNEL_OFPORT hops to the host whose encap_ip is tun_ipv4_dst, arriving with
in_port=TUNNEL_OFPORT, the same tunnel_id, and metadata/registers/ct state zeroed like on a real
switch. Output to UPLINK_OFPORT leaves for the outside ("sent-out-uplink"); a packet from the
outside is traced by starting it on the gateway host with in_port=UPLINK_OFPORT.

ct is modelled by `Conntrack`: per (host, zone), the committed connections, keyed by
(ipv4_src, ipv4_dst, ip_proto, source port, destination port), ICMP using its id
("icmpv4_id", a tracer-only packet field) for both ports. A lookup finds a packet in the
original or the reply direction: +trk+new if unknown or not yet answered, +trk+est (+rpl for
the reply direction) once a reply was seen. commit stores the connection with its snat/dnat
translation; ("nat",) applies an existing translation (reversed for replies). ct with a table
recirculates there with ct_state set; without one it only commits. Pass one Conntrack to
several traces so a reply sees the connection its request made.

Packets are dicts of vocabulary fields (see flows.model). A packet without vlan_vid is untagged:
the switch sees OFPVID_NONE (and so does a match); vlan_vid = OFPVID_PRESENT | VID makes it
tagged. Only one output per trace is supported: the compiler never emits more.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flows.acl import describe_conj_id, policy_ids
from flows.compiler import compile_all
from flows.model import (ARP_REQUEST, CT_EST, CT_INV, CT_NEW, CT_RPL, CT_TRK, ETH_TYPE_ARP,
                         ETH_TYPE_IPV4, FIELD_BITS, ICMP_ECHO_REQUEST, IP_PROTO_ICMP,
                         IP_PROTO_SCTP, IP_PROTO_TCP, IP_PROTO_UDP, OFPVID_NONE, Flow, Group, Topology,
                         int_to_value, value_to_int)
from flows.ofctl import to_ofctl
from flows.pipeline import (ACL_EGRESS_EVAL, ACL_INGRESS_EVAL, CLASSIFY, OFPP_IN_PORT,
                            REG_NEXT_HOP, TABLE_BY_ID, TUNNEL_OFPORT, UPLINK_OFPORT, Category,
                            parse_cookie)
from flows.vocab import ACTIONS, Execution, format_ct_state

DELIVERED = "delivered"
DROPPED = "dropped"
TO_CONTROLLER = "to-controller"
SENT_OUT_UPLINK = "sent-out-uplink"
TUNNELLED_TO_UNKNOWN = "tunnelled-to-unknown"
LOOP = "loop"  # more hops than max_hops

Compiled = Mapping[str, Mapping[int, frozenset[Flow]]]


@dataclass(frozen=True)
class Step:
    host: str
    table: str
    flow: Flow
    category: str
    key: int
    changes: tuple[tuple[str, Any], ...] = ()  # fields the flow rewrote, with their new values
    note: str = ""  # what ct did, where the tunnel went


@dataclass(frozen=True)
class Verdict:
    kind: str
    host: str
    port: str | None = None  # delivered: the port name
    table: str | None = None  # dropped: where
    reason: str = ""
    packet: Mapping[str, Any] | None = None  # the packet as it left (vocabulary values)

    def __str__(self) -> str:
        if self.kind == DELIVERED:
            return f"delivered to port {self.port} on host {self.host}"
        if self.kind == DROPPED:
            return f"dropped on host {self.host} in table {self.table}" + (
                f" ({self.reason})" if self.reason else "")
        return f"{self.kind} on host {self.host}" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class Trace:
    steps: tuple[Step, ...]
    verdict: Verdict

    def __str__(self) -> str:
        lines = [f"{s.host} {s.table}: cookie {s.category}/{s.key}" for s in self.steps]
        return "\n".join([*lines, str(self.verdict)])


# --------------------------------------------------------------------------------------------
# Conntrack
# --------------------------------------------------------------------------------------------

ConnTuple = tuple[int, int, int, int, int]  # ipv4_src, ipv4_dst, ip_proto, sport, dport
_PORT_FIELDS = {IP_PROTO_TCP: ("tcp_src", "tcp_dst"), IP_PROTO_UDP: ("udp_src", "udp_dst"),
                IP_PROTO_SCTP: ("sctp_src", "sctp_dst"),
                IP_PROTO_ICMP: ("icmpv4_id", "icmpv4_id")}


@dataclass
class _Connection:
    original: ConnTuple  # as the first packet arrived
    translated: ConnTuple  # the same after NAT
    replied: bool = False


def _reverse(t: ConnTuple) -> ConnTuple:
    return (t[1], t[0], t[2], t[4], t[3])


def _conn_tuple(pkt: Mapping[str, int]) -> ConnTuple | None:
    if pkt.get("eth_type") != ETH_TYPE_IPV4:
        return None
    proto = pkt.get("ip_proto", 0)
    sport, dport = _PORT_FIELDS.get(proto, (None, None))
    return (pkt.get("ipv4_src", 0), pkt.get("ipv4_dst", 0), proto, pkt.get(sport, 0),
            pkt.get(dport, 0))


@dataclass
class Conntrack:
    """Committed connections per (host, zone); see the module docstring."""
    _entries: dict[tuple[str, int, ConnTuple], tuple[_Connection, bool]] = field(
        default_factory=dict)  # -> (connection, is the reply direction)

    def __len__(self) -> int:
        return len({id(conn) for conn, _ in self._entries.values()})

    def execute(self, host: str, pkt: dict[str, int], commit: bool, zone: int,
                nat: tuple | None) -> tuple[int, str]:
        """Run one ct() on `pkt` (rewritten in place by NAT); return (ct_state, description)."""
        key = _conn_tuple(pkt)
        if key is None:
            return CT_TRK | CT_INV, "not IPv4"
        found = self._entries.get((host, zone, key))
        if found is None:
            conn = _Connection(key, _nat_tuple(key, nat))
            if commit:
                self._entries[(host, zone, conn.original)] = (conn, False)
                self._entries[(host, zone, _reverse(conn.translated))] = (conn, True)
            is_reply = False
        else:
            conn, is_reply = found
            conn.replied |= is_reply
        if conn.replied:
            state = CT_TRK | CT_EST | (CT_RPL if is_reply else 0)
        else:
            state = CT_TRK | CT_NEW
        if nat is not None:
            if is_reply:  # back to what the other side first sent to: the original, reversed
                src, dst, sport, dport = (conn.original[1], conn.original[0], conn.original[4],
                                          conn.original[3])
            else:
                src, dst, _, sport, dport = conn.translated
            pkt["ipv4_src"], pkt["ipv4_dst"] = src, dst
            fields = _PORT_FIELDS.get(key[2])
            if fields and fields[0] != fields[1]:  # ICMP keeps its id
                pkt[fields[0]], pkt[fields[1]] = sport, dport
        return state, ("committed" if commit and found is None else "")


def _nat_tuple(key: ConnTuple, nat: tuple | None) -> ConnTuple:
    if nat is None or nat[0] == "nat":
        return key
    ip = value_to_int("ipv4_src", nat[1])
    if nat[0] == "snat":
        return (ip, *key[1:])
    port = nat[2] if len(nat) > 2 else key[4]
    return (key[0], ip, key[2], key[3], port)


# --------------------------------------------------------------------------------------------
# Tracer
# --------------------------------------------------------------------------------------------

_PIPELINE_STATE_ZERO = {"metadata": 0, "ct_state": 0, "ct_zone": 0,
                        **{f"reg{i}": 0 for i in range(16)}}
_PIPELINE_ONLY = frozenset({*_PIPELINE_STATE_ZERO, "tunnel_id", "tun_ipv4_dst", "in_port"})


def _to_ints(packet: Mapping[str, Any]) -> dict[str, int]:
    return {f: value_to_int(f, v) for f, v in packet.items()}


def _to_values(packet: Mapping[str, int]) -> dict[str, Any]:
    """Vocabulary values; an untagged packet is shown without vlan_vid, as it was given."""
    return {f: int_to_value(f, v) for f, v in sorted(packet.items())
            if (f, v) != ("vlan_vid", OFPVID_NONE)}


def _strip(pkt: dict[str, int]) -> dict[str, int]:
    """Drop pipeline-only state (metadata, registers, ct and tunnel fields) from a packet."""
    return {f: v for f, v in pkt.items() if f not in _PIPELINE_ONLY}


def _matches(match: tuple[tuple[str, int, int], ...], pkt: Mapping[str, int]) -> bool:
    return all(f in pkt and pkt[f] & mask == value for f, value, mask in match)


def _compile_match(flow: Flow) -> tuple[tuple[str, int, int], ...]:
    """(field, value, mask) with ints, so matching is just integer compares."""
    result = []
    for f, v in flow.match:
        value, mask = v if isinstance(v, tuple) else (v, (1 << FIELD_BITS[f]) - 1)
        mask = value_to_int(f, mask)
        result.append((f, value_to_int(f, value) & mask, mask))
    return tuple(result)


class Tracer:
    def __init__(self, topo: Topology, compiled: Compiled | None = None,
                 max_hops: int = 8) -> None:
        self.topo = topo
        self.max_hops = max_hops
        compiled = compile_all(topo) if compiled is None else compiled
        # host -> table id -> [(match, flow)] highest priority first
        self._tables: dict[str, dict[int, list]] = {}
        self._groups: dict[str, dict[int, Group]] = {}
        for host, by_cookie in compiled.items():
            tables: dict[int, list] = {}
            for entries in by_cookie.values():
                for entry in entries:
                    if isinstance(entry, Group):
                        self._groups.setdefault(host, {})[entry.group_id] = entry
                    elif isinstance(entry, Flow):
                        tables.setdefault(entry.table, []).append((_compile_match(entry), entry))
            for entries in tables.values():
                entries.sort(key=lambda e: e[1].sort_key())
            self._tables[host] = tables
        self._port_at = {(b.host, b.ofport): b.port for b in topo.bindings.values()}
        self._policy_ids = policy_ids(topo.policies)
        self._host_by_ip = {h.encap_ip: h.name for h in topo.hosts.values()}

    def _lookup(self, host: str, table: int, pkt: dict[str, int]) -> Flow | None:
        """The highest-priority flow that matches, OVS's conjunctive matches included: at each
        priority, conjunction(id, k/n) flows that match mark clause k of id; an id with all n
        clauses marked lets the packet match flows on conj_id=id at that priority."""
        entries = self._tables.get(host, {}).get(table, ())
        index = 0
        while index < len(entries):
            priority = entries[index][1].priority
            level = []
            while index < len(entries) and entries[index][1].priority == priority:
                level.append(entries[index])
                index += 1
            clauses: dict[int, set[int]] = {}
            needed: dict[int, int] = {}
            for match, flow in level:
                if flow.actions and flow.actions[0][0] == "conjunction" and _matches(match, pkt):
                    for _, conj_id, clause, n_clauses in flow.actions:
                        clauses.setdefault(conj_id, set()).add(clause)
                        needed[conj_id] = n_clauses
            complete = {c for c, seen in clauses.items() if len(seen) == needed[c]}
            for match, flow in level:
                if flow.actions and flow.actions[0][0] == "conjunction":
                    continue
                conj = next((v for f, v, _ in match if f == "conj_id"), None)
                if conj is not None:
                    if conj in complete and _matches(match, {**pkt, "conj_id": conj}):
                        return flow
                elif _matches(match, pkt):
                    return flow
        return None

    def trace(self, host: str, packet: Mapping[str, Any],
              conntrack: Conntrack | None = None) -> Trace:
        conntrack = Conntrack() if conntrack is None else conntrack
        pkt = {"vlan_vid": OFPVID_NONE, **_to_ints(packet)}
        steps: list[Step] = []

        def end(kind: str, **verdict: Any) -> Trace:
            left = verdict.pop("packet", pkt)
            return Trace(tuple(steps), Verdict(kind, host, packet=_to_values(left), **verdict))

        for _ in range(self.max_hops):
            pkt = {**_PIPELINE_STATE_ZERO, **pkt}  # a switch starts with metadata, regs at 0
            table = CLASSIFY.id
            while True:  # through the tables of one host (goto and recirculation)
                table_name = TABLE_BY_ID[table].name if table in TABLE_BY_ID else str(table)
                flow = self._lookup(host, table, pkt)
                if flow is None:
                    return end(DROPPED, table=table_name, reason=self._miss(host, table, pkt))
                before = dict(pkt)
                kind, arg, note = self._apply(flow, host, pkt, conntrack)
                next_host = None
                if kind == "output" and (pkt["in_port"] if arg == OFPP_IN_PORT else arg) == TUNNEL_OFPORT:
                    remote_ip = int_to_value("tun_ipv4_dst", pkt.get("tun_ipv4_dst", 0))
                    next_host = self._host_by_ip.get(remote_ip)
                    note = f"tunnel to {next_host or remote_ip}, tun_id={pkt.get('tunnel_id', 0)}"
                acl = self._acl_note(flow)
                if acl:
                    note = "; ".join(filter(None, (note, acl)))
                    arg = acl if kind == "drop" else arg
                _, category, key = parse_cookie(flow.cookie)
                changes = tuple((f, int_to_value(f, v)) for f, v in sorted(pkt.items())
                                if before.get(f) != v)
                steps.append(Step(host, table_name, flow, _category_name(category), key,
                                  changes, note))
                if kind == "goto":
                    table = arg
                    continue
                if kind == "controller":
                    return end(TO_CONTROLLER)
                if kind == "drop":
                    return end(DROPPED, table=table_name, reason=arg)
                break

            if arg == pkt.get("in_port") and arg != OFPP_IN_PORT:  # as OpenFlow switches do
                return end(DROPPED, table=table_name,
                           reason=f"output to its own in_port {arg} (only IN_PORT may send it back)")
            output = pkt["in_port"] if arg == OFPP_IN_PORT else arg
            if output == UPLINK_OFPORT:
                return end(SENT_OUT_UPLINK, packet=_strip(pkt))
            if output != TUNNEL_OFPORT:
                port = self._port_at.get((host, output))
                if port is None:
                    return end(DROPPED, table=table_name,
                               reason=f"output to unbound ofport {output}")
                return end(DELIVERED, port=port, packet=_strip(pkt))
            if next_host is None:
                remote_ip = int_to_value("tun_ipv4_dst", pkt["tun_ipv4_dst"])
                return end(TUNNELLED_TO_UNKNOWN, reason=f"no host has encap_ip {remote_ip}")
            # What the receiving switch sees: the frame, its VNI and our tunnel port.
            pkt = {**_strip(pkt), "in_port": TUNNEL_OFPORT, "tunnel_id": pkt.get("tunnel_id", 0),
                   "tun_ipv4_dst": pkt["tun_ipv4_dst"]}
            host = next_host
        return Trace(tuple(steps), Verdict(LOOP, host, reason=f"more than {self.max_hops} hops"))

    def _acl_note(self, flow: Flow) -> str:
        """Which policy and rule let a connection through, or which policies dropped it."""
        _, category, key = parse_cookie(flow.cookie)
        if category not in (Category.POLICY, Category.ACL):
            return ""
        conj = dict(flow.match).get("conj_id")
        if conj is not None:
            return f"allowed by {describe_conj_id(conj, self._policy_ids)}"
        if category == Category.POLICY:
            name = next((k for k, v in self._policy_ids.items() if v == key), f"#{key}")
            return f"allowed by policy {name} (a rule with no peer and no port: everything)"
        if flow.actions or flow.table not in (ACL_EGRESS_EVAL.id, ACL_INGRESS_EVAL.id):
            return ""
        side = "egress" if flow.table == ACL_EGRESS_EVAL.id else "ingress"
        port = next((p for p in self.topo.ports.values() if p.key == key), None)
        if port is None:
            return ""
        names = ", ".join(sorted(p.key for p in self.topo.policies.values()
                                 if getattr(p, side) is not None and p.network == port.network
                                 and p.pod_selector.matches(dict(port.labels))))
        return (f"port {port.name} is selected for {side} by {names}; no rule of {names} allows "
                "this connection")

    def _miss(self, host: str, table: int, pkt: dict[str, int]) -> str:
        """Why nothing matched: the tag, when the same frame untagged would have matched."""
        vlan_vid = pkt["vlan_vid"]
        if vlan_vid != OFPVID_NONE and self._lookup(host, table,
                                                    {**pkt, "vlan_vid": OFPVID_NONE}):
            return (f"table miss: VLAN-tagged (vlan_vid={vlan_vid:#x}), the port takes only "
                    "untagged frames")
        return "table miss"

    def _apply(self, flow: Flow, host: str, pkt: dict[str, int], conntrack: Conntrack
               ) -> tuple[str, Any, str]:
        """Run a flow's actions on pkt (each action simulates itself: flows.vocab); return
        (goto, table) | (output, port) | (controller, None) | (drop, reason), and a note on what
        ct and groups did."""
        ex = Execution(host, pkt, conntrack, self._groups.get(host, {}).get)
        for action in flow.actions:
            ACTIONS[action[0]].execute(action, ex)
            if ex.stop:
                break
        note = "; ".join(ex.notes)
        if ex.stop:
            return (*ex.stop, note)
        if ex.output is None:
            return "drop", "no output", note
        return "output", ex.output, note

    def from_port(self, port_name: str, **packet_overrides: Any) -> Trace:
        host, packet = packet_from_port(self.topo, port_name, **packet_overrides)
        return self.trace(host, packet)


def _category_name(category: int) -> str:
    try:
        return Category(category).name
    except ValueError:
        return str(category)


# --------------------------------------------------------------------------------------------
# Building packets
# --------------------------------------------------------------------------------------------

def packet_from_port(topo: Topology, port_name: str, **overrides: Any) -> tuple[str, dict]:
    """A well-formed packet sent by a port (IPv4 by default; ARP request if eth_type=0x0806).

    An override of None removes that field.
    """
    port = topo.ports[port_name]
    binding = topo.bindings[port_name]
    packet: dict[str, Any] = {"in_port": binding.ofport, "eth_src": port.mac}
    eth_type = overrides.get("eth_type", ETH_TYPE_IPV4)
    packet["eth_type"] = eth_type
    if eth_type == ETH_TYPE_IPV4:
        packet.update(ipv4_src=port.ip, nw_ttl=64)
    elif eth_type == ETH_TYPE_ARP:
        packet.update(eth_dst="ff:ff:ff:ff:ff:ff", arp_op=ARP_REQUEST, arp_sha=port.mac,
                      arp_spa=port.ip, arp_tha="00:00:00:00:00:00")
    packet.update(overrides)
    return binding.host, {f: v for f, v in packet.items() if v is not None}


SOURCE_PORT = 40000  # what trace_to_ip uses as the client's TCP/UDP port and ICMP id
BROADCAST = "ff:ff:ff:ff:ff:ff"


def l4_fields(proto: str, sport: int = SOURCE_PORT, dport: int | None = None) -> dict[str, int]:
    """ip_proto and the transport fields of a first packet: ICMP echo request, TCP or UDP."""
    if proto == "icmp":
        return {"ip_proto": IP_PROTO_ICMP, "icmpv4_type": ICMP_ECHO_REQUEST, "icmpv4_code": 0,
                "icmpv4_id": sport}
    if proto == "tcp":
        return {"ip_proto": IP_PROTO_TCP, "tcp_src": sport, "tcp_dst": dport or 80}
    if proto == "udp":
        return {"ip_proto": IP_PROTO_UDP, "udp_src": sport, "udp_dst": dport or 53}
    if proto == "sctp":
        return {"ip_proto": IP_PROTO_SCTP, "sctp_src": sport, "sctp_dst": dport or 80}
    raise ValueError(f"unknown protocol {proto!r} (icmp, tcp, udp or sctp)")


def first_hop_mac(topo: Topology, port_name: str, dst_ip: str) -> str:
    """The eth_dst a port's IP stack would use: its gateway for other subnets (if its network
    has a router), else the destination port's MAC, else broadcast (unknown)."""
    port = topo.ports[port_name]
    network = topo.networks.get(port.network)
    router = topo.router_of(port.network)
    on_link = network is not None and (
        ipaddress.IPv4Address(dst_ip) in ipaddress.IPv4Network(network.cidr))
    if router is not None and (not on_link or dst_ip == network.gateway_ip):
        return next(rp.mac for rp in router.ports if rp.network == port.network)
    if on_link:
        for other in topo.ports.values():
            if other.network == port.network and other.ip == dst_ip:
                return other.mac
    return BROADCAST


def trace_to_ip(topo: Topology, from_port: str, dst_ip: str, proto: str = "icmp",
                dport: int | None = None, conntrack: Conntrack | None = None,
                compiled: Compiled | None = None) -> Trace:
    """Trace what `weft trace --from PORT --to IP` means: a first packet from the port."""
    if from_port not in topo.ports:
        raise ValueError(f"unknown port {from_port!r}")
    if from_port not in topo.bindings:
        raise ValueError(f"port {from_port!r} is not plugged in anywhere")
    ipaddress.IPv4Address(dst_ip)  # ValueError if not an address
    host, packet = packet_from_port(topo, from_port, eth_dst=first_hop_mac(topo, from_port, dst_ip),
                                    ipv4_dst=dst_ip, **l4_fields(proto, dport=dport))
    return Tracer(topo, compiled).trace(host, packet, conntrack)


def trace(topo: Topology, host: str, packet: Mapping[str, Any], compiled: Compiled | None = None,
          conntrack: Conntrack | None = None) -> Trace:
    return Tracer(topo, compiled).trace(host, packet, conntrack)


def trace_from_port(topo: Topology, port_name: str, compiled: Compiled | None = None,
                    **packet_overrides: Any) -> Trace:
    return Tracer(topo, compiled).from_port(port_name, **packet_overrides)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def describe_cookie(topo: Topology, cookie: int) -> str:
    """The NB object that owns a flow, e.g. "port web1", "network blue", "router r1"."""
    _, category, key = parse_cookie(cookie)
    objects = {Category.PORT: ("port", topo.ports), Category.NETWORK: ("network", topo.networks),
               Category.ROUTER: ("router", topo.routers), Category.HOST: ("host", topo.hosts)}
    if category == Category.STATIC:
        return "static"
    if category in objects:
        what, by_name = objects[Category(category)]
        name = next((o.name for o in by_name.values() if o.key == key), f"#{key}")
        return f"{what} {name}"
    return f"category {category} key {key}"


def _field_text(f: str, v: Any) -> str:
    if f == "ct_state":
        return f"ct_state={format_ct_state(v)}"
    if f == REG_NEXT_HOP:
        return f"{f}(next hop)={int_to_value('ipv4_dst', v)}"
    if isinstance(v, int) and (f in ("metadata", "tunnel_id", "eth_type", "vlan_vid")
                               or f.startswith("reg")):
        return f"{f}={v:#x}"
    return f"{f}={v}"


def format_trace(trace: Trace, topo: Topology) -> str:
    """Human-readable: one line per flow hit (host, table, owner, rewrites), then the verdict."""
    lines = []
    for step in trace.steps:
        changes = " ".join(_field_text(f, v) for f, v in step.changes
                           if f not in ("ct_zone",))
        line = f"{step.host:<8} {step.table:<14} {describe_cookie(topo, step.flow.cookie):<18}"
        lines.append(" ".join(filter(None, (line.rstrip() if not changes else line, changes))))
        if step.note:
            lines.append(f"{'':<8} {'':<14} -> {step.note}")
    lines.append(f"=> {trace.verdict}")
    if trace.verdict.packet is not None:
        packet = " ".join(_field_text(f, v) for f, v in trace.verdict.packet.items()
                          if f not in _PIPELINE_ONLY)
        lines.append(f"   packet: {packet}")
    return "\n".join(lines)


def trace_to_json(trace: Trace, topo: Topology) -> dict:
    """The same as format_trace, JSON-serialisable."""
    return {
        "steps": [{"host": s.host, "table": s.table, "priority": s.flow.priority,
                   "cookie": f"{s.flow.cookie:#x}", "owner": describe_cookie(topo, s.flow.cookie),
                   "flow": to_ofctl(s.flow), "changes": dict(s.changes), "note": s.note}
                  for s in trace.steps],
        "verdict": {"kind": trace.verdict.kind, "host": trace.verdict.host,
                    "port": trace.verdict.port, "table": trace.verdict.table,
                    "reason": trace.verdict.reason, "summary": str(trace.verdict),
                    "packet": dict(trace.verdict.packet or {})},
    }
