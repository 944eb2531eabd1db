"""Flows replaced in place by hand on br-int, at the controller's defaults: every flow count stays the
same, so the per-table counts of the count audit (every second) cannot see it.

- `ovs-ofctl add-flow` over one of Weft's flows (same match and priority) leaves cookie 0, which Weft
  never sets: the count audit counts those too, and the flow is back within the issue's 5 s.
- `ovs-ofctl mod-flows` keeps the cookie too: the next full audit (flow_full_audit_interval, 30 s by
  default) finds it and puts it back; until then flows_in_sync is true only as of the full
  comparison flows_checked_s_ago names, which is older than the change.
"""
import re
import time

import pytest

from controller.config import Config
from weft.testing import api_path

SLACK = 5.0         # seconds beyond the full-audit interval: the audit's read and repair, a loaded machine
REPAIR_LIMIT = 5.0  # seconds (the limit for a flow added by hand)


@pytest.fixture(scope="module")
def inplace(make_lab):
    lab = make_lab(hosts=1, shared=False)
    lab.weft("network", "create", "inplace", "--cidr", "10.62.0.0/24")
    lab.ports = {"a": lab.attach("a", "h1", "inplace"), "b": lab.attach("b", "h1", "inplace")}
    yield lab
    lab.down()


def _dump(lab):
    return lab.exec("h1", "ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", "br-int").stdout


def _delivery(lab):
    """b's delivery flow in the L2 lookup stage (table 90), and its match as ovs-ofctl takes it."""
    mac = lab.ports["b"]["mac"]
    line = next(ln.strip() for ln in _dump(lab).splitlines() if "table=90" in ln and f"dl_dst={mac}" in ln)
    match = ",".join(f for f in line.split(" actions=")[0].replace(", ", ",").split(",") if not f.startswith("cookie="))
    return line, match


def _status(lab):
    return lab.api.get(api_path("hosts", "h1"))["status"]


def _replaced_and_put_back(lab, command, limit):
    """Replaces b's delivery flow by a drop with `command` (add-flow, mod-flows); once the flow is
    back within `limit` s and the host in sync again, returns the status read just after the change
    (None if the flow was already back by then) and how long the repair took."""
    lab.wait_flows_in_sync("h1")
    line, match = _delivery(lab)
    repairs = _status(lab)["flow_drift_repairs"]
    lab.exec("h1", "ovs-ofctl", "-O", "OpenFlow13", *(["--strict"] if command == "mod-flows" else []), command,
             "br-int", f"{match},actions=drop")
    changed = time.monotonic()
    said = _status(lab)
    said["read_s_after"] = time.monotonic() - changed  # at most: the answer was made before this
    replaced = line not in _dump(lab)
    while line not in _dump(lab):
        assert time.monotonic() - changed < limit, f"the flow replaced by {command} was not put back within {limit} s"
        time.sleep(0.05)
    took = time.monotonic() - changed
    deadline = time.monotonic() + 5
    while not (now := _status(lab))["flows_in_sync"]:
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    assert now["flow_drift_repairs"] == repairs + 1, now
    log = (lab.dir / "controller.log").read_text(errors="replace")
    assert re.search(rf"host h1: changed, wanted: table=90, .*dl_dst={lab.ports['b']['mac']}", log), log[-3000:]
    assert lab.ping("a", lab.ports["b"]["ip"])
    return said if replaced else None, took


def test_a_flow_added_by_hand_over_one_of_weft_s_is_put_back_within_5_s(inplace):
    _, took = _replaced_and_put_back(inplace, "add-flow", REPAIR_LIMIT)
    assert took <= REPAIR_LIMIT


def test_a_flow_changed_in_place_is_put_back_by_the_next_full_audit_at_the_defaults(inplace):
    # A quiet switch is audited by its counts alone: its last full comparison grows old.
    deadline = time.monotonic() + Config().flow_full_audit_interval + SLACK
    while _status(inplace)["flows_checked_s_ago"] < 3:
        assert time.monotonic() < deadline, _status(inplace)
        time.sleep(0.2)
    said, took = _replaced_and_put_back(inplace, "mod-flows", Config().flow_full_audit_interval + SLACK)
    print(f"mod-flows put back after {took:.2f} s")
    # Read while the drop was there: still in sync (the counts and the cookie agree), but only as of
    # a full comparison older than the change (flows_checked_s_ago is rounded to 0.1 s).
    if said is not None and said["flows_in_sync"]:
        assert said["flows_checked_s_ago"] >= said["read_s_after"] - 0.1 - 0.05, said
