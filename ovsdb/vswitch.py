"""A host's own Open_vSwitch database: make it ready for Weft, undo that, and read port bindings.

Weft owns exactly what it marks with external_ids:weft-owner: br-int (when Weft created it), the one
flow-based Geneve port and br-int's controller record. Everything else on the host is left alone.
"""
import collections
import hashlib
import math
import secrets
import time

from flows.pipeline import DNS_BURST, DNS_RATE, REJECT_BURST, REJECT_RATE, TUNNEL_OFPORT, UPLINK_OFPORT

DATABASE = "Open_vSwitch"
TABLES = {
    "Open_vSwitch": ["bridges"],
    "Bridge": ["name", "ports", "datapath_type", "datapath_id", "fail_mode", "protocols", "controller",
               "other_config", "external_ids"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "options", "ofport", "ofport_request", "external_ids"],
    "Controller": ["target", "is_connected", "status", "external_ids", "other_config",  # SETTLED_KEY
                   "controller_rate_limit", "controller_burst_limit", "max_backoff"],  # CONTROLLER_SETTINGS
}
# Packet-ins per second (and burst) vswitchd may send Weft. Forwarding never needs one; they are a
# gateway next hop's ARP replies, and the DNS queries and service rejects each limited by a meter of
# its own. vswitchd's limit covers all of them at once (it queues, then drops, per in_port), so it is
# the meters' sum: the meters are what limits each kind, this caps the total, the uplink's included.
# And how soon vswitchd calls a controller back that went away: OVS doubles its wait from 1 s up to
# 8 s by default, so a controller restarted (or a standby promoted) after a few seconds would get its
# switches back only 4-8 s later; every second, as here, costs one connection attempt a second.
# OVS 3.1 gives a new controller target's connection 8 s, whatever the row says, and applies the row's
# max_backoff to a connection only when it reconfigures while that connection is up: see
# settle_controller_settings.
CONTROLLER_SETTINGS = {"controller_rate_limit": [DNS_RATE + REJECT_RATE],
                       "controller_burst_limit": [DNS_BURST + REJECT_BURST],
                       "max_backoff": [1000]}
INTEGRATION_BRIDGE = "br-int"
TUNNEL_PORT = "weft-geneve"
OWNER_KEY = "weft-owner"
PROTOCOLS = ["OpenFlow13", "OpenFlow14", "OpenFlow15"]


def new_datapath_id():
    """A random datapath id for a joining host's br-int (16 hex digits, as OVS takes it). An OpenFlow
    connection is only believed to be a host's switch if it names this id, which only the host's
    OVSDB and the NB hold: a host key (1, 2, 3...) would be a guess away."""
    return f"{max(1, secrets.randbits(64)):016x}"


def reported_datapath_id(conn):
    """br-int's datapath id as vswitchd reports it in the host's own OVSDB (an int), or None."""
    with conn.lock:
        bridge = _find(conn.idl.tables, "Bridge", INTEGRATION_BRIDGE)
        value = bridge.datapath_id if bridge is not None else None
    try:
        return int(value[0], 16) if value else None
    except ValueError:
        return None


def _find(tables, table, name):
    return next((r for r in tables[table].rows.values() if r.name == name), None)


def _ensure_attrs(row, **values):
    for column, value in values.items():
        if getattr(row, column) != value:
            setattr(row, column, value)


def of_targets(of_target):
    """A host's OpenFlow targets: its `of_target` lists one per controller, comma-separated."""
    return [t for t in (of_target or "").split(",") if t]


