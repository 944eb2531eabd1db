"""The reconnect's one atomic bundle and the periodic audit that puts back what was changed by hand,
against the fake switch that eats the real encoded messages (tests/unit/fakeswitch.py), and the
bundle's bytes as OVS's own decoder reads them."""
import re
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from controller.counters import Counters
from controller.flowsync import HostFlowSync
from flows.diff import FlowDiff
from flows.model import Bucket, Flow, Group, Meter
from ovsdb.idl import ThreadHub

from fakeswitch import FakeSwitch, Refused

GROUP = Group(9, "select", (Bucket((("output", 3),)),))
METER = Meter(1, 50, 10)
FLOWS = [Flow(0, 100, (("in_port", n),), (("goto", "L2_LOOKUP"),), 0x10000000000 + n) for n in range(1, 6)]
USES = [Flow(30, 100, (("in_port", 1),), (("group", 9),), 2), Flow(30, 90, (("in_port", 2),), (("meter", 1),), 3)]
DESIRED = {0x10000000000 + n: frozenset({f}) for n, f in enumerate(FLOWS, 1)}
DESIRED |= {2: frozenset({GROUP, USES[0]}), 3: frozenset({METER, USES[1]})}
ALL = {*FLOWS, *USES, GROUP, METER}
HAND_MADE = Flow(0, 200, (("in_port", 7),), (), 0)  # a drop flow added with ovs-ofctl add-flow


def _start(switch, desired=None, **options):
    counters, applied = Counters(), []
    options = {"audit_interval": 0.05, "full_audit_interval": 0.5, **options}
    sync = HostFlowSync(ThreadHub, "h1", switch, dict(DESIRED if desired is None else desired),
                        lambda host, cookies: applied.append(cookies), counters=counters, **options)
    _until(lambda: sync.in_sync, "the first sync")
    return sync, counters


def _until(done, what, timeout=10):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.005)


def _switch_holds(switch, entries):
    return set(switch.dump()) == set(entries)


def test_a_reconnect_sends_the_whole_difference_in_one_bundle_with_meters_outside():
    switch = FakeSwitch()
    sync, counters = _start(switch)
    try:
        assert _switch_holds(switch, ALL)
        [bundle] = switch.bundles
        assert set(bundle) == ALL - {METER}  # OVS takes flows and groups in a bundle, not meters
        assert counters.get("resyncs", host="h1") == counters.get("bundles", host="h1") == 1
        assert counters.get("flow_mods", host="h1") == sync.flow_mods == len(ALL)
        assert counters.get("flow_batches", host="h1") == sync.batches == 1
        assert sync.last_check is not None
    finally:
        sync.stop()


def test_a_refused_bundle_leaves_the_switch_as_it_was_and_is_retried_after_a_new_read():
    class Reads(FakeSwitch):
        def dump(self):
            self.reads.append(set(super().dump()))
            return list(self.reads[-1])
    switch = Reads()
    switch.reads = []
    switch.refuse = lambda entry: entry == USES[0] and len(switch.reads) == 1
    sync, counters = _start(switch)
    try:
        assert _switch_holds(switch, ALL)
        assert counters.get("errors", kind="flow_sync") == 1
        assert counters.get("resyncs", host="h1") == 2 and len(switch.bundles) == 1
        # Nothing of the refused bundle showed: the retry's read found the meter alone (sent before
        # the bundle), and the one bundle committed held everything else.
        assert switch.reads[1] == {METER}
        assert set(switch.bundles[0]) == ALL - {METER}
    finally:
        sync.stop()


def test_a_quiet_switch_is_audited_by_its_flow_counts_alone():
    switch = FakeSwitch()
    sync, counters = _start(switch, full_audit_interval=3600)
    try:
        dumps, full_check = switch.requests["dump"], sync.last_full_check
        _until(lambda: counters.get("audits", host="h1") >= 5, "five audits")
        assert switch.requests["dump"] == dumps and switch.requests["table_counts"] >= 5
        assert sync.in_sync and counters.get("drift_repairs", host="h1") == 0
        # In sync as of the connection's full read: the count audits do not make it any younger.
        assert sync.last_full_check == full_check and sync.last_check > full_check
    finally:
        sync.stop()


