"""NB contents + where OVS says each port is plugged -> the compiler's input (flows.model.Topology).

Pure and framework-free. `TopologyBuilder` keeps the current topology and the plug claims the hosts'
OVSDBs report, and each `update` replaces only the objects that changed (what the NB replica's
`Changes`, the claims and the next-hop resolver say), so one change costs what it touches.
"""
import json
import logging

from controller import manifests, validate
from flows.model import (Binding, FloatingIpState, GatewayState, HostState, NetworkState, PortState,
                         RouterPortState, RouterState, RouteState, Topology)

LOG = logging.getLogger("weft.topology")


def host_state(host, up=True):
    return HostState(host.name, host.key, host.encap_ip, up)


def network_state(net):
    return NetworkState(net.name, net.vni, net.cidr, net.gateway_ip, net.mtu, tuple(sorted(net.labels.items())))


def port_state(port):
    named = []
    for name, value in sorted(port.named_ports.items()):
        try:
            named.append((name, *validate.named_port_target(value, f"port {port.name} named_ports.{name}")))
        except validate.ApiError as err:  # written past the API: that one name is left out, not the port
            LOG.warning("%s", err.message)
    return PortState(port.name, port.key, port.network, port.mac, port.ip, tuple(sorted(port.labels.items())),
                     tuple(named))


def gateway_state(gateway, next_hop_mac):
    """An NB router's gateway (its columns) as the compiler takes it."""
    return GatewayState(gateway["host"], gateway["mac"], gateway["ip"], int(gateway["prefixlen"]),
                        gateway["next_hop"], next_hop_mac)


def router_state(state, router, next_hop_mac):
    """`next_hop_mac(router name, next hop ip)`: the MAC learned for that next hop, or None."""
    gw = router.gateway
    gateway = gateway_state(gw, next_hop_mac(router.name, gw["next_hop"])) if gw else None
    fips = tuple(FloatingIpState(ip, port) for ip, port in sorted(state.floating_ips.items())
                 if port in state.ports and state.ports[port].network in router.ports)
    return RouterState(router.name, router.key,
                       tuple(RouterPortState(net, mac) for net, mac in sorted(router.ports.items())),
                       tuple(RouteState(cidr, via) for cidr, via in sorted(router.static_routes.items())),
                       gateway, fips)


def stored_manifest(obj):
    """The Manifest of an NB Policy or Service, its stored document parsed again (it was checked on
    the way in), or None if this controller refuses it (written past the API, or by another
    version): that one object is left out and said so, not every switch frozen for it."""
    try:
        return manifests.parse_documents([json.loads(obj.manifest)], obj.network)[0]
    except (ValueError, IndexError) as err:  # ManifestError is a ValueError, as is bad JSON
        LOG.error("%s %s as stored in the NB cannot be used, it is left out: %s",
                  type(obj).__name__.lower(), obj.qualified, err)
        return None


def policy_state(policy):
    """nb.Policy -> flows.policy.PolicyState, or None (see stored_manifest)."""
    manifest = stored_manifest(policy)
    return manifest.obj if manifest and manifest.kind == "NetworkPolicy" else None


def service_state(service):
    """nb.Service -> flows.policy.ServiceState with the key and addresses the controller gave it,
    or None (see stored_manifest)."""
    manifest = stored_manifest(service)
    if manifest is None or manifest.kind != "Service":
        return None
    try:
        return manifest.obj.to_state(service.key, service.cluster_ip, service.load_balancer_ip)
    except ValueError as err:  # its type and its stored addresses disagree
        LOG.error("service %s as stored in the NB cannot be used, it is left out: %s", service.qualified, err)
        return None


def _states(table, names, to_state):
    """(states, names to remove) of the NB objects `names` of `table` ({name: object})."""
    states, gone = [], []
    for name in names:
        state = to_state(table[name]) if name in table else None
        (states.append(state) if state is not None else gone.append(name))
    return states, gone


