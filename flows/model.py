"""Inputs (the topology) and outputs (flows) of the compiler, all frozen and hashable.

Flow vocabulary (fixed: the Ryu adapter converts it to and from OpenFlow messages)
-------------------------------------------------------------------------------
Match fields are Ryu OXM/NXM names, see FIELD_BITS. Values are ints, except MAC fields
(lowercase "aa:bb:cc:dd:ee:ff") and IPv4 fields ("10.0.0.1"). A masked match is a
(value, mask) tuple of the same types. `Flow.match` is a tuple of (field, value) sorted by field.

Actions are tuples, applied in order:
    ("output", port)                      port: int (OFPP_IN_PORT allowed)
    ("set_field", field, value)
    ("move", src_field, dst_field, n_bits) NXM move of the low n_bits, offsets 0
    ("dec_ttl",)
    ("goto", table_id)                    always last; becomes an OF goto-table instruction
Empty actions = drop.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from flows.pipeline import OFPP_IN_PORT, TUNNEL_OFPORT

MAC_FIELDS = frozenset({"eth_src", "eth_dst", "arp_sha", "arp_tha"})
IPV4_FIELDS = frozenset({"arp_spa", "arp_tpa", "ipv4_src", "ipv4_dst", "tun_ipv4_dst"})
FIELD_BITS: dict[str, int] = {
    "in_port": 32, "eth_src": 48, "eth_dst": 48, "eth_type": 16, "arp_op": 16,
    "arp_spa": 32, "arp_tpa": 32, "arp_sha": 48, "arp_tha": 48, "ip_proto": 8,
    "ipv4_src": 32, "ipv4_dst": 32, "tunnel_id": 64, "tun_ipv4_dst": 32, "metadata": 64,
    "nw_ttl": 8, **{f"reg{i}": 32 for i in range(16)},
}
ACTIONS = frozenset({"output", "set_field", "move", "dec_ttl", "goto"})

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ARP_REQUEST = 1
ARP_REPLY = 2


def value_to_int(field_name: str, value: Any) -> int:
    """MAC/IPv4 strings to ints; ints unchanged. Used where fields are compared or moved."""
    if isinstance(value, int):
        return value
    if field_name in MAC_FIELDS:
        return int(value.replace(":", ""), 16)
    if field_name in IPV4_FIELDS:
        return int(ipaddress.IPv4Address(value))
    raise TypeError(f"{field_name}: expected int, got {value!r}")


def int_to_value(field_name: str, number: int) -> Any:
    """Inverse of value_to_int: back to the vocabulary's type for that field."""
    if field_name in MAC_FIELDS:
        raw = f"{number:012x}"
        return ":".join(raw[i:i + 2] for i in range(0, 12, 2))
    if field_name in IPV4_FIELDS:
        return str(ipaddress.IPv4Address(number))
    return number


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostState:
    name: str
    key: int
    encap_ip: str


@dataclass(frozen=True, slots=True)
class NetworkState:
    name: str
    key: int  # == VNI, 1 .. 2**24-1
    cidr: str
    gateway_ip: str
    mtu: int = 1450


