"""The one definition per action and field (flows/vocab.py) through real OpenFlow bytes, and the
flow sync driving a fake switch that eats the real messages: no OVS needed."""
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest
from ryu.ofproto import nicira_ext  # noqa: F401 (registers the NXM fields)
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from controller.flowsync import HostFlowSync
from flows.compiler import compile_all
from flows.examples import routed_topology, scale_topology, small_topology
from flows.model import Bucket, Flow, Group, Meter
from flows.ofctl import to_ofctl
from flows.openflow import NX_EXPERIMENTER, NXT_CT_FLUSH, ct_flush_body, encode_entry
from flows.vocab import ACTIONS
from ovsdb.idl import ThreadHub

from fakeswitch import FakeDatapath, FakeSwitch, Refused, wire

EVERY_ACTION = (
    ("meter", 7),
    ("set_field", "reg13", 5), ("set_field", "eth_src", "02:00:00:00:00:01"),
    ("set_field", "ipv4_dst", "10.0.0.9"), ("move", "arp_sha", "arp_tha", 48),
    ("move", "ipv4_dst", "reg0", 32), ("push", "eth_dst"), ("pop", "eth_src"), ("dec_ttl",),
    ("ct_clear",), ("ct", False, 7, None, None), ("multipath", 77, 3, "reg2"), ("group", 3),
    ("output", 5), ("controller",),
    ("goto", "L3_GATE"),
)


def _all_entries(compiled):
    return {e for host in compiled.values() for entries in host.values() for e in entries}


def services_and_policies_topology():
    """The policy conformance topology (3 hosts, a router) with policies of both directions (pod,
    namespace and ipBlock peers, named ports, endPort ranges, TCP/UDP/SCTP) and services (a named
    targetPort, ClientIP affinity, UDP and SCTP): conjunctions, ct commits, select groups, multipath."""
    from flows.policy import IpBlock, Peer, PolicyPort, PolicyRule, Selector, ServicePort, ServiceState
    from test_policy_conformance import policy, sel, topology
    ingress = (PolicyRule(peers=(Peer(sel(app="client")), Peer(namespace_selector=sel(ns="dev"),
                                                              pod_selector=sel(app="client"))),
                          ports=(PolicyPort("TCP", "http"), PolicyPort("TCP", 8000, 8100),
                                 PolicyPort("UDP", 53), PolicyPort("SCTP", 9999))),
               PolicyRule(peers=(Peer(ip_block=IpBlock("10.2.0.0/16", ("10.2.0.3/32",))),)))
    egress = (PolicyRule(peers=(Peer(namespace_selector=Selector()),), ports=(PolicyPort("UDP"),)),
              PolicyRule(peers=(Peer(ip_block=IpBlock("0.0.0.0/0", ("10.5.0.0/24",))),)))
    topo = topology(policy("web-in", sel(app="web"), ingress=ingress),
                    policy("db-shut", sel(app="db"), ingress=(), egress=()),
                    policy("cli-out", sel(app="client"), egress=egress))
    return topo.replace(services=(
        ServiceState("web", "prod", 7, (("app", "web"),), (ServicePort("http", "TCP", 80, "http"),
                                                           ServicePort("dns", "UDP", 53, 5353)), "10.96.0.10"),
        ServiceState("sticky", "prod", 8, (("app", "web"),), (ServicePort("", "SCTP", 90, 9090),),
                     "10.96.0.11", session_affinity=True),
        ServiceState("none", "prod", 9, (("app", "nothing"),), (ServicePort("", "TCP", 80, 80),),
                     "10.96.0.12")))


@pytest.mark.parametrize("topology", [small_topology, routed_topology,
                                      lambda: scale_topology(3, 4, 2), services_and_policies_topology])
def test_every_compiled_flow_survives_the_wire(topology):
    flows = _all_entries(compile_all(topology()))
    assert flows
    for flow in flows:
        assert wire(flow, "add") == flow, to_ofctl(flow)


def test_the_services_and_policies_topology_compiles_to_what_it_claims():
    entries = _all_entries(compile_all(services_and_policies_topology()))
    actions = {a[0] for e in entries if isinstance(e, Flow) for a in e.actions}
    assert {"conjunction", "ct", "group", "multipath", "controller", "meter"} <= actions
    assert any(isinstance(e, Group) and e.buckets for e in entries)
    assert any(isinstance(e, Flow) and ("ip_proto", 132) in e.match for e in entries)  # SCTP


