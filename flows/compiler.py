"""Topology -> desired flows per host, keyed by the cookie of the object that owns them.

L2 overlay, fully proactive: no flooding, no MAC learning, no packet-in.

Who owns which flows (one cookie per object):
  STATIC  (every host)        ARP_RESPONDER: drop ARP requests for unknown IPs, send the rest
                              on to L2_LOOKUP.
  NETWORK (hosts that have a  CLASSIFY: Geneve frames with tun_id=VNI enter the network.
           bound port of it)
  PORT    on its own host     CLASSIFY, 2x PORT_SECURITY, ARP_RESPONDER, L2_LOOKUP, OUTPUT (6)
          on other hosts of   ARP_RESPONDER, L2_LOOKUP to the tunnel (2)
          its network
A network's flows go only to hosts with at least one bound port in it, so tunnels carry its
traffic only there. A port without a binding (or bound to an unknown host, or in an unknown
network) has no flows anywhere.

ARP_RESPONDER sends non-ARP-request traffic straight to L2_LOOKUP, skipping the reserved tables
(ACL_EGRESS .. NAT); the L3 issue will point it at L3_GATE instead.

Scale: a port's remote fragment is the same on every host that does not hold it, so it is built
once per port and the same frozenset is shared by all those hosts (`Compiler._remote`, grouped
per network). `Compiler.update(topo)` recomputes only what a change touches.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from flows.model import (ARP_REPLY, ARP_REQUEST, ETH_TYPE_ARP, ETH_TYPE_IPV4, Binding, Flow,
                         HostState, NetworkState, PortState, Topology)
from flows.pipeline import (ARP_RESPONDER, CLASSIFY, FLAG_FROM_TUNNEL, L2_LOOKUP, OFPP_IN_PORT,
                            OUTPUT, PORT_SECURITY, REG_DATAPATH, REG_FLAGS, REG_INPORT,
                            REG_OUTPORT, STATIC_COOKIE, TUNNEL_OFPORT, Category, make_cookie)

PRIORITY_OBJECT = 100  # a flow for a known port or network
PRIORITY_ARP_UNKNOWN = 50  # ARP request nobody answered
PRIORITY_DEFAULT = 0  # the table's "everything else"

HostFlows = dict[int, frozenset[Flow]]  # cookie -> that object's flows on one host


_PORT_COOKIE = make_cookie(Category.PORT, 0)


def port_cookie(port: PortState) -> int:
    # Hot path: the key range is checked by Topology.validate, so no make_cookie() checks here.
    return _PORT_COOKIE | port.key


def network_cookie(network: NetworkState) -> int:
    return make_cookie(Category.NETWORK, network.key)


# ---------------------------------------------------------------------------------------------
# Fragments: pure functions of frozen values, memoized (bounded, so a long-running controller
# does not keep every port it ever saw).
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def static_flows() -> frozenset[Flow]:
    return frozenset({
        Flow(ARP_RESPONDER.id, PRIORITY_ARP_UNKNOWN,
             (("arp_op", ARP_REQUEST), ("eth_type", ETH_TYPE_ARP)), (), STATIC_COOKIE),
        Flow(ARP_RESPONDER.id, PRIORITY_DEFAULT, (), (("goto", L2_LOOKUP.id),), STATIC_COOKIE),
    })


@lru_cache(maxsize=4096)
def network_flows(network: NetworkState) -> frozenset[Flow]:
    vni = network.key
    return frozenset({
        Flow(CLASSIFY.id, PRIORITY_OBJECT, (("in_port", TUNNEL_OFPORT), ("tunnel_id", vni)),
             (("set_field", REG_DATAPATH, vni), ("set_field", REG_FLAGS, FLAG_FROM_TUNNEL),
              ("goto", L2_LOOKUP.id)),
             network_cookie(network)),
    })


@lru_cache(maxsize=1 << 16)
def _arp_responder(port: PortState, vni: int) -> Flow:
    """The same on every host that has the network: built once, shared."""
    return Flow(
        ARP_RESPONDER.id, PRIORITY_OBJECT,
        (("arp_op", ARP_REQUEST), ("arp_tpa", port.ip), ("eth_type", ETH_TYPE_ARP),
         (REG_DATAPATH, vni)),
        (("move", "eth_src", "eth_dst", 48),
         ("set_field", "eth_src", port.mac),
         ("set_field", "arp_op", ARP_REPLY),
         ("move", "arp_sha", "arp_tha", 48),
         ("set_field", "arp_sha", port.mac),
         ("move", "arp_spa", "arp_tpa", 32),
         ("set_field", "arp_spa", port.ip),
         ("output", OFPP_IN_PORT)),
        port_cookie(port))


@lru_cache(maxsize=1 << 16)
def local_port_flows(port: PortState, vni: int, ofport: int) -> frozenset[Flow]:
    """The port's flows on the host it is plugged into."""
    cookie = port_cookie(port)
    return frozenset({
        Flow(CLASSIFY.id, PRIORITY_OBJECT, (("in_port", ofport),),
             (("set_field", REG_DATAPATH, vni), ("set_field", REG_INPORT, port.key),
              ("goto", PORT_SECURITY.id)),
             cookie),
        Flow(PORT_SECURITY.id, PRIORITY_OBJECT,
             (("eth_src", port.mac), ("eth_type", ETH_TYPE_IPV4), ("ipv4_src", port.ip),
              (REG_INPORT, port.key)),
             (("goto", ARP_RESPONDER.id),), cookie),
        Flow(PORT_SECURITY.id, PRIORITY_OBJECT,
             (("arp_sha", port.mac), ("arp_spa", port.ip), ("eth_src", port.mac),
              ("eth_type", ETH_TYPE_ARP), (REG_INPORT, port.key)),
             (("goto", ARP_RESPONDER.id),), cookie),
        _arp_responder(port, vni),
        Flow(L2_LOOKUP.id, PRIORITY_OBJECT, (("eth_dst", port.mac), (REG_DATAPATH, vni)),
             (("set_field", REG_OUTPORT, port.key), ("goto", OUTPUT.id)), cookie),
        Flow(OUTPUT.id, PRIORITY_OBJECT, ((REG_OUTPORT, port.key),), (("output", ofport),),
             cookie),
    })


