"""Inputs (the topology) and outputs (flows, groups, meters) of the compiler, all frozen and
hashable. The vocabulary of matches and actions is defined in flows/vocab.py.
"""
from __future__ import annotations

import ipaddress
import weakref
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from flows.pipeline import OFPP_IN_PORT, TUNNEL_OFPORT, UPLINK_OFPORT
from flows.policy import PolicyState, ServiceState
from flows.vocab import (ACTIONS, CT_EST, CT_FLAGS, CT_INV, CT_NEW, CT_REL, CT_RPL, CT_TRK,
                         FIELD_BITS, IPV4_FIELDS, MAC_FIELDS, int_to_value, value_to_int)

OFPVID_PRESENT = 0x1000
OFPVID_NONE = 0x0000  # matched without a mask: untagged frames only

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ARP_REQUEST = 1
ARP_REPLY = 2
IP_PROTO_ICMP = 1
IP_PROTO_TCP = 6
IP_PROTO_UDP = 17
IP_PROTO_SCTP = 132
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8


def arp_reply(mac: str, ip: str) -> tuple[Action, ...]:
    """Turn an ARP request for `ip` into the reply `ip is-at mac`, back out the in_port."""
    return (("move", "eth_src", "eth_dst", 48),
            ("set_field", "eth_src", mac),
            ("set_field", "arp_op", ARP_REPLY),
            ("move", "arp_sha", "arp_tha", 48),
            ("set_field", "arp_sha", mac),
            ("move", "arp_spa", "arp_tpa", 32),
            ("set_field", "arp_spa", ip),
            ("output", OFPP_IN_PORT))


def arp_request_for(ip: str) -> tuple:
    return (("arp_op", ARP_REQUEST), ("arp_tpa", ip), ("eth_type", ETH_TYPE_ARP))


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostState:
    name: str
    key: int
    encap_ip: str
    up: bool = True  # False: its switch stopped answering; peers keep no tunnel to its ports


@dataclass(frozen=True, slots=True)
class NetworkState:
    name: str
    key: int  # == VNI, 1 .. 2**24-1
    cidr: str
    gateway_ip: str
    mtu: int = 1450
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value): what namespaceSelectors match


@dataclass(frozen=True, slots=True)
class PortState:
    name: str
    key: int  # unique per port, 1 .. 2**31
    network: str
    mac: str  # lowercase aa:bb:cc:dd:ee:ff
    ip: str
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value): what podSelectors match
    named_ports: tuple[tuple[str, str, int], ...] = ()  # sorted (name, "TCP"|"UDP"|"SCTP", number)


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a port is plugged in, learned from that host's OVSDB."""
    port: str
    host: str
    ofport: int


@dataclass(frozen=True, slots=True)
class RouterPortState:
    """A router's leg in a network; its IP is that network's gateway_ip."""
    network: str
    mac: str


@dataclass(frozen=True, slots=True)
class RouteState:
    cidr: str
    via: str  # next hop, on one of the router's attached subnets


@dataclass(frozen=True, slots=True)
class GatewayState:
    """The router's way out: the uplink of `host`, source-NATed to `ip`."""
    host: str
    mac: str
    ip: str
    prefixlen: int
    next_hop: str
    next_hop_mac: str | None  # learned by the controller; None: egress is dropped


@dataclass(frozen=True, slots=True)
class FloatingIpState:
    ip: str
    port: str


@dataclass(frozen=True, slots=True)
class RouterState:
    name: str
    key: int  # same 24-bit space as network VNIs; also the ct zone on the gateway host
    ports: tuple[RouterPortState, ...]
    routes: tuple[RouteState, ...] = ()
    gateway: GatewayState | None = None
    floating_ips: tuple[FloatingIpState, ...] = ()


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Delta:
    """What `Topology.replace` touched: the names added, replaced or removed, per kind. The
    compiler trusts it instead of comparing every object, so one change costs what it touches.
    `parent` is a weak reference: a strong one would keep every topology ever made alive, each
    with its own copy of the changed maps (O(changes x size) memory)."""
    parent: weakref.ref
    hosts: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    ports: frozenset[str] = frozenset()
    bindings: frozenset[str] = frozenset()
    routers: frozenset[str] = frozenset()
    policies: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()


