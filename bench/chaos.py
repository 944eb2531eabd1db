"""The chaos benchmark (issue 11): constant echoes through each fault in turn.

Lab: 2 hosts and an `outside` namespace behind h1's uplink (with --ha: the 3-member Raft NB and the
controllers c1 and c2, `weft lab up --ha`). Networks blue 10.60.1.0/24 and green 10.60.2.0/24 on
router r1, whose gateway is h1's uplink (SNAT to 192.0.2.10, next hop 192.0.2.1 in `outside`).
Two echo streams at 100 requests/s each (weft/echo.py, one process each, absolute schedule):
  across hosts     a (blue, h1) -> b (blue, h2), through Geneve;
  through gateway  g (green, h2) -> 192.0.2.1, through r1 across hosts and out of h1's gateway.
Each fault runs with both streams going; per fault and repetition: echoes lost on each stream, the
longest gap, and the time from the fault (for a restart: from the moment the daemon is started
again) until the controller reports every host up with its flows checked in sync again.

    .venv/bin/python bench/chaos.py [--reps 3] [--only FAULT,...]
Faults on a lab with one controller: controller-kill, controller-term (each restarted after 2 s),
vswitchd-restart and ovsdb-restart of h2 (`weft lab restart`; the daemon's own share of the outage,
stop to accepting OpenFlow or reconnected, is reported apart), host-loss (h2 frozen with SIGSTOP for
host_down_after + 3 s, then thawed: its echoes are lost while it is frozen, by definition),
drift-delete and drift-add (a flow of h2's br-int deleted, a drop flow added, by hand). On an --ha
lab: active-kill (kill -9 of the active controller, restarted as the standby afterwards),
nb-follower-kill and nb-leader-kill (kill -9 of an NB member, restarted once the controllers
report everything in sync without it).
"""
import argparse
import signal
import sys
import time
from contextlib import ExitStack

import _common
from _common import median, table
from _labutil import quiet

from controller.config import Config
from weft.testing import Lab

NETS = {"blue": "10.60.1.0/24", "green": "10.60.2.0/24"}
PLACE = {"a": ("h1", "blue"), "b": ("h2", "blue"), "g": ("h2", "green")}
SETTLE_TIMEOUT = 60.0
FROZEN = 3.0  # seconds a lost host stays frozen beyond the grace period


def setup(lab):
    ext = lab.info["external"]
    for name, cidr in NETS.items():
        lab.weft("network", "create", name, "--cidr", cidr)
    lab.weft("router", "create", "r1")
    for name in NETS:
        lab.weft("router", "attach", "r1", name)
    lab.ports = {c: lab.attach(c, host, net) for c, (host, net) in PLACE.items()}
    lab.weft("router", "set-gateway", "r1", "--host", ext["host"], "--uplink", ext["uplink"],
             "--ip", f"{ext['free_ips'][0]}/24", "--next-hop", ext["next_hop"])


def settled(lab):
    """Whether every host is up and its flows checked in sync, as the active controller reports (only
    it programs the switches: a standby's view of the flows is not a check)."""
    controllers = lab.info.get("controllers")
    active = next((c for c in controllers if lab.role(c) == "active"), None) if controllers else None
    if controllers and active is None:
        return False
    try:
        hosts = (lab.controller_api(active) if active else lab.api).get("/v1/hosts")
    except Exception:  # the controller is restarting
        return False
    return all(h["status"].get("ready") and h["status"].get("flows_in_sync")
               and h["status"].get("state", "up") == "up" for h in hosts)


def wait_settled(lab, since, repaired=None):
    """Seconds from `since` until settled(lab) holds, and repaired() too if given (None if not
    within SETTLE_TIMEOUT)."""
    deadline = since + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        if (repaired is None or repaired()) and settled(lab):
            return time.monotonic() - since
        time.sleep(0.05)
    return None


# --- the faults: each does its harm (and the undoing a recovery waits for) and returns a dict:
# "recovery", the moment recovery can begin; for a drift "repaired", a check that it was (until then
# the controller may not know of it); for a restart "own", the daemon's own share of the outage; and
# "undo", what puts the lab back after the recovery was measured (a killed NB member restarted) ---

def _restart_controller(lab, sig):
    with lab.controller_stopped(sig):  # started again at the block's end
        time.sleep(2)
        started = time.monotonic()
    return {"recovery": started}


def controller_kill(lab):
    return _restart_controller(lab, signal.SIGKILL)


def controller_term(lab):
    return _restart_controller(lab, signal.SIGTERM)


def drift(lab, change, repaired):
    """A hand-made change on h2's br-int, as an operator's ovs-ofctl would make it."""
    started = time.monotonic()
    lab.exec("h2", "ovs-ofctl", "-O", "OpenFlow13", *change)
    return {"recovery": started, "repaired": repaired}


def _flows(lab, host):
    return lab.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", "br-int").stdout


def drift_delete(lab):
    """The flow that delivers to b on h2 deleted by hand."""
    match = _delivery_flow(lab, "h2", lab.ports["b"]["ip"])
    mac = lab.ports["b"]["mac"]
    return drift(lab, ["--strict", "del-flows", "br-int", match],
                 lambda: any("table=90" in line and f"dl_dst={mac}" in line for line in _flows(lab, "h2").splitlines()))


def drift_add(lab):
    """A drop flow for all IP traffic added by hand, above everything in the first table."""
    return drift(lab, ["add-flow", "br-int", "table=0,priority=65000,ip,actions=drop"],
                 lambda: "priority=65000" not in _flows(lab, "h2"))


