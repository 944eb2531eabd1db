"""The northbound REST API (/v1), framework-free: `handle(method, path, body)` -> (status, JSON value).

The Ryu app routes every /v1 request here. Each write validates fully before it touches the NB, so a
refused request changes nothing; the database's own constraints back that up against racing writers.
"""
import hashlib
import ipaddress
import json
import random
import urllib.parse

from controller import manifests
from controller import validate as v
from controller.dns import resolver_settings
from controller.manifests import ManifestError
from controller.topology import policy_state, service_state
from controller.validate import ApiError
from flows.compiler import compile_all
from flows.acl import ACL_ZONE_LIMIT
from flows.plan import plan as plan_flows
from ovsdb.idl import OutcomeUnknown, TransactionError, Unavailable
from ovsdb.nb import MAX_SERVICE_KEY, ServicesTaken

VERSION = "0.1.0"
MAX_PLAN_LINES = 200       # ovs-ofctl lines a plan shows per host and kind of change
DEFAULT_PLAN_LINES = 20
STANDBY_UNKNOWN = "this controller is the standby: only the active one knows what the switches acknowledged"
TAKEOVER_WAIT = 3.0        # seconds a write waits for this controller to finish taking over (it holds the lock)
KINDS = {"NetworkPolicy": "Policy", "Service": "Service"}  # manifest kind -> NB table

