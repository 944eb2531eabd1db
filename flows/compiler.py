"""Topology -> desired flows per host, keyed by the cookie of the object that owns them.

Fully proactive: no flooding, no MAC learning; the only packet-in is the next hop's ARP reply
on a gateway host's uplink (the controller learns its MAC from it).

Who owns which flows (one cookie per object):
  STATIC  (every host)        CLASSIFY: untagged frames of the uplink port go to UPLINK_IN.
                              ARP_RESPONDER: drop ARP requests for unknown IPs, send the rest
                              on to L3_GATE.
                              L3_GATE: frames not for a router go to L2_LOOKUP. (4)
  NETWORK (hosts that have a  CLASSIFY: Geneve frames with tun_id=VNI enter the network.
           bound port of it)
  PORT    on its own host     CLASSIFY (untagged frames only), 2x PORT_SECURITY,
                              ARP_RESPONDER, L2_LOOKUP, OUTPUT,
                              + NEIGHBOR if its network has a router (6, routed 7)
          on other hosts that ARP_RESPONDER, L2_LOOKUP to the tunnel,
          need its network    + NEIGHBOR if routed (2, routed 3)
          unbound, on every   ARP_RESPONDER, + NEIGHBOR if routed (1, routed 2): a peer's first
          host that needs     ARP is answered while the port is still being plugged (also what
          its network         the other hosts keep of a port whose host is down: no tunnel to it)
  ROUTER  on hosts that need  per attached network: ARP_RESPONDER (gateway IP), 2x L3_GATE (enter
          the router          the router by its MAC or the network's own gateway MAC), ROUTING
                              (subnet; ping reply for its address) (5); per static route:
                              ROUTING (1); with a gateway: the default route (1)
          on its gateway      also CLASSIFY (tun_id = router key), UPLINK_IN (ARP reply, next
          host                hop ARP to controller, IPv4 into ct), L3_GATE (established /
                              drop), GATEWAY (ct nat), NAT (SNAT, established), UPLINK_OUT
                              once the next hop MAC is known (10); per floating IP: UPLINK_IN
                              (ARP, IPv4), L3_GATE (DNAT), NAT (SNAT) (4)
A host needs a network if it has a bound port in it, or if it needs a router attached to it
(routing happens on the sender's host, which must reach every subnet of the router). A host
needs a router if it has a bound port in one of its networks or is its gateway host. Network
flows (tunnel ingress) go only to hosts with a bound port in the network. A port without a
binding (or bound to an unknown host) has only its ARP answer; a port in an unknown network has no
flows anywhere.

Scale: a port's remote fragment is the same on every host that does not hold it, so it is built
once per port and the same frozenset is shared by all those hosts (`Compiler._remote`, grouped
per network); a router's fragment likewise (`Compiler._router_fragments`).
`Compiler.update(topo)` recomputes only what a change touches.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

from flows.acl import compile_acls, static_acl_flows
from flows.model import (ARP_REPLY, ARP_REQUEST, CT_EST, CT_NEW, CT_TRK, ETH_TYPE_ARP,
                         ETH_TYPE_IPV4, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IP_PROTO_ICMP,
                         IP_PROTO_UDP, OFPVID_NONE, Action, Binding, FloatingIpState, Flow,
                         HostState, NetworkState, PortState, RouterPortState, RouterState,
                         Topology, arp_reply, arp_request_for)
from flows.pipeline import (ARP_RESPONDER, CLASSIFY, DNS, DNS_METER, FLAG_FROM_TUNNEL, GATEWAY,
                            L2_LOOKUP, L3_GATE, NAT, NEIGHBOR, OFPP_IN_PORT, OUTPUT, PORT_SECURITY,
                            REG_DATAPATH, REG_FLAGS, REG_INPORT, REG_NEXT_HOP, REG_OUTPORT,
                            ROUTING, STATIC_COOKIE, TUNNEL_OFPORT, UPLINK_IN, UPLINK_OFPORT,
                            UPLINK_OUT, Category, goto, make_cookie, proceed)
from flows.services import compile_services, static_service_flows

PRIORITY_SPECIFIC = 110  # beats the object's general flow (ping to the gateway, floating IPs)
PRIORITY_OBJECT = 100  # a flow for a known port, network or router
PRIORITY_ARP_UNKNOWN = 50  # ARP request nobody answered
PRIORITY_ROUTE_BASE = 10  # ROUTING: + 2 * prefix length, + 1 for an attached subnet
PRIORITY_ROUTER_LAST = 1  # a router's "everything else" (default route, drop from uplink)
PRIORITY_DEFAULT = 0  # the table's "everything else"

CT_STATE_NEW = (CT_TRK | CT_NEW, CT_TRK | CT_NEW)
CT_STATE_EST = (CT_TRK | CT_EST, CT_TRK | CT_EST)
# Container ports and the uplink take untagged frames only (a later feature may configure a port
# for tags): PORT_SECURITY's eth_type matches the ethertype after a tag, so it cannot tell.
UNTAGGED = ("vlan_vid", OFPVID_NONE)

HostFlows = dict[int, frozenset[Flow]]  # cookie -> that object's flows on one host


_PORT_COOKIE = make_cookie(Category.PORT, 0)


def port_cookie(port: PortState) -> int:
    # Hot path: the key range is checked by Topology.validate, so no make_cookie() checks here.
    return _PORT_COOKIE | port.key


def network_cookie(network: NetworkState) -> int:
    return make_cookie(Category.NETWORK, network.key)


def router_cookie(router: RouterState) -> int:
    return make_cookie(Category.ROUTER, router.key)


def route_priority(cidr: str, attached: bool) -> int:
    """Longest prefix wins; on equal prefixes the attached subnet beats a static route."""
    return PRIORITY_ROUTE_BASE + 2 * ipaddress.IPv4Network(cidr).prefixlen + attached


def _ip_int(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "big")  # hot path: 10x faster than ipaddress


def _ip_prefix(cidr: str) -> tuple[str, str]:
    network = ipaddress.IPv4Network(cidr)
    return (str(network.network_address), str(network.netmask))


# ---------------------------------------------------------------------------------------------
# Fragments: pure functions of frozen values, memoized (bounded, so a long-running controller
# does not keep every port it ever saw).
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def static_flows() -> frozenset[Flow]:
    return frozenset({
        Flow(CLASSIFY.id, PRIORITY_OBJECT, (("in_port", UPLINK_OFPORT), UNTAGGED),
             (goto(UPLINK_IN),), STATIC_COOKIE),
        Flow(ARP_RESPONDER.id, PRIORITY_ARP_UNKNOWN,
             (("arp_op", ARP_REQUEST), ("eth_type", ETH_TYPE_ARP)), (), STATIC_COOKIE),
        Flow(ARP_RESPONDER.id, PRIORITY_DEFAULT, (), (proceed(ARP_RESPONDER),), STATIC_COOKIE),
        Flow(L3_GATE.id, PRIORITY_DEFAULT, (), (proceed(L3_GATE),), STATIC_COOKIE),
        *static_acl_flows(),
        *static_service_flows(),
    })


@lru_cache(maxsize=4096)
def network_flows(network: NetworkState, routed: bool) -> frozenset[Flow]:
    """On hosts with a port in the network: its tunnel ingress, and its resolver (the gateway IP,
    UDP 53) answered by the controller through the DNS meter. Without a router, the gateway IP is
    still answered for (with network_gateway_mac), so DNS and service VIPs have a first hop."""
    vni, cookie = network.key, network_cookie(network)
    flows = {
        Flow(CLASSIFY.id, PRIORITY_OBJECT, (("in_port", TUNNEL_OFPORT), ("tunnel_id", vni)),
             (("set_field", REG_DATAPATH, vni), ("set_field", REG_FLAGS, FLAG_FROM_TUNNEL),
              goto(L2_LOOKUP)),
             cookie),
        Flow(DNS.id, PRIORITY_OBJECT,
             ((REG_DATAPATH, vni), ("eth_type", ETH_TYPE_IPV4), ("ip_proto", IP_PROTO_UDP),
              ("ipv4_dst", network.gateway_ip), ("udp_dst", 53)),
             (("meter", DNS_METER), ("controller",)), cookie),
    }
    if not routed:
        flows.add(Flow(ARP_RESPONDER.id, PRIORITY_OBJECT,
                       (*arp_request_for(network.gateway_ip), (REG_DATAPATH, vni)),
                       arp_reply(network_gateway_mac(vni), network.gateway_ip), cookie))
    return frozenset(flows)


def network_gateway_mac(vni: int) -> str:
    """The MAC a network without a router answers for its gateway IP: a router leg's MAC with
    router key 0, which no router has (see controller.api.router_port_mac)."""
    return "0a:00:00:" + ":".join(f"{b:02x}" for b in vni.to_bytes(3, "big"))


@lru_cache(maxsize=1 << 16)
def _arp_responder(port: PortState, vni: int) -> Flow:
    """The same on every host that has the network: built once, shared."""
    return Flow(ARP_RESPONDER.id, PRIORITY_OBJECT,
                (*arp_request_for(port.ip), (REG_DATAPATH, vni)),
                arp_reply(port.mac, port.ip), port_cookie(port))


@lru_cache(maxsize=1 << 16)
def _neighbor(port: PortState, vni: int) -> Flow:
    """A routed packet whose next hop is this port gets its MAC."""
    return Flow(NEIGHBOR.id, PRIORITY_OBJECT,
                ((REG_DATAPATH, vni), (REG_NEXT_HOP, _ip_int(port.ip))),
                (("set_field", "eth_dst", port.mac), goto(L2_LOOKUP)), port_cookie(port))


@lru_cache(maxsize=1 << 16)
def local_port_flows(port: PortState, vni: int, ofport: int, routed: bool) -> frozenset[Flow]:
    """The port's flows on the host it is plugged into."""
    cookie = port_cookie(port)
    flows = {
        Flow(CLASSIFY.id, PRIORITY_OBJECT, (("in_port", ofport), UNTAGGED),
             (("set_field", REG_DATAPATH, vni), ("set_field", REG_INPORT, port.key),
              proceed(CLASSIFY)),
             cookie),
        Flow(PORT_SECURITY.id, PRIORITY_OBJECT,
             (("eth_src", port.mac), ("eth_type", ETH_TYPE_IPV4), ("ipv4_src", port.ip),
              (REG_INPORT, port.key)),
             (proceed(PORT_SECURITY),), cookie),
        Flow(PORT_SECURITY.id, PRIORITY_OBJECT,
             (("arp_sha", port.mac), ("arp_spa", port.ip), ("eth_src", port.mac),
              ("eth_type", ETH_TYPE_ARP), (REG_INPORT, port.key)),
             (proceed(PORT_SECURITY),), cookie),
        _arp_responder(port, vni),
        Flow(L2_LOOKUP.id, PRIORITY_OBJECT, (("eth_dst", port.mac), (REG_DATAPATH, vni)),
             (("set_field", REG_OUTPORT, port.key), proceed(L2_LOOKUP)), cookie),
        Flow(OUTPUT.id, PRIORITY_OBJECT, ((REG_OUTPORT, port.key),), (("output", ofport),),
             cookie),
    }
    if routed:
        flows.add(_neighbor(port, vni))
    return frozenset(flows)


