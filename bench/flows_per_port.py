"""Flows per port on a real lab: attach N containers (alternating hosts, one network) and count the
flows on every host's br-int (`ovs-ofctl -O OpenFlow13 dump-flows br-int` in the host's namespace)
after each attach.

    .venv/bin/python bench/flows_per_port.py [--quick] [--hosts 2,4] [--ports 40]
Peer (OVN, same lab): 8 flows on the port's own host, 3 on every other host with that network;
139 flows per host at 2 ports -> 678 at 100 ports with 2 hosts. Target: at most OVN's on both counts.
"""
import argparse
import collections
import re
import sys

import _common
from _common import median, table
from _labutil import new_lab

from weft import lab as weftlab

CHECKPOINTS = (2, 10, 20, 40, 100)


def count_flows(lab, host):
    out = lab.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout
    tables = collections.Counter(int(m.group(1)) for m in re.finditer(r"\btable=(\d+)", out))
    return sum(tables.values()), tables


def run(hosts, n_ports):
    lab = new_lab(f"f{hosts}", hosts)
    try:
        lab.api.post("/v1/networks", {"name": "n1", "cidr": "10.1.0.0/16"})
        names = [f"h{i}" for i in range(1, hosts + 1)]
        counts = {h: count_flows(lab, h)[0] for h in names}
        at = {0: dict(counts)}
        own, other = [], []
        for i in range(n_ports):
            host = names[i % hosts]
            c = f"c{i}"
            lab.container(c, host)
            weftlab.container_attach(lab.name, c, "n1", ip=f"10.1.{1 + i // 250}.{1 + i % 250}")
            new = {h: count_flows(lab, h)[0] for h in names}
            if i >= hosts:  # the network is already on every host: steady state
                own.append(new[host] - counts[host])
                other.extend(new[h] - counts[h] for h in names if h != host)
            counts = new
            at[i + 1] = dict(new)
        tables = count_flows(lab, "h1")[1]
        return at, own, other, tables
    finally:
        lab.down()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 hosts, 20 ports")
    ap.add_argument("--hosts", default="2,4", help="comma-separated host counts (default 2,4)")
    ap.add_argument("--ports", type=int, default=40)
    a = ap.parse_args()
    host_counts = [2] if a.quick else [int(x) for x in a.hosts.split(",")]
    n_ports = 20 if a.quick else a.ports
    results = {h: run(h, n_ports) for h in host_counts}

    _common.header(f"flows_per_port: up to {n_ports} ports, one network, containers on alternating hosts",
                   sys.argv)
    rows = []
    for hosts, (at, own, other, _) in results.items():
        for n in [c for c in CHECKPOINTS if c <= n_ports] + ([n_ports] if n_ports not in CHECKPOINTS else []):
            vals = list(at[n].values())
            rows.append([hosts, n, " / ".join(str(at[n][h]) for h in sorted(at[n])),
                         f"{sum(vals) / len(vals):.0f}"])
    print(table(["hosts", "ports", "flows on br-int per host (h1 / h2 / ...)", "mean per host"], rows))
    print()
    rows = []
    for hosts, (at, own, other, _) in results.items():
        first, last = 2, n_ports
        per_host_slope = (sum(at[last].values()) - sum(at[first].values())) / hosts / (last - first)
        rows.append([hosts, f"{median(own):g} (min {min(own)}, max {max(own)})",
                     f"{median(other):g} (min {min(other)}, max {max(other)})",
                     f"{per_host_slope:.2f}"])
    print(table(["hosts", "marginal flows per port, its own host (median)",
                 "marginal flows per port, each other host (median)",
                 f"flows per port per host, {2} -> {n_ports} ports"], rows))
    hosts, (at, own, other, tables) = next(iter(results.items()))
    print(f"\nFlows by table on h1 ({hosts} hosts, {n_ports} ports): "
          + ", ".join(f"table {t}: {n}" for t, n in sorted(tables.items())))
    print("\nOVN: 8 on the port's own host, 3 on every other host; 139 per host at 2 ports -> 678 at 100 "
          "ports with 2 hosts (5.5 per port per host; 4.25 with 4 hosts). Target: at most OVN's.")


if __name__ == "__main__":
    main()