class NorthboundApi:
    def __init__(self, core):
        self.core = core
        # (method, path pattern (None: a name), handler, query parameters it takes)
        self.routes = [
            ("GET", ("status",), self.status, ()),
            ("GET", ("hosts",), self.list_hosts, ()),
            ("POST", ("hosts",), self.join_host, ()),
            ("GET", ("hosts", None), self.show_host, ()),
            ("DELETE", ("hosts", None), self.leave_host, ("force",)),
            ("GET", ("networks",), self.list_networks, ("selector",)),
            ("POST", ("networks",), self.create_network, ()),
            ("GET", ("networks", None), self.show_network, ()),
            ("DELETE", ("networks", None), self.delete_network, ()),
            ("PUT", ("networks", None, "labels"), self.set_network_labels, ()),
            ("POST", ("networks", None, "external_ids"), self.add_network_external_ids, ()),
            ("DELETE", ("networks", None, "external_ids", None), self.delete_network_external_id, ()),
            ("GET", ("ports",), self.list_ports, ("network", "selector")),
            ("POST", ("ports",), self.create_port, ()),
            ("GET", ("ports", None), self.show_port, ("wait_up",)),
            ("DELETE", ("ports", None), self.delete_port, ("force",)),
            ("PUT", ("ports", None, "external_ids"), self.set_port_external_ids, ()),
            ("PUT", ("ports", None, "labels"), self.set_port_labels, ()),
            ("PUT", ("ports", None, "named_ports"), self.set_port_named_ports, ()),
            ("GET", ("routers",), self.list_routers, ()),
            ("POST", ("routers",), self.create_router, ()),
            ("GET", ("routers", None), self.show_router, ("wait_up",)),
            ("DELETE", ("routers", None), self.delete_router, ()),
            ("POST", ("routers", None, "ports"), self.attach_router, ()),
            ("DELETE", ("routers", None, "ports", None), self.detach_router, ()),
            ("POST", ("routers", None, "routes"), self.add_route, ()),
            ("DELETE", ("routers", None, "routes"), self.delete_route, ("cidr",)),
            ("PUT", ("routers", None, "gateway"), self.set_gateway, ()),
            ("DELETE", ("routers", None, "gateway"), self.clear_gateway, ()),
            ("GET", ("floating-ips",), self.list_floating_ips, ()),
            ("POST", ("floating-ips",), self.create_floating_ip, ()),
            ("DELETE", ("floating-ips", None), self.delete_floating_ip, ()),
            ("GET", ("trace",), self.trace, ("from", "to", "proto", "dport")),
            ("POST", ("apply",), self.apply, ("wait_up",)),
            ("GET", ("policies",), self.list_policies, ("network",)),
            ("GET", ("policies", None, None), self.show_policy, ()),
            ("DELETE", ("policies", None, None), self.delete_policy, ("wait_up",)),
            ("GET", ("services",), self.list_services, ("network",)),
            ("GET", ("services", None, None), self.show_service, ()),
            ("DELETE", ("services", None, None), self.delete_service, ("wait_up",)),
        ]

    def handle(self, method, path, raw_body=b"", query=""):
        """`path` and `query` as WSGI gives them: the request target's bytes, still percent-encoded,
        as a latin-1 string (a plain ASCII string in tests)."""
        try:
            parts = _path_parts(path)
            if parts[:1] != ("v1",):
                raise ApiError(404, f"no such resource {_printable(path)!r} (the API lives under /v1)")
            handler, args, allowed = self._route(method, parts[1:])
            params = _query_params(query, allowed)
            depth = getattr(handler, "body_depth", v.MAX_JSON_DEPTH)
            body = v.parse_json(raw_body, depth) if method in ("POST", "PUT") else None
            if not self.core.nb_loaded():
                raise ApiError(503, "the controller has not loaded the NB database yet; try again shortly",
                               {"retry": True})  # "retry": nothing was done, so trying again (anywhere) is safe
            if (self.core.role != "active" and (method != "GET" or "wait_up" in params)
                    and not self.core.taking_over(TAKEOVER_WAIT)):
                raise self._standby_refusal(method)
            try:
                return handler(*args, body=body, params=params)
            except OutcomeUnknown as err:
                return _outcome_unknown(method, parts[1:], body, err)
        except ApiError as err:
            return err.status, {"error": err.message, **err.details}

    def _route(self, method, parts):
        allowed = []
        for route_method, pattern, handler, params in self.routes:
            if len(pattern) == len(parts) and all(p is None or p == x for p, x in zip(pattern, parts)):
                if route_method == method:
                    return handler, [x for p, x in zip(pattern, parts) if p is None], params
                allowed.append(route_method)
        if allowed:
            raise ApiError(405, f"{method} is not allowed here (allowed: {', '.join(allowed)})")
        raise ApiError(404, f"no such resource {_printable('/v1/' + '/'.join(parts))!r}")

    def _standby_refusal(self, method):
        """Why a standby does not take a write (nor a wait for flows, which only the active knows are
        acknowledged): a 503 naming the active controller and its API, so a client can go there."""
        me, active = self.core.config.name, self.core.active_controller()
        what = "writes" if method != "GET" else "waits for ports or routers to be up"
        if not self.core.nb_connected():  # without the NB no controller here can be active
            return ApiError(503, f"this controller ({me}) is not connected to the NB database, so it cannot be "
                                 "the active one; nothing was done; try again shortly", {"active": None})
        if active is None:
            return ApiError(503, f"this controller ({me}) is the standby and no controller is active right now "
                                 "(one is taking over); nothing was done; try again shortly", {"active": None})
        if active.name == me:
            return ApiError(503, f"this controller ({me}) is taking over as the active one; nothing was done; "
                                 "try again shortly", {"active": None})
        return ApiError(503, f"this controller ({me}) is the standby; send {what} to the active one, "
                             f"{active.name} at {active.api}",
                        {"active": {"name": active.name, "api": active.api, "epoch": active.epoch}})

    # --- status -------------------------------------------------------------------------------------
    def status(self, body, params):
        state = self.core.nb_state()
        me, controllers = self.core.controller_status()
        return 200, {"version": VERSION, "nb": self.core.nb_status(), "controller": me, "controllers": controllers,
                     "hosts": {n: self._host_json(h)["status"] for n, h in sorted(state.hosts.items())},
                     "networks": len(state.networks), "ports": len(state.ports),
                     "ports_up": sum(1 for p in list(state.ports.values()) if self.core.port_up(p.name))
                     if self.core.role == "active" else None,
                     "packet_ins": self.core.packet_ins, **self.core.answers.counters()}

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
        f = v.body_fields(body, {"name": str, "encap_ip": str, "ovsdb": str}, {"datapath_type": str, "of_target": str})
        name = v.name(f["name"])
        encap_ip = v.ipv4_address(f["encap_ip"], "encap_ip")
        remote = v.remote(f["ovsdb"], "ovsdb")
        if remote.startswith("ssl:") and not self.core.ovsdb_tls:
            raise v.bad("ovsdb", f"{remote} is an ssl: remote, and this controller has no certificate to present "
                                 "(start it with --ctl-privkey, --ctl-cert and --ca-certs)")
        datapath_type = f.get("datapath_type", "system")
        if datapath_type not in ("netdev", "system"):
            raise v.bad("datapath_type", f"{v.shown(datapath_type)} is not one of: netdev, system")
        of_target = (",".join(v.remote(t, "of_target") for t in f["of_target"].split(","))
                     if "of_target" in f else self.core.default_of_target())
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
        for other in list(state.hosts.values()):
            if other.encap_ip == encap_ip:
                raise ApiError(409, f"encap_ip: {encap_ip} is already used by host {other.name!r}")
        self._write(self.core.nb.create_host, name, encap_ip, remote, datapath_type, of_target)
        return 201, self._host_json(self.core.nb_state().hosts[name])

    def leave_host(self, name, body, params):
        self._get("hosts", name)
        bound = sorted(self.core.nb_state().ports_on_host.get(name, ()))
        if bound:
            raise ApiError(409, f"host {name!r} still has ports bound: {', '.join(bound[:5])}"
                                f"{' ...' if len(bound) > 5 else ''}; detach them first")
        for router in list(self.core.nb_state().routers.values()):
            if router.gateway.get("host") == name:  # even forced: the gateway would be on no host
                raise ApiError(409, f"host {name!r} carries router {router.name!r}'s gateway; clear it first "
                                    f"(weft router clear-gateway {router.name})")
        try:
            self.core.leave_host(name, force=_flag(params, "force"))
        except RuntimeError as err:
            raise ApiError(409, str(err)) from None
        self._write(self.core.nb.delete, "Host", name)
        return 200, {"deleted": name}

    # --- networks -----------------------------------------------------------------------------------
    def _network_json(self, net):
        return {"name": net.name, "vni": net.vni, "cidr": net.cidr, "gateway": net.gateway_ip, "mtu": net.mtu,
                "ports": len(self.core.nb_state().ports_of_network.get(net.name, ())),
                "external_ids": net.external_ids, "labels": net.labels}

    def list_networks(self, body, params):
        """`?selector=app=web,tier!=db`: only the networks whose labels it selects (what a policy's
        namespaceSelector would pick)."""
        chosen = _selected(params)
        return 200, [self._network_json(n) for _, n in sorted(self.core.nb_state().networks.items())
                     if chosen(n.labels)]

    def show_network(self, name, body, params):
        return 200, self._network_json(self._get("networks", name))

    def create_network(self, body, params):
        f = v.body_fields(body, {"name": str, "cidr": str},
                          {"vni": int, "mtu": int, "gateway": str, "external_ids": dict, "labels": dict})
        name = v.name(f["name"])
        net = v.ipv4_network(f["cidr"])
        gateway = v.address_in(f.get("gateway", str(net.network_address + 1)), net, "gateway")
        services = ipaddress.IPv4Network(self.core.config.service_cidr)
        if net.overlaps(services):  # a port there would be shadowed by a service's cluster IP
            raise ApiError(409, f"cidr: {net} overlaps the service CIDR {services}, where Services' cluster IPs "
                                "come from ([weft] service_cidr)")
        underlay = self.core.config.underlay_mtu
        mtu = v.network_mtu(f.get("mtu", underlay - v.GENEVE_OVERHEAD), underlay)
        vni = v.integer(f["vni"], "vni", 1, v.MAX_VNI) if "vni" in f else None
        external_ids = v.external_ids(f.get("external_ids", {}))
        labels = v.labels(f.get("labels", {}))

        def choose_vni(taken, name_in_use):  # runs inside the NB transaction: see NbReplica.tunnel_keys
            if name_in_use:
                raise ApiError(409, f"name: network {name!r} already exists")
            if vni in taken:
                raise ApiError(409, f"vni: {vni} is already used by {taken[vni]}")
            return vni or _free_key(taken)
        self._write(self.core.nb.create_network, name, choose_vni, str(net), gateway, mtu, external_ids, labels)
        return 201, self._network_json(self.core.nb_state().networks[name])

    def delete_network(self, name, body, params):
        self._get("networks", name)
        router = self.core.nb_state().router_of(name)
        if router:
            raise ApiError(409, f"network {name!r} is attached to router {router.name!r}; "
                                f"detach it first (weft router detach {router.name} {name})")
        ports = sorted(self.core.nb_state().ports_of_network.get(name, ()))
        if ports:
            raise ApiError(409, f"network {name!r} still has {len(ports)} port(s) ({', '.join(ports[:5])}"
                                f"{' ...' if len(ports) > 5 else ''}); delete them first")
        state = self.core.nb_state()
        for kind, what, objects in (("policy", "policies", state.policies_of_network),
                                    ("service", "services", state.services_of_network)):
            names = sorted(q.partition("/")[2] for q in objects.get(name, ()))
            if names:  # a network is a namespace, but Weft does not delete what is in it behind its back
                raise ApiError(409, f"network {name!r} still has {len(names)} {what} ({', '.join(names[:5])}"
                                    f"{' ...' if len(names) > 5 else ''}); delete them first "
                                    f"(weft {kind} delete {name}/{names[0]})")
        self._write(self.core.nb.delete, "Network", name)
        return 200, {"deleted": name}

    # --- ports --------------------------------------------------------------------------------------
    def _port_json(self, port, state=None):
        # The network's addressing rides along: it is what `weft attach` configures in the container.
        net = (state or self.core.nb_state()).networks.get(port.network)
        return {"name": port.name, "network": port.network, "mac": port.mac, "ip": port.ip, "key": port.key,
                "host": port.host, "up": self._known(self.core.port_up, port.name), "external_ids": port.external_ids,
                "labels": port.labels, "named_ports": port.named_ports, "cidr": net and net.cidr,
                "gateway": net and net.gateway_ip, "mtu": net and net.mtu,
                "dns": net and resolver_settings(net.name, net.gateway_ip)}

    def list_ports(self, body, params):
        """`?network=NAME`: that network's ports only; `?selector=app=web,tier!=db`: only the ports
        whose labels it selects (what a policy's podSelector would pick, in every network)."""
        state = self.core.nb_state()
        chosen = _selected(params)
        ports = [p for p in list(state.ports.values()) if chosen(p.labels)]
        if "network" in params:
            ports = [p for p in ports if p.network == params["network"]]
        return 200, [self._port_json(p, state) for p in sorted(ports, key=lambda p: p.name)]

    def show_port(self, name, body, params):
        """`?wait_up=SECONDS` answers as soon as the port is up (or when the time is over): how
        `weft attach` waits for its flows without polling the API."""
        port = self._get("ports", name)
        if "wait_up" in params:
            self.core.wait_port_up(name, v.seconds(params["wait_up"], "wait_up", v.MAX_WAIT))
        return 200, self._port_json(port)

    def create_port(self, body, params):
        f = v.body_fields(body, {"name": str, "network": str},
                          {"ip": str, "mac": str, "external_ids": dict, "labels": dict, "named_ports": dict})
        name = v.name(f["name"])
        state = self.core.nb_state()
        network = state.networks.get(f["network"])
        if network is None:
            raise ApiError(404, f"network: no network named {v.shown(f['network'])}")
        net = ipaddress.IPv4Network(network.cidr)
        ip = v.address_in(f["ip"], net, "ip", reserved=(network.gateway_ip,)) if "ip" in f else None
        mac = v.mac(f["mac"]) if "mac" in f else None
        external_ids = v.external_ids(f.get("external_ids", {}))
        labels = v.labels(f.get("labels", {}))
        named_ports = v.named_ports(f.get("named_ports", {}))

        def choose(taken):  # runs inside the NB transaction: see nb.Nb.create_port
            if taken.port_network(name) is not None:
                raise ApiError(409, f"name: port {name!r} already exists (in network {taken.port_network(name)!r})")
            if ip and taken.ip_owner(ip):
                raise ApiError(409, f"ip: {ip} is already used by port {taken.ip_owner(ip)!r} in network "
                                    f"{network.name!r}")
            if mac and taken.mac_owner(mac):
                raise ApiError(409, f"mac: {mac} is already used by another port or a router")
            free_ip = ip or taken.free_ip()
            if free_ip is None:
                raise ApiError(409, f"network: {network.name!r} ({network.cidr}) has no free address left")
            return free_ip, mac or _port_mac(network.vni, free_ip, taken.mac_owner)

        self._write(self.core.nb.create_port, name, network.name, choose, external_ids, labels, named_ports)
        return 201, self._port_json(self.core.nb_state().ports[name])

    # PUT of a map replaces it whole ({"labels": {}} removes every label). The policies that select a
    # port or a network by its labels follow at once.
    def set_port_external_ids(self, name, body, params):
        """A runtime learns some of its own ids (a container's name) only after the port is up."""
        self._get("ports", name)
        return self._set_map("Port", name, "external_ids", v.external_ids(
            v.body_fields(body, {"external_ids": dict}, {})["external_ids"]))

    def set_port_labels(self, name, body, params):
        self._get("ports", name)
        return self._set_map("Port", name, "labels", v.labels(v.body_fields(body, {"labels": dict}, {})["labels"]))

    def set_port_named_ports(self, name, body, params):
        self._get("ports", name)
        return self._set_map("Port", name, "named_ports", v.named_ports(
            v.body_fields(body, {"named_ports": dict}, {})["named_ports"]))

    def set_network_labels(self, name, body, params):
        self._get("networks", name)
        return self._set_map("Network", name, "labels", v.labels(
            v.body_fields(body, {"labels": dict}, {})["labels"]))

    # Keys of a network's external_ids added (or changed) and removed one by one, leaving the others:
    # writers on several hosts (a runtime's plugin on each) each keep keys of their own, none
    # replacing the map the others wrote.
    def add_network_external_ids(self, name, body, params):
        network = self._get("networks", name)
        added = v.external_ids(v.body_fields(body, {"external_ids": dict}, {})["external_ids"])
        v.external_ids({**network.external_ids, **added})  # how many keys, all told
        for key, value in added.items():
            self._write(self.core.nb.set_map_key, "Network", name, "external_ids", key, value)
        return 200, self._network_json(self.core.nb_state().networks[name])

    def delete_network_external_id(self, name, key, body, params):
        self._get("networks", name)
        v.external_ids({key: ""})  # a key that could be there
        self._write(self.core.nb.set_map_key, "Network", name, "external_ids", key, None)
        return 200, self._network_json(self.core.nb_state().networks[name])

    def _set_map(self, table, name, column, value):
        self._write(self.core.nb.set_map, table, name, column, value)
        state = self.core.nb_state()
        return 200, self._port_json(state.ports[name]) if table == "Port" else \
            self._network_json(state.networks[name])

    def delete_port(self, name, body, params):
        """A port whose interface is still plugged into a br-int is not deleted unless forced: a
        later port of the same name would take over that leftover interface. Forced, it is unplugged
        (through the host's OVSDB) once the delete has committed, so a refused delete changes
        nothing; the container keeps its end of the veth. Its floating IPs go with it, in the same
        NB transaction."""
        self._get("ports", name)
        plugged = self.core.plugged_hosts(name)
        if plugged and not _flag(params, "force"):
            raise ApiError(409, f"port {name!r} is still plugged into br-int on {', '.join(plugged)}; detach it "
                                f"there (weft detach {name}), or delete it with force to unplug it")
        blocked = self.core.unplug_blocked(name)
        if blocked:
            raise ApiError(409, blocked)
        self._write(self.core.nb.delete_port, name)
        try:
            self.core.unplug(name)
        except RuntimeError as err:  # the host went away just now: the delete stands, and says so
            return 200, {"deleted": name, "warning": f"{err}; its interface is left plugged there"}
        return 200, {"deleted": name}

    # --- routers ------------------------------------------------------------------------------------
    def _router_json(self, router):
        state = self.core.nb_state()
        return {"name": router.name, "key": router.key,
                "ports": [{"network": net, "mac": mac, "ip": state.networks[net].gateway_ip,
                           "cidr": state.networks[net].cidr} for net, mac in sorted(router.ports.items())
                          if net in state.networks],
                "routes": [{"cidr": c, "via": via} for c, via in sorted(router.static_routes.items())],
                "gateway": self._gateway_json(router), **self._router_up_json(router)}

    def _router_up_json(self, router):
        if self.core.role != "active":
            return {"up": None, "waiting_for": STANDBY_UNKNOWN}
        waiting_for = self.core.router_waiting_for(router.name)
        return {"up": waiting_for is None, **({"waiting_for": waiting_for} if waiting_for else {})}

    def _known(self, up, name):
        """Whether a port is up, as only the active controller knows (what the switches acknowledged
        to it): None on a standby."""
        return up(name) if self.core.role == "active" else None

    def _gateway_json(self, router):
        if not router.gateway:
            return None
        gw = dict(router.gateway)
        gw["next_hop_mac"] = self.core.next_hop_mac(router.name)
        return gw

    def list_routers(self, body, params):
        return 200, [self._router_json(r) for _, r in sorted(self.core.nb_state().routers.items())]

    def show_router(self, name, body, params):
        """`?wait_up=SECONDS` answers as soon as the router is up (with a gateway: forwarding), or
        when the time is over: how `weft router set-gateway` waits for its gateway."""
        router = self._get("routers", name)
        if "wait_up" in params:
            self.core.wait_router_up(name, v.seconds(params["wait_up"], "wait_up", v.MAX_WAIT))
        return 200, self._router_json(router)

    def create_router(self, body, params):
        f = v.body_fields(body, {"name": str}, {})
        name = v.name(f["name"])
        def choose_key(taken, name_in_use):  # runs inside the NB transaction: see NbReplica.tunnel_keys
            if name_in_use:
                raise ApiError(409, f"name: router {name!r} already exists")
            # A router's key is also its conntrack zone on the gateway host; OVS zones are 16 bits.
            return _free_key(taken, limit=65535)
        self._write(self.core.nb.create_router, name, choose_key)
        return 201, self._router_json(self.core.nb_state().routers[name])

    def delete_router(self, name, body, params):
        router = self._get("routers", name)
        if router.ports or router.gateway:
            what = ", ".join([*(f"network {n}" for n in sorted(router.ports))] +
                             (["its gateway"] if router.gateway else []))
            raise ApiError(409, f"router {name!r} still has {what}; detach them first")
        self._write(self.core.nb.delete, "Router", name)
        return 200, {"deleted": name}

    def attach_router(self, name, body, params):
        router = self._get("routers", name)
        f = v.body_fields(body, {"network": str}, {})
        state = self.core.nb_state()
        network = state.networks.get(f["network"])
        if network is None:
            raise ApiError(404, f"network: no network named {v.shown(f['network'])}")
        owner = state.router_of(network.name)
        if owner:
            raise ApiError(409, f"network: {network.name!r} is already attached to router {owner.name!r}")
        net = ipaddress.IPv4Network(network.cidr)
        for other in router.ports:
            if net.overlaps(ipaddress.IPv4Network(state.networks[other].cidr)):
                raise ApiError(409, f"network: {network.name!r} ({network.cidr}) overlaps {other!r} "
                                    f"({state.networks[other].cidr}), already on router {name!r}")
        mac = router_port_mac(router.key, network.vni)
        owner = state.macs.get(mac)
        if owner:
            raise ApiError(409, f"network: the router port's MAC {mac} is taken by {owner}")
        self._write(self.core.nb.attach_router, name, network.name, mac)
        return 201, self._router_json(self.core.nb_state().routers[name])

    def detach_router(self, name, network, body, params):
        router = self._get("routers", name)
        if network not in router.ports:
            raise ApiError(404, f"network {v.shown(network)} is not attached to router {name!r}")
        vias = sorted(c for c, via in router.static_routes.items()
                      if len(router.ports) > 1 and _on_network(self.core.nb_state(), network, via))
        if vias:
            raise ApiError(409, f"static route(s) {', '.join(vias)} go via {network!r}; delete them first")
        balancers = self._load_balancers([network])
        if balancers:
            raise ApiError(409, f"LoadBalancer service(s) {', '.join(balancers)} of network {network!r} take their "
                                f"address from router {name!r}'s gateway; delete them first")
        self._write(self.core.nb.detach_router, name, network)
        return 200, self._router_json(self.core.nb_state().routers[name])

    def add_route(self, name, body, params):
        router = self._get("routers", name)
        f = v.body_fields(body, {"cidr": str, "via": str}, {})
        cidr = str(v.ipv4_network(f["cidr"], "cidr", max_prefix=32))
        via = v.ipv4_address(f["via"], "via")
        state = self.core.nb_state()
        if not any(_on_network(state, net, via) for net in router.ports):
            raise v.bad("via", f"{via} is on no subnet attached to router {name!r} "
                               f"({', '.join(state.networks[n].cidr for n in sorted(router.ports)) or 'none'})")
        self._write(self.core.nb.set_route, name, cidr, via)
        return 201, self._router_json(self.core.nb_state().routers[name])

    def delete_route(self, name, body, params):
        router = self._get("routers", name)
        if "cidr" not in params:
            raise v.bad("cidr", "is required (?cidr=CIDR)")
        cidr = params["cidr"]
        if cidr not in router.static_routes:
            raise ApiError(404, f"cidr: router {name!r} has no route for {v.shown(cidr)}")
        self._write(self.core.nb.set_route, name, cidr, None)
        return 200, self._router_json(self.core.nb_state().routers[name])

    def set_gateway(self, name, body, params):
        router = self._get("routers", name)
        f = v.body_fields(body, {"host": str, "uplink": str, "ip": str, "next_hop": str}, {})
        state = self.core.nb_state()
        if f["host"] not in state.hosts:
            raise ApiError(404, f"host: no host named {v.shown(f['host'])}")
        uplink = v.interface_name(f["uplink"], "uplink")
        address, prefixlen = v.ipv4_interface(f["ip"], "ip")
        subnet = ipaddress.IPv4Network(f"{address}/{prefixlen}", strict=False)
        next_hop = v.address_in(f["next_hop"], subnet, "next_hop")
        if next_hop == address:
            raise v.bad("next_hop", f"{next_hop} is the gateway's own address")
        for other in list(state.routers.values()):
            if other.name != name and other.gateway.get("ip") == address:
                raise ApiError(409, f"ip: {address} is already router {other.name!r}'s gateway address")
            if other.name != name and other.gateway.get("host") == f["host"]:
                raise ApiError(409, f"host: {f['host']!r} already carries router {other.name!r}'s gateway "
                                    "(one gateway uplink per host)")
        if address in state.floating_ips:
            raise ApiError(409, f"ip: {address} is a floating IP")
        for field, ip in (("ip", address), ("next_hop", next_hop)):
            if ip in state.service_ips:
                raise ApiError(409, f"{field}: {ip} is an address of service {state.service_ips[ip]}")
        outside = [q for q, ip in self._load_balancers(router.ports).items()
                   if ipaddress.IPv4Address(ip) not in subnet]
        if outside:
            raise ApiError(409, f"ip: LoadBalancer service(s) {', '.join(outside)} have addresses outside {subnet}; "
                                "delete them first")
        mac = router.gateway.get("mac") or _random_mac(self.core.nb_state().macs.get)
        self._write(self.core.nb.set_gateway, name, {"host": f["host"], "uplink": uplink, "ip": address,
                                            "prefixlen": str(subnet.prefixlen), "next_hop": next_hop, "mac": mac})
        return 200, self._router_json(self.core.nb_state().routers[name])

    def clear_gateway(self, name, body, params):
        router = self._get("routers", name)
        if not router.gateway:
            raise ApiError(404, f"router {name!r} has no gateway")
        fips = sorted(ip for ip, port in list(self.core.nb_state().floating_ips.items())
                      if self._router_of_port(port) == name)
        if fips:
            raise ApiError(409, f"floating IPs {', '.join(fips)} use router {name!r}'s gateway; delete them first")
        balancers = self._load_balancers(router.ports)
        if balancers:
            raise ApiError(409, f"LoadBalancer service(s) {', '.join(balancers)} use router {name!r}'s gateway; "
                                "delete them first")
        self._write(self.core.nb.set_gateway, name, {})
        return 200, self._router_json(self.core.nb_state().routers[name])

    def _load_balancers(self, networks):
        """{"network/name": load balancer IP} of the LoadBalancer services in `networks`."""
        state = self.core.nb_state()
        return {q: state.services[q].load_balancer_ip for net in sorted(networks)
                for q in sorted(state.services_of_network.get(net, ())) if state.services[q].load_balancer_ip}

    # --- floating IPs -------------------------------------------------------------------------------
    def _router_of_port(self, port_name):
        state = self.core.nb_state()
        port = state.ports.get(port_name)
        router = state.router_of(port.network) if port else None
        return router.name if router else None

    def list_floating_ips(self, body, params):
        return 200, [{"ip": ip, "port": port, "router": self._router_of_port(port)}
                     for ip, port in sorted(self.core.nb_state().floating_ips.items())]

    def create_floating_ip(self, body, params):
        f = v.body_fields(body, {"port": str, "ip": str}, {})
        state = self.core.nb_state()
        port = state.ports.get(f["port"])
        if port is None:
            raise ApiError(404, f"port: no port named {v.shown(f['port'])}")
        router = state.router_of(port.network)
        if router is None or not router.gateway:
            raise ApiError(409, f"port: {port.name!r} is in network {port.network!r}, which is not attached to "
                                "a router with a gateway (weft router set-gateway)")
        gw = router.gateway
        subnet = ipaddress.IPv4Network(f"{gw['ip']}/{gw['prefixlen']}", strict=False)
        ip = v.address_in(f["ip"], subnet, "ip", reserved=(gw["ip"], gw["next_hop"]))
        if ip in state.floating_ips:
            raise ApiError(409, f"ip: {ip} is already the floating IP of port {state.floating_ips[ip]!r}")
        if ip in state.service_ips:
            raise ApiError(409, f"ip: {ip} is already an address of service {state.service_ips[ip]}")
        if port.name in state.floating_ips.values():
            raise ApiError(409, f"port: {port.name!r} already has a floating IP")
        self._write(self.core.nb.create_floating_ip, ip, port.name)
        return 201, {"ip": ip, "port": port.name, "router": router.name}

    def delete_floating_ip(self, ip, body, params):
        if ip not in self.core.nb_state().floating_ips:
            raise ApiError(404, f"no floating IP {v.shown(ip)}")
        self._write(self.core.nb.delete, "Floating_IP", ip)
        return 200, {"deleted": ip}

    # --- policies and services (Kubernetes manifests) -----------------------------------------------
    def apply(self, body, params):
        """NetworkPolicy and Service manifests, created or replaced all together or none of them (one
        NB transaction), as `kubectl apply` does one by one. `?wait_up=SECONDS` answers once they are
        in force (every connected host's flows acknowledged), or when the time is over; "lagging" names
        the hosts not in sync then. `plan`: nothing is written; the answer is the flow difference they
        would make on each host."""
        f = v.body_fields(body, {"documents": list}, {"network": str, "plan": bool, "plan_lines": int})
        lines = v.integer(f.get("plan_lines", DEFAULT_PLAN_LINES), "plan_lines", 0, MAX_PLAN_LINES)
        try:
            parsed = manifests.parse_documents(f["documents"], f.get("network"))
        except ManifestError as err:
            raise _refused(400, err) from None
        if not parsed:
            raise v.bad("documents", "holds no NetworkPolicy or Service (only empty documents)")
        outcome, rows = [], []

        def choose(taken):  # runs inside the NB transaction (see Nb.apply), or alone for a plan
            outcome[:], rows[:] = [], [self._apply_row(m, taken) for m in parsed]
            for m, (action, _) in zip(parsed, rows):
                outcome.append({"kind": m.kind, "network": m.network, "name": m.name, "action": action,
                                **({"warnings": list(m.warnings)} if m.warnings else {})})
            return [row for action, row in rows if action != "unchanged"]
        wait = v.seconds(params["wait_up"], "wait_up", v.MAX_WAIT) if "wait_up" in params else None
        if not f.get("plan"):
            self._write(self.core.nb.apply, choose)
            if wait is None:
                return 200, outcome
            return 200, {"objects": outcome, "lagging": self.core.wait_enforced(wait)}
        choose(ServicesTaken(self.core.nb_state(), {"keys": set(), "ips": {}}))
        policies = [m.obj for m in parsed if m.kind == "NetworkPolicy"]
        services = [m.obj.to_state(row[3]["key"], row[3]["cluster_ip"], row[3]["load_balancer_ip"])
                    for m, (_, row) in zip(parsed, rows) if m.kind == "Service"]
        compiler = self.core.compiler  # the live desired state, and the topology it was compiled from
        after = compile_all(compiler.topo.replace(policies=policies, services=services))
        return 200, {"plan": True, "objects": outcome, **plan_flows(compiler.flows, after, lines)}
    apply.body_depth = manifests.MAX_DEPTH + 2  # a manifest nests deep, inside the body and its list

    def _apply_row(self, m, taken):
        """(what applying manifest `m` does, as kubectl prints it: created, configured or unchanged;
        its NB row (table, network, name, columns))."""
        state = self.core.nb_state()
        if m.network not in state.networks:
            raise _refused(400, m.error("metadata.namespace", f"no network named {v.shown(m.network)} (a "
                                                              "Weft network is the manifest's namespace)"))
        if m.kind == "NetworkPolicy" and state.networks[m.network].vni >= ACL_ZONE_LIMIT:
            raise _refused(400, m.error("metadata.namespace", f"network {m.network}'s VNI "
                                        f"{state.networks[m.network].vni} is its conntrack zone, and zones "
                                        f"from {ACL_ZONE_LIMIT} up are the load balancer's: policies and "
                                        "policies need a network with a smaller VNI"))
        table = KINDS[m.kind]
        qualified = f"{m.network}/{m.name}"
        existing = (state.policies if table == "Policy" else state.services).get(qualified)
        # Stored with its network as its namespace, so the same object applied with or without
        # --network (or metadata.namespace) is the same document.
        doc = {**m.source, "metadata": {**m.source["metadata"], "namespace": m.network}}
        columns = {"manifest": json.dumps(doc, sort_keys=True, separators=(",", ":"))}
        if table == "Service":
            columns.update(self._service_addresses(m, existing, taken))
        have = existing and {c: getattr(existing, c) for c in columns}
        action = "created" if existing is None else "unchanged" if have == columns else "configured"
        return action, (table, m.network, m.name, columns)

    def _service_addresses(self, m, existing, taken):
        """A service's key, cluster IP and load balancer IP: those it has, or those it asks for, or
        the lowest free ones; recorded in `taken` for the services after it."""
        spec, qualified = m.obj, f"{m.network}/{m.name}"

        def owner(ip):  # who else has this address as a cluster or load balancer IP
            who = taken.ip_owner(ip)
            return None if who == qualified else who
        cidr = ipaddress.IPv4Network(self.core.config.service_cidr)
        if spec.cluster_ip:
            if _unusable(ipaddress.IPv4Address(spec.cluster_ip), cidr):
                raise _refused(400, m.error("spec.clusterIP", f"{spec.cluster_ip} is not an address of the "
                                                              f"service CIDR {cidr} ([weft] service_cidr)"))
            if owner(spec.cluster_ip):
                raise _refused(409, m.error("spec.clusterIP", f"{spec.cluster_ip} is already the address of "
                                                              f"service {owner(spec.cluster_ip)}"))
            cluster_ip = spec.cluster_ip
        elif existing:
            cluster_ip = existing.cluster_ip  # a VIP stays, as in Kubernetes (clients may have it cached)
        else:
            cluster_ip = _lowest_free(cidr, owner)
            if cluster_ip is None:
                raise _refused(409, m.error("spec.clusterIP", f"the service CIDR {cidr} has no free address "
                                                              "left ([weft] service_cidr)"))
        load_balancer_ip = self._load_balancer_ip(m, existing, owner) if spec.type == "LoadBalancer" else None
        key = existing.key if existing else taken.lowest_key()
        if key is None:
            raise _refused(409, m.error("metadata.name", f"no free service key left (all {MAX_SERVICE_KEY} are "
                                                         "in use)"))
        taken.pick(qualified, key, [cluster_ip, load_balancer_ip])
        return {"key": key, "cluster_ip": cluster_ip, "load_balancer_ip": load_balancer_ip}

    def _load_balancer_ip(self, m, existing, owner):
        """An address of the gateway's external subnet, of the router the service's network is on:
        never the gateway's own, its next hop, a floating IP, another router's gateway address or
        another service's."""
        state = self.core.nb_state()
        router = state.router_of(m.network)
        if router is None or not router.gateway:
            missing = (f"it is attached to no router (weft router attach ROUTER {m.network})" if router is None
                       else f"its router {router.name!r} has no gateway (weft router set-gateway {router.name} ...)")
            raise _refused(400, m.error("spec.type", f"a LoadBalancer service takes an address of its router's "
                                                     f"gateway, and network {m.network!r}: {missing}"))
        gw = router.gateway
        subnet = ipaddress.IPv4Network(f"{gw['ip']}/{gw['prefixlen']}", strict=False)
        others = {r.gateway[k]: f"router {r.name!r}'s gateway {what}" for r in list(state.routers.values())
                  if r.gateway for k, what in (("ip", "address"), ("next_hop", "next hop"))}

        def in_use(ip):
            if ip in others:
                return others[ip]
            if ip in state.floating_ips:
                return f"the floating IP of port {state.floating_ips[ip]!r}"
            return owner(ip) and f"the address of service {owner(ip)}"
        asked = m.obj.load_balancer_ip
        if asked:
            if _unusable(ipaddress.IPv4Address(asked), subnet):
                raise _refused(400, m.error("spec.loadBalancerIP", f"{asked} is not an address of router "
                                                                   f"{router.name!r}'s external subnet {subnet}"))
            if in_use(asked):
                raise _refused(409, m.error("spec.loadBalancerIP", f"{asked} is already {in_use(asked)}"))
            return asked
        kept = existing and existing.load_balancer_ip
        if kept and not _unusable(ipaddress.IPv4Address(kept), subnet) and not in_use(kept):
            return kept
        address = _lowest_free(subnet, in_use)
        if address is None:
            raise _refused(409, m.error("spec.type", f"router {router.name!r}'s external subnet {subnet} has no "
                                                     "free address left for a load balancer"))
        return address

    def _object(self, table, network, name):
        """The NB Policy or Service network/name, or a 404."""
        state = self.core.nb_state()
        found = (state.policies if table == "Policy" else state.services).get(f"{network}/{name}")
        if found is None:
            raise ApiError(404, f"no {table.lower()} named {v.shown(name)} in network {v.shown(network)}")
        return found

    def _delete_object(self, table, network, name, params):
        """`?wait_up=SECONDS` answers once the flows are gone from every host, as apply's does."""
        wait = v.seconds(params["wait_up"], "wait_up", v.MAX_WAIT) if "wait_up" in params else None
        self._object(table, network, name)
        self._write(self.core.nb.apply, lambda taken: [], [(table, network, name)])
        answer = {"deleted": f"{network}/{name}"}
        if wait is not None:
            answer["lagging"] = self.core.wait_enforced(wait)
        return 200, answer

    def _in_network(self, objects, params):
        """`objects` ({"network/name": obj}) sorted, only `?network=`'s if given."""
        network = params.get("network")
        return [o for _, o in sorted(list(objects.items())) if network is None or o.network == network]

    def _selected_ports(self, network, matches):
        """The ports of `network` (NB values) whose labels `matches`, by name."""
        state = self.core.nb_state()
        return [state.ports[n] for n in sorted(state.ports_of_network.get(network, ())) if n in state.ports
                and matches(state.ports[n].labels)]

    def _policy_json(self, policy, detail=False):
        parsed = policy_state(policy)
        selects = self._selected_ports(policy.network, parsed.pod_selector.matches) if parsed else []
        body = {"name": policy.name, "network": policy.network,
                "pod_selector": selector_text(parsed.pod_selector) if parsed else None,
                "policy_types": [t for t, rules in (("Ingress", parsed and parsed.ingress),
                                                    ("Egress", parsed and parsed.egress)) if rules is not None],
                "selects": [p.name for p in selects] if detail else len(selects)}
        return _with_manifest(body, policy, parsed) if detail else body

    def list_policies(self, body, params):
        return 200, [self._policy_json(p) for p in self._in_network(self.core.nb_state().policies, params)]

    def show_policy(self, network, name, body, params):
        """The manifest as applied, and the ports it selects right now."""
        return 200, self._policy_json(self._object("Policy", network, name), detail=True)

    def delete_policy(self, network, name, body, params):
        return self._delete_object("Policy", network, name, params)

    def _service_json(self, service, detail=False):
        parsed = service_state(service)
        selector = dict(parsed.selector) if parsed else {}
        # Services select by matchLabels; an empty selector selects no backend (as in Kubernetes)
        backends = self._selected_ports(service.network, lambda labels: bool(selector) and all(
            labels.get(k) == value for k, value in selector.items()))
        ports = parsed.ports if parsed else ()
        body = {"name": service.name, "network": service.network, "key": service.key,
                "type": "LoadBalancer" if service.load_balancer_ip else "ClusterIP",
                "cluster_ip": service.cluster_ip, "load_balancer_ip": service.load_balancer_ip,
                "ports": [{"name": p.name, "protocol": p.protocol, "port": p.port, "target_port": p.target_port}
                          for p in ports],
                "selector": selector, "session_affinity": "ClientIP" if parsed and parsed.session_affinity else "None"}
        ready = [self.core.port_up(p.name) for p in backends]
        if not detail:
            return {**body, "backends": len(backends), "ready": sum(ready)}
        body["backends"] = [{"port": p.name, "ip": p.ip, "host": p.host, "ready": up,
                             "targets": {sp.name: _target_port(sp, p) for sp in ports}}
                            for p, up in zip(backends, ready)]
        return _with_manifest(body, service, parsed)

    def list_services(self, body, params):
        return 200, [self._service_json(s) for s in self._in_network(self.core.nb_state().services, params)]

    def show_service(self, network, name, body, params):
        """Its addresses and ports, and the backends it selects right now: ready (port up) or not, and
        the port number each service port reaches on it (a named targetPort resolved; None if that
        backend has no such name)."""
        return 200, self._service_json(self._object("Service", network, name), detail=True)

    def delete_service(self, network, name, body, params):
        return self._delete_object("Service", network, name, params)

    # --- trace --------------------------------------------------------------------------------------
    def trace(self, body, params):
        if "from" not in params or "to" not in params:
            raise ApiError(400, "from and to are required (?from=PORT&to=IP)")
        port = self._get("ports", params["from"])
        dst = v.ipv4_address(params["to"], "to")
        proto = params.get("proto", "icmp")
        if proto not in ("icmp", "tcp", "udp", "sctp"):
            raise v.bad("proto", f"{v.shown(proto)} is not one of: icmp, tcp, udp, sctp")
        dport = v.query_integer(params["dport"], "dport", 1, 65535) if params.get("dport") else None
        try:
            return 200, self.core.trace(port.name, dst, proto, dport)
        except ValueError as err:
            raise ApiError(409, f"cannot trace from {port.name!r}: {err}") from None

    # --- helpers ------------------------------------------------------------------------------------
    def _get(self, kind, name):
        item = getattr(self.core.nb_state(), kind).get(name)
        if item is None:
            raise ApiError(404, f"no {kind[:-1]} named {v.shown(name)}")
        return item

    def _write(self, fn, *args):
        if not self.core.nb_connected():
            raise ApiError(503, "the NB database is not connected; try again shortly", {"retry": True})
        try:
            return fn(*args)
        except OutcomeUnknown:
            raise  # answered by handle(), which knows what the request was about
        except Unavailable as err:
            raise ApiError(503, f"the NB database did not take the change: {err}", {"retry": True}) from None
        except (TransactionError, LookupError) as err:
            raise ApiError(409, f"the NB database refused the change: {err}") from None