@lru_cache(maxsize=1 << 16)
def unbound_port_flows(port: PortState, vni: int, routed: bool) -> frozenset[Flow]:
    """A port in the NB that is plugged nowhere yet: its ARP is answered on every host that has its
    network, so a peer's first ARP is never lost while the port is being plugged (OVN does the same).
    Its frames go nowhere until it is bound."""
    return frozenset({_arp_responder(port, vni), *((_neighbor(port, vni),) if routed else ())})


@lru_cache(maxsize=1 << 16)
def remote_port_flows(port: PortState, vni: int, encap_ip: str, routed: bool
                      ) -> frozenset[Flow]:
    """The port's flows on every other host that needs its network: the same on all of them."""
    cookie = port_cookie(port)
    flows = {
        _arp_responder(port, vni),
        # Split horizon: a frame that came from a tunnel is never sent into one again.
        Flow(L2_LOOKUP.id, PRIORITY_OBJECT,
             (("eth_dst", port.mac), (REG_FLAGS, (0, FLAG_FROM_TUNNEL)), (REG_DATAPATH, vni)),
             (("set_field", "tun_ipv4_dst", encap_ip), ("set_field", "tunnel_id", vni),
              ("output", TUNNEL_OFPORT)),
             cookie),
    }
    if routed:
        flows.add(_neighbor(port, vni))
    return frozenset(flows)