def ensure_host_ready(conn, dpid, datapath_type, of_target):
    """Makes br-int, its Geneve port and its controller target match what Weft wants. Idempotent: a
    second call on a ready host commits nothing."""
    def build(txn, tables):
        root = next(iter(tables["Open_vSwitch"].rows.values()), None)
        if root is None:
            raise RuntimeError("the host's Open_vSwitch table is empty (was `ovs-vsctl init` run?)")
        bridge = _find(tables, "Bridge", INTEGRATION_BRIDGE)
        if bridge is None:
            bridge = txn.insert(tables["Bridge"])
            bridge.name = INTEGRATION_BRIDGE
            bridge.external_ids = {OWNER_KEY: "weft", "weft-created": "true"}
            bridge.ports = [_new_port(txn, tables, INTEGRATION_BRIDGE, "internal", {})]
            # A new row reads back only what was written; give the columns read below a value.
            bridge.other_config, bridge.controller = {}, []
            bridge.datapath_type, bridge.fail_mode, bridge.protocols = "", [], []
            root.addvalue("bridges", bridge.uuid)
        other_config = dict(bridge.other_config)
        other_config.update({"datapath-id": dpid, "disable-in-band": "true"})
        _ensure_attrs(bridge, datapath_type=datapath_type, fail_mode=["secure"], protocols=PROTOCOLS,
                      other_config=other_config)
        if OWNER_KEY not in bridge.external_ids:
            bridge.setkey("external_ids", OWNER_KEY, "weft")

        port_names = {p.name for p in bridge.ports}
        if TUNNEL_PORT not in port_names:
            bridge.addvalue("ports", _new_port(txn, tables, TUNNEL_PORT, "geneve",
                                               {"remote_ip": "flow", "key": "flow"}, TUNNEL_OFPORT).uuid)
        else:
            iface = _find(tables, "Interface", TUNNEL_PORT)
            _ensure_attrs(iface, type="geneve", options={"remote_ip": "flow", "key": "flow"},
                          ofport_request=[TUNNEL_OFPORT])

        targets = [c.target for c in bridge.controller]
        if of_target and targets != of_targets(of_target):
            controllers = []
            for target in of_targets(of_target):  # one per controller of an active/standby pair
                controller = txn.insert(tables["Controller"])
                controller.target = target
                controller.external_ids = {OWNER_KEY: "weft"}
                for column, value in CONTROLLER_SETTINGS.items():  # a new row: nothing to read back yet
                    setattr(controller, column, value)
                controllers.append(controller)
            bridge.controller = controllers
        elif not of_target and bridge.controller:
            bridge.controller = []
        else:
            for controller in bridge.controller:
                _ensure_attrs(controller, **CONTROLLER_SETTINGS)
    conn.transact(build)


SETTLED_KEY = "weft-settled"  # Controller other_config: when vswitchd was last made to apply them


def settle_controller_settings(conn, stamp):
    """Makes vswitchd apply CONTROLLER_SETTINGS to the connections it has up now: any change to its
    database reconfigures them (a new target's starts with an 8 s max_backoff in OVS 3.1, not the
    row's), and this one, a key vswitchd does not read, changes nothing else. `stamp`: a value that
    differs from the last one written (an unchanged row reconfigures nothing)."""
    def build(txn, tables):
        bridge = _find(tables, "Bridge", INTEGRATION_BRIDGE)
        for controller in (bridge.controller if bridge is not None else []):
            controller.setkey("other_config", SETTLED_KEY, stamp)
    conn.transact(build)


def _new_port(txn, tables, name, iface_type, options, ofport_request=None):
    iface = txn.insert(tables["Interface"])
    iface.name = name
    iface.type = iface_type
    iface.options = options
    if ofport_request:
        iface.ofport_request = [ofport_request]
    port = txn.insert(tables["Port"])
    port.name = name
    port.interfaces = [iface]
    port.external_ids = {OWNER_KEY: "weft"}
    return port


def ensure_uplink(conn, iface):
    """Plugs the gateway's uplink interface into br-int at the pipeline's fixed UPLINK_OFPORT, or (iface
    None) unplugs whatever uplink Weft plugged. Weft's uplink ports carry external_ids:weft-role=uplink."""
    def build(txn, tables):
        bridge = _find(tables, "Bridge", INTEGRATION_BRIDGE)
        if bridge is None:
            return
        ours = [p for p in bridge.ports if p.external_ids.get("weft-role") == "uplink"]
        keep = [p for p in ours if p.name == iface]
        if len(keep) != len(ours):
            bridge.ports = [p for p in bridge.ports if p in keep or p not in ours]
        if iface and not keep:
            port = _new_port(txn, tables, iface, "", {}, UPLINK_OFPORT)
            port.external_ids = {OWNER_KEY: "weft", "weft-role": "uplink"}
            bridge.addvalue("ports", port.uuid)
    conn.transact(build)


