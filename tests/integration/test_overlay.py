"""The proactive Geneve L2 overlay on a 3-host lab, checked with real packets and ovs-ofctl (issue 3).

Two networks share one CIDR (and so identical IPs); each has 2 containers on each host.
"""
import contextlib
import itertools
import re
import threading
import time

import pytest

from flows.compiler import port_cookie
from flows.model import PortState
from weft import lab as weftlab
from weft.attach import host_device
from weft.client import ApiError
from weft.testing import UNTAGGED_ECHO_ID, vlan_probe_frames

CIDR = "10.20.0.0/24"
HOSTS = ("h1", "h2", "h3")


@pytest.fixture(scope="module")
def overlay(make_lab):
    lab = make_lab(hosts=3, shared=False)
    lab.weft("network", "create", "blue", "--cidr", CIDR, "--vni", "5001")
    lab.weft("network", "create", "red", "--cidr", CIDR, "--vni", "5002")
    ports = {}
    for net, host, i in itertools.product(("blue", "red"), HOSTS, (1, 2)):
        name = f"{net[0]}{host[1]}{i}"  # b11 = blue, h1, first
        ports[name] = lab.attach(name, host, net)
    # One address only red has: a blue container must not reach it.
    ports["r-only"] = lab.attach("r-only", "h2", "red", ip="10.20.0.200")
    lab.ports = ports
    yield lab
    lab.down()


def members(lab, net):
    return [n for n, p in lab.ports.items() if p["network"] == net and n != "r-only"]


def test_identical_ips_in_both_networks(overlay):
    blue_ips = {overlay.ports[n]["ip"] for n in members(overlay, "blue")}
    red_ips = {overlay.ports[n]["ip"] for n in members(overlay, "red")}
    assert blue_ips == red_ips  # same CIDR, same allocation order: isolation must not rely on addresses


@pytest.mark.parametrize("net", ["blue", "red"])
def test_all_pairs_ping_within_a_network(overlay, net):
    failed = [(a, b) for a, b in itertools.permutations(members(overlay, net), 2)
              if not overlay.ping(a, overlay.ports[b]["ip"], timeout=1)]
    assert failed == []


def test_no_ping_across_networks(overlay):
    for src in members(overlay, "blue"):
        assert not overlay.ping(src, "10.20.0.200", timeout=1), f"{src} (blue) reached red's 10.20.0.200"


def test_identical_ip_resolves_to_the_own_networks_port(overlay):
    # b11 and r11 have the same IP; from b12 it must be b11's MAC that answers.
    target_ip = overlay.ports["b11"]["ip"]
    assert overlay.ping("b12", target_ip)
    neigh = overlay.exec("b12", "ip", "neigh", "show", target_ip).stdout
    assert overlay.ports["b11"]["mac"] in neigh and overlay.ports["r11"]["mac"] not in neigh


def test_underlay_carries_geneve_with_the_networks_vni(overlay):
    dst = overlay.ports["b21"]["ip"]
    with overlay.tcpdump("fabric", "br0", "udp port 6081", count=2, timeout=5) as capture:
        assert overlay.ping("b11", dst, count=2)
    assert "Geneve" in capture.text and "vni 0x1389" in capture.text, capture.text  # 5001


def test_arp_between_containers_resolves_without_packet_ins(overlay):
    before = overlay.api.get("/v1/status")["packet_ins"]
    for src, dst in (("r11", "r31"), ("r12", "r11")):
        overlay.exec(src, "ip", "neigh", "flush", "dev", "eth0")
        assert overlay.ping(src, overlay.ports[dst]["ip"])
        assert overlay.ports[dst]["mac"] in overlay.exec(src, "ip", "neigh", "show", "dev", "eth0").stdout
    assert overlay.api.get("/v1/status")["packet_ins"] == before == 0


def test_forged_source_ip_or_mac_reaches_nobody(overlay):
    spoofer, victim = "b12", overlay.ports["b22"]["ip"]
    assert overlay.ping(spoofer, victim)
    # Another IP of the same subnet as source: dropped by port security (its ARP too).
    overlay.exec(spoofer, "ip", "addr", "add", "10.20.0.123/24", "dev", "eth0")
    try:
        with overlay.tcpdump("b22", "eth0", "host 10.20.0.123", timeout=1) as capture:
            forged = overlay.exec(spoofer, "ping", "-c2", "-W1", "-I", "10.20.0.123", victim, check=False)
        assert forged.returncode != 0
        assert capture.lines == [], capture.text
    finally:
        overlay.exec(spoofer, "ip", "addr", "del", "10.20.0.123/24", "dev", "eth0")
    # A forged MAC: nothing it sends gets anywhere, ARP included.
    real_mac = overlay.ports[spoofer]["mac"]
    overlay.exec(spoofer, "ip", "link", "set", "eth0", "address", "02:66:66:66:66:66")
    try:
        overlay.exec(spoofer, "ip", "neigh", "flush", "dev", "eth0")
        assert not overlay.ping(spoofer, victim, timeout=1)
    finally:
        overlay.exec(spoofer, "ip", "link", "set", "eth0", "address", real_mac)
    assert overlay.ping(spoofer, victim)


