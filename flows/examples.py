"""Example topologies for tests, docs and benchmarks (deterministic)."""
from __future__ import annotations

import ipaddress
import random

from flows.model import (Binding, FloatingIpState, GatewayState, HostState, NetworkState,
                         PortState, RouterPortState, RouterState, RouteState, Topology)


def small_topology() -> Topology:
    """2 hosts, 2 networks with the same CIDR, 3 ports; port c (red) reuses a's MAC and IP."""
    return Topology.build(
        hosts=[HostState("h1", 1, "192.168.0.1"), HostState("h2", 2, "192.168.0.2")],
        networks=[NetworkState("blue", 100, "10.0.0.0/24", "10.0.0.1", 1450),
                  NetworkState("red", 200, "10.0.0.0/24", "10.0.0.1", 1450)],
        ports=[PortState("a", 1, "blue", "02:00:00:00:00:01", "10.0.0.2"),
               PortState("b", 2, "blue", "02:00:00:00:00:02", "10.0.0.3"),
               PortState("c", 3, "red", "02:00:00:00:00:01", "10.0.0.2")],
        bindings=[Binding("a", "h1", 1), Binding("b", "h2", 1), Binding("c", "h1", 2)])


def scale_topology(hosts: int = 100, ports_per_host: int = 100, networks: int = 50,
                   seed: int = 0) -> Topology:
    """`hosts` hosts with `ports_per_host` ports each, in networks picked at random."""
    rng = random.Random(seed)
    host_states = [HostState(f"h{i}", i, str(ipaddress.IPv4Address("172.16.0.1") + i))
                   for i in range(1, hosts + 1)]
    nets = [NetworkState(f"n{i}", i, "10.0.0.0/16", "10.0.0.1", 1450)
            for i in range(1, networks + 1)]
    ports, bindings = [], []
    next_ip = {n.name: int(ipaddress.IPv4Address("10.0.0.2")) for n in nets}
    key = 0
    for host in host_states:
        for ofport in range(1, ports_per_host + 1):
            key += 1
            net = rng.choice(nets).name
            ip = str(ipaddress.IPv4Address(next_ip[net]))
            next_ip[net] += 1
            mac = f"02:00:{key >> 24 & 0xff:02x}:{key >> 16 & 0xff:02x}:" \
                  f"{key >> 8 & 0xff:02x}:{key & 0xff:02x}"
            ports.append(PortState(f"p{key}", key, net, mac, ip))
            bindings.append(Binding(f"p{key}", host.name, ofport))
    return Topology.build(host_states, nets, ports, bindings)


def routed_topology(next_hop_mac: str | None = "02:ee:00:00:00:fe") -> Topology:
    """Two routers with overlapping subnets, one with a gateway on h3, and a lone network.

    r1 (key 1000): blue 10.0.0.0/24 + green 10.1.0.0/24, route 10.9.0.0/16 via vm (10.1.0.10),
                   gateway on h3 (203.0.113.10, next hop 203.0.113.1), floating IP
                   203.0.113.20 -> b
    r2 (key 2000): red 10.0.0.0/24 + orange 10.1.0.0/24 (the same subnets as r1's)
    lone 10.5.0.0/24: no router
    ports: a (blue, h1), a2 (blue, h2), b (green, h1), c (green, h2), vm (green, h2),
           r (red, h1, a's IP), o (orange, h2, b's IP), l (lone, h1); h3 has no ports.
    """
    nets = {n.name: n for n in (
        NetworkState("blue", 100, "10.0.0.0/24", "10.0.0.1"),
        NetworkState("green", 101, "10.1.0.0/24", "10.1.0.1"),
        NetworkState("red", 200, "10.0.0.0/24", "10.0.0.1"),
        NetworkState("orange", 201, "10.1.0.0/24", "10.1.0.1"),
        NetworkState("lone", 300, "10.5.0.0/24", "10.5.0.1"))}
    placed = [("a", "blue", "10.0.0.2", "h1"), ("a2", "blue", "10.0.0.3", "h2"),
              ("b", "green", "10.1.0.2", "h1"), ("c", "green", "10.1.0.3", "h2"),
              ("vm", "green", "10.1.0.10", "h2"), ("r", "red", "10.0.0.2", "h1"),
              ("o", "orange", "10.1.0.2", "h2"), ("l", "lone", "10.5.0.2", "h1")]
    ports = [PortState(name, key, net, f"02:00:00:00:01:{key:02x}", ip)
             for key, (name, net, ip, _) in enumerate(placed, 1)]
    bindings = [Binding(name, host, key) for key, (name, _, _, host) in enumerate(placed, 1)]
    r1 = RouterState(
        "r1", 1000, (RouterPortState("blue", "02:a1:00:00:00:64"),
                     RouterPortState("green", "02:a1:00:00:00:65")),
        routes=(RouteState("10.9.0.0/16", "10.1.0.10"),),
        gateway=GatewayState("h3", "02:ee:00:00:00:01", "203.0.113.10", 24, "203.0.113.1",
                             next_hop_mac),
        floating_ips=(FloatingIpState("203.0.113.20", "b"),))
    r2 = RouterState("r2", 2000, (RouterPortState("red", "02:a2:00:00:00:c8"),
                                  RouterPortState("orange", "02:a2:00:00:00:c9")))
    hosts = [HostState(f"h{i}", i, f"192.168.0.{i}") for i in (1, 2, 3)]
    return Topology.build(hosts, nets.values(), ports, bindings, routers=[r1, r2])


def routed_scale_topology(hosts: int = 100, ports_per_host: int = 100, routers: int = 10,
                          networks_per_router: int = 5, seed: int = 0) -> Topology:
    """scale_topology with distinct subnets, grouped `networks_per_router` per router; the
    first router has a gateway on the last host."""
    base = scale_topology(hosts, ports_per_host, routers * networks_per_router, seed)
    nets = [NetworkState(n.name, n.key, f"10.{n.key}.0.0/16", f"10.{n.key}.0.1", n.mtu)
            for n in base.networks.values()]
    ports = [PortState(p.name, p.key, p.network, p.mac,
                       p.ip.replace("10.0.", f"10.{base.networks[p.network].key}.", 1))
             for p in base.ports.values()]
    router_states = []
    for r in range(routers):
        members = nets[r * networks_per_router:(r + 1) * networks_per_router]
        gateway = GatewayState(f"h{hosts}", "02:ee:00:00:00:01", "203.0.113.10", 24,
                               "203.0.113.1", "02:ee:00:00:00:fe") if r == 0 else None
        router_states.append(RouterState(
            f"r{r}", 1 << 20 | r if gateway is None else 60000 + r,
            tuple(RouterPortState(n.name, f"02:a0:00:00:{r:02x}:{i:02x}")
                  for i, n in enumerate(members)),
            gateway=gateway))
    return Topology.build(base.hosts.values(), nets, ports, base.bindings.values(),
                          routers=router_states)