_NOUNS = {"hosts": "host", "networks": "network", "ports": "port", "routers": "router", "floating-ips": "floating IP",
          "policies": "policy", "services": "service"}
_DOING = {"POST": "creating", "PUT": "changing", "DELETE": "deleting"}


def _outcome_unknown(method, parts, body, err):
    """The answer to a write the NB may or may not have committed (its answer was lost with the
    connection): 503, what the write was, the name it is about, and where to look before retrying."""
    kind = parts[0]
    if kind == "apply":
        name, what, check = None, "applying the manifests", "GET /v1/policies and GET /v1/services"
    else:
        named = 2 if kind in ("policies", "services") else 1  # a policy's name is NETWORK/NAME
        if len(parts) > named:
            name, sub = "/".join(parts[1:1 + named]), parts[1 + named:]
        else:
            name, sub = (body.get("name") or body.get("ip")) if isinstance(body, dict) else None, ()
        noun = f"{_NOUNS.get(kind, kind)} {name!r}"
        what = f"{_DOING.get(method, method)} {noun}" if not sub else f"{method} {'/'.join(sub)} of {noun}"
        check = "GET " + "/".join(["/v1", kind, *(urllib.parse.quote(p, safe="") for p in str(name).split("/"))])
    return 503, {"error": f"the controller lost its NB connection before the NB answered, so the outcome of {what} "
                          f"is unknown ({err}); check with {check} and retry", "outcome": "unknown", "name": name}


