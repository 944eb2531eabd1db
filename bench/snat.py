"""North-south through the gateway (SNAT) vs routed east-west, on a 2-host lab with an `outside`.

Networks blue 10.40.1.0/24 and green 10.40.2.0/24 on router r1, whose gateway is h1's uplink
(info["external"]: uplink, free_ips[0]/24, next hop); containers g2 (green, h2) and b1 (blue, h1).
  SNAT:      g2 (h2) -> outside's address: routed on h2, tunnelled to the gateway host h1, ct SNAT to
             the gateway address, out of the uplink into `outside` (iperf3 server there).
  east-west: g2 (h2) -> b1 (h1): routed on h2, tunnelled to h1, delivered to b1.
Both cross the same tunnel from the same container; repetitions alternate the two (order flipped
every repetition); medians; RTT: 20 pings at 50 ms intervals per repetition.

    .venv/bin/python bench/snat.py [--quick] [--reps 5] [--seconds 3]
"""
import argparse
import os
import sys
import time

import _common
from _common import median, table
from _labutil import Lab, quiet
from dataplane import iperf, rtts

from routing import IPS, setup  # the same two subnets on r1, containers b1 (h1), b2 and g2 (h2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 repetition of 2 s")
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    seconds, reps = (2, 1) if a.quick else (a.seconds, a.reps)

    lab = Lab(f"b{os.getpid() % 1000000}s"[:12], 2, external=True, progress=quiet)
    try:
        ext = lab.info["external"]
        setup(lab)
        snat_ip = ext["free_ips"][0]
        lab.api.request("PUT", "/v1/routers/r1/gateway", {"host": ext["host"], "uplink": ext["uplink"],
                                                          "ip": f"{snat_ip}/24", "next_hop": ext["next_hop"]})
        deadline = time.monotonic() + 10
        while not lab.api.get("/v1/routers/r1")["gateway"]["next_hop_mac"]:
            assert time.monotonic() < deadline, "the gateway's next hop MAC was never resolved"
            time.sleep(0.1)
        dst = {"snat": ("outside", ext["next_hop"]), "east-west": ("b1", IPS["b1"])}
        for target, ip in dst.values():  # warm up: ARP, conntrack, megaflows
            deadline = time.monotonic() + 10
            while not lab.ping("g2", ip, count=3):
                assert time.monotonic() < deadline, f"g2 cannot reach {target} ({ip})"
        res = {k: {"bps": [], "retr": [], "rtt": []} for k in dst}
        for rep in range(reps):
            for case in (("snat", "east-west") if rep % 2 == 0 else ("east-west", "snat")):
                target, ip = dst[case]
                bps, retr = iperf(lab, "g2", target, ip, seconds)
                res[case]["bps"].append(bps)
                res[case]["retr"].append(retr)
                res[case]["rtt"] += rtts(lab, "g2", ip, 20)
        # Proof that the outside saw the SNAT address: the gateway's conntrack zone is the router key.
        conntrack = lab.exec("h1", "ovs-appctl", "dpctl/dump-conntrack").stdout
        snat_seen = sum(1 for line in conntrack.splitlines() if snat_ip in line)
        mtu = lab.api.get("/v1/networks/green")["mtu"]
    finally:
        lab.down()

    _common.header(f"snat: 2 hosts + outside, gateway on h1, iperf3 -t {seconds}, {reps} repetitions "
                   f"(medians), container MTU {mtu}, uplink MTU 1500", sys.argv)
    rows = []
    for case, label in (("snat", f"SNAT: g2 (green, h2) -> outside {dst['snat'][1]} via gateway on h1"),
                        ("east-west", "routed east-west: g2 (green, h2) -> b1 (blue, h1)")):
        r = res[case]
        rows.append([label, f"{median(r['bps']) / 1e9:.3f}", " ".join(f"{x / 1e9:.2f}" for x in r["bps"]),
                     " ".join(map(str, r["retr"])), f"{median(r['rtt']):.3f}"])
    print(table(["path", "Gbit/s (median)", "each run", "retransmits", "RTT ms (median)"], rows))
    s, e = res["snat"], res["east-west"]
    per_rep = [x / y for x, y in zip(s["bps"], e["bps"])]
    print()
    print(table(["ratio SNAT / east-west", "value"], [
        ["throughput (ratio of medians)", f"**{median(s['bps']) / median(e['bps']):.3f}**"],
        ["throughput (median of per-repetition ratios)",
         f"{median(per_rep):.3f} (min {min(per_rep):.2f}, max {max(per_rep):.2f})"],
        ["RTT", f"**{median(s['rtt']) / median(e['rtt']):.2f}x**"],
    ]))
    print(f"\nConntrack entries on h1 with the SNAT address {snat_ip} at the end: {snat_seen}")


if __name__ == "__main__":
    main()
