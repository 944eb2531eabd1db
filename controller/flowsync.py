"""Keeps one switch's flows equal to what the compiler wants, by difference.

On (re)connect it reads the switch's flows and sends only what differs, never a delete-all; after
that it diffs only the objects (cookies) whose desired flows changed. Every batch ends with a
barrier, and only the barrier's reply makes the batch count as applied (that is what "port up" means).
"""
import logging

from flows.diff import diff_flows
from flows.ofctl import to_ofctl

LOG = logging.getLogger("weft.flowsync")
RETRY_DELAYS = (0.05, 0.2, 1.0, 2.0)


def _union(host_flows, cookies):
    return [flow for cookie in cookies for flow in host_flows.get(cookie, ())]


class HostFlowSync:
    def __init__(self, hub, host, switch, on_applied):
        self.hub = hub
        self.host = host
        self.switch = switch
        self.on_applied = on_applied      # called with (host, applied {cookie: flows}) after each barrier
        self.desired = {}
        self.installed = None             # None: unknown, read the switch first
        self.batches = 0
        self.flow_mods = 0
        self._kick = hub.Event()
        self._alive = True
        hub.spawn(self._loop)

    def set_desired(self, desired):
        self.desired = desired
        self._kick.set()

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
            desired = dict(self.desired)
            try:
                self._sync(desired)
                failures = 0
            except Exception as err:  # the switch refused, timed out or went away: read it again
                if not self._alive:
                    return
                LOG.warning("host %s: flow sync failed (%s); re-reading the switch", self.host, err)
                self.installed = None
                self.hub.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                failures += 1
                self._kick.set()

    def _sync(self, desired):
        if self.installed is None:
            flow_diff = diff_flows(_union(desired, desired), self.switch.dump_flows())
            LOG.info("host %s: switch read; %d to add, %d to modify, %d to delete", self.host,
                     len(flow_diff.add), len(flow_diff.modify), len(flow_diff.delete))
            for flow in [*flow_diff.modify, *flow_diff.delete][:5]:
                LOG.debug("host %s: differs: %s", self.host, to_ofctl(flow))
        else:
            changed = [c for c in desired.keys() | self.installed.keys()
                       if desired.get(c) != self.installed.get(c)]
            if not changed:
                return
            flow_diff = diff_flows(_union(desired, changed), _union(self.installed, changed))
        if flow_diff:
            self.switch.apply(flow_diff)
            self.flow_mods += len(flow_diff)
        self.batches += 1
        self.installed = desired
        self.on_applied(self.host, desired)