def _free_key(taken, limit=v.MAX_VNI):
    key = next((k for k in range(100, limit + 1) if k not in taken), None)
    if key is None:
        raise ApiError(409, f"no free key left below {limit}")
    return key


def _refused(status, err):
    """A ManifestError as the API answers it: the message, and the document it is about (which the
    CLI turns into the file and document the user wrote)."""
    return ApiError(status, str(err), {"document": err.document} if err.document is not None else None)


def _unusable(ip, subnet):
    """Whether `ip` is not a host address of `subnet`."""
    return ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address)


def _lowest_free(subnet, in_use):
    """The lowest host address of `subnet` that `in_use(ip text)` says is free, or None."""
    first, last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
    return next((str(ipaddress.IPv4Address(n)) for n in range(first, last + 1)
                 if not in_use(str(ipaddress.IPv4Address(n)))), None)


def _with_manifest(body, obj, parsed):
    """A policy's or service's answer with its manifest as applied, and whether it is in use."""
    body["manifest"] = json.loads(obj.manifest)
    if parsed is None:
        body["error"] = "this controller cannot use the manifest as stored (see its log)"
    return body


def _target_port(service_port, port):
    """The number a service port reaches on backend `port` (NB value): its targetPort, or the
    backend's named port of that name and protocol; None if it has none."""
    target = service_port.target_port
    if isinstance(target, int):
        return target
    protocol, _, number = port.named_ports.get(target, "").partition("/")
    return int(number) if protocol == service_port.protocol else None


