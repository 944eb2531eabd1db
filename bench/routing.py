"""Distributed routing on a 2-host lab: routed vs switched across hosts, and the first routed reply
after a router attach completes the path.

Networks blue 10.40.1.0/24 and green 10.40.2.0/24 on router r1; containers b1 (blue, h1),
b2 (blue, h2), g2 (green, h2).
  throughput/RTT: iperf3 -t SECONDS b1 -> g2 (routed, across hosts) vs b1 -> b2 (switched, across
                  hosts), repetitions alternating the two (order flipped every repetition); medians;
                  RTT: 20 pings at 50 ms intervals per repetition.
  first reply:    r1 with blue attached, green not; a raw-ICMP prober in b1 (bench/_probe.py, one
                  process, every 5 ms) pings g2; t0 = start of POST /v1/routers/r1/ports {green}
                  (what `weft router attach r1 green` sends); time to the first echo reply.
                  Between repetitions green is detached again and the containers' neighbour
                  caches are flushed, so every repetition resolves the gateway again.

    .venv/bin/python bench/routing.py [--quick] [--reps 5] [--seconds 3] [--attach-reps 7]
Targets: routed/switched throughput >= 0.97 (OVN 0.96, RTT 1.05x); first routed reply within 100 ms
(OVN ~100 ms after the router is created).
"""
import argparse
import sys
import threading
import time

import _common
from _common import median, table
from _labutil import BENCH, PY, LineProc, new_lab
from _netns import fast_arp
from dataplane import iperf, rtts

from weft.attach import netns_path

NETS = {"blue": "10.40.1.0/24", "green": "10.40.2.0/24"}
IPS = {"b1": "10.40.1.11", "b2": "10.40.1.12", "g2": "10.40.2.12"}
PLACE = {"b1": ("h1", "blue"), "b2": ("h2", "blue"), "g2": ("h2", "green")}


def setup(lab):
    for name, cidr in NETS.items():
        lab.api.post("/v1/networks", {"name": name, "cidr": cidr})
    lab.api.post("/v1/routers", {"name": "r1"})
    for net in NETS:
        lab.api.post("/v1/routers/r1/ports", {"network": net})
    for c, (host, net) in PLACE.items():
        lab.attach(c, host, net, ip=IPS[c])
        fast_arp(netns_path(lab.info["containers"][c]["netns"]))


class Prober:
    def __init__(self, lab, src):
        self.lp = LineProc(lab, src, [PY, BENCH / "_probe.py", lab.dir / "probe.tag"], "probe pinger")
        assert self.lp.get(10) == "READY"

    def first_reply(self, ip, timeout):
        """Start pinging ip; returns the monotonic time of the first reply, or None."""
        self.lp.send(f"ADD {ip}")
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lp.get(max(0.0, deadline - time.monotonic()))
            except Exception:
                return None
            _, got, t = line.split()
            if got == ip:
                return float(t)

    def close(self):
        self.lp.send("QUIT")
        self.lp.close()


