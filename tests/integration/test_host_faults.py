"""Host faults on a 3-host lab, with a 100 pps echo counter between containers on different hosts
(issue 11, deliverable 4): a vswitchd restart, an ovsdb-server restart, an OVSDB-only loss, and a
host frozen (SIGSTOP) for longer than the grace period, then thawed.

One container per host: a on h1, b on h2 (the host that restarts and freezes), c on h3; d is attached
on h3 while h2 is frozen, e on h1 after a controller restart while h2's vswitchd hangs. The grace period is set short (host_down_after) for the module.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.liveness import FIRST_ANSWER_MARGIN, PROBE_INTERVAL
from weft import lab as weftlab
from weft.client import path as api_path

GRACE = 3  # host_down_after for these tests, seconds
NETWORK = "hf"
HOSTS = ("h1", "h2", "h3")


@pytest.fixture(scope="module")
def faults(make_lab):
    lab = make_lab(hosts=3, shared=False)
    lab.weft("network", "create", NETWORK, "--cidr", "10.31.0.0/24")
    with lab.controller_options(host_down_after=GRACE):
        lab.ports = {name: lab.attach(name, host, NETWORK) for name, host in (("a", "h1"), ("b", "h2"), ("c", "h3"))}
        yield lab
    lab.down()


def status(lab, host):
    return lab.api.get(api_path("hosts", host))["status"]


def wait_for(what, done, timeout):
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout} s")
        time.sleep(0.05)


def settled(lab):
    """Every host up, ready and in sync again (after a fault, before the next test)."""
    wait_for("every host up and in sync", lambda: all(
        s.get("state") == "up" and s.get("ready") and s.get("flows_in_sync")
        for s in (status(lab, h) for h in HOSTS)), 30)


def tunnel_flows_to(lab, host, vtep):
    """The flows on host's br-int, as ovs-ofctl shows them, that tunnel to the VTEP `vtep`."""
    dump = lab.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout
    return [line for line in dump.splitlines() if f"set_field:{vtep}->tun_dst" in line]


def resumed(report, until):
    """Whether every outage of the echo report ended before `until` - 0.5 s (echoes came back)."""
    return all(last < until - 0.5 for _, last, _ in report["outages"])


def test_a_vswitchd_restart_costs_no_more_than_its_own_restart_and_100_ms(faults):
    lab = faults
    settled(lab)
    with lab.echoes("a", lab.ports["b"]["ip"]) as report:
        timings = lab.restart("h2", "vswitchd")
        time.sleep(1.5)
        end = time.monotonic()
    own_ms = timings["own_restart_s"] * 1000
    assert resumed(report, end), (report, timings)
    # Today's resync (read the empty switch, send everything, barrier) fits: Weft's share was
    # 20-50 ms on this lab. The atomic bundle (issue 11, flowsync part) keeps it so.
    assert report["longest_gap_ms"] <= own_ms + 100, (report, timings)
    settled(lab)


def test_a_switch_calls_a_lost_controller_back_every_second_from_its_first_connection(make_lab):
    """OVS 3.1 gives a new controller connection an 8 s max back-off, whatever the Controller row
    says, until vswitchd reconfigures while it is connected; on a host where nothing else changes
    after its switch connected, the controller's own write at admission is that reconfiguration.
    So a controller that goes away for 6 s is called back about every second (vswitchd's log), not
    after 1, 2, then 4 s, and is in sync again soon after it is back."""
    lab = make_lab(hosts=1, shared=False)
    log = Path(lab.info["hosts"]["h1"]["ovs_rundir"]) / "ovs-vswitchd.log"
    wait_for("h1's controller settings applied", lambda: "weft-settled" in lab.exec(
        "h1", "ovs-vsctl", "get", "Controller", ".", "other_config").stdout, 10)
    mark = log.stat().st_size
    with lab.controller_stopped(signal.SIGKILL):
        time.sleep(6)
        text = log.read_text(errors="replace")[mark:]
    attempts = re.findall(r"br-int<->\S+: (?:connecting\.\.\.|connection (?:dropped|failed))", text)
    waits = re.findall(r"br-int<->\S+: waiting (\d+) seconds before reconnect", text)
    assert len(attempts) >= 3 and all(w == "1" for w in waits), (attempts, waits)
    lab.down()


