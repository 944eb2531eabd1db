"""NetworkPolicy in the pure compiler: flows per host against rules x peers x selected ports, and
the cost of one policy change at 1,000 ports and 100 policies.

Part 1 grows one of (rules, peers per rule, selected ports) at a time from a base of 4 each, and
reports the policy flows on the host holding the selected ports: they must grow additively (a
doubling of one factor adds a constant), never as the product.
Part 2: 10 hosts x 100 ports in 10 networks on one router, 100 policies (each selecting ~10 ports
by label, 2 ingress rules with a pod selector and a port); one policy's rule changed, one port's
label changed (so that it becomes or stops being a peer of other policies): the time of Compiler.update and the flow entries it changes, summed over hosts
(what the switches are then sent), medians of N runs.

    .venv/bin/python bench/policy_scale.py [--quick]
"""
import argparse
import gc
import ipaddress
import time

import _common
from _common import median, table

from flows.compiler import Compiler, compile_all
from flows.model import (Binding, HostState, NetworkState, PortState, RouterPortState, RouterState,
                         Topology)
from flows.pipeline import Category
from flows.policy import Peer, PolicyPort, PolicyRule, PolicyState, Selector


def labels(**kv):
    return tuple(sorted(kv.items()))


def acl_entries(host_flows):
    return sum(len(f) for c, f in host_flows.items() if c >> 40 in (Category.POLICY, Category.ACL))


def growth(rules, peers, selected):
    """ACL flows on h1 for one policy: `selected` ports selected, `rules` ingress rules each with
    `peers` peer ports (by label) and 2 ports."""
    net = NetworkState("n", 10, "10.0.0.0/16", "10.0.0.1")
    ports, bindings, key = [], [], 0
    for role, count in (("sel", selected), *((f"peer{r}", peers) for r in range(rules))):
        for _ in range(count):
            key += 1
            ports.append(PortState(f"p{key}", key, "n", f"02:00:00:00:{key >> 8:02x}:{key & 255:02x}",
                                   str(ipaddress.IPv4Address("10.0.1.0") + key), labels=labels(role=role)))
            bindings.append(Binding(f"p{key}", "h1", key))
    rule_list = tuple(PolicyRule((Peer(Selector(labels(role=f"peer{r}"))),),
                                 (PolicyPort("TCP", 80), PolicyPort("TCP", 443)))
                      for r in range(rules))
    pol = PolicyState("p", "n", Selector(labels(role="sel")), rule_list, None)
    topo = Topology.build([HostState("h1", 1, "192.168.0.1")], [net], ports, bindings, policies=[pol])
    return acl_entries(compile_all(topo)["h1"])


def scale_topology(hosts=10, ports_per_host=100, networks=10, policies=100):
    nets = [NetworkState(f"n{i}", 100 + i, f"10.{i}.0.0/16", f"10.{i}.0.1", labels=labels(ns=f"n{i}"))
            for i in range(networks)]
    router = RouterState("r", 1, tuple(RouterPortState(n.name, f"0a:00:01:00:00:{i:02x}")
                                       for i, n in enumerate(nets)))
    ports, bindings = [], []
    for h in range(hosts):
        for j in range(ports_per_host):
            key = h * ports_per_host + j + 1
            net = nets[key % networks]
            ports.append(PortState(f"p{key}", key, net.name, f"02:00:00:00:{key >> 8:02x}:{key & 255:02x}",
                                   str(ipaddress.IPv4Address(net.gateway_ip) + 1 + key // networks),
                                   labels=labels(app=f"a{key % 100}", tier=f"t{key % 7}")))
            bindings.append(Binding(f"p{key}", f"h{h}", j + 1))
    pols = [policy(i, nets[i % networks].name) for i in range(policies)]
    return Topology.build([HostState(f"h{h}", h + 1, f"192.168.0.{h + 1}") for h in range(hosts)],
                          nets, ports, bindings, routers=[router], policies=pols)


def policy(i, network, port=5432):
    rules = (PolicyRule((Peer(Selector(labels(tier=f"t{i % 7}"))),), (PolicyPort("TCP", port),)),
             PolicyRule((Peer(Selector(labels(app=f"a{(i + 1) % 100}")),
                         Selector(labels(ns=network))),), (PolicyPort("TCP", 8080),)))
    return PolicyState(f"pol{i}", network, Selector(labels(app=f"a{i % 100}")), rules, None)


def changed_entries(changes):
    return sum(len(f) for host in changes.values() for f in host.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    a = ap.parse_args()
    runs = 3 if a.quick else 7
    print(_common.machine())
    print("\n## ACL flows on the selected ports' host for one policy (2 ports per rule)\n")
    rows, base = [], growth(4, 4, 4)
    for label, args in (("base 4 x 4 x 4", (4, 4, 4)), ("rules x2", (8, 4, 4)),
                        ("rules x4", (16, 4, 4)), ("peers x2", (4, 8, 4)), ("peers x4", (4, 16, 4)),
                        ("selected x2", (4, 4, 8)), ("selected x4", (4, 4, 16)),
                        ("all x4", (16, 16, 16))):
        flows = growth(*args)
        rows.append((label, *args, flows, flows - base, args[0] * args[1] * args[2]))
    print(table(("case", "rules", "peers", "selected", "flows", "vs base", "product"), rows))

    topo = scale_topology()
    gc.collect()
    t = time.perf_counter()
    compiler = Compiler()
    compiler.update(topo)
    full = time.perf_counter() - t
    per_host = [acl_entries(f) for f in compiler.flows.values()]
    times, sizes, label_times, label_sizes = [], [], [], []
    for run in range(runs):
        changed = topo.replace(policies=[policy(0, "n0", port=6000 + run)])
        t = time.perf_counter()
        changes = compiler.update(changed)
        times.append(time.perf_counter() - t)
        sizes.append(changed_entries(changes))
        p5 = changed.ports["p5"]  # tier t5 <-> t0: a peer of other policies of its network
        relabelled = changed.replace(ports=[PortState(p5.name, p5.key, p5.network, p5.mac, p5.ip,
                                                      labels=labels(app="a5", tier=f"t{5 * (run % 2)}"))])
        t = time.perf_counter()
        changes = compiler.update(relabelled)
        label_times.append(time.perf_counter() - t)
        label_sizes.append(changed_entries(changes))
        topo = relabelled
    print(f"\n## 1,000 ports, 100 policies, 10 hosts (full compile {full:.2f} s, ACL flows per host "
          f"median {median(per_host):.0f})\n")
    print(table(("change", "update ms (median)", "entries changed, all hosts (median)"),
                [("one policy's rule port", f"{median(times) * 1000:.0f}", f"{median(sizes):.0f}"),
                 ("one port's labels", f"{median(label_times) * 1000:.0f}", f"{median(label_sizes):.0f}")]))


if __name__ == "__main__":
    main()
