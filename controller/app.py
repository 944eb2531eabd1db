"""The Ryu application: `ryu-manager controller.app`.

This is the only module that imports Ryu. It turns Ryu events into calls on the framework-free
core (controller/core.py), serves the REST API on Ryu's WSGI server, and translates the pipeline's
flows (flows/) to and from OpenFlow messages.
"""
import json
import logging
import os
import signal

from oslo_config.cfg import Error as ConfigError
from ryu import cfg  # ryu.cfg.CONF is the one ryu-manager parses (not oslo's global CONF)
from ryu.app.wsgi import ControllerBase, Response, WSGIApplication, route
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu.lib.packet import arp, ether_types, ethernet, packet
from ryu.ofproto import nicira_ext  # noqa: F401 (registers the NXM fields: regs, tun_ipv4_dst)
from ryu.ofproto import ofproto_v1_3

from controller.api import NorthboundApi
from controller.core import Config, WeftCore, check_config
from flows.model import FIELD_BITS, Flow
from flows.ofctl import to_ofctl

LOG = logging.getLogger("weft.app")
APP_KEY = "weft_app"

CONF = cfg.CONF
CONF.register_opts([
    cfg.StrOpt("state_dir", default=Config.state_dir, help="where the embedded NB keeps its files"),
    cfg.StrOpt("nb_remote", default="", help="an existing NB ovsdb-server (e.g. tcp:10.0.0.5:6641, or "
                                             "a comma-separated Raft cluster); empty = embedded NB"),
    cfg.IntOpt("underlay_mtu", default=Config.underlay_mtu, help="smallest MTU of the hosts' underlay"),
    cfg.StrOpt("of_target", default="", help="OpenFlow target for joining hosts that name none"),
], group="weft")
# Ryu binds its REST API to every address by default; Weft's is an admin API, so loopback unless told.
CONF.set_default("wsapi_host", "127.0.0.1")


def _config_from_conf():
    """The [weft] options, checked: a bad value stops the controller with a message naming it."""
    try:
        config = Config(state_dir=CONF.weft.state_dir, nb_remote=CONF.weft.nb_remote,
                        underlay_mtu=CONF.weft.underlay_mtu, of_target=CONF.weft.of_target)
        check_config(config)
    except (ValueError, ConfigError) as err:
        raise SystemExit(f"weft: bad configuration: {err}") from None
    return config


class WeftApp(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.core = WeftCore(hub, _config_from_conf())
        self.core.start()
        self.api = NorthboundApi(self.core)
        self.switches = {}  # Ryu datapath -> OpenFlowSwitch
        kwargs["wsgi"].register(WeftRestController, {APP_KEY: self})
        signal.signal(signal.SIGTERM, self._terminate)

    def _terminate(self, signum, frame):
        # Signal handlers run on eventlet's hub, where nothing may block: stop from a green thread.
        hub.spawn(self._shutdown)

    def _shutdown(self):
        LOG.info("SIGTERM: stopping")
        hub.spawn_after(3, os._exit, 0)  # whatever stop() waits on, the process ends
        self.core.stop()
        os._exit(0)

    def stop(self):
        self.core.stop()
        super().stop()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev):
        switch = OpenFlowSwitch(ev.msg.datapath)
        self.switches[ev.msg.datapath] = switch
        self.core.switch_connected(ev.msg.datapath_id, switch)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev):
        switch = self.switches.pop(ev.datapath, None) if ev.state == DEAD_DISPATCHER else None
        if switch:
            switch.closed()
            self.core.switch_disconnected(ev.datapath.id, switch)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats_reply(self, ev):
        self._reply(ev, done=not ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev):
        self._reply(ev, done=True)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev):
        switch = self.switches.get(ev.msg.datapath)
        LOG.error("switch %s refused a message (xid %s): type %s code %s", ev.msg.datapath.id, ev.msg.xid,
                  ev.msg.type, ev.msg.code)
        if switch:
            switch.errors.append((ev.msg.xid, ev.msg.type, ev.msg.code))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        # Forwarding is proactive: the only packets sent up are a gateway next hop's ARP replies.
        # Anything else is counted, so tests and operators can see the data path stays in OVS.
        try:
            arp_reply = packet.Packet(ev.msg.data).get_protocol(arp.arp)
        except Exception:  # a malformed frame must not take the handler down with it
            arp_reply = None
        if arp_reply and arp_reply.opcode == arp.ARP_REPLY:
            self.core.arp_reply(ev.msg.datapath.id, arp_reply.src_ip, arp_reply.src_mac)
        else:
            self.core.packet_in(ev.msg.datapath.id)

    def _reply(self, ev, done):
        switch = self.switches.get(ev.msg.datapath)
        if switch:
            switch.reply(ev.msg, done)


