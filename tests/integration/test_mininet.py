"""Mininet on Weft (weft/mininet.py): Mininet's own hosts and API, switches that are Weft hosts of a lab,
real Open vSwitch. The example is run the way a user runs it; WeftNet is also driven in-process on
a running lab, which it must leave as it found it."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weft import attach
from weft import lab as weftlab
from weft.client import path as api_path

try:
    from weft import mininet as weftmn
except ImportError as err:
    # Only Mininet itself missing is a skip (the test command installs Debian's mininet, which
    # weft.mininet loads from dist-packages); any other ImportError is a bug, and fails.
    if err.name != "mininet":
        raise
    pytest.skip(f"Mininet is not installed: {err}", allow_module_level=True)
from mininet.topo import Topo  # noqa: E402 - importable once weft.mininet has loaded Mininet

REPO = Path(__file__).resolve().parents[2]
# What Mininet's fixLimits() would raise; weft.mininet disables it.
SYSCTLS = ("fs/file-max", "net/core/wmem_max", "net/core/rmem_max", "net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem",
           "net/core/netdev_max_backlog", "net/ipv4/neigh/default/gc_thresh1",
           "net/ipv4/neigh/default/gc_thresh2", "net/ipv4/neigh/default/gc_thresh3",
           "net/ipv4/route/max_size", "kernel/pty/max")


def _root_network():
    """The root namespace's links, addresses and routes, and the settings Mininet would change."""
    ip = [subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout
          for args in (["-br", "link"], ["-br", "addr"], ["route"])]
    return ip, {s: Path("/proc/sys", s).read_text() for s in SYSCTLS}


def _processes_mentioning(text):
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_example_two_switches_ping_across_weft(make_lab):
    make_lab  # noqa: B018 - only for its skip (root, Open vSwitch)
    name = f"t{os.getpid()}mn"
    before = _root_network()
    proc = subprocess.Popen([sys.executable, str(REPO / "examples" / "mininet_two_switches.py"), "--lab", name],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # it leads its own group; what it started is the lab's, below
        out, _ = proc.communicate()
    finally:
        weftlab.down(name, progress=lambda line: None)  # a no-op unless the example died before its stop()
    assert proc.returncode == 0, out
    # Every pair of the four hosts, two on each switch: half the pairs cross from s1 to s2 (Geneve).
    assert "*** Results: 0% dropped (12/12 received)" in out, out
    assert re.search(r"h1 -> h2 h3 h4\s+h2 -> h1 h3 h4\s+h3 -> h1 h2 h4\s+h4 -> h1 h2 h3", out), out
    assert "TCP h1 -> h3: 1048576 of 1048576 bytes" in out, out  # tx off is set for the userspace datapath
    # It left nothing: no lab, no namespace, no process of the lab's; the root namespace and the
    # system's settings are as they were.
    assert not weftlab.lab_dir(name).exists()
    assert not [ns for ns in os.listdir("/run/netns") if ns.startswith(f"wl-{name}-")]
    deadline = time.monotonic() + 5  # detached daemons are reaped late (zombies still list their cmdline)
    while [p for p in _processes_mentioning(f"/labs/{name}/") if weftlab._alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in _processes_mentioning(f"/labs/{name}/") if weftlab._alive(p)]
    assert _root_network() == before


class SwitchPair(Topo):
    def build(self):
        s1, s2 = self.addSwitch("s1"), self.addSwitch("s2")
        self.addLink(s1, s2)
        self.addLink(self.addHost("a1"), s1)
        self.addLink(s2, self.addHost("a2", ip="10.77.0.20/24"), network="mn-red")


def test_weftnet_on_a_running_lab_leaves_it_as_it_was(lab):
    pids_before = lab.info["pids"]
    net = weftmn.WeftNet(SwitchPair(), networks={"mn-red": "10.77.0.0/24"}, lab=lab.name)
    try:
        net.start()
        a1, a2, s1, s2 = net.get("a1", "a2", "s1", "s2")
        # The switches are the lab's hosts, in order, and their nodes run there, on their own OVS.
        assert (s1.weft_host, s2.weft_host) == ("h1", "h2")
        assert s1.connected() and s2.connected()
        assert s1.cmd("ovs-vsctl get interface", attach.host_device("a1-eth0"), "external_ids:iface-id").strip() \
            .strip('"') == "a1-eth0"
        assert s1.dpid == lab.exec("h1", "ovs-vsctl", "get", "bridge", "br-int", "datapath_id").stdout.strip().strip('"')
        # Each host-switch link is a Weft port, marked as Mininet's, with the address asked for.
        port = lab.api.get(api_path("ports", "a2-eth0"))
        assert port["up"] and port["ip"] == "10.77.0.20" and port["network"] == "mn-red"
        assert port["external_ids"] == {"owner": "mininet", "mininet.host": "a2", "mininet.switch": "s2"}
        assert a2.IP() == "10.77.0.20" and a1.IP() == lab.api.get(api_path("ports", "a1-eth0"))["ip"]
        assert net.ping([a1, a2], timeout=2) == 0
        assert "1 received" in a1.cmd("ping -c1 -W2", a2.IP())
    finally:
        net.stop()
    assert not [p for p in lab.api.get("/v1/ports") if p["name"] in ("a1-eth0", "a2-eth0")]
    assert "mn-red" not in [n["name"] for n in lab.api.get("/v1/networks")]
    for host in ("h1", "h2"):
        assert "wf" not in lab.exec(host, "ovs-vsctl", "list-ports", "br-int").stdout
    assert weftlab._load(lab.name)["ready"] and lab.info["pids"] == pids_before  # still up, as it was


class HostToHost(Topo):
    def build(self):
        self.addSwitch("s1")
        self.addLink(self.addHost("b1"), self.addHost("b2"))


class NoSuchNetwork(Topo):
    def build(self):
        self.addLink(self.addHost("b1"), self.addSwitch("s1"), network="mn-nosuch")


class ShapedLink(Topo):
    def build(self):
        self.addLink(self.addHost("b1"), self.addSwitch("s1"), bw=10)


@pytest.mark.parametrize("topo, error", [
    (HostToHost, "link b1-b2: a host links to a switch (a Weft host), not to another host"),
    (NoSuchNetwork, "mn-nosuch"),
    (ShapedLink, "link b1-s1: a Weft port takes network=, ip=, mac= and intfName1=, not bw"),
])
def test_a_topology_weft_cannot_build_is_refused_in_one_line(lab, topo, error):
    pids_before = lab.info["pids"]
    with pytest.raises(weftmn.MininetError) as raised:
        weftmn.WeftNet(topo(), networks={}, lab=lab.name)
    assert error in str(raised.value) and "\n" not in str(raised.value)
    assert not [p for p in lab.api.get("/v1/ports") if p["name"].startswith("b")]
    assert lab.info["pids"] == pids_before  # the nodes it had started are stopped and forgotten