def _replaced(old: Mapping, new: Iterable, remove: Iterable[str], key: str) -> tuple[Mapping, frozenset]:
    """`old` with `new` put in and `remove` taken out, and the names touched; `old` itself (not a
    copy) when nothing is."""
    added = {getattr(item, key): item for item in new}
    removed = [name for name in remove if name in old]
    if not added and not removed:
        return old, frozenset()
    updated = old.copy()  # the C-level table copy: about 10 us per 10,000 entries, not a Python loop
    for name in removed:
        del updated[name]
    updated.update(added)
    return MappingProxyType(updated), frozenset(added.keys() | set(removed))


@dataclass(frozen=True)
class Topology:
    hosts: Mapping[str, HostState] = field(default_factory=dict)
    networks: Mapping[str, NetworkState] = field(default_factory=dict)
    ports: Mapping[str, PortState] = field(default_factory=dict)
    bindings: Mapping[str, Binding] = field(default_factory=dict)  # by port name
    routers: Mapping[str, RouterState] = field(default_factory=dict)
    policies: Mapping[str, PolicyState] = field(default_factory=dict)  # by PolicyState.key
    services: Mapping[str, ServiceState] = field(default_factory=dict)  # by .qualified
    delta: Delta | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, hosts: Iterable[HostState] = (), networks: Iterable[NetworkState] = (),
              ports: Iterable[PortState] = (), bindings: Iterable[Binding] = (),
              validate: bool = True, routers: Iterable[RouterState] = (),
              policies: Iterable[PolicyState] = (), services: Iterable[ServiceState] = ()
              ) -> Topology:
        topo = cls(_frozen({h.name: h for h in hosts}), _frozen({n.name: n for n in networks}),
                   _frozen({p.name: p for p in ports}), _frozen({b.port: b for b in bindings}),
                   _frozen({r.name: r for r in routers}), _frozen({p.key: p for p in policies}),
                   _frozen({s.qualified: s for s in services}))
        if validate:
            topo.validate()
        return topo

    def replace(self, *, hosts: Iterable[HostState] = (), networks: Iterable[NetworkState] = (),
                ports: Iterable[PortState] = (), bindings: Iterable[Binding] = (),
                routers: Iterable[RouterState] = (), remove_hosts: Iterable[str] = (),
                remove_networks: Iterable[str] = (), remove_ports: Iterable[str] = (),
                remove_bindings: Iterable[str] = (),
                remove_routers: Iterable[str] = (), policies: Iterable[PolicyState] = (),
                remove_policies: Iterable[str] = (), services: Iterable[ServiceState] = (),
                remove_services: Iterable[str] = ()) -> Topology:
        """A new topology with these objects added, replaced or removed (removing a port removes
        its binding); everything else is shared, and `delta` says what was touched.

        Sharing unchanged objects keeps Compiler.update() cheap; the delta makes it O(change).
        """
        remove_ports = list(remove_ports)
        new_hosts, touched_hosts = _replaced(self.hosts, hosts, remove_hosts, "name")
        new_networks, touched_networks = _replaced(self.networks, networks, remove_networks, "name")
        new_ports, touched_ports = _replaced(self.ports, ports, remove_ports, "name")
        new_bindings, touched_bindings = _replaced(self.bindings, bindings,
                                                   [*remove_ports, *remove_bindings], "port")
        new_routers, touched_routers = _replaced(self.routers, routers, remove_routers, "name")
        new_policies, touched_policies = _replaced(self.policies, policies, remove_policies, "key")
        new_services, touched_services = _replaced(self.services, services, remove_services,
                                                   "qualified")
        return Topology(new_hosts, new_networks, new_ports, new_bindings, new_routers,
                        new_policies, new_services,
                        Delta(weakref.ref(self), touched_hosts, touched_networks, touched_ports,
                              touched_bindings, touched_routers, touched_policies,
                              touched_services))

    def router_of(self, network: str) -> RouterState | None:
        """The router attached to a network, if any (validate() allows at most one)."""
        for router in self.routers.values():
            if any(rp.network == network for rp in router.ports):
                return router
        return None

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
            self._check_network(n)
        for p in self.ports.values():
            self._check_port(p)
        # Within one network, MACs and IPs key L2_LOOKUP and ARP_RESPONDER flows.
        unique("(network, mac)", ((p.network, p.mac) for p in self.ports.values()))
        unique("(network, ip)", ((p.network, p.ip) for p in self.ports.values()))
        unique("(host, ofport)", ((b.host, b.ofport) for b in self.bindings.values()))
        for b in self.bindings.values():
            self._check_binding(b)
        self._validate_routers()

    def validate_delta(self) -> None:
        """validate() for what `delta` touched, when the rest is known to be valid. Uniqueness of
        keys, addresses and ofports is left to where they come from (the NB's unique indexes, OVS):
        only the checks they cannot make run here, so the cost is that of the change."""
        delta = self.delta
        for name in delta.networks & self.networks.keys():
            self._check_network(self.networks[name])
        for name in (delta.ports | delta.networks) & self.ports.keys():
            self._check_port(self.ports[name])
        for name in delta.bindings & self.bindings.keys():
            self._check_binding(self.bindings[name])
        if delta.routers or delta.networks:
            self._validate_routers()

    @staticmethod
    def _check_network(n: NetworkState) -> None:
        if not 1 <= n.key < 1 << 24:
            raise ValueError(f"network {n.name}: key {n.key} is not a 24-bit VNI")

    def _check_port(self, p: PortState) -> None:
        if not 1 <= p.key <= 1 << 31:
            raise ValueError(f"port {p.name}: key {p.key} out of range")
        if p.mac != p.mac.lower():
            raise ValueError(f"port {p.name}: MAC must be lowercase")
        net = self.networks.get(p.network)
        if net is not None and p.ip == net.gateway_ip:
            raise ValueError(f"port {p.name}: {p.ip} is the gateway of {net.name}")

    @staticmethod
    def _check_binding(b: Binding) -> None:
        if not 1 <= b.ofport < 0xFF00 or b.ofport in (TUNNEL_OFPORT, UPLINK_OFPORT):
            raise ValueError(f"binding {b.port}: ofport {b.ofport} not usable")

    def _validate_routers(self) -> None:
        vnis = {n.key for n in self.networks.values()}
        router_keys: set[int] = set()
        attached: dict[str, str] = {}  # network -> router
        external_ips: set[str] = set()
        for r in self.routers.values():
            where = f"router {r.name}"
            if not 1 <= r.key < 1 << 24 or r.key in vnis or r.key in router_keys:
                raise ValueError(f"{where}: key {r.key} is not a 24-bit key unused by any "
                                 "network or router")
            router_keys.add(r.key)
            subnets: list[ipaddress.IPv4Network] = []
            for rp in r.ports:
                if rp.mac != rp.mac.lower():
                    raise ValueError(f"{where}: MAC {rp.mac} must be lowercase")
                if rp.network in attached:
                    raise ValueError(f"{where}: network {rp.network} is already attached to "
                                     f"router {attached[rp.network]}")
                attached[rp.network] = r.name
                net = self.networks.get(rp.network)
                if net is None:
                    continue  # not in the NB yet: the compiler skips it
                subnet = ipaddress.IPv4Network(net.cidr)
                for other in subnets:
                    if subnet.overlaps(other):
                        raise ValueError(f"{where}: subnet {subnet} of {net.name} overlaps "
                                         f"{other}")
                subnets.append(subnet)
            unique_routes = set()
            for route in r.routes:
                if route.cidr in unique_routes:
                    raise ValueError(f"{where}: duplicate route {route.cidr}")
                unique_routes.add(route.cidr)
                if not any(ipaddress.IPv4Address(route.via) in s for s in subnets):
                    raise ValueError(f"{where}: route {route.cidr} via {route.via}: the next "
                                     "hop is on no attached subnet")
            gw = r.gateway
            if gw is None:
                if r.floating_ips:
                    raise ValueError(f"{where}: floating IPs need a gateway")
                continue
            if r.key >= 1 << 16:
                raise ValueError(f"{where}: key {r.key} is its ct zone on the gateway host, "
                                 "which has 16 bits")
            if gw.mac != gw.mac.lower():
                raise ValueError(f"{where}: gateway MAC {gw.mac} must be lowercase")
            fip_ports = set()
            for ip in (gw.ip, *(f.ip for f in r.floating_ips)):
                if ip in external_ips:
                    raise ValueError(f"{where}: duplicate external IP {ip}")
                external_ips.add(ip)
            for fip in r.floating_ips:
                if fip.port in fip_ports:
                    raise ValueError(f"{where}: port {fip.port} has two floating IPs")
                fip_ports.add(fip.port)

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
    """Flows in table order (meters and groups, if any, first)."""
    return sorted(flows, key=lambda entry: entry.sort_key())


