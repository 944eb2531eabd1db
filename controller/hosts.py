"""One host's OVSDB, as the controller keeps it: connected, br-int ready for Weft, and what is plugged.

A HostAgent makes the host ready whenever it is not (idempotently, through its Open_vSwitch
database), plugs the gateway uplink Weft wants there, and reports each change of what is plugged
(iface-id -> ofport) to the core as it sees it.
"""
import logging
import time

from flows.pipeline import UPLINK_OFPORT
from ovsdb import vswitch
from ovsdb.idl import OvsdbConnection, TransactionError, fetch_schema

LOG = logging.getLogger("weft.hosts")
RECONNECT_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)


class HostAgent:
    """Keeps one host's OVSDB connection and makes the host ready whenever it is not."""

    def __init__(self, core, host):
        self.core = core
        self.host = host
        self.conn = None
        self.error = None
        self.ready = False
        self.replica = vswitch.HostReplica()  # br-int's ports, from the host's own OVSDB
        self.uplink = None    # the gateway uplink interface Weft should plug here, if any
        self._loads_seen = 0  # how many times the replica had been loaded when _check last ran
        self._stopped = False
        self._kick = core.hub.Event()
        core.hub.spawn(self._run)

    def _connect(self):
        attempt = 0
        while not self._stopped:
            try:
                schema = fetch_schema(self.host.ovsdb_remote, vswitch.DATABASE, timeout=5)
                break
            except OSError as err:
                self.error = f"OVSDB: {err.strerror or err}"
                self.core.host_changed(self.host.name)
                self.core.hub.sleep(RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)])
                attempt += 1
        if not self._stopped:
            # The inactivity probe: a hung ovsdb-server (or host) shows as disconnected, not as fine.
            self.conn = OvsdbConnection(self.core.hub, self.host.ovsdb_remote, schema, vswitch.TABLES,
                                        listener=self.replica,
                                        on_change=lambda conn: self._kick.set(), name=self.host.name,
                                        probe_interval=self.core.config.host_down_after * 1000).start()

    def _run(self):
        self._connect()
        while not self._stopped:
            self._kick.wait(timeout=5)
            self._kick.clear()
            if not self._stopped:
                self._check(self.conn)

    def _check(self, conn):
        if conn.synced:
            if self.replica.loads > max(self._loads_seen, 1):  # loaded again: a reconnection
                LOG.info("host %s: OVSDB replica loaded again (reconnected); checking br-int, its tunnel "
                         "port and every binding again", self.host.name)
            self._loads_seen = self.replica.loads
            args = (self.host.datapath_id, self.host.datapath_type, self.host.of_target)
            ready = vswitch.is_ready(conn, self.replica, *args)
            if not ready and self.core.role == "active":  # a standby only looks
                try:
                    vswitch.ensure_host_ready(conn, *args)
                    self.error = None
                except (TransactionError, RuntimeError) as err:
                    self.error = f"cannot configure br-int: {err}"
                    LOG.error("host %s: %s", self.host.name, self.error)
                ready = vswitch.is_ready(conn, self.replica, *args)
            self.ready = ready
            if self.ready:
                self.error = None
                if self.core.role == "active":
                    self._check_uplink(conn)
            self._report_bindings()
        elif conn.idl.has_ever_connected():
            # What was reported stays as it was (no port is unplugged for it); the IDL reconnects and
            # reloads, and the next check reports what changed meanwhile.
            lost = f"OVSDB: the connection to {self.host.ovsdb_remote} is lost; reconnecting"
            if self.error != lost:
                LOG.warning("host %s: %s", self.host.name, lost)
                self.core.counters.inc("errors", kind="ovsdb_host")
            self.error = lost
        self.core.host_changed(self.host.name)

    def _report_bindings(self):
        """Tells the core what was plugged, moved or unplugged since the last look."""
        with self.conn.lock:
            changed = {iface_id: self.replica.bindings.get(iface_id) for iface_id in self.replica.take_changed()}
        for iface_id, binding in changed.items():
            ofport, confirmed = binding or (None, False)
            self.core.port_plugged(self.host.name, iface_id, ofport, confirmed)

    def _check_uplink(self, conn):
        plugged = self.replica.uplinks()
        if list(plugged) == ([self.uplink] if self.uplink else []):
            return
        try:
            vswitch.ensure_uplink(conn, self.uplink)
        except TransactionError as err:
            self.error = f"cannot plug uplink {self.uplink}: {err}"
            LOG.error("host %s: %s", self.host.name, self.error)

    def cannot_unplug(self):
        """Why an unplug would fail now, or None."""
        return None if self.ovsdb_connected else f"its OVSDB ({self.host.ovsdb_remote}) is not connected"

    def unplug(self, iface_id):
        problem = self.cannot_unplug()
        if problem:
            raise RuntimeError(f"cannot unplug {iface_id!r} on host {self.host.name!r}: {problem}")
        try:
            vswitch.unplug_iface_id(self.conn, iface_id)
        except TransactionError as err:
            raise RuntimeError(f"cannot unplug {iface_id!r} on host {self.host.name!r}: {err}") from None

    def settle_controller_settings(self):
        """Has vswitchd apply the Controller rows' settings (max_backoff) to the connection just
        admitted (see vswitch.settle_controller_settings); a host whose OVSDB is away is left as it is."""
        if not self.ovsdb_connected:
            return
        try:
            vswitch.settle_controller_settings(self.conn, f"{time.time():.3f}")
        except (TransactionError, RuntimeError) as err:
            LOG.warning("host %s: cannot have vswitchd apply its controller settings: %s", self.host.name, err)

    def check_now(self):
        self._kick.set()

    def set_uplink(self, iface):
        if iface != self.uplink:
            self.uplink = iface
            self._kick.set()

    @property
    def switch_datapath_id(self):
        """br-int's datapath id as the host's own OVSDB reports it, if it is the one Weft gave it."""
        if not (self.ovsdb_connected and self.ready):
            return None
        reported = vswitch.reported_datapath_id(self.conn)
        return reported if reported == int(self.host.datapath_id, 16) else None

    def switch_connected_since(self, reported_after):
        """Since when br-int's switch has been connected to its controllers (the oldest of its
        connections, None: none is), as vswitchd reported it in an update seen after
        `reported_after` (time.monotonic()); "unknown" until every controller row has had one."""
        if not self.ovsdb_connected:
            return "unknown"
        with self.conn.lock:
            reports = list(self.replica.connections.values())
        if not reports or any(seen <= reported_after for seen, _ in reports):
            return "unknown"
        return min((since for _, since in reports if since is not None), default=None)

    @property
    def uplink_plugged(self):
        return bool(self.uplink and self.ovsdb_connected
                    and self.replica.uplinks().get(self.uplink) == [UPLINK_OFPORT])

    @property
    def ovsdb_connected(self):
        return bool(self.conn and self.conn.synced)

    def leave(self, force=False):
        """Undoes what joining did on the host. Without force, refuses when the host is unreachable."""
        if not self.ovsdb_connected:
            if not force:
                raise RuntimeError(f"host {self.host.name!r}: its OVSDB ({self.host.ovsdb_remote}) is not "
                                   "connected, so Weft cannot undo its configuration there; retry when it "
                                   "is reachable, or leave with force to forget it anyway")
        else:
            self._stopped = True
            vswitch.remove_host_config(self.conn)
        self.stop()

    def stop(self):
        self._stopped = True
        self._kick.set()
        if self.conn:
            self.conn.stop()