def test_an_ovsdb_server_restart_loses_nothing_and_keeps_every_binding(faults):
    lab = faults
    settled(lab)
    mods = {h: status(lab, h)["flow_mods"] for h in HOSTS}
    ages = lab.flow_ages("h2")
    log = lab.dir / "controller.log"
    mark = log.stat().st_size
    with lab.echoes("a", lab.ports["b"]["ip"]) as report:
        started = time.monotonic()
        timings = lab.restart("h2", "ovsdb")
        wait_for("h2's OVSDB reconnected and checked", lambda: "host h2: OVSDB replica loaded again"
                 in log.read_text(errors="replace")[mark:], 15)
        time.sleep(0.5)
    # OVS 3.1's userspace datapath stops forwarding while vswitchd has no database lock (bridge_run
    # returns early), from the old server's exit until vswitchd has reconnected on its own back-off:
    # a packet or two, or a second when restarts come close together. Nothing is lost outside it.
    # Its "connected" log line comes before it has the new server's monitor reply and the lock back.
    outside = [o for o in report["outages"]
               if o[0] < timings["stopping"] or o[1] > timings["vswitchd_reconnected"] + 0.5]
    assert outside == [], (report, timings)
    s = status(lab, "h2")
    assert s["ovsdb_connected"] and s["ready"] and s["state"] == "up" and "error" not in s, s
    port = lab.api.get(api_path("ports", "b"))
    assert port["host"] == "h2" and port["up"], port
    # Nothing was unplugged or sent again: every host's flow-mods are what they were, and h2's
    # flows are the same entries, older than the restart.
    assert {h: status(lab, h)["flow_mods"] for h in HOSTS} == mods
    now = lab.flow_ages("h2")
    elapsed = time.monotonic() - started
    assert now.keys() == ages.keys()
    assert all(age >= elapsed - 0.5 for age in now.values())


def test_an_ovsdb_only_loss_is_reported_but_the_host_stays_up(faults):
    lab = faults
    settled(lab)
    (pid,) = [e["pid"] for e in lab.info["pids"] if e["what"] == "h2 ovsdb-server"]
    with lab.echoes("a", lab.ports["b"]["ip"]) as report:
        os.kill(pid, signal.SIGSTOP)
        try:
            # The inactivity probe (host_down_after) finds it: idle, probed, no answer, closed.
            wait_for("h2's OVSDB reported disconnected", lambda: not status(lab, "h2")["ovsdb_connected"],
                     4 * GRACE + 5)
            s = status(lab, "h2")
            assert s["state"] == "up" and s["openflow_connected"], s  # forwarding works: not down
            assert "OVSDB" in s.get("error", ""), s
            assert lab.api.get(api_path("ports", "b"))["up"]
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for("h2's OVSDB back", lambda: status(lab, "h2")["ovsdb_connected"], 15)
    assert report["lost"] == 0, report


def test_a_frozen_host_is_down_its_peers_drop_their_tunnels_and_attaches_elsewhere_go_on(faults):
    lab = faults
    settled(lab)
    h2_vtep = lab.info["hosts"]["h2"]["encap_ip"]
    assert tunnel_flows_to(lab, "h1", h2_vtep)
    h2_before = lab.flow_ages("h2")
    with lab.frozen("h2") as times:
        wait_for("h2 reported down", lambda: status(lab, "h2")["state"] == "down", GRACE + 10)
        # Down once its last answer (up to a probe interval before the freeze, a second more on a
        # loaded machine) is older than the grace.
        assert time.monotonic() - times["frozen"] > GRACE - 2 * PROBE_INTERVAL
        assert status(lab, "h2")["last_answer_s"] >= GRACE  # (rounded to 0.1 s)
        assert not lab.api.get(api_path("ports", "b"))["up"]
        [listed] = [line for line in lab.weft("host", "list").stdout.splitlines() if line.startswith("h2 ")]
        assert "down: its switch does not answer (for" in listed
        # The peers' tunnel flows toward h2 are gone, as ovs-ofctl shows them.
        wait_for("h1's and h3's tunnels to h2 removed",
                 lambda: not tunnel_flows_to(lab, "h1", h2_vtep) and not tunnel_flows_to(lab, "h3", h2_vtep), 5)
        assert status(lab, "h1")["flows_in_sync"] and status(lab, "h1")["state"] == "up"
        # An attach on a healthy host does not wait for the frozen one, and its port works.
        attached = time.monotonic()
        d = lab.attach("d", "h3", NETWORK)
        assert d["up"], d
        assert time.monotonic() - attached < 10
        assert lab.ping("a", d["ip"]) and lab.ping("c", d["ip"])
    # Back: up again, restored by difference.
    wait_for("h2 up again", lambda: status(lab, "h2")["state"] == "up", 15)
    settled(lab)
    assert tunnel_flows_to(lab, "h1", h2_vtep) and tunnel_flows_to(lab, "h3", h2_vtep)
    assert lab.api.get(api_path("ports", "b"))["up"]
    # h2's own flows were never taken away: each one it had is still there, older than the freeze.
    frozen_for = time.monotonic() - times["frozen"]
    h2_after = lab.flow_ages("h2")
    kept = [flow for flow in h2_before if flow in h2_after and h2_after[flow] >= frozen_for]
    assert kept == list(h2_before), set(h2_before) - set(kept)
    # d's flows reached h2 when it came back: b reaches d, and echoes to b resume with no loss.
    assert lab.ping("b", d["ip"])
    with lab.echoes("a", lab.ports["b"]["ip"]) as report:
        time.sleep(1)
    assert report["lost"] == 0, report
    assert re.search(r"host h2 is down", (lab.dir / "controller.log").read_text(errors="replace"))