class SwitchGone(ConnectionError):
    pass


class OpenFlowSwitch:
    """One connected br-int, as the core sees it: read its flows, send a difference, wait for it."""

    def __init__(self, datapath):
        self.datapath = datapath
        self.ofp = datapath.ofproto
        self.parser = datapath.ofproto_parser
        self.errors = []
        self._waiting = {}  # xid -> (event, replies)
        self._alive = True

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

    def dump_flows(self):
        """Every flow on the switch, in the pipeline's vocabulary."""
        request = self.parser.OFPFlowStatsRequest(self.datapath, table_id=self.ofp.OFPTT_ALL)
        return [flow_from_stats(stat) for reply in self._request(request) for stat in reply.body]

    def apply(self, flow_diff):
        """Sends a FlowDiff (deletes first, then adds; an add replaces a flow with the same key, cookie
        included) and waits for the barrier after it, so the switch has processed all of it."""
        self.errors.clear()
        sent = {}
        changes = [(f, self.ofp.OFPFC_DELETE_STRICT) for f in flow_diff.delete] + \
                  [(f, self.ofp.OFPFC_ADD) for f in (*flow_diff.modify, *flow_diff.add)]
        for flow, command in changes:
            msg = self._flow_mod(flow, command)
            self.datapath.set_xid(msg)
            sent[msg.xid] = flow
            self.datapath.send_msg(msg)
        self._request(self.parser.OFPBarrierRequest(self.datapath))
        if self.errors:
            xid, err_type, code = self.errors[0]
            flow = sent.get(xid)
            raise RuntimeError(f"switch {self.datapath.id:016x} refused {len(self.errors)} flow change(s), first "
                               f"with error type {err_type} code {code}: {to_ofctl(flow) if flow else '?'}")

    def send_arp_request(self, port, src_mac, src_ip, target_ip):
        pkt = packet.Packet()
        pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=src_mac, ethertype=ether_types.ETH_TYPE_ARP))
        pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=src_mac, src_ip=src_ip,
                                 dst_mac="00:00:00:00:00:00", dst_ip=target_ip))
        pkt.serialize()
        self.datapath.send_msg(self.parser.OFPPacketOut(
            self.datapath, buffer_id=self.ofp.OFP_NO_BUFFER, in_port=self.ofp.OFPP_CONTROLLER,
            actions=[self.parser.OFPActionOutput(port)], data=pkt.data))

    def _flow_mod(self, flow, command):
        parser, ofp = self.parser, self.ofp
        instructions = []
        actions = [self._action(a) for a in flow.actions if a[0] != "goto"]
        if actions:
            instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
        if flow.actions and flow.actions[-1][0] == "goto":
            instructions.append(parser.OFPInstructionGotoTable(flow.actions[-1][1]))
        return parser.OFPFlowMod(self.datapath, cookie=flow.cookie, table_id=flow.table, command=command,
                                 priority=flow.priority, match=parser.OFPMatch(**dict(flow.match)),
                                 instructions=instructions, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)

    def _action(self, action):
        parser, kind = self.parser, action[0]
        if kind == "output":
            return parser.OFPActionOutput(action[1], 0xffff)
        if kind == "set_field":
            return parser.OFPActionSetField(**{action[1]: action[2]})
        if kind == "move":
            return parser.NXActionRegMove(src_field=action[1], dst_field=action[2], n_bits=action[3],
                                          src_ofs=0, dst_ofs=0)
        if kind in ("push", "pop"):
            stack_action = parser.NXActionStackPush if kind == "push" else parser.NXActionStackPop
            return stack_action(field=action[1], start=0, end=FIELD_BITS[action[1]] - 1)
        if kind == "dec_ttl":
            return parser.OFPActionDecNwTtl()
        if kind == "controller":
            return parser.OFPActionOutput(self.ofp.OFPP_CONTROLLER, self.ofp.OFPCML_NO_BUFFER)
        if kind == "ct":
            _, commit, zone, table, nat = action
            return parser.NXActionCT(flags=CT_COMMIT if commit else 0, zone_src="", zone_ofs_nbits=zone,
                                     recirc_table=CT_NO_RECIRC if table is None else table, alg=0,
                                     actions=[] if nat is None else [_nat_action(parser, nat)])
        raise ValueError(f"no OpenFlow translation for action {action!r}")


