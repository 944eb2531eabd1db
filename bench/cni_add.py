"""CNI plugin latency and CPU: plugin process start -> result, for ADD, CHECK, DEL (and VERSION).

A 2-host lab, one network; a peer container on h2 is added first (through the plugin too), so every
ADD waits for flows on both hosts. Then N cycles on h1, each with a new 64-character container id
in one container namespace: ADD, CHECK (with the ADD's result as prevResult), DEL. The plugin runs
as a runtime runs it: fork, setns into h1's network namespace (where a runtime on h1 runs), exec of
the plugin executable the lab installs (weft.cni.write_plugin: a script running this venv's Python
and this tree's weft), the configuration on stdin, the result read from stdout. Times are from just
before the fork to the reaping of the process; CPU is the child's own user+sys (wait4's rusage).
For the start-up share: `python -c pass`, VERSION (interpreter + weft.cni, no work), and "ADD's
imports": the plugin's imports for an ADD (weft.attach, IPRoute, the OVSDB client) and nothing else.

With --podman N (a lab with runtimes): N `podman run --rm IMAGE true` on h1 with `--network none`
and with the Weft network, alternating, as `weft lab podman` runs them: what the plugin costs a
podman user (podman runs VERSION, ADD, VERSION, DEL per container).

    .venv/bin/python bench/cni_add.py [--quick] [--cycles 50] [--podman 10]
"""
import argparse
import ctypes
import json
import os
import secrets
import sys
import time

import _common
from _common import pct, table
from _labutil import PY, new_lab, quiet

from weft import cni

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def spawn(argv, env, stdin, netns_fd):
    """Runs argv in the namespace netns_fd with stdin; (seconds, cpu seconds, exit status, stdout)."""
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe-ish steps, then exec
        try:
            if _libc.setns(netns_fd, CLONE_NEWNET) != 0:
                os._exit(126)
            os.dup2(r_in, 0)
            os.dup2(w_out, 1)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(r_in)
    os.close(w_out)
    os.write(w_in, stdin)
    os.close(w_in)
    chunks = []
    while chunk := os.read(r_out, 65536):
        chunks.append(chunk)
    os.close(r_out)
    _, status, usage = os.wait4(pid, 0)
    return (time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status),
            b"".join(chunks))


def run(cycles):
    lab = new_lab("cni")
    samples = {k: [] for k in ("python -c pass", "VERSION", "ADD's imports", "ADD", "CHECK", "DEL")}
    try:
        lab.api.post("/v1/networks", {"name": "n1", "cidr": "10.70.0.0/16"})
        plugin = str(lab.dir / "weft-cni-plugin" / "weft")
        os.makedirs(os.path.dirname(plugin), exist_ok=True)
        cni.write_plugin(plugin, _common.REPO)
        info = lab.info
        conf = {"cniVersion": "1.0.0", "name": "n1", "type": "weft", "api": info["api"]}
        fds = {h: os.open(f"/run/netns/{info['hosts'][h]['netns']}", os.O_RDONLY) for h in ("h1", "h2")}
        base_env = {"PATH": os.environ["PATH"], "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}

        def call(host, command, container, cid, config=conf):
            env = {**base_env, **lab.host_env(host), "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
                   "CNI_NETNS": f"/run/netns/{lab.info['containers'][container]['netns']}",
                   "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAME={container}"}
            seconds, cpu, status, out = spawn([plugin], env, json.dumps(config).encode(), fds[host])
            if status:
                raise RuntimeError(f"{command} on {host} failed ({status}): {out.decode(errors='replace')}")
            return seconds, cpu, json.loads(out) if out.strip() else None

        lab.container("peer", "h2")
        call("h2", "ADD", "peer", secrets.token_hex(32))
        lab.container("c1", "h1")
        imports = [PY, "-c", "import sys; sys.path.insert(0, sys.argv[1]); sys.modules['eventlet'] = None; "
                              "from weft import cni; cni._lean_pyroute2(); "
                              "import weft.attach, pyroute2.iproute, ovs.jsonrpc, ovs.stream", str(_common.REPO)]

        def starts():
            samples["VERSION"].append(call("h1", "VERSION", "c1", "x")[:2])
            samples["python -c pass"].append(spawn([PY, "-c", "pass"], dict(base_env), b"", fds["h1"])[:2])
            samples["ADD's imports"].append(spawn(imports, dict(base_env), b"", fds["h1"])[:2])
        for _ in range(5):  # the page cache, pyc files and the controller's first requests
            starts()
        for k in ("VERSION", "python -c pass", "ADD's imports"):
            samples[k].clear()
        for _ in range(cycles):
            cid = secrets.token_hex(32)
            seconds, cpu, result = call("h1", "ADD", "c1", cid)
            samples["ADD"].append((seconds, cpu))
            samples["CHECK"].append(call("h1", "CHECK", "c1", cid, {**conf, "prevResult": result})[:2])
            samples["DEL"].append(call("h1", "DEL", "c1", cid, {**conf, "prevResult": result})[:2])
            starts()
        for fd in fds.values():
            os.close(fd)
        return samples
    finally:
        lab.down()


def run_podman(n):
    """{"none": [seconds], "weft": [seconds]} of `podman run --rm` on h1, alternating."""
    import subprocess
    from weft import labruntimes
    from weft.testing import Lab
    lab = Lab(f"b{os.getpid() % 1000000}pod"[:12], 2, runtimes=True, progress=quiet)  # (as new_lab names)
    out = {"none": [], "weft": []}
    try:
        lab.api.post("/v1/networks", {"name": "n1", "cidr": "10.70.0.0/16"})
        for i in range(n + 1):
            for network in ("none", "n1"):
                argv, env = labruntimes.podman_cmd(lab.name, "h1", ["run", "--rm", "--network", network,
                                                                   "weft/busybox", "true"])
                t0 = time.perf_counter()
                subprocess.run(argv, env=env, check=True, capture_output=True)
                if i:  # the first of each warms podman's caches
                    out["none" if network == "none" else "weft"].append(time.perf_counter() - t0)
        return out
    finally:
        lab.down()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10 cycles")
    ap.add_argument("--cycles", type=int)
    ap.add_argument("--podman", type=int, default=0, help="also N podman runs, none vs the Weft network")
    a = ap.parse_args()
    cycles = a.cycles or (10 if a.quick else 50)
    samples = run(cycles)
    podman = run_podman(a.podman) if a.podman else None
    _common.header(f"cni_add: {cycles} ADD/CHECK/DEL cycles on h1 of a 2-host lab", sys.argv)
    rows = []
    for command, xs in samples.items():
        wall = [s for s, _ in xs]
        cpu = [c for _, c in xs]
        rows.append([command, f"{pct(wall, 50) * 1e3:.0f}", f"{pct(wall, 90) * 1e3:.0f}",
                     f"{pct(wall, 99) * 1e3:.0f}", f"{pct(cpu, 50) * 1e3:.0f}",
                     f"{sum(cpu) / len(cpu) * 1e3:.0f}", len(xs)])
    print(table(["call", "p50 ms", "p90 ms", "p99 ms", "CPU p50 ms", "CPU mean ms", "n"], rows))
    if podman:
        print(f"\n`podman run --rm weft/busybox true` on h1, {a.podman} of each, alternating:\n")
        print(table(["network", "p50 ms", "p90 ms", "n"],
                    [[k, f"{pct(v, 50) * 1e3:.0f}", f"{pct(v, 90) * 1e3:.0f}", len(v)] for k, v in podman.items()]))


if __name__ == "__main__":
    main()
