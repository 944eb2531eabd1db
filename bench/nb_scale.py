"""NB scale: creating, reading and attaching ports as the NB grows (issue 8).

One 2-host lab and one network, n1 = 10.1.0.0/16, which holds everything: the filler ports (unbound,
created with POST /v1/ports {"name", "network"}, the API picking the address, all through ONE
keep-alive HTTP connection: bench/_api.py), the probe container on h2 and the containers attached on
h1. Attaching in the filler ports' own network is the worst case: both hosts carry that network.
At each size N of --sizes (filler ports in the NB; the probe's port comes on top):
  create  --window creates, one at a time on an idle controller, each port deleted again right after
          (so the NB stays at N): create p50 and p90, delete p50, and the controller's CPU per create
          and per delete, taken from the call until the controller is idle again (so the reconcile
          pass each caused is in it). Also the p50 of the last --window creates of the fill, back
          to back, where each create waits for the reconcile of the one before (the fill's rate);
  read    --reads GET /v1/ports/<a random filler port> (the probe's, in an empty NB): p50;
  attach  --attaches sequential attaches, weft.attach.attach() in the worker on h1 with the probe on h2
          pinging (bench/_portup.py, as attach_latency's programmatic path): start -> first ping, and
          the call; then they are detached again, so every size attaches onto the same br-int;
  memory  the controller's VmRSS when the fill reached N (and the controller went idle); KiB per NB
          port = RSS delta / ports added.
The fill time is the wall time of the filler creates from 0 to the last size (the measurements
between them left out), with creates/s. The controller is waited for until it is idle (< 10% of a
CPU over 0.5 s; between the window's calls: no CPU tick in 30 ms) before every measurement.

--max-seconds is a budget for the fill: once its creates have taken that long, the fill stops where
it is (saying how long the step would have taken at the rate it had reached); the last row is then
measured there, and says so. (Today's code is O(N) per create, so O(N^2) to fill.)

    .venv/bin/python bench/nb_scale.py [--quick] [--sizes 0,1000,5000,10000] [--window 200]
        [--reads 200] [--attaches 10] [--max-seconds 600] [--token-file PATH]
Targets (issue 8): create p50 at 10,000 ports <= 2x its p50 in an empty NB; fill 0 -> 10,000 < 2 min;
attach -> first ping at 10,000 ports <= 1.5x the empty-NB figure; memory per NB port reported
(issue 8: about 4.5 KiB).
"""
import argparse
import ipaddress
import random
import sys
import time
from collections import deque

import _common
from _api import KeepAlive, lab_endpoint
from _common import median, pct, table
from _labutil import (check_controller_tree, cpu_seconds, lab_pid, nb_server_pid, new_lab, rss_kib,
                      wait_idle)
from _portup import Programmatic, start_probe, timed_attaches

from weft import lab as weftlab

NETWORK, CIDR = "n1", "10.1.0.0/16"
# The API hands filler ports addresses from the bottom of the /16; the probe and the attached
# containers take theirs from the top, so the two never meet below 32,000 ports.
_TOP = list(ipaddress.IPv4Network("10.1.128.0/17").hosts())[::-1]
PROBE_IP, ATTACH_IPS = str(_TOP[0]), [str(a) for a in _TOP[1:]]
MAX_SIZE = 30000
RATE_OVER = 50  # creates: the rate quoted when the budget stops the fill


def timed(api, method, path, body=None, expect=200):
    """Seconds one API call took; raises unless it answered `expect`."""
    t = time.perf_counter()
    status, answer = api.request(method, path, body)
    dt = time.perf_counter() - t
    if status != expect:
        raise RuntimeError(f"{method} {path}: {status} {answer}")
    return dt


def create_port(api, name):
    return timed(api, "POST", "/v1/ports", {"name": name, "network": NETWORK}, expect=201)


