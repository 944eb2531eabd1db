"""The cost of the flow audit (controller/flowsync.py) and the time from a hand-made change to its
repair, on a real 1-host lab with a few hundred and a few thousand flows on br-int.

Ports are created through the API and plugged into br-int as OVS internal ports carrying their
iface-id (no container behind them: only their flows matter here). For each size, the controller runs
three ways for --seconds each, and the CPU of the controller and of the host's vswitchd is read from
/proc: with no audit (flow_audit_interval=0, the baseline), with the default audit (flow counts every
second) and with every audit reading everything (flow_full_audit_interval=1). Per audit: the CPU
above the baseline divided by the audits made. Then, with the default options, a flow is deleted by
hand (`ovs-ofctl --strict del-flows`) --reps times and the time until it is back is measured.

    .venv/bin/python bench/audit.py [--sizes 40,400] [--seconds 20] [--reps 10]
"""
import argparse
import statistics
import sys
import time

import _common
from _common import median, table
from _labutil import cpu_seconds, lab_pid, new_lab, wait_idle

from weft.testing import api_path


def flows(lab, *args):
    return lab.exec("h1", "ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", "br-int", *args).stdout


def plug(lab, first, count):
    for start in range(first, first + count, 100):
        names = [f"p{i}" for i in range(start, min(first + count, start + 100))]
        for name in names:
            lab.api.post("/v1/ports", {"name": name, "network": "n1"})
        cmd = ["ovs-vsctl"]
        for name in names:
            cmd += ["--", "add-port", "br-int", name, "--", "set", "interface", name, "type=internal",
                    f"external_ids:iface-id={name}"]
        lab.exec("h1", *cmd)
    deadline = time.monotonic() + 120
    while not all(lab.api.get(api_path("ports", f"p{i}"))["up"] for i in range(first, first + count, 7)):
        if time.monotonic() > deadline:
            raise RuntimeError("ports not up within 120 s")
        time.sleep(0.2)


def settle(lab):
    lab.wait_flows_in_sync("h1", timeout=60)
    wait_idle(lab_pid(lab, "controller"))


def cpu_over(lab, seconds):
    pids = (lab_pid(lab, "controller"), lab_pid(lab, "h1 ovs-vswitchd"))
    before = [cpu_seconds(p) for p in pids]
    time.sleep(seconds)
    return [cpu_seconds(p) - b for p, b in zip(pids, before)]


def repair_times(lab, reps):
    times = []
    for i in range(reps):
        line = next(ln.strip() for ln in flows(lab, "table=90").splitlines() if "dl_dst=" in ln)
        match = line.split(" actions=")[0].replace(", ", ",")
        match = ",".join(f for f in match.split(",") if not f.startswith("cookie="))
        time.sleep(0.37 * (i % 3))  # the change lands anywhere between two audits
        started = time.monotonic()
        lab.exec("h1", "ovs-ofctl", "-O", "OpenFlow13", "--strict", "del-flows", "br-int", match)
        while match.split(",")[-1] not in flows(lab, "table=90"):
            time.sleep(0.01)
        times.append(time.monotonic() - started)
        lab.wait_flows_in_sync("h1")
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="40,400", help="ports on the host, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    _common.header("Flow audit: its cost, and the time to repair a hand-made change", sys.argv)
    lab = new_lab("audit", hosts=1)
    rows, plugged = [], 0
    try:
        lab.api.post("/v1/networks", {"name": "n1", "cidr": "10.1.0.0/16"})
        for size in (int(s) for s in args.sizes.split(",")):
            plug(lab, plugged, size - plugged)
            plugged = size
            settle(lab)
            n_flows = len(flows(lab).splitlines()) - 1
            cost = {}
            for label, options in (("none", {"flow_audit_interval": 0}),
                                   ("counts", {"flow_audit_interval": 1, "flow_full_audit_interval": 3600}),
                                   ("full", {"flow_audit_interval": 1, "flow_full_audit_interval": 1})):
                with lab.controller_options(**options):
                    settle(lab)
                    cost[label] = cpu_over(lab, args.seconds)
            audits = args.seconds  # one per second on the one host
            per = {k: [(c - b) / audits * 1000 for c, b in zip(cost[k], cost["none"])] for k in ("counts", "full")}
            settle(lab)
            repairs = repair_times(lab, args.reps)
            rows.append([size, n_flows, f"{cost['none'][0] / args.seconds * 100:.1f} %",
                         f"{per['counts'][0]:.1f} / {per['counts'][1]:.1f}",
                         f"{per['full'][0]:.1f} / {per['full'][1]:.1f}",
                         f"{median(repairs):.2f} (max {max(repairs):.2f}, sd {statistics.pstdev(repairs):.2f})"])
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        lab.down()
    print(table(["ports", "flows on br-int", "controller CPU, no audit", "count audit: ms CPU controller / vswitchd",
                 "full audit: ms CPU controller / vswitchd", "hand delete -> repaired, s (median)"], rows))


if __name__ == "__main__":
    main()