Attached = tuple[tuple[RouterPortState, NetworkState], ...]  # router ports of known networks
Floating = tuple[tuple[FloatingIpState, str], ...]  # floating IP, its port's IP


@lru_cache(maxsize=4096)
def router_flows(router: RouterState, attached: Attached, gateway_encap_ip: str | None,
                 on_gateway_host: bool, floating: Floating) -> frozenset[Flow]:
    """The router's flows on one host. The same on every host but its gateway host, whose
    default route leads into GATEWAY instead of the tunnel and who also runs the NAT."""
    cookie, key = router_cookie(router), router.key
    flows = set()
    leg_of = {}  # attached subnet -> (router port, network)
    for rp, net in attached:
        leg_of[ipaddress.IPv4Network(net.cidr)] = (rp, net)
        in_net = ((REG_DATAPATH, net.key), ("eth_dst", rp.mac), ("eth_type", ETH_TYPE_IPV4))
        flows |= {
            Flow(ARP_RESPONDER.id, PRIORITY_OBJECT,
                 (*arp_request_for(net.gateway_ip), (REG_DATAPATH, net.key)),
                 arp_reply(rp.mac, net.gateway_ip), cookie),
            # An echo request to any of the router's addresses, from any of its networks, is
            # answered in place, from the leg it came in by: swap the MACs (through the stack),
            # set the IPs (the router's address is known); OVS fixes the ICMP checksum.
            Flow(ROUTING.id, PRIORITY_SPECIFIC,
                 ((REG_DATAPATH, key), ("eth_type", ETH_TYPE_IPV4), ("icmpv4_type", ICMP_ECHO_REQUEST),
                  ("ip_proto", IP_PROTO_ICMP), ("ipv4_dst", net.gateway_ip)),
                 (("push", "eth_dst"), ("move", "eth_src", "eth_dst", 48), ("pop", "eth_src"),
                  ("move", "ipv4_src", "ipv4_dst", 32), ("set_field", "ipv4_src", net.gateway_ip),
                  ("set_field", "icmpv4_type", ICMP_ECHO_REPLY), ("output", OFPP_IN_PORT)),
                 cookie),
            Flow(L3_GATE.id, PRIORITY_OBJECT, in_net,
                 (("set_field", REG_DATAPATH, key), goto(ROUTING)), cookie),
            # A container that learned the gateway's MAC before the router came (the network
            # answered for its gateway IP itself) keeps reaching the router through it.
            Flow(L3_GATE.id, PRIORITY_OBJECT,
                 ((REG_DATAPATH, net.key), ("eth_dst", network_gateway_mac(net.key)),
                  ("eth_type", ETH_TYPE_IPV4)),
                 (("set_field", REG_DATAPATH, key), goto(ROUTING)), cookie),
            Flow(ROUTING.id, route_priority(net.cidr, attached=True),
                 ((REG_DATAPATH, key), ("eth_type", ETH_TYPE_IPV4),
                  ("ipv4_dst", _ip_prefix(net.cidr))),
                 (*_route_to(rp, net), ("move", "ipv4_dst", REG_NEXT_HOP, 32),
                  goto(NEIGHBOR)),
                 cookie),
        }
    for route in router.routes:
        via = ipaddress.IPv4Address(route.via)
        leg = next((leg for subnet, leg in leg_of.items() if via in subnet), None)
        if leg is None:  # validate() rejects this; its network may just not be in the NB yet
            continue
        rp, net = leg
        flows.add(Flow(ROUTING.id, route_priority(route.cidr, attached=False),
                       ((REG_DATAPATH, key), ("eth_type", ETH_TYPE_IPV4),
                        ("ipv4_dst", _ip_prefix(route.cidr))),
                       (*_route_to(rp, net), ("set_field", REG_NEXT_HOP, int(via)),
                        goto(NEIGHBOR)),
                       cookie))
    if router.gateway is not None and gateway_encap_ip is not None:
        # The default route: everything not internal leaves through the gateway host.
        to_gateway = (goto(GATEWAY),) if on_gateway_host else (
            ("set_field", "tun_ipv4_dst", gateway_encap_ip), ("set_field", "tunnel_id", key),
            ("output", TUNNEL_OFPORT))
        flows.add(Flow(ROUTING.id, PRIORITY_ROUTER_LAST,
                       ((REG_DATAPATH, key), ("eth_type", ETH_TYPE_IPV4)),
                       (("dec_ttl",), *to_gateway), cookie))
        if on_gateway_host:
            flows |= _gateway_flows(router, floating, cookie)
    return frozenset(flows)


