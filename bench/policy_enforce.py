"""NetworkPolicy: time from `weft apply` to the policy enforced, seen from the data path, and from
`weft policy delete` to connections passing again.

A lab of 3 hosts (--hosts 2 or 3), one network n1: the client `cli` on h1, the server `srv` on h2
(bench/_tcpserver.py on port 8000), and with 3 hosts an idle port on h3, so the network and the
apply's wait span every host. A prober in `cli` (bench/_tcpprobe.py, one process) starts a
non-blocking TCP connect to srv every 2 ms, each given 200 ms to connect. Each repetition:

- deny: from just before the call, `POST /v1/apply?wait_up=10` (path "api") or
  `weft apply -f deny.yaml --timeout 10` (path "cli") of a NetworkPolicy selecting srv with
  policyTypes [Ingress] and no rule (deny all ingress); "blocked" = start of the first connect that
  failed after the last one that succeeded, minus the call's start. The apply waits until every
  host has acknowledged the flows, so its own return ("call") is printed too.
- allow again: `DELETE /v1/policies/n1/deny-srv` or `weft policy delete n1/deny-srv` (neither
  waits for the switches); "passes" = start of the first connect that succeeded after the last
  one that failed, minus the call's start.
The prober's spacing (2 ms) bounds the resolution. Paths alternate, their order flips every
repetition; N repetitions per path (default 20, --quick 5). p99 of 20 samples is their maximum.

    sudo .venv/bin/python bench/policy_enforce.py [--quick] [--reps 20] [--hosts 3] [--paths api,cli]
"""
import argparse
import json
import sys
import time

import _common
from _api import KeepAlive, lab_endpoint
from _common import median, pct, table
from _labutil import BENCH, PY, LineProc, new_lab, tcp_server

PORT = 8000
DENY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-srv", "namespace": "n1"},
        "spec": {"podSelector": {"matchLabels": {"app": "srv"}}, "policyTypes": ["Ingress"]}}
FAST_ARP = ("net.ipv4.neigh.eth0.retrans_time_ms=10", "net.ipv4.neigh.eth0.mcast_solicit=1")


def edge(attempts, t0, want):
    """(seconds from t0 to the first attempt ending `want` after the last one that did not, the
    gap between those two attempts (the resolution), attempts before t0 that did not end as
    before, attempts after t0 that ended `want` and were followed by one that did not (flaps))."""
    before = not want
    last_before = max((s for s, ok in attempts if ok is before), default=None)
    if last_before is None:
        return None, None, 0, 0
    first = min((s for s, ok in attempts if ok is want and s > last_before), default=None)
    odd = sum(1 for s, ok in attempts if s < t0 and ok is want)
    flaps = sum(1 for s, ok in attempts if t0 <= s < last_before and ok is want)
    if first is None:
        return None, None, odd, flaps
    return first - t0, first - last_before, odd, flaps


