"""A host's own Open_vSwitch database: make it ready for Weft, undo that, and read port bindings.

Weft owns exactly what it marks with external_ids:weft-owner: br-int (when Weft created it), the one
flow-based Geneve port and br-int's controller record. Everything else on the host is left alone.
"""
import secrets

from flows.pipeline import TUNNEL_OFPORT, UPLINK_OFPORT

DATABASE = "Open_vSwitch"
TABLES = {
    "Open_vSwitch": ["bridges"],
    "Bridge": ["name", "ports", "datapath_type", "datapath_id", "fail_mode", "protocols", "controller",
               "other_config", "external_ids"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "options", "ofport", "ofport_request", "external_ids"],
    "Controller": ["target", "is_connected", "external_ids", "controller_rate_limit",
                   "controller_burst_limit"],  # the last two: PACKET_IN_LIMITS
}
# Packet-ins per second (and burst) vswitchd may send Weft. Forwarding never needs one; the only
# ones are a gateway next hop's ARP replies, so this caps what a flood on the uplink can cost the
# controller (100/s is OVS's minimum).
PACKET_IN_LIMITS = {"controller_rate_limit": [100], "controller_burst_limit": [25]}
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
        if of_target and targets != [of_target]:
            controller = txn.insert(tables["Controller"])
            controller.target = of_target
            controller.external_ids = {OWNER_KEY: "weft"}
            for column, value in PACKET_IN_LIMITS.items():  # a new row: nothing to read back yet
                setattr(controller, column, value)
            bridge.controller = [controller]
        elif not of_target and bridge.controller:
            bridge.controller = []
        else:
            for controller in bridge.controller:
                _ensure_attrs(controller, **PACKET_IN_LIMITS)
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


def uplink_plugged(conn, iface):
    """Whether `iface` is Weft's uplink on br-int and vswitchd gave it UPLINK_OFPORT."""
    with conn.lock:
        tables = conn.idl.tables
        bridge = _find(tables, "Bridge", INTEGRATION_BRIDGE)
        ports = [p for p in (bridge.ports if bridge else ()) if p.external_ids.get("weft-role") == "uplink"]
        return any(p.name == iface and any(i.ofport == [UPLINK_OFPORT] for i in p.interfaces) for p in ports)


def current_uplink(conn):
    """The name of the uplink Weft plugged into br-int, or None."""
    with conn.lock:
        bridge = _find(conn.idl.tables, "Bridge", INTEGRATION_BRIDGE)
        ours = [p.name for p in (bridge.ports if bridge else ()) if p.external_ids.get("weft-role") == "uplink"]
    return ours[0] if len(ours) == 1 else (None if not ours else "<several>")


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


def is_ready(conn, dpid, datapath_type, of_target):
    """What ensure_host_ready would leave, read back from the host's database (for status)."""
    with conn.lock:
        tables = conn.idl.tables
        bridge = _find(tables, "Bridge", INTEGRATION_BRIDGE)
        if bridge is None or bridge.datapath_type != datapath_type or bridge.fail_mode != ["secure"]:
            return False
        tunnel = _find(tables, "Interface", TUNNEL_PORT)
        return (tunnel is not None and tunnel.ofport == [TUNNEL_OFPORT]
                and bridge.other_config.get("datapath-id") == dpid
                and [c.target for c in bridge.controller] == ([of_target] if of_target else [])
                and all(getattr(c, column) == value for c in bridge.controller
                        for column, value in PACKET_IN_LIMITS.items()))


def bindings(conn):
    """{iface-id: ofport} for every interface on br-int that carries external_ids:iface-id and has a
    valid ofport: how Weft learns where a logical port is plugged, whoever plugged it."""
    with conn.lock:
        tables = conn.idl.tables
        bridge = _find(tables, "Bridge", INTEGRATION_BRIDGE)
        if bridge is None:
            return {}
        found = {}
        for port in bridge.ports:
            for iface in port.interfaces:
                iface_id = iface.external_ids.get("iface-id")
                if iface_id and iface.ofport and iface.ofport[0] > 0:
                    found[iface_id] = iface.ofport[0]
        return found


def _ovsdb_map(mapping):
    return ["map", sorted(mapping.items())]


def plug_port(remote, device, iface_id):
    """Adds `device` to br-int with external_ids:iface-id, in one transaction, and returns br-int's
    datapath type. Without br-int (the host has not joined) the mutate matches nothing, so the new,
    unreferenced rows are dropped by the database and nothing changes. (No attached-mac: attach
    plugs before the controller has chosen the MAC; `weft port show` has it.)"""
    from ovsdb import rpc
    ids = _ovsdb_map({"iface-id": iface_id, OWNER_KEY: "weft"})
    bridge = [["name", "==", INTEGRATION_BRIDGE]]
    try:
        results = rpc.transact(remote, DATABASE, [
            {"op": "select", "table": "Bridge", "where": bridge, "columns": ["datapath_type"]},
            {"op": "insert", "table": "Interface", "row": {"name": device, "external_ids": ids}, "uuid-name": "iface"},
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


def unplug_port(remote, device):
    """Removes `device` from br-int if it is there (idempotent)."""
    from ovsdb import rpc
    rows = rpc.transact(remote, DATABASE, [
        {"op": "select", "table": "Port", "where": [["name", "==", device]], "columns": ["_uuid"]}])[0]["rows"]
    if rows:
        rpc.transact(remote, DATABASE, [
            {"op": "mutate", "table": "Bridge", "where": [["name", "==", INTEGRATION_BRIDGE]],
             "mutations": [["ports", "delete", ["set", [rows[0]["_uuid"]]]]]}])