def _route_to(rp: RouterPortState, net: NetworkState) -> tuple[Action, ...]:
    """Leave the router through its leg in `net`."""
    return (("set_field", REG_DATAPATH, net.key), ("set_field", "eth_src", rp.mac), ("dec_ttl",))


def _gateway_flows(router: RouterState, floating: Floating, cookie: int) -> set[Flow]:
    """North-south on the gateway host; the router key is also its conntrack zone."""
    gw, key = router.gateway, router.key
    in_router = ((REG_DATAPATH, key),)
    ipv4 = ("eth_type", ETH_TYPE_IPV4)
    enter_router = (("set_field", REG_DATAPATH, key), ("ct", False, key, L3_GATE.name, ("nat",)))
    flows = {
        Flow(CLASSIFY.id, PRIORITY_OBJECT, (("in_port", TUNNEL_OFPORT), ("tunnel_id", key)),
             (("set_field", REG_DATAPATH, key), goto(GATEWAY)), cookie),
        # From the outside.
        Flow(UPLINK_IN.id, PRIORITY_OBJECT, arp_request_for(gw.ip), arp_reply(gw.mac, gw.ip),
             cookie),
        Flow(UPLINK_IN.id, PRIORITY_OBJECT,
             (("arp_op", ARP_REPLY), ("arp_spa", gw.next_hop), ("arp_tpa", gw.ip),
              ("eth_type", ETH_TYPE_ARP)),
             (("controller",),), cookie),
        Flow(UPLINK_IN.id, PRIORITY_OBJECT, (ipv4, ("ipv4_dst", gw.ip)), enter_router, cookie),
        Flow(L3_GATE.id, PRIORITY_OBJECT, (*in_router, ("ct_state", CT_STATE_EST)),
             (goto(ROUTING),), cookie),
        # New connections from the outside, except to a floating IP (below).
        Flow(L3_GATE.id, PRIORITY_ROUTER_LAST, in_router, (), cookie),
        # To the outside.
        # (ct with nat needs an IPv4 match in the same flow: OVS refuses it otherwise.)
        Flow(GATEWAY.id, PRIORITY_OBJECT, (*in_router, ipv4), (("ct", False, key, NAT.name, ("nat",)),),
             cookie),
        Flow(NAT.id, PRIORITY_OBJECT, (*in_router, ipv4, ("ct_state", CT_STATE_NEW)),
             (("ct", True, key, UPLINK_OUT.name, ("snat", gw.ip)),), cookie),
        Flow(NAT.id, PRIORITY_OBJECT, (*in_router, ("ct_state", CT_STATE_EST)),
             (goto(UPLINK_OUT),), cookie),
    }
    if gw.next_hop_mac is not None:
        flows.add(Flow(UPLINK_OUT.id, PRIORITY_OBJECT, in_router,
                       (("set_field", "eth_src", gw.mac), ("set_field", "eth_dst", gw.next_hop_mac),
                        ("output", UPLINK_OFPORT)),
                       cookie))
    for fip, port_ip in floating:
        flows |= {
            Flow(UPLINK_IN.id, PRIORITY_OBJECT, arp_request_for(fip.ip),
                 arp_reply(gw.mac, fip.ip), cookie),
            Flow(UPLINK_IN.id, PRIORITY_OBJECT, (ipv4, ("ipv4_dst", fip.ip)), enter_router,
                 cookie),
            Flow(L3_GATE.id, PRIORITY_SPECIFIC,
                 (*in_router, ("ct_state", CT_STATE_NEW), ipv4, ("ipv4_dst", fip.ip)),
                 (("ct", True, key, ROUTING.name, ("dnat", port_ip)),), cookie),
            Flow(NAT.id, PRIORITY_SPECIFIC,
                 (*in_router, ("ct_state", CT_STATE_NEW), ipv4, ("ipv4_src", port_ip)),
                 (("ct", True, key, UPLINK_OUT.name, ("snat", fip.ip)),), cookie),
        }
    return flows