def selector_text(selector):
    """A flows.policy.Selector as `kubectl get` writes one (what ?selector= reads back)."""
    words = [f"{k}={value}" for k, value in selector.match_labels]
    for r in selector.match_expressions:
        words.append({"In": f"{r.key} in ({','.join(r.values)})", "NotIn": f"{r.key} notin ({','.join(r.values)})",
                      "Exists": r.key, "DoesNotExist": f"!{r.key}"}[r.operator])
    return ",".join(words) or "<none>"


def _selected(params):
    """The `?selector=` of a list, as a test of labels (no selector: everything)."""
    if "selector" not in params:
        return lambda labels: True
    return v.selector(params["selector"]).matches


def _on_network(state, network, ip):
    net = state.networks.get(network)
    return net is not None and ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(net.cidr)


def _path_parts(path):
    """The path's segments, each percent-decoded and valid UTF-8, or a 400 naming the problem."""
    try:
        raw = path.encode("latin-1")
    except UnicodeEncodeError:
        raise ApiError(400, "the request path has characters that are not percent-encoded") from None
    parts = []
    for segment in raw.split(b"/"):
        if segment:
            try:
                parts.append(urllib.parse.unquote_to_bytes(segment).decode("utf-8"))
            except UnicodeDecodeError:
                raise ApiError(400, f"the request path segment {v.shown(segment.decode('latin-1'))} is not valid "
                                    "UTF-8") from None
    return tuple(parts)