def test_every_action_kind_survives_the_wire_and_has_text():
    flows = [Flow(20, 100, (("in_port", 1),), EVERY_ACTION, 0x10000000000)]
    for commit, table, nat in ((True, "UPLINK_OUT", ("snat", "192.0.2.1")),
                               (True, "L3_GATE", ("dnat", "10.0.0.5", 8080)),
                               (False, "NAT", ("nat",)), (True, None, ("dnat", "10.0.0.6"))):
        flows.append(Flow(30, 100, (("eth_type", 0x0800), ("ipv4_dst", "10.96.0.1")),
                          (("ct", commit, 9, table, nat),), 1))
    flows.append(Flow(30, 90, (("eth_type", 0x0800), ("ipv4_src", ("10.0.0.0", "255.0.0.0"))),
                      (("conjunction", 17, 1, 2), ("conjunction", 18, 2, 3)), 1))
    flows.append(Flow(30, 90, (("conj_id", 17), ("ct_state", (0x21, 0x23)),
                               ("eth_type", 0x0800), ("ip_proto", 132), ("sctp_dst", 80)),
                      (("goto", "L2_LOOKUP"),), 1))
    used = {a[0] for f in flows for a in f.actions}
    assert used == set(ACTIONS), "a new action needs a case here"
    for flow in flows:
        assert wire(flow, "add") == flow
        assert "unknown" not in to_ofctl(flow)
    assert "conjunction(17,1/2),conjunction(18,2/3)" in to_ofctl(flows[-2])
    assert "ct(commit,zone=9,table=40,nat(dst=10.0.0.5:8080))" in to_ofctl(flows[2])
    assert to_ofctl(flows[0]).startswith("table=20, priority=100, cookie=0x10000000000, in_port=1, "
                                         "actions=meter:7,set_field:0x5->reg13,")


def test_groups_and_meters_survive_the_wire():
    select = Group(5, "select", (
        Bucket((("ct", True, 3, "L3_GATE", ("dnat", "10.0.0.5", 80)),)),
        Bucket((("ct", True, 3, "L3_GATE", ("dnat", "10.0.0.6", 80)),), weight=3)))
    for entry in (select, Group(6, "all", (Bucket((("output", 1),)), Bucket((("output", 2),)))),
                  Group(7, "indirect", (Bucket((("output", 1),)),)), Group(8, "select", ()),
                  Meter(1, 100, 20)):
        assert wire(entry, "add") == entry
    assert to_ofctl(select) == ("group_id=5,type=select,"
                                "bucket=weight:1,actions=ct(commit,zone=3,table=40,nat(dst=10.0.0.5:80)),"
                                "bucket=weight:3,actions=ct(commit,zone=3,table=40,nat(dst=10.0.0.6:80))")


@pytest.mark.skipif(not shutil.which("ovs-ofctl"), reason="ovs-ofctl is not installed (scripts/setup.sh installs it)")
def test_ovs_itself_decodes_every_message_we_encode(tmp_path):
    """OVS's own decoder (ovs-ofctl ofp-parse) on our bytes: it checks every length, which Ryu's
    parser does not (a group whose bucket ended with nat(dst=IP:PORT) was 4 bytes short, and every
    switch refused it with OFPBRC_BAD_LEN)."""
    entries = list(_all_entries(compile_all(routed_topology())) | _all_entries(compile_all(
        services_and_policies_topology())))
    for nat in (("snat", "192.0.2.1"), ("dnat", "10.0.0.5", 8080), ("nat",), ("dnat", "10.0.0.6")):
        entries.append(Group(len(entries), "select", (Bucket((("ct", True, 3, "L3_GATE", nat),)),)))
        entries.append(Flow(30, 100, (("eth_type", 0x0800), ("in_port", len(entries))),
                            (("ct", True, 9, "L3_GATE", nat),), 1))
    messages = b""
    for entry in entries:
        msg = encode_entry(parser, ofp, FakeDatapath(), entry, "add")
        msg.serialize()
        messages += bytes(msg.buf)
    (tmp_path / "messages").write_bytes(messages)
    res = subprocess.run(["ovs-ofctl", "ofp-parse", str(tmp_path / "messages")], capture_output=True, text=True)
    assert "error" not in res.stdout + res.stderr, res.stdout[:2000] + res.stderr
    assert res.stdout.count("(OF1.3)") == len(entries)


# --- HostFlowSync against the fake switch ----------------------------------------------------------

GROUP = Group(9, "select", (Bucket((("output", 3),)),))
USES_GROUP = Flow(30, 100, (("in_port", 1),), (("group", 9),), 2)


