"""Services -> a load balancer in OpenFlow on the sender's host: select groups and ct(nat).

A Service's clients are the ports of its network and of the networks on the same router; its
backends are the bound ports of its network that its selector picks (a named targetPort resolves
per backend; one without it is not a backend of that port). On every host with a client:

  SERVICE        (client network, VIP, protocol, port) -> reg1 = service key, ct(LB zone, nat):
                 an established connection gets its DNAT back
  SERVICE_NAT    established -> SERVICE_ROUTE; new -> the service port's select group, whose
                 buckets each commit the DNAT to one backend; with sessionAffinity ClientIP a
                 multipath hash of the client address picks the backend (SERVICE_AFFINITY)
                 instead; no backend: the controller rejects the connection (reject meter)
  SERVICE_ROUTE  (service, client network, backend) -> the backend's network and MAC; a backend
                 that is its own client is also SNATed to the VIP (hairpin zone)
  SERVICE_REPLY  (backend address, target port) -> ct(LB zone, nat): the reply's source becomes
                 the VIP again, on the client's host, before OUTPUT
  SERVICE        (hairpin reply: backend -> VIP from the target port) -> un-SNAT, un-DNAT
                 (SERVICE_HAIRPIN), straight back to the backend

type LoadBalancer, on the router's gateway host: ARP for the service's external address is
answered with the gateway's MAC, and a connection to it from the uplink enters the service's
load balancing in the router's datapath (UPLINK_IN -> ct -> SERVICE_NAT), like a client's; a
backend's reply, tunnelled to the gateway host, is un-DNATed there
(GATEWAY, LB zone) and leaves by UPLINK_OUT, bypassing the router's SNAT.

Groups: id = service key << 8 | port index. Owner: SERVICE|service key on each client host (and
on the gateway host of a LoadBalancer service).
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from flows.model import (CT_EST, CT_NEW, CT_TRK, ETH_TYPE_IPV4, IP_PROTO_SCTP, IP_PROTO_TCP,
                         IP_PROTO_UDP, OFPP_IN_PORT, Bucket, Flow, Group, Meter, NetworkState,
                         PortState, RouterState, Topology, arp_reply, arp_request_for)
from flows.pipeline import (DNS, DNS_BURST, DNS_METER, DNS_RATE, GATEWAY, HAIRPIN_ZONE,
                            LB_ZONE, OUTPUT, REG_BACKEND, REG_DATAPATH, REG_LB_CHECKED,
                            REG_OUTPORT, REG_SERVICE, UPLINK_IN, UPLINK_OUT,
                            REJECT_BURST, REJECT_METER, REJECT_RATE, SERVICE, SERVICE_AFFINITY,
                            SERVICE_HAIRPIN, SERVICE_NAT, SERVICE_REPLY, SERVICE_ROUTE,
                            STATIC_COOKIE, Category, goto, make_cookie, proceed)
from flows.policy import ServicePort, ServiceState

PROTO = {"TCP": (IP_PROTO_TCP, "tcp"), "UDP": (IP_PROTO_UDP, "udp"),
         "SCTP": (IP_PROTO_SCTP, "sctp")}
PRIORITY = 100
PRIORITY_HAIRPIN = 110
IPV4 = ("eth_type", ETH_TYPE_IPV4)
CT_STATE_NEW = ("ct_state", (CT_TRK | CT_NEW, CT_TRK | CT_NEW))
CT_STATE_EST = ("ct_state", (CT_TRK | CT_EST, CT_TRK | CT_EST))


def service_cookie(service: ServiceState) -> int:
    return make_cookie(Category.SERVICE, service.key)


def group_id(service: ServiceState, index: int) -> int:
    return service.key << 8 | index


@lru_cache(maxsize=1)
def static_service_flows() -> frozenset:
    """Every host: the service stages pass what is not a service's, established service
    connections go on to their route, and the two meters exist."""
    return frozenset({
        Flow(DNS.id, 0, (), (proceed(DNS),), STATIC_COOKIE),
        Flow(SERVICE.id, 0, (), (proceed(SERVICE),), STATIC_COOKIE),
        Flow(SERVICE_NAT.id, PRIORITY, (CT_STATE_EST,), (proceed(SERVICE_NAT),), STATIC_COOKIE),
        Flow(SERVICE_REPLY.id, 0, (), (proceed(SERVICE_REPLY),), STATIC_COOKIE),
        Meter(DNS_METER, DNS_RATE, DNS_BURST),
        Meter(REJECT_METER, REJECT_RATE, REJECT_BURST),
    })


def _l4(protocol: str, port: int, direction: str = "dst") -> tuple:
    number, prefix = PROTO[protocol]
    return (IPV4, ("ip_proto", number), (f"{prefix}_{direction}", port))


def target_port(backend: PortState, sp: ServicePort) -> int | None:
    """The backend's port for a service port: the number, or its named port of that protocol."""
    if isinstance(sp.target_port, int):
        return sp.target_port
    return next((number for name, protocol, number in backend.named_ports
                 if name == sp.target_port and protocol == sp.protocol), None)