@lru_cache(maxsize=1 << 16)
def remote_port_flows(port: PortState, vni: int, encap_ip: str) -> frozenset[Flow]:
    """The port's flows on every other host that has its network: the same on all of them."""
    cookie = port_cookie(port)
    return frozenset({
        _arp_responder(port, vni),
        # Split horizon: a frame that came from a tunnel is never sent into one again.
        Flow(L2_LOOKUP.id, PRIORITY_OBJECT,
             (("eth_dst", port.mac), (REG_FLAGS, (0, FLAG_FROM_TUNNEL)), (REG_DATAPATH, vni)),
             (("set_field", "tun_ipv4_dst", encap_ip), ("set_field", "tunnel_id", vni),
              ("output", TUNNEL_OFPORT)),
             cookie),
    })


# ---------------------------------------------------------------------------------------------
# Compiler: indexes over the topology plus per-host results, updated incrementally.
# ---------------------------------------------------------------------------------------------

class _Placed:
    """A port that has flows: known network, bound to a known host."""
    __slots__ = ("port", "network", "binding", "host", "cookie")

    def __init__(self, port: PortState, network: NetworkState, binding: Binding,
                 host: HostState) -> None:
        self.port, self.network, self.binding, self.host = port, network, binding, host
        self.cookie = port_cookie(port)

    def local(self) -> frozenset[Flow]:
        return local_port_flows(self.port, self.network.key, self.binding.ofport)

    def remote(self) -> frozenset[Flow]:
        return remote_port_flows(self.port, self.network.key, self.host.encap_ip)


def _place(topo: Topology, name: str) -> _Placed | None:
    port = topo.ports.get(name)
    binding = topo.bindings.get(name)
    if port is None or binding is None:
        return None
    network = topo.networks.get(port.network)
    host = topo.hosts.get(binding.host)
    if network is None or host is None:
        return None
    return _Placed(port, network, binding, host)


def _changed_names(old: Mapping, new: Mapping) -> set[str]:
    if old is new:
        return set()
    changed = {name for name in old if name not in new}
    for name, value in new.items():
        before = old.get(name)
        if before is not value and before != value:
            changed.add(name)
    return changed


