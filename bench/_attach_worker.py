"""Attach worker: runs weft.attach.attach() in-process, inside a host's network namespace.

Started as `ip netns exec <host netns> .venv/bin/python bench/_attach_worker.py --api unix:...`
with OVS_RUNDIR=<host dir> (so the attach uses that host's OVSDB). Each stdin line is a JSON request
{"id", "netns", "network", "name", "ip"}; each runs in its own thread (bursts run concurrently) and
answers one JSON line {"id", "t0", "t1", "port" | "error", "phases": [[label, t], ...], "acc": {}}:
t0/t1 are time.monotonic() at the start and return of attach(); phases are timestamps of the steps
inside it (API calls, netns sections, OVSDB plug), for the breakdown.
A line {"detach": [name, ...]} runs weft.attach.detach() of each, one after another, and answers
{"detached": n} or {"error"} once they are done (between measurements, not timed).
"""
import contextlib
import json
import os
import sys
import threading
import time
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _netns  # noqa: E402  (also puts the repo on sys.path)
from weft import attach as attach_mod  # noqa: E402
from weft import netns as weft_netns  # noqa: E402
from weft.client import ApiClient  # noqa: E402

_local = threading.local()
_out = threading.Lock()


def _mark(label):
    phases = getattr(_local, "phases", None)
    if phases is not None:
        phases.append((label, time.monotonic()))


def _acc(label, dt):
    acc = getattr(_local, "acc", None)
    if acc is not None:
        acc[label] = acc.get(label, 0.0) + dt


def _instrument():
    """Wrap the steps attach() calls, to timestamp them (a few µs each)."""
    orig_send = ApiClient.send

    def send(self, method, path, body=None):
        label = f"{method} {'/'.join(path.split('?')[0].split('/')[:3])}" + ("?wait_up" if "wait_up" in path else "")
        _mark(label + " start")
        answer = orig_send(self, method, path, body)

        def timed_answer():
            try:
                return answer()
            finally:
                _mark(label + " end")
        return timed_answer
    ApiClient.send = send

    vs = attach_mod.vswitch
    orig_plug = vs.plug_port

    def plug_port(*a, **kw):
        _mark("ovsdb plug start")
        try:
            return orig_plug(*a, **kw)
        finally:
            _mark("ovsdb plug end")
    vs.plug_port = plug_port

    # attach() enters the container once (eth0: MAC, MTU, addr, up, route, tx-checksum ioctl).
    # Sections are numbered per attach.
    orig_in_netns = weft_netns.in_netns

    @contextlib.contextmanager
    def in_netns(path):
        _local.netns_n = getattr(_local, "netns_n", 0) + 1
        n = _local.netns_n
        _mark(f"netns{n} start")
        try:
            with orig_in_netns(path):
                yield
        finally:
            _mark(f"netns{n} end")
    weft_netns.in_netns = in_netns

    import pyroute2

    class IPRoute(pyroute2.IPRoute):
        def __init__(self, *a, **kw):
            t = time.monotonic()
            super().__init__(*a, **kw)
            _acc("IPRoute open", time.monotonic() - t)
    pyroute2.IPRoute = IPRoute


def handle(req, api):
    _local.phases = []
    _local.acc = {}
    _local.netns_n = 0
    res = {"id": req["id"]}
    t0 = time.monotonic()
    try:
        port = attach_mod.attach(req["netns"], req["network"], ip=req.get("ip"), name=req.get("name"),
                                 api=api, timeout=req.get("timeout", 10.0))
        res["t1"] = time.monotonic()
        res["port"] = port
    except Exception as err:  # report, keep serving
        res["t1"] = time.monotonic()
        res["error"] = f"{type(err).__name__}: {err}"
    res["t0"] = t0
    res["phases"], res["acc"] = _local.phases, _local.acc
    _local.phases = _local.acc = None  # fast_arp is not part of the attach
    if "error" not in res:
        _netns.fast_arp(attach_mod.netns_path(req["netns"]))
    with _out:
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


def detach_all(names, api):
    res = {"detached": 0}
    try:
        for name in names:
            attach_mod.detach(name, api=api)
            res["detached"] += 1
    except Exception as err:
        res["error"] = f"{type(err).__name__}: {err}"
    with _out:
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--tag", help="ignored: a path under the lab dir, so `weft lab down` knows this process")
    a = ap.parse_args()
    _instrument()
    api = ApiClient(a.api)
    # Warm up the imports attach() does lazily (pyroute2), as a long-lived CNI daemon would have.
    import pyroute2  # noqa: F401
    import ovs.jsonrpc  # noqa: F401
    import ovs.stream  # noqa: F401
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        if req.get("quit"):
            break
        if "detach" in req:
            detach_all(req["detach"], api)
            continue
        threading.Thread(target=handle, args=(req, api), daemon=True).start()
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()


if __name__ == "__main__":
    main()
