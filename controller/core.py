"""Weft's controller core: the state machine between the NB, the hosts' OVSDBs and their switches.

Framework-free: the Ryu app (controller/app.py) feeds it OpenFlow events and hands it a `hub`
(spawn/sleep/Semaphore/Event); the same core runs on plain threads in tests.
"""
import dataclasses
import logging
import os
import time

from controller import validate
from controller.flowsync import HostFlowSync
from flows.compiler import Compiler, port_cookie
from flows.trace import format_trace, trace_to_ip, trace_to_json
from flows.model import (Binding, FloatingIpState, GatewayState, HostState, NetworkState, PortState,
                         RouterPortState, RouterState, RouteState, Topology)
from flows.pipeline import UPLINK_OFPORT
from ovsdb import nb, vswitch
from ovsdb.idl import OvsdbConnection, TransactionError, fetch_schema
from ovsdb.server import EmbeddedNbServer

LOG = logging.getLogger("weft.core")
RECONNECT_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)
NEXT_HOP_RETRY = 1.0      # seconds between ARP requests while a gateway's next hop is unresolved
NEXT_HOP_REFRESH = 30.0   # and between refreshes once resolved


@dataclasses.dataclass
class Config:
    state_dir: str = "/var/lib/weft"
    nb_remote: str = ""          # empty: start the embedded NB ovsdb-server in state_dir
    underlay_mtu: int = 1500     # the smallest MTU of the hosts' underlay links
    of_target: str = ""          # OpenFlow target given to joining hosts that name none (tcp:IP:6653)


def check_config(config):
    """Raises ValueError naming the first bad option."""
    if not 576 + validate.GENEVE_OVERHEAD <= config.underlay_mtu <= 65535:
        raise ValueError(f"[weft] underlay_mtu: {config.underlay_mtu} is out of range "
                         f"({576 + validate.GENEVE_OVERHEAD}..65535)")
    for remote in filter(None, config.nb_remote.split(",")):
        if not validate.REMOTE_RE.match(remote):
            raise ValueError(f"[weft] nb_remote: {remote!r} is not an OVSDB remote (unix:/path, tcp:IP:PORT, "
                             "ssl:IP:PORT; several separated by commas)")
    if config.of_target and not validate.REMOTE_RE.match(config.of_target):
        raise ValueError(f"[weft] of_target: {config.of_target!r} is not an OpenFlow target (tcp:IP:PORT)")
    if not config.nb_remote and not os.path.isabs(config.state_dir):
        raise ValueError(f"[weft] state_dir: {config.state_dir!r} must be an absolute path")


class HostAgent:
    """Keeps one host's OVSDB connection and makes the host ready whenever it is not."""

    def __init__(self, core, host):
        self.core = core
        self.host = host
        self.conn = None
        self.error = None
        self.ready = False
        self.bindings = {}    # iface-id -> ofport, read from the host's own OVSDB
        self.uplink = None    # the gateway uplink interface Weft should plug here, if any
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
            self.conn = OvsdbConnection(self.core.hub, self.host.ovsdb_remote, schema, vswitch.TABLES,
                                        on_change=lambda conn: self._kick.set(), name=self.host.name).start()

    def _run(self):
        self._connect()
        while not self._stopped:
            self._kick.wait(timeout=5)
            self._kick.clear()
            if not self._stopped:
                self._check(self.conn)

    def _check(self, conn):
        if conn.synced:
            args = (self.host.key, self.host.datapath_type, self.host.of_target)
            if not vswitch.is_ready(conn, *args):
                try:
                    vswitch.ensure_host_ready(conn, *args)
                    self.error = None
                except (TransactionError, RuntimeError) as err:
                    self.error = f"cannot configure br-int: {err}"
                    LOG.error("host %s: %s", self.host.name, self.error)
            self.ready = vswitch.is_ready(conn, *args)
            if self.ready:
                self.error = None
                self._check_uplink(conn)
            self.bindings = vswitch.bindings(conn)
        self.core.host_changed(self.host.name)

    def _check_uplink(self, conn):
        if vswitch.current_uplink(conn) == self.uplink:
            return
        try:
            vswitch.ensure_uplink(conn, self.uplink)
        except TransactionError as err:
            self.error = f"cannot plug uplink {self.uplink}: {err}"
            LOG.error("host %s: %s", self.host.name, self.error)

    def set_uplink(self, iface):
        if iface != self.uplink:
            self.uplink = iface
            self._kick.set()

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