class SlowToRepair(FakeSwitch):
    """Holds a repair (a batch that is not the reconnect's bundle) until told to go on."""
    hold = False

    def apply(self, flow_diff, atomic=False):
        while self.hold and not atomic:
            time.sleep(0.005)
        super().apply(flow_diff, atomic)


def test_a_flow_deleted_by_hand_is_put_back_and_in_sync_is_false_until_then(caplog):
    switch = SlowToRepair()
    sync, counters = _start(switch, audit_interval=0.3)
    try:
        messages = switch.messages
        switch.hold = True
        del switch.flows[FLOWS[2].key]  # ovs-ofctl del-flows br-int in_port=3
        _until(lambda: not sync.in_sync, "the audit noticing")
        time.sleep(0.2)
        assert not sync.in_sync  # while the repair is on its way
        switch.hold = False
        _until(lambda: FLOWS[2].key in switch.flows, "the repair")
        _until(lambda: sync.in_sync, "a check after the repair")
        assert _switch_holds(switch, ALL)
        assert switch.messages == messages + 1  # only what differed went back
        assert counters.get("drift_repairs", host="h1") == 1
        assert "missing: table=0, priority=100, cookie=0x10000000003, in_port=3" in caplog.text
    finally:
        sync.stop()


def test_a_flow_added_by_hand_is_removed_and_nothing_else_is_touched(caplog):
    switch = FakeSwitch()
    sync, counters = _start(switch)
    try:
        messages = switch.messages
        switch.flows[HAND_MADE.key] = HAND_MADE
        _until(lambda: HAND_MADE.key not in switch.flows, "the removal")
        _until(lambda: sync.in_sync, "a check after the repair")
        assert _switch_holds(switch, ALL) and switch.messages == messages + 1
        assert counters.get("drift_repairs", host="h1") == 1
        assert "unexpected: table=0, priority=200, cookie=0x0, in_port=7, actions=drop" in caplog.text
    finally:
        sync.stop()


def test_a_flow_modified_in_place_is_found_by_the_full_audit():
    switch = FakeSwitch()
    sync, counters = _start(switch, full_audit_interval=0.3)
    try:
        changed = Flow(0, 100, (("in_port", 1),), (), FLOWS[0].cookie)  # same key, counts unchanged
        switch.flows[changed.key] = changed
        made = time.monotonic()
        _until(lambda: switch.flows[changed.key] == FLOWS[0], "the repair")
        assert counters.get("drift_repairs", host="h1") == 1
        assert sync.last_full_check >= made  # the full read that found it
    finally:
        sync.stop()


def test_a_flow_added_by_hand_over_one_of_weft_s_is_found_by_the_count_audit():
    """`ovs-ofctl add-flow` with the match and priority of one of Weft's flows replaces it (counts
    equal) with cookie 0, which Weft never sets: the next count audit reads everything."""
    switch = FakeSwitch()
    sync, counters = _start(switch, full_audit_interval=3600)
    try:
        dumps = switch.requests["dump"]
        over = Flow(0, 100, (("in_port", 1),), (), 0)  # FLOWS[0]'s key, a drop, no cookie
        switch.flows[over.key] = over
        _until(lambda: switch.flows[over.key] == FLOWS[0], "the repair", timeout=2)
        assert switch.requests["dump"] == dumps + 1 and counters.get("drift_repairs", host="h1") == 1
    finally:
        sync.stop()


def test_a_group_changed_by_hand_is_put_back():
    switch = FakeSwitch()
    sync, counters = _start(switch, full_audit_interval=0.3)
    try:
        switch.groups[9] = Group(9, "select", (Bucket((("output", 4),)),))
        _until(lambda: switch.groups[9] == GROUP, "the repair")
    finally:
        sync.stop()