# ---------------------------------------------------------------------------------------------
# Compiler: indexes over the topology plus per-host results, updated incrementally.
# ---------------------------------------------------------------------------------------------

class _Placed:
    """A port with flows: its network is known. Bound to a known host, it has its full flows there
    and its remote fragment elsewhere; unbound, only its ARP answer, on every host of its network."""
    __slots__ = ("port", "network", "binding", "host", "cookie", "routed")

    def __init__(self, port: PortState, network: NetworkState, binding: Binding | None,
                 host: HostState | None, routed: bool) -> None:
        self.port, self.network, self.binding, self.host = port, network, binding, host
        self.cookie = port_cookie(port)
        self.routed = routed

    @property
    def bound_host(self) -> str | None:
        return self.binding.host if self.binding is not None else None

    def local(self) -> frozenset[Flow]:
        return local_port_flows(self.port, self.network.key, self.binding.ofport, self.routed)

    def remote(self) -> frozenset[Flow]:
        if self.binding is None or not self.host.up:  # a down host's ports are reached by nothing
            return unbound_port_flows(self.port, self.network.key, self.routed)
        return remote_port_flows(self.port, self.network.key, self.host.encap_ip, self.routed)

    def on(self, host: str) -> frozenset[Flow]:
        return self.local() if self.bound_host == host else self.remote()


def _place(topo: Topology, name: str, routed_networks: Mapping[str, str]) -> _Placed | None:
    port = topo.ports.get(name)
    network = topo.networks.get(port.network) if port is not None else None
    if network is None:
        return None
    binding = topo.bindings.get(name)
    host = topo.hosts.get(binding.host) if binding is not None else None
    if host is None:  # bound to a host the NB does not know (yet): as good as unbound
        binding = None
    return _Placed(port, network, binding, host, port.network in routed_networks)