@dataclass(frozen=True, slots=True)
class PortState:
    name: str
    key: int  # unique per port, 1 .. 2**31
    network: str
    mac: str  # lowercase aa:bb:cc:dd:ee:ff
    ip: str


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a port is plugged in, learned from that host's OVSDB."""
    port: str
    host: str
    ofport: int


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Topology:
    hosts: Mapping[str, HostState] = field(default_factory=dict)
    networks: Mapping[str, NetworkState] = field(default_factory=dict)
    ports: Mapping[str, PortState] = field(default_factory=dict)
    bindings: Mapping[str, Binding] = field(default_factory=dict)  # by port name

    @classmethod
    def build(cls, hosts: Iterable[HostState] = (), networks: Iterable[NetworkState] = (),
              ports: Iterable[PortState] = (), bindings: Iterable[Binding] = (),
              validate: bool = True) -> Topology:
        topo = cls(_frozen({h.name: h for h in hosts}), _frozen({n.name: n for n in networks}),
                   _frozen({p.name: p for p in ports}), _frozen({b.port: b for b in bindings}))
        if validate:
            topo.validate()
        return topo

    def replace(self, *, hosts: Iterable[HostState] = (), networks: Iterable[NetworkState] = (),
                ports: Iterable[PortState] = (), bindings: Iterable[Binding] = (),
                remove_ports: Iterable[str] = (), remove_bindings: Iterable[str] = ()) -> Topology:
        """A new topology with these objects added or replaced; everything else is shared.

        Sharing unchanged objects keeps Compiler.update() cheap (it compares by identity first).
        """
        new_ports = dict(self.ports)
        new_bindings = dict(self.bindings)
        for name in remove_ports:
            new_ports.pop(name, None)
            new_bindings.pop(name, None)
        for name in remove_bindings:
            new_bindings.pop(name, None)
        new_ports.update((p.name, p) for p in ports)
        new_bindings.update((b.port, b) for b in bindings)
        new_hosts = {**self.hosts, **{h.name: h for h in hosts}}
        new_networks = {**self.networks, **{n.name: n for n in networks}}
        return Topology(_frozen(new_hosts), _frozen(new_networks), _frozen(new_ports),
                        _frozen(new_bindings))

    def validate(self) -> None:
        """Raise ValueError on inputs that would make two flows collide on a switch."""
        def unique(what: str, values: Iterable) -> None:
            seen = set()
            for v in values:
                if v in seen:
                    raise ValueError(f"duplicate {what}: {v!r}")
                seen.add(v)

        unique("network key", (n.key for n in self.networks.values()))
        unique("port key", (p.key for p in self.ports.values()))
        unique("host encap_ip", (h.encap_ip for h in self.hosts.values()))
        for n in self.networks.values():
            if not 1 <= n.key < 1 << 24:
                raise ValueError(f"network {n.name}: key {n.key} is not a 24-bit VNI")
        for p in self.ports.values():
            if not 1 <= p.key <= 1 << 31:
                raise ValueError(f"port {p.name}: key {p.key} out of range")
            if p.mac != p.mac.lower():
                raise ValueError(f"port {p.name}: MAC must be lowercase")
            net = self.networks.get(p.network)
            if net is not None and p.ip == net.gateway_ip:
                raise ValueError(f"port {p.name}: {p.ip} is the gateway of {net.name}")
        # Within one network, MACs and IPs key L2_LOOKUP and ARP_RESPONDER flows.
        unique("(network, mac)", ((p.network, p.mac) for p in self.ports.values()))
        unique("(network, ip)", ((p.network, p.ip) for p in self.ports.values()))
        unique("(host, ofport)", ((b.host, b.ofport) for b in self.bindings.values()))
        for b in self.bindings.values():
            if not 1 <= b.ofport < 0xFF00 or b.ofport == TUNNEL_OFPORT:
                raise ValueError(f"binding {b.port}: ofport {b.ofport} not usable")


# --------------------------------------------------------------------------------------------
# Flows
# --------------------------------------------------------------------------------------------

Match = tuple[tuple[str, Any], ...]
Action = tuple


@dataclass(frozen=True, slots=True)
class Flow:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int

    def __post_init__(self) -> None:
        # Canonical match order makes Flow.key comparable across sources (compiler, switch dump).
        items = self.match if type(self.match) is tuple else (
            self.match.items() if isinstance(self.match, Mapping) else self.match)
        canonical = tuple(sorted(items))  # field names are unique, so values never compare
        if canonical != self.match:
            object.__setattr__(self, "match", canonical)

    @property
    def key(self) -> tuple[int, int, Match]:
        """What OpenFlow identifies a flow by: no two flows with the same key on one switch."""
        return (self.table, self.priority, self.match)

    def sort_key(self) -> tuple:
        """Deterministic order: table, then highest priority first (values may mix types)."""
        return (self.table, -self.priority, repr(self.match), repr(self.actions), self.cookie)


def sorted_flows(flows: Iterable[Flow]) -> list[Flow]:
    return sorted(flows, key=Flow.sort_key)


__all__ = [
    "HostState", "NetworkState", "PortState", "Binding", "Topology", "Flow", "sorted_flows",
    "value_to_int", "int_to_value", "FIELD_BITS", "MAC_FIELDS", "IPV4_FIELDS", "ACTIONS",
    "ETH_TYPE_IPV4", "ETH_TYPE_ARP", "ARP_REQUEST", "ARP_REPLY", "OFPP_IN_PORT",
    "TUNNEL_OFPORT",
]
