"""Pure compiler, L3: flows per host as routers, networks and ports grow, up to
10 routers x 10 networks x ~100 ports per network (10,000 ports on 100 hosts).

Topologies: flows.examples.routed_scale_topology(hosts, ports_per_host, routers, networks_per_router):
every port in a network picked at random, distinct /16 subnets, networks grouped per router, the
first router with a gateway (SNAT) on the last host. "switched" is the same topology with the
routers removed (same hosts, networks, ports, bindings), to show what routing adds.

    .venv/bin/python bench/flows_scale_l3.py [--quick] [--hosts 100] [--runs 3]
"""
import argparse
import gc
import sys
import time

import _common
from _common import median, table

from flows import compiler as fc
from flows.examples import routed_scale_topology
from flows.model import Topology


def clear_caches():
    for name in ("static_flows", "network_flows", "_arp_responder", "_neighbor", "local_port_flows",
                 "remote_port_flows", "router_flows"):
        fn = getattr(fc, name, None)
        if fn is not None and hasattr(fn, "cache_clear"):
            fn.cache_clear()


def without_routers(topo):
    return Topology.build(topo.hosts.values(), topo.networks.values(), topo.ports.values(),
                          topo.bindings.values())


def per_host(flows):
    return sorted(sum(len(f) for f in hf.values()) for hf in flows.values())


def compile_once(topo):
    clear_caches()
    gc.collect()
    c = fc.Compiler()
    t = time.perf_counter()
    c.update(topo)
    return time.perf_counter() - t, c.flows


def measure(hosts, pph, routers, npr, runs):
    topo = routed_scale_topology(hosts, pph, routers, npr)
    times, flows = [], None
    for _ in range(runs):
        dt, flows = compile_once(topo)
        times.append(dt)
    routed = per_host(flows)
    _, sflows = compile_once(without_routers(topo))
    switched = per_host(sflows)
    return {"hosts": hosts, "routers": routers, "networks": routers * npr, "ports": len(topo.ports),
            "routed": routed, "switched": switched, "time": median(times), "times": times,
            "gw_host": per_host({f"h{hosts}": flows[f"h{hosts}"]})[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="hosts 20, 1 run")
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3, help="compiles per size (median time)")
    a = ap.parse_args()
    hosts, runs = (20, 1) if a.quick else (a.hosts, a.runs)

    # Growth in ports: 10 routers x 10 networks, ports per host 1 .. 100 (so ~hosts/1 .. ~hosts
    # ports per network).
    grow = [measure(hosts, pph, 10, 10, runs) for pph in (1, 5, 10, 25, 50, 100)]
    # Growth in routers / networks at ~hosts ports per network.
    shapes = [measure(hosts, r * n, r, n, runs) for r, n in ((1, 1), (1, 10), (10, 1), (10, 10))]

    _common.header(f"flows_scale_l3: routed_scale_topology, {hosts} hosts, compile = fresh Compiler, "
                   f"caches cleared, median of {runs}", sys.argv)
    rows, prev = [], None
    for m in grow:
        r, s = m["routed"], m["switched"]
        marginal = "-" if prev is None else \
            f"{(median(r) - median(prev['routed'])) / (m['ports'] - prev['ports']):.2f}"
        rows.append([f"{m['routers']} x {m['networks'] // m['routers']}", m["ports"],
                     f"{m['ports'] / m['networks']:.0f}", f"{median(r):.0f}", r[-1], m["gw_host"],
                     f"{median(r) / m['ports']:.2f}", marginal, f"{median(s):.0f}",
                     f"{median(r) / median(s):.2f}", f"{m['time'] * 1e3:.0f}"])
        prev = m
    print(table(["routers x networks each", "ports", "ports per network", "flows per host, median",
                 "max", "gateway host", "flows per host / ports", "marginal flows per host per added port",
                 "same without routers: median", "routed / switched", "full compile ms"], rows))
    print()
    rows = []
    for m in shapes:
        r, s = m["routed"], m["switched"]
        rows.append([m["routers"], m["networks"], m["ports"], f"{median(r):.0f}", r[-1],
                     f"{median(r) / m['ports']:.2f}", f"{median(s):.0f}", f"{median(s) / m['ports']:.2f}",
                     f"{m['time'] * 1e3:.0f}"])
    print(table(["routers", "networks", "ports", "flows per host, median", "max", "per port",
                 "without routers: median", "per port", "full compile ms"], rows))
    big = grow[-1]
    print(f"\nFull compile at {big['routers']} routers x {big['networks']} networks x {big['ports']} ports, "
          f"{hosts} hosts: median {big['time'] * 1e3:.0f} ms "
          f"(each: {', '.join(f'{t * 1e3:.0f}' for t in big['times'])} ms); "
          f"{sum(big['routed'])} flows in total.")


if __name__ == "__main__":
    main()