CT_COMMIT = 1           # NX_CT_F_COMMIT
CT_NO_RECIRC = 0xff     # NX_CT_RECIRC_NONE
NAT_SRC, NAT_DST = 1, 2  # NX_NAT_F_SRC, NX_NAT_F_DST
OFPP_CONTROLLER = ofproto_v1_3.OFPP_CONTROLLER


def _nat_action(parser, nat):
    if nat[0] == "nat":  # apply the connection's existing mapping (un-NAT replies)
        return parser.NXActionNAT(flags=0)
    flags = NAT_SRC if nat[0] == "snat" else NAT_DST
    return parser.NXActionNAT(flags=flags, range_ipv4_min=nat[1], range_ipv4_max=nat[1])


def _nat_from_ofp(actions):
    for action in actions:
        if type(action).__name__ == "NXActionNAT":
            if action.flags & NAT_SRC:
                return ("snat", action.range_ipv4_min)
            if action.flags & NAT_DST:
                return ("dnat", action.range_ipv4_min)
            return ("nat",)
    return None


def flow_from_stats(stat):
    """A flow read from the switch, in the same vocabulary the compiler writes, so they compare."""
    actions = []
    for inst in stat.instructions:
        if hasattr(inst, "actions"):
            actions.extend(_action_from_ofp(a) for a in inst.actions)
        elif hasattr(inst, "table_id"):
            actions.append(("goto", inst.table_id))
    match = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in stat.match._fields2)
    return Flow(stat.table_id, stat.priority, match, tuple(actions), stat.cookie)


def _action_from_ofp(action):
    name = type(action).__name__
    if name == "OFPActionOutput":
        return ("controller",) if action.port == OFPP_CONTROLLER else ("output", action.port)
    if name == "NXActionCT":
        return ("ct", bool(action.flags & CT_COMMIT), action.zone_ofs_nbits,
                None if action.recirc_table == CT_NO_RECIRC else action.recirc_table, _nat_from_ofp(action.actions))
    if name == "OFPActionSetField":
        return ("set_field", action.key, action.value)
    if name == "NXActionRegMove":  # Ryu reads NXM fields back as "eth_src_nxm"; the pipeline says "eth_src"
        return ("move", action.src_field.removesuffix("_nxm"), action.dst_field.removesuffix("_nxm"), action.n_bits)
    if name in ("NXActionStackPush", "NXActionStackPop"):
        return ("push" if name == "NXActionStackPush" else "pop", action.field.removesuffix("_nxm"))
    if name == "OFPActionDecNwTtl":
        return ("dec_ttl",)
    return ("unknown", name)  # not ours: it differs from any desired flow, so the diff replaces it


class WeftRestController(ControllerBase):
    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.app = data[APP_KEY]

    @route("weft", "/v1/{path:.*}", methods=["GET", "POST", "PUT", "DELETE"])
    def dispatch(self, req, path, **_):
        status, body = self.app.api.handle(req.method, req.path, req.body, req.query_string)
        return Response(status=status, content_type="application/json", charset="utf-8",
                        body=(json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
