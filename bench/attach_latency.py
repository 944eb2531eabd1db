"""Port-up latency: start of an attach -> first ping reply from a container on the other host.

Lab with 2 hosts; a probe container on h2 (attached first) pings every new container from one
process with a raw ICMP socket (bench/_probe.py: every 5 ms, then backing off). Containers on h1 are
attached 40 one after another, then 20 at once, through two paths, each in a fresh lab:
  programmatic: weft.attach.attach() in a long-lived worker inside h1's namespace (bench/_attach_worker.py),
                the path a CNI plugin would use;
  cli:          `weft attach` (python -m weft.cli attach) run in h1's namespace (ip netns exec + env,
                as `weft lab exec h1` does).
Containers get net.ipv4.neigh.eth0.retrans_time_ms=10 and mcast_solicit=1 right after the attach
returns (pitfall 1). Times: "ping" = reply - start; "call" = attach return - start; "ping - call".
In the burst, "start" is the start of the burst for every container. With --seq above 40, the
sequential ports 1-40 and 61-100 (and 101-N) are reported apart. The CPU (utime+stime in /proc) of the
controller, its NB ovsdb-server and each host's ovs-vswitchd is taken across each phase.

    .venv/bin/python bench/attach_latency.py [--quick] [--paths programmatic,cli] [--seq 40] [--burst 20]
Targets: programmatic p50 <= 26 ms sequential, <= 200 ms burst of 20; CLI p50 <= 250 ms.
OVN (same lab): p50 26 / p90 34 / p99 46 ms sequential, p50 392 ms burst of 20.
"""
import argparse
import resource
import subprocess
import sys
import threading
import time

import _common
import _netns
from _common import median, pct, table
from _labutil import PY, check_controller_tree, control_plane_pids, cpu_seconds, new_lab
from _portup import WAIT, Programmatic, start_probe, timed_attaches

from weft import lab as weftlab
from weft.attach import netns_path

# Sequential ports reported apart (as OVN's figures are): vswitchd's port add grows with the bridge.
SEQ_SEGMENTS = ((1, 40), (61, 100))
IDLE_SECONDS = 2.0


