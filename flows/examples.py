"""Example topologies for tests, docs and benchmarks (deterministic)."""
from __future__ import annotations

import ipaddress
import random

from flows.model import Binding, HostState, NetworkState, PortState, Topology


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