def test_a_standby_reports_drift_but_does_not_repair_it():
    switch = FakeSwitch()
    active = [True]
    sync, counters = _start(switch, may_repair=lambda: active[0])
    try:
        active[0] = False
        del switch.flows[FLOWS[0].key]
        _until(lambda: not sync.in_sync, "the audit noticing")
        time.sleep(0.3)
        assert FLOWS[0].key not in switch.flows and counters.get("drift_repairs", host="h1") == 0
        active[0] = True  # became active: it repairs
        _until(lambda: sync.in_sync and FLOWS[0].key in switch.flows, "the repair")
    finally:
        sync.stop()


def test_in_sync_waits_for_the_check_after_a_batch():
    class SlowToCount(FakeSwitch):
        def table_counts(self):
            while self.hold and self.bundles:  # the count check after the bundle
                time.sleep(0.005)
            return super().table_counts()
    switch = SlowToCount()
    switch.hold = True
    sync = HostFlowSync(ThreadHub, "h1", switch, dict(DESIRED), lambda host, cookies: None,
                        audit_interval=0.05)
    try:
        _until(lambda: switch.bundles, "the bundle")
        time.sleep(0.1)
        assert sync.installed is not None and not sync.in_sync  # acknowledged, not yet checked
        switch.hold = False
        _until(lambda: sync.in_sync, "the check")
    finally:
        switch.hold = False
        sync.stop()


def test_a_switch_that_stops_answering_audits_is_soon_no_longer_in_sync():
    class Frozen(FakeSwitch):
        frozen = False

        def table_counts(self):
            while self.frozen:  # SIGSTOPped: the request waits for its timeout
                time.sleep(0.005)
            return super().table_counts()
    switch = Frozen()
    sync, counters = _start(switch, audit_interval=0.1)
    try:
        switch.frozen = True
        stale = 3 * 0.1 + 1
        time.sleep(stale - 0.5)
        assert sync.in_sync  # its last check is recent enough
        _until(lambda: not sync.in_sync, "the last check going stale", timeout=1)
        switch.frozen = False
        _until(lambda: sync.in_sync, "the next check")
    finally:
        switch.frozen = False
        sync.stop()


def test_the_audit_can_be_switched_off():
    switch = FakeSwitch()
    sync, counters = _start(switch, audit_interval=0)
    try:
        audits = counters.get("audits", host="h1")  # the check after the first batch
        switch.flows[HAND_MADE.key] = HAND_MADE
        time.sleep(0.3)
        assert counters.get("audits", host="h1") == audits and HAND_MADE.key in switch.flows
    finally:
        sync.stop()


# --- the bundle on the wire ----------------------------------------------------------------------

class _RecordingDatapath:
    """A datapath that keeps the bytes of what is sent and answers bundle controls and barriers."""
    ofproto, ofproto_parser, id = ofp, parser, 0xfeed

    def __init__(self):
        self.wire, self.switch, self._xid = b"", None, 0

    def set_xid(self, msg):
        self._xid += 1
        msg.set_xid(self._xid)

    def send_msg(self, msg):
        msg.serialize()
        self.wire += bytes(msg.buf)
        if isinstance(msg, (parser.ONFBundleCtrlMsg, parser.OFPBarrierRequest)):
            self.switch.reply(SimpleNamespace(xid=msg.xid), True)