def unplug_iface_id(conn, iface_id):
    """Removes from br-int every port whose interface carries external_ids:iface-id=`iface_id`."""
    def build(txn, tables):
        bridge = _find(tables, "Bridge", INTEGRATION_BRIDGE)
        if bridge is None:
            return
        keep = [p for p in bridge.ports
                if not any(i.external_ids.get("iface-id") == iface_id for i in p.interfaces)]
        if len(keep) != len(bridge.ports):
            bridge.ports = keep
    conn.transact(build)


def remove_host_config(conn):
    """Undoes ensure_host_ready: removes br-int if Weft created it, else only Weft's port and controller."""
    def build(txn, tables):
        bridge = _find(tables, "Bridge", INTEGRATION_BRIDGE)
        if bridge is None or OWNER_KEY not in bridge.external_ids:
            return
        if bridge.external_ids.get("weft-created") == "true":
            root = next(iter(tables["Open_vSwitch"].rows.values()))
            root.delvalue("bridges", bridge.uuid)
            return
        bridge.ports = [p for p in bridge.ports if p.name != TUNNEL_PORT]
        bridge.controller = []
        bridge.delkey("external_ids", OWNER_KEY)
    conn.transact(build)


def is_ready(conn, replica, dpid, datapath_type, of_target):
    """What ensure_host_ready would leave, read back from the host's database (for status)."""
    with conn.lock:
        bridge = _find(conn.idl.tables, "Bridge", INTEGRATION_BRIDGE)
        if bridge is None or bridge.datapath_type != datapath_type or bridge.fail_mode != ["secure"]:
            return False
        return (replica.ofport_of(TUNNEL_PORT) == TUNNEL_OFPORT
                and bridge.other_config.get("datapath-id") == dpid
                and [c.target for c in bridge.controller] == of_targets(of_target)
                and all(getattr(c, column) == value for c in bridge.controller
                        for column, value in CONTROLLER_SETTINGS.items()))


