"""Weft's northbound database: a replica kept as plain values, row by row, and one method per write.

The database enforces what it can by itself (unique names, VNIs, keys, MACs, (network, ip) pairs, and
no port pointing at a missing network); the API validates the rest before it writes.

The replica (`NbReplica`) is updated from the IDL's per-row notifications, so one change costs in
proportion to that change, not to the database, and it keeps the indexes writes need (free keys and
addresses, MACs in use), so a create does not scan every port either.
"""
import dataclasses
import ipaddress
import json

from ovsdb import server, vswitch
from ovsdb.idl import OvsdbConnection

DATABASE = "Weft_NB"
TABLES = {"Host": None, "Network": None, "Port": None, "Router": None, "Router_Port": None, "Floating_IP": None,
          "Policy": None, "Service": None, "Controller": None, "MAC_Binding": None}
MAX_PORT_KEY = 2**31 - 1
MAX_HOST_KEY = 65535
OPTIONAL_COLUMNS = {"load_balancer_ip"}  # what Nb.apply writes as a value or None
MAX_SERVICE_KEY = 2**24 - 1  # a service's key names its OpenFlow groups and cookies (flows/policy.py)


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    key: int
    datapath_id: str     # br-int's, set at join: 16 hex digits, "" on a row made before Weft had it
    encap_ip: str
    ovsdb_remote: str
    of_target: str | None
    datapath_type: str
    status: dict

    def settings(self):
        """What joining configured (status excluded): a change means the host must be set up anew."""
        return (self.key, self.datapath_id, self.encap_ip, self.ovsdb_remote, self.of_target, self.datapath_type)


@dataclasses.dataclass(frozen=True)
class Network:
    name: str
    vni: int
    cidr: str
    gateway_ip: str
    mtu: int
    external_ids: dict = dataclasses.field(default_factory=dict)  # the owner's own keys (a runtime's ids)
    labels: dict = dataclasses.field(default_factory=dict)        # what policies' namespaceSelectors see


@dataclasses.dataclass(frozen=True)
class Port:
    name: str
    key: int
    network: str
    mac: str
    ip: str
    host: str | None
    status: dict
    external_ids: dict = dataclasses.field(default_factory=dict)  # the owner's own keys (a runtime's ids)
    labels: dict = dataclasses.field(default_factory=dict)        # what policies' podSelectors see
    named_ports: dict = dataclasses.field(default_factory=dict)   # {"http": "TCP/8080"}


@dataclasses.dataclass(frozen=True)
class Router:
    name: str
    key: int
    ports: dict          # network name -> router port MAC
    static_routes: dict  # cidr -> next hop IP
    gateway: dict        # {} or {host, uplink, ip, prefixlen, next_hop, mac}


@dataclasses.dataclass(frozen=True)
class Policy:
    """A NetworkPolicy as applied: `manifest` is its JSON document (what controller/manifests.py
    checked on the way in and parses again to compile it)."""
    name: str
    network: str
    manifest: str

    @property
    def qualified(self):
        return f"{self.network}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Service:
    """A Service as applied, with what the controller gave it: its key and its addresses."""
    name: str
    network: str
    manifest: str
    key: int
    cluster_ip: str
    load_balancer_ip: str | None

    @property
    def qualified(self):
        return f"{self.network}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Controller:
    """A controller as it records itself: its name, where its API is, its role, and the epoch it took
    the active role in (what it sends switches as its OpenFlow role generation)."""
    name: str
    api: str
    role: str            # "active", "standby", or "gone" (written by the active about one that left)
    epoch: int
    status: dict


@dataclasses.dataclass(frozen=True)
class MacBinding:
    """A MAC learned for an IP on a router's gateway (OVN's MAC_Binding): what lets a restarted or
    new active controller forward through the gateway at once, without asking again first."""
    router: str
    ip: str
    mac: str


@dataclasses.dataclass
class Changes:
    """The names of what changed since the last `NbReplica.take_changes()`. `everything`: the replica
    was rebuilt, so whoever derives state from it must do so from scratch."""
    hosts: set = dataclasses.field(default_factory=set)
    networks: set = dataclasses.field(default_factory=set)
    ports: set = dataclasses.field(default_factory=set)
    routers: set = dataclasses.field(default_factory=set)
    policies: set = dataclasses.field(default_factory=set)  # "network/name"
    services: set = dataclasses.field(default_factory=set)  # "network/name"
    controllers: set = dataclasses.field(default_factory=set)
    mac_bindings: set = dataclasses.field(default_factory=set)  # "router/ip"
    everything: bool = False