def first_reply_runs(lab, reps):
    """[(reply - t0, call return - t0)] for `reps` attaches of green that complete b1 -> g2."""
    out = []
    lab.api.delete("/v1/routers/r1/ports/green")
    prober = Prober(lab, "b1")
    try:
        for _ in range(reps):
            time.sleep(0.5)
            assert not lab.ping("b1", IPS["g2"], timeout=1), "b1 reaches g2 with green detached"
            for c in ("b1", "g2"):
                lab.exec(c, "ip", "neigh", "flush", "all")
            res = {}

            def probe():
                res["t"] = prober.first_reply(IPS["g2"], 10)
            th = threading.Thread(target=probe)
            th.start()
            time.sleep(0.3)  # the prober is pinging (and failing) before the attach starts
            t0 = time.monotonic()
            lab.api.post("/v1/routers/r1/ports", {"network": "green"})
            t_call = time.monotonic()
            th.join()
            out.append((res["t"] - t0 if res.get("t") else None, t_call - t0))
            lab.api.delete("/v1/routers/r1/ports/green")
    finally:
        prober.close()
    lab.api.post("/v1/routers/r1/ports", {"network": "green"})
    for c in ("b1", "g2"):  # start cold, so the next first reply includes ARP for the gateway
        lab.exec(c, "ip", "neigh", "flush", "all")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 repetition of 2 s, 3 attaches")
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--attach-reps", type=int, default=7)
    a = ap.parse_args()
    seconds, reps, areps = (2, 1, 3) if a.quick else (a.seconds, a.reps, a.attach_reps)

    lab = new_lab("r")
    try:
        setup(lab)
        first = first_reply_runs(lab, areps)
        cases = {"routed": ("b1", "g2"), "switched": ("b1", "b2")}
        for src, dst in cases.values():  # warm up: ARP, megaflows (green was just attached again)
            deadline = time.monotonic() + 10
            while not lab.ping(src, IPS[dst], count=3):
                assert time.monotonic() < deadline, f"{src} cannot reach {dst}"
        res = {k: {"bps": [], "retr": [], "rtt": []} for k in cases}
        for rep in range(reps):
            for case in (("routed", "switched") if rep % 2 == 0 else ("switched", "routed")):
                src, dst = cases[case]
                bps, retr = iperf(lab, src, dst, IPS[dst], seconds)
                res[case]["bps"].append(bps)
                res[case]["retr"].append(retr)
                res[case]["rtt"] += rtts(lab, src, IPS[dst], 20)
        mtu = lab.api.get("/v1/networks/blue")["mtu"]
    finally:
        lab.down()

    _common.header(f"routing: 2 hosts, iperf3 -t {seconds}, {reps} repetitions (medians), MTU {mtu}; "
                   f"{areps} router attaches", sys.argv)
    r, s = res["routed"], res["switched"]
    rb, sb, rr, sr = median(r["bps"]), median(s["bps"]), median(r["rtt"]), median(s["rtt"])
    print(table(["path", "Gbit/s (median)", "each run", "retransmits", "RTT ms (median)"], [
        ["routed across hosts (b1 blue h1 -> g2 green h2)", f"{rb / 1e9:.3f}",
         " ".join(f"{x / 1e9:.2f}" for x in r["bps"]), " ".join(map(str, r["retr"])), f"{rr:.3f}"],
        ["switched across hosts (b1 blue h1 -> b2 blue h2)", f"{sb / 1e9:.3f}",
         " ".join(f"{x / 1e9:.2f}" for x in s["bps"]), " ".join(map(str, s["retr"])), f"{sr:.3f}"],
    ]))
    per_rep = [x / y for x, y in zip(r["bps"], s["bps"])]
    print()
    print(table(["ratio routed / switched", "value", "target", "OVN"], [
        ["throughput (ratio of medians)", f"**{rb / sb:.3f}**", ">= 0.97", "0.96"],
        ["throughput (median of per-repetition ratios)", f"{median(per_rep):.3f} "
         f"(min {min(per_rep):.2f}, max {max(per_rep):.2f})", "", ""],
        ["RTT", f"**{rr / sr:.2f}x**", "", "1.05x"],
    ]))
    ok = [x for x, _ in first if x is not None]
    print()
    print(table(["first routed reply after `router attach r1 green`", "p50 ms", "min", "max", "n", "target / OVN"], [
        ["t0 -> first echo reply", f"{median(ok) * 1e3:.0f}" if ok else "-",
         f"{min(ok) * 1e3:.0f}" if ok else "-", f"{max(ok) * 1e3:.0f}" if ok else "-",
         f"{len(ok)} of {len(first)}", "<= 100 / ~100"],
        ["t0 -> API call returned", f"{median([c for _, c in first]) * 1e3:.0f}",
         f"{min(c for _, c in first) * 1e3:.0f}", f"{max(c for _, c in first) * 1e3:.0f}", len(first), ""],
    ]))
    print("\nEach attach, reply ms: " + ", ".join(f"{x * 1e3:.0f}" if x is not None else "none" for x, _ in first))


if __name__ == "__main__":
    main()