class HostReplica:
    """br-int's ports and interfaces on one host, kept row by row from the IDL's notifications
    (OvsdbConnection's `listener`), so that a port plugged costs what it touches, not a read of every
    interface on the host.

    `bindings`: {iface-id: (ofport, confirmed)} for every interface on br-int that carries
    external_ids:iface-id: how Weft learns where a logical port is plugged, whoever plugged it.
    confirmed: vswitchd has given the interface that ofport. Before it has, an interface that asked
    for an ofport (ofport_request) that no other interface on br-int has or asks for is reported with
    it, unconfirmed, so its flows can go in while vswitchd is still adding the port.
    `changed`: the iface-ids whose binding changed since take_changed()."""

    def __init__(self):
        self.reload({})

    def reload(self, tables):
        previous = set(getattr(self, "bindings", ()))  # after a reconnect, what went meanwhile is news too
        self.loads = getattr(self, "loads", -1) + 1  # 0: empty (made); 1: first connection; more: reconnections
        self._ifaces = {}        # uuid -> (name, iface-id, ofport or None, ofport_request or None)
        self._ports = {}         # uuid -> (name, interface uuids, weft-role)
        self._uplink_ports = set()  # uuids of the ports whose weft-role is uplink (on br-int or not)
        self._port_of_iface = {}  # interface uuid -> port uuid
        self._br_int = frozenset()  # br-int's port uuids
        self._iface_by_name = {}
        self._claims = collections.Counter()  # ofports had or asked for on br-int
        self._claimed_by = {}    # interface uuid on br-int -> the ofports it has or asks for
        self._requesters = {}    # ofport -> {interface uuid on br-int asking for it}
        self._by_iface_id = {}   # iface-id -> {interface uuid: its binding}
        self._bound_as = {}      # interface uuid -> the iface-id it is filed under there
        self.bindings, self.changed = {}, set()
        # Controller uuid -> (when we saw vswitchd report it, since when it was connected or None),
        # from updates only: what a load finds was written at a time we do not know (seen: -inf).
        self._counts = dict.fromkeys(TABLES, 0)
        for table in ("Interface", "Port", "Bridge"):
            for row in tables[table].rows.values() if table in tables else ():
                self.row_changed("create", row)
        for table in ("Open_vSwitch", "Controller"):
            self._counts[table] = len(tables[table].rows) if table in tables else 0
        self.connections = {uuid: (-math.inf, None) for uuid in (tables["Controller"].rows if tables else ())}
        self.changed |= previous

    def row_counts(self):
        return dict(self._counts)

    def take_changed(self):
        changed, self.changed = self.changed, set()
        return changed

    def ofport_of(self, name):
        iface = self._ifaces.get(self._iface_by_name.get(name))
        return iface[2] if iface else None

    def uplinks(self):
        """The names of the uplinks Weft plugged into br-int, with their ofports."""
        return {self._ports[p][0]: [self._ifaces[i][2] for i in self._ports[p][1] if i in self._ifaces]
                for p in self._uplink_ports & self._br_int}

    def row_changed(self, event, row):
        table = row._table.name
        if event != "update":
            self._counts[table] += 1 if event == "create" else -1
        deleted = event == "delete"
        if table == "Interface":
            old = self._ifaces.pop(row.uuid, None)
            if old:
                self._iface_by_name.pop(old[0], None)
            if not deleted:
                ofport = row.ofport[0] if row.ofport else None
                self._ifaces[row.uuid] = (row.name, row.external_ids.get("iface-id"), ofport,
                                          row.ofport_request[0] if row.ofport_request else None)
                self._iface_by_name[row.name] = row.uuid
            self._refresh({row.uuid})
        elif table == "Port":
            old = self._ports.pop(row.uuid, None)
            self._uplink_ports.discard(row.uuid)
            touched = set(old[1]) if old else set()
            for iface in touched:
                self._port_of_iface.pop(iface, None)
            if not deleted:
                ifaces = tuple(i.uuid for i in row.interfaces)
                self._ports[row.uuid] = (row.name, ifaces, row.external_ids.get("weft-role"))
                if self._ports[row.uuid][2] == "uplink":
                    self._uplink_ports.add(row.uuid)
                for iface in ifaces:
                    self._port_of_iface[iface] = row.uuid
                touched |= set(ifaces)
            self._refresh(touched)
        elif table == "Bridge" and row.name == INTEGRATION_BRIDGE:  # another bridge's going is not br-int's
            ports = frozenset() if deleted else frozenset(p.uuid for p in row.ports)
            moved = ports ^ self._br_int
            self._br_int = ports
            self._refresh({i for p in moved if p in self._ports for i in self._ports[p][1]})
        elif table == "Controller":
            self.connections.pop(row.uuid, None)
            seconds = row.status.get("sec_since_connect") if not deleted and row.is_connected else None
            if not deleted:  # vswitchd rewrites it with its stats, every 5 s by default
                now = time.monotonic()
                self.connections[row.uuid] = (now, now - int(seconds) if seconds and seconds.isdigit() else None)
        # (Open_vSwitch: read directly when needed)

    def _on_br_int(self, iface):
        return self._port_of_iface.get(iface) in self._br_int

    def _refresh(self, ifaces):
        """Recomputes what these interfaces claim and bind, and the bindings that depend on it (an
        interface asking for an ofport that another one now has or asks for)."""
        again = set(ifaces)
        for uuid in ifaces:
            for number in self._claimed_by.pop(uuid, ()):
                self._claims[number] -= 1
                self._requesters.get(number, set()).discard(uuid)
                again |= self._requesters.get(number, set())
            info = self._ifaces.get(uuid)
            if info is None or not self._on_br_int(uuid):
                continue
            _, _, ofport, request = info
            # What it has, or while it has nothing yet, what it asks for (-1: vswitchd failed it).
            claimed = {ofport} if ofport is not None and ofport > 0 else {request} if ofport is None and request else set()
            self._claimed_by[uuid] = claimed
            for number in claimed:
                self._claims[number] += 1
                again |= self._requesters.get(number, set())
            if request is not None and ofport is None:
                self._requesters.setdefault(request, set()).add(uuid)
        for uuid in again:
            self._set_binding(uuid, self._binding(uuid))

    def _binding(self, uuid):
        info = self._ifaces.get(uuid)
        if info is None or uuid not in self._claimed_by or not info[1]:
            return None
        _, _, ofport, request = info
        if ofport is not None and ofport > 0:
            return (ofport, True)
        if ofport is None and request is not None and self._claims[request] == 1:
            return (request, False)
        return None

    def _set_binding(self, uuid, binding):
        info = self._ifaces.get(uuid)
        iface_id = info[1] if info and binding is not None else None
        for key in {self._bound_as.pop(uuid, None), iface_id} - {None}:
            entries = self._by_iface_id.setdefault(key, {})
            entries.pop(uuid, None)
            if key == iface_id:
                entries[uuid] = binding
                self._bound_as[uuid] = key
            value = entries[min(entries)] if entries else None  # two interfaces, one iface-id: either
            if not entries:
                del self._by_iface_id[key]
            if self.bindings.get(key) != value:
                if value is None:
                    del self.bindings[key]
                else:
                    self.bindings[key] = value
                self.changed.add(key)


