"""Pure compiler at scale: 100 hosts x 100 ports (10,000 ports, 50 networks).

Reports the full compile time (median of N fresh Compilers, fragment caches cleared between runs),
flows per host, and for one port added: the time of Compiler.update and the flows it changes per host.

    .venv/bin/python bench/compile_scale.py [--quick] [--hosts 100] [--ports 100] [--networks 50]
Targets: full compile < 1 s; one port change < 5 ms touching O(1) flows per host.
"""
import argparse
import gc
import sys
import time

import _common
from _common import median, table

from flows import compiler as fc
from flows.examples import scale_topology
from flows.model import Binding, PortState


def clear_caches():
    for fn in (fc.static_flows, fc.network_flows, fc._arp_responder, fc.local_port_flows,
               fc.remote_port_flows):
        fn.cache_clear()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 runs instead of 5")
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--ports", type=int, default=100, help="ports per host")
    ap.add_argument("--networks", type=int, default=50)
    ap.add_argument("--runs", type=int, default=None)
    a = ap.parse_args()
    runs = a.runs or (3 if a.quick else 5)

    t = time.perf_counter()
    topo = scale_topology(a.hosts, a.ports, a.networks)
    build_s = time.perf_counter() - t

    full, comp = [], None
    for _ in range(runs):
        clear_caches()
        gc.collect()
        comp = fc.Compiler()
        t = time.perf_counter()
        comp.update(topo)
        full.append(time.perf_counter() - t)
    # And with warm fragment caches (what a controller restarting its Compiler in-process sees).
    warm = []
    for _ in range(runs):
        gc.collect()
        c2 = fc.Compiler()
        t = time.perf_counter()
        c2.update(topo)
        warm.append(time.perf_counter() - t)

    per_host = sorted(sum(len(f) for f in hf.values()) for hf in comp.flows.values())
    total = sum(per_host)

    # One port added: on h1, in network n1 (a network h1 already has, the common case), and in a
    # network that is new to its host (forces that host's rebuild).
    ports_n1 = [p for p in topo.ports.values() if p.network == "n1"]
    used_ips = {p.ip for p in ports_n1}
    ip = next(f"10.0.{i >> 8}.{i & 0xff}" for i in range(2, 65000)
              if f"10.0.{i >> 8}.{i & 0xff}" not in used_ips)
    max_key = max(p.key for p in topo.ports.values())

    # flows changed: count the flows in changed cookies' new sets (an added port's cookie is new,
    # so that is exactly the flows added). For the rebuild case, diff whole flow sets instead.
    def one_port_exact(case, host, network, k):
        key = max_key + k
        mac = f"02:01:00:00:{key >> 8 & 0xff:02x}:{key & 0xff:02x}"
        ofport = max(b.ofport for b in topo.bindings.values() if b.host == host) + 1
        port = PortState(f"new{k}", key, network, mac, ip)
        new = topo.replace(ports=[port], bindings=[Binding(port.name, host, ofport)])
        times, result = [], None
        for _ in range(runs):
            c = fc.Compiler()
            c.update(topo)
            before = {h: {cookie: fs for cookie, fs in hf.items()} for h, hf in c.flows.items()}
            gc.collect()
            t = time.perf_counter()
            changes = c.update(new)
            times.append(time.perf_counter() - t)
            per = {}
            for h, diff in changes.items():
                n = 0
                for cookie, fs in diff.items():
                    old = before.get(h, {}).get(cookie, frozenset())
                    n += len(old ^ fs)
                per[h] = n
            result = per
        own = result.get(host, 0)
        others = [v for h, v in result.items() if h != host]
        return [case, f"{median(times) * 1e3:.2f}", len(result), own,
                max(others) if others else 0, sum(result.values())]

    # Pick a network h1 does not have yet, if any, for the rebuild case.
    h1_nets = {topo.ports[b.port].network for b in topo.bindings.values() if b.host == "h1"}
    missing = [n for n in topo.networks if n not in h1_nets]
    cases = [one_port_exact("port added on h1, network already on h1", "h1",
                            next(iter(sorted(h1_nets))), 1)]
    if missing:
        cases.append(one_port_exact("port added on h1, first port of its network on h1", "h1",
                                    missing[0], 2))

    _common.header(f"compile_scale: {a.hosts} hosts x {a.ports} ports "
                   f"({a.hosts * a.ports} ports, {a.networks} networks)", sys.argv)
    print(table(["measure", "value", "target"], [
        [f"full compile, fresh Compiler, caches cleared (median of {runs})",
         f"{median(full) * 1e3:.0f} ms (min {min(full) * 1e3:.0f}, max {max(full) * 1e3:.0f})", "< 1 s"],
        [f"full compile, fresh Compiler, warm fragment caches (median of {runs})",
         f"{median(warm) * 1e3:.0f} ms", "-"],
        ["flows per host (min / median / max)",
         f"{per_host[0]} / {median(per_host):.0f} / {per_host[-1]}", "-"],
        ["flows in total", f"{total}", "-"],
        ["building the topology (scale_topology)", f"{build_s * 1e3:.0f} ms", "-"],
    ]))
    print()
    print(table(["one-port change", f"Compiler.update ms (median of {runs})", "hosts changed",
                 "flows changed on its host", "max flows changed on another host",
                 "flows changed in total"], cases))
    print("\nTarget: < 5 ms, O(1) flows changed per host.")


if __name__ == "__main__":
    main()
