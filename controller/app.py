"""The Ryu application: `ryu-manager controller.app`.

This is the only module that imports Ryu. It turns Ryu events into calls on the framework-free
core (controller/core.py), runs the listeners of the REST API (controller/http.py in front of
controller/api.py) and of OpenFlow, and translates the pipeline's flows (flows/) to and from OpenFlow
messages.
"""
import collections
import dataclasses
import errno
import grp
import itertools
import json
import logging
import os
import signal
import socket
import struct
import time

import eventlet
import eventlet.wsgi
from eventlet.green import ssl as green_ssl
from oslo_config.cfg import Error as ConfigError
from ryu import cfg  # ryu.cfg.CONF is the one ryu-manager parses (not oslo's global CONF)
from ryu.base import app_manager
from ryu.controller import controller as ryu_controller  # its ofp-* options, and the listener replaced below
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu.lib.packet import arp, ether_types, ethernet, packet
from ryu.ofproto import nicira_ext  # noqa: F401 (registers the NXM fields: regs, tun_ipv4_dst)
from ryu.ofproto import ofproto_common, ofproto_v1_3

from controller import config as weft_config
from controller.api import NorthboundApi
from controller.config import Config
from controller.core import StaleGeneration, WeftCore
from controller.http import HostCheck, HttpFront, Peer, TokenStore
from ovsdb.idl import use_tls
from flows.model import Meter
from flows.ofctl import to_ofctl
from flows.openflow import (NX_EXPERIMENTER, NXT_CT_FLUSH, ct_flush_body, decode_flow_stats,
                            decode_group_desc, decode_meter_config, encode_entry)

LOG = logging.getLogger("weft.app")

CONF = cfg.CONF
_OPT_TYPES = {str: cfg.StrOpt, int: cfg.IntOpt}
CONF.register_opts([_OPT_TYPES[f.type](f.name, default=f.default, help=f.metadata["help"])
                    for f in dataclasses.fields(Config)], group="weft")
# Ryu's own listeners bind every address by default. Weft's API is on a unix socket unless
# --wsapi-port asks for TCP too (then on loopback unless --wsapi-host says otherwise), and OpenFlow
# listens on loopback unless --ofp-listen-host says otherwise: both can change the network.
CONF.set_default("wsapi_host", "127.0.0.1")
CONF.set_default("wsapi_port", None)
CONF.set_default("ofp_listen_host", "127.0.0.1")

API_SOCKET_TIMEOUT = 30      # seconds a client may take for each part of its request
API_KEEPALIVE_IDLE = 30      # seconds an idle keep-alive connection stays open
MAX_CONNECTIONS_PER_PEER = 512
SHUTDOWN_GRACE = 5.0         # seconds API requests in flight at SIGTERM have to finish and answer
CT_FLUSH_REPEATS = 16       # NXT_CT_FLUSH messages per flush (see OpenFlowSwitch.flush_conntrack)
OVS_INTERNAL_TABLE = 254    # OVS's own table (its recirculation and controller-action flows, cookie 0)


def _config_from_conf():
    """The [weft] options and the controller's TLS files, checked: a bad value stops the controller
    with a message naming it."""
    try:
        config = Config(**{f.name: getattr(CONF.weft, f.name) for f in dataclasses.fields(Config)})
        weft_config.check(config)
        tls = _tls_files()
        if any(r.startswith("ssl:") for r in config.nb_remote.split(",")) and not tls:
            raise ValueError("[weft] nb_remote: an ssl: remote needs the controller's certificate "
                             "(--ctl-privkey, --ctl-cert, --ca-certs)")
    except (ValueError, ConfigError) as err:
        raise SystemExit(f"weft: bad configuration: {err}") from None
    return config, tls