@pytest.mark.parametrize("receiver", ["b12", "b21"])  # same host as b11, another host
def test_a_vlan_tagged_frame_from_a_container_reaches_no_one(overlay, receiver):
    """Only untagged frames enter from a container port: a tagged one (802.1Q, priority tag,
    802.1ad, QinQ) carrying the port's own MAC and IP is dropped; the same frame untagged gets
    through."""
    src, dst = overlay.ports["b11"], overlay.ports[receiver]
    before = overlay.api.get("/v1/status")["packet_ins"]
    frames = vlan_probe_frames(src["mac"], dst["mac"], src["ip"], dst["ip"])
    first, capture = overlay.first_echo_request("b11", receiver, frames)
    assert first == UNTAGGED_ECHO_ID, capture
    assert overlay.api.get("/v1/status")["packet_ins"] == before == 0


def test_tcp_same_host_and_cross_host(overlay):
    assert overlay.iperf("b11", "b12", seconds=3, dst_ip=overlay.ports["b12"]["ip"]) > 1e6
    assert overlay.iperf("b11", "b31", seconds=3, dst_ip=overlay.ports["b31"]["ip"]) > 1e6


def test_detach_removes_the_ports_flows_on_every_host(overlay):
    port = overlay.attach("tmp", "h1", "blue")
    cookie = port_cookie(PortState(port["name"], port["key"], "blue", port["mac"], port["ip"]))
    counts = {h: overlay.flow_cookies(h)[cookie] for h in HOSTS}
    assert counts["h1"] >= 4 and counts["h2"] >= 1 and counts["h3"] >= 1, counts  # own host and others
    from weft import lab as weftlab
    weftlab.container_del(overlay.name, "tmp")
    deadline = time.monotonic() + 5
    while any(overlay.flow_cookies(h)[cookie] for h in HOSTS) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {h: overlay.flow_cookies(h)[cookie] for h in HOSTS} == {h: 0 for h in HOSTS}
    assert host_device(port["name"]) not in overlay.exec("h1", "ip", "-br", "link").stdout
    assert "tmp" not in [p["name"] for p in overlay.api.get("/v1/ports")]


def test_attaching_an_existing_port_is_a_clear_error(overlay):
    from weft import lab as weftlab
    weftlab.container_add(overlay.name, "dup", "h1")
    try:
        result = overlay.weft("attach", f"wl-{overlay.name}-c-dup", "--network", "blue", "--name", "b11",
                              target="h1", check=False)
        assert result.returncode == 1
        assert "already exists" in result.stderr and "Traceback" not in result.stderr
        # Nothing was left behind in the container.
        assert "eth0" not in overlay.exec("dup", "ip", "-br", "link").stdout
    finally:
        weftlab.container_del(overlay.name, "dup")


@contextlib.contextmanager
def plugged_by_hand(lab, name, host, dev="mnl"):
    """An NB port `name` plugged into host's br-int the way another tool would: a veth made with ip,
    added with plain ovs-vsctl and the port's iface-id. Unplugged and removed afterwards."""
    port = lab.api.get(f"/v1/ports/{name}")
    ns = lab.container(name, host)["netns"]
    try:
        lab.exec(host, "ip", "link", "add", f"{dev}0", "type", "veth", "peer", "name", f"{dev}1")
        lab.exec(host, "ip", "link", "set", f"{dev}1", "netns", ns)
        lab.exec(name, "ip", "link", "set", f"{dev}1", "address", port["mac"], "mtu", "1550", "up")
        lab.exec(name, "ip", "addr", "add", port["ip"] + "/24", "dev", f"{dev}1")
        lab.exec(name, "ethtool", "-K", f"{dev}1", "tx", "off")
        lab.exec(host, "ip", "link", "set", f"{dev}0", "up")
        lab.exec(host, "ovs-vsctl", "add-port", "br-int", f"{dev}0", "--", "set", "Interface", f"{dev}0",
                 f"external_ids:iface-id={name}")
        yield port
    finally:
        lab.exec(host, "ovs-vsctl", "--if-exists", "del-port", "br-int", f"{dev}0", check=False)
        lab.exec(host, "ip", "link", "del", f"{dev}0", check=False)
        weftlab.container_del(lab.name, name)