@pytest.mark.skipif(not shutil.which("ovs-ofctl"), reason="ovs-ofctl is not installed (scripts/setup.sh installs it)")
def test_ovs_reads_the_bundle_as_one_atomic_ordered_bundle_of_groups_and_flows(tmp_path):
    from controller.app import OpenFlowSwitch
    datapath = _RecordingDatapath()
    datapath.switch = switch = OpenFlowSwitch(datapath)
    switch.apply(FlowDiff(add=sorted(ALL, key=lambda e: e.sort_key())), atomic=True)
    (tmp_path / "messages").write_bytes(datapath.wire)
    res = subprocess.run(["ovs-ofctl", "ofp-parse", str(tmp_path / "messages")], capture_output=True, text=True)
    assert "error" not in res.stdout + res.stderr, res.stdout[:3000] + res.stderr
    kinds = [line.split(" (OF1.3)")[0] for line in res.stdout.splitlines() if "(OF1.3)" in line]
    inside = ["ONFT_BUNDLE_ADD_MESSAGE", "OFPT_GROUP_MOD", *["ONFT_BUNDLE_ADD_MESSAGE", "OFPT_FLOW_MOD"] * len(
        [*FLOWS, *USES])]  # each add with the message it carries
    assert kinds == ["OFPT_METER_MOD", "ONFT_BUNDLE_CONTROL", *inside, "ONFT_BUNDLE_CONTROL",
                     "OFPT_BARRIER_REQUEST"], res.stdout
    assert res.stdout.count("bundle_id=0x1 ") == res.stdout.count("flags=atomic ordered") == len(ALL) + 1
    assert "type=OPEN_REQUEST" in res.stdout and "type=COMMIT_REQUEST" in res.stdout


def test_a_refused_bundle_names_the_entry_the_switch_refused():
    from controller.app import OpenFlowSwitch

    class Refusing(_RecordingDatapath):
        def send_msg(self, msg):
            if isinstance(msg, parser.ONFBundleAddMsg) and msg.message.table_id == 30:
                self.switch.refused(msg.xid, ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_GROUP)
            if isinstance(msg, parser.ONFBundleCtrlMsg) and msg.type == ofp.ONF_BCT_COMMIT_REQUEST:
                self.switch.refused(msg.xid, ofp.OFPET_EXPERIMENTER, 0)
                return
            super().send_msg(msg)
    datapath = Refusing()
    datapath.switch = switch = OpenFlowSwitch(datapath)
    with pytest.raises(RuntimeError, match=r"refused 2 message\(s\), first with error type 2 .*table=30"):
        switch.apply(FlowDiff(add=[USES[0]]), atomic=True)
    with pytest.raises(Refused):  # and the fake does what OVS does: nothing of a refused bundle shows
        fake = FakeSwitch()
        fake.apply(FlowDiff(add=[USES[0]]), atomic=True)
    assert not fake.flows


@pytest.mark.parametrize("options, problem", [
    ({"flow_audit_interval": -1}, "flow_audit_interval: -1 is out of range"),
    ({"flow_audit_interval": 5, "flow_full_audit_interval": 2}, "flow_full_audit_interval: 2 is out of range (5.."),
    ({"flow_full_audit_interval": 0}, "flow_full_audit_interval: 0 is out of range (1.."),
])
def test_audit_options_are_checked(options, problem):
    from controller.config import Config, check
    with pytest.raises(ValueError, match=re.escape(problem)):
        check(Config(**options))
    check(Config(flow_audit_interval=0))  # no audit at all is an operator's choice


def test_batches_in_a_row_wait_for_no_count_check_and_one_follows_the_last():
    """A count check costs two round trips to the switch: batches that come close together (an
    attach's two, a burst) are not each held up behind one; one check after the last puts in_sync
    back."""
    class Counting(FakeSwitch):
        checks = 0

        def table_counts(self):
            self.checks += 1
            return super().table_counts()
    switch = Counting()
    sync, _ = _start(switch, audit_interval=30)  # no periodic check in the way
    try:
        before = switch.checks
        for n in range(1, 6):  # five batches, one after the other as soon as each is acknowledged
            batches = sync.batches
            sync.changed({**sync.desired, 0x10000000000 + n: frozenset()}, {0x10000000000 + n})
            _until(lambda: sync.batches > batches, f"batch {n}")
        assert switch.checks == before and not sync.in_sync
        _until(lambda: sync.in_sync, "the count check after the last batch", timeout=2)
        assert switch.checks == before + 1
    finally:
        sync.stop()
