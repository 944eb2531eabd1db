"""Services: TCP throughput and connection rate through a Service VIP against straight to its one
backend, in one run; and both with a NetworkPolicy selecting the backend (one allow rule) against
none, for what conntrack on the ACL costs.

2 hosts, one network n1: client `c` on h1 (app=client), backend `be` on h2 (app=be) running iperf3
(5201) and bench/_tcpserver.py (8000: accept, send one byte, close after the client). Service `be`: selector app=be,
ports 5201 -> 5201 and 80 -> 8000, one backend. Targets, from c:
  direct:  be's address, ports 5201 and 8000;
  service: the VIP, ports 5201 and 80: the same path plus ct(nat) on h1 (DNAT to be on the way out,
           the replies un-DNATed back to the VIP: tables SERVICE and SERVICE_REPLY).
Policy `be-allow`, when on: selects be, one ingress rule from app=client to TCP 5201 and 8000; h2
then takes be's traffic through conntrack in both directions (ACL_INGRESS, ACL_EGRESS).
Each repetition runs policy off and on (order flipped every repetition), each with both targets
(order flipped too): iperf3 -t SECONDS (the receiver's rate), then CONNS connections one at a time
and CONNS with 8 in flight (bench/_connrate.py in c, one process: connect, read the byte, close),
from disjoint client port ranges per target (see PORT_RANGES). Medians over the repetitions. Counters prove the path: packets through the service's
select group on h1 (one per new connection) and through h2's conntrack ACL flows, per mode.
Baselines: the same connection loop inside be to 127.0.0.1 (no OVS: Python and the kernel), and a
shell loop in c running `socat` once per connection (what a fork + exec per connection costs).

    sudo .venv/bin/python bench/service_dataplane.py [--quick] [--reps 5] [--seconds 3] [--conns 1500]
Target (issue 10): service/direct throughput >= 0.95. Set net.core.rmem_default=4194304 for the run
(pitfall 9 of measuring.md) and restore it.
"""
import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import _common
from _common import median, table
from _labutil import BENCH, PY, cpu_seconds, lab_pid, new_lab, tcp_server
from dataplane import iperf

from flows.pipeline import ACL_INGRESS

SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "be", "namespace": "n1"},
           "spec": {"selector": {"app": "be"}, "ports": [{"name": "iperf", "port": 5201, "targetPort": 5201},
                                                        {"name": "conn", "port": 80, "targetPort": 8000}]}}
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "be-allow", "namespace": "n1"},
          "spec": {"podSelector": {"matchLabels": {"app": "be"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                "ports": [{"protocol": "TCP", "port": 5201}, {"protocol": "TCP", "port": 8000}]}]}}
INFLIGHT = 8
# Client ports per target, disjoint: a direct connection from the port of an earlier connection to
# the VIP would meet that one's conntrack entry on h1, which turns the direct reply's source into
# the VIP (docs/benchmarks.md, issue 10). Each range holds the TIME_WAITs of a minute's connections.
PORT_RANGES = {"direct": "10000 35999", "service": "36000 61999"}


def conn_rate(lab, src, ip, port, n, k):
    """(connections per second, per-connection ms median, failed) of _connrate.py in src."""
    d = json.loads(lab.exec(src, PY, BENCH / "_connrate.py", ip, port, n, k, timeout=300).stdout)
    return (n - d["failed"]) / d["seconds"], median(d["ms"]) if d["ms"] else None, d["failed"]


def socat_loop(lab, src, ip, port, n):
    """ms per connection of a shell loop in src running socat once per connection."""
    loop = (f"i=0; while [ $i -lt {n} ]; do socat -T 2 - TCP:{ip}:{port} </dev/null >/dev/null || exit 1; "
            "i=$((i+1)); done")
    t = time.monotonic()
    lab.exec(src, "sh", "-c", loop, timeout=120)
    return (time.monotonic() - t) / n * 1000


