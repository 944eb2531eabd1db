"""Active/standby failover and NB member loss on a `weft lab up --ha` lab (issue 11, §12.2).

Lab: 2 hosts, the 3-member Raft NB (nb1..nb3) and controllers c1 and c2; network blue with a on h1
and b on h2. 100 echoes/s from a to b (weft/echo.py) run through each fault; per repetition:
  active-kill       kill -9 of the active controller: ms until the standby reports itself active
                    (polled every 10 ms), echoes lost, longest gap, flow-mods the new active sent,
                    flows replaced (ovs-ofctl durations that went down); the killed one is started
                    again (it comes back as the standby) before the next repetition.
  nb-leader-kill    kill -9 of the Raft leader: ms until a new leader (cluster/status, polled), ms
                    until writes are accepted again (a network create every 20 ms through both
                    controllers, as `weft` does: the longest one), echoes lost; the member is started
                    again afterwards.
  nb-follower-kill  the same for a follower.

    .venv/bin/python bench/ha_failover.py [--reps 5]
"""
import argparse
import sys
import threading
import time

import _common
from _common import median, table
from _labutil import quiet

from weft import lab as weftlab
from weft.client import ApiClient, ApiError
from weft.testing import Lab


def in_sync(lab, controller):
    api, deadline = lab.controller_api(controller), time.monotonic() + 30
    while True:
        hosts = {h["name"]: h["status"] for h in api.get("/v1/hosts")}
        if all(s.get("openflow_connected") and s.get("flows_in_sync") for s in hosts.values()):
            return hosts
        if time.monotonic() > deadline:
            raise RuntimeError(f"{controller}: not in sync: {hosts}")
        time.sleep(0.05)


def active_kill(lab, b_ip):
    found = lab.roles(timeout=20)
    active, standby = found["active"], found["standby"]
    in_sync(lab, active)
    before = {h: lab.flow_ages(h) for h in ("h1", "h2")}
    with lab.echoes("a", b_ip) as report:
        time.sleep(1.0)
        killed = time.monotonic()
        lab.kill_controller(active)
        while lab.role(standby) != "active":
            time.sleep(0.01)
        took = time.monotonic() - killed
        hosts = in_sync(lab, standby)
        time.sleep(1.0)
    replaced = sum(1 for h in before for flow, age in before[h].items()
                   if lab.flow_ages(h).get(flow, -1) < age)
    lab.start_controller(active)
    lab.roles(timeout=20)
    return {"ms": took * 1000, "lost": report["lost"], "gap": report["longest_gap_ms"],
            "flow_mods": sum(s.get("flow_mods", 0) for s in hosts.values()), "replaced": replaced}


def nb_kill(lab, b_ip, which, seq):
    client = ApiClient(lab.info["api"], timeout=30)
    latencies, errors, stop = [], [], threading.Event()

    def write():
        while not stop.is_set():
            name = f"x{next(seq)}"
            started = time.monotonic()
            try:
                client.post("/v1/networks", {"name": name, "cidr": f"10.{120 + int(name[1:]) // 250}."
                                                                   f"{int(name[1:]) % 250}.0/24"})
                latencies.append(time.monotonic() - started)
            except ApiError as err:
                errors.append(err.status)
            time.sleep(0.02)
    writer = threading.Thread(target=write)
    with lab.echoes("a", b_ip) as report:
        writer.start()
        time.sleep(1.0)
        leader = lab.nb_leader()
        member = leader if which == "leader" else next(m for m in ("nb1", "nb2", "nb3") if m != leader)
        killed = time.monotonic()
        lab.kill_nb_member(member)
        lab.nb_leader(timeout=30)
        elected = time.monotonic() - killed
        time.sleep(3.0)
        stop.set()
        writer.join(60)
    lab.start_nb_member(member)
    lab.roles(timeout=20)
    for _ in range(60):  # the member has caught up before the next repetition
        if "\nStatus: cluster member\n" in weftlab.nb_cluster_status(lab.name, member):
            break
        time.sleep(0.1)
    return {"elected_ms": elected * 1000 if which == "leader" else None,
            "lost": report["lost"], "gap": report["longest_gap_ms"],
            "longest_write_ms": max(latencies) * 1000 if latencies else None, "errors": len(errors)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    _common.header("HA: failover and NB member loss", sys.argv)
    lab = Lab(f"hafo{args.reps}", hosts=2, ha=True, progress=quiet)
    seq = iter(range(1, 10 ** 6))
    try:
        lab.weft("network", "create", "blue", "--cidr", "10.61.0.0/24")
        lab.attach("a", "h1", "blue")
        b_ip = lab.attach("b", "h2", "blue")["ip"]
        kills = [active_kill(lab, b_ip) for _ in range(args.reps)]
        print(f"  active-kill: {kills}", file=sys.stderr, flush=True)
        print(table(["active-kill", "standby active ms", "echoes lost", "longest gap ms", "flow-mods after",
                     "flows replaced"],
                    [["median", f"{median([k['ms'] for k in kills]):.0f}", median([k["lost"] for k in kills]),
                      median([k["gap"] for k in kills]), median([k["flow_mods"] for k in kills]),
                      median([k["replaced"] for k in kills])],
                     ["max", f"{max(k['ms'] for k in kills):.0f}", max(k["lost"] for k in kills),
                      max(k["gap"] for k in kills), max(k["flow_mods"] for k in kills),
                      max(k["replaced"] for k in kills)]]))
        rows = []
        for which in ("leader", "follower"):
            runs = [nb_kill(lab, b_ip, which, seq) for _ in range(args.reps)]
            print(f"  nb-{which}-kill: {runs}", file=sys.stderr, flush=True)
            elected = [r["elected_ms"] for r in runs if r["elected_ms"] is not None]
            rows.append([f"nb-{which}-kill", f"{median(elected):.0f}" if elected else "(no election)",
                         f"{median([r['longest_write_ms'] for r in runs]):.0f}",
                         f"{max(r['longest_write_ms'] for r in runs):.0f}", median([r["lost"] for r in runs]),
                         median([r["gap"] for r in runs]), sum(r["errors"] for r in runs)])
        print()
        print(table(["fault", "new leader ms", "longest write ms (median)", "(max)", "echoes lost",
                     "longest gap ms", "writes refused (all runs)"], rows))
    finally:
        lab.down()


if __name__ == "__main__":
    main()
