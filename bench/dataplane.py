"""Data plane: TCP throughput (iperf3) and ping RTT between two containers through Weft's pipeline,
versus the same containers with hand-written static flows, same host and across hosts.

The static flows sit in table 0 at priority 65535 with their own cookie, so they pre-empt Weft's
pipeline while installed; repetitions alternate Weft / static (3 each by default, medians; the
order flips every repetition) and the static
flows' packet counters are checked afterwards to prove the traffic took them.
  same host:   in_port=A actions=output:B  and the reverse
  cross host:  in_port=A actions=set_field:VNI->tun_id,set_field:REMOTE_VTEP->tun_dst,output:65000
               in_port=65000,tun_id=VNI actions=output:A   (and the mirror image on the other host)

    .venv/bin/python bench/dataplane.py [--quick] [--seconds 3] [--reps 3]
Target: weft/static >= 0.98 (OVN: 0.99 same host, 0.98 across hosts).
"""
import argparse
import re
import sys

import _common
from _common import median, table
from _labutil import new_lab

from flows.pipeline import TUNNEL_OFPORT

COOKIE = "0xbe7cbe7cbe7cbe7c"


def ofport(lab, host, port_name):
    out = lab.exec(host, "ovs-vsctl", "--bare", "--columns=ofport", "find", "Interface",
                   f"external_ids:iface-id={port_name}").stdout.split()
    return int(out[0])


def iperf(lab, src, dst, dst_ip, seconds):
    """(receiver bits/s, sender retransmits) of one iperf3 run."""
    end = lab.iperf_report(src, dst, seconds, dst_ip)
    return float(end["sum_received"]["bits_per_second"]), int(end["sum_sent"].get("retransmits", 0))


def rtts(lab, src, dst_ip, count):
    out = lab.exec(src, "ping", "-n", "-c", count, "-i", "0.05", dst_ip, check=False).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def add_flows(lab, host, flows):
    for f in flows:
        lab.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "add-flow", "br-int",
                 f"table=0,priority=65535,cookie={COOKIE},{f}")


def del_flows(lab, hosts):
    for h in hosts:
        lab.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "del-flows", "br-int", f"cookie={COOKIE}/-1")


def static_packets(lab, hosts):
    n = 0
    for h in hosts:
        out = lab.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int", f"cookie={COOKIE}/-1").stdout
        n += sum(int(x) for x in re.findall(r"n_packets=(\d+)", out))
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 repetition of 2 s")
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    seconds, reps = (2, 1) if a.quick else (a.seconds, a.reps)

    lab = new_lab("d")
    try:
        net = lab.api.post("/v1/networks", {"name": "n1", "cidr": "10.1.0.0/24"})
        vni = net["vni"]
        ips = {"a": "10.1.0.11", "b": "10.1.0.12", "c": "10.1.0.13"}
        hosts = {"a": "h1", "b": "h1", "c": "h2"}
        for c, h in hosts.items():
            lab.attach(c, h, "n1", ip=ips[c])
        ports = {c: ofport(lab, h, c) for c, h in hosts.items()}
        vtep = {h: v["encap_ip"] for h, v in lab.info["hosts"].items()}
        static = {
            "same host (a -> b, h1)": {"h1": [f"in_port={ports['a']},actions=output:{ports['b']}",
                                              f"in_port={ports['b']},actions=output:{ports['a']}"]},
            "across hosts (a on h1 -> c on h2)": {
                "h1": [f"in_port={ports['a']},actions=set_field:{vni}->tun_id,"
                       f"set_field:{vtep['h2']}->tun_dst,output:{TUNNEL_OFPORT}",
                       f"in_port={TUNNEL_OFPORT},tun_id={vni},actions=output:{ports['a']}"],
                "h2": [f"in_port={ports['c']},actions=set_field:{vni}->tun_id,"
                       f"set_field:{vtep['h1']}->tun_dst,output:{TUNNEL_OFPORT}",
                       f"in_port={TUNNEL_OFPORT},tun_id={vni},actions=output:{ports['c']}"]},
        }
        pairs = {"same host (a -> b, h1)": ("a", "b"), "across hosts (a on h1 -> c on h2)": ("a", "c")}
        for src, dst in pairs.values():  # warm up: ARP, megaflows
            lab.ping(src, ips[dst], count=3)
        res = {}
        for case, (src, dst) in pairs.items():
            r = res[case] = {"weft": [], "static": [], "weft_rtt": [], "static_rtt": [], "hits": 0,
                             "weft_retr": [], "static_retr": []}
            for rep in range(reps):
                # Alternate which goes first, so a drift over the run does not favour one side.
                for mode in (("weft", "static") if rep % 2 == 0 else ("static", "weft")):
                    if mode == "static":
                        for h, flows in static[case].items():
                            add_flows(lab, h, flows)
                    try:
                        bps, retr = iperf(lab, src, dst, ips[dst], seconds)
                        r[mode].append(bps)
                        r[f"{mode}_retr"].append(retr)
                        r[f"{mode}_rtt"] += rtts(lab, src, ips[dst], 20)
                        if mode == "static":
                            r["hits"] += static_packets(lab, static[case])
                    finally:
                        if mode == "static":
                            del_flows(lab, static[case])
    finally:
        lab.down()

    _common.header(f"dataplane: iperf3 -t {seconds}, {reps} repetitions (medians), 2 hosts, MTU "
                   f"{net['mtu']}", sys.argv)
    rows = []
    for case, r in res.items():
        w, s = median(r["weft"]), median(r["static"])
        wr, sr = median(r["weft_rtt"]), median(r["static_rtt"])
        rows.append([case, f"{w / 1e9:.3f}", f"{s / 1e9:.3f}", f"**{w / s:.3f}**", f"{wr:.3f}", f"{sr:.3f}",
                     f"{wr / sr:.2f}", r["hits"]])
    print(table(["path", "Weft Gbit/s", "static Gbit/s", "weft/static", "Weft RTT ms", "static RTT ms",
                 "RTT weft/static", "packets on static flows"], rows))
    print()
    print(table(["path", "Weft Gbit/s, each run", "static Gbit/s, each run", "Weft retransmits",
                 "static retransmits"],
                [[case, " ".join(f"{x / 1e9:.2f}" for x in r["weft"]), " ".join(f"{x / 1e9:.2f}" for x in r["static"]),
                  " ".join(map(str, r["weft_retr"])), " ".join(map(str, r["static_retr"]))]
                 for case, r in res.items()]))
    print("\nTarget: weft/static >= 0.98 (OVN: 0.99 same host, 0.98 across hosts).")


if __name__ == "__main__":
    main()
