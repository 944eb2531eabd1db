"""Which hosts are alive, from probes their switches answer (not from a socket being open).

The core sends each admitted switch an OpenFlow echo request about every second and tells this
table of every answer (and of an admission, which is one). A host whose switch has answered before
and has not answered for longer than the grace period is down, connected or not; its next answer
(on the same connection or a new one) makes it up again. A host never seen answering since this
controller started is "connecting", not down: after a controller restart, switches come back at
their own pace (vswitchd's reconnect back-off is up to 8 s) and must not lose their tunnels meanwhile.
Framework-free: times are passed in (time.monotonic()).
"""

PROBE_INTERVAL = 1.0  # seconds between echo requests to one switch


class Liveness:
    def __init__(self, grace):
        self.grace = grace
        self._last = {}    # host -> when its switch last answered
        self._down = set()

    def answered(self, host, now):
        """A probe answered (or the switch was admitted); True if the host was down until now."""
        self._last[host] = now
        if host in self._down:
            self._down.discard(host)
            return True
        return False

    def expired(self, now):
        """The hosts that are down from now on: seen before, silent for longer than the grace period."""
        gone = [host for host, last in list(self._last.items())
                if host not in self._down and now - last > self.grace]
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
        self._down.discard(host)