class Compiler:
    """Keeps the desired flows of every host and updates them when the topology changes.

        compiler = Compiler()
        compiler.update(topo)          # full compile the first time
        changes = compiler.update(topo2)   # {host: {cookie: new flows}}; empty set = remove
        compiler.flows["host1"]        # {cookie: frozenset[Flow]}

    `flows` is the compiler's own state, updated in place by update() (copying every host's
    dict on each change would cost more than the change): read it, copy what you keep.
    """

    def __init__(self) -> None:
        self.topo = Topology()
        self.flows: dict[str, HostFlows] = {}
        self._placed: dict[str, _Placed] = {}  # port name -> placement (ports with flows)
        self._ports_of_network: dict[str, set[str]] = {}  # network name -> port names (all)
        self._ports_on_host: dict[str, set[str]] = {}  # host name -> bound port names (all)
        self._remote: dict[str, dict[int, frozenset[Flow]]] = {}  # network -> remote fragments
        self._host_networks: dict[str, frozenset[str]] = {}  # host -> networks with local ports

    def update(self, topo: Topology) -> dict[str, HostFlows]:
        """Adopt `topo`; return, per host, the cookies whose flows changed and their new flows.

        An empty frozenset means the object no longer has flows on that host. Hosts without
        changes are left out. Cost: an identity scan of the topology plus work proportional to
        what changed (share unchanged objects between topologies, see Topology.replace).
        """
        old = self.topo
        changed_hosts = _changed_names(old.hosts, topo.hosts)
        changed_networks = _changed_names(old.networks, topo.networks)
        changed_ports = (_changed_names(old.ports, topo.ports)
                         | _changed_names(old.bindings, topo.bindings))
        # Ports whose flows depend on a changed network or host (VNI, encap_ip).
        for name in changed_networks:
            changed_ports |= self._ports_of_network.get(name, set())
        for name in changed_hosts:
            changed_ports |= self._ports_on_host.get(name, set())

        old_placed = {name: self._placed.get(name) for name in changed_ports}
        self._reindex(old, topo, changed_ports)
        new_placed = {name: self._placed.get(name) for name in changed_ports}
        self.topo = topo

        # Hosts whose set of networks changes get recompiled whole; the rest patch cookies.
        touched_hosts = set(changed_hosts)
        for placed in (*old_placed.values(), *new_placed.values()):
            if placed is not None:
                touched_hosts.add(placed.binding.host)
        rebuild = set(changed_hosts)
        old_networks = dict(self._host_networks)
        for host in touched_hosts:
            networks = self._networks_of(host)
            if networks != self._host_networks.get(host, frozenset()):
                rebuild.add(host)
            if networks or host in topo.hosts:
                self._host_networks[host] = networks
            else:
                self._host_networks.pop(host, None)

        for host in touched_hosts | set(old.hosts) | set(topo.hosts):
            if changed_networks & (old_networks.get(host, frozenset())
                                   | self._host_networks.get(host, frozenset())):
                rebuild.add(host)

        changes: dict[str, HostFlows] = {}
        for host in sorted(set(old.hosts) | set(topo.hosts)):
            before = self.flows.get(host, {})
            if host not in topo.hosts:
                self.flows.pop(host, None)
                diff = dict.fromkeys(before, frozenset())
            elif host in rebuild:
                after = self.flows[host] = self._compile_host(host)
                diff = dict(after) if not before else {
                    c: after.get(c, frozenset()) for c in before.keys() | after.keys()
                    if before.get(c) != after.get(c)}
            else:
                diff = self._patch_host(host, old_placed, new_placed)
            if diff:
                changes[host] = diff
        return changes

    def _reindex(self, old: Topology, topo: Topology, names: set[str]) -> None:
        # Two passes: take every old entry out before putting new ones in, so a key that moves
        # from one port to another is never deleted after being re-added.
        for name in names:
            port, binding = old.ports.get(name), old.bindings.get(name)
            if port is not None:
                self._ports_of_network[port.network].discard(name)
            if binding is not None:
                self._ports_on_host[binding.host].discard(name)
            placed = self._placed.pop(name, None)
            if placed is not None:
                del self._remote[placed.network.name][placed.cookie]
        for name in names:
            port, binding = topo.ports.get(name), topo.bindings.get(name)
            if port is not None:
                self._ports_of_network.setdefault(port.network, set()).add(name)
            if binding is not None:
                self._ports_on_host.setdefault(binding.host, set()).add(name)
            placed = _place(topo, name)
            if placed is not None:
                self._placed[name] = placed
                self._remote.setdefault(placed.network.name, {})[placed.cookie] = placed.remote()

    def _networks_of(self, host: str) -> frozenset[str]:
        return frozenset(placed.network.name for placed in self._local_ports(host))

    def _local_ports(self, host: str) -> list[_Placed]:
        return [self._placed[name] for name in self._ports_on_host.get(host, ())
                if name in self._placed]

    def _compile_host(self, host: str) -> HostFlows:
        result: HostFlows = {STATIC_COOKIE: static_flows()}
        for name in sorted(self._host_networks.get(host, ())):
            network = self.topo.networks[name]
            result.update(self._remote.get(name, {}))
            result[network_cookie(network)] = network_flows(network)
        for placed in self._local_ports(host):
            result[placed.cookie] = placed.local()
        return result

    def _patch_host(self, host: str, old_placed: dict[str, _Placed | None],
                    new_placed: dict[str, _Placed | None]) -> HostFlows:
        """Replace the flows of changed ports on a host whose networks stay the same."""
        flows = self.flows[host]
        networks = self._host_networks.get(host, frozenset())
        before: HostFlows = {}
        for placed in old_placed.values():
            if placed is not None and placed.cookie in flows:
                before[placed.cookie] = flows.pop(placed.cookie)
        for placed in new_placed.values():
            if placed is None or placed.network.name not in networks:
                continue
            before.setdefault(placed.cookie, flows.get(placed.cookie, frozenset()))
            flows[placed.cookie] = (placed.local() if placed.binding.host == host
                                    else placed.remote())
        return {c: flows.get(c, frozenset()) for c, old in before.items()
                if flows.get(c, frozenset()) != old}


def compile_all(topo: Topology) -> dict[str, HostFlows]:
    """Desired flows of every host: {host: {cookie: frozenset[Flow]}}."""
    compiler = Compiler()
    compiler.update(topo)
    return compiler.flows


def compile_host(topo: Topology, host_name: str) -> HostFlows:
    """Desired flows of one host. A long-running controller keeps a Compiler instead."""
    return compile_all(topo).get(host_name, {})


def changed_objects(old: Mapping[int, frozenset[Flow]], new: Mapping[int, frozenset[Flow]]
                    ) -> set[int]:
    """Cookies whose flows differ between two compile_host results."""
    return {c for c in old.keys() | new.keys() if old.get(c) != new.get(c)}