def backends(topo: Topology, service: ServiceState) -> list[PortState]:
    """The ready backends: bound ports of the service's network its selector picks."""
    if not service.selector:
        return []
    return sorted((p for p in topo.ports.values()
                   if p.network == service.network and p.name in topo.bindings
                   and topo.bindings[p.name].host in topo.hosts
                   and all(dict(p.labels).get(k) == v for k, v in service.selector)),
                  key=lambda p: p.name)


@lru_cache(maxsize=4096)
def service_flows(service: ServiceState, network: NetworkState, leg_macs: tuple,
                  chosen: tuple[PortState, ...], ofports: tuple[int, ...]) -> frozenset:
    """A service's flows on a client host. leg_macs: (client network key, its router leg MAC in
    the service's network or None for the service's own network) for every client network;
    ofports: each chosen backend's, on its host."""
    cookie, key = service_cookie(service), service.key
    entries: set = set()
    for index, sp in enumerate(service.ports):
        proto_match = _l4(sp.protocol, sp.port)
        for client_key, _ in leg_macs:
            entries.add(Flow(SERVICE.id, PRIORITY,
                             ((REG_DATAPATH, client_key), ("ipv4_dst", service.cluster_ip),
                              *proto_match),
                             (("set_field", REG_SERVICE, key),
                              ("ct", False, LB_ZONE, SERVICE_NAT.name, ("nat",))), cookie))
        new = ((REG_SERVICE, key), CT_STATE_NEW, *proto_match)
        targets = [(b, target_port(b, sp)) for b in chosen]
        targets = [(b, t) for b, t in targets if t is not None]
        if not targets:  # reject: the controller answers with a RST or a port unreachable
            entries.add(Flow(SERVICE_NAT.id, PRIORITY, new,
                             (("meter", REJECT_METER), ("controller",)), cookie))
            continue

        def dnat(backend: PortState, port: int) -> tuple:
            return (("ct", True, LB_ZONE, SERVICE_ROUTE.name, ("dnat", backend.ip, port)),)
        if service.session_affinity:
            entries.add(Flow(SERVICE_NAT.id, PRIORITY, new,
                             (("multipath", key & 0xFFFF, len(targets), REG_BACKEND),
                              goto(SERVICE_AFFINITY)), cookie))
            for i, (b, t) in enumerate(targets):
                entries.add(Flow(SERVICE_AFFINITY.id, PRIORITY,
                                 ((REG_BACKEND, i), *new), dnat(b, t), cookie))
        else:
            gid = group_id(service, index)
            entries.add(Group(gid, "select", tuple(Bucket(dnat(b, t)) for b, t in targets)))
            entries.add(Flow(SERVICE_NAT.id, PRIORITY, new, (("group", gid),), cookie))
        for b, t in targets:
            reply = _l4(sp.protocol, t, "src")
            entries.add(Flow(SERVICE_REPLY.id, PRIORITY, (("ipv4_src", b.ip), *reply),
                             (("ct", False, LB_ZONE, OUTPUT.name, ("nat",)),), cookie))
            # hairpin reply: the backend answers the VIP (its connection was SNATed to it)
            entries.add(Flow(SERVICE.id, PRIORITY_HAIRPIN,
                             ((REG_DATAPATH, network.key), ("ipv4_src", b.ip),
                              ("ipv4_dst", service.cluster_ip), *reply),
                             (("set_field", REG_SERVICE, key),
                              ("ct", False, HAIRPIN_ZONE, SERVICE_HAIRPIN.name, ("nat",))), cookie))
    for b, ofport in zip(chosen, ofports):
        # A hairpin connection leaves by the port it came in by, which OpenFlow only allows as
        # IN_PORT (an output to the in_port is dropped). Only on b's host can it match.
        entries.add(Flow(OUTPUT.id, PRIORITY_HAIRPIN, ((REG_OUTPORT, b.key), ("in_port", ofport)),
                         (("output", OFPP_IN_PORT),), cookie))
        for client_key, leg_mac in leg_macs:
            to_backend = ((REG_SERVICE, key), (REG_DATAPATH, client_key), IPV4,
                          ("ipv4_dst", b.ip))
            routed = () if leg_mac is None else (
                ("set_field", REG_DATAPATH, network.key), ("set_field", "eth_src", leg_mac),
                ("dec_ttl",))
            entries.add(Flow(SERVICE_ROUTE.id, PRIORITY, to_backend,
                             (*routed, ("set_field", "eth_dst", b.mac), proceed(SERVICE_ROUTE)),
                             cookie))
        # hairpin: the backend is its own client; SNAT it to the VIP, then route it as above
        entries.add(Flow(SERVICE_ROUTE.id, PRIORITY_HAIRPIN,
                         ((REG_SERVICE, key), (REG_DATAPATH, network.key), IPV4,
                          ("ipv4_src", b.ip), ("ipv4_dst", b.ip)),
                         (("ct", True, HAIRPIN_ZONE, SERVICE_ROUTE.name,
                           ("snat", service.cluster_ip)),), cookie))
        entries.add(Flow(SERVICE_HAIRPIN.id, PRIORITY,
                         ((REG_SERVICE, key), ("ct_zone", HAIRPIN_ZONE), IPV4,
                          ("ipv4_dst", b.ip)),
                         (("ct", False, LB_ZONE, SERVICE_HAIRPIN.name, ("nat",)),), cookie))
        entries.add(Flow(SERVICE_HAIRPIN.id, PRIORITY,
                         ((REG_SERVICE, key), ("ct_zone", LB_ZONE), IPV4, ("ipv4_dst", b.ip)),
                         (("move", "eth_dst", "eth_src", 48), ("set_field", "eth_dst", b.mac),
                          ("set_field", REG_OUTPORT, b.key), goto(OUTPUT)), cookie))
    return frozenset(entries)