class Filler:
    """Creates unbound ports f1, f2, ... one after another on one keep-alive connection."""

    def __init__(self, api):
        self.api = api
        self.names = []
        self.times = []     # each create's wall time
        self.seconds = 0.0  # their sum

    def create(self):
        name = f"f{len(self.names) + 1}"
        dt = create_port(self.api, name)
        self.names.append(name)
        self.times.append(dt)
        self.seconds += dt
        return dt

    def fill_to(self, n, budget):
        """Creates ports up to n; returns None when it got there, else why it stopped: the fill's
        creates have taken `budget` seconds (with how long the step would have taken at the last
        creates' rate, which on an O(N)-per-create NB only grows)."""
        recent = deque(maxlen=RATE_OVER)
        while len(self.names) < n:
            recent.append(self.create())
            if self.seconds >= budget:
                rate = len(recent) / sum(recent)
                return (f"--max-seconds {budget:.0f} used up; at the last {len(recent)} creates' rate "
                        f"({rate:.1f}/s) the fill to {n} would have taken ≥ {self.seconds + (n - len(self.names)) / rate:.0f} s")
        return None


class Run:
    def __init__(self, lab, api, a):
        self.lab, self.api, self.a = lab, api, a
        self.filler = Filler(api)
        self.controller, self.nb = lab_pid(lab, "controller"), nb_server_pid(lab)
        self.probe = start_probe(lab, NETWORK, PROBE_IP)
        self.worker = Programmatic(lab)
        self.attach_ips = iter(ATTACH_IPS)
        self.n_attached = self.n_window = 0
        self.rng = random.Random(8)

    def idle(self):
        return wait_idle(self.controller)

    def quiet(self):
        """Idle again after one call: no CPU tick of the controller in 30 ms (its timers alone use
        about 5 ms/s)."""
        wait_idle(self.controller, busy=0.01, interval=0.03)

    def one(self, call):
        """(wall time of call(), controller CPU from its start until the controller is quiet again)."""
        c0 = cpu_seconds(self.controller)
        dt = call()
        self.quiet()
        return dt, cpu_seconds(self.controller) - c0

    def window(self):
        """--window creates, each on a quiet controller and deleted right after: {"create", "delete":
        ([wall times], mean controller CPU per call)}."""
        out = {"create": ([], []), "delete": ([], [])}
        self.quiet()
        for _ in range(self.a.window):
            self.n_window += 1
            name = f"w{self.n_window}"
            for kind, call in (("create", lambda: create_port(self.api, name)),
                               ("delete", lambda: timed(self.api, "DELETE", f"/v1/ports/{name}"))):
                dt, cpu = self.one(call)
                out[kind][0].append(dt)
                out[kind][1].append(cpu)
        return {kind: (times, sum(cpus) / len(cpus)) for kind, (times, cpus) in out.items()}

    def reads(self):
        names = self.filler.names or ["probe"]  # the empty NB's one port
        return [timed(self.api, "GET", f"/v1/ports/{self.rng.choice(names)}") for _ in range(self.a.reads)]

    def attaches(self):
        """--attaches sequential attaches with the probe pinging, then detached and removed."""
        samples, names = [], []
        for _ in range(self.a.attaches):
            self.n_attached += 1
            name = f"a{self.n_attached}"
            c = self.lab.container(name, "h1")
            names.append(name)
            req = {"netns": c["netns"], "network": NETWORK, "name": name, "ip": next(self.attach_ips)}
            samples += timed_attaches(self.probe, [req], self.worker.attach_all)
        for s in samples:
            if s["error"]:
                print(f"  {s['name']}: attach failed: {s['error']}", file=sys.stderr)
        self.worker.detach([s["name"] for s in samples if not s["error"]])
        for name in names:
            weftlab.container_del(self.lab.name, name)
        return samples

    def fill_step(self, size):
        """Fills to size (or to where the budget stops it) and waits for the controller to be idle;
        a row with what the step cost."""
        n0, s0 = len(self.filler.names), self.filler.seconds
        c0, nb0 = cpu_seconds(self.controller), cpu_seconds(self.nb)
        stopped = self.filler.fill_to(size, self.a.max_seconds)
        settle = self.idle()
        n = len(self.filler.names) - n0
        return {"ports": len(self.filler.names), "fill_seconds": self.filler.seconds, "stopped": stopped,
                "step_creates": n, "step_seconds": self.filler.seconds - s0,
                "back_to_back": self.filler.times[-min(n, self.a.window):] if n else [],
                "step_cpu": cpu_seconds(self.controller) - c0, "step_nb_cpu": cpu_seconds(self.nb) - nb0,
                "settle": settle, "rss": rss_kib(self.controller), "nb_rss": rss_kib(self.nb)}

    def measure(self, row):
        row["window"] = self.window()
        row["get"] = self.reads()
        row["attach"] = self.attaches()
        return row

    def run(self, sizes):
        rows = []
        for size in sizes:
            row = self.measure(self.fill_step(size))
            rows.append(row)
            print(f"  measured at {row['ports']} ports ({time.strftime('%H:%M:%S')})", file=sys.stderr)
            if row["stopped"]:
                break
        return rows

    def close(self):
        self.probe.close()
        self.worker.close()