def test_a_port_plugged_by_another_tool_with_the_iface_id_works(overlay):
    """Bindings come from OVS itself: plug a veth with plain ovs-vsctl and the right iface-id."""
    overlay.api.post("/v1/ports", {"name": "manual", "network": "red"})
    try:
        with plugged_by_hand(overlay, "manual", "h3"):
            assert overlay.api.get("/v1/ports/manual?wait_up=10")["up"]
            assert overlay.ping("manual", overlay.ports["r11"]["ip"])
            # Unplugged: the port goes down.
            overlay.exec("h3", "ovs-vsctl", "del-port", "br-int", "mnl0")
            deadline = time.monotonic() + 5
            while overlay.api.get("/v1/ports/manual")["up"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not overlay.api.get("/v1/ports/manual")["up"]
    finally:
        overlay.api.delete("/v1/ports/manual?force=true")


def neighbour(lab, container, ip):
    """(state, MAC) of ip in the container's ARP table, as `ip neigh` shows it."""
    fields = lab.exec(container, "ip", "neigh", "show", ip).stdout.split()
    mac = fields[fields.index("lladdr") + 1] if "lladdr" in fields else None
    return (fields[-1] if fields else None), mac


def test_an_unplugged_nb_port_answers_arp_from_the_other_host_and_its_flows_come_once_plugged(overlay):
    """OVN answers ARP for every port in its NB, bound or not, so a peer's first ARP for a port being
    plugged is never lost (with Linux's defaults its retry comes a second later). So does Weft."""
    port = overlay.api.post("/v1/ports", {"name": "early", "network": "blue"})
    try:
        overlay.wait_flows_in_sync("h2")
        assert not overlay.ping("b21", port["ip"], timeout=1)  # nowhere to deliver to yet...
        assert neighbour(overlay, "b21", port["ip"]) == ("REACHABLE", port["mac"])  # ...but ARP answered
        dump = overlay.exec("h2", "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout
        cookie = f"cookie={port_cookie(PortState('early', port['key'], 'blue', port['mac'], port['ip'])):#x}"
        mine = [line for line in dump.splitlines() if cookie in line]
        assert len(mine) == 1 and f"arp_tpa={port['ip']}" in mine[0]  # its ARP answer, and nothing more
        with plugged_by_hand(overlay, "early", "h3", dev="erl"):
            assert overlay.api.get("/v1/ports/early?wait_up=10")["up"]
            assert overlay.ping("b21", port["ip"])
            dump = overlay.exec("h2", "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout
            assert sum(cookie in line for line in dump.splitlines()) == 2  # + L2_LOOKUP to h3
    finally:
        overlay.api.delete("/v1/ports/early?force=true")


def test_attaches_keep_working_while_50_long_waits_are_pending(overlay):
    """Waiting requests hold no one up: 50 clients wait on a port that is not plugged while attaches
    (which wait for their own ports) go through; the 50 answer as soon as that port is plugged."""
    overlay.api.post("/v1/ports", {"name": "awaited", "network": "red"})
    answers = []
    waiters = [threading.Thread(target=lambda: answers.append(
        overlay.api.get("/v1/ports/awaited?wait_up=50")["up"])) for _ in range(50)]
    try:
        for waiter in waiters:
            waiter.start()
        time.sleep(0.5)
        for i, host in enumerate(("h1", "h2")):
            port = overlay.attach(f"while{i}", host, "blue")
            assert overlay.ping(f"while{i}", overlay.ports["b31"]["ip"]) and port["up"]
        assert answers == [] and all(w.is_alive() for w in waiters)
        started = time.monotonic()
        with plugged_by_hand(overlay, "awaited", "h3", dev="awt"):
            for waiter in waiters:
                waiter.join(timeout=20)
            assert answers == [True] * 50 and time.monotonic() - started < 15
    finally:
        for i in range(2):
            weftlab.container_del(overlay.name, f"while{i}")
        overlay.api.delete("/v1/ports/awaited?force=true")


def test_deleting_a_plugged_port_is_refused_unless_forced_and_force_unplugs_it(overlay):
    overlay.attach("plugged", "h2", "blue")
    device = host_device("plugged")
    try:
        with pytest.raises(ApiError) as refused:
            overlay.api.delete("/v1/ports/plugged")
        assert refused.value.status == 409 and "still plugged into br-int on h2" in refused.value.message
        assert overlay.api.get("/v1/ports/plugged")["up"]
        overlay.api.delete("/v1/ports/plugged?force=true")
        assert device not in overlay.exec("h2", "ovs-vsctl", "list-ports", "br-int").stdout.split()
        # A new port of the same name does not inherit the leftover interface.
        overlay.api.post("/v1/ports", {"name": "plugged", "network": "blue"})
        time.sleep(0.5)
        assert overlay.api.get("/v1/ports/plugged")["host"] is None
    finally:
        overlay.api.delete("/v1/ports/plugged?force=true")
        weftlab.container_del(overlay.name, "plugged")


def test_switch_reconnect_sends_only_the_difference(overlay):
    """A switch that reconnects is read, not wiped: it already has every flow, so nothing is sent."""
    overlay.wait_flows_in_sync("h2")  # an earlier test's removals may still be on their way
    before = overlay.flow_ages("h2")
    status = overlay.reconnect_switch("h2")
    assert status["flow_mods"] == 0
    after = overlay.flow_ages("h2")
    assert after.keys() == before.keys()
    assert all(after[flow] >= before[flow] for flow in before)  # not deleted and re-added
    assert overlay.ping("b21", overlay.ports["b11"]["ip"])


def test_a_failed_attach_rolls_back_everything_and_says_why(overlay):
    from weft import lab as weftlab
    netns = weftlab.container_add(overlay.name, "doomed", "h2")["netns"]
    try:
        before = overlay.exec("h2", "ip", "-br", "link").stdout
        result = overlay.weft("attach", netns, "--network", "red", "--name", "doomed",
                              "--ovsdb", "unix:/nonexistent/db.sock", target="h2", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "/nonexistent/db.sock" in result.stderr  # names what went wrong
        assert "doomed" not in [p["name"] for p in overlay.api.get("/v1/ports")]
        assert overlay.exec("h2", "ip", "-br", "link").stdout == before  # no veth left on the host
        assert "eth0" not in overlay.exec("doomed", "ip", "-br", "link").stdout
    finally:
        weftlab.container_del(overlay.name, "doomed")


def test_an_attach_whose_veth_fails_leaves_no_port_behind(overlay):
    """The veth is made while the controller creates the port: when the veth fails, the port the
    controller made for it must still be removed."""
    from weft import lab as weftlab
    weftlab.container_add(overlay.name, "clash", "h2")
    try:
        overlay.exec("clash", "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        before = overlay.exec("h2", "ip", "-br", "link").stdout
        result = overlay.weft("attach", f"wl-{overlay.name}-c-clash", "--network", "red", "--name", "clash",
                              target="h2", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "interface named eth0" in result.stderr, result.stderr
        assert "clash" not in [p["name"] for p in overlay.api.get("/v1/ports")]
        assert overlay.exec("h2", "ip", "-br", "link").stdout == before
    finally:
        weftlab.container_del(overlay.name, "clash")


def test_plugging_a_bound_port_again_elsewhere_does_not_take_it_away(overlay):
    """A running container keeps its port when the same iface-id shows up on another host (a mistaken
    attach, another tool): the binding stays where it is. b31 lives on h3; h1 sorts first."""
    ofport_h1 = None
    try:
        overlay.exec("h1", "ip", "link", "add", "dup0", "type", "veth", "peer", "name", "dup1")
        overlay.exec("h1", "ip", "link", "set", "dup0", "up")
        overlay.exec("h1", "ovs-vsctl", "add-port", "br-int", "dup0", "--", "set", "Interface", "dup0",
                     "external_ids:iface-id=b31")
        deadline = time.monotonic() + 5
        while ofport_h1 in (None, "[]", "-1") and time.monotonic() < deadline:
            ofport_h1 = overlay.exec("h1", "ovs-vsctl", "get", "Interface", "dup0", "ofport").stdout.strip()
        # Nothing to wait for when nothing changes: give the controller ample time to (not) react.
        time.sleep(1.0)
        assert overlay.api.get("/v1/ports/b31")["host"] == "h3"
        flows = overlay.exec("h1", "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout
        assert not re.search(rf"(output|in_port)[:=]{ofport_h1}\b", flows), flows
        assert overlay.ping("b11", overlay.ports["b31"]["ip"])
    finally:
        overlay.exec("h1", "ovs-vsctl", "--if-exists", "del-port", "br-int", "dup0", check=False)
        overlay.exec("h1", "ip", "link", "del", "dup0", check=False)