def counters(lab):
    """Counter: packets through h1's select groups ("groups"), through h2's conntrack flows in
    ACL_INGRESS ("acl"), the datapath's packets, recirculations and upcalls on both hosts
    (dpif-netdev/pmd-stats-show) and each host's vswitchd CPU seconds ("h1 cpu", "h2 cpu"). vswitchd moves datapath counters into its flows and groups in
    its revalidators' rounds: wait for one first, or the last mode's packets land on the next."""
    c = Counter()
    for host in ("h1", "h2"):
        lab.exec(host, "ovs-appctl", "revalidator/wait")
        c[f"{host} cpu"] = cpu_seconds(lab_pid(lab, f"{host} ovs-vswitchd"))
        stats = lab.exec(host, "ovs-appctl", "dpif-netdev/pmd-stats-show").stdout
        for key, label in (("packets", "packets received"), ("recirc", "packet recirculations"),
                           ("upcalls", "miss with success upcall")):
            c[key] += sum(int(n) for n in re.findall(rf"{label}: (\d+)", stats))
    groups = lab.exec("h1", "ovs-ofctl", "-O", "OpenFlow13", "dump-group-stats", "br-int").stdout
    c["groups"] = sum(int(m) for m in re.findall(r"group_id=\d+,.*?,packet_count=(\d+)", groups))
    flows = lab.exec("h2", "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int", f"table={ACL_INGRESS.id}").stdout
    c["acl"] = sum(int(re.search(r"n_packets=(\d+)", line).group(1)) for line in flows.splitlines()
                   if "ct(" in line and "n_packets=" in line)
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 repetition of 2 s, 500 connections")
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--conns", type=int, default=1500, help="connections per connection-rate run")
    a = ap.parse_args()
    seconds, reps, conns = (2, 1, 500) if a.quick else (a.seconds, a.reps, a.conns)

    lab = new_lab("sv")
    server = None
    try:
        rmem = Path("/proc/sys/net/core/rmem_default").read_text().strip()
        net = lab.api.post("/v1/networks", {"name": "n1", "cidr": "10.1.0.0/24"})
        lab.attach("c", "h1", "n1", labels=("app=client",))
        be = lab.attach("be", "h2", "n1", labels=("app=be",))
        server = tcp_server(lab, "be", 8000)
        lab.api.post("/v1/apply?wait_up=10", {"documents": [SERVICE]})
        vip = lab.api.get("/v1/services/n1/be")["cluster_ip"]
        targets = {"direct": (be["ip"], 8000), "service": (vip, 80)}

        def policy(on):
            if on:
                answer = lab.api.post("/v1/apply?wait_up=10", {"documents": [POLICY]})
                if answer["lagging"]:
                    raise RuntimeError(f"the policy is not in force on {answer['lagging']}")
            else:
                lab.api.delete("/v1/policies/n1/be-allow")
                time.sleep(0.3)  # the delete does not wait: let the controller take it, then the switches
                for host in ("h1", "h2"):
                    lab.wait_flows_in_sync(host)

        for target, (ip, port) in targets.items():  # warm up: ARP, conntrack, megaflows
            lab.exec("c", "sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={PORT_RANGES[target]}")
            iperf(lab, "c", "be", ip, 1)
            conn_rate(lab, "c", ip, port, 200, 1)
        modes = [(p, t) for p in (False, True) for t in targets]
        res = {m: {"bps": [], "retr": [], "rate1": [], "ms1": [], "rate8": [], "failed": 0,
                   "iperf": Counter(), "conns": Counter(), "gbytes": 0.0} for m in modes}
        loopback = {"rate1": [], "ms1": [], "rate8": []}
        for rep in range(reps):
            for on in ((False, True) if rep % 2 == 0 else (True, False)):
                if on:
                    policy(True)
                for target in (("direct", "service") if rep % 2 == 0 else ("service", "direct")):
                    r, (ip, port) = res[(on, target)], targets[target]
                    lab.exec("c", "sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={PORT_RANGES[target]}")
                    before = counters(lab)
                    bps, retr = iperf(lab, "c", "be", ip, seconds)
                    r["bps"].append(bps)
                    r["retr"].append(retr)
                    middle = counters(lab)
                    r["iperf"] += middle - before
                    r["gbytes"] += bps * seconds / 8e9
                    rate, ms, failed = conn_rate(lab, "c", ip, port, conns, 1)
                    r["rate1"].append(rate)
                    r["ms1"].append(ms)
                    rate8, _, failed8 = conn_rate(lab, "c", ip, port, conns, INFLIGHT)
                    r["rate8"].append(rate8)
                    r["failed"] += failed + failed8
                    r["conns"] += counters(lab) - middle
                if on:
                    policy(False)
            rate, ms, _ = conn_rate(lab, "be", "127.0.0.1", 8000, conns, 1)
            loopback["rate1"].append(rate)
            loopback["ms1"].append(ms)
            loopback["rate8"].append(conn_rate(lab, "be", "127.0.0.1", 8000, conns, INFLIGHT)[0])
        lab.exec("c", "sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={PORT_RANGES['direct']}")
        socat_ms = socat_loop(lab, "c", be["ip"], 8000, 50 if a.quick else 200)
    finally:
        if server and server.poll() is None:
            server.terminate()
            server.wait(timeout=5)
        lab.down()

    _common.header(f"service_dataplane: 2 hosts (client h1, backend h2), iperf3 -t {seconds}, {conns} "
                   f"connections per rate run, {reps} repetitions (medians), MTU {net['mtu']}, "
                   f"net.core.rmem_default {rmem}", sys.argv)

    def name(m):
        return f"{m[1]}{', policy' if m[0] else ''}"
    rows = [[name(m), f"{median(r['bps']) / 1e9:.3f}", f"{median(r['rate1']):.0f}", f"{median(r['ms1']):.3f}",
             f"{median(r['rate8']):.0f}", r["failed"]] for m, r in res.items()]
    rows.append(["loopback in be (no OVS)", "-", f"{median(loopback['rate1']):.0f}", f"{median(loopback['ms1']):.3f}",
                 f"{median(loopback['rate8']):.0f}", "-"])
    rows.append(["socat per connection, shell loop in c, direct", "-", f"{1000 / socat_ms:.0f}",
                 f"{socat_ms:.2f}", "-", "-"])
    print(table(["path", "Gbit/s", "conn/s, 1 at a time", "ms per conn (median)", f"conn/s, {INFLIGHT} in flight",
                 "failed conns"], rows))
    print()
    made = 2 * conns * reps  # connections per mode: one-at-a-time and in-flight runs
    print(table(["path", "datapath passes per packet, iperf (h1 + h2)", "vswitchd CPU s per GB, iperf: h1 / h2",
                 "upcalls per connection (h1 + h2)", "vswitchd CPU ms per connection: h1 / h2",
                 "select-group packets on h1, connection runs", "packets through h2's ACL conntrack, connection runs"],
                [[name(m), f"{(r['iperf']['packets'] + r['iperf']['recirc']) / max(1, r['iperf']['packets']):.2f}",
                  f"{r['iperf']['h1 cpu'] / r['gbytes']:.2f} / {r['iperf']['h2 cpu'] / r['gbytes']:.2f}",
                  f"{r['conns']['upcalls'] / made:.3f}",
                  f"{r['conns']['h1 cpu'] / made * 1000:.3f} / {r['conns']['h2 cpu'] / made * 1000:.3f}",
                  r["conns"]["groups"], r["conns"]["acl"]]
                 for m, r in res.items()]))
    print()
    ratios = []
    for label, num, den in (("service / direct", (False, "service"), (False, "direct")),
                            ("direct with policy / without", (True, "direct"), (False, "direct")),
                            ("service with policy / without", (True, "service"), (False, "service")),
                            ("service with policy / direct without", (True, "service"), (False, "direct"))):
        n, d = res[num], res[den]
        per_rep = [x / y for x, y in zip(n["bps"], d["bps"])]
        ratios.append([label, f"**{median(n['bps']) / median(d['bps']):.3f}**",
                       f"{median(per_rep):.3f} ({min(per_rep):.2f}-{max(per_rep):.2f})",
                       f"{median(n['rate1']) / median(d['rate1']):.3f}", f"{median(n['rate8']) / median(d['rate8']):.3f}"])
    print(table(["ratio", "throughput (of medians)", "throughput per repetition: median (min-max)",
                 "conn/s, 1 at a time", f"conn/s, {INFLIGHT} in flight"], ratios))
    print()
    print(table(["path", "Gbit/s, each run", "retransmits", "conn/s 1 at a time, each run"],
                [[name(m), " ".join(f"{x / 1e9:.2f}" for x in r["bps"]), " ".join(map(str, r["retr"])),
                  " ".join(f"{x:.0f}" for x in r["rate1"])] for m, r in res.items()]))
    print("\nTarget: service/direct throughput >= 0.95.")


if __name__ == "__main__":
    main()