def _tls_files():
    """(key, certificate, CA) given with --ctl-privkey/--ctl-cert/--ca-certs, or None. They are the
    controller's one identity: towards switches (OpenFlow over TLS) and towards ssl: OVSDB remotes."""
    files = (CONF.ctl_privkey, CONF.ctl_cert, CONF.ca_certs)
    if not any(files):
        return None
    if not all(files):
        raise ValueError("--ctl-privkey, --ctl-cert and --ca-certs go together: Weft identifies each switch "
                         "by its certificate, so it needs the CA that signs them")
    for path in files:
        if not os.path.isfile(path):
            raise ValueError(f"no file {path!r} (given with --ctl-privkey, --ctl-cert or --ca-certs)")
    return files


class WeftApp(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config, tls = _config_from_conf()
        self.core = WeftCore(hub, config)
        if tls:
            use_tls(*tls)
            self.core.ovsdb_tls = True
        self.api_servers = ApiServers(config, NorthboundApi(self.core))
        self.core.start()
        self.switches = {}  # Ryu datapath -> OpenFlowSwitch
        signal.signal(signal.SIGTERM, self._terminate)

    def _terminate(self, signum, frame):
        # Signal handlers run on eventlet's hub, where nothing may block: stop from a green thread.
        hub.spawn(self._shutdown)

    def _shutdown(self):
        """Stops without an answer that lies: no new API connection or request is taken (503 "shutting
        down" on open connections), requests in flight finish and answer (a write commits or fails
        definitely, or is reported of unknown outcome; waits answer at once with the state as it is),
        then the core stops. Bounded: the process ends within SHUTDOWN_GRACE + 3 s whatever happens."""
        LOG.info("SIGTERM: refusing new API requests, finishing the %d in flight, then stopping",
                 self.api_servers.front.requests_in_flight())
        hub.spawn_after(SHUTDOWN_GRACE + 3, os._exit, 0)
        self.api_servers.drain(SHUTDOWN_GRACE, self.core.stop_waiting)
        self.core.stop()
        self.api_servers.drain(1.0)  # the answers of writes the NB's stop cut short (Unavailable, unknown)
        os._exit(0)

    def stop(self):
        self.api_servers.close()
        self.core.stop()
        super().stop()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev):
        switch = OpenFlowSwitch(ev.msg.datapath)
        self.switches[ev.msg.datapath] = switch
        # Admission may wait (for the host's OVSDB, for a probe of a live switch): never on the event
        # loop, which must go on delivering the very replies it would wait for.
        hub.spawn(self._admit, switch, ev.msg.datapath_id)

    def _admit(self, switch, dpid):
        datapath = switch.datapath
        peer = ":".join(map(str, datapath.address)) if isinstance(datapath.address, tuple) else str(datapath.address)
        refusal = self.core.admit_switch(switch, dpid, peer, _certificate_name(datapath.socket))
        if refusal:
            LOG.warning("refused the OpenFlow connection from %s claiming datapath id %016x: %s", peer, dpid,
                        refusal)
            switch.close()

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev):
        switch = self.switches.pop(ev.datapath, None) if ev.state == DEAD_DISPATCHER else None
        if switch:
            switch.closed()
            self.core.switch_disconnected(switch)

    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPGroupDescStatsReply,
                 ofp_event.EventOFPMeterConfigStatsReply, ofp_event.EventOFPTableStatsReply], MAIN_DISPATCHER)
    def _stats_reply(self, ev):
        self._reply(ev, done=not ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE)

    # The ONF bundle extension's replies (open, commit) are experimenter messages Ryu parses into
    # ONFBundleCtrlMsg.
    @set_ev_cls([ofp_event.EventOFPBarrierReply, ofp_event.EventONFBundleCtrlMsg, ofp_event.EventOFPRoleReply],
                MAIN_DISPATCHER)
    def _barrier_reply(self, ev):
        self._reply(ev, done=True)

    @set_ev_cls(ofp_event.EventOFPEchoReply, MAIN_DISPATCHER)
    def _echo_reply(self, ev):  # the core's liveness probes (OpenFlowSwitch.echo)
        self._reply(ev, done=True)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev):
        switch = self.switches.get(ev.msg.datapath)
        LOG.error("switch %s refused a message (xid %s): type %s code %s", ev.msg.datapath.id, ev.msg.xid,
                  ev.msg.type, ev.msg.code)
        if switch:
            switch.refused(ev.msg.xid, ev.msg.type, ev.msg.code)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        # Forwarding is proactive: the only packets sent up are a gateway next hop's ARP replies,
        # and the DNS queries and service rejects the core answers (controller/packetin.py).
        # Anything else is counted, so tests and operators can see the data path stays in OVS.
        msg, arp_reply = ev.msg, None
        if msg.data[12:14] == b"\x08\x06":
            try:
                arp_reply = packet.Packet(msg.data).get_protocol(arp.arp)
            except Exception:  # a malformed frame must not take the handler down with it
                pass
        switch = self.switches.get(msg.datapath)
        if arp_reply and arp_reply.opcode == arp.ARP_REPLY:
            self.core.arp_reply(switch, arp_reply.src_ip, arp_reply.src_mac)
        else:
            self.core.packet_in(switch, msg.table_id, msg.match.get("in_port"), bytes(msg.data))

    def _reply(self, ev, done):
        switch = self.switches.get(ev.msg.datapath)
        if switch:
            switch.reply(ev.msg, done)


