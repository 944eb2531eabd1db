"""A switch in memory that eats the real OpenFlow messages (as Faucet's FakeOFTable does).

Every change goes through flows.openflow's encoder, Ryu's real message classes, their bytes on the
wire, and back through Ryu's parsers and flows.openflow's decoder, so what the fake holds is what a
switch would have understood. It enforces what OVS enforces and a wrong order would break: a flow
may only use a group or meter that exists, adding an existing group or modifying a missing one is
refused, and deleting a group deletes the flows that use it. An atomic apply is all or nothing, as
an ONF bundle on OVS (meters outside it, as OVS takes none in a bundle).
"""
import collections
import copy
import struct

from ryu.ofproto import nicira_ext  # noqa: F401 (registers the NXM fields: regs, tun_ipv4_dst, ...)
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from flows.model import Flow, Group, Meter
from flows.openflow import decode_flow_stats, decode_group_desc, decode_meter_config, encode_entry


class FakeDatapath:
    ofproto, ofproto_parser, id = ofp, parser, 0xfeed

    def set_xid(self, msg):
        msg.set_xid(1)


def wire(entry, command):
    """Encode `entry` to bytes and parse them back as a switch would report the entry."""
    msg = encode_entry(parser, ofp, FakeDatapath(), entry, command)
    msg.serialize()
    buf = bytes(msg.buf)
    if isinstance(entry, Flow):
        mod = parser.OFPFlowMod.parser(FakeDatapath(), ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD,
                                       len(buf), 1, buf)
        return decode_flow_stats(_Stats(mod), ofp)
    body = buf[ofp.OFP_HEADER_SIZE:]  # command(2) then the fields a desc/config reply also has
    if isinstance(entry, Group):  # group mod: command, type, pad, id | desc: length, type, pad, id
        desc = struct.pack("!H", len(body)) + body[2:]
        return decode_group_desc(parser.OFPGroupDescStats.parser(desc, 0), ofp)
    config = struct.pack("!H", len(body)) + body[2:]  # meter mod: command, flags, id | config: length, ...
    return decode_meter_config(parser.OFPMeterConfigStats.parser(config, 0), ofp)


class _Stats:
    """A parsed flow mod seen as the flow stats entry it becomes on the switch."""

    def __init__(self, mod):
        self.table_id, self.priority, self.cookie = mod.table_id, mod.priority, mod.cookie
        self.match, self.instructions = mod.match, mod.instructions


class Refused(Exception):
    pass


class FakeSwitch:
    """Duck-types controller.app.OpenFlowSwitch's dump(), table_counts() and apply()."""

    def __init__(self):
        self.flows, self.groups, self.meters = {}, {}, {}  # key -> entry, as decoded from the wire
        self.messages = 0
        self.bundles = []      # the entries each committed bundle held
        self.requests = collections.Counter()  # "dump", "table_counts": how often each was asked
        self.refuse = None     # a predicate on entries: those the switch refuses (a bundle then fails whole)
        self.role = None       # (role, generation) last accepted, as OpenFlowSwitch.request_role keeps it
        self.seen = None       # the highest generation id seen in a master or slave request

    def request_role(self, role, generation, timeout=5.0):
        from controller.core import StaleGeneration
        if self.seen is not None and generation < self.seen:  # OVS compares them as signed differences
            raise StaleGeneration(f"refused generation {generation}: the switch has seen a newer one")
        self.seen, self.role = generation, (role, generation)

    def generation(self, timeout=5.0):
        return self.seen or 0

    def dump(self):
        self.requests["dump"] += 1
        return [*self.meters.values(), *self.groups.values(), *self.flows.values()]

    def table_counts(self):
        self.requests["table_counts"] += 1
        return dict(collections.Counter(key[0] for key in self.flows))

    def cookieless_flows(self):
        return sum(flow.cookie == 0 for flow in self.flows.values())

    def apply(self, flow_diff, atomic=False):
        steps = flow_diff.ordered()
        if not atomic:
            for command, entry in steps:
                self._send(command, entry)
            return
        for command, entry in steps:
            if isinstance(entry, Meter) and command != "delete":
                self._send(command, entry)
        bundled = [(c, e) for c, e in steps if not isinstance(e, Meter)]
        before = copy.deepcopy((self.flows, self.groups, self.meters))
        try:
            for command, entry in bundled:
                self._send(command, entry)
        except Refused:
            self.flows, self.groups, self.meters = before
            raise
        self.bundles.append([e for _, e in bundled])
        for command, entry in steps:
            if isinstance(entry, Meter) and command == "delete":
                self._send(command, entry)

    def _send(self, command, entry):
        self.messages += 1
        if self.refuse and self.refuse(entry):
            raise Refused(f"refused: {entry}")
        self._one(command, wire(entry, command) if command != "delete" else entry)

    def _one(self, command, entry):
        if isinstance(entry, Flow):
            if command == "delete":
                self.flows.pop(entry.key, None)
                return
            for action in entry.actions:
                if action[0] == "group" and action[1] not in self.groups:
                    raise Refused(f"flow uses group {action[1]}, which does not exist")
                if action[0] == "meter" and action[1] not in self.meters:
                    raise Refused(f"flow uses meter {action[1]}, which does not exist")
            self.flows[entry.key] = entry
            return
        table, ident = (self.groups, entry.group_id) if isinstance(entry, Group) else (
            self.meters, entry.meter_id)
        if command == "add" and ident in table:
            raise Refused(f"{entry.key} exists already")
        if command == "modify" and ident not in table:
            raise Refused(f"{entry.key} does not exist")
        if command == "delete":
            table.pop(ident, None)
            kind = "group" if isinstance(entry, Group) else "meter"
            for key, flow in list(self.flows.items()):
                if (kind, ident) in {a[:2] for a in flow.actions}:
                    del self.flows[key]  # as OpenFlow: the flows using it go with it
            return
        table[ident] = entry


__all__ = ["FakeSwitch", "Refused", "wire"]