def _query_params(query, allowed):
    """The query string as a dict: valid UTF-8, each parameter known to the route and given once."""
    params = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        try:
            key, value = (urllib.parse.unquote_to_bytes(x.replace("+", " ").encode("latin-1")).decode("utf-8")
                          for x in (key, value))
        except (UnicodeEncodeError, UnicodeDecodeError):
            raise ApiError(400, f"the query parameter {item[:40]!r} is not valid UTF-8") from None
        if key not in allowed:
            raise v.bad(key[:40], f"unknown query parameter (this resource takes: {', '.join(allowed) or 'none'})")
        if key in params:
            raise v.bad(key, "is given more than once")
        params[key] = value
    return params


def _printable(text, limit=80):
    return text if len(text) <= limit else text[:limit] + "..."


def _flag(params, name):
    """A yes/no query parameter (absent: no)."""
    value = params.get(name, "false").lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise v.bad(name, f"{value[:20]!r} is not true or false")
    return value in ("1", "true", "yes")


def router_port_mac(router_key, vni):
    """A router leg's MAC, derived from what it joins: detaching and re-attaching a network gives it
    the same MAC back, so containers that cached their gateway's MAC keep working. 0a:... is locally
    administered and never generated for ports (02:...); router keys fit 16 bits, VNIs 24."""
    return "0a:" + ":".join(f"{b:02x}" for b in (router_key.to_bytes(2, "big") + vni.to_bytes(3, "big")))


def _port_mac(vni, ip, in_use):
    """A port's MAC, derived from its network and address: a container given the address of one
    removed just before gets its MAC too, so the peers that still have it in their ARP cache keep
    reaching it (their entry would otherwise send its replies to a MAC gone for up to a minute). As
    Docker's bridge derives a MAC from the IP, and as router_port_mac; random when that one is taken."""
    digest = hashlib.sha256(f"{vni}/{ip}".encode()).digest()
    mac = "02:" + ":".join(f"{b:02x}" for b in digest[:5])
    return _random_mac(in_use) if in_use(mac) else mac


def _random_mac(in_use):
    """A locally administered unicast MAC (02:...) for which `in_use(mac)` is false."""
    while True:
        mac = "02:" + ":".join(f"{random.randrange(256):02x}" for _ in range(5))
        if not in_use(mac):
            return mac
