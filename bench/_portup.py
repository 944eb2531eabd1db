"""Port-up measurement shared by the lab benchmarks: attach start -> first ping reply from another host.

A probe container (attached first, with `weft attach`) runs bench/_probe.py, one process pinging every
pending target from a raw ICMP socket; containers are attached with fixed IPs so the probe pings them
from the start of their attach. The programmatic path is weft.attach.attach() in a long-lived worker
inside a host's namespace (bench/_attach_worker.py).
"""
import json
import threading
import time

from _labutil import BENCH, PY, LineProc, api_unix

from weft import lab as weftlab

WAIT = 15.0  # seconds to wait for a ping reply before calling a port failed


class Probe:
    def __init__(self, lab, container="probe"):
        self.lp = LineProc(lab, container, [PY, BENCH / "_probe.py", lab.dir / f"{container}.tag"],
                           "probe pinger")
        assert self.lp.get(10) == "READY"
        self.up = {}
        self.cv = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self):
        while True:
            try:
                line = self.lp.get(None)
            except RuntimeError:
                return
            _, ip, t = line.split()
            with self.cv:
                self.up[ip] = float(t)
                self.cv.notify_all()

    def add(self, ip):
        self.lp.send(f"ADD {ip}")

    def wait(self, ips, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cv:
            while not all(ip in self.up for ip in ips):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(left)
            return {ip: self.up.get(ip) for ip in ips}

    def close(self):
        self.lp.send("QUIT")
        self.lp.close()


def start_probe(lab, network, ip, host="h2", name="probe"):
    """A probe container on host, attached to network at ip with `weft attach`, with the ARP sysctls
    of pitfall 1, and its pinger running."""
    lab.container(name, host)
    weftlab.container_attach(lab.name, name, network, ip=ip)
    lab.exec(name, "sysctl", "-q", "-w", "net.ipv4.neigh.eth0.retrans_time_ms=10",
             "net.ipv4.neigh.eth0.mcast_solicit=1")
    return Probe(lab, name)


class Programmatic:
    """The attach worker in a host's namespace: attach requests in, one result line per request out."""

    def __init__(self, lab, host="h1"):
        self.lp = LineProc(lab, host, [PY, BENCH / "_attach_worker.py", "--api", api_unix(lab),
                                       "--tag", lab.dir / "worker.tag"], "attach worker")
        assert json.loads(self.lp.get(30)).get("ready")
        self.seq = 0

    def start(self, reqs):
        for r in reqs:
            self.seq += 1
            r["id"] = self.seq
        self.lp.send("\n".join(json.dumps(r) for r in reqs))

    def results(self, n):
        return [json.loads(self.lp.get(60)) for _ in range(n)]

    def attach_all(self, reqs):
        """Attach reqs at once (each in its own worker thread); [(req, result)] in the order of reqs."""
        self.start(reqs)
        res = {r["id"]: r for r in self.results(len(reqs))}
        return [(r, res[r["id"]]) for r in reqs]

    def detach(self, names):
        """weft.attach.detach() of each port, one after another: veth, OVS port, NB port."""
        self.lp.send(json.dumps({"detach": list(names)}))
        res = json.loads(self.lp.get(60))
        if res.get("error"):
            raise RuntimeError(f"detach failed: {res['error']}")

    def close(self):
        self.lp.send(json.dumps({"quit": True}))
        self.lp.close()


def timed_attaches(probe, reqs, attach_all, burst=False):
    """Runs attach_all(reqs) -> [(req, {"t0", "t1", "error"?, "phases"?, "acc"?})] with the probe
    pinging every req's ip from the start; one sample per req: "call" = t1 - start, "ping" = first
    echo reply - start (None: no reply within WAIT), start = the attach's own t0, or in a burst the
    start of the burst for all."""
    for r in reqs:
        probe.add(r["ip"])
    t_start = time.monotonic()
    done = attach_all(reqs)
    up = probe.wait([r["ip"] for r in reqs])
    samples = []
    for r, res in done:
        t0 = t_start if burst else res["t0"]
        samples.append({"name": r["name"], "call": res["t1"] - t0,
                        "ping": (up[r["ip"]] - t0) if up[r["ip"]] else None,
                        "phases": res.get("phases"), "acc": res.get("acc"), "t0": res["t0"],
                        "error": res.get("error")})
    return samples
