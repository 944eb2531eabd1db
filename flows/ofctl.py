"""Flows, groups and meters as ovs-ofctl text (debugging, golden tests, `weft apply --plan`), and
cookies read back from real dumps. The text of each field and action comes from flows/vocab.py."""
from __future__ import annotations

import re
from collections import Counter

from flows.model import Entry, Flow, Group, Meter
from flows.vocab import actions_text, match_text


def to_ofctl(entry: Entry) -> str:
    """E.g. 'table=90, priority=100, cookie=0x40000000001, dl_dst=..,metadata=0x64,
    actions=set_field:0x1->reg15,goto_table:110'; groups and meters as ovs-ofctl -O OpenFlow13
    dump-groups / dump-meters print them."""
    if isinstance(entry, Group):
        buckets = ",".join(f"bucket=weight:{b.weight},actions={actions_text(b.actions)}"
                           for b in entry.buckets)
        return f"group_id={entry.group_id},type={entry.type}" + (f",{buckets}" if buckets else "")
    if isinstance(entry, Meter):
        return f"meter={entry.meter_id} pktps burst bands=type=drop rate={entry.rate} burst_size={entry.burst}"
    flow: Flow = entry
    parts = [f"table={flow.table}", f"priority={flow.priority}", f"cookie={flow.cookie:#x}"]
    if flow.match:
        parts.append(match_text(flow.match))
    parts.append(f"actions={actions_text(flow.actions)}")
    return ", ".join(parts)


_COOKIE = re.compile(r"\bcookie=(0x[0-9a-fA-F]+|\d+)")


def parse_dump_cookies(text: str) -> Counter[int]:
    """Count flows per cookie in `ovs-ofctl dump-flows` output (header lines are skipped)."""
    counts: Counter[int] = Counter()
    for line in text.splitlines():
        match = _COOKIE.search(line)
        if match and "actions=" in line:
            counts[int(match.group(1), 0)] += 1
    return counts
