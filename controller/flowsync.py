"""Keeps one switch's flows, groups and meters equal to what the compiler wants, by difference.

On (re)connect it reads the switch's flows, groups and meters and sends what differs, never a
delete-all, in one atomic bundle: a restarted vswitchd (its tables empty) gets the whole pipeline at
once, and no packet ever meets a part of it. After that it diffs only the objects (cookies) the
compiler reported changed, through `flows.diff.Owned`, so an entry several objects share stays until
the last of them lets it go. Every batch ends with a barrier, and only the barrier's reply makes the
batch count as installed (that is what "port up" means). What the switch acknowledged lives here, and
only here.

Between batches an audit checks that the switch still holds what it acknowledged: every
`audit_interval` seconds it asks for each table's flow count and for the number of flows with cookie
0 (which Weft never sets: `ovs-ofctl add-flow` without a cookie, even over one of Weft's flows), two
small requests, and it reads every flow, group and meter when a count differs or a cookie-0 flow is
there (also at the count check AFTER_BATCH_AUDIT after the last of batches in a row), or when
`full_audit_interval` has passed (a flow modified in place keeps the counts and its cookie). What
differs, say a flow deleted or added by hand with ovs-ofctl, is logged and put back by difference like any batch, by the
active controller only. `in_sync` means: everything on the switch was compared with what it should
hold at the last full read (`last_full_check`: at the connection, then every full audit; what
differed was put back), every batch since was acknowledged, and the per-table counts were found
unchanged (and no cookie-0 flow) at a recent audit. A change that keeps the counts and the cookie
(ovs-ofctl mod-flows) is only seen by the next full audit: until then in_sync stays true, and
`last_full_check` says how old the full comparison it rests on is.
"""
import logging
import time

from controller.counters import Counters
from flows.diff import Owned, diff_flows, diff_keyed
from flows.ofctl import to_ofctl

LOG = logging.getLogger("weft.flowsync")
RETRY_DELAYS = (0.05, 0.2, 1.0, 2.0)
NONE = frozenset()
IDLE_WAIT = 30       # seconds the loop sleeps when nothing is due
STALE_AUDITS = 3     # audit intervals (plus a second) after which the last check no longer vouches
# Seconds after a batch until its count check: batches that follow soon after (an attach's second,
# a burst's next) are not held up behind two round trips each, and the check comes after the last.
AFTER_BATCH_AUDIT = 0.05
DRIFT_LOG_LINES = 20  # entries logged one by one per difference found (the rest are counted)


