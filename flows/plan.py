"""What a change would do to the switches, before it is made (`weft apply --plan`): the difference
between two compiled desired states, per host and per table, with the first entries as ovs-ofctl
prints them. Pure: it compares what the compiler made; nothing is applied.
"""
from __future__ import annotations

from collections.abc import Mapping

from flows.diff import Owned, diff_keyed
from flows.model import Entry, Flow, Group
from flows.ofctl import to_ofctl
from flows.pipeline import TABLE_BY_ID, TABLES

_ORDER = {name: i for i, name in enumerate(["meters", "groups", *(t.name for t in TABLES)])}  # as a switch lists them
HostFlows = Mapping[int, frozenset[Entry]]  # cookie -> what that owner wants on one host
CHANGES = ("added", "removed", "modified")


def plan(before: Mapping[str, HostFlows], after: Mapping[str, HostFlows], lines: int = 20) -> dict:
    """{"hosts": {host: {"tables": {table: counts}, "total": counts, "added"/"removed"/"modified":
    the first `lines` entries of each as ovs-ofctl text}}, "total": counts}, counts being
    {"added": n, "removed": n, "modified": n}; only the hosts something changes on. Entries are
    compared as the switch holds them: one per key, however many owners want it (an entry shared
    by several is counted once); a modified entry keeps its key with other actions or buckets."""
    hosts, total = {}, dict.fromkeys(CHANGES, 0)
    for host in sorted(before.keys() | after.keys()):
        diff = diff_keyed(_on_switch(after.get(host, {})), _on_switch(before.get(host, {})))
        if not diff:
            continue
        tables: dict[str, dict[str, int]] = {}
        changes = dict(zip(CHANGES, (diff.add, diff.delete, diff.modify)))
        for change, entries in changes.items():
            for entry in entries:
                counts = tables.setdefault(table_name(entry), dict.fromkeys(CHANGES, 0))
                counts[change] += 1
        host_total = {change: len(entries) for change, entries in changes.items()}
        tables = dict(sorted(tables.items(), key=lambda item: _ORDER.get(item[0], len(_ORDER))))
        hosts[host] = {"tables": tables, "total": host_total,
                       **{change: [to_ofctl(e) for e in entries[:lines]] for change, entries in changes.items()}}
        for change in CHANGES:
            total[change] += host_total[change]
    return {"hosts": hosts, "total": total}


def table_name(entry: Entry) -> str:
    """The pipeline table a flow is in (by name), or "groups" / "meters"."""
    if isinstance(entry, Flow):
        table = TABLE_BY_ID.get(entry.table)
        return table.name if table else str(entry.table)
    return "groups" if isinstance(entry, Group) else "meters"


def _on_switch(host_flows: HostFlows) -> dict:
    """{key: entry} of what one switch would hold: every owner's entries, merged as flowsync does."""
    owned = Owned()
    for cookie, entries in host_flows.items():
        owned.replace(cookie, entries)
    return owned.entries()