class FreeNumbers:
    """The lowest number in [low, high] that `taken(n)` says is free, in amortized O(1): a cursor below
    which everything is taken, moved back only when a number below it is freed."""

    def __init__(self, low, high, taken):
        self.low, self.high, self._taken = low, high, taken
        self._cursor = low

    def freed(self, number):
        self._cursor = max(self.low, min(self._cursor, number))

    def lowest(self, also_taken=frozenset()):
        """`also_taken`: numbers picked by the same transaction, not in the replica yet."""
        while self._cursor <= self.high and self._taken(self._cursor):
            self._cursor += 1
        number = self._cursor
        while number <= self.high and (self._taken(number) or number in also_taken):
            number += 1
        return number if number <= self.high else None


class RotatingNumbers:
    """The first free number at or after a cursor that moves past each number handed out, wrapping
    at the end. A freed address is then the last one handed out again: a new container that got an
    address just freed would carry a new MAC while its peers' ARP caches still hold the old one, and
    its first seconds of traffic would go nowhere (Docker's IPAM allocates serially for the same
    reason). Amortized O(1) while the range is not nearly full."""

    def __init__(self, low, high, taken, start):
        self.low, self.high, self._taken = low, high, taken
        self._cursor = start if low <= start <= high else low

    def taken_one(self):
        """A number was taken: the cursor moves past the taken numbers it stands on (the gateway, this
        one, the rest of a batch), not past free ones: a number freed behind it waits for the wrap."""
        for _ in range(self.high - self.low + 1):
            if not self._taken(self._cursor):
                return
            self._cursor = self.low if self._cursor >= self.high else self._cursor + 1

    def next_free(self, also_taken=frozenset()):
        """`also_taken`: numbers picked by the same transaction, not in the replica yet."""
        number = self._cursor
        for _ in range(self.high - self.low + 1):
            if not (self._taken(number) or number in also_taken):
                return number
            number = self.low if number >= self.high else number + 1
        return None


def _opt(value):
    return value[0] if value else None


