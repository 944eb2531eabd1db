"""Weft's controller core: the state machine between the NB, the hosts' OVSDBs and their switches.

Framework-free: the Ryu app (controller/app.py) feeds it OpenFlow events and hands it a `hub`
(spawn/sleep/Semaphore/Event); the same core runs on plain threads in tests.
"""
import logging
import time

from controller.counters import Counters
from controller.flowsync import HostFlowSync
from controller.gateways import NextHops
from controller.hosts import HostAgent
from controller.liveness import PROBE_INTERVAL, Liveness
from controller.metrics import Metrics
from controller.packetin import PacketIns, packet_in_kind
from controller.topology import TopologyBuilder, gateway_state
from flows.compiler import Compiler, port_cookie, router_cookie
from flows.pipeline import HAIRPIN_ZONE, LB_ZONE
from flows.trace import format_trace, trace_to_ip, trace_to_json
from ovsdb.idl import TransactionError
from ovsdb.nb import Nb
from ovsdb.server import EmbeddedNbServer

LOG = logging.getLogger("weft.core")
SWITCH_PROBE_TIMEOUT = 2.0  # seconds a connected switch has to answer when another claims its place
SWITCH_ADMIT_WAIT = 3.0     # seconds a new switch may wait for its host's OVSDB to report its id
FLUSH_AGAIN_AFTER = 1.0     # seconds after a gone backend's flush until the second (_flush_backend)
SWITCH_REPORT_WAIT = 7.0    # seconds it may wait for vswitchd to report its connections (every 5 s)
SWITCH_CLOCK_SLACK = 2.0    # seconds: vswitchd reports whole seconds, and we see them late
ACTIVE_LOCK = "weft_active"  # the NB lock whose holder is the active controller (ovn-northd's way)
ROLE_TIMEOUT = 5.0          # seconds a switch has to answer an OpenFlow role request


class StaleGeneration(RuntimeError):
    """A switch refused a role request: it has seen a newer generation id (a newer epoch)."""