def _changed_names(old: Mapping, new: Mapping, candidates: frozenset[str] | None = None) -> set[str]:
    """Names whose object differs; only among `candidates` when a Delta says what was touched."""
    if old is new:
        return set()
    if candidates is None:
        candidates = old.keys() | new.keys()
    changed = set()
    for name in candidates:
        before, after = old.get(name), new.get(name)
        if before is not after and before != after:
            changed.add(name)
    return changed


class _Needs(NamedTuple):
    """What one host needs flows for (see the module docstring)."""
    local_networks: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()  # local ones and those of its routers
    routers: frozenset[str] = frozenset()


class Compiler:
    """Keeps the desired flows of every host and updates them when the topology changes.

        compiler = Compiler()
        compiler.update(topo)          # full compile the first time
        changes = compiler.update(topo2)   # {host: {cookie: new flows}}; empty set = remove
        compiler.flows["host1"]        # {cookie: frozenset[Flow]}

    `flows` is the compiler's own state, updated in place by update() (copying every host's
    dict on each change would cost more than the change): read it, copy what you keep.
    """

    def __init__(self) -> None:
        self.topo = Topology()
        self.flows: dict[str, HostFlows] = {}
        self._placed: dict[str, _Placed] = {}  # port name -> placement (ports with flows)
        self._ports_of_network: dict[str, set[str]] = {}  # network name -> port names (all)
        self._ports_on_host: dict[str, set[str]] = {}  # host name -> bound port names (all)
        self._remote: dict[str, dict[int, frozenset[Flow]]] = {}  # network -> remote fragments
        self._needs: dict[str, _Needs] = {}  # host -> what it needs
        # Router indexes, rebuilt whenever a router changes (rare).
        self._router_of_network: dict[str, str] = {}
        self._routers_of_gateway_host: dict[str, set[str]] = {}
        self._routers_of_floating_port: dict[str, set[str]] = {}
        # router -> (its flows elsewhere, its flows on its gateway host)
        self._router_fragments: dict[str, tuple[frozenset[Flow], frozenset[Flow]]] = {}
        self._overlay: dict[str, HostFlows] = {}  # host -> its policy and service owners
        self.backend_endpoints = frozenset()  # (IP protocol, address, port) of service backends

    def update(self, topo: Topology) -> dict[str, HostFlows]:
        """Adopt `topo`; return, per host, the cookies whose flows changed and their new flows.

        An empty frozenset means the object no longer has flows on that host. Hosts without
        changes are left out. Cost: an identity scan of the topology plus work proportional to
        what changed (share unchanged objects between topologies, see Topology.replace).
        A router change re-derives every host's needs and rebuilds the hosts of that router.
        """
        old = self.topo
        delta = topo.delta if topo.delta is not None and topo.delta.parent() is old else None
        changed_hosts = _changed_names(old.hosts, topo.hosts, delta and delta.hosts)
        changed_networks = _changed_names(old.networks, topo.networks, delta and delta.networks)
        changed_routers = _changed_names(old.routers, topo.routers, delta and delta.routers)
        changed_ports = (_changed_names(old.ports, topo.ports, delta and delta.ports)
                         | _changed_names(old.bindings, topo.bindings, delta and delta.bindings))
        # Ports whose flows depend on a changed network or host (VNI, encap_ip).
        for name in changed_networks:
            changed_ports |= self._ports_of_network.get(name, set())
        for name in changed_hosts:
            changed_ports |= self._ports_on_host.get(name, set())
        if changed_routers:
            routed_before = self._router_of_network.keys()
            self._index_routers(topo)
            # Networks that gained or lost a router: their ports gain or lose NEIGHBOR.
            for name in routed_before ^ self._router_of_network.keys():
                changed_ports |= self._ports_of_network.get(name, set())

        old_placed = {name: self._placed.get(name) for name in changed_ports}
        self._reindex(old, topo, changed_ports)
        new_placed = {name: self._placed.get(name) for name in changed_ports}
        self.topo = topo
        dirty_routers = self._refresh_routers(changed_routers, changed_networks, changed_hosts,
                                              changed_ports)

        # Hosts whose needs change get recompiled whole; the rest patch cookies.
        touched_hosts = set(changed_hosts)
        for placed in (*old_placed.values(), *new_placed.values()):
            if placed is not None and placed.bound_host is not None:
                touched_hosts.add(placed.bound_host)
        if changed_routers:
            touched_hosts |= self._needs.keys() | topo.hosts.keys()
        rebuild = set(changed_hosts)
        old_needs = {host: self._needs.get(host, _Needs()) for host in touched_hosts}
        for host in touched_hosts:
            needs = self._needs_of(host) if host in topo.hosts else _Needs()
            if needs != old_needs[host]:
                rebuild.add(host)
            if host in topo.hosts:
                self._needs[host] = needs
            else:
                self._needs.pop(host, None)

        if changed_networks or changed_routers:
            for host in set(old.hosts) | set(topo.hosts):
                before = old_needs.get(host) or self._needs.get(host, _Needs())
                after = self._needs.get(host, _Needs())
                if (changed_networks & (before.networks | after.networks)
                        or changed_routers & (before.routers | after.routers)):
                    rebuild.add(host)

        old_overlay = self._overlay
        if self._overlay_affected(old, topo, delta, changed_ports | changed_networks):
            self._overlay, self.backend_endpoints = compile_services(topo, self._router_of_network)
            for host, owners in compile_acls(topo).items():
                self._overlay.setdefault(host, {}).update(owners)
        changes: dict[str, HostFlows] = {}
        for host in sorted(set(old.hosts) | set(topo.hosts)):
            before = self.flows.get(host, {})
            if host not in topo.hosts:
                self.flows.pop(host, None)
                diff = dict.fromkeys(before, frozenset())
            elif host in rebuild:
                after = self.flows[host] = self._compile_host(host)
                diff = dict(after) if not before else {
                    c: after.get(c, frozenset()) for c in before.keys() | after.keys()
                    if before.get(c) != after.get(c)}
            else:
                diff = self._patch_host(host, old_placed, new_placed, dirty_routers)
                diff.update(self._patch_overlay(host, old_overlay.get(host, {})))
            if diff:
                changes[host] = diff
        return changes

    @staticmethod
    def _overlay_affected(old: Topology, topo: Topology, delta, changed: set[str]) -> bool:
        """Whether the policies' or services' entries may have changed: one of them did, or a
        port, binding, network, host or router while some exist (selectors, peers, named ports
        and backends read them)."""
        for kind in ("policies", "services"):
            before, after = getattr(old, kind), getattr(topo, kind)
            if before is not after and (getattr(delta, kind) if delta else before != after):
                return True
        return bool(topo.policies or topo.services) and bool(
            changed or old.routers is not topo.routers or old.hosts is not topo.hosts)

    def _patch_overlay(self, host: str, before: HostFlows) -> HostFlows:
        flows, after = self.flows[host], self._overlay.get(host, {})
        diff = {}
        for cookie in before.keys() | after.keys():
            new = after.get(cookie, frozenset())
            if before.get(cookie, frozenset()) != new:
                diff[cookie] = new
                if new:
                    flows[cookie] = new
                else:
                    flows.pop(cookie, None)
        return diff

    def _index_routers(self, topo: Topology) -> None:
        self._router_of_network = {}
        self._routers_of_gateway_host = {}
        self._routers_of_floating_port = {}
        for router in topo.routers.values():
            for rp in router.ports:
                self._router_of_network[rp.network] = router.name
            if router.gateway is not None:
                self._routers_of_gateway_host.setdefault(router.gateway.host, set()).add(
                    router.name)
            for fip in router.floating_ips:
                self._routers_of_floating_port.setdefault(fip.port, set()).add(router.name)

    def _refresh_routers(self, changed_routers: set[str], changed_networks: set[str],
                         changed_hosts: set[str], changed_ports: set[str]) -> set[str]:
        """Recompute the fragments of routers whose inputs changed; return their names."""
        dirty = set(changed_routers)
        dirty.update(self._router_of_network[n] for n in changed_networks
                     if n in self._router_of_network)
        for host in changed_hosts:  # the default route tunnels to the gateway host's encap_ip
            dirty |= self._routers_of_gateway_host.get(host, set())
        for port in changed_ports:  # a floating IP maps to its port's IP
            dirty |= self._routers_of_floating_port.get(port, set())
        for name in dirty:
            router = self.topo.routers.get(name)
            if router is None:
                self._router_fragments.pop(name, None)
                continue
            topo = self.topo
            attached = tuple((rp, topo.networks[rp.network]) for rp in router.ports
                             if rp.network in topo.networks)
            gateway_host = topo.hosts.get(router.gateway.host) if router.gateway else None
            encap_ip = gateway_host.encap_ip if gateway_host else None
            networks = {rp.network for rp, _ in attached}
            floating = tuple((fip, topo.ports[fip.port].ip) for fip in router.floating_ips
                             if fip.port in topo.ports
                             and topo.ports[fip.port].network in networks)
            self._router_fragments[name] = (
                router_flows(router, attached, encap_ip, False, ()),
                router_flows(router, attached, encap_ip, True, floating))
        return dirty

    def _reindex(self, old: Topology, topo: Topology, names: set[str]) -> None:
        # Two passes: take every old entry out before putting new ones in, so a key that moves
        # from one port to another is never deleted after being re-added.
        for name in names:
            port, binding = old.ports.get(name), old.bindings.get(name)
            if port is not None:
                self._ports_of_network[port.network].discard(name)
            if binding is not None:
                self._ports_on_host[binding.host].discard(name)
            placed = self._placed.pop(name, None)
            if placed is not None:
                del self._remote[placed.network.name][placed.cookie]
        for name in names:
            port, binding = topo.ports.get(name), topo.bindings.get(name)
            if port is not None:
                self._ports_of_network.setdefault(port.network, set()).add(name)
            if binding is not None:
                self._ports_on_host.setdefault(binding.host, set()).add(name)
            placed = _place(topo, name, self._router_of_network)
            if placed is not None:
                self._placed[name] = placed
                self._remote.setdefault(placed.network.name, {})[placed.cookie] = placed.remote()

    def _needs_of(self, host: str) -> _Needs:
        local = frozenset(placed.network.name for placed in self._local_ports(host))
        routers = {self._router_of_network[n] for n in local if n in self._router_of_network}
        routers |= self._routers_of_gateway_host.get(host, set())
        networks = local.union(*({rp.network for rp in self.topo.routers[r].ports}
                                 for r in routers))
        return _Needs(local, networks, frozenset(routers))

    def _local_ports(self, host: str) -> list[_Placed]:
        return [self._placed[name] for name in self._ports_on_host.get(host, ())
                if name in self._placed and self._placed[name].bound_host == host]

    def _router_fragment(self, name: str, host: str) -> frozenset[Flow]:
        router = self.topo.routers[name]
        elsewhere, on_gateway = self._router_fragments[name]
        return on_gateway if router.gateway and router.gateway.host == host else elsewhere

    def _compile_host(self, host: str) -> HostFlows:
        result: HostFlows = {STATIC_COOKIE: static_flows(), **self._overlay.get(host, {})}
        needs = self._needs.get(host, _Needs())
        for name in sorted(needs.networks):
            result.update(self._remote.get(name, {}))
        for name in needs.local_networks:
            network = self.topo.networks[name]
            result[network_cookie(network)] = network_flows(
                network, name in self._router_of_network)
        for name in needs.routers:
            flows = self._router_fragment(name, host)
            if flows:
                result[router_cookie(self.topo.routers[name])] = flows
        for placed in self._local_ports(host):
            result[placed.cookie] = placed.local()
        return result

    def _patch_host(self, host: str, old_placed: dict[str, _Placed | None],
                    new_placed: dict[str, _Placed | None], dirty_routers: set[str]
                    ) -> HostFlows:
        """Replace the flows of changed ports and routers on a host whose needs stay the same.

        (A changed router's cookie may move; hosts of changed routers are rebuilt instead.)
        """
        flows = self.flows[host]
        needs = self._needs.get(host, _Needs())
        before: HostFlows = {}
        for placed in old_placed.values():
            if placed is not None and placed.cookie in flows:
                before[placed.cookie] = flows.pop(placed.cookie)
        for placed in new_placed.values():
            if placed is None or placed.network.name not in needs.networks:
                continue
            before.setdefault(placed.cookie, flows.get(placed.cookie, frozenset()))
            flows[placed.cookie] = placed.on(host)
        for name in dirty_routers & needs.routers:
            cookie = router_cookie(self.topo.routers[name])
            before.setdefault(cookie, flows.get(cookie, frozenset()))
            new = self._router_fragment(name, host)
            if new:
                flows[cookie] = new
            else:
                flows.pop(cookie, None)
        return {c: flows.get(c, frozenset()) for c, old in before.items()
                if flows.get(c, frozenset()) != old}


def compile_all(topo: Topology) -> dict[str, HostFlows]:
    """Desired flows of every host: {host: {cookie: frozenset[Flow]}}."""
    compiler = Compiler()
    compiler.update(topo)
    return compiler.flows


def compile_host(topo: Topology, host_name: str) -> HostFlows:
    """Desired flows of one host. A long-running controller keeps a Compiler instead."""
    return compile_all(topo).get(host_name, {})


def changed_objects(old: Mapping[int, frozenset[Flow]], new: Mapping[int, frozenset[Flow]]
                    ) -> set[int]:
    """Cookies whose flows differ between two compile_host results."""
    return {c for c in old.keys() | new.keys() if old.get(c) != new.get(c)}