def _clause(conj_id, cookie=1):
    return Flow(30, 90, (("eth_type", 0x0800), ("ipv4_src", "10.0.0.7")),
                (("conjunction", conj_id, 1, 2),), cookie)


def _sync(desired, switch):
    applied = []
    sync = HostFlowSync(ThreadHub, "h1", switch, desired, lambda host, cookies: applied.append(cookies))
    _wait(sync)
    return sync


def _wait(sync):
    deadline = time.monotonic() + 10
    while not sync.in_sync:
        assert time.monotonic() < deadline, "flow sync did not settle"
        time.sleep(0.01)


def _change(sync, desired, **owners):
    desired.update({int(k[1:]): v for k, v in owners.items()})
    sync.changed(desired, {int(k[1:]) for k in owners})
    time.sleep(0.05)
    _wait(sync)


def test_a_shared_clause_stays_until_its_last_owner_goes():
    switch, desired = FakeSwitch(), {10: frozenset({_clause(1)}), 11: frozenset({_clause(2)})}
    sync = _sync(desired, switch)
    try:
        [flow] = switch.flows.values()  # one flow on the switch, both rules' conjunctions on it
        assert flow.actions == (("conjunction", 1, 1, 2), ("conjunction", 2, 1, 2))
        _change(sync, desired, o10=frozenset())
        [flow] = switch.flows.values()
        assert flow.actions == (("conjunction", 2, 1, 2),)
        _change(sync, desired, o11=frozenset())
        assert not switch.flows
    finally:
        sync.stop()


def test_groups_come_before_the_flows_that_use_them_and_go_after():
    switch, desired = FakeSwitch(), {2: frozenset({GROUP, USES_GROUP})}
    sync = _sync(desired, switch)  # the fake refuses a flow whose group does not exist yet
    try:
        assert set(switch.dump()) == {GROUP, USES_GROUP}
        changed_group = Group(9, "select", (Bucket((("output", 3),)), Bucket((("output", 4),))))
        _change(sync, desired, o2=frozenset({changed_group, USES_GROUP}))
        assert set(switch.dump()) == {changed_group, USES_GROUP}
        _change(sync, desired, o2=frozenset())
        assert switch.dump() == []
    finally:
        sync.stop()


def test_a_reconnect_reads_groups_and_meters_and_sends_nothing_when_equal():
    desired = {2: frozenset({GROUP, USES_GROUP}), 3: frozenset({Meter(1, 50, 10)})}
    switch = FakeSwitch()
    _sync(desired, switch).stop()
    sent = switch.messages
    again = _sync(desired, switch)
    again.stop()
    assert switch.messages == sent and again.flow_mods == 0


def test_the_fake_switch_refuses_what_ovs_refuses():
    switch = FakeSwitch()
    with pytest.raises(Refused):
        switch._one("add", USES_GROUP)
    switch._one("add", GROUP)
    with pytest.raises(Refused):
        switch._one("add", GROUP)
    switch._one("add", USES_GROUP)
    switch._one("delete", GROUP)
    assert not switch.flows  # deleting a group deletes its flows


@pytest.mark.skipif(not shutil.which("ovs-ofctl"), reason="ovs-ofctl is not installed (scripts/setup.sh installs it)")
def test_the_conntrack_flush_is_byte_for_byte_what_ovs_ofctl_sends():
    """ovs-ofctl ct-flush against a listener that records the message: ours must equal it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    seen = {}

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(5)
        conn.sendall(struct.pack("!BBHI", 4, 0, 8, 1))  # OpenFlow 1.3 hello
        buf = b""
        while "flush" not in seen:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
            while len(buf) >= 8 and len(buf) >= struct.unpack("!H", buf[2:4])[0]:
                length = struct.unpack("!H", buf[2:4])[0]
                msg, buf = buf[:length], buf[length:]
                if msg[1] == 4:  # OFPT_EXPERIMENTER
                    seen["flush"] = msg
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "ct-flush",
                    f"tcp:127.0.0.1:{listener.getsockname()[1]}", "zone=65534", "",
                    "ct_nw_src=10.1.0.2,ct_nw_proto=17,ct_tp_src=5353"],
                   capture_output=True, timeout=10)
    thread.join(10)
    listener.close()
    msg = seen["flush"]
    assert struct.unpack("!II", msg[8:16]) == (NX_EXPERIMENTER, NXT_CT_FLUSH)
    assert msg[16:] == ct_flush_body(65534, 17, "10.1.0.2", 5353)