class WeftCore:
    def __init__(self, hub, config):
        self.hub = hub
        self.config = config
        self.embedded = None
        self.nb_conn = None
        self.agents = {}      # host name -> HostAgent
        self.switches = {}    # datapath id (== host key) -> switch handle from the app
        self.syncs = {}       # host name -> HostFlowSync (while its switch is connected)
        self.compiler = Compiler()
        self.applied = {}     # host name -> {cookie: flows} acknowledged by the switch's barrier
        self.packet_ins = 0   # proactive forwarding means this stays 0; counted to prove it
        self.next_hops = {}   # router name -> (next hop IP, its MAC, when learned)
        self.topology_error = None  # why the NB's contents cannot be compiled, while they cannot
        self._wake = hub.Event()
        self._applied_event = hub.Event()  # replaced and set after each acknowledged flow batch
        self._nb_cache = (None, None)      # (replica change seqno, its snapshot)
        self._plugged_twice = {}           # iface-id -> (hosts it is plugged on, host it stays bound to)
        self._running = False

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self):
        remote = self.config.nb_remote
        if not remote:
            self.embedded = EmbeddedNbServer(self.config.state_dir)
            remote = self.embedded.start()
            LOG.info("embedded NB ovsdb-server on %s (db %s)", remote, self.embedded.db_path)
        self.nb_conn = OvsdbConnection(self.hub, remote, nb.load_schema(), nb.TABLES,
                                       on_change=lambda conn: self._wake.set(), name="NB").start()
        self._running = True
        self._arp_sent = {}
        self.hub.spawn(self._reconcile_loop)
        self.hub.spawn(self._resolve_next_hops)

    def stop(self):
        self._running = False
        for agent in self.agents.values():
            agent.stop()
        if self.nb_conn:
            self.nb_conn.stop()
        if self.embedded:
            self.embedded.stop()

    # --- reading state ------------------------------------------------------------------------------
    def nb_state(self):
        """The NB's contents, rebuilt only when the replica changed: API handlers and the loops read it
        far more often than it changes, and a rebuild walks every row (half the controller's CPU in
        an attach run before this)."""
        seqno = self.nb_conn.change_seqno  # read first: a change during the rebuild only costs a rebuild
        if self._nb_cache[0] != seqno:
            self._nb_cache = (seqno, nb.snapshot(self.nb_conn))
        return self._nb_cache[1]

    def nb_connected(self):
        return self.nb_conn.synced

    def nb_status(self):
        status = {"remote": self.nb_conn.remote, "embedded": self.embedded is not None,
                  "connected": self.nb_connected()}
        if self.topology_error:
            status["error"] = f"flows frozen, the NB is inconsistent: {self.topology_error}"
        return status

    def default_of_target(self):
        return self.config.of_target or None

    def host_status(self, name):
        agent = self.agents.get(name)
        host = agent.host if agent else None
        status = {"ovsdb_connected": bool(agent and agent.ovsdb_connected),
                  "openflow_connected": bool(host and host.key in self.switches),
                  "ready": bool(agent and agent.ready)}
        sync = self.syncs.get(name)
        if sync:  # how much flow traffic this switch has needed since it connected
            status["flow_mods"] = sync.flow_mods
            status["flow_batches"] = sync.batches
            status["flows_in_sync"] = self.applied.get(name) == self.compiler.flows.get(name, {})
        if agent and agent.error:
            status["error"] = agent.error
        return status

    def port_up(self, name):
        """A port is up when it is bound and every host that needs flows for it has acknowledged them."""
        port = self.compiler.topo.ports.get(name)
        if port is None or name not in self.compiler.topo.bindings:
            return False
        cookie = port_cookie(port)
        needed = [host for host, flows in self.compiler.flows.items() if flows.get(cookie)]
        bound_host = self.compiler.topo.bindings[name].host
        return bound_host in needed and all(
            self.applied.get(host, {}).get(cookie) == self.compiler.flows[host][cookie] for host in needed)

    def wait_port_up(self, name, timeout):
        """Waits until the port is up (woken by each acknowledged flow batch); returns whether it is."""
        deadline = time.monotonic() + timeout
        while True:
            applied = self._applied_event  # taken before the check, so no batch can slip between
            if self.port_up(name):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            applied.wait(timeout=remaining)

    def packet_in(self, dpid):
        self.packet_ins += 1

    def arp_reply(self, dpid, ip, mac):
        """An ARP reply the gateway flows sent up from an uplink: a next hop's MAC (control plane only)."""
        now = time.monotonic()
        for router in self.nb_state().routers.values():
            gw = router.gateway
            host = self.agents.get(gw.get("host"))
            if gw and gw["next_hop"] == ip and host and host.host.key == dpid:
                known = self.next_hops.get(router.name)
                self.next_hops[router.name] = (ip, mac, now)
                if not known or known[:2] != (ip, mac):
                    LOG.info("router %s: next hop %s is at %s", router.name, ip, mac)
                    self._wake.set()

    def next_hop_mac(self, router):
        return self.next_hops.get(router, (None, None, 0))[1]

    def trace(self, port, dst_ip, proto, dport):
        """The offline tracer over the compiled pipeline, as JSON (with a human rendering in "text")."""
        topo = self.compiler.topo
        result = trace_to_ip(topo, port, dst_ip, proto=proto, dport=dport)
        body = trace_to_json(result, topo)
        body["text"] = format_trace(result, topo)
        return body

    def _resolve_next_hops(self):
        """Asks each gateway's next hop for its MAC through the uplink (packet-out), retrying until it
        answers and refreshing after; the reply comes back through a flow to the controller."""
        while self._running:
            self.hub.sleep(0.2)
            if not self.nb_connected():
                continue
            now = time.monotonic()
            for router in self.nb_state().routers.values():
                gw = router.gateway
                agent = self.agents.get(gw.get("host")) if gw else None
                switch = agent and self.switches.get(agent.host.key)
                if not switch:
                    continue
                ip, mac, learned = self.next_hops.get(router.name, (None, None, 0))
                last = self._arp_sent.get(router.name, 0)
                due = NEXT_HOP_RETRY if (ip != gw["next_hop"] or not mac) else NEXT_HOP_REFRESH
                if now - max(last, learned) >= due:
                    self._arp_sent[router.name] = now
                    try:
                        switch.send_arp_request(UPLINK_OFPORT, gw["mac"], gw["ip"], gw["next_hop"])
                    except Exception as err:  # a switch going away mid-send: retried next round
                        LOG.debug("ARP for %s failed: %s", gw["next_hop"], err)

    # --- events -------------------------------------------------------------------------------------
    def host_changed(self, name):
        self._wake.set()

    def switch_connected(self, dpid, switch):
        self.switches[dpid] = switch
        LOG.info("switch %016x connected (host %s)", dpid, self._host_by_key(dpid) or "unknown")
        self._wake.set()

    def switch_disconnected(self, dpid, switch):
        if self.switches.get(dpid) is switch:
            del self.switches[dpid]
            self._wake.set()

    def _flows_applied(self, host, flows):
        self.applied[host] = flows
        applied, self._applied_event = self._applied_event, self.hub.Event()
        applied.set()

    def leave_host(self, name, force=False):
        """Undoes the host's configuration (raises RuntimeError when its OVSDB is unreachable, unless
        forced); the caller then deletes the NB row."""
        agent = self.agents.get(name)
        if agent is None and not force:
            raise RuntimeError(f"host {name!r}: Weft has no OVSDB connection to it yet; retry shortly, "
                               "or leave with force to forget it")
        if agent:
            agent.leave(force=force)
            del self.agents[name]

    # --- reconciliation -----------------------------------------------------------------------------
    def _host_by_key(self, key):
        return next((a.host.name for a in self.agents.values() if a.host.key == key), None)

    def _reconcile_loop(self):
        while self._running:
            self._wake.wait(timeout=5)
            self._wake.clear()
            if not self._running or not self.nb_connected():
                continue
            try:
                self._reconcile(self.nb_state())
            except Exception:  # one bad pass must not end the loop that keeps the network running
                LOG.exception("reconciliation failed; retrying on the next change")

    def _reconcile(self, state):
        for name, agent in list(self.agents.items()):
            if name not in state.hosts or state.hosts[name].settings() != agent.host.settings():
                agent.stop()
                del self.agents[name]
        for name, host in state.hosts.items():
            if name not in self.agents:
                LOG.info("host %s joined: connecting to %s", name, host.ovsdb_remote)
                self.agents[name] = HostAgent(self, host)
        uplinks = {r.gateway["host"]: r.gateway["uplink"] for r in state.routers.values() if r.gateway}
        for name, agent in self.agents.items():
            agent.set_uplink(uplinks.get(name))
        try:
            topo = self._topology(state)
        except ValueError as err:
            # Inconsistent NB contents (say, two racing writes that each passed the API's checks):
            # keep every switch on the last consistent flows rather than compile something wrong.
            if err.args != getattr(self.topology_error, "args", None):
                LOG.error("the NB is inconsistent, flows are frozen until it is fixed: %s", err)
            self.topology_error = err
            self._publish_host_status(state)
            return
        self.topology_error = None
        self.compiler.update(topo)
        self._sync_switches(state)
        self._publish_host_status(state)
        self._publish_port_bindings(state, topo)

    def _topology(self, state):
        """NB state + where OVS says each port is plugged -> the compiler's input."""
        claims = {}  # iface-id -> {host: ofport}: normally one host; more when plugged twice
        for host_name, agent in self.agents.items():
            for iface_id, ofport in agent.bindings.items():
                if iface_id in state.ports:
                    claims.setdefault(iface_id, {})[host_name] = ofport
        bindings, plugged_twice = {}, {}
        for iface_id, hosts in claims.items():
            # A port stays where it is bound: a second plug elsewhere (a mistaken attach, another
            # tool) must not take a running container's port away from it.
            host = state.ports[iface_id].host
            if host not in hosts:
                host = min(hosts)
            if len(hosts) > 1:
                plugged_twice[iface_id] = (tuple(sorted(hosts)), host)
            bindings[iface_id] = Binding(iface_id, host, hosts[host])
        for iface_id, (hosts, host) in plugged_twice.items():  # said once, not on every pass
            if self._plugged_twice.get(iface_id) != (hosts, host):
                LOG.warning("port %s is plugged on %s; it stays bound to %s", iface_id, ", ".join(hosts), host)
        self._plugged_twice = plugged_twice
        return Topology.build(
            hosts=[HostState(h.name, h.key, h.encap_ip) for h in state.hosts.values()],
            networks=[NetworkState(n.name, n.vni, n.cidr, n.gateway_ip, n.mtu) for n in state.networks.values()],
            ports=[PortState(p.name, p.key, p.network, p.mac, p.ip) for p in state.ports.values()],
            bindings=bindings.values(),
            routers=[self._router_state(state, r) for r in state.routers.values()])

    def _router_state(self, state, router):
        gateway = None
        if router.gateway:
            gw = router.gateway
            gateway = GatewayState(gw["host"], gw["mac"], gw["ip"], int(gw["prefixlen"]), gw["next_hop"],
                                   self.next_hop_mac(router.name)
                                   if self.next_hops.get(router.name, (None,))[0] == gw["next_hop"] else None)
        fips = tuple(FloatingIpState(ip, port) for ip, port in sorted(state.floating_ips.items())
                     if port in state.ports and state.ports[port].network in router.ports)
        return RouterState(router.name, router.key,
                           tuple(RouterPortState(net, mac) for net, mac in sorted(router.ports.items())),
                           tuple(RouteState(cidr, via) for cidr, via in sorted(router.static_routes.items())),
                           gateway, fips)

    def _sync_switches(self, state):
        hosts_by_key = {h.key: h.name for h in state.hosts.values()}
        connected = {hosts_by_key[dpid]: sw for dpid, sw in self.switches.items() if dpid in hosts_by_key}
        for name, sync in list(self.syncs.items()):
            if connected.get(name) is not sync.switch:
                sync.stop()
                del self.syncs[name]
                self.applied.pop(name, None)
        for name, switch in connected.items():
            agent = self.agents.get(name)
            if name not in self.syncs and agent and agent.ready:
                self.syncs[name] = HostFlowSync(self.hub, name, switch, self._flows_applied)
            if name in self.syncs:
                self.syncs[name].set_desired(self.compiler.flows.get(name, {}))

    def _publish_port_bindings(self, state, topo):
        """Records bindings in the NB (for `weft port list` and other controllers): one write for all."""
        changed = {}
        for name, port in state.ports.items():
            binding = topo.bindings.get(name)
            if port.host != (binding.host if binding else None):
                changed[name] = binding.host if binding else None
        if changed:
            try:
                nb.set_port_hosts(self.nb_conn, changed)
            except TransactionError as err:
                LOG.warning("cannot record the bindings of %s: %s", ", ".join(sorted(changed)), err)

    def _publish_host_status(self, state):
        changed = {}
        for name, host in state.hosts.items():
            status = {k: str(v).lower() for k, v in self.host_status(name).items() if not k.startswith("flow_")}
            if host.status != status:
                changed[name] = status
        if changed:
            try:
                nb.set_host_statuses(self.nb_conn, changed)
            except TransactionError as err:
                LOG.warning("cannot record the status of %s: %s", ", ".join(sorted(changed)), err)