class WeftCore:
    def __init__(self, hub, config):
        self.hub = hub
        self.config = config
        self.embedded = None
        self.nb = None        # ovsdb.nb.Nb: the NB connection and its replica
        self.agents = {}      # host name -> HostAgent
        self.switches = {}    # host name -> its admitted switch (a handle from the app)
        self._admitted_at = {}  # host name -> when its switch was admitted (time.monotonic())
        self.syncs = {}       # host name -> HostFlowSync (while its switch is connected)
        self.compiler = Compiler()
        self.topology = TopologyBuilder()
        self.packet_ins = 0   # proactive forwarding means this stays 0; counted to prove it
        self.counters = Counters()  # what /metrics exports as weft_*_total (controller/counters.py)
        self.metrics = Metrics(self)  # GET /metrics: read from the core at scrape time (controller/metrics.py)
        self._attaching = {}  # port name -> (its cookie, when first seen): ports not yet up, for port-up latency
        # "active" (holds the NB lock, is OpenFlow master of every switch it programs) or "standby".
        # Only the active programs switches and writes their state; it becomes so only once every
        # connected switch has accepted it as master, and stops the moment it loses the lock.
        self.role = "standby"
        self.epoch = 0        # the epoch this controller took the active role in (its role generation id)
        self._role_wake = hub.Event()
        self._claiming = set()  # switches a role request is on its way to
        self._epoch_floor = 0   # a generation id a switch has seen beyond every epoch in the NB
        self.liveness = Liveness(config.host_down_after)  # which hosts' switches answer their probes
        # ...except for what the pipeline sends up on purpose: DNS queries and service rejects.
        self.answers = PacketIns(hub, lambda: self.compiler.topo, config.dns_upstream)
        self.ovsdb_tls = False  # whether this controller has a certificate for ssl: OVSDB remotes
        self.next_hops = NextHops(hub)
        self.topology_error = None  # why the NB's contents cannot be compiled, while they cannot
        self._wake = hub.Event()
        self._applied_event = hub.Event()  # replaced and set on progress: a flow batch acked, a plug confirmed
        self._routers_changed = set()      # routers whose next hop MAC changed since the last pass
        self._full = True                  # next pass rebuilds everything from scratch
        self._backends = frozenset()       # service backends (protocol, address, port) last pass
        self._unflushed = {}               # host -> {gone backend: the cookies its switch must ack first}
        self._passes_started = self._passes_done = 0  # reconcile passes (see wait_enforced)
        self._full_publish = True          # next active pass checks every port's binding in the NB
        self._running = False
        self._stopping = False             # waits answer at once (see stop_waiting)

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self):
        remote = self.config.nb_remote
        if not remote:
            self.embedded = EmbeddedNbServer(self.config.state_dir)
            remote = self.embedded.start()
            LOG.info("embedded NB ovsdb-server on %s (db %s)", remote, self.embedded.db_path)
        self.nb = Nb(self.hub, remote, on_change=self._nb_changed, lock_name=ACTIVE_LOCK).start()
        self._running = True
        self.hub.spawn(self._role_loop)
        self.hub.spawn(self._reconcile_loop)
        self.hub.spawn(self.next_hops.run, lambda: self._running, self._gateways)
        self.hub.spawn(self._liveness_loop)

    def stop_waiting(self):
        """Makes every wait (a port's wait_up, apply's) answer now with the state as it is: the
        controller is stopping and will not see it change."""
        self._stopping = True
        self._progress()

    def stop(self):
        self._running = False
        self._role_wake.set()
        for agent in self.agents.values():
            agent.stop()
        if self.nb:
            self.nb.stop()
        if self.embedded:
            self.embedded.stop()

    # --- reading state ------------------------------------------------------------------------------
    def nb_state(self):
        """The NB replica (ovsdb.nb.NbReplica): live, kept current row by row."""
        return self.nb.replica

    def nb_connected(self):
        return self.nb.connected

    def nb_status(self):
        server = self.nb.conn.server()
        status = {"remote": self.nb.conn.remote, "embedded": self.embedded is not None,
                  "connected": self.nb_connected(), "remotes": self.nb.conn.remote.split(","),
                  "clustered": server["clustered"], "leader": server["remote"] if server["clustered"] else None}
        if self.topology_error:
            status["error"] = f"flows frozen, the NB is inconsistent: {self.topology_error}"
        return status

    def controller_status(self):
        """This controller as GET /v1/status shows it, and every row of the Controller table."""
        me = {"name": self.config.name, "role": self.role, "epoch": self.epoch, "api": self.config.advertised_api}
        return me, {c.name: {"role": c.role, "epoch": c.epoch, "api": c.api}
                    for c in sorted(self.nb_state().controllers.values(), key=lambda c: c.name)}

    def active_controller(self):
        """The Controller row that says it is active (another controller's, on a standby), or None."""
        return next((c for c in list(self.nb_state().controllers.values()) if c.role == "active"), None)

    def default_of_target(self):
        return self.config.of_target or None

    def host_status(self, name):
        agent = self.agents.get(name)
        status = {"ovsdb_connected": bool(agent and agent.ovsdb_connected),
                  "openflow_connected": name in self.switches,
                  "ready": bool(agent and agent.ready),
                  "state": self.liveness.state(name, name in self.switches)}
        silent = self.liveness.silent_for(name, time.monotonic())
        if silent is not None:
            status["last_answer_s"] = round(silent, 1)
        sync = self.syncs.get(name)
        if sync:  # how much flow traffic this switch has needed since it connected
            status["flow_mods"] = sync.flow_mods
            status["flow_batches"] = sync.batches
            status["flows_in_sync"] = sync.in_sync
            status["flow_drift_repairs"] = self.counters.get("drift_repairs", host=name)  # since the start
            if sync.last_full_check is not None:  # when its flows were last compared in full (see flowsync)
                status["flows_checked_s_ago"] = round(time.monotonic() - sync.last_full_check, 1)
        if agent and agent.error:
            status["error"] = agent.error
        return status

    def _acked(self, cookie, on_host=None):
        """Whether every host that needs this object's flows (`on_host` among them, if given) has
        acknowledged them. A host that is down does not count (it gets them by difference when it is
        back), unless it is `on_host`: then the object is not up."""
        needed = [host for host, flows in self.compiler.flows.items()
                  if cookie in flows and (host == on_host or not self.liveness.is_down(host))]
        return (on_host is None or on_host in needed) and all(
            host in self.syncs and self.syncs[host].acked(cookie, self.compiler.flows[host][cookie])
            for host in needed)

    def port_up(self, name):
        """A port is up when it is bound, compiled as the NB has it now, and every host that needs
        flows for it has acknowledged them. (A port deleted and created again under its name, with
        another key or address, is not up on its old flows before the compiler has seen the new one.)"""
        topo = self.compiler.topo
        port, binding, wanted = topo.ports.get(name), topo.bindings.get(name), self.nb_state().ports.get(name)
        return (port is not None and binding is not None and wanted is not None
                and (port.key, port.network, port.mac, port.ip) == (wanted.key, wanted.network, wanted.mac, wanted.ip)
                and self.topology.confirmed(binding.host, name) and self._acked(port_cookie(port), binding.host))

    def router_waiting_for(self, name):
        """None when the router is up: its flows acknowledged by every host that needs them and, with a
        gateway, its next hop resolved (so its gateway forwards). Otherwise, what it is waiting for.
        The gateway must be the NB's as it is now: a wait that comes right after a gateway is set
        must not find the router up on the flows compiled before."""
        router, wanted = self.compiler.topo.routers.get(name), self.nb_state().routers.get(name)
        if router is None or wanted is None:
            return "the controller has not compiled it yet"
        gw, uplink = router.gateway, wanted.gateway.get("uplink")
        agent = self.agents.get(gw.host) if gw else None
        as_wanted = gateway_state(wanted.gateway, gw and gw.next_hop_mac) if wanted.gateway else None
        if gw != as_wanted or (agent is not None and agent.uplink != uplink):
            return "the controller has not compiled its new gateway yet"
        if gw is not None:
            if self.liveness.is_down(gw.host):
                return f"the gateway host {gw.host} is down (its switch does not answer)"
            if gw.host not in self.switches:
                return f"the gateway host {gw.host}'s switch is not connected (see weft host show {gw.host})"
            if agent is None or not agent.uplink_plugged:
                problem = f": {agent.error}" if agent and agent.error else ""
                return (f"the uplink {uplink} is not plugged into {gw.host}'s br-int (does {uplink} exist on "
                        f"{gw.host}?){problem}")
            if gw.next_hop_mac is None:
                return (f"the next hop {gw.next_hop} has not answered ARP on {uplink} of {gw.host} "
                        f"({self.next_hops.unanswered(name)} requests so far; is it up, and on that link?)")
        if not self._acked(router_cookie(router), gw.host if gw else None):
            return "its flows are not yet acknowledged by every host that needs them"
        return None

    def wait_port_up(self, name, timeout):
        """Waits until the port is up; returns whether it is."""
        return self._wait(lambda: self.port_up(name), timeout)

    def wait_router_up(self, name, timeout):
        """Waits until the router is up (see router_waiting_for); returns whether it is."""
        return self._wait(lambda: self.router_waiting_for(name) is None, timeout)

    def wait_enforced(self, timeout):
        """Waits until a reconcile pass that started after this call (and so saw every NB write made
        before it) is done and every connected host's flows are acknowledged equal to what it
        compiled: what `weft apply` waits for. Returns the hosts still not in sync ([] = enforced)."""
        target = self._passes_started + 1
        self._wake.set()

        def lagging():
            return sorted(name for name, sync in self.syncs.items() if not sync.in_sync)
        self._wait(lambda: self._passes_done >= target and not lagging(), timeout)
        return lagging() if self._passes_done >= target else sorted(self.syncs)

    def _wait(self, done, timeout):
        """Waits until done() (checked after each acknowledged flow batch); returns whether it is."""
        deadline = time.monotonic() + timeout
        while True:
            applied = self._applied_event  # taken before the check, so no batch can slip between
            if done():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping:
                return False
            applied.wait(timeout=remaining)

    def packet_in(self, switch, table_id=None, in_port=None, frame=b""):
        """A packet the switch sent up from table `table_id`, in on `in_port`: a DNS query or a
        connection to reject is answered; anything else is counted as data-path traffic."""
        host = self._host_of_switch(switch)
        if host is None:  # what an unadmitted connection sends is not ours
            return
        self.counters.inc("packet_ins", host=host, kind=packet_in_kind(table_id))
        if not self.answers.handle(host, switch, table_id, in_port, frame):
            self.packet_ins += 1

    def arp_reply(self, switch, ip, mac):
        """An ARP reply the gateway flows sent up from an uplink: a next hop's MAC (control plane only)."""
        host = self._host_of_switch(switch)
        for router in list(self.nb_state().routers.values()):
            gw = router.gateway
            if gw and gw["next_hop"] == ip and gw["host"] == host and self.next_hops.learn(router.name, ip, mac):
                self._routers_changed.add(router.name)
                self._wake.set()

    def next_hop_mac(self, router, next_hop=None):
        """The MAC of the router's gateway next hop (`next_hop`, if given; else its current one):
        learned by ARP, or else as stored in the NB's MAC_Binding table, by this controller before a
        restart or by the one active before a failover, so the gateway forwards at once instead of
        dropping until ARP answers. A refresh that learns a different MAC replaces it."""
        if next_hop is None:
            gateway = getattr(self.nb_state().routers.get(router), "gateway", None) or {}
            next_hop = gateway.get("next_hop")
            if next_hop is None:
                return self.next_hops.mac(router)
        stored = self.nb_state().mac_bindings.get(f"{router}/{next_hop}")
        return self.next_hops.mac(router, next_hop) or (stored.mac if stored else None)

    def _gateways(self):
        if not self.nb_connected() or self.role != "active":  # the standby sends no ARP
            return None
        return [(r.name, r.gateway, self.switches.get(r.gateway["host"]))
                for r in list(self.nb_state().routers.values()) if r.gateway]

    def trace(self, port, dst_ip, proto, dport):
        """The offline tracer over the compiled pipeline, as JSON (with a human rendering in "text")."""
        topo = self.compiler.topo
        result = trace_to_ip(topo, port, dst_ip, proto=proto, dport=dport,
                             compiled=self.compiler.flows)  # what the switches are given, not a recompile
        body = trace_to_json(result, topo)
        body["text"] = format_trace(result, topo)
        return body

    # --- events -------------------------------------------------------------------------------------
    def host_changed(self, name):
        self._wake.set()

    def admit_switch(self, switch, dpid, peer, certificate_name=None):
        """Whether an OpenFlow connection is a joined host's br-int: None to admit it, else why not.
        Its datapath id must be the one the host's own OVSDB reports (a random one, given at join);
        over TLS its certificate must name that host. A second connection for a host whose switch is
        connected is refused while the live one answers a barrier: it never displaces or blinds it,
        unless the host's OVSDB shows the live one is not its switch (see _live_is_not_the_switch).
        Runs on its own green thread: it may wait for the host's OVSDB to catch up, and probe."""
        host = self._host_of_datapath(dpid)
        if host is None:
            return (f"datapath id {dpid:016x} is not the br-int of any joined host (as their OVSDBs report "
                    "it)")
        if certificate_name is not None and certificate_name != host:
            return f"its certificate names {certificate_name!r}, not host {host!r}"
        live = self.switches.get(host)
        if live is not None and live is not switch:
            arrived = time.monotonic()
            if live.probe(SWITCH_PROBE_TIMEOUT):
                if not self._live_is_not_the_switch(host, arrived):
                    return f"host {host}'s switch is already connected (and answering)"
                why = "its own OVSDB says its switch connected after the live connection was admitted"
            else:
                why = f"its switch did not answer a barrier in {SWITCH_PROBE_TIMEOUT:.0f} s"
            if self.switches.get(host) is not live:  # another connection took the place meanwhile
                return f"another connection for host {host} was admitted meanwhile"
            LOG.warning("host %s: %s; the new connection from %s takes its place", host, why, peer)
            live.close()
        self.switches[host] = switch
        self._admitted_at[host] = time.monotonic()
        LOG.info("host %s: switch %016x connected from %s", host, dpid, peer)
        self._answered(host)
        self.hub.spawn(self._probe, host, switch)
        if host in self.agents:  # so that it calls back within max_backoff once it loses us
            self.hub.spawn(self.agents[host].settle_controller_settings)
        self._role_wake.set()  # its role first (master or slave), and only then its flows
        self._wake.set()
        return None

    def _live_is_not_the_switch(self, host, arrived):
        """Whether the host's live connection, which answers, is not its switch (an impostor with its
        datapath id that connected while the switch was away): vswitchd, in a report of its
        connections made after the new one arrived, says it has been connected only since later than
        that live one was admitted. A live one that is the switch has been its connection since
        before. Waits for that report (refuses the new one if none comes)."""
        agent, admitted = self.agents.get(host), self._admitted_at.get(host)
        deadline = arrived + SWITCH_REPORT_WAIT
        while agent is not None and admitted is not None and time.monotonic() < deadline:
            since = agent.switch_connected_since(arrived)
            if since != "unknown":
                return since is not None and since > admitted + SWITCH_CLOCK_SLACK
            self.hub.sleep(0.2)
        return False

    def _host_of_datapath(self, dpid, timeout=SWITCH_ADMIT_WAIT):
        """The host whose OVSDB reports this datapath id for br-int. A host that just joined connects
        as soon as its bridge is configured, maybe before its OVSDB's update reached us: wait a bit."""
        deadline = time.monotonic() + timeout
        while True:
            host = next((name for name, agent in list(self.agents.items())
                         if agent.switch_datapath_id == dpid), None)
            if host is not None or time.monotonic() > deadline:
                return host
            self.hub.sleep(0.1)

    def _host_of_switch(self, switch):
        return next((host for host, admitted in self.switches.items() if admitted is switch), None)

    # --- liveness: probes, down and back -----------------------------------------------------------
    def _probe(self, host, switch):
        """Echo requests to the host's admitted switch about every second, for as long as it is the
        host's switch; each answer keeps the host up (or brings it back)."""
        while self._running and self.switches.get(host) is switch:
            sent = time.monotonic()
            if switch.echo(self.config.host_down_after):
                self._answered(host)
            self.hub.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - sent)))

    def _answered(self, host):
        if self.liveness.answered(host, time.monotonic()):
            LOG.warning("host %s: its switch answers again; restoring its ports and the tunnels to it", host)
            self.topology.set_host_down(host, False)
            self._wake.set()

    def _liveness_loop(self):
        """Marks down the hosts whose switch has not answered for longer than the grace period: their
        ports are down, peers drop their tunnel flows to them, and nothing waits for them."""
        while self._running:
            self.hub.sleep(PROBE_INTERVAL / 4)
            now = time.monotonic()
            for host in self.liveness.expired(now):
                silent = self.liveness.silent_for(host, now)
                LOG.warning("host %s is down: its switch has not answered %s (%s); its ports are down and "
                            "the other hosts' tunnels to it are removed until it answers again", host,
                            f"for {silent:.0f} s" if silent is not None else
                            f"since this controller learned of it ({self.liveness.first_grace:.0f} s)",
                            "connected" if host in self.switches else "disconnected")
                self.counters.inc("host_down", host=host)
                self.topology.set_host_down(host, True)
                self._wake.set()

    # --- the active role ----------------------------------------------------------------------------
    def _nb_changed(self, conn):
        """On the NB loop, after each change of its contents or its connection. Losing the lock ends
        the active role here and now: not one more flow-mod goes out once the server says so."""
        if self.role == "active" and not conn.has_lock:
            self._step_down("it lost the NB lock" + ("" if conn.connected else " (the NB connection is down)"))
        self._role_wake.set()
        self._wake.set()

    def _step_down(self, why):
        LOG.warning("controller %s: standby now, %s", self.config.name, why)
        self.role = "standby"
        for sync in list(self.syncs.values()):
            sync.stop()

    def _role_loop(self):
        """Takes the active role when the NB grants this controller the lock; records this controller
        in the Controller table otherwise; keeps every switch told its role."""
        while self._running:
            self._role_wake.wait(timeout=1.0)
            self._role_wake.clear()
            if not (self._running and self.nb_connected() and self.nb.replica.loaded):
                continue
            try:
                if self.nb.conn.has_lock and (self.role == "standby" or self._epoch_floor >= self.epoch):
                    self._take_over()
                elif self.role == "standby":
                    self._record_standby()
                self._claim_switches()
            except TransactionError as err:
                LOG.warning("controller %s: cannot record its role in the NB (retrying): %s", self.config.name, err)
                self.hub.sleep(0.2)
                self._role_wake.set()

    def _take_over(self):
        """The lock is ours: a new epoch in the NB, then OpenFlow master (generation id = the epoch) on
        every switch, and only then flows, by difference (each switch is read first)."""
        started = time.monotonic()
        epoch, previous = self.nb.take_active(self.config.name, self.config.advertised_api, self._epoch_floor)
        if not self.nb.conn.has_lock:  # lost again while the transaction ran: not ours after all
            return
        self.epoch = epoch
        self._claim_switches(wait=True)
        if not self.nb.conn.has_lock:
            return
        self.role = "active"
        if previous not in (None, self.config.name):  # took over from another controller
            self.counters.inc("failovers")
        for agent in list(self.agents.values()):  # what a standby only looked at, now made right
            agent.check_now()
        LOG.warning("controller %s: active (epoch %d%s) after %.0f ms; master of %d switches", self.config.name,
                    epoch, f", after {previous}" if previous else "", (time.monotonic() - started) * 1000,
                    len(self.switches))
        self._wake.set()

    def wait_active(self, timeout):
        """Waits until this controller is the active one (tests and tools that run one alone)."""
        deadline = time.monotonic() + timeout
        while self.role != "active":
            if time.monotonic() > deadline:
                raise TimeoutError(f"controller {self.config.name} did not become active in {timeout:.0f} s")
            self.hub.sleep(0.02)

    def taking_over(self, timeout):
        """Whether this controller is active, or becomes so within `timeout` because the NB lock is
        already its own (it is claiming the switches): a write need not be refused for those ms."""
        deadline = time.monotonic() + timeout
        while self.role != "active" and self.nb.conn.has_lock and time.monotonic() < deadline:
            self.hub.sleep(0.01)
        return self.role == "active"

    def _record_standby(self):
        mine = self.nb_state().controllers.get(self.config.name)
        api = self.config.advertised_api
        if mine is None or (mine.role, mine.api) != ("standby", api):
            self.nb.set_controller(self.config.name, api=api, role="standby")

    def _wanted_role(self):
        """(OpenFlow role, generation id) for every switch: master in our epoch while we are or are
        becoming active, else slave in the active's epoch (a lower one the switch refuses as stale)."""
        if self.nb.conn.has_lock and self.epoch:
            return "master", self.epoch
        return "slave", max((c.epoch for c in list(self.nb_state().controllers.values())), default=0)

    def _claim_switches(self, wait=False):
        """Sends each switch whose role is not the one wanted a role request (all in parallel)."""
        role = self._wanted_role()
        pending = [sw for sw in list(self.switches.values())
                   if getattr(sw, "role", None) != role and sw not in self._claiming]
        done = [self.hub.Event() for _ in pending]
        for switch, event in zip(pending, done):
            self._claiming.add(switch)
            self.hub.spawn(self._claim, switch, role, event)
        if wait:
            for event in done:
                event.wait(ROLE_TIMEOUT + 1)

    def _claim(self, switch, role, done):
        try:
            switch.request_role(*role, timeout=ROLE_TIMEOUT)
        except StaleGeneration as err:
            # The switch saw a newer generation than any epoch in the NB (the NB was made anew, say,
            # while the switch ran on): as the active, take an epoch above it; as the standby, wait
            # for the active to.
            LOG.warning("controller %s: switch %s %s", self.config.name, self._host_of_switch(switch), err)
            if role[0] == "master":
                try:
                    self._epoch_floor = max(self._epoch_floor, switch.generation(ROLE_TIMEOUT))
                except Exception as why:  # gone or slow: the next look retries
                    LOG.warning("controller %s: cannot read the switch's generation: %s", self.config.name, why)
                self._role_wake.set()
        except Exception as err:  # gone, slow, or it refused otherwise: the next look retries
            LOG.warning("controller %s: switch %s did not take role %s (generation %d): %s", self.config.name,
                        self._host_of_switch(switch), role[0], role[1], err)
        finally:
            self._claiming.discard(switch)
            done.set()
            self._wake.set()

    def switch_disconnected(self, switch):
        host = self._host_of_switch(switch)
        if host is not None:
            del self.switches[host]
            self._wake.set()

    def port_plugged(self, host, iface_id, ofport, confirmed=True):
        """A host's OVSDB shows `iface_id` plugged at `ofport` (None: unplugged), `confirmed` once
        vswitchd has given it that ofport."""
        self.topology.plug(host, iface_id, ofport, confirmed)
        self._wake.set()
        self._progress()  # a confirmation can make a port up without any flow changing
        if iface_id in self._attaching:
            self._note_ports_up([iface_id])

    def _progress(self):
        """Wakes whoever waits for a port or router to be up, to look again."""
        applied, self._applied_event = self._applied_event, self.hub.Event()
        applied.set()

    def plugged_hosts(self, port):
        """The hosts whose OVSDB shows the port plugged into br-int."""
        return self.topology.plugged_on(port)

    def unplug_blocked(self, port):
        """Why the port's interface cannot be unplugged now wherever it is plugged, or None."""
        for host in self.plugged_hosts(port):
            agent = self.agents.get(host)
            problem = "Weft has no connection to it" if agent is None else agent.cannot_unplug()
            if problem:
                return f"cannot unplug {port!r} on host {host!r}: {problem}"
        return None

    def unplug(self, port):
        """Unplugs the port's interface wherever it is plugged (RuntimeError if a host is unreachable)."""
        blocked = self.unplug_blocked(port)
        if blocked:
            raise RuntimeError(blocked)
        for host in self.plugged_hosts(port):
            self.agents[host].unplug(port)

    def nb_loaded(self):
        """Whether the NB replica holds the database (the API listens before the core has started)."""
        return self.nb is not None and self.nb.replica.loaded

    def _flows_applied(self, host, cookies):
        for router in list(self.compiler.topo.routers.values()):
            gw = router.gateway
            if gw and gw.host == host and gw.next_hop_mac is None and router_cookie(router) in cookies:
                self.next_hops.ask_now(router.name)  # the flow its answer comes back through is in
        self._progress()
        if host in self._unflushed:
            self._flush_acked(host)
        if self._attaching:
            batch = set(cookies)
            self._note_ports_up([name for name, (cookie, _) in list(self._attaching.items()) if cookie in batch])

    def _watch_attaches(self, old, topo):
        """Starts the port-up clock of the ports this pass sees for the first time, and stops it for
        ports deleted before they came up. A full rebuild (start, after an error) starts none: its
        ports were not created just now; nor does a standby, which brings no port up (the active
        does: a takeover would count every port created meanwhile as just come up)."""
        delta = topo.delta
        if self.role != "active":
            self._attaching.clear()
            return
        if delta is None or delta.parent() is not old:
            for name in [n for n in self._attaching if n not in topo.ports]:
                self._attaching.pop(name, None)
            return
        now = time.monotonic()
        for name in delta.ports:
            port = topo.ports.get(name)
            if port is None:
                self._attaching.pop(name, None)
            elif name not in old.ports:
                self._attaching[name] = (port_cookie(port), now)

    def _note_ports_up(self, names):
        """Of these ports (watched since their creation), those now up: their port-up latency."""
        now = time.monotonic()
        for name in names:
            if self.port_up(name):
                _, since = self._attaching.pop(name, (None, None))
                if since is not None:
                    self.metrics.port_up_seconds.observe(now - since)

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
            self.topology.forget_host(name)
        self._forget_liveness(name)

    def _forget_liveness(self, name):
        self.liveness.forget(name)
        self.topology.set_host_down(name, False)

    # --- reconciliation -----------------------------------------------------------------------------
    def _reconcile_loop(self):
        while self._running:
            self._wake.wait(timeout=5)
            self._wake.clear()
            if not self._running or not self.nb_connected():
                continue
            self._passes_started += 1
            try:
                self._reconcile(self.nb_state())
            except Exception:  # one bad pass must not end the loop that keeps the network running
                LOG.exception("reconciliation failed; rebuilding everything on the next pass")
                self.counters.inc("errors", kind="reconcile")
                self._full = True
                self._wake.set()
                self.hub.sleep(0.5)
            self._passes_done = self._passes_started
            self._progress()

    def _reconcile(self, state):
        """One pass: what changed in the NB, in the hosts' OVSDBs and in the learned next hops, through
        the compiler, to the switches. Each step costs what changed, except after `_full` is set
        (start, an error): then everything is rebuilt from scratch."""
        try:
            topo = self._next_topology(state)
        except ValueError as err:
            # Inconsistent NB contents (say, two racing writes that each passed the API's checks):
            # keep every switch on the last consistent flows rather than compile something wrong.
            if err.args != getattr(self.topology_error, "args", None):
                LOG.error("the NB is inconsistent, flows are frozen until it is fixed: %s", err)
            self.topology_error = err
            self._full = True  # the next pass starts over from the NB as it is then
            if self.role == "active":
                self._publish_host_status(state)
            return
        self.topology_error = None
        old = self.compiler.topo
        flow_changes = self.compiler.update(topo)
        self._watch_attaches(old, topo)
        self.answers.topology_changed()
        self._sync_switches(state, flow_changes)
        if self.role != "active":  # the standby compiles (to take over warm) but writes nothing
            self._full_publish = True
            return
        self._flush_gone_backends(flow_changes)
        self._publish_host_status(state)
        touched = None if topo.delta is None or self._full_publish else topo.delta.ports | topo.delta.bindings
        self._full_publish = False
        self._publish_port_bindings(state, topo, touched)
        if self._attaching and touched:  # a binding can make a port up with flows acked before it
            self._note_ports_up(touched & self._attaching.keys())
        self._publish_mac_bindings(state)

    def _flush_gone_backends(self, flow_changes):
        """A backend that left a service stops getting new connections with the flows just sent;
        its existing ones (DNATed in the LB zone, hairpin ones SNATed too) go from every switch,
        but only once that switch has acknowledged those flows (its barrier answered): a flush
        before it would leave the connections opened meanwhile, still sent to the backend."""
        now = self.compiler.backend_endpoints
        if now is not self._backends:
            gone, self._backends = self._backends - now, now
            for ip_proto, address, port in sorted(gone):
                LOG.info("service backend %s:%d (protocol %d) is gone: flushing its connections",
                         address, port, ip_proto)
            for host in self.compiler.topo.hosts:  # a host not connected now is flushed once it is
                waiting = self._unflushed.setdefault(host, {})
                for backend in gone:
                    waiting[backend] = waiting.get(backend, frozenset()) | frozenset(flow_changes.get(host, ()))
            for host in list(self._unflushed):
                if host not in self.compiler.topo.hosts:
                    del self._unflushed[host]
                    continue
                for backend in self._unflushed[host].keys() & now:  # back in a service: its connections stay
                    del self._unflushed[host][backend]
        for host in list(self._unflushed):
            self._flush_acked(host)

    def _flush_acked(self, host):
        """Flushes from the host's switch the gone backends whose flow changes it has acknowledged
        (at once on a switch that is connected but not programmed by this controller yet)."""
        waiting, switch, sync = self._unflushed.get(host, {}), self.switches.get(host), self.syncs.get(host)
        if switch is None:
            return
        flows = self.compiler.flows.get(host, {})
        for backend, cookies in list(waiting.items()):
            if sync is not None and not all(sync.acked(c, flows.get(c, frozenset())) for c in cookies):
                continue
            if waiting.pop(backend, None) is None:
                continue  # another thread flushed it just now
            self._flush_backend(switch, backend)
            self.hub.spawn(self._flush_backend, switch, backend, FLUSH_AGAIN_AFTER)
        if not waiting:
            self._unflushed.pop(host, None)

    def _flush_backend(self, switch, backend, after=0.0):
        """Flushes one gone backend's connections from a switch, `after` seconds from now: a second
        round a second later takes those that vswitchd's cached datapath flows (megaflows) still sent
        to the backend after the barrier, until its revalidators caught up with the new group."""
        if after:
            self.hub.sleep(after)
        ip_proto, address, port = backend
        for zone in (LB_ZONE, HAIRPIN_ZONE):
            try:
                switch.flush_conntrack(zone, ip_proto, address, port)
            except Exception as err:  # a switch going away: its conntrack goes with it
                LOG.debug("conntrack flush failed: %s", err)

    def _next_topology(self, state):
        """The NB's changes (and the hosts' and next hops') since the last pass, as a new topology."""
        # The replica changes only on the NB loop, which holds this lock meanwhile (on eventlet the
        # pass would not yield anyway; on plain threads, in tests, it must not read mid-update).
        with self.nb.conn.lock:
            changes, full = state.take_changes(), self._full
            self._full = False
            routers, self._routers_changed = self._routers_changed, set()
            routers |= {key.partition("/")[0] for key in changes.mac_bindings}  # a next hop's stored MAC
            if full or changes.everything or changes.hosts or changes.routers:
                self._reconcile_agents(state)
            return self.topology.update(state, changes, routers, self.next_hop_mac, full=full)

    def _reconcile_agents(self, state):
        for name, agent in list(self.agents.items()):
            if name not in state.hosts or state.hosts[name].settings() != agent.host.settings():
                agent.stop()
                del self.agents[name]
                self.topology.forget_host(name)
                if name not in state.hosts:
                    self._forget_liveness(name)
        unnamed = [name for name, host in state.hosts.items() if not host.datapath_id]
        if unnamed and self.role == "active":  # joined before datapath ids were random: give them one
            self.hub.spawn(self.nb.give_datapath_ids, unnamed)
        now = time.monotonic()
        for name, host in state.hosts.items():
            self.liveness.expect(name, now)  # from now on, its switch has the grace period to answer
            if name not in self.agents and host.datapath_id:
                LOG.info("host %s joined: connecting to %s", name, host.ovsdb_remote)
                self.agents[name] = HostAgent(self, host)
        uplinks = {r.gateway["host"]: r.gateway["uplink"] for r in state.routers.values() if r.gateway}
        for name, agent in self.agents.items():
            agent.set_uplink(uplinks.get(name))

    def _sync_switches(self, state, flow_changes):
        # Only the active programs, and only switches that took it as master in its epoch. A host
        # that is down gets nothing meanwhile; when it is back, a new sync reads its switch and sends
        # the difference.
        master = ("master", self.epoch)
        connected = {name: sw for name, sw in self.switches.items()
                     if name in state.hosts and not self.liveness.is_down(name)
                     and self.role == "active" and getattr(sw, "role", None) == master}
        if self.role == "active" and any(getattr(sw, "role", None) != master for sw in self.switches.values()):
            self._role_wake.set()  # a switch not (yet) master: the role loop claims it
        for name, sync in list(self.syncs.items()):
            if connected.get(name) is not sync.switch:
                sync.stop()
                del self.syncs[name]
        for name, switch in connected.items():
            agent = self.agents.get(name)
            if name not in self.syncs and agent and agent.ready:
                self.syncs[name] = HostFlowSync(
                    self.hub, name, switch, self.compiler.flows.get(name, {}), self._flows_applied,
                    counters=self.counters, audit_interval=self.config.flow_audit_interval,
                    full_audit_interval=self.config.flow_full_audit_interval,
                    may_repair=lambda: self.role == "active")
        for name, sync in self.syncs.items():
            # The compiler may have replaced a host's dict (a rebuild): always hand over the current one.
            sync.changed(self.compiler.flows.get(name, {}), flow_changes.get(name, ()))

    def _publish_port_bindings(self, state, topo, names):
        """Records bindings in the NB (for `weft port list` and other controllers): one write for all.
        `names`: the ports whose binding may have changed (None: every port)."""
        changed = {}
        for name in list(state.ports) if names is None else names:
            port, binding = state.ports.get(name), topo.bindings.get(name)
            if port is not None and port.host != (binding.host if binding else None):
                changed[name] = binding.host if binding else None
        if changed:
            try:
                self.nb.set_port_hosts(changed)
            except TransactionError as err:
                self.counters.inc("errors", kind="nb_write")
                LOG.warning("cannot record the bindings of %s: %s", ", ".join(sorted(changed)), err)

    def _publish_host_status(self, state):
        changed = {}
        for name, host in list(state.hosts.items()):
            # What changes with each flow batch (counters, flows_in_sync) is only in the API: writing
            # it would cost two NB transactions per attach and per host, and a reconcile pass each.
            status = {k: str(v).lower() for k, v in self.host_status(name).items()
                      if not k.startswith("flow") and k != "last_answer_s"}
            if host.status != status:
                changed[name] = status
        if changed:
            try:
                self.nb.set_host_statuses(changed)
            except TransactionError as err:
                self.counters.inc("errors", kind="nb_write")
                LOG.warning("cannot record the status of %s: %s", ", ".join(sorted(changed)), err)

    def _publish_mac_bindings(self, state):
        """Keeps the NB's MAC_Binding rows equal to the next hops' MACs learned by ARP: written when a
        MAC is learned or changes (not at each refresh), deleted when the router's gateway or its next
        hop goes. Only the active controller writes; a MAC not yet learned since a start keeps the
        stored one (what the gateway forwards with meanwhile)."""
        if self.role != "active":
            return
        routers = state.routers
        wanted = {}
        for name, (ip, mac, _) in list(self.next_hops.learned.items()):
            gateway = routers[name].gateway if name in routers else {}
            if gateway.get("next_hop") == ip:
                wanted[f"{name}/{ip}"] = (name, ip, mac)
        changes = [(name, ip, mac) for key, (name, ip, mac) in wanted.items()
                   if getattr(state.mac_bindings.get(key), "mac", None) != mac]
        for key, binding in list(state.mac_bindings.items()):
            gateway = routers[binding.router].gateway if binding.router in routers else {}
            if gateway.get("next_hop") != binding.ip:
                changes.append((binding.router, binding.ip, None))
        for router, ip, mac in changes:
            try:
                self.nb.set_mac_binding(router, ip, mac)
            except TransactionError as err:  # tried again on the next pass
                LOG.warning("cannot record the next hop MAC of router %s (%s): %s", router, ip, err)