@dataclass(frozen=True, slots=True)
class Bucket:
    actions: tuple[Action, ...]
    weight: int = 1


_L4_HASH_FIELDS = ("ipv4_src", "ipv4_dst", "ip_proto", "tcp_src", "tcp_dst", "udp_src",
                   "udp_dst", "sctp_src", "sctp_dst")


@dataclass(frozen=True, slots=True)
class Group:
    """An OpenFlow group. select: OVS picks one bucket per connection (a hash of its addresses
    and ports), so a connection stays on its bucket; all: every bucket; indirect: the one."""
    group_id: int
    type: str  # "select" | "all" | "indirect"
    buckets: tuple[Bucket, ...]

    @property
    def key(self) -> tuple:
        return ("group", self.group_id)

    def sort_key(self) -> tuple:
        return (-2, self.group_id)

    def choose(self, pkt: Mapping[str, int]) -> Bucket:
        """The tracer's pick for a select group: a stable hash of the connection's fields (it
        cannot know OVS's hash, only that it is per connection)."""
        if self.type != "select" or len(self.buckets) == 1:
            return self.buckets[0]
        digest = zlib.crc32(repr(tuple(pkt.get(f, 0) for f in _L4_HASH_FIELDS)).encode())
        return self.buckets[digest % len(self.buckets)]