class TopologyBuilder:
    def __init__(self):
        self.topo = Topology()
        self._claims = {}        # iface-id -> {host: ofport}: normally one host; more when plugged twice
        self._plugged = set()    # iface-ids whose claims changed since the last update
        self._plugged_twice = {}  # iface-id -> (hosts it is plugged on, host it stays bound to)
        self._confirmed = set()  # (host, iface-id) whose ofport vswitchd has assigned
        self._down = set()       # hosts whose switch stopped answering (controller.liveness)
        self._hosts_changed = set()  # hosts that went down or came back since the last update

    def set_host_down(self, host, down):
        """The host's switch stopped answering (or answers again): the other hosts keep no tunnel
        flows to its ports meanwhile (flows.compiler), and get them back by difference."""
        if (host in self._down) != down:
            (self._down.add if down else self._down.discard)(host)
            self._hosts_changed.add(host)

    def plug(self, host, iface_id, ofport, confirmed=True):
        """What a host's OVSDB says: `iface_id` is plugged there at `ofport` (None: no longer);
        `confirmed`: vswitchd has given it that ofport (else it only asked for it)."""
        hosts = self._claims.setdefault(iface_id, {})
        if ofport is None:
            hosts.pop(host, None)
            if not hosts:
                del self._claims[iface_id]
            self._confirmed.discard((host, iface_id))
        else:
            hosts[host] = ofport
            (self._confirmed.add if confirmed else self._confirmed.discard)((host, iface_id))
        self._plugged.add(iface_id)

    def confirmed(self, host, iface_id):
        """Whether vswitchd has given the port on `host` the ofport its flows use (it exists there)."""
        return (host, iface_id) in self._confirmed

    def plugged_on(self, iface_id):
        """The hosts whose OVSDB shows `iface_id` plugged into br-int."""
        return sorted(self._claims.get(iface_id, ()))

    def forget_host(self, host):
        """The host left (or is being set up anew): nothing is plugged there as far as Weft knows."""
        for iface_id in [i for i, hosts in self._claims.items() if host in hosts]:
            self.plug(host, iface_id, None)

    def update(self, state, changes, routers, next_hop_mac, full=False):
        """The topology for the NB `state` after `changes` (nb.Changes), with `routers` (names) also
        rebuilt (their next hop's MAC changed). `full`: rebuild everything and validate it all.
        Raises ValueError (and keeps the current topology) if the result is inconsistent."""
        plugged, self._plugged = self._plugged, set()
        hosts_changed, self._hosts_changed = self._hosts_changed, set()
        if full or changes.everything:
            topo = self._build(state, next_hop_mac)
        else:
            topo = self._replace(state, changes, plugged, hosts_changed, routers, next_hop_mac)
        self.topo = topo
        return topo

    def _build(self, state, next_hop_mac):
        return Topology.build(
            hosts=[host_state(h, h.name not in self._down) for h in state.hosts.values()],
            networks=[network_state(n) for n in state.networks.values()],
            ports=[port_state(p) for p in state.ports.values()],
            bindings=filter(None, (self._binding(state, name) for name in list(self._claims))),
            routers=[router_state(state, r, next_hop_mac) for r in state.routers.values()],
            policies=_states(state.policies, list(state.policies), policy_state)[0],
            services=_states(state.services, list(state.services), service_state)[0])

    def _replace(self, state, changes, plugged, hosts_changed, routers, next_hop_mac):
        port_names = changes.ports | plugged
        host_names = changes.hosts | hosts_changed
        hosts = [host_state(state.hosts[n], n not in self._down) for n in host_names if n in state.hosts]
        networks = [network_state(state.networks[n]) for n in changes.networks if n in state.networks]
        ports, bindings, unbound = [], [], []
        for name in port_names:
            binding = self._binding(state, name)
            if name in state.ports:
                ports.append(port_state(state.ports[name]))
                if binding:
                    bindings.append(binding)
                else:
                    unbound.append(name)
        router_names = changes.routers | routers
        policies, gone_policies = _states(state.policies, changes.policies, policy_state)
        services, gone_services = _states(state.services, changes.services, service_state)
        topo = self.topo.replace(
            hosts=hosts, networks=networks, ports=ports, bindings=bindings,
            routers=[router_state(state, state.routers[n], next_hop_mac) for n in router_names
                     if n in state.routers],
            remove_hosts=[n for n in changes.hosts if n not in state.hosts],
            remove_networks=[n for n in changes.networks if n not in state.networks],
            remove_ports=[n for n in port_names if n not in state.ports],
            remove_bindings=unbound,
            remove_routers=[n for n in router_names if n not in state.routers],
            policies=policies, remove_policies=gone_policies, services=services, remove_services=gone_services)
        topo.validate_delta()
        return topo

    def _binding(self, state, name):
        """Where an NB port is plugged. A port stays where it is bound: a second plug elsewhere (a
        mistaken attach, another tool) must not take a running container's port away from it."""
        hosts = self._claims.get(name)
        port = state.ports.get(name)
        if not hosts or port is None:
            self._plugged_twice.pop(name, None)
            return None
        host = port.host if port.host in hosts else min(hosts)
        if len(hosts) > 1:
            twice = (tuple(sorted(hosts)), host)
            if self._plugged_twice.get(name) != twice:  # said once, not on every pass
                LOG.warning("port %s is plugged on %s; it stays bound to %s", name, ", ".join(twice[0]), host)
            self._plugged_twice[name] = twice
        else:
            self._plugged_twice.pop(name, None)
        return Binding(name, host, hosts[host])
