"""The cost of a Prometheus scrape (GET /metrics) on a real lab, as the number of ports grows.

2-host lab, one network; ports are created through the API and plugged on alternating hosts as OVS
internal ports with external_ids:iface-id (one ovs-vsctl call per host and step, as ovn-heater fakes
its ports): the controller binds them and programs their flows as for a container. At each
checkpoint, once every port is up, the API's unix socket is scraped --scrapes times over one kept
connection: wall time per scrape (request sent -> body read), its size, its series, and the
controller's CPU per scrape (utime+stime in /proc). GET /v1/status on the same connection is the
reference for an API call that also reads every port.

    .venv/bin/python bench/metrics_scrape.py [--quick] [--ports 100,300] [--scrapes 21]
"""
import argparse
import sys
import time

import _common
from _api import KeepAlive
from _common import median, table
from _labutil import api_unix, cpu_seconds, lab_pid, new_lab


def plug(lab, host, names):
    """OVS internal ports on host's br-int, each with the iface-id of its NB port."""
    argv = ["ovs-vsctl"]
    for name in names:
        argv += ["--", "add-port", "br-int", name, "--", "set", "Interface", name, "type=internal",
                 f"external_ids:iface-id={name}"]
    lab.exec(host, *argv, timeout=120)


def wait_up(lab, n, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        status = lab.api.get("/v1/status")
        if status["ports_up"] >= n and all(h.get("flows_in_sync") for h in status["hosts"].values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {status['ports_up']} of {n} ports up after {timeout} s")
        time.sleep(0.2)


def timed(conn, path, count, pid):
    """([seconds per request], body size of the last, controller CPU seconds per request)."""
    times = []
    cpu = cpu_seconds(pid)
    for _ in range(count):
        t0 = time.monotonic()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        times.append(time.monotonic() - t0)
        assert resp.status == 200, body[:200]
    return times, len(body), (cpu_seconds(pid) - cpu) / count, body


def run(checkpoints, scrapes):
    lab = new_lab("ms")
    rows = []
    try:
        lab.api.post("/v1/networks", {"name": "n1", "cidr": "10.1.0.0/16"})
        conn = KeepAlive(api_unix(lab))._connect()
        pid = lab_pid(lab, "controller")
        made = 0
        for n in [0, *checkpoints]:
            names = [f"p{i}" for i in range(made, n)]
            for name in names:
                lab.api.post("/v1/ports", {"name": name, "network": "n1"})
            for index, host in enumerate(("h1", "h2")):
                if names[index::2]:
                    plug(lab, host, names[index::2])
            made = n
            wait_up(lab, n)
            time.sleep(1)  # the last batches' follow-ups (status writes) done
            times, size, cpu, body = timed(conn, "/metrics", scrapes, pid)
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            status_times, status_size, status_cpu, _ = timed(conn, "/v1/status", scrapes, pid)
            flows = sum(float(line.rsplit(b" ", 1)[1]) for line in body.splitlines()
                        if line.startswith(b"weft_flows{"))
            rows.append([n, f"{flows:.0f}", f"{median(times) * 1000:.1f}", f"{min(times) * 1000:.1f}",
                         f"{max(times) * 1000:.1f}", f"{cpu * 1000:.1f}", f"{size / 1024:.1f}", series,
                         f"{median(status_times) * 1000:.1f}", f"{status_size / 1024:.1f}"])
        conn.close()
    finally:
        lab.down()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="up to 100 ports, 11 scrapes")
    ap.add_argument("--ports", default="100,300", help="comma-separated checkpoints (default 100,300)")
    ap.add_argument("--scrapes", type=int, default=21)
    a = ap.parse_args()
    checkpoints = [100] if a.quick else [int(x) for x in a.ports.split(",")]
    rows = run(checkpoints, 11 if a.quick else a.scrapes)
    _common.header("metrics_scrape: GET /metrics on the API's unix socket, 2 hosts, ports on alternating hosts",
                   sys.argv)
    print(table(["ports", "flows compiled (both hosts)", "scrape ms (median)", "min", "max",
                 "controller CPU ms per scrape", "KiB", "series", "GET /v1/status ms (median)", "status KiB"],
                rows))


if __name__ == "__main__":
    main()