@dataclass(frozen=True, slots=True)
class Meter:
    """An OpenFlow meter that drops packets above `rate` per second (bursts of `burst`)."""
    meter_id: int
    rate: int  # packets per second
    burst: int

    @property
    def key(self) -> tuple:
        return ("meter", self.meter_id)

    def sort_key(self) -> tuple:
        return (-3, self.meter_id)


Entry = Flow | Group | Meter  # what an owner (a cookie) wants on a switch


__all__ = [
    "HostState", "NetworkState", "PortState", "Binding", "RouterPortState", "RouteState",
    "GatewayState", "FloatingIpState", "RouterState", "Topology", "Delta", "Flow", "sorted_flows",
    "Bucket", "Group", "Meter", "Entry", "IP_PROTO_SCTP",
    "value_to_int", "int_to_value", "FIELD_BITS", "MAC_FIELDS", "IPV4_FIELDS", "ACTIONS",
    "OFPVID_PRESENT", "OFPVID_NONE", "ETH_TYPE_IPV4", "ETH_TYPE_ARP", "ARP_REQUEST", "ARP_REPLY",
    "OFPP_IN_PORT",
    "TUNNEL_OFPORT", "UPLINK_OFPORT", "CT_NEW", "CT_EST", "CT_REL", "CT_RPL", "CT_INV", "CT_TRK",
    "CT_FLAGS",
    "IP_PROTO_ICMP", "IP_PROTO_TCP", "IP_PROTO_UDP", "ICMP_ECHO_REQUEST", "ICMP_ECHO_REPLY",
]
