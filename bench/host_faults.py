"""Host faults (issue 11, docs/benchmarks.md §12.1): a vswitchd restart with few and many ports, an
ovsdb-server restart, and a host lost (frozen with SIGSTOP) and back.

Lab: 2 hosts; network blue; a on h1, b on h2, plus EXTRA more ports on h2 for the "many ports" case.
A 100/s echo stream a -> b (weft/echo.py) runs through each fault.
  vswitchd restart (`weft lab restart h2 vswitchd`): echoes lost, the outage, vswitchd's own part
    (SIGTERM to its br-int accepting OpenFlow again, from its log) and what comes after it (the end
    of the outage - that moment: Weft's resync and the first packets through).
  ovsdb restart (`weft lab restart h2 ovsdb`): echoes lost, and vswitchd's own reconnection to its
    database (its log), repeated on one host: vswitchd's reconnect back-off doubles each time.
  host loss (`weft lab freeze h2`, thaw after GRACE + 2 s): seconds from the freeze until the API
    says down and until h1's tunnel flows to h2 are gone (ovs-ofctl), an attach on h1 meanwhile, and
    from the thaw until h2 is up again and echoes to b answer.

    .venv/bin/python bench/host_faults.py [--reps 3] [--extra 47] [--grace 3]
"""
import argparse
import sys
import time

import _common
from _common import median, table
from _labutil import new_lab

from weft import lab as weftlab
from weft.client import path as api_path


def status(lab, host):
    return lab.api.get(api_path("hosts", host))["status"]


def wait(done, timeout=60.0):
    """Seconds until done() holds (polled every 10 ms); None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if done():
            return time.monotonic() - start
        time.sleep(0.01)
    return None


def settled(lab):
    return all(h["status"].get("state") == "up" and h["status"].get("flows_in_sync")
               for h in lab.api.get("/v1/hosts"))


def vswitchd_restart(lab):
    wait(lambda: settled(lab))
    with lab.echoes("a", lab.ports["b"]["ip"]) as report:
        time.sleep(0.5)
        t = lab.restart("h2", "vswitchd")
        wait(lambda: settled(lab))
        time.sleep(1.0)
    ends = [last + 0.01 for first, last, _ in report["outages"] if last >= t["stopping"]]
    after = max(0.0, max(ends) - t["connected"]) if ends else 0.0
    return {"lost": report["lost"], "gap_ms": report["longest_gap_ms"], "own_ms": t["own_restart_s"] * 1000,
            "after_ms": after * 1000}


def ovsdb_restart(lab):
    wait(lambda: settled(lab))
    with lab.echoes("a", lab.ports["b"]["ip"]) as report:
        time.sleep(0.5)
        t = lab.restart("h2", "ovsdb")
        wait(lambda: status(lab, "h2")["ovsdb_connected"])
        time.sleep(1.0)
    return {"lost": report["lost"], "gap_ms": report["longest_gap_ms"], "own_ms": t["own_restart_s"] * 1000}


def tunnels_to(lab, host, vtep):
    dump = lab.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout
    return f"set_field:{vtep}->tun_dst" in dump


def host_loss(lab, grace, n):
    """Seconds from the freeze until h2 is down and until h1's tunnels to it are gone, the attach's own
    time, and from the thaw until h2 is up, echoes to b answer, and every host is in sync."""
    wait(lambda: settled(lab))
    vtep = lab.info["hosts"]["h2"]["encap_ip"]
    since = lambda t: time.monotonic() - t  # noqa: E731
    with lab.frozen("h2") as times:
        wait(lambda: status(lab, "h2")["state"] == "down")
        down = since(times["frozen"])
        wait(lambda: not tunnels_to(lab, "h1", vtep))
        gone = since(times["frozen"])
        started = time.monotonic()
        lab.attach(f"x{n}", "h1", "blue")
        attach = since(started)
        time.sleep(max(0.0, times["frozen"] + grace + 2 - time.monotonic()))
    wait(lambda: status(lab, "h2")["state"] == "up")
    up = since(times["thawed"])
    with lab.echoes("a", lab.ports["b"]["ip"], ready_timeout=30):  # ready: echoes to b answer again
        answered = since(times["thawed"])
    wait(lambda: settled(lab))
    return {"down_s": down, "tunnels_gone_s": gone, "attach_s": attach, "up_s": up, "echo_s": answered,
            "in_sync_s": since(times["thawed"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--extra", type=int, default=47, help="ports added on h2 for the many-ports case")
    parser.add_argument("--grace", type=int, default=3, help="the controller's host_down_after, seconds")
    args = parser.parse_args()
    _common.header("Host faults: vswitchd and ovsdb-server restarts, a host lost and back", sys.argv)
    lab = new_lab("hf", hosts=2)
    try:
        with lab.controller_options(host_down_after=args.grace):
            lab.weft("network", "create", "blue", "--cidr", "10.62.0.0/22")
            lab.ports = {"a": lab.attach("a", "h1", "blue"), "b": lab.attach("b", "h2", "blue")}
            rows = []
            for label in ("3 ports", f"{args.extra + 3} ports"):
                if label != "3 ports":
                    for i in range(args.extra):
                        lab.attach(f"e{i}", "h2", "blue")
                runs = [vswitchd_restart(lab) for _ in range(args.reps)]
                rows.append([f"vswitchd restart, {label}", median([r["lost"] for r in runs]),
                             f"{median([r['gap_ms'] for r in runs]):.0f}", f"{median([r['own_ms'] for r in runs]):.0f}",
                             f"{median([r['after_ms'] for r in runs]):.0f}",
                             " ".join(str(r["lost"]) for r in runs)])
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
            runs = [ovsdb_restart(lab) for _ in range(args.reps + 1)]
            for i, r in enumerate(runs, 1):
                rows.append([f"ovsdb-server restart #{i} on h2", r["lost"], f"{r['gap_ms']:.0f}", f"{r['own_ms']:.0f}",
                             "-", ""])
            print(table(["fault", "echoes lost (median)", "longest gap ms", "daemons' own ms (stop to OpenFlow / "
                         "vswitchd's DB reconnect)", "after that ms (Weft's resync, first packets)", "lost per run"],
                        rows))
            print()
            losses = [host_loss(lab, args.grace, n) for n in range(args.reps)]
            keys = ("down_s", "tunnels_gone_s", "attach_s", "up_s", "echo_s", "in_sync_s")
            print(f"Host loss with host_down_after = {args.grace} s (medians of {args.reps}; from the freeze, "
                  "or for the last three from the thaw):\n")
            print(table(["marked down s", "h1's tunnels to h2 gone s", "attach on h1 meanwhile s",
                         "up again after thaw s", "echoes to b answer after thaw s", "all in sync after thaw s"],
                        [[f"{median([loss[k] for loss in losses]):.2f}" for k in keys]]))
    finally:
        lab.down()


if __name__ == "__main__":
    main()
