"""Weft's northbound database: plain snapshots to read, and one function per write.

The database enforces what it can by itself (unique names, VNIs, keys, MACs, (network, ip) pairs, and
no port pointing at a missing network); the API validates the rest before it writes.
"""
import dataclasses
import json

from ovsdb import server

DATABASE = "Weft_NB"
TABLES = {"Host": None, "Network": None, "Port": None, "Router": None, "Router_Port": None, "Floating_IP": None}


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    key: int
    encap_ip: str
    ovsdb_remote: str
    of_target: str | None
    datapath_type: str
    status: dict

    def settings(self):
        """What joining configured (status excluded): a change means the host must be set up anew."""
        return (self.key, self.encap_ip, self.ovsdb_remote, self.of_target, self.datapath_type)


@dataclasses.dataclass(frozen=True)
class Network:
    name: str
    vni: int
    cidr: str
    gateway_ip: str
    mtu: int


@dataclasses.dataclass(frozen=True)
class Port:
    name: str
    key: int
    network: str
    mac: str
    ip: str
    host: str | None
    status: dict


@dataclasses.dataclass(frozen=True)
class Router:
    name: str
    key: int
    ports: dict          # network name -> router port MAC
    static_routes: dict  # cidr -> next hop IP
    gateway: dict        # {} or {host, uplink, ip, prefixlen, next_hop, mac}


@dataclasses.dataclass(frozen=True)
class NbState:
    hosts: dict
    networks: dict
    ports: dict
    routers: dict = dataclasses.field(default_factory=dict)
    floating_ips: dict = dataclasses.field(default_factory=dict)  # external IP -> port name

    def router_of(self, network):
        """The router a network is attached to, or None."""
        return next((r for r in self.routers.values() if network in r.ports), None)


def load_schema():
    with open(server.SCHEMA_PATH) as f:
        return json.load(f)


def _opt(value):
    return value[0] if value else None


def snapshot(conn):
    """The NB's current contents as plain, immutable values (read under the connection's lock)."""
    with conn.lock:
        networks_by_uuid = {row.uuid: row.name for row in conn.rows("Network")}
        hosts = {r.name: Host(r.name, r.key, r.encap_ip, r.ovsdb_remote, _opt(r.of_target), r.datapath_type,
                              dict(r.status)) for r in conn.rows("Host")}
        networks = {r.name: Network(r.name, r.vni, r.cidr, r.gateway_ip, r.mtu) for r in conn.rows("Network")}
        ports = {r.name: Port(r.name, r.key, networks_by_uuid.get(r.network.uuid, "?"), r.mac, r.ip,
                              _opt(r.host), dict(r.status)) for r in conn.rows("Port")}
        router_ports = {}
        for rp in conn.rows("Router_Port"):
            router_ports.setdefault(rp.router.uuid, {})[networks_by_uuid.get(rp.network.uuid, "?")] = rp.mac
        routers = {r.name: Router(r.name, r.key, router_ports.get(r.uuid, {}), dict(r.static_routes),
                                  dict(r.gateway)) for r in conn.rows("Router")}
        floating_ips = {r.ip: r.port.name for r in conn.rows("Floating_IP")}
    return NbState(hosts, networks, ports, routers, floating_ips)


def _find(tables, table, name):
    for row in tables[table].rows.values():
        if row.name == name:
            return row
    return None


def _next_key(tables, table, limit):
    """Lowest unused key. The unique index on `key` makes two writers that pick the same one conflict."""
    used = {row.key for row in tables[table].rows.values()}
    return next(k for k in range(1, limit + 1) if k not in used)


def _insert(txn, tables, table, **columns):
    row = txn.insert(tables[table])
    for column, value in columns.items():
        setattr(row, column, value)
    return row


def create_host(conn, name, encap_ip, ovsdb_remote, datapath_type, of_target=None):
    def build(txn, tables):
        _insert(txn, tables, "Host", name=name, key=_next_key(tables, "Host", 65535), encap_ip=encap_ip,
                ovsdb_remote=ovsdb_remote, datapath_type=datapath_type,
                of_target=[of_target] if of_target else [])
    conn.transact(build)


def tunnel_keys(tables):
    """Keys in use -> their owner. Network VNIs and router keys share one space (a tunnel key names
    one datapath), which no single table's unique index can guard: writers read it inside their
    transaction, so two concurrent creates cannot both take a key."""
    return {**{r.vni: f"network {r.name!r}" for r in tables["Network"].rows.values()},
            **{r.key: f"router {r.name!r}" for r in tables["Router"].rows.values()}}


