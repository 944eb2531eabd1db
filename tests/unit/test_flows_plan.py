"""flows.plan: the flow difference a change would make, per host and table, as a switch would see it."""
from flows.compiler import compile_all
from flows.diff import diff_keyed
from flows.examples import small_topology
from flows.model import Binding, Bucket, Flow, Group, PortState
from flows.ofctl import to_ofctl
from flows.pipeline import L2_LOOKUP, TABLE_BY_ID
from flows.plan import plan
from flows.policy import PolicyState, Selector


def flow(table=L2_LOOKUP.id, match=(("reg15", 1),), actions=(("goto", "OUTPUT"),), cookie=1):
    return Flow(table, 100, match, actions, cookie)


def test_nothing_changes_nothing_is_planned():
    compiled = compile_all(small_topology())
    assert plan(compiled, compile_all(small_topology())) == {"hosts": {}, "total": dict.fromkeys(
        ("added", "removed", "modified"), 0)}


def test_a_new_port_counted_per_host_and_table_as_a_switch_would_change():
    before_topo = small_topology()
    after_topo = before_topo.replace(ports=[PortState("d", 4, "blue", "02:00:00:00:00:04", "10.0.0.4")],
                                     bindings=[Binding("d", "h2", 7)])
    before, after = compile_all(before_topo), compile_all(after_topo)
    result = plan(before, after, lines=3)
    assert set(result["hosts"]) == {"h1", "h2"}
    for host, planned in result["hosts"].items():
        union = lambda flows: {e.key: e for entries in flows.get(host, {}).values() for e in entries}  # noqa: E731
        diff = diff_keyed(union(after), union(before))
        expected = {}
        for change, entries in (("added", diff.add), ("removed", diff.delete), ("modified", diff.modify)):
            for entry in entries:
                name = TABLE_BY_ID[entry.table].name
                expected.setdefault(name, dict.fromkeys(("added", "removed", "modified"), 0))[change] += 1
        assert planned["tables"] == expected
        assert planned["total"]["added"] == sum(c["added"] for c in expected.values()) == len(diff.add) > 0
        assert planned["added"] == [to_ofctl(e) for e in diff.add[:3]]  # the first lines, in table order
    assert result["total"]["added"] == sum(p["total"]["added"] for p in result["hosts"].values())
    assert result["hosts"]["h2"]["total"]["added"] > result["hosts"]["h1"]["total"]["added"]  # d is local on h2


def test_an_entry_shared_by_owners_is_counted_once_and_stays_while_one_wants_it():
    shared, own = flow(), flow(match=(("reg15", 2),), cookie=2)
    before = {"h1": {1: frozenset({shared})}}
    after = {"h1": {1: frozenset({shared}), 2: frozenset({flow(cookie=2), own})}}
    result = plan(before, after)
    assert result["hosts"]["h1"]["total"] == {"added": 1, "removed": 0, "modified": 0}
    gone = plan(after, {"h1": {1: frozenset({shared})}})
    assert gone["hosts"]["h1"]["total"] == {"added": 0, "removed": 1, "modified": 0}  # `shared` stays


def test_a_changed_action_is_a_modification_and_groups_count_apart():
    group = Group(1, "select", (Bucket((("output", 1),)),))
    before = {"h1": {1: frozenset({flow(), group})}}
    after = {"h1": {1: frozenset({flow(actions=()), Group(1, "select", (Bucket((("output", 2),)),))})}}
    planned = plan(before, after)["hosts"]["h1"]
    assert planned["tables"] == {"L2_LOOKUP": {"added": 0, "removed": 0, "modified": 1},
                                 "groups": {"added": 0, "removed": 0, "modified": 1}}
    assert planned["modified"][0].startswith("group_id=1,type=select")  # groups before flows


def test_a_policy_plans_acl_flows_where_its_ports_are_and_lines_are_bounded():
    topo = small_topology()
    deny = PolicyState("deny", "blue", Selector(), ingress=(), egress=None)
    result = plan(compile_all(topo), compile_all(topo.replace(policies=[deny])), lines=2)
    assert set(result["hosts"]) == {"h1", "h2"}  # a (blue) is on h1, b (blue) on h2
    for planned in result["hosts"].values():
        assert planned["total"]["added"] > 0 and len(planned["added"]) == 2
        assert any(name.startswith("ACL") for name in planned["tables"])
    assert plan(compile_all(topo), compile_all(topo.replace(policies=[deny])), lines=0)["hosts"]["h1"]["added"] == []