@lru_cache(maxsize=1024)
def load_balancer_flows(service: ServiceState, network: NetworkState, router: RouterState,
                        leg_mac: str, chosen: tuple[PortState, ...]) -> frozenset:
    """A LoadBalancer service's flows on its router's gateway host (see the module docstring)."""
    cookie, key, lb_ip, gw = service_cookie(service), service.key, service.load_balancer_ip, \
        router.gateway
    in_router = ((REG_DATAPATH, router.key),)
    entries = {
        Flow(UPLINK_IN.id, PRIORITY, arp_request_for(lb_ip), arp_reply(gw.mac, lb_ip), cookie),
        # the backend's reply has been un-DNATed: out, as the load balancer's address
        Flow(GATEWAY.id, PRIORITY_HAIRPIN + 10,
             (*in_router, (REG_LB_CHECKED, 1), ("ct_zone", LB_ZONE), CT_STATE_EST),
             (goto(UPLINK_OUT),), cookie),
    }
    for sp in service.ports:  # (ct recirculates back to SERVICE_NAT: a goto may only go forward)
        entries.add(Flow(UPLINK_IN.id, PRIORITY, (("ipv4_dst", lb_ip), *_l4(sp.protocol, sp.port)),
                         (("set_field", REG_DATAPATH, router.key), ("set_field", REG_SERVICE, key),
                          ("ct", False, LB_ZONE, SERVICE_NAT.name, ("nat",))), cookie))
        for b in chosen:
            t = target_port(b, sp)
            if t is not None:
                entries.add(Flow(GATEWAY.id, PRIORITY_HAIRPIN,
                                 (*in_router, (REG_LB_CHECKED, 0), ("ipv4_src", b.ip),
                                  *_l4(sp.protocol, t, "src")),
                                 (("set_field", REG_LB_CHECKED, 1),
                                  ("ct", False, LB_ZONE, GATEWAY.name, ("nat",))), cookie))
    for b in chosen:
        entries.add(Flow(SERVICE_ROUTE.id, PRIORITY,
                         ((REG_SERVICE, key), *in_router, IPV4, ("ipv4_dst", b.ip)),
                         (("set_field", REG_DATAPATH, network.key), ("set_field", "eth_src", leg_mac),
                          ("dec_ttl",), ("set_field", "eth_dst", b.mac), proceed(SERVICE_ROUTE)),
                         cookie))
    return frozenset(entries)