def create_network(conn, name, choose_vni, cidr, gateway_ip, mtu):
    """Inserts a network with the VNI `choose_vni(tunnel_keys, network_names)` returns (or raises)."""
    def build(txn, tables):
        vni = choose_vni(tunnel_keys(tables), {r.name for r in tables["Network"].rows.values()})
        _insert(txn, tables, "Network", name=name, vni=vni, cidr=cidr, gateway_ip=gateway_ip, mtu=mtu)
    conn.transact(build)


@dataclasses.dataclass
class PortsTaken:
    """What a new port must not collide with, read inside the write's own transaction."""
    names: dict     # port name -> its network
    ips: dict       # IP -> port name, in the new port's network
    macs: set       # every port's and router port's MAC


def create_port(conn, name, network, choose):
    """Inserts a port with the (ip, mac) that `choose(PortsTaken)` returns. `choose` runs inside the
    transaction, on the replica plus the rows queued before it in the same batch, so concurrent
    creates never pick the same address; it raises to refuse."""
    def build(txn, tables):
        net = _must(tables, "Network", network)
        ports = tables["Port"].rows.values()
        taken = PortsTaken(names={p.name: p.network.name for p in ports},
                           ips={p.ip: p.name for p in ports if p.network.uuid == net.uuid},
                           macs={p.mac for p in ports} | {rp.mac for rp in tables["Router_Port"].rows.values()})
        ip, mac = choose(taken)
        _insert(txn, tables, "Port", name=name, key=_next_key(tables, "Port", 2**31 - 1),
                network=net, mac=mac, ip=ip)
    conn.transact(build)


def create_router(conn, name, choose_key):
    """Inserts a router with the key `choose_key(tunnel_keys, router_names)` returns (or raises)."""
    def build(txn, tables):
        key = choose_key(tunnel_keys(tables), {r.name for r in tables["Router"].rows.values()})
        _insert(txn, tables, "Router", name=name, key=key)
    conn.transact(build)


def attach_router(conn, router, network, mac):
    def build(txn, tables):
        _insert(txn, tables, "Router_Port", router=_must(tables, "Router", router),
                network=_must(tables, "Network", network), mac=mac)
    conn.transact(build)


def detach_router(conn, router, network):
    def build(txn, tables):
        for rp in list(tables["Router_Port"].rows.values()):
            if rp.router.name == router and rp.network.name == network:
                rp.delete()
    conn.transact(build)


def set_route(conn, router, cidr, via):
    """Adds (via is a next hop) or removes (via None) one static route."""
    def build(txn, tables):
        row = _must(tables, "Router", router)
        if via is None:
            row.delkey("static_routes", cidr)
        else:
            row.setkey("static_routes", cidr, via)
    conn.transact(build)


def set_gateway(conn, router, gateway):
    def build(txn, tables):
        _must(tables, "Router", router).gateway = gateway
    conn.transact(build)


def create_floating_ip(conn, ip, port):
    conn.transact(lambda txn, tables: _insert(txn, tables, "Floating_IP", ip=ip,
                                              port=_must(tables, "Port", port)) and None)


def delete_floating_ip(conn, ip):
    def build(txn, tables):
        for row in list(tables["Floating_IP"].rows.values()):
            if row.ip == ip:
                row.delete()
    conn.transact(build)


def _must(tables, table, name):
    row = _find(tables, table, name)
    if row is None:
        raise LookupError(f"{table.lower().replace('_', ' ')} {name!r} does not exist")
    return row


def delete(conn, table, name):
    """Deletes the row named `name`; False if there was none. The database refuses (TransactionError)
    when a strong reference still points at it (a network with ports)."""
    def build(txn, tables):
        row = _find(tables, table, name)
        if row is not None:
            row.delete()
        return row is not None
    return conn.transact(build)


def set_host_statuses(conn, statuses):
    """Replaces hosts' status maps ({host name: status}) in one transaction, writing only changes."""
    def build(txn, tables):
        for row in tables["Host"].rows.values():
            if row.name in statuses and dict(row.status) != statuses[row.name]:
                row.status = statuses[row.name]
    conn.transact(build)


def set_port_hosts(conn, hosts):
    """Records where ports are bound ({port name: host name or None}) in one transaction."""
    def build(txn, tables):
        for row in tables["Port"].rows.values():
            if row.name in hosts and _opt(row.host) != hosts[row.name]:
                row.host = [hosts[row.name]] if hosts[row.name] else []
    conn.transact(build)