def cli_attach(lab, req):
    # `python -m weft.cli` is what .venv/bin/weft runs, but from this tree (PYTHONPATH, see _common).
    argv = [PY, "-m", "weft.cli", "attach", req["netns"], "--network", req["network"], "--name",
            req["name"], "--ip", req["ip"], "--json"]
    cmd, env = weftlab.target_cmd(lab.name, "h1", argv)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cli_attach_all(lab, reqs):
    """`weft attach` processes for reqs, all at once; [(req, result)] like Programmatic.attach_all."""
    done = [None] * len(reqs)

    def one(i, r, t0):
        p = cli_attach(lab, r)
        _, err = p.communicate()
        t1 = time.monotonic()
        if not p.returncode:
            _netns.fast_arp(netns_path(r["netns"]))
        done[i] = (r, {"t0": t0, "t1": t1, "error": err.strip() if p.returncode else None})
    threads = [threading.Thread(target=one, args=(i, r, time.monotonic())) for i, r in enumerate(reqs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done


def cpu_now(pids):
    return {what: cpu_seconds(pid) for what, pid in pids.items()}


def cpu_since(pids, before):
    return {what: cpu_seconds(pid) - before[what] for what, pid in pids.items()}


def run_path(path, n_seq, n_burst):
    lab = new_lab({"programmatic": "p", "cli": "c"}[path])
    try:
        check_controller_tree(lab)
        lab.api.post("/v1/networks", {"name": "n1", "cidr": "10.1.0.0/16"})
        probe = start_probe(lab, "n1", "10.1.0.2")
        worker = Programmatic(lab) if path == "programmatic" else None
        attach_all = worker.attach_all if worker else (lambda reqs: cli_attach_all(lab, reqs))
        ips = (f"10.1.{i // 250 + 1}.{i % 250 + 1}" for i in range(n_seq + n_burst))
        samples = {"sequential": [], "burst": []}
        out = {"samples": samples, "cpu": {}}
        pids = control_plane_pids(lab)

        def make(prefix, i):
            c = lab.container(f"{prefix}{i}", "h1")
            return {"netns": c["netns"], "network": "n1", "name": f"{prefix}{i}", "ip": next(ips)}

        def run(reqs, kind):
            done = timed_attaches(probe, reqs, attach_all, burst=kind == "burst")
            for s in done:
                if s["error"]:
                    print(f"  {s['name']}: attach failed: {s['error']}", file=sys.stderr)
            samples[kind] += done

        # The controller's own timers cost CPU with nothing to do: measured first, to set it apart.
        cpu0 = cpu_now(pids)
        time.sleep(IDLE_SECONDS)
        out["idle"] = cpu_since(pids, cpu0)["controller"] / IDLE_SECONDS
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0, t0 = cpu_now(pids), time.monotonic()
        for i in range(n_seq):
            run([make("s", i)], "sequential")
        out["cpu"]["sequential"] = cpu_since(pids, cpu0)
        out["seconds"] = {"sequential": time.monotonic() - t0}
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # In the CLI path each sequential attach is one child process (ip netns exec execs python);
        # in the programmatic path the worker is not reaped yet, so this is only `ip` and sysctl.
        out["cpu_per_cli"] = ((ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / n_seq
                              if worker is None else None)
        reqs = [make("b", i) for i in range(n_burst)]
        cpu0, t0 = cpu_now(pids), time.monotonic()
        run(reqs, "burst")
        out["cpu"]["burst"] = cpu_since(pids, cpu0)
        out["seconds"]["burst"] = time.monotonic() - t0
        probe.close()
        if worker:
            worker.close()
        return out
    finally:
        lab.down()


def stats_row(label, xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return [label, "-", "-", "-", "-"]
    return [label, f"{pct(xs, 50) * 1e3:.0f}", f"{pct(xs, 90) * 1e3:.0f}", f"{pct(xs, 99) * 1e3:.0f}",
            f"{len(xs)}"]


def reported_groups(samples):
    """[(label, samples)]: the sequential ports 1-40 and 61-100 apart when there are more than 40
    (vswitchd's port add grows with the bridge, and OVN's figures are given so), then the burst."""
    seq = samples["sequential"]
    if len(seq) <= SEQ_SEGMENTS[0][1]:
        groups = [("sequential", seq)]
    else:
        groups = [(f"sequential, ports {a}-{min(b, len(seq))}", seq[a - 1:b]) for a, b in SEQ_SEGMENTS
                  if a <= len(seq)]
        if len(seq) > SEQ_SEGMENTS[-1][1]:
            groups.append((f"sequential, ports {SEQ_SEGMENTS[-1][1] + 1}-{len(seq)}", seq[SEQ_SEGMENTS[-1][1]:]))
    return groups + [("burst", samples["burst"])]


def cpu_rows(results):
    rows = []
    for p, res in results.items():
        for kind, cpu in res["cpu"].items():
            n = len(res["samples"][kind])
            rows.append([f"{p}, {kind}", n, f"{res['seconds'][kind]:.1f}",
                         f"{cpu['controller'] / n * 1e3:.1f}" if n else "-", *(f"{v:.2f}" for v in cpu.values())])
    return rows


# attach() sends POST /v1/ports, makes the veth and plugs it while the controller answers, then
# reads the answer, sets the host end's MTU, configures the container end and waits for up.
PHASES = [("before POST (netns check, imports)", "t0", "POST /v1/ports start"),
          ("POST sent -> OVSDB plug starts (veth made meanwhile)", "POST /v1/ports start", "ovsdb plug start"),
          ("OVSDB plug", "ovsdb plug start", "ovsdb plug end"),
          ("plug done -> POST answer read", "ovsdb plug end", "POST /v1/ports end"),
          ("host end MTU", "POST /v1/ports end", "netns1 start"),
          ("container side: setns + MAC, MTU, up, addr, route, tx csum off", "netns1 start", "netns1 end"),
          ("GET ?wait_up (flows on every host)", "GET /v1/ports?wait_up start", "GET /v1/ports?wait_up end")]


def breakdown(samples):
    rows = []
    for label, a, b in PHASES:
        vals = {}
        for kind, ss in samples.items():
            d = []
            for s in ss:
                ph = dict(s["phases"] or [])
                ph["t0"] = s["t0"]
                if a in ph and b in ph:
                    d.append(ph[b] - ph[a])
            vals[kind] = f"{median(d) * 1e3:.1f}" if d else "-"
        rows.append([label, vals.get("sequential", "-"), vals.get("burst", "-")])
    labels = sorted({k for ss in samples.values() for s in ss for k in (s["acc"] or {})})
    for label in labels:
        vals = {kind: [s["acc"][label] for s in ss if s["acc"] and label in s["acc"]]
                for kind, ss in samples.items()}
        rows.append([f"  of which {label} (sum per attach)",
                     *(f"{median(vals[k]) * 1e3:.1f}" if vals.get(k) else "-" for k in ("sequential", "burst"))])
    calls = {kind: [s["call"] for s in ss if not s["error"]] for kind, ss in samples.items()}
    rows.append(["whole attach call (successful ones)",
                 *(f"{median(calls[k]) * 1e3:.1f}" if calls.get(k) else "-" for k in ("sequential", "burst"))])
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10 sequential, burst of 5")
    ap.add_argument("--paths", default="programmatic,cli",
                    help="comma-separated: programmatic, cli (default both)")
    ap.add_argument("--seq", type=int)
    ap.add_argument("--burst", type=int)
    a = ap.parse_args()
    n_seq = a.seq or (10 if a.quick else 40)
    n_burst = a.burst or (5 if a.quick else 20)
    results = {p: run_path(p, n_seq, n_burst) for p in a.paths.split(",")}

    _common.header(f"attach_latency: {n_seq} sequential + burst of {n_burst}, 2 hosts", sys.argv)
    rows = []
    for p, res in results.items():
        for kind, ss in reported_groups(res["samples"]):
            fails = sum(1 for s in ss if s["ping"] is None)
            errors = [s["error"] for s in ss if s.get("error")]
            rows.append(stats_row(f"{p}, {kind}: ping (start -> first reply)", [s["ping"] for s in ss]))
            rows.append(stats_row(f"{p}, {kind}: attach call", [s["call"] for s in ss]))
            rows.append(stats_row(f"{p}, {kind}: ping - call",
                                  [s["ping"] - s["call"] if s["ping"] is not None else None for s in ss]))
            if fails:
                rows.append([f"{p}, {kind}: no reply within {WAIT:.0f} s", "", "", "", str(fails)])
            if errors:
                first = errors[0].strip().splitlines()[-1][:120]
                rows.append([f"{p}, {kind}: attach failed (first error: {first})", "", "", "", str(len(errors))])
    print(table(["path, phase", "p50 ms", "p90 ms", "p99 ms", "n"], rows))
    if results.get("cli", {}).get("cpu_per_cli"):
        print(f"\nCPU time (user+sys) of one `weft attach` process, sequential: "
              f"{results['cli']['cpu_per_cli'] * 1e3:.0f} ms")
    print("\nControl-plane CPU (user+sys, /proc/PID/stat) while the ports were attached:\n")
    procs = next(iter(results.values()))["cpu"]["sequential"]
    print(table(["path, phase", "ports", "phase s", "controller CPU ms per port", *(f"{w} CPU-s" for w in procs)],
                cpu_rows(results)))
    print("\nController CPU with nothing to do (its timers), over {:.0f} s before the sequential phase: {}.".format(
        IDLE_SECONDS, ", ".join(f"{p} {res['idle'] * 1e3:.0f} ms/s" for p, res in results.items())))
    for p in ("programmatic",):
        if p in results:
            print(f"\nWhere the {p} attach call spends its time (medians, ms):\n")
            print(table(["step", "sequential", "burst"], breakdown(results[p]["samples"])))
    print("\nTargets: programmatic p50 <= 26 ms sequential, <= 200 ms burst of 20; CLI p50 <= 250 ms. "
          "OVN: p50 26 / p90 34 / p99 46 ms sequential, p50 392 ms burst of 20.")


if __name__ == "__main__":
    main()