class NbReplica:
    """The NB's contents as plain, immutable values keyed by name, plus the indexes writes need.

    Updated on the IDL loop (see OvsdbConnection's `listener`). The dicts are live: code that may
    yield (a write, a wait) while it walks one takes a list() of it first."""

    def __init__(self):
        self.reload({})

    # --- the listener interface of OvsdbConnection --------------------------------------------------
    def reload(self, tables):
        self.hosts, self.networks, self.ports, self.routers = {}, {}, {}, {}
        self.floating_ips = {}        # external IP -> port name
        self.ports_of_network = {}    # network name -> {port name}
        self.ports_on_host = {}       # host name -> {port name recorded as bound there}
        self.ips = {}                 # network name -> {ip: port name}
        self.macs = {}                # MAC -> what uses it ("port NAME", "router NAME")
        self.router_of_network = {}   # network name -> router name
        self.port_keys = FreeNumbers(1, MAX_PORT_KEY, lambda key: key in self._port_keys_used)
        self._port_keys_used = set()
        self._free_ips = {}           # network name -> FreeNumbers over its addresses (made on demand)
        self._name_of = {table: {} for table in TABLES}  # uuid -> name (a floating IP's is its ip)
        self._uuid_of = {table: {} for table in TABLES}  # name -> uuid
        self._router_rows = {}        # uuid -> (name, key, static routes, gateway)
        self._router_ports = {}       # uuid -> (router uuid, network name, mac)
        self.policies, self.services = {}, {}  # "network/name" -> Policy, Service
        self.policies_of_network = {}  # network name -> {"network/name"}
        self.services_of_network = {}  # network name -> {"network/name"}
        self.service_ips = {}         # a service's cluster IP or load balancer IP -> "network/name"
        self.service_keys = FreeNumbers(1, MAX_SERVICE_KEY, lambda key: key in self._service_keys_used)
        self._service_keys_used = set()
        self.controllers = {}         # name -> Controller
        self.mac_bindings = {}        # "router/ip" -> MacBinding
        self._counts = dict.fromkeys(TABLES, 0)
        self.changes = Changes()
        for table in TABLES:
            for row in tables[table].rows.values() if table in tables else ():
                self.row_changed("create", row)
        self.changes = Changes(everything=True)
        self.loaded = bool(tables)  # False until the first load from a synced connection

    def row_counts(self):
        return dict(self._counts)

    def row_changed(self, event, row):
        table = row._table.name
        old_name = self._name_of[table].pop(row.uuid, None)
        if old_name is not None:
            del self._uuid_of[table][old_name]
        new_name = None
        if event != "delete":
            new_name = (row.ip if table == "Floating_IP" else None if table == "Router_Port"
                        else f"{row.network}/{row.name}" if table in ("Policy", "Service")
                        else f"{row.router}/{row.ip}" if table == "MAC_Binding" else row.name)
            if new_name is not None:
                self._name_of[table][row.uuid] = new_name
                self._uuid_of[table][new_name] = row.uuid
        if event != "update":
            self._counts[table] += 1 if event == "create" else -1
        handler = getattr(self, f"_changed_{table.lower()}")
        handler(row.uuid, old_name, None if event == "delete" else row)

    def uuid_of(self, table, name):
        return self._uuid_of[table].get(name)

    # --- per table: forget the old value, index the new one (row None: deleted) --------------------
    def _changed_host(self, uuid, old_name, row):
        self.hosts.pop(old_name, None)
        if row is not None:
            self.hosts[row.name] = Host(row.name, row.key, row.datapath_id, row.encap_ip, row.ovsdb_remote,
                                        _opt(row.of_target), row.datapath_type, dict(row.status))
        self.changes.hosts.add(old_name or row.name)

    def _changed_network(self, uuid, old_name, row):
        self.networks.pop(old_name, None)
        self._free_ips.pop(old_name, None)
        if row is not None:
            self.networks[row.name] = Network(row.name, row.vni, row.cidr, row.gateway_ip, row.mtu,
                                             dict(row.external_ids), dict(row.labels))
        self.changes.networks.add(old_name or row.name)

    def _changed_port(self, uuid, old_name, row):
        old = self.ports.pop(old_name, None)
        if old:
            self.ports_of_network[old.network].discard(old.name)
            self.ips[old.network].pop(old.ip, None)
            self.macs.pop(old.mac, None)
            self._port_keys_used.discard(old.key)
            self.port_keys.freed(old.key)
            if old.host:
                self.ports_on_host[old.host].discard(old.name)
        if row is not None:
            port = Port(row.name, row.key, row.network.name, row.mac, row.ip, _opt(row.host), dict(row.status),
                        dict(row.external_ids), dict(row.labels), dict(row.named_ports))
            self.ports[port.name] = port
            self.ports_of_network.setdefault(port.network, set()).add(port.name)
            self.ips.setdefault(port.network, {})[port.ip] = port.name
            if port.network in self._free_ips:
                self._free_ips[port.network].taken_one()
            self.macs[port.mac] = f"port {port.name}"
            self._port_keys_used.add(port.key)
            if port.host:
                self.ports_on_host.setdefault(port.host, set()).add(port.name)
        self.changes.ports.add(old_name or row.name)

    def _changed_router(self, uuid, old_name, row):
        self._router_rows.pop(uuid, None)
        self.routers.pop(old_name, None)
        if row is not None:
            self._router_rows[uuid] = (row.name, row.key, dict(row.static_routes), dict(row.gateway))
        self._rebuild_router(uuid)
        self.changes.routers.add(old_name or row.name)

    def _changed_router_port(self, uuid, old_name, row):
        old = self._router_ports.pop(uuid, None)
        if old:
            self.macs.pop(old[2], None)
            self.router_of_network.pop(old[1], None)
            self._rebuild_router(old[0])
        if row is not None:
            router_uuid, network = row.router.uuid, row.network.name
            self._router_ports[uuid] = (router_uuid, network, row.mac)
            self.macs[row.mac] = f"router {row.router.name}"
            self.router_of_network[network] = row.router.name
            self._rebuild_router(router_uuid)

    def _rebuild_router(self, uuid):
        """A router's value joins its own row and its Router_Port rows: either changing rebuilds it."""
        raw = self._router_rows.get(uuid)
        if raw is not None:
            legs = {net: mac for router, net, mac in self._router_ports.values() if router == uuid}
            self.routers[raw[0]] = Router(raw[0], raw[1], legs, raw[2], raw[3])
            self.changes.routers.add(raw[0])

    def _changed_floating_ip(self, uuid, old_ip, row):
        ports = [self.floating_ips.pop(old_ip, None)]
        if row is not None:
            self.floating_ips[row.ip] = row.port.name
            ports.append(row.port.name)
        for port in filter(None, ports):  # a floating IP is part of its router's state
            router = self.router_of_network.get(self.ports[port].network) if port in self.ports else None
            if router:
                self.changes.routers.add(router)

    def _changed_policy(self, uuid, old_name, row):
        old = self.policies.pop(old_name, None)
        if old:
            self.policies_of_network[old.network].discard(old_name)
        if row is not None:
            policy = Policy(row.name, row.network, row.manifest)
            self.policies[policy.qualified] = policy
            self.policies_of_network.setdefault(policy.network, set()).add(policy.qualified)
        self.changes.policies.add(old_name or f"{row.network}/{row.name}")

    def _changed_service(self, uuid, old_name, row):
        old = self.services.pop(old_name, None)
        if old:
            self.services_of_network[old.network].discard(old_name)
            for ip in (old.cluster_ip, old.load_balancer_ip):
                if self.service_ips.get(ip) == old_name:
                    del self.service_ips[ip]
            self._service_keys_used.discard(old.key)
            self.service_keys.freed(old.key)
        if row is not None:
            service = Service(row.name, row.network, row.manifest, row.key, row.cluster_ip,
                              _opt(row.load_balancer_ip))
            self.services[service.qualified] = service
            self.services_of_network.setdefault(service.network, set()).add(service.qualified)
            for ip in filter(None, (service.cluster_ip, service.load_balancer_ip)):
                self.service_ips[ip] = service.qualified
            self._service_keys_used.add(service.key)
        self.changes.services.add(old_name or f"{row.network}/{row.name}")

    def _changed_controller(self, uuid, old_name, row):
        self.controllers.pop(old_name, None)
        if row is not None:
            self.controllers[row.name] = Controller(row.name, row.api, row.role, row.epoch, dict(row.status))
        self.changes.controllers.add(old_name or row.name)

    def _changed_mac_binding(self, uuid, old_name, row):
        self.mac_bindings.pop(old_name, None)
        if row is not None:
            old_name = f"{row.router}/{row.ip}"
            self.mac_bindings[old_name] = MacBinding(row.router, row.ip, row.mac)
        self.changes.mac_bindings.add(old_name)

    # --- reading ------------------------------------------------------------------------------------
    def take_changes(self):
        changes, self.changes = self.changes, Changes()
        return changes

    def router_of(self, network):
        """The router a network is attached to, or None."""
        name = self.router_of_network.get(network)
        return self.routers.get(name) if name else None

    def free_ip(self, network, also_taken=()):
        """A free address of a network (no port nor its gateway has it), after the last one handed out
        (see RotatingNumbers), or None."""
        pool = self._free_ips.get(network)
        if pool is None:
            net = self.networks[network]
            subnet = ipaddress.IPv4Network(net.cidr)
            used = self.ips.setdefault(network, {})
            gateway = net.gateway_ip

            def taken(number, used=used, gateway=gateway):
                ip = str(ipaddress.IPv4Address(number))
                return ip in used or ip == gateway
            # Built on demand, also after a reload: it goes on after the highest address in use.
            highest = max((int(ipaddress.IPv4Address(ip)) for ip in used), default=0)
            pool = self._free_ips[network] = RotatingNumbers(int(subnet.network_address) + 1,
                                                             int(subnet.broadcast_address) - 1, taken,
                                                             highest + 1)
        number = pool.next_free({int(ipaddress.IPv4Address(ip)) for ip in also_taken})
        return None if number is None else str(ipaddress.IPv4Address(number))

    def tunnel_keys(self):
        """Keys in use -> their owner. Network VNIs and router keys share one space (a tunnel key names
        one datapath), which no single table's unique index can guard: writers read it inside their
        transaction, so two concurrent creates cannot both take a key."""
        return {**{n.vni: f"network {n.name!r}" for n in self.networks.values()},
                **{r.key: f"router {r.name!r}" for r in self.routers.values()}}