class SwitchGone(ConnectionError):
    pass


_BUNDLE_IDS = itertools.count(1)


class OpenFlowSwitch:
    """One connected br-int, as the core sees it: read its flows, send a difference, wait for it."""

    def __init__(self, datapath):
        self.datapath = datapath
        self.ofp = datapath.ofproto
        self.parser = datapath.ofproto_parser
        self.errors = []
        self._waiting = {}  # xid -> (event, replies)
        self._alive = True
        self.role = None    # (role, generation id) the switch last accepted from us (request_role)

    def _request(self, msg, timeout=10.0):
        if not self._alive:
            raise SwitchGone(f"switch {self.datapath.id:016x} disconnected")
        self.datapath.set_xid(msg)
        event, replies = hub.Event(), []
        self._waiting[msg.xid] = (event, replies)
        try:
            self.datapath.send_msg(msg)
            event.wait(timeout)
            if not self._alive:
                raise SwitchGone(f"switch {self.datapath.id:016x} disconnected")
            if not event.is_set():
                raise TimeoutError(f"switch {self.datapath.id:016x} did not answer within {timeout:.0f} s")
        finally:
            self._waiting.pop(msg.xid, None)
        return replies

    def reply(self, msg, done):
        waiter = self._waiting.get(msg.xid)
        if waiter:
            waiter[1].append(msg)
            if done:
                waiter[0].set()

    def closed(self):
        self._alive = False
        for event, _ in list(self._waiting.values()):
            event.set()

    def close(self):
        """Ends the connection from our side, whatever the peer does (Ryu's own close() only stops
        sending and waits for the peer to hang up, which an impostor need not do)."""
        try:
            self.datapath.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def probe(self, timeout):
        """Whether the switch answers a barrier within `timeout` seconds."""
        try:
            self._request(self.parser.OFPBarrierRequest(self.datapath), timeout)
            return True
        except (SwitchGone, TimeoutError):
            return False

    def request_role(self, role, generation, timeout=5.0):
        """Makes this connection the switch's OpenFlow "master" or "slave" (which may not modify it and
        gets no packet-ins), with `generation` (the controller's epoch): the switch refuses a master or
        slave request with an older generation than it has seen, and demotes any other master."""
        ofp = self.ofp
        code = {"master": ofp.OFPCR_ROLE_MASTER, "slave": ofp.OFPCR_ROLE_SLAVE}[role]
        request = self.parser.OFPRoleRequest(self.datapath, code, generation)
        if not self._request(request, timeout):  # refused: an error message for its xid woke us
            _, err_type, err_code = next(e for e in self.errors if e[0] == request.xid)
            if (err_type, err_code) == (ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE):
                raise StaleGeneration(f"refused generation {generation}: the switch has seen a newer one")
            raise RuntimeError(f"refused: error type {err_type} code {err_code}")
        self.role = (role, generation)

    def generation(self, timeout=5.0):
        """The newest role generation id the switch has seen (0: none), asked without changing anything."""
        (reply,) = self._request(self.parser.OFPRoleRequest(self.datapath, self.ofp.OFPCR_ROLE_NOCHANGE, 0),
                                 timeout)
        return reply.generation_id

    def echo(self, timeout):
        """Whether the switch answers an OpenFlow echo request within `timeout` seconds (the core's
        liveness probe: Ryu's own echo loop, off by default, would close the connection instead)."""
        try:
            self._request(self.parser.OFPEchoRequest(self.datapath), timeout)
            return True
        except (SwitchGone, TimeoutError):
            return False

    def dump(self):
        """Every flow, group and meter on the switch, in the pipeline's vocabulary."""
        parser, ofp, dp = self.parser, self.ofp, self.datapath
        requests = ((parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL), decode_meter_config),
                    (parser.OFPGroupDescStatsRequest(dp, 0), decode_group_desc),
                    (parser.OFPFlowStatsRequest(dp, table_id=ofp.OFPTT_ALL), decode_flow_stats))
        entries = []
        for request, decode in requests:
            for reply in self._request(request):
                entries.extend(decode(stat, ofp) for stat in reply.body)
                hub.sleep(0)  # thousands of flows decode reply by reply, not in one stretch of the loop
        return entries

    def table_counts(self):
        """{table id: flows in it}, as the switch counts them: one small request, what the periodic
        audit asks before it reads every flow."""
        replies = self._request(self.parser.OFPTableStatsRequest(self.datapath, 0))
        return {stat.table_id: stat.active_count for reply in replies for stat in reply.body}

    def cookieless_flows(self):
        """How many flows have cookie 0, which Weft never sets (flows.pipeline: every cookie it makes
        has a category): one small request, which finds an `ovs-ofctl add-flow` made without a cookie
        even over one of Weft's flows (same match and priority: the counts stay equal). OVS's own
        flows in its internal table (254), which have cookie 0 too, are not counted."""
        ofp = self.ofp
        replies = self._request(self.parser.OFPFlowStatsRequest(
            self.datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0xFFFFFFFFFFFFFFFF,
            self.parser.OFPMatch()))
        return sum(stat.table_id != OVS_INTERNAL_TABLE for reply in replies for stat in reply.body)

    def apply(self, flow_diff, atomic=False):
        """Sends a FlowDiff in the order FlowDiff.ordered() gives (meters and groups before the flows
        that use them, after them on removal) and waits for the barrier after it, so the switch has
        processed all of it. `atomic`: the groups and flows go in one ONF bundle (ATOMIC|ORDERED), so
        the switch shows all of them or none; meters, which OVS does not take in a bundle, go before
        it (added, modified) and after it (deleted)."""
        self.errors.clear()
        sent = {}
        steps = flow_diff.ordered()
        if atomic:
            bundled = [(c, e) for c, e in steps if not isinstance(e, Meter)]
            self._send([(c, e) for c, e in steps if isinstance(e, Meter) and c != "delete"], sent)
            if bundled:
                self._bundle(bundled, sent)
            self._send([(c, e) for c, e in steps if isinstance(e, Meter) and c == "delete"], sent)
        else:
            self._send(steps, sent)
        self._request(self.parser.OFPBarrierRequest(self.datapath))
        self._raise_refused(sent)

    def _send(self, steps, sent):
        for command, entry in steps:
            msg = encode_entry(self.parser, self.ofp, self.datapath, entry, command)
            self.datapath.set_xid(msg)
            sent[msg.xid] = entry
            self.datapath.send_msg(msg)

    def _bundle(self, steps, sent):
        """Opens a bundle, adds `steps` to it and commits it: the switch checks every message first and
        applies all of them at once, or none (its error names the first it refused)."""
        parser, ofp, dp = self.parser, self.ofp, self.datapath
        bundle_id, flags = next(_BUNDLE_IDS), ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
        self._bundle_control(bundle_id, ofp.ONF_BCT_OPEN_REQUEST, flags, sent)
        for command, entry in steps:
            # Ryu gives the inner message the outer one's xid, as the extension asks.
            msg = parser.ONFBundleAddMsg(dp, bundle_id, flags, encode_entry(parser, ofp, dp, entry, command), [])
            dp.set_xid(msg)
            sent[msg.xid] = entry
            dp.send_msg(msg)
        self._bundle_control(bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, flags, sent)

    def _bundle_control(self, bundle_id, kind, flags, sent):
        if not self._request(self.parser.ONFBundleCtrlMsg(self.datapath, bundle_id, kind, flags, [])):
            self._raise_refused(sent)  # answered by an error instead of its reply

    def _raise_refused(self, sent):
        if self.errors:
            xid, err_type, code = next((e for e in self.errors if e[0] in sent), self.errors[0])
            entry = sent.get(xid)
            raise RuntimeError(f"switch {self.datapath.id:016x} refused {len(self.errors)} message(s), first "
                               f"with error type {err_type} code {code}: {to_ofctl(entry) if entry else '?'}")

    def refused(self, xid, err_type, code):
        """An error message from the switch: recorded, and a request waiting for that xid wakes."""
        self.errors.append((xid, err_type, code))
        waiter = self._waiting.get(xid)
        if waiter:
            waiter[0].set()

    def flush_conntrack(self, zone, ip_proto, reply_src, reply_src_port):
        """Drop the switch's connections in `zone` whose replies come from reply_src:port (a backend
        that went away), so none of them lingers on it (OVS 3.1's NXT_CT_FLUSH). Sent
        CT_FLUSH_REPEATS times: OVS 3.1's userspace conntrack skips about half the matching entries
        in each flush by a partial tuple (measured on the lab: 1702 left 511, then 255, 127, ..., 0
        after the 8th), so 16 clear 65,000 connections to the backend."""
        for _ in range(CT_FLUSH_REPEATS):
            self.datapath.send_msg(self.parser.OFPExperimenter(
                self.datapath, NX_EXPERIMENTER, NXT_CT_FLUSH,
                ct_flush_body(zone, ip_proto, reply_src, reply_src_port)))

    def send_arp_request(self, port, src_mac, src_ip, target_ip):
        pkt = packet.Packet()
        pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=src_mac, ethertype=ether_types.ETH_TYPE_ARP))
        pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=src_mac, src_ip=src_ip,
                                 dst_mac="00:00:00:00:00:00", dst_ip=target_ip))
        pkt.serialize()
        self.send_frame(port, pkt.data)

    def send_frame(self, port, frame):
        """A packet-out of `frame` (bytes) on `port`, past the pipeline (a no-op once disconnected)."""
        if self._alive:
            self.datapath.send_msg(self.parser.OFPPacketOut(
                self.datapath, buffer_id=self.ofp.OFP_NO_BUFFER, in_port=self.ofp.OFPP_CONTROLLER,
                actions=[self.parser.OFPActionOutput(port)], data=frame))


