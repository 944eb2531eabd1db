"""Which hosts are alive, from probes their switches answer (not from a socket being open).

The core sends each admitted switch an OpenFlow echo request about every second and tells this
table of every answer (and of an admission, which is one). A host whose switch has answered before
and has not answered for longer than the grace period is down, connected or not; its next answer
(on the same connection or a new one) makes it up again. A host this controller has not yet seen
answering is "connecting" from the moment it learns of the host (its start, a join) for the grace
period plus FIRST_ANSWER_MARGIN, the time a healthy switch may take to call a new controller back;
silent past that, it is down too, so nothing waits for a host that was already dead (frozen, cut
off) when this controller started.
Framework-free: times are passed in (time.monotonic()).
"""

PROBE_INTERVAL = 1.0  # seconds between echo requests to one switch
# vswitchd's OpenFlow reconnect back-off is up to 8 s, whatever the Controller row's max_backoff
# (1 s, ovsdb/vswitch.py): OVS 3.1 starts every target at 8 s (connmgr.c, ofservice_create) and
# applies max_backoff only to a connection that is up when its database next changes. A controller
# makes that change when it admits a switch (HostAgent.settle_controller_settings), but a vswitchd
# started while no controller was up (a host rebooted with it) has never been admitted: it calls
# back after up to 8 s (seen on the lab: 2, 4, then 8 s). One second more to connect and be admitted.
FIRST_ANSWER_MARGIN = 9.0


class Liveness:
    def __init__(self, grace, first_answer_margin=FIRST_ANSWER_MARGIN):
        self.grace = grace
        self.first_grace = grace + first_answer_margin  # for a host not seen answering yet
        self._last = {}      # host -> when its switch last answered
        self._expected = {}  # host never seen answering -> since when this controller waits for it
        self._down = set()

    def expect(self, host, now):
        """This controller knows of the host from `now` on (no-op if it already did)."""
        if host not in self._last:
            self._expected.setdefault(host, now)

    def answered(self, host, now):
        """A probe answered (or the switch was admitted); True if the host was down until now."""
        self._last[host] = now
        self._expected.pop(host, None)
        if host in self._down:
            self._down.discard(host)
            return True
        return False

    def expired(self, now):
        """The hosts that are down from now on: silent for longer than the grace period since their
        last answer, or, never seen answering, for longer than the first grace since expected."""
        gone = [host for host, last in list(self._last.items())
                if host not in self._down and now - last > self.grace]
        gone += [host for host, since in list(self._expected.items())
                 if host not in self._down and now - since > self.first_grace]
        self._down.update(gone)
        return gone

    def is_down(self, host):
        return host in self._down

    def state(self, host, connected):
        """"down"; "up" (its switch `connected` and answering); else "connecting" (not yet, or again
        within the grace period)."""
        if host in self._down:
            return "down"
        return "up" if connected and host in self._last else "connecting"

    def silent_for(self, host, now):
        """Seconds since the host's switch last answered, or None if it never did."""
        last = self._last.get(host)
        return None if last is None else now - last

    def forget(self, host):
        """The host left: nothing about it is kept."""
        self._last.pop(host, None)
        self._expected.pop(host, None)
        self._down.discard(host)