def compile_services(topo: Topology, router_of: Mapping[str, str]
                     ) -> tuple[dict[str, dict[int, frozenset]], frozenset]:
    """({host: {cookie: entries}} for every service, on the hosts of its clients; the (IP
    protocol, address, port) of every backend: when one goes, the connections to it are flushed
    from conntrack on every host, as they would otherwise linger, UDP ones for good)."""
    result: dict[str, dict[int, frozenset]] = {}
    endpoints = set()
    if not topo.services:
        return result, frozenset()
    local_networks: dict[str, set[str]] = {}  # network -> hosts with a bound port in it
    for binding in topo.bindings.values():
        port = topo.ports.get(binding.port)
        if port is not None and binding.host in topo.hosts:
            local_networks.setdefault(port.network, set()).add(binding.host)
    for service in topo.services.values():
        network = topo.networks.get(service.network)
        if network is None:
            continue
        router = topo.routers.get(router_of.get(service.network, ""))
        legs = {rp.network: rp.mac for rp in router.ports} if router else {}
        clients = [service.network, *(n for n in sorted(legs) if n != service.network)]
        leg_macs = tuple((topo.networks[n].key, None if n == service.network
                          else legs[service.network])
                         for n in clients if n in topo.networks)
        bound = backends(topo, service)
        # A backend whose host is down gets no new connection; it stays an endpoint (its connections
        # are not flushed), so those it had go on if its host comes back.
        chosen = tuple(b for b in bound if topo.hosts[topo.bindings[b.name].host].up)
        endpoints.update((PROTO[sp.protocol][0], b.ip, t) for b in bound for sp in service.ports
                         if (t := target_port(b, sp)) is not None)
        ofports = tuple(topo.bindings[b.name].ofport for b in chosen)
        entries = service_flows(service, network, leg_macs, chosen, ofports)
        hosts = set().union(*(local_networks.get(n, set()) for n in clients))
        for host in hosts:
            result.setdefault(host, {})[service_cookie(service)] = entries
        if service.load_balancer_ip and router and router.gateway \
                and router.gateway.host in topo.hosts:
            on_gateway = load_balancer_flows(service, network, router, legs[service.network],
                                             chosen)
            owners = result.setdefault(router.gateway.host, {})
            owners[service_cookie(service)] = owners.get(service_cookie(service), frozenset()) \
                | entries | on_gateway
    return result, frozenset(endpoints)