class Prober:
    def __init__(self, lab, ip):
        self.lp = LineProc(lab, "cli", [PY, BENCH / "_tcpprobe.py", ip, PORT, lab.dir / "probe.tag"],
                           "tcp prober")

    def measure(self, want, action):
        """Runs action() while probing: {"call", "data", "resolution", "odd", "flaps", "settled"}."""
        self.lp.send(f"RUN {'ok' if want else 'fail'} 0.3 10")
        if not self.lp.get(10).startswith("STARTED"):
            raise RuntimeError("the prober did not start")
        time.sleep(0.1)  # connections before the change, to see them pass (or fail)
        t0 = time.monotonic()
        action()
        call = time.monotonic() - t0
        res = json.loads(self.lp.get(30))
        data, resolution, odd, flaps = edge(res["attempts"], t0, want)
        return {"call": call, "data": data, "resolution": resolution, "odd": odd, "flaps": flaps,
                "settled": res["settled"]}

    def close(self):
        self.lp.send("QUIT")
        self.lp.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="5 repetitions per path")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--hosts", type=int, default=3, choices=(2, 3))
    ap.add_argument("--paths", default="api,cli")
    a = ap.parse_args()
    reps = 5 if a.quick else a.reps
    paths = a.paths.split(",")

    lab = new_lab("pe", a.hosts)
    prober = server = None
    try:
        lab.api.post("/v1/networks", {"name": "n1", "cidr": "10.1.0.0/24"})
        cli = lab.attach("cli", "h1", "n1", labels=("app=client",))
        srv = lab.attach("srv", "h2", "n1", labels=("app=srv",))
        if a.hosts == 3:
            lab.attach("idle", "h3", "n1", labels=("app=idle",))
        for c in ("cli", "srv"):
            lab.exec(c, "sysctl", "-q", "-w", *FAST_ARP)
        server = tcp_server(lab, "srv", PORT)
        manifest = lab.dir / "deny.json"
        manifest.write_text(json.dumps(DENY))
        api = KeepAlive(*lab_endpoint(lab.info))

        def api_apply():
            status, body = api.request("POST", "/v1/apply?wait_up=10", {"documents": [DENY]})
            if status != 200 or body["lagging"]:
                raise RuntimeError(f"apply answered {status}: {body}")

        def api_delete():
            status, body = api.request("DELETE", "/v1/policies/n1/deny-srv")
            if status != 200:
                raise RuntimeError(f"delete answered {status}: {body}")
        actions = {"api": (api_apply, api_delete),
                   "cli": (lambda: lab.weft("apply", "-f", manifest, "--timeout", "10"),
                           lambda: lab.weft("policy", "delete", "n1/deny-srv"))}
        status, plan = api.request("POST", "/v1/apply", {"documents": [DENY], "plan": True})
        planned = {h: p["total"] for h, p in plan["hosts"].items()}

        prober = Prober(lab, srv["ip"])
        for path in paths:  # warm-up, not counted: the first policy's flows, the CLI's imports
            prober.measure(False, actions[path][0])
            prober.measure(True, actions[path][1])
        res = {p: {"deny": [], "allow": []} for p in paths}
        for rep in range(reps):
            for path in (paths if rep % 2 == 0 else paths[::-1]):
                apply, delete = actions[path]
                res[path]["deny"].append(prober.measure(False, apply))
                res[path]["allow"].append(prober.measure(True, delete))
    finally:
        if prober:
            prober.close()
        if server and server.poll() is None:
            server.terminate()
            server.wait(timeout=5)
        lab.down()

    _common.header(f"policy_enforce: {a.hosts} hosts, client h1 -> server h2, {reps} repetitions per path",
                   sys.argv)
    print("Policy: deny all ingress to srv (h2). Flows it adds, by `weft apply --plan`: "
          + ", ".join(f"{h} +{t['added']} -{t['removed']}" for h, t in sorted(planned.items())) + "\n")

    def ms(v):
        return f"{v * 1000:.0f}"
    rows = []
    for path in paths:
        for phase, what, call in (("deny", "apply -> first blocked connect", "apply call returned (waits)"),
                                  ("allow", "delete -> first connect passing again", "delete call returned")):
            samples = res[path][phase]
            data = [s["data"] for s in samples if s["data"] is not None]
            calls = [s["call"] for s in samples]
            missed = len(samples) - len(data)
            for label, vals in ((what, data), (call, calls)):
                rows.append([path, label, ms(median(vals)) if vals else "-", ms(pct(vals, 90)) if vals else "-",
                             ms(pct(vals, 99)) if vals else "-", ms(min(vals)) if vals else "-",
                             f"{len(vals)}" + (f" ({missed} never changed)" if missed and vals is data else "")])
    print(table(["path", "measure", "p50 ms", "p90 ms", "p99 ms", "min ms", "n"], rows))
    print()
    extra = []
    for path in paths:
        for phase in ("deny", "allow"):
            samples = res[path][phase]
            gaps = [s["resolution"] for s in samples if s["resolution"] is not None]
            lead = [s["call"] - s["data"] for s in samples if s["data"] is not None]
            extra.append([path, phase, f"{median(gaps) * 1000:.1f}" if gaps else "-",
                          f"{median(lead) * 1000:.0f} ({min(lead) * 1000:.0f} to {max(lead) * 1000:.0f})" if lead else "-",
                          sum(s["flaps"] for s in samples), sum(s["odd"] for s in samples),
                          sum(not s["settled"] for s in samples)])
    print(table(["path", "phase", "resolution ms (median gap across the edge)", "call - data path ms, median (min to max)",
                 "flaps after the edge", "connects unlike the state before the call", "never settled"], extra))
    for path in paths:
        print(f"\n{path}, apply -> blocked, each ms: "
              + " ".join(ms(s["data"]) if s["data"] is not None else "-" for s in res[path]["deny"]))
        print(f"{path}, delete -> passing, each ms: "
              + " ".join(ms(s["data"]) if s["data"] is not None else "-" for s in res[path]["allow"]))


if __name__ == "__main__":
    main()