def _delivery_flow(lab, host, ip):
    """The match (as --strict del-flows takes it) of the flow in the L2 lookup stage that sends
    traffic for `ip`'s port to it, on host's br-int."""
    mac = next(p["mac"] for p in lab.ports.values() if p["ip"] == ip)
    dump = _flows(lab, host)
    for line in dump.splitlines():
        if "table=90" in line and f"dl_dst={mac}" in line:
            match = line.strip().split(" actions=")[0]
            return ",".join(f for f in match.replace(", ", ",").split(",") if not f.startswith("cookie="))
    raise RuntimeError(f"no L2 lookup flow for {mac} on {host}:\n{dump}")


def vswitchd_restart(lab):
    timings = lab.restart("h2", "vswitchd")
    return {"recovery": timings["started"], "own": timings["own_restart_s"]}


def ovsdb_restart(lab):
    timings = lab.restart("h2", "ovsdb")
    return {"recovery": timings["started"], "own": timings["own_restart_s"]}


def host_loss(lab):
    with lab.frozen("h2") as times:
        time.sleep(Config().host_down_after + FROZEN)  # the lab's controller runs with the default
    return {"recovery": times["thawed"]}


def active_kill(lab):
    active = next(c for c in lab.info["controllers"] if lab.role(c) == "active")
    killed = time.monotonic()
    lab.kill_controller(active)
    other = next(c for c in lab.info["controllers"] if c != active)
    while lab.role(other) != "active" and time.monotonic() < killed + SETTLE_TIMEOUT:
        time.sleep(0.05)
    lab.takeover_s.append(time.monotonic() - killed)
    return {"recovery": killed, "undo": lambda: lab.start_controller(active)}  # back, as the standby


def _nb_member_kill(lab, leader):
    member = lab.nb_leader() if leader else next(m for m in lab.info["nb_members"] if m != lab.nb_leader())
    killed = time.monotonic()
    lab.kill_nb_member(member)
    return {"recovery": killed, "undo": lambda: lab.start_nb_member(member)}


def nb_follower_kill(lab):
    return _nb_member_kill(lab, leader=False)


def nb_leader_kill(lab):
    return _nb_member_kill(lab, leader=True)


FAULTS = {"controller-kill": controller_kill, "controller-term": controller_term,
          "vswitchd-restart": vswitchd_restart, "ovsdb-restart": ovsdb_restart, "host-loss": host_loss,
          "drift-delete": drift_delete, "drift-add": drift_add}
HA_FAULTS = {"active-kill": active_kill, "nb-follower-kill": nb_follower_kill, "nb-leader-kill": nb_leader_kill}


def run_fault(lab, fault, across_ip, outside_ip):
    with ExitStack() as stack:
        across = stack.enter_context(lab.echoes("a", across_ip))
        through = stack.enter_context(lab.echoes("g", outside_ip))
        time.sleep(1.0)
        done = fault(lab)
        in_sync = wait_settled(lab, done["recovery"], done.get("repaired"))
        time.sleep(1.0)
        done.get("undo", lambda: None)()
        if "undo" in done:
            wait_settled(lab, time.monotonic())
    return across, through, in_sync, done.get("own")


def run_lab(faults, reps, ha):
    """Runs `faults` (name -> function) `reps` times each on one lab; returns the table's rows."""
    rows = []
    lab = Lab(f"chaos{'ha' if ha else ''}{reps}", hosts=2, external=True, ha=ha, progress=quiet)
    lab.takeover_s = []
    try:
        setup(lab)
        across_ip, outside_ip = lab.ports["b"]["ip"], lab.info["external"]["next_hop"]
        for name, fault in faults.items():
            runs = [run_fault(lab, fault, across_ip, outside_ip) for _ in range(reps)]
            syncs = [r[2] for r in runs if r[2] is not None]
            own = [r[3] for r in runs if r[3] is not None]
            note = f"own restart {median(own) * 1000:.0f} ms" if own else ""
            if name == "active-kill":
                note = f"standby active after {median(lab.takeover_s) * 1000:.0f} ms"
            rows.append([name,
                         median([r[0]["lost"] for r in runs]), median([r[0]["longest_gap_ms"] for r in runs]),
                         median([r[1]["lost"] for r in runs]), median([r[1]["longest_gap_ms"] for r in runs]),
                         f"{median(syncs):.2f}" if syncs else "never", note,
                         " ".join(f"{r[0]['lost']}/{r[1]['lost']}" for r in runs)])
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        lab.down()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated faults to run (default: all)")
    args = parser.parse_args()
    every = {**FAULTS, **HA_FAULTS}
    chosen = [f for f in args.only.split(",") if f] or list(every)
    unknown = [f for f in chosen if f not in every]
    if unknown:
        parser.error(f"unknown fault(s) {', '.join(unknown)} (faults: {', '.join(every)})")
    _common.header("Chaos: echoes through each fault", sys.argv)
    rows = []
    for faults, ha in ((FAULTS, False), (HA_FAULTS, True)):
        mine = {name: fault for name, fault in faults.items() if name in chosen}
        if mine:
            rows += run_lab(mine, args.reps, ha)
    print(table(["fault", "lost across hosts", "longest gap ms", "lost via gateway", "longest gap ms",
                 "in sync again s", "", "lost per run (across/gateway)"], rows))


if __name__ == "__main__":
    main()