def ms(xs, p=50, digits=1):
    xs = [x for x in xs if x is not None]
    return f"{pct(xs, p) * 1e3:.{digits}f}" if xs else "-"


def report(rows, base, connects):
    out = []
    head = ["NB ports", "create p50 ms", "create p90 ms", "controller CPU ms per create", "delete p50 ms",
            "controller CPU ms per delete", "back-to-back create p50 ms (fill)", "GET port p50 ms",
            "attach -> ping p50 ms", "attach call p50 ms", "attaches ok"]
    trows = []
    for r in rows:
        ok = [s for s in r["attach"] if not s["error"] and s["ping"] is not None]
        label = f"{r['ports']}" + (" (fill stopped)" if r["stopped"] else "")
        (creates, create_cpu), (deletes, delete_cpu) = r["window"]["create"], r["window"]["delete"]
        trows.append([label, ms(creates), ms(creates, 90), f"{create_cpu * 1e3:.1f}", ms(deletes),
                      f"{delete_cpu * 1e3:.1f}", ms(r["back_to_back"]), ms(r["get"], digits=2),
                      ms([s["ping"] for s in ok], digits=0), ms([s["call"] for s in ok], digits=0),
                      f"{len(ok)} of {len(r['attach'])}"])
    out.append(table(head, trows))

    head = ["NB ports", "controller RSS MiB", "KiB per port since the previous row", "KiB per port since the first row",
            "NB server RSS MiB", "fill s to here (creates only)", "fill step: creates", "creates/s",
            "controller CPU-s", "NB server CPU-s", "then idle after s"]
    trows, prev = [], None
    first = rows[0]
    for r in rows:
        def per_port(since):
            added = r["ports"] - since["ports"]
            return f"{(r['rss'] - since['rss']) / added:.2f}" if added > 0 else "-"
        trows.append([r["ports"], f"{r['rss'] / 1024:.1f}", per_port(prev) if prev else "-", per_port(first),
                      f"{r['nb_rss'] / 1024:.1f}", f"{r['fill_seconds']:.1f}", r["step_creates"],
                      f"{r['step_creates'] / r['step_seconds']:.1f}" if r["step_creates"] else "-",
                      f"{r['step_cpu']:.1f}", f"{r['step_nb_cpu']:.1f}", f"{r['settle']:.1f}"])
        prev = r
    out.append(table(head, trows))

    last = rows[-1]
    notes = [f"Fill 0 -> {last['ports']} ports: {last['fill_seconds']:.1f} s of creates, "
             f"{last['ports'] / last['fill_seconds']:.1f} creates/s" if last["fill_seconds"] else
             "No fill (sizes 0 only).",
             f"API {base}, {connects} HTTP connection(s) opened for the run (1 = kept alive throughout).",
             "NB ports = the filler ports; the probe's port is in the NB too, the attached ones only while "
             "they are measured. create/delete: the --window creates at that size, one at a time on a quiet "
             "controller, each port deleted right after; back-to-back: the last --window creates of the "
             "fill step that reached the size."]
    if last["stopped"]:
        notes.append(f"The fill stopped at {last['ports']} ports: {last['stopped']}.")
    if len(rows) > 1:
        zero, top = rows[0], last
        ping0 = [s["ping"] for s in zero["attach"] if s["ping"] is not None]
        ping1 = [s["ping"] for s in top["attach"] if s["ping"] is not None]
        c0, c1 = zero["window"]["create"][0], top["window"]["create"][0]
        if c0 and c1:
            notes.append(f"create p50 at {top['ports']} / at {zero['ports']}: "
                         f"{median(c1) / median(c0):.1f}x (target at 10,000 vs empty: <= 2x)")
        if ping0 and ping1:
            notes.append(f"attach -> ping p50 at {top['ports']} / at {zero['ports']}: "
                         f"{median(ping1) / median(ping0):.2f}x (target at 10,000 vs empty: <= 1.5x)")
        added = top["ports"] - zero["ports"]
        if added > 0:
            notes.append(f"Controller memory per NB port ({zero['ports']} -> {top['ports']}): "
                         f"{(top['rss'] - zero['rss']) / added:.2f} KiB (issue 8: about 4.5 KiB today); "
                         f"NB server: {(top['nb_rss'] - zero['nb_rss']) / added:.2f} KiB")
    notes.append("Targets (issue 8): create p50 at 10,000 ports <= 2x empty; fill 0 -> 10,000 < 120 s; "
                 "attach -> ping at 10,000 <= 1.5x empty.")
    out.append("\n".join(f"- {n}" for n in notes))
    return "\n\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="sizes 0,1000, window 50, 50 reads, 5 attaches")
    ap.add_argument("--sizes", help="filler ports at which to measure (default 0,1000,5000,10000)")
    ap.add_argument("--window", type=int, help="creates (each deleted after) timed at each size (default 200)")
    ap.add_argument("--reads", type=int, help="GETs of one port timed at each size (default 200)")
    ap.add_argument("--attaches", type=int, help="sequential attaches at each size (default 10)")
    ap.add_argument("--max-seconds", type=float, default=600.0,
                    help="budget for the creates of the fill (default 600)")
    ap.add_argument("--token-file", help="bearer token for the API (default: the lab's api_token_file, if any)")
    a = ap.parse_args()
    a.sizes = sorted({int(s) for s in (a.sizes or ("0,1000" if a.quick else "0,1000,5000,10000")).split(",")})
    a.window = a.window or (50 if a.quick else 200)
    a.reads = a.reads or (50 if a.quick else 200)
    a.attaches = a.attaches or (5 if a.quick else 10)
    if a.sizes[0] < 0 or a.sizes[-1] > MAX_SIZE:
        ap.error(f"sizes must be between 0 and {MAX_SIZE} ports")

    lab = new_lab("n")
    try:
        check_controller_tree(lab)
        base, token_file = lab_endpoint(lab.info)
        api = KeepAlive(base, a.token_file or token_file)
        status, body = api.request("POST", "/v1/networks", {"name": NETWORK, "cidr": CIDR})
        if status != 201:
            raise RuntimeError(f"POST /v1/networks: {status} {body}")
        run = Run(lab, api, a)
        try:
            rows = run.run(a.sizes)
        finally:
            run.close()
        connects = api.connects
        api.close()
    finally:
        lab.down()

    _common.header(f"nb_scale: port create, read and attach at {', '.join(map(str, a.sizes))} NB ports, 2 hosts",
                   sys.argv)
    print(f"Window {a.window} creates (each deleted after), {a.reads} reads, {a.attaches} sequential attaches per size; "
          f"--max-seconds {a.max_seconds:.0f}.\n")
    print(report(rows, base, connects))


if __name__ == "__main__":
    main()