def free_ofport_guess(port_name):
    """An ofport for a new port to ask for, from its name: unlikely to be taken (vswitchd numbers
    other ports from 1 up), and harmless if it is (see HostReplica)."""
    digest = int.from_bytes(hashlib.sha256(port_name.encode()).digest()[:4], "big")
    return 1000 + digest % (TUNNEL_OFPORT - 1000)


def _ovsdb_map(mapping):
    return ["map", sorted(mapping.items())]


def plug_port(remote, device, iface_id):
    """Adds `device` to br-int with external_ids:iface-id and an ofport_request, in one transaction,
    and returns br-int's datapath type. Without br-int (the host has not joined) the mutate matches nothing, so the new,
    unreferenced rows are dropped by the database and nothing changes. (No attached-mac: attach
    plugs before the controller has chosen the MAC; `weft port show` has it.)"""
    from ovsdb import rpc
    ids = _ovsdb_map({"iface-id": iface_id, OWNER_KEY: "weft"})
    bridge = [["name", "==", INTEGRATION_BRIDGE]]
    try:
        results = rpc.transact(remote, DATABASE, [
            {"op": "select", "table": "Bridge", "where": bridge, "columns": ["datapath_type"]},
            {"op": "insert", "table": "Interface", "uuid-name": "iface",
             "row": {"name": device, "external_ids": ids, "ofport_request": free_ofport_guess(iface_id)}},
            {"op": "insert", "table": "Port", "uuid-name": "port",
             "row": {"name": device, "interfaces": ["named-uuid", "iface"], "external_ids": ids}},
            {"op": "mutate", "table": "Bridge", "where": bridge,
             "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]},
        ])
    except rpc.OvsdbError as err:
        if "constraint violation" in str(err):
            raise rpc.OvsdbError(f"OVS already has a port named {device}") from None
        raise
    if not results[0]["rows"]:
        raise rpc.OvsdbError(f"{remote} has no {INTEGRATION_BRIDGE}: has this host joined "
                             "(weft host join)?")
    return results[0]["rows"][0]["datapath_type"]


def plugged_ports(remote):
    """{iface-id: (device, ofport)} for every interface Weft's attach plugged on this host (an ofport
    of -1 or None: vswitchd has no such device, e.g. its veth went with the container's namespace)."""
    from ovsdb import rpc
    rows = rpc.transact(remote, DATABASE, [
        {"op": "select", "table": "Interface", "columns": ["name", "external_ids", "ofport"],
         "where": [["external_ids", "includes", _ovsdb_map({OWNER_KEY: "weft"})]]}])[0]["rows"]
    plugged = {}
    for row in rows:
        ids = dict(row["external_ids"][1])
        ofport = row["ofport"] if isinstance(row["ofport"], int) else None  # ["set", []] when unset
        if "iface-id" in ids:
            plugged[ids["iface-id"]] = (row["name"], ofport)
    return plugged


def unplug_port(remote, device):
    """Removes `device` from br-int if it is there (idempotent)."""
    from ovsdb import rpc
    rows = rpc.transact(remote, DATABASE, [
        {"op": "select", "table": "Port", "where": [["name", "==", device]], "columns": ["_uuid"]}])[0]["rows"]
    if rows:
        rpc.transact(remote, DATABASE, [
            {"op": "mutate", "table": "Bridge", "where": [["name", "==", INTEGRATION_BRIDGE]],
             "mutations": [["ports", "delete", ["set", [rows[0]["_uuid"]]]]]}])
