"""What a switch should hold vs what it holds -> the minimal change, never a wipe.

A switch holds flows, groups and meters ("entries"), each identified by its key as OpenFlow
identifies it: a flow by (table, priority, match), a group or a meter by its id. The desired state
of a host is what each owner (an NB object, named by its cookie) wants; `Owned` is their union,
in which one entry may be wanted by several owners and stays until the last of them lets it go.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flows.model import Entry, Flow, Group, Meter, sorted_flows


@dataclass(frozen=True)
class FlowDiff:
    """Entries to add, modify (the desired version) and delete (the actual one that goes)."""
    add: list[Entry] = field(default_factory=list)
    modify: list[Entry] = field(default_factory=list)
    delete: list[Entry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.add or self.modify or self.delete)

    def __len__(self) -> int:
        return len(self.add) + len(self.modify) + len(self.delete)

    def ordered(self) -> list[tuple[str, Entry]]:
        """(command, entry) in an order the switch accepts at every step: a meter or group exists
        before a flow uses it and goes only after the flows using it (deleting a group would take
        its flows with it), as Faucet orders its messages."""
        def of(entries: list[Entry], kind: type) -> list[Entry]:
            return [e for e in entries if isinstance(e, kind)]
        return [*(("add", e) for e in of(self.add, Meter)), *(("modify", e) for e in of(self.modify, Meter)),
                *(("add", e) for e in of(self.add, Group)), *(("modify", e) for e in of(self.modify, Group)),
                *(("delete", e) for e in of(self.delete, Flow)), *(("modify", e) for e in of(self.modify, Flow)),
                *(("add", e) for e in of(self.add, Flow)),
                *(("delete", e) for e in of(self.delete, Group)), *(("delete", e) for e in of(self.delete, Meter))]


def _by_key(entries: Iterable[Entry], what: str) -> dict:
    result: dict = {}
    for entry in entries:
        if entry.key in result and result[entry.key] != entry:
            raise ValueError(f"two {what} entries share the key {entry.key!r}")
        result[entry.key] = entry
    return result


def _differs(have: Entry, want: Entry) -> bool:
    if isinstance(want, Flow):
        return (have.actions, have.cookie) != (want.actions, want.cookie)
    return have != want


def diff_keyed(want: Mapping, have: Mapping) -> FlowDiff:
    """Both {key: entry}. Same key with other content (a flow's actions or cookie, a group's
    buckets) is a modify; apply with FlowDiff.ordered()."""
    return FlowDiff(
        add=sorted_flows(e for k, e in want.items() if k not in have),
        modify=sorted_flows(e for k, e in want.items() if k in have and _differs(have[k], e)),
        delete=sorted_flows(e for k, e in have.items() if k not in want))


def diff_flows(desired: Iterable[Entry], actual: Iterable[Entry]) -> FlowDiff:
    """diff_keyed of two lists of entries."""
    return diff_keyed(_by_key(desired, "desired"), _by_key(actual, "actual"))


def _is_clause(entry: Entry) -> bool:
    return isinstance(entry, Flow) and bool(entry.actions) and all(
        a[0] == "conjunction" for a in entry.actions)


def merge(wanted: Iterable[Entry]) -> Entry:
    """The one entry on the switch for what several owners want under one key: the same entry
    (owners that differ only in the cookie get the lowest), or, for a conjunctive clause that
    several rules use, one flow with all their conjunction actions (Antrea's
    conjMatchFlowContext). Anything else is a compiler bug."""
    distinct = set(wanted)
    if len(distinct) == 1:
        return next(iter(distinct))
    first = min(distinct, key=lambda e: getattr(e, "cookie", 0))
    if all(isinstance(e, Flow) for e in distinct):
        if len({e.actions for e in distinct}) == 1:
            return first
        if all(_is_clause(e) for e in distinct):
            actions = tuple(sorted({a for e in distinct for a in e.actions}))
            return Flow(first.table, first.priority, first.match, actions, first.cookie)
    raise ValueError(f"owners want different entries under one key: {sorted(map(repr, distinct))}")


class Owned:
    """The union of what each owner wants on one switch, kept by key so that a change of a few
    owners costs what they touch."""

    def __init__(self) -> None:
        self.owners: dict[int, frozenset[Entry]] = {}
        self._by_key: dict = {}  # key -> {owner: entry}
        self._tables: Counter = Counter()  # table -> flow keys in it, kept as keys come and go

    def entries(self) -> dict:
        """{key: entry} of everything."""
        return {k: merge(w.values()) for k, w in self._by_key.items()}

    def table_counts(self) -> Counter:
        """{table: flows in it}: what a switch holding all of it counts (groups and meters aside).
        Kept up to date by replace(): an audit asks for it every second and after batches, and a
        count over every key would cost O(flows) each time."""
        return +self._tables

    def preview(self, changes: Mapping[int, frozenset[Entry]]) -> tuple[dict, dict]:
        """({key: entry} now, {key: entry} once `changes` ({owner: its new entries}) are made),
        both over the keys the changes touch only."""
        new_by_key: dict = {}
        keys = set()
        for owner, entries in changes.items():
            keys.update(e.key for e in self.owners.get(owner, ()))
            for e in entries:
                keys.add(e.key)
                new_by_key.setdefault(e.key, {})[owner] = e
        before, after = {}, {}
        for key in keys:
            current = self._by_key.get(key, {})
            if current:
                before[key] = merge(current.values())
            kept = [e for o, e in current.items() if o not in changes]
            kept += new_by_key.get(key, {}).values()
            if kept:
                after[key] = merge(kept)
        return before, after

    def replace(self, owner: int, entries: frozenset[Entry]) -> None:
        for e in self.owners.pop(owner, ()):
            wanted = self._by_key[e.key]
            del wanted[owner]
            if not wanted:
                del self._by_key[e.key]
                if isinstance(e.key[0], int):
                    self._tables[e.key[0]] -= 1
        if entries:
            self.owners[owner] = entries
            for e in entries:
                wanted = self._by_key.setdefault(e.key, {})
                if not wanted and isinstance(e.key[0], int):
                    self._tables[e.key[0]] += 1
                wanted[owner] = e