class PortsTaken:
    """What a new port must not collide with: the replica plus what earlier writes of the same
    transaction picked (the replica has those only after the commit)."""

    def __init__(self, replica, network, picked):
        self._replica, self._network, self._picked = replica, network, picked

    def port_network(self, name):
        """The network of the port named `name`, if that name is taken."""
        port = self._replica.ports.get(name)
        return port.network if port else self._picked["names"].get(name)

    def ip_owner(self, ip):
        return (self._replica.ips.get(self._network, {}).get(ip)
                or self._picked["ips"].get(self._network, {}).get(ip))

    def mac_owner(self, mac):
        return self._replica.macs.get(mac) or self._picked["macs"].get(mac)

    def free_ip(self):
        return self._replica.free_ip(self._network, self._picked["ips"].get(self._network, {}))


class ServicesTaken:
    """What a service's key and addresses must not collide with: the replica plus what earlier picks
    of the same transaction took (the replica has those only after the commit)."""

    def __init__(self, replica, picked):
        self.replica, self._picked = replica, picked

    def ip_owner(self, ip):
        """The service ("network/name") that has `ip` as its cluster or load balancer IP, or None."""
        return self._picked["ips"].get(ip) or self.replica.service_ips.get(ip)

    def lowest_key(self):
        return self.replica.service_keys.lowest(self._picked["keys"])

    def pick(self, qualified, key, ips):
        """Records what a service of this transaction got, for the picks after it."""
        self._picked["keys"].add(key)
        self._picked["ips"].update(dict.fromkeys(filter(None, ips), qualified))


