"""Offline packet tracer over compiled flows, following OpenFlow 1.3 semantics.

Each host starts the packet with metadata and registers at 0, as a switch does. In each table
the highest-priority matching flow wins (masked matches supported; a field the packet does not
have never matches). Its actions run in order; "goto" continues in another
table; with no goto the packet leaves the pipeline and is sent to the collected output.
Output to TUNNEL_OFPORT hops to the host whose encap_ip is tun_ipv4_dst, arriving with
in_port=TUNNEL_OFPORT, the same tunnel_id, and metadata/registers zeroed like on a real switch.

Packets are dicts of vocabulary fields (see flows.model). Only one output per trace is
supported: the compiler never emits more.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flows.compiler import compile_all
from flows.model import (ETH_TYPE_ARP, ETH_TYPE_IPV4, FIELD_BITS, Flow, Topology, int_to_value,
                         value_to_int, ARP_REQUEST)
from flows.pipeline import (CLASSIFY, OFPP_IN_PORT, TABLE_BY_ID, TUNNEL_OFPORT, Category,
                            parse_cookie)

DELIVERED = "delivered"
DROPPED = "dropped"
TUNNELLED_TO_UNKNOWN = "tunnelled-to-unknown"
LOOP = "loop"  # more hops than max_hops


@dataclass(frozen=True)
class Step:
    host: str
    table: str
    flow: Flow
    category: str
    key: int


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
        return f"{self.kind} on host {self.host}: {self.reason}"


@dataclass(frozen=True)
class Trace:
    steps: tuple[Step, ...]
    verdict: Verdict

    def __str__(self) -> str:
        lines = [f"{s.host} {s.table}: cookie {s.category}/{s.key}" for s in self.steps]
        return "\n".join([*lines, str(self.verdict)])


_PIPELINE_STATE_ZERO = {"metadata": 0, **{f"reg{i}": 0 for i in range(16)}}


def _to_ints(packet: Mapping[str, Any]) -> dict[str, int]:
    return {f: value_to_int(f, v) for f, v in packet.items()}


def _to_values(packet: Mapping[str, int]) -> dict[str, Any]:
    return {f: int_to_value(f, v) for f, v in sorted(packet.items())}


def _compile_match(flow: Flow) -> tuple[tuple[str, int, int], ...]:
    """(field, value, mask) with ints, so matching is just integer compares."""
    result = []
    for f, v in flow.match:
        value, mask = v if isinstance(v, tuple) else (v, (1 << FIELD_BITS[f]) - 1)
        mask = value_to_int(f, mask)
        result.append((f, value_to_int(f, value) & mask, mask))
    return tuple(result)


class Tracer:
    def __init__(self, topo: Topology, compiled: Mapping[str, Mapping[int, frozenset[Flow]]]
                 | None = None, max_hops: int = 8) -> None:
        self.topo = topo
        self.max_hops = max_hops
        compiled = compile_all(topo) if compiled is None else compiled
        # host -> table id -> [(match, flow)] highest priority first
        self._tables: dict[str, dict[int, list]] = {}
        for host, by_cookie in compiled.items():
            tables: dict[int, list] = {}
            for flows in by_cookie.values():
                for flow in flows:
                    tables.setdefault(flow.table, []).append((_compile_match(flow), flow))
            for entries in tables.values():
                entries.sort(key=lambda e: e[1].sort_key())
            self._tables[host] = tables
        self._port_at = {(b.host, b.ofport): b.port for b in topo.bindings.values()}
        self._host_by_ip = {h.encap_ip: h.name for h in topo.hosts.values()}

    def _lookup(self, host: str, table: int, pkt: dict[str, int]) -> Flow | None:
        for match, flow in self._tables.get(host, {}).get(table, ()):
            if all(f in pkt and pkt[f] & mask == value for f, value, mask in match):
                return flow
        return None

    def trace(self, host: str, packet: Mapping[str, Any]) -> Trace:
        pkt = _to_ints(packet)
        steps: list[Step] = []
        for _ in range(self.max_hops):
            pkt = {**_PIPELINE_STATE_ZERO, **pkt}  # a switch starts with metadata and regs at 0
            table, output = CLASSIFY.id, None
            while True:
                table_name = TABLE_BY_ID[table].name if table in TABLE_BY_ID else str(table)
                flow = self._lookup(host, table, pkt)
                if flow is None:
                    return Trace(tuple(steps), Verdict(DROPPED, host, table=table_name,
                                                       reason="table miss",
                                                       packet=_to_values(pkt)))
                _, category, key = parse_cookie(flow.cookie)
                steps.append(Step(host, table_name, flow, _category_name(category), key))
                next_table = None
                for action in flow.actions:
                    kind = action[0]
                    if kind == "set_field":
                        pkt[action[1]] = value_to_int(action[1], action[2])
                    elif kind == "move":
                        _, src, dst, n_bits = action
                        mask = (1 << n_bits) - 1
                        pkt[dst] = (pkt.get(dst, 0) & ~mask) | (pkt.get(src, 0) & mask)
                    elif kind == "dec_ttl":
                        pkt["nw_ttl"] = pkt.get("nw_ttl", 64) - 1
                    elif kind == "output":
                        if output is not None:
                            raise NotImplementedError("more than one output")
                        output = action[1]
                    elif kind == "goto":
                        next_table = action[1]
                    else:
                        raise ValueError(f"unknown action {action!r}")
                if next_table is None:
                    break
                table = next_table

            if output is None:
                return Trace(tuple(steps), Verdict(DROPPED, host, table=table_name,
                                                   reason="no output", packet=_to_values(pkt)))
            if output == OFPP_IN_PORT:
                output = pkt["in_port"]
            if output != TUNNEL_OFPORT:
                port = self._port_at.get((host, output))
                if port is None:
                    return Trace(tuple(steps), Verdict(DROPPED, host, table=table_name,
                                                       reason=f"output to unbound ofport {output}",
                                                       packet=_to_values(pkt)))
                return Trace(tuple(steps), Verdict(DELIVERED, host, port=port,
                                                   packet=_to_values(_strip(pkt))))
            remote_ip = int_to_value("tun_ipv4_dst", pkt.get("tun_ipv4_dst", 0))
            next_host = self._host_by_ip.get(remote_ip)
            if next_host is None:
                return Trace(tuple(steps), Verdict(TUNNELLED_TO_UNKNOWN, host,
                                                   reason=f"no host has encap_ip {remote_ip}",
                                                   packet=_to_values(pkt)))
            # What the receiving switch sees: the frame, its VNI and our tunnel port.
            pkt = {**_strip(pkt), "in_port": TUNNEL_OFPORT, "tunnel_id": pkt.get("tunnel_id", 0),
                   "tun_ipv4_dst": pkt["tun_ipv4_dst"]}
            host = next_host
        return Trace(tuple(steps), Verdict(LOOP, host, reason=f"more than {self.max_hops} hops"))

    def from_port(self, port_name: str, **packet_overrides: Any) -> Trace:
        host, packet = packet_from_port(self.topo, port_name, **packet_overrides)
        return self.trace(host, packet)


def _strip(pkt: dict[str, int]) -> dict[str, int]:
    """Drop pipeline-only state (metadata, registers, tunnel fields) from a packet."""
    return {f: v for f, v in pkt.items()
            if f != "metadata" and not f.startswith("reg") and f not in
            ("tunnel_id", "tun_ipv4_dst", "in_port")}


def _category_name(category: int) -> str:
    try:
        return Category(category).name
    except ValueError:
        return str(category)


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


def trace(topo: Topology, host: str, packet: Mapping[str, Any],
          compiled: Mapping[str, Mapping[int, frozenset[Flow]]] | None = None) -> Trace:
    return Tracer(topo, compiled).trace(host, packet)


def trace_from_port(topo: Topology, port_name: str,
                    compiled: Mapping[str, Mapping[int, frozenset[Flow]]] | None = None,
                    **packet_overrides: Any) -> Trace:
    return Tracer(topo, compiled).from_port(port_name, **packet_overrides)
