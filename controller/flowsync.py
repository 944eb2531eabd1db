"""Keeps one switch's flows, groups and meters equal to what the compiler wants, by difference.

On (re)connect it reads the switch's flows, groups and meters and sends only what differs, never a
delete-all; after that it diffs only the objects (cookies) the compiler reported changed, through
`flows.diff.Owned`, so an entry several objects share stays until the last of them lets it go. Every
batch ends with a barrier, and only the barrier's reply makes the batch count as installed (that is
what "port up" means). What the switch acknowledged lives here, and only here.
"""
import logging

from flows.diff import Owned, diff_flows, diff_keyed
from flows.ofctl import to_ofctl

LOG = logging.getLogger("weft.flowsync")
RETRY_DELAYS = (0.05, 0.2, 1.0, 2.0)
NONE = frozenset()


class HostFlowSync:
    def __init__(self, hub, host, switch, desired, on_applied):
        self.hub = hub
        self.host = host
        self.switch = switch
        self.desired = desired            # the compiler's {cookie: flows} for this host (live)
        self.on_applied = on_applied      # called with (host, cookies) after each acknowledged batch
        self.installed = None             # flows.diff.Owned the switch acknowledged; None: read it first
        self.batches = 0
        self.flow_mods = 0
        self._dirty = set()               # cookies whose desired flows changed since the last batch
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
        return self.installed is not None and not self._dirty and not self._busy

    def stop(self):
        self._alive = False
        self._kick.set()

    def _loop(self):
        failures = 0
        while self._alive:
            self._kick.wait(timeout=30)
            self._kick.clear()
            if not self._alive:
                return
            self._busy = True
            try:
                self._sync()
                failures = 0
            except Exception as err:  # the switch refused, timed out or went away: read it again
                if not self._alive:
                    return
                LOG.warning("host %s: flow sync failed (%s); re-reading the switch", self.host, err)
                self.installed = None
                self.hub.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                failures += 1
                self._kick.set()
            finally:
                self._busy = False

    def _sync(self):
        if self.installed is None:
            self._dirty.clear()
            want = {c: flows for c, flows in self.desired.items() if flows}
            installed = Owned()
            for cookie, entries in want.items():
                installed.replace(cookie, entries)
            flow_diff = diff_flows(installed.entries().values(), self.switch.dump())
            LOG.info("host %s: switch read; %d to add, %d to modify, %d to delete", self.host,
                     len(flow_diff.add), len(flow_diff.modify), len(flow_diff.delete))
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
        if flow_diff:
            self.switch.apply(flow_diff)  # yields until the barrier answers
            self.flow_mods += len(flow_diff)
        for cookie in cookies:
            installed.replace(cookie, want[cookie])
        self.installed = installed
        self.batches += 1
        self.on_applied(self.host, cookies or list(want))
