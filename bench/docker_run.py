"""`docker run` on a Weft network to the first reply from a container on the other host, against
the same on Docker's own bridge driver on one host.

A 2-host lab with runtimes (a dockerd and `weft docker-plugin` per host, weft.labruntimes). Weft: a
network made by `docker network create -d weft --ipam-driver weft` on both hosts, a target
container on h1; each run is `docker run --rm --net blue weft/busybox ping -c1 -W1 TARGET` on h2.
Bridge: `docker network create -d bridge` on h2 alone (iptables, masquerade and forwarding off, so
only h2's namespace gets a Linux bridge; checked: the root namespace and h2's forwarding are as
before), a target container on h2, the same `docker run` on h2. Runs alternate (weft, bridge, then
bridge, weft, ...). Timed from just before the client starts to the ping's reply line on its stdout
("first reply"), and to the client's exit ("total", which adds the reply wait's end and the
container's removal). `--net none` (no network, no ping) is the start-up floor. The plugins run
with WEFT_DEBUG=1, which logs each call's time: the table of h2's calls during the Weft runs is
where Weft's share of a `docker run` goes.

    .venv/bin/python bench/docker_run.py [--runs 20]
"""
import argparse
import collections
import os
import re
import subprocess
import time
from pathlib import Path

import _common
from _common import median, pct, table
from _labutil import quiet

from weft import labruntimes
from weft.testing import Lab, root_state


def timed_run(lab, host, args):
    """(seconds to the first reply line or None, seconds to exit, exit status) of `docker ARGS`."""
    argv, env = labruntimes.docker_cmd(lab.name, host, args)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    for line in proc.stdout:
        if first is None and "bytes from" in line:
            first = time.perf_counter() - t0
    proc.wait()
    return first, time.perf_counter() - t0, proc.returncode, proc.stderr.read()


def plugin_calls(log_path, offset):
    """{call: [ms]} from the plugin's log after byte `offset` (its WEFT_DEBUG lines)."""
    calls = collections.defaultdict(list)
    with open(log_path, "rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            m = re.match(r"weft docker-plugin: /(\S+) answered in ([\d.]+) ms", line)
            if m:
                calls[m.group(1)].append(float(m.group(2)))
    return calls


def run(runs):
    os.environ["WEFT_DEBUG"] = "1"  # the plugins log each call's time
    lab = Lab(f"bdr{int(time.time()) % 100000}", 2, runtimes=True, progress=quiet)
    try:
        for host in ("h1", "h2"):
            lab.docker(host, "network", "create", "-d", "weft", "--ipam-driver", "weft", "--subnet",
                       "10.80.0.0/24", "blue")
        lab.docker("h1", "run", "-d", "--net", "blue", "--name", "wtarget", "weft/busybox", "sleep", "3600")
        weft_ip = lab.docker("h1", "inspect", "-f", '{{.NetworkSettings.Networks.blue.IPAddress}}',
                             "wtarget").stdout.strip()
        root_before = root_state()
        forward_before = lab.exec("h2", "sysctl", "-n", "net.ipv4.ip_forward").stdout
        lab.docker("h2", "network", "create", "-d", "bridge", "--subnet", "10.81.0.0/24",
                   "-o", "com.docker.network.bridge.enable_ip_masquerade=false", "bbr")
        lab.docker("h2", "run", "-d", "--net", "bbr", "--name", "btarget", "weft/busybox", "sleep", "3600")
        bridge_ip = lab.docker("h2", "inspect", "-f", '{{.NetworkSettings.Networks.bbr.IPAddress}}',
                               "btarget").stdout.strip()
        assert root_state() == root_before, "Docker's bridge driver changed the root namespace"
        assert lab.exec("h2", "sysctl", "-n", "net.ipv4.ip_forward").stdout == forward_before
        cases = {
            "weft (h2 -> h1)": ["run", "--rm", "--net", "blue", "weft/busybox", "ping", "-c1", "-W1", weft_ip],
            "bridge (h2 -> h2)": ["run", "--rm", "--net", "bbr", "weft/busybox", "ping", "-c1", "-W1", bridge_ip],
            "none (no network)": ["run", "--rm", "--net", "none", "weft/busybox", "true"],
        }
        for args in cases.values():  # warm-up: first use of each path (image layers, plugin imports)
            timed_run(lab, "h2", args)
        results = {name: [] for name in cases}
        failures = {name: 0 for name in cases}
        log_path = lab.info["hosts"]["h2"]["runtimes"]["docker_plugin_log"]
        calls = collections.defaultdict(list)
        loads = []
        for i in range(runs):
            order = list(cases) if i % 2 == 0 else list(reversed(cases))
            loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
            for name in order:
                offset = os.path.getsize(log_path)
                first, total, status, err = timed_run(lab, "h2", cases[name])
                if name.startswith("weft"):
                    for call, ms in plugin_calls(log_path, offset).items():
                        calls[call].extend(ms)
                if status != 0:
                    failures[name] += 1
                    print(f"  run {i} {name}: exit {status}: {err.strip()[-200:]}")
                    continue
                results[name].append((first, total))
        rows = []
        for name, values in results.items():
            firsts = [f for f, _ in values if f is not None]
            totals = [t for _, t in values]
            ms = (lambda xs, p: f"{pct(xs, p) * 1000:.0f}" if xs else "-")
            rows.append([name, len(values), failures[name], ms(firsts, 50), ms(firsts, 90), ms(totals, 50),
                         ms(totals, 90)])
        print(table(["case", "runs", "failed", "first reply p50 ms", "p90 ms", "total p50 ms", "p90 ms"], rows))
        weft_firsts = [f for f, _ in results["weft (h2 -> h1)"] if f is not None]
        bridge_firsts = [f for f, _ in results["bridge (h2 -> h2)"] if f is not None]
        print()
        for p in (50, 90):  # the target: Weft adds at most 100 ms to Docker's own start time
            added = 1000 * (pct(weft_firsts, p) - pct(bridge_firsts, p))
            print(f"p{p} first reply: Weft {1000 * pct(weft_firsts, p):.0f} ms, bridge "
                  f"{1000 * pct(bridge_firsts, p):.0f} ms: Weft adds {added:.0f} ms; target bridge + <= 100 ms: "
                  f"{'met' if added <= 100 else 'NOT met'}")
        print(f"Load average during the runs: {min(loads):.1f}-{max(loads):.1f}.\n")
        print("h2's plugin calls during the Weft runs (its own time per call, WEFT_DEBUG):\n")
        order = ["IpamDriver.RequestAddress", "NetworkDriver.CreateEndpoint", "NetworkDriver.Join",
                 "NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.EndpointOperInfo",
                 "NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.Leave",
                 "NetworkDriver.DeleteEndpoint", "IpamDriver.ReleaseAddress"]
        start = ("IpamDriver.RequestAddress", "NetworkDriver.CreateEndpoint", "NetworkDriver.Join")
        rows = [[c, len(calls[c]), f"{median(calls[c]):.1f}", f"{pct(calls[c], 90):.1f}"]
                for c in order + sorted(set(calls) - set(order)) if calls.get(c)]
        print(table(["call", "n", "p50 ms", "p90 ms"], rows))
        print(f"\nStart-up calls (RequestAddress + CreateEndpoint + Join), sum of medians: "
              f"{sum(median(calls[c]) for c in start if calls.get(c)):.0f} ms")
    finally:
        lab.down()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    _common.header("Docker: docker run to the first reply (bench/docker_run.py)", ["bench/docker_run.py"] +
                   ([f"--runs {args.runs}"] if args.runs != 20 else []))
    run(args.runs)


if __name__ == "__main__":
    main()