def load_schema():
    with open(server.SCHEMA_PATH) as f:
        return json.load(f)


def _insert(txn, tables, table, **columns):
    row = txn.insert(tables[table])
    for column, value in columns.items():
        setattr(row, column, value)
    return row


class Nb:
    """The NB connection and its replica, and one method per write. Each write runs inside one
    transaction on the IDL loop, where it reads the replica (and what its batch-mates picked) to choose
    keys and addresses, so concurrent writes never pick the same one; a `choose` callback raises to
    refuse. The database refuses (TransactionError) what breaks its constraints."""

    def __init__(self, hub, remote, on_change=None, lock_name=None):
        self.replica = NbReplica()
        # persist_uuids: a write whose answer was lost can be checked for in the replica (ovsdb/idl.py)
        self.conn = OvsdbConnection(hub, remote, load_schema(), TABLES, on_change=on_change, name="NB",
                                    listener=self.replica, persist_uuids=True, lock_name=lock_name)

    def start(self):
        self.conn.start()
        return self

    def stop(self):
        self.conn.stop()

    @property
    def connected(self):
        return self.conn.synced

    def _find(self, tables, table, name):
        """The IDL row named `name` (a floating IP by its ip), through the replica's index, or None."""
        return tables[table].rows.get(self.replica.uuid_of(table, name))

    def _row(self, tables, table, name):
        row = self._find(tables, table, name)
        if row is None:
            raise LookupError(f"{table.lower().replace('_', ' ')} {name!r} does not exist")
        return row

    def create_host(self, name, encap_ip, ovsdb_remote, datapath_type, of_target=None):
        def build(txn, tables):
            picked = txn.scratch.setdefault("host_keys", set())
            used = {h.key for h in self.replica.hosts.values()} | picked
            key = next(k for k in range(1, MAX_HOST_KEY + 1) if k not in used)
            picked.add(key)
            _insert(txn, tables, "Host", name=name, key=key, datapath_id=self._new_datapath_id(txn),
                    encap_ip=encap_ip, ovsdb_remote=ovsdb_remote, datapath_type=datapath_type,
                    of_target=[of_target] if of_target else [])
        self.conn.transact(build)

    def _new_datapath_id(self, txn):
        picked = txn.scratch.setdefault("datapath_ids", set())
        used = {h.datapath_id for h in self.replica.hosts.values()} | picked
        dpid = next(d for d in iter(vswitch.new_datapath_id, None) if d not in used)
        picked.add(dpid)
        return dpid

    def give_datapath_ids(self, names):
        """Gives hosts joined before datapath ids were random (their column is "") one of their own."""
        def build(txn, tables):
            for name in names:
                row = self._find(tables, "Host", name)
                if row is not None and not row.datapath_id:
                    row.datapath_id = self._new_datapath_id(txn)
        self.conn.transact(build)

    def _tunnel_key(self, txn, choose, name_in_use):
        """Runs `choose(tunnel_keys, name_in_use)` and records its pick for the rest of the batch."""
        picked = txn.scratch.setdefault("tunnel_keys", {})
        key = choose({**self.replica.tunnel_keys(), **picked}, name_in_use)
        picked[key] = "a write of the same batch"
        return key

    def create_network(self, name, choose_vni, cidr, gateway_ip, mtu, external_ids=None, labels=None):
        """Inserts a network with the VNI `choose_vni(tunnel_keys, name_in_use)` returns (or raises)."""
        def build(txn, tables):
            names = txn.scratch.setdefault("network_names", set())
            vni = self._tunnel_key(txn, choose_vni, name in self.replica.networks or name in names)
            names.add(name)
            _insert(txn, tables, "Network", name=name, vni=vni, cidr=cidr, gateway_ip=gateway_ip, mtu=mtu,
                    external_ids=external_ids or {}, labels=labels or {})
        self.conn.transact(build)

    def create_port(self, name, network, choose, external_ids=None, labels=None, named_ports=None):
        """Inserts a port with the (ip, mac) that `choose(PortsTaken)` returns."""
        def build(txn, tables):
            net = self._row(tables, "Network", network)
            picked = txn.scratch.setdefault("ports", {"names": {}, "ips": {}, "macs": {}, "keys": set()})
            ip, mac = choose(PortsTaken(self.replica, network, picked))
            key = self.replica.port_keys.lowest(picked["keys"])
            if key is None:
                raise LookupError(f"no free port key left (all {MAX_PORT_KEY} are in use)")
            picked["names"][name] = network
            picked["ips"].setdefault(network, {})[ip] = name
            picked["macs"][mac] = f"port {name}"
            picked["keys"].add(key)
            _insert(txn, tables, "Port", name=name, key=key, network=net, mac=mac, ip=ip,
                    external_ids=external_ids or {}, labels=labels or {}, named_ports=named_ports or {})
        self.conn.transact(build)

    def create_router(self, name, choose_key):
        """Inserts a router with the key `choose_key(tunnel_keys, name_in_use)` returns (or raises)."""
        def build(txn, tables):
            names = txn.scratch.setdefault("router_names", set())
            key = self._tunnel_key(txn, choose_key, name in self.replica.routers or name in names)
            names.add(name)
            _insert(txn, tables, "Router", name=name, key=key)
        self.conn.transact(build)

    def attach_router(self, router, network, mac):
        def build(txn, tables):
            _insert(txn, tables, "Router_Port", router=self._row(tables, "Router", router),
                    network=self._row(tables, "Network", network), mac=mac)
        self.conn.transact(build)

    def detach_router(self, router, network):
        def build(txn, tables):
            for uuid, (router_uuid, net, _) in list(self.replica._router_ports.items()):
                if net == network and router_uuid == self.replica.uuid_of("Router", router):
                    tables["Router_Port"].rows[uuid].delete()
        self.conn.transact(build)

    def set_route(self, router, cidr, via):
        """Adds (via is a next hop) or removes (via None) one static route."""
        def build(txn, tables):
            row = self._row(tables, "Router", router)
            if via is None:
                row.delkey("static_routes", cidr)
            else:
                row.setkey("static_routes", cidr, via)
        self.conn.transact(build)

    def set_gateway(self, router, gateway):
        def build(txn, tables):
            self._row(tables, "Router", router).gateway = gateway
        self.conn.transact(build)

    def create_floating_ip(self, ip, port):
        def build(txn, tables):
            _insert(txn, tables, "Floating_IP", ip=ip, port=self._row(tables, "Port", port))
        self.conn.transact(build)

    def set_map(self, table, name, column, value):
        """Replaces a map column (external_ids, labels, named_ports) of the row named `name`, whole,
        in one transaction (LookupError if there is no such row)."""
        def build(txn, tables):
            setattr(self._row(tables, table, name), column, value)
        self.conn.transact(build)

    def set_map_key(self, table, name, column, key, value):
        """Sets one key of a map column (value None: removes it) as a mutation: writers of other keys
        at the same time keep theirs (LookupError if there is no such row)."""
        def build(txn, tables):
            row = self._row(tables, table, name)
            if value is None:
                row.delkey(column, key)
            else:
                row.setkey(column, key, value)
        self.conn.transact(build)

    def set_labels(self, table, name, labels):
        self.set_map(table, name, "labels", labels)

    def delete(self, table, name):
        """Deletes the row named `name` (a floating IP: its ip); False if there was none. The database refuses (TransactionError)
        when a strong reference still points at it (a network with ports)."""
        def build(txn, tables):
            row = self._find(tables, table, name)
            if row is not None:
                row.delete()
            return row is not None
        return self.conn.transact(build)

    def delete_port(self, name):
        """Deletes the port and its floating IPs (which reference it) in one transaction: both or,
        refused, neither. False if there was no such port."""
        def build(txn, tables):
            row = self._find(tables, "Port", name)
            if row is None:
                return False
            for ip, port in list(self.replica.floating_ips.items()):
                fip = self._find(tables, "Floating_IP", ip) if port == name else None
                if fip is not None:
                    fip.delete()
            row.delete()
            return True
        return self.conn.transact(build)

    def apply(self, choose, remove=()):
        """Creates or replaces policies and services and deletes others in one transaction: all of
        them or, if anything fails, none. `choose(ServicesTaken)` runs inside the transaction (so no
        concurrent write picks the same key or address) and returns the objects to write, each
        (table, network, name, columns) with table "Policy" or "Service"; `remove` lists
        (table, network, name) to delete."""
        def build(txn, tables):
            picked = txn.scratch.setdefault("services", {"keys": set(), "ips": {}})
            for table, network, name, columns in choose(ServicesTaken(self.replica, picked)):
                row = self._find(tables, table, f"{network}/{name}")
                if row is None:
                    row = _insert(txn, tables, table, name=name, network=network)
                for column, value in columns.items():
                    if column in OPTIONAL_COLUMNS:  # OVSDB's optional value is a set of 0 or 1
                        value = [] if value is None else [value]
                    setattr(row, column, value)
            for table, network, name in remove:
                row = self._find(tables, table, f"{network}/{name}")
                if row is not None:
                    row.delete()
        self.conn.transact(build)

    def set_host_statuses(self, statuses):
        """Replaces hosts' status maps ({host name: status}) in one transaction, writing only changes."""
        def build(txn, tables):
            for name, status in statuses.items():
                row = self._find(tables, "Host", name)
                if row is not None and dict(row.status) != status:
                    row.status = status
        self.conn.transact(build)

    def set_controller(self, name, **columns):
        """Creates or updates this controller's own row (api, role, epoch, status): the one write a
        standby makes, so it goes without the active lock."""
        def build(txn, tables):
            row = self._find(tables, "Controller", name) or _insert(txn, tables, "Controller", name=name)
            for column, value in columns.items():
                setattr(row, column, value)
        self.conn.transact(build, unlocked=True)

    def set_mac_binding(self, router, ip, mac):
        """Records the MAC learned for `ip` on `router`'s gateway (mac None: forgets it)."""
        def build(txn, tables):
            row = self._find(tables, "MAC_Binding", f"{router}/{ip}")
            if mac is None:
                if row is not None:
                    row.delete()
            elif row is None:
                _insert(txn, tables, "MAC_Binding", router=router, ip=ip, mac=mac)
            elif row.mac != mac:
                row.mac = mac
        self.conn.transact(build)

    def set_port_hosts(self, hosts):
        """Records where ports are bound ({port name: host name or None}) in one transaction."""
        def build(txn, tables):
            for name, host in hosts.items():
                row = self._find(tables, "Port", name)
                if row is not None and _opt(row.host) != host:
                    row.host = [host] if host else []
        self.conn.transact(build)

    def take_active(self, name, api, floor=0):
        """Records `name` as the active controller in a new epoch (one above every epoch the table
        holds, and above `floor`), and any other row still saying "active" (a controller that died) as
        "gone", in one transaction that fails if another writer changed a role or an epoch meanwhile.
        Returns the epoch and the name of the controller that held the latest one before (None: no
        controller ever did)."""
        def build(txn, tables):
            rows = list(tables["Controller"].rows.values())
            for row in rows:
                row.verify("epoch")
                row.verify("role")
            latest = max(rows, key=lambda row: row.epoch, default=None)
            epoch = max(latest.epoch if latest else 0, floor) + 1
            mine = self._find(tables, "Controller", name) or _insert(txn, tables, "Controller", name=name)
            mine.api, mine.role, mine.epoch = api, "active", epoch
            for row in rows:
                if row.name != name and row.role == "active":
                    row.role = "gone"
            return epoch, latest.name if latest and latest.epoch else None
        return self.conn.transact(build)
