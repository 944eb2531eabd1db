"""HostReplica: br-int's bindings kept row by row, as the IDL's notifications drive it."""
import math
import time
import uuid

from ovsdb.vswitch import INTEGRATION_BRIDGE, HostReplica


class Row:
    """What HostReplica reads of an IDL row: its table, uuid and columns."""

    def __init__(self, table, **columns):
        self._table = type("Table", (), {"name": table})()
        self.uuid = uuid.uuid4()
        self.__dict__.update(columns)


def iface(name, iface_id=None, ofport=(), request=()):
    return Row("Interface", name=name, external_ids={"iface-id": iface_id} if iface_id else {},
               ofport=list(ofport), ofport_request=list(request))


def plug(replica, bridge, *interfaces, name="p"):
    port = Row("Port", name=name, interfaces=list(interfaces), external_ids={})
    for i in interfaces:
        replica.row_changed("create", i)
    replica.row_changed("create", port)
    bridge.ports.append(port)
    replica.row_changed("update", bridge)
    return port


def fresh():
    replica = HostReplica()
    bridge = Row("Bridge", name=INTEGRATION_BRIDGE, ports=[])
    replica.row_changed("create", bridge)
    return replica, bridge


def test_a_plugged_interface_is_bound_once_vswitchd_gives_it_an_ofport():
    replica, bridge = fresh()
    a = iface("wfa", "a")
    plug(replica, bridge, a)
    assert replica.bindings == {} and replica.take_changed() == set()  # no ofport, none asked for
    a.ofport = [7]
    replica.row_changed("update", a)
    assert replica.bindings == {"a": (7, True)} and replica.take_changed() == {"a"}


def test_an_asked_for_ofport_binds_early_unless_another_interface_has_or_asks_for_it():
    replica, bridge = fresh()
    a = iface("wfa", "a", request=[1500])
    plug(replica, bridge, a, name="pa")
    assert replica.bindings == {"a": (1500, False)}
    b = iface("wfb", "b", request=[1500])
    plug(replica, bridge, b, name="pb")
    assert replica.bindings == {}  # two ask for 1500: neither is trusted before vswitchd decides
    b.ofport = [3]
    replica.row_changed("update", b)
    assert replica.bindings == {"a": (1500, False), "b": (3, True)}
    c = iface("wfc", "c", ofport=[1500])  # another tool's interface really has 1500
    plug(replica, bridge, c, name="pc")
    assert "a" not in replica.bindings and replica.bindings["c"] == (1500, True)


def test_unplugging_from_br_int_unbinds_and_reports_it():
    replica, bridge = fresh()
    port = plug(replica, bridge, iface("wfa", "a", ofport=[4]))
    replica.take_changed()
    bridge.ports.remove(port)
    replica.row_changed("update", bridge)
    assert replica.bindings == {} and replica.take_changed() == {"a"}


def test_other_bridges_ports_do_not_count():
    replica, _ = fresh()
    other = Row("Bridge", name="br-phy", ports=[])
    replica.row_changed("create", other)
    plug(replica, other, iface("wfa", "a", ofport=[4]))
    assert replica.bindings == {}


def test_another_bridge_deleted_leaves_br_int_bound():
    """`ovs-vsctl del-br br-other` once unbound every port on br-int: any bridge's deletion was taken
    for br-int's."""
    replica, bridge = fresh()
    plug(replica, bridge, iface("wfa", "a", ofport=[7]))
    other = Row("Bridge", name="br-other", ports=[])
    replica.row_changed("create", other)
    replica.take_changed()
    replica.row_changed("delete", other)
    assert replica.bindings == {"a": (7, True)} and replica.take_changed() == set()
    replica.row_changed("delete", bridge)  # br-int's own deletion does unbind
    assert replica.bindings == {} and replica.take_changed() == {"a"}


def test_a_reload_reports_what_went_while_disconnected():
    replica, bridge = fresh()
    plug(replica, bridge, iface("wfa", "a", ofport=[4]))
    replica.take_changed()
    replica.reload({})  # reconnected to a database where the port is gone
    assert replica.bindings == {} and replica.take_changed() == {"a"}


def test_controller_connections_are_dated_from_vswitchds_updates_only():
    """vswitchd rewrites each Controller row's status with its stats: an update says since when it
    has been connected (sec_since_connect, whole seconds). A loaded row was written at a time we do
    not know: it dates nothing (seen at -inf), until its next update."""
    loaded = Row("Controller", target="unix:/c.sock", is_connected=True, status={"sec_since_connect": "40"})
    replica = HostReplica()
    replica.reload({name: type("Table", (), {"rows": {loaded.uuid: loaded} if name == "Controller" else {}})()
                    for name in ("Controller", "Interface", "Port", "Bridge", "Open_vSwitch")})
    assert replica.connections == {loaded.uuid: (-math.inf, None)}
    before = time.monotonic()
    loaded.status = {"sec_since_connect": "3"}
    replica.row_changed("update", loaded)
    seen, since = replica.connections[loaded.uuid]
    assert before <= seen <= time.monotonic() and since == seen - 3
    loaded.is_connected, loaded.status = False, {"sec_since_disconnect": "1"}
    replica.row_changed("update", loaded)
    assert replica.connections[loaded.uuid][1] is None
    replica.row_changed("delete", loaded)
    assert replica.connections == {}