class HostFlowSync:
    def __init__(self, hub, host, switch, desired, on_applied, counters=None, audit_interval=1.0,
                 full_audit_interval=30.0, may_repair=lambda: True):
        self.hub = hub
        self.host = host
        self.switch = switch
        self.desired = desired            # the compiler's {cookie: flows} for this host (live)
        # Called with (host, cookies) after each acknowledged batch, and with no cookies when a check
        # found the switch equal (in_sync may have become true).
        self.on_applied = on_applied
        self.counters = counters if counters is not None else Counters()
        self.audit_interval = audit_interval            # 0: no periodic audit
        self.full_audit_interval = full_audit_interval
        self.may_repair = may_repair      # false once the controller stepped down: an audit in flight touches nothing
        self.installed = None             # flows.diff.Owned the switch acknowledged; None: read it first
        self.batches = 0
        self.flow_mods = 0
        self.last_check = None            # time.monotonic() when a check (counts or full) last found it equal
        self.last_full_check = None       # time.monotonic() when everything on it was last read and compared
        self._verified = False            # the switch was found holding `installed` since it last changed
        self._next_audit = self._next_full = 0.0
        self._drift = None                # the difference last logged, not logged again until it changes
        self._dirty = set()               # cookies whose desired flows changed since the last batch
        self._counts_only = False         # the next audit checks counts only (one after a batch)
        self._busy = False
        self._kick = hub.Event()
        self._kick.set()                  # read the switch first
        self._alive = True
        hub.spawn(self._loop)

    def changed(self, desired, cookies):
        """The compiler changed these cookies' flows (`desired` is its current dict for the host, which
        a rebuild may have replaced: handed over on every pass)."""
        self.desired = desired
        if cookies:
            self._dirty.update(cookies)
            self._kick.set()

    def acked(self, cookie, flows):
        """Whether the switch has acknowledged exactly `flows` for this cookie."""
        return self.installed is not None and self.installed.owners.get(cookie, NONE) == flows

    @property
    def in_sync(self):
        """The switch was checked to hold what it acknowledged, recently (a frozen switch answers no
        audit: its last check soon stops counting), and nothing is pending."""
        if not (self.installed is not None and self._verified and not self._dirty and not self._busy):
            return False
        return not self.audit_interval or time.monotonic() - self.last_check <= STALE_AUDITS * self.audit_interval + 1

    def stop(self):
        self._alive = False
        self._kick.set()

    def _loop(self):
        failures = 0
        while self._alive:
            self._kick.wait(timeout=self._until_audit())
            self._kick.clear()
            if not self._alive:
                return
            try:
                if self.installed is None or self._dirty:
                    self._busy = True
                    try:
                        self._sync()
                    finally:
                        self._busy = False
                    # does the switch hold what it acknowledged? (once batches stop coming)
                    self._next_audit, self._counts_only = time.monotonic() + AFTER_BATCH_AUDIT, True
                elif time.monotonic() >= self._next_audit and (self.audit_interval or self._counts_only):
                    self._audit(counts_only=self._counts_only)
                failures = 0
            except Exception as err:  # the switch refused, timed out or went away: read it again
                if not self._alive:
                    return
                LOG.warning("host %s: flow sync failed (%s); re-reading the switch", self.host, err)
                self.installed, self._verified = None, False
                self.counters.inc("errors", kind="flow_sync")
                self.hub.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                failures += 1
                self._kick.set()

    def _until_audit(self):
        if not (self.audit_interval or self._counts_only):
            return IDLE_WAIT
        return min(IDLE_WAIT, max(0.0, self._next_audit - time.monotonic()))

    def _sync(self):
        first = self.installed is None
        if first:
            self._dirty.clear()
            want = {c: flows for c, flows in self.desired.items() if flows}
            installed = Owned()
            for cookie, entries in want.items():
                installed.replace(cookie, entries)
            have = self._read()
            flow_diff = diff_flows(installed.entries().values(), have)
            self.counters.inc("resyncs", host=self.host)
            LOG.info("host %s: switch read; %d to add, %d to modify, %d to delete%s", self.host,
                     len(flow_diff.add), len(flow_diff.modify), len(flow_diff.delete),
                     " (in one bundle)" if flow_diff else "")
            for entry in [*flow_diff.modify, *flow_diff.delete][:5]:
                LOG.debug("host %s: differs: %s", self.host, to_ofctl(entry))
            cookies = []
        else:
            if not self._dirty:
                return
            cookies, self._dirty = self._dirty, set()
            want = {c: self.desired.get(c, NONE) for c in cookies}
            installed = self.installed
            changed = {c: w for c, w in want.items() if w != installed.owners.get(c, NONE)}
            have, want_now = installed.preview(changed)
            flow_diff = diff_keyed(want_now, have)
        self._verified = False
        if flow_diff:
            # On (re)connect, all of it at once (meters, which OVS keeps out of bundles, just before).
            self.switch.apply(flow_diff, atomic=first)  # yields until the barrier answers
            if first:
                self.counters.inc("bundles", host=self.host)
        for cookie in cookies:
            installed.replace(cookie, want[cookie])
        self.installed = installed
        self._count_batch(len(flow_diff))
        self.on_applied(self.host, cookies or list(want))

    def _count_batch(self, flow_mods):
        self.flow_mods += flow_mods
        self.batches += 1
        self.counters.inc("flow_mods", flow_mods, host=self.host)
        self.counters.inc("flow_batches", host=self.host)

    def _read(self):
        """Everything on the switch (to be compared in full with what it should hold)."""
        self._next_full = time.monotonic() + self.full_audit_interval
        entries = self.switch.dump()
        self.last_full_check = time.monotonic()
        return entries

    def _audit(self, counts_only=False):
        """Checks that the switch holds what it acknowledged: its flow count per table first, then, if
        a count differs or a full audit is due (never right after a batch), everything; puts back
        what differs."""
        now = time.monotonic()
        self._next_audit, self._counts_only = now + (self.audit_interval or IDLE_WAIT), False
        self.counters.inc("audits", host=self.host)
        want = self.installed
        if counts_only or now < self._next_full:
            counts = self.switch.table_counts()
            expected = want.table_counts()
            # OVS's active_count is what a dump shows (its hidden in-band rules are in neither). A flow
            # with cookie 0 is never Weft's: an add-flow by hand, maybe over one of ours (counts equal).
            if all(counts.get(t, 0) == expected.get(t, 0) for t in counts.keys() | expected.keys()) \
                    and not self.switch.cookieless_flows():
                return self._found_equal(now)
            LOG.debug("host %s: flow counts differ from what it acknowledged (%s): reading everything", self.host,
                     ", ".join(f"table {t}: {counts.get(t, 0)}, not {expected.get(t, 0)}"
                               for t in sorted(counts.keys() | expected.keys())
                               if counts.get(t, 0) != expected.get(t, 0)))
        flow_diff = diff_flows(want.entries().values(), self._read())
        if not flow_diff:
            return self._found_equal(now)
        self._verified = False
        self._log_drift(flow_diff)
        if not self.may_repair():
            return
        self.switch.apply(flow_diff)
        self.counters.inc("drift_repairs", len(flow_diff), host=self.host)
        self._count_batch(len(flow_diff))
        LOG.warning("host %s: put back %d entries that differed from what it acknowledged", self.host,
                    len(flow_diff))
        self._next_audit = 0.0  # and check again right away

    def _found_equal(self, now):
        was = self.in_sync
        self._verified, self.last_check, self._drift = True, now, None
        if self.in_sync and not was:
            self.on_applied(self.host, ())

    def _log_drift(self, flow_diff):
        drift = [("missing", e) for e in flow_diff.add] + [("changed, wanted", e) for e in flow_diff.modify] + [
            ("unexpected", e) for e in flow_diff.delete]
        if drift == self._drift:
            return
        self._drift = drift
        LOG.warning("host %s: the switch differs from what it acknowledged in %d entries%s", self.host,
                    len(drift), "" if self.may_repair() else " (not repaired: this controller is not active)")
        for what, entry in drift[:DRIFT_LOG_LINES]:
            LOG.warning("host %s: %s: %s", self.host, what, to_ofctl(entry))
        if len(drift) > DRIFT_LOG_LINES:
            LOG.warning("host %s: ... and %d more", self.host, len(drift) - DRIFT_LOG_LINES)
