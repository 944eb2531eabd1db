"""Desired vs actual flows of one switch -> the minimal add/modify/delete, never a wipe."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from flows.model import Flow, sorted_flows


@dataclass(frozen=True)
class FlowDiff:
    add: list[Flow] = field(default_factory=list)
    modify: list[Flow] = field(default_factory=list)  # the desired version of the flow
    delete: list[Flow] = field(default_factory=list)  # the actual flow that goes away

    def __bool__(self) -> bool:
        return bool(self.add or self.modify or self.delete)

    def __len__(self) -> int:
        return len(self.add) + len(self.modify) + len(self.delete)


def _by_key(flows: Iterable[Flow], what: str) -> dict:
    result: dict = {}
    for flow in flows:
        if flow.key in result and result[flow.key] != flow:
            raise ValueError(f"two {what} flows share table/priority/match: {flow.key!r}")
        result[flow.key] = flow
    return result


def diff_flows(desired: Iterable[Flow], actual: Iterable[Flow]) -> FlowDiff:
    """Flows are identified by Flow.key (table, priority, match), as on the switch.

    Same key with other actions or another cookie is a modify (a flow-mod MODIFY_STRICT
    that also sets the cookie). Apply in the order delete, modify, add.
    """
    want = _by_key(desired, "desired")
    have = _by_key(actual, "actual")
    return FlowDiff(
        add=sorted_flows(f for k, f in want.items() if k not in have),
        modify=sorted_flows(f for k, f in want.items()
                            if k in have and (have[k].actions, have[k].cookie)
                            != (f.actions, f.cookie)),
        delete=sorted_flows(f for k, f in have.items() if k not in want),
    )
