"""diff_flows and the ovs-ofctl text helpers."""
import random
from collections import Counter

from flows.diff import FlowDiff, Owned, diff_flows
from flows.model import Bucket, Flow, Group
from flows.ofctl import parse_dump_cookies, to_ofctl
from flows.pipeline import OFPP_IN_PORT


def flow(table=0, priority=100, match=(("in_port", 1),), actions=(("goto", 10),), cookie=1):
    return Flow(table, priority, match, actions, cookie)


def test_no_op():
    flows = [flow(), flow(match=(("in_port", 2),))]
    assert diff_flows(flows, list(reversed(flows))) == FlowDiff([], [], [])
    assert not diff_flows(flows, flows)


def test_add_modify_delete():
    keep = flow(match=(("in_port", 1),))
    new_actions = flow(match=(("in_port", 2),), actions=())
    old_actions = flow(match=(("in_port", 2),))
    new_cookie = flow(match=(("in_port", 3),), cookie=2)
    old_cookie = flow(match=(("in_port", 3),), cookie=1)
    added = flow(table=10, match=(("in_port", 4),))
    gone = flow(table=20)
    result = diff_flows([keep, new_actions, new_cookie, added], [keep, old_actions, old_cookie,
                                                                  gone])
    assert result.add == [added]
    assert result.modify == [new_actions, new_cookie]  # the desired versions, sorted
    assert result.delete == [gone]
    assert len(result) == 4


def test_other_priority_is_another_flow():
    result = diff_flows([flow(priority=50)], [flow(priority=100)])
    assert (result.add, result.modify, result.delete) == ([flow(priority=50)], [],
                                                          [flow(priority=100)])


def test_match_order_does_not_matter():
    a = Flow(0, 1, (("in_port", 1), ("eth_type", 0x800)), (), 1)
    b = Flow(0, 1, {"eth_type": 0x800, "in_port": 1}, (), 1)
    assert a == b and a.key == b.key and not diff_flows([a], [b])


def test_order_is_deterministic():
    flows = [flow(table=t, priority=p, match=(("reg15", (m, 0xff)),)) for t in (20, 0)
             for p in (1, 100) for m in (3, 1)]
    assert diff_flows(flows, []).add == diff_flows(list(reversed(flows)), []).add
    assert [(f.table, f.priority) for f in diff_flows(flows, []).add][:2] == [(0, 100), (0, 100)]


def test_to_ofctl():
    f = Flow(20, 100, (("metadata", 100), ("eth_dst", "02:00:00:00:00:01"), ("reg10", (0, 1))),
             (("move", "eth_src", "eth_dst", 48), ("set_field", "tun_ipv4_dst", "192.168.0.2"),
              ("dec_ttl",), ("output", OFPP_IN_PORT)), 0x40000000001)
    assert to_ofctl(f) == (
        "table=20, priority=100, cookie=0x40000000001, "
        "dl_dst=02:00:00:00:00:01,metadata=0x64,reg10=0x0/0x1, "
        "actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:192.168.0.2->tun_dst,"
        "dec_ttl,output:IN_PORT")
    assert to_ofctl(Flow(0, 0, (), (), 0)) == "table=0, priority=0, cookie=0x0, actions=drop"


DUMP = """\
OFPST_FLOW reply (OF1.3) (xid=0x2):
 cookie=0x40000000001, duration=3.1s, table=0, n_packets=0, n_bytes=0, priority=100,in_port=1 actions=set_field:0x64->metadata,set_field:0x1->reg14,goto_table:10
 cookie=0x40000000001, duration=3.1s, table=90, n_packets=2, n_bytes=196, priority=100,metadata=0x64,dl_dst=02:00:00:00:00:01 actions=set_field:0x1->reg15,goto_table:110
 cookie=0x10000000000, duration=3.1s, table=20, n_packets=9, n_bytes=540, priority=0 actions=goto_table:90
 cookie=0x0, duration=9.0s, table=0, n_packets=0, n_bytes=0, priority=0 actions=drop
"""


def test_parse_dump_cookies():
    counts = parse_dump_cookies(DUMP)
    assert counts == {0x40000000001: 2, 0x10000000000: 1, 0: 1}
    assert parse_dump_cookies("NXST_FLOW reply (xid=0x4):\n") == {}


def test_owned_table_counts_follow_every_replace():
    """The per-table flow counts an audit compares with the switch's are kept as owners come and go
    (several owners may want one flow: it counts once, and goes with its last owner)."""
    rng = random.Random(7)
    owned = Owned()
    shared = [Flow(t, 100, (("in_port", n),), (), 1) for t in (0, 5) for n in range(4)]
    for _ in range(500):
        owner = rng.randrange(12)
        entries = set(rng.sample(shared, rng.randrange(3)))
        entries |= {Flow(rng.randrange(3), 50, (("reg1", rng.randrange(20)),), (), owner) for _ in range(rng.randrange(3))}
        if rng.random() < 0.2:
            entries.add(Group(owner, "select", (Bucket((("output", 1),)),)))
        owned.replace(owner, frozenset(entries))
        recount = Counter(key[0] for key in owned.entries() if isinstance(key[0], int))
        assert owned.table_counts() == recount