def _certificate_name(sock):
    """The CN of a TLS peer's verified certificate; None over plain TCP."""
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    subject = dict(item for rdn in (getpeercert() or {}).get("subject", ()) for item in rdn)
    return subject.get("commonName", "")


# --- the northbound API's listeners ------------------------------------------------------------------

class _Protocol(eventlet.wsgi.HttpProtocol):
    """eventlet's HTTP protocol, handing the application the Peer the listener saw (our accept loop
    passes it where eventlet expects the client address)."""

    def get_environ(self):
        environ = super().get_environ()
        environ["weft.peer"] = self.client_address
        return environ

    def address_string(self):
        # http.server's own error path (a request line it cannot parse) logs the client address it
        # expects to be (host, port); ours is a Peer.
        return self.client_address.describe()

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a request line it cannot parse, a bad Content-Length) answered
        like the API's: a status line and a JSON error, not an HTML page (with no status line at all
        when the line was too broken to tell its HTTP version)."""
        self.request_version, self.close_connection = "HTTP/1.1", True
        body = (json.dumps({"error": f"the request is not valid HTTP: {message or code}"}) + "\n").encode()
        self.send_response(code)
        for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("Connection", "close")):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class ApiServers:
    """The API on its unix socket (always) and on TCP (if --wsapi-port is given), each served by its
    own accept loop, so a connection is named by what the kernel says about its peer (SO_PEERCRED, the
    TCP address, a verified client certificate) and no peer may hold more than
    MAX_CONNECTIONS_PER_PEER connections."""

    def __init__(self, config, api):
        checks = {"unix": HostCheck("unix")}
        tokens = None
        self._sockets = []
        unix = self._unix_listener(config.api_socket, config.api_socket_group)
        self._spawn(unix, "unix", None)
        LOG.info("API on unix socket %s (mode 0660, group %s)", config.api_socket,
                 config.api_socket_group or "root")
        if CONF.wsapi_port:
            tokens = TokenStore(config.tokens_dir)
            admin = tokens.ensure_admin()
            host, port = CONF.wsapi_host, CONF.wsapi_port
            tls = _tls_context(config)
            try:
                tcp = eventlet.listen((host, port))
            except OSError as err:
                raise SystemExit(f"weft: cannot listen for the API on {host}:{port}: {err.strerror}") from None
            checks["tcp"] = HostCheck("tcp", bound_ip=host, port=port, names=config.hostnames)
            self._spawn(tcp, "tcp", tls)
            LOG.info("API on %s://%s:%d (bearer tokens in %s, e.g. %s)", "https" if tls else "http", host, port,
                     config.tokens_dir, admin)
        self.front = HttpFront(api, tokens, checks, metrics=api.core.metrics)
        self._socket_path = config.api_socket

    def _unix_listener(self, path, group):
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
                raise SystemExit(f"weft: another controller already serves the API on {path}")
            except OSError:
                os.unlink(path)  # left by a controller that died
            finally:
                probe.close()
        umask = os.umask(0o177)  # never reachable by others, not even between bind and chmod
        try:
            sock = eventlet.listen(path, family=socket.AF_UNIX, backlog=128)
        finally:
            os.umask(umask)
        os.chown(path, -1, grp.getgrnam(group).gr_gid if group else 0)
        os.chmod(path, 0o660)
        return sock

    def _spawn(self, listener, kind, tls):
        server = eventlet.wsgi.Server(listener, listener.getsockname(), self._app, protocol=_Protocol,
                                      keepalive=API_KEEPALIVE_IDLE, socket_timeout=API_SOCKET_TIMEOUT,
                                      log_output=False, debug=False)  # debug: tracebacks in 500 bodies
        self._sockets.append(listener)
        hub.spawn(self._accept_loop, listener, server, kind, tls)

    def _app(self, environ, start_response):
        return self.front(environ, start_response)

    def _accept_loop(self, listener, server, kind, tls):
        per_peer = collections.Counter()
        refused = collections.Counter()
        while True:
            try:
                sock, address = listener.accept()
            except OSError as err:
                if err.errno in (errno.EBADF, errno.EINVAL):  # closed: the controller is stopping
                    return
                LOG.warning("API %s listener: accept failed: %s", kind, err)
                hub.sleep(0.1)
                continue
            peer = _peer(sock, address, kind)
            if per_peer[peer] >= MAX_CONNECTIONS_PER_PEER:
                refused[peer] += 1
                if refused[peer] in (1, 10, 100) or not refused[peer] % 1000:
                    LOG.warning("API: refused a connection from %s: it already holds %d (%d refused so far)",
                                peer.describe(), MAX_CONNECTIONS_PER_PEER, refused[peer])
                sock.close()
                continue
            per_peer[peer] += 1
            hub.spawn(self._serve_connection, server, sock, peer, tls, per_peer)

    @staticmethod
    def _serve_connection(server, sock, peer, tls, per_peer):
        counted = peer
        try:
            if tls:  # the handshake runs here, off the accept loop, within the socket timeout
                sock.settimeout(API_SOCKET_TIMEOUT)
                sock = tls.wrap_socket(sock, server_side=True)
                subject = dict(item for rdn in (sock.getpeercert() or {}).get("subject", ()) for item in rdn)
                peer = dataclasses.replace(peer, tls_subject=subject.get("commonName", ""))
            sock.settimeout(API_SOCKET_TIMEOUT)
            server.process_request([peer, sock, eventlet.wsgi.STATE_IDLE])
        except (OSError, green_ssl.SSLError) as err:
            LOG.debug("API connection from %s ended: %s", peer.describe(), err)
        finally:
            per_peer[counted] -= 1
            if not per_peer[counted]:
                del per_peer[counted]
            try:
                sock.close()
            except OSError:
                pass

    def drain(self, grace, stop_waiting=None):
        """Stops taking connections and requests, and waits up to `grace` seconds for those in flight
        to answer (`stop_waiting()` first makes the waiting ones answer now)."""
        self.front.stopping = True
        self.close()
        if stop_waiting:
            stop_waiting()
        deadline = time.monotonic() + grace
        while self.front.requests_in_flight() and time.monotonic() < deadline:
            hub.sleep(0.02)
        if self.front.requests_in_flight():
            LOG.warning("%d API request(s) still unanswered after %.0f s", self.front.requests_in_flight(), grace)

    def close(self):
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        try:
            os.unlink(self._socket_path)
        except OSError:
            pass


def _peer(sock, address, kind):
    if kind == "unix":
        _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return Peer("unix", str(uid))
    return Peer("tcp", address[0])


def _tls_context(config):
    if not config.api_tls_cert:
        return None
    context = green_ssl.SSLContext(green_ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = green_ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.api_tls_cert, config.api_tls_key)
    if config.api_tls_client_ca:
        context.verify_mode = green_ssl.CERT_REQUIRED
        context.load_verify_locations(config.api_tls_client_ca)
    return context


# --- the OpenFlow listener ---------------------------------------------------------------------------

OPENFLOW_HANDSHAKE_TIMEOUT = 10  # seconds a TLS client has to complete its handshake


def _openflow_server_loop(controller, ofp_tcp_listen_port, ofp_ssl_listen_port):
    """Replaces Ryu 4.34's OpenFlowController.server_loop. Its TLS listener pops its certificate
    arguments from a dict all connections share, so every handshake after the first fails (a switch
    reconnecting, or a port scan arriving first, breaks TLS for good), and a client that never starts
    its handshake holds a connection forever. This one takes the same options (--ofp-listen-host,
    --ofp-tcp-listen-port / --ofp-ssl-listen-port, --ctl-privkey, --ctl-cert, --ca-certs), requires a
    client certificate signed by --ca-certs and TLS 1.2 or later, and bounds the handshake."""
    if (ofp_tcp_listen_port, ofp_ssl_listen_port) == (ofproto_common.OFP_TCP_PORT_OLD,
                                                      ofproto_common.OFP_SSL_PORT_OLD):
        return  # Ryu's extra listener on the pre-IANA port 6633: Weft listens once
    tls = _tls_files()  # checked at start (_config_from_conf)
    context = None
    if tls:
        context = green_ssl.SSLContext(green_ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = green_ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(tls[1], tls[0])
        context.verify_mode = green_ssl.CERT_REQUIRED
        context.load_verify_locations(tls[2])
        port = ofp_ssl_listen_port or ofproto_common.OFP_SSL_PORT
    else:
        port = ofp_tcp_listen_port or ofproto_common.OFP_TCP_PORT
    listener = eventlet.listen((CONF.ofp_listen_host, port))
    LOG.info("OpenFlow on %s:%s:%d", "ssl" if context else "tcp", CONF.ofp_listen_host, port)
    while True:
        sock, address = listener.accept()
        hub.spawn(_openflow_connection, sock, address, context)


def _openflow_connection(sock, address, context):
    if context is not None:
        try:
            sock.settimeout(OPENFLOW_HANDSHAKE_TIMEOUT)
            sock = context.wrap_socket(sock, server_side=True)
        except (OSError, green_ssl.SSLError) as err:
            LOG.warning("OpenFlow: TLS handshake with %s:%s failed: %s", *address[:2], err)
            sock.close()
            return
    ryu_controller.datapath_connection_factory(sock, address)


ryu_controller.OpenFlowController.server_loop = _openflow_server_loop
