"""The northbound REST API (/v1), framework-free: `handle(method, path, body)` -> (status, JSON value).

The Ryu app routes every /v1 request here. Each write validates fully before it touches the NB, so a
refused request changes nothing; the database's own constraints back that up against racing writers.
"""
import ipaddress
import json
import random
import urllib.parse

from controller import validate as v
from controller.validate import ApiError
from ovsdb import nb
from ovsdb.idl import TransactionError

VERSION = "0.1.0"


class NorthboundApi:
    def __init__(self, core):
        self.core = core
        self.routes = [
            ("GET", ("status",), self.status),
            ("GET", ("hosts",), self.list_hosts),
            ("POST", ("hosts",), self.join_host),
            ("GET", ("hosts", None), self.show_host),
            ("DELETE", ("hosts", None), self.leave_host),
            ("GET", ("networks",), self.list_networks),
            ("POST", ("networks",), self.create_network),
            ("GET", ("networks", None), self.show_network),
            ("DELETE", ("networks", None), self.delete_network),
            ("GET", ("ports",), self.list_ports),
            ("POST", ("ports",), self.create_port),
            ("GET", ("ports", None), self.show_port),
            ("DELETE", ("ports", None), self.delete_port),
        ]

    def handle(self, method, path, raw_body=b"", query=""):
        try:
            parts = tuple(p for p in urllib.parse.unquote(path).split("/") if p)
            if parts[:1] != ("v1",):
                raise ApiError(404, f"no such resource {path!r} (the API lives under /v1)")
            handler, args = self._route(method, parts[1:])
            body = _parse_body(raw_body) if method in ("POST", "PUT") else None
            params = dict(urllib.parse.parse_qsl(query or ""))
            return handler(*args, body=body, params=params)
        except ApiError as err:
            return err.status, {"error": err.message}

    def _route(self, method, parts):
        allowed = []
        for route_method, pattern, handler in self.routes:
            if len(pattern) == len(parts) and all(p is None or p == x for p, x in zip(pattern, parts)):
                if route_method == method:
                    return handler, [x for p, x in zip(pattern, parts) if p is None]
                allowed.append(route_method)
        if allowed:
            raise ApiError(405, f"{method} is not allowed here (allowed: {', '.join(allowed)})")
        raise ApiError(404, f"no such resource /v1/{'/'.join(parts)}")

    # --- status -------------------------------------------------------------------------------------
    def status(self, body, params):
        state = self.core.nb_state()
        return 200, {"version": VERSION, "nb": self.core.nb_status(),
                     "hosts": {n: self._host_json(h)["status"] for n, h in sorted(state.hosts.items())},
                     "networks": len(state.networks), "ports": len(state.ports),
                     "ports_up": sum(1 for p in state.ports.values() if self.core.port_up(p.name)),
                     "packet_ins": self.core.packet_ins}

    # --- hosts --------------------------------------------------------------------------------------
    def _host_json(self, host):
        return {"name": host.name, "key": host.key, "encap_ip": host.encap_ip, "ovsdb": host.ovsdb_remote,
                "datapath_type": host.datapath_type, "of_target": host.of_target,
                "status": self.core.host_status(host.name)}

    def list_hosts(self, body, params):
        return 200, [self._host_json(h) for _, h in sorted(self.core.nb_state().hosts.items())]

    def show_host(self, name, body, params):
        return 200, self._host_json(self._get("hosts", name))

    def join_host(self, body, params):
        f = v.body_fields(body, ["name", "encap_ip", "ovsdb"], ["datapath_type", "of_target"])
        name = v.name(f["name"])
        encap_ip = v.ipv4_address(f["encap_ip"], "encap_ip")
        remote = v.remote(f["ovsdb"], "ovsdb")
        datapath_type = f.get("datapath_type", "system")
        if datapath_type not in ("netdev", "system"):
            raise v.bad("datapath_type", f"{datapath_type!r} is not one of: netdev, system")
        of_target = v.remote(f["of_target"], "of_target") if "of_target" in f else self.core.default_of_target()
        state = self.core.nb_state()
        existing = state.hosts.get(name)
        wanted = (encap_ip, remote, datapath_type, of_target)
        if existing:
            have = (existing.encap_ip, existing.ovsdb_remote, existing.datapath_type, existing.of_target)
            if have != wanted:
                raise ApiError(409, f"name: host {name!r} is already joined with different settings "
                                    f"(encap_ip={existing.encap_ip}, ovsdb={existing.ovsdb_remote}, "
                                    f"datapath_type={existing.datapath_type}); leave it first")
            return 200, self._host_json(existing)  # joining again is a no-op
        for other in state.hosts.values():
            if other.encap_ip == encap_ip:
                raise ApiError(409, f"encap_ip: {encap_ip} is already used by host {other.name!r}")
        self._write(nb.create_host, name, encap_ip, remote, datapath_type, of_target)
        return 201, self._host_json(self.core.nb_state().hosts[name])

    def leave_host(self, name, body, params):
        self._get("hosts", name)
        bound = sorted(p.name for p in self.core.nb_state().ports.values() if p.host == name)
        if bound:
            raise ApiError(409, f"host {name!r} still has ports bound: {', '.join(bound[:5])}"
                                f"{' ...' if len(bound) > 5 else ''}; detach them first")
        try:
            self.core.leave_host(name, force=params.get("force") in ("1", "true", "yes"))
        except RuntimeError as err:
            raise ApiError(409, str(err)) from None
        self._write(nb.delete, "Host", name)
        return 200, {"deleted": name}

    # --- networks -----------------------------------------------------------------------------------
    @staticmethod
    def _network_json(net):
        return {"name": net.name, "vni": net.vni, "cidr": net.cidr, "gateway": net.gateway_ip, "mtu": net.mtu}

    def list_networks(self, body, params):
        return 200, [self._network_json(n) for _, n in sorted(self.core.nb_state().networks.items())]

    def show_network(self, name, body, params):
        return 200, self._network_json(self._get("networks", name))

    def create_network(self, body, params):
        f = v.body_fields(body, ["name", "cidr"], ["vni", "mtu", "gateway"])
        name = v.name(f["name"])
        net = v.ipv4_network(f["cidr"])
        gateway = v.address_in(f.get("gateway", str(net.network_address + 1)), net, "gateway")
        underlay = self.core.config.underlay_mtu
        mtu = v.network_mtu(f.get("mtu", underlay - v.GENEVE_OVERHEAD), underlay)
        state = self.core.nb_state()
        if name in state.networks:
            raise ApiError(409, f"name: network {name!r} already exists")
        taken = {n.vni for n in state.networks.values()}
        if "vni" in f:
            vni = v.integer(f["vni"], "vni", 1, v.MAX_VNI)
            if vni in taken:
                owner = next(n.name for n in state.networks.values() if n.vni == vni)
                raise ApiError(409, f"vni: {vni} is already used by network {owner!r}")
        else:
            vni = next(k for k in range(100, v.MAX_VNI + 1) if k not in taken)
        self._write(nb.create_network, name, vni, str(net), gateway, mtu)
        return 201, self._network_json(self.core.nb_state().networks[name])

    def delete_network(self, name, body, params):
        self._get("networks", name)
        ports = sorted(p.name for p in self.core.nb_state().ports.values() if p.network == name)
        if ports:
            raise ApiError(409, f"network {name!r} still has {len(ports)} port(s) ({', '.join(ports[:5])}"
                                f"{' ...' if len(ports) > 5 else ''}); delete them first")
        self._write(nb.delete, "Network", name)
        return 200, {"deleted": name}

    # --- ports --------------------------------------------------------------------------------------
    def _port_json(self, port):
        return {"name": port.name, "network": port.network, "mac": port.mac, "ip": port.ip, "key": port.key,
                "host": port.host, "up": self.core.port_up(port.name)}

    def list_ports(self, body, params):
        ports = self.core.nb_state().ports.values()
        if "network" in params:
            ports = [p for p in ports if p.network == params["network"]]
        return 200, [self._port_json(p) for p in sorted(ports, key=lambda p: p.name)]

    def show_port(self, name, body, params):
        """`?wait_up=SECONDS` answers as soon as the port is up (or when the time is over): how
        `weft attach` waits for its flows without polling the API."""
        port = self._get("ports", name)
        if "wait_up" in params:
            try:
                timeout = float(params["wait_up"])
            except ValueError:
                raise v.bad("wait_up", f"{params['wait_up']!r} is not a number of seconds") from None
            self.core.wait_port_up(name, min(max(timeout, 0.0), 120.0))
        return 200, self._port_json(port)

    def create_port(self, body, params):
        f = v.body_fields(body, ["name", "network"], ["ip", "mac"])
        name = v.name(f["name"])
        state = self.core.nb_state()
        network = state.networks.get(f["network"])
        if network is None:
            raise ApiError(404, f"network: no network named {f['network']!r}")
        if name in state.ports:
            raise ApiError(409, f"name: port {name!r} already exists (in network {state.ports[name].network!r})")
        net = ipaddress.IPv4Network(network.cidr)
        used = {p.ip for p in state.ports.values() if p.network == network.name}
        if "ip" in f:
            ip = v.address_in(f["ip"], net, "ip", reserved=(network.gateway_ip,))
            if ip in used:
                owner = next(p.name for p in state.ports.values() if p.network == network.name and p.ip == ip)
                raise ApiError(409, f"ip: {ip} is already used by port {owner!r} in network {network.name!r}")
        else:
            ip = next((str(a) for a in net.hosts() if str(a) not in used and str(a) != network.gateway_ip), None)
            if ip is None:
                raise ApiError(409, f"network: {network.name!r} ({network.cidr}) has no free address left")
        macs = {p.mac for p in state.ports.values()}
        if "mac" in f:
            mac = v.mac(f["mac"])
            if mac in macs:
                raise ApiError(409, f"mac: {mac} is already used by another port")
        else:
            mac = _random_mac(macs)
        self._write(nb.create_port, name, network.name, mac, ip)
        return 201, self._port_json(self.core.nb_state().ports[name])

    def delete_port(self, name, body, params):
        self._get("ports", name)
        self._write(nb.delete, "Port", name)
        return 200, {"deleted": name}

    # --- helpers ------------------------------------------------------------------------------------
    def _get(self, kind, name):
        item = getattr(self.core.nb_state(), kind).get(name)
        if item is None:
            raise ApiError(404, f"no {kind[:-1]} named {name!r}")
        return item

    def _write(self, fn, *args):
        if not self.core.nb_connected():
            raise ApiError(503, "the NB database is not connected; try again shortly")
        try:
            return fn(self.core.nb_conn, *args)
        except (TransactionError, LookupError) as err:
            raise ApiError(409, f"the NB database refused the change: {err}") from None


def _parse_body(raw):
    if not raw:
        raise ApiError(400, "a JSON request body is required")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None


def _random_mac(taken):
    """A locally administered unicast MAC (02:...) that no port uses yet."""
    while True:
        mac = "02:" + ":".join(f"{random.randrange(256):02x}" for _ in range(5))
        if mac not in taken:
            return mac