def test_a_host_dead_when_the_controller_starts_is_down_after_its_first_grace_and_attaches_go_on(faults):
    """h2's vswitchd hangs (SIGSTOP) across a controller restart, its OVSDB answers: b is bound there,
    so h2 needs the flows of a port attached to the network on h1. Never seen answering by this
    controller, h2 is "connecting" for the grace plus the reconnect margin, then down, and the port
    comes up without it; thawed, h2 is up and in sync again and reaches the port."""
    lab = faults
    settled(lab)
    (pid,) = [e["pid"] for e in lab.info["pids"] if e["what"] == "h2 ovs-vswitchd"]
    log = lab.dir / "controller.log"
    os.kill(pid, signal.SIGSTOP)
    try:
        with lab.controller_stopped(hosts=("h1", "h3")):
            mark = log.stat().st_size
        assert status(lab, "h2")["state"] == "connecting"
        weftlab.container_add(lab.name, "e", "h1")
        e = weftlab.container_attach(lab.name, "e", NETWORK, timeout=GRACE + FIRST_ANSWER_MARGIN + 10)
        assert e["up"], e
        assert status(lab, "h2")["state"] == "down"
        assert "host h2 is down: its switch has not answered since this controller learned of it" in \
            log.read_text(errors="replace")[mark:]
        assert lab.api.get(api_path("ports", "b"))["host"] == "h2"  # still bound there, down with it
        assert lab.ping("a", e["ip"]) and lab.ping("c", e["ip"])
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for("h2 up again", lambda: status(lab, "h2")["state"] == "up", 15)
    settled(lab)
    assert lab.ping("b", e["ip"])
    assert lab.api.get(api_path("ports", "b"))["up"]


def test_the_lab_restarts_freezes_and_thaws_only_what_it_recorded_and_says_what_is_wrong(make_lab):
    lab = make_lab(hosts=2, controller=False, shared=False)
    pids = lambda: {e["what"]: e["pid"] for e in lab.info["pids"]}  # noqa: E731
    before = pids()
    timings = lab.restart("h1", "vswitchd")
    after = pids()
    assert after["h1 ovs-vswitchd"] == timings["pid"] != before["h1 ovs-vswitchd"]
    assert {k: v for k, v in after.items() if k != "h1 ovs-vswitchd"} == \
        {k: v for k, v in before.items() if k != "h1 ovs-vswitchd"}
    assert not weftlab._alive(before["h1 ovs-vswitchd"]) and weftlab._alive(timings["pid"])
    assert timings["stopping"] <= timings["stopped"] <= timings["started"]
    # The restarted vswitchd forwards on the underlay again, its tunnel ARP entries seeded anew.
    assert lab.ping("h1", lab.info["hosts"]["h2"]["encap_ip"])
    assert lab.info["hosts"]["h2"]["mac"] in lab.exec("h1", "ovs-appctl", "tnl/arp/show").stdout
    for call, message in ((lambda: lab.restart("h9", "ovsdb"), "no host 'h9'"),
                          (lambda: lab.restart("h1", "sshd"), "restarts vswitchd or ovsdb")):
        with pytest.raises(weftlab.LabError, match=message):
            call()
    weftlab.freeze(lab.name, "h2", progress=weftlab._quiet)
    assert {weftlab._proc_state(after[f"h2 {d}"]) for d in ("ovsdb-server", "ovs-vswitchd")} == {"T"}
    assert lab.info["hosts"]["h2"]["frozen"]
    with pytest.raises(weftlab.LabError, match="already frozen"):
        weftlab.freeze(lab.name, "h2", progress=weftlab._quiet)
    with pytest.raises(weftlab.LabError, match="frozen: thaw it first"):
        lab.restart("h2", "vswitchd")
    res = subprocess.run([sys.executable, "-m", "weft.cli", "lab", "thaw", "--name", lab.name, "h1"],
                         env={**os.environ, "PYTHONPATH": weftlab.source_pythonpath()}, capture_output=True, text=True)
    assert res.returncode == 1 and "host h1 is not frozen" in res.stderr and "Traceback" not in res.stderr
    lab.down()  # with h2 still frozen: thawed, then stopped
    assert not any(weftlab._alive(pid) for pid in after.values())
