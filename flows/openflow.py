"""Flows, groups and meters to and from OpenFlow 1.3 messages, built from the one definition of
each field and action in flows/vocab.py. Like vocab, it is handed Ryu's `parser` and `ofp` modules
instead of importing Ryu, so it is unit-tested against Ryu's real message classes without OVS.
"""
from __future__ import annotations

import ipaddress
import struct

from flows.model import Bucket, Flow, Group, Meter
from flows.vocab import (ACTIONS, decode_action, decode_instructions, decode_match,
                         encode_actions, encode_match)

_COMMANDS = {"add": ("OFPFC_ADD", "OFPGC_ADD", "OFPMC_ADD"),
             "modify": ("OFPFC_ADD", "OFPGC_MODIFY", "OFPMC_MODIFY"),  # a flow add replaces the
             "delete": ("OFPFC_DELETE_STRICT", "OFPGC_DELETE", "OFPMC_DELETE")}  # same key, cookie too
_GROUP_TYPES = {"all": "OFPGT_ALL", "select": "OFPGT_SELECT", "indirect": "OFPGT_INDIRECT"}


def encode_entry(parser, ofp, datapath, entry, command: str):
    """The message that adds, modifies or deletes `entry` (flows.model Flow, Group or Meter)."""
    flow_cmd, group_cmd, meter_cmd = (getattr(ofp, name) for name in _COMMANDS[command])
    if isinstance(entry, Flow):
        return parser.OFPFlowMod(
            datapath, cookie=entry.cookie, table_id=entry.table, command=flow_cmd,
            priority=entry.priority, match=encode_match(parser, entry.match),
            instructions=encode_actions(parser, ofp, entry.actions), out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY)
    if isinstance(entry, Group):
        buckets = [] if command == "delete" else [
            parser.OFPBucket(weight=b.weight if entry.type == "select" else 0,
                             watch_port=ofp.OFPP_ANY, watch_group=ofp.OFPG_ANY,
                             actions=[ACTIONS[a[0]].encode(a, parser, ofp) for a in b.actions])
            for b in entry.buckets]
        return parser.OFPGroupMod(datapath, group_cmd, getattr(ofp, _GROUP_TYPES[entry.type]),
                                  entry.group_id, buckets)
    bands = [] if command == "delete" else [
        parser.OFPMeterBandDrop(rate=entry.rate, burst_size=entry.burst)]
    return parser.OFPMeterMod(datapath, meter_cmd, ofp.OFPMF_PKTPS | ofp.OFPMF_BURST,
                              entry.meter_id, bands)


def decode_flow_stats(stat, ofp):
    """A flow as a switch reports it (OFPFlowStats), in the vocabulary the compiler writes."""
    return Flow(stat.table_id, stat.priority, decode_match(stat.match),
                decode_instructions(stat.instructions, ofp), stat.cookie)


def decode_group_desc(desc, ofp):
    """A group as a switch reports it (OFPGroupDescStats)."""
    kind = next((k for k, name in _GROUP_TYPES.items() if getattr(ofp, name) == desc.type),
                f"type {desc.type}")
    return Group(desc.group_id, kind, tuple(
        Bucket(tuple(decode_action(a, ofp) for a in b.actions),
               b.weight if kind == "select" else 1) for b in desc.buckets))


def decode_meter_config(config, ofp):
    """A meter as a switch reports it (OFPMeterConfigStats); a band other than one drop band
    decodes to rate -1, which differs from any desired meter."""
    bands = config.bands
    if len(bands) == 1 and type(bands[0]).__name__ == "OFPMeterBandDrop":
        return Meter(config.meter_id, bands[0].rate, bands[0].burst_size)
    return Meter(config.meter_id, -1, -1)


# --- conntrack flush (OVS 3.1's NXT_CT_FLUSH; Ryu has no class for it) ------------------------

NX_EXPERIMENTER = 0x00002320
NXT_CT_FLUSH = 32
_NXT_CT_REPLY_TUPLE, _NXT_CT_ZONE_ID = 1, 2
_NXT_CT_TUPLE_SRC, _NXT_CT_TUPLE_SRC_PORT = 0, 2


def _prop(kind: int, value: bytes) -> bytes:
    """An OpenFlow property: type, length (without padding), value, padded to 8 bytes."""
    raw = struct.pack("!HH", kind, 4 + len(value)) + value
    return raw + bytes(-len(raw) % 8)


def ct_flush_body(zone: int, ip_proto: int, reply_src: str, reply_src_port: int) -> bytes:
    """The body of an NXT_CT_FLUSH (after the experimenter id and type) that flushes, in `zone`,
    the connections whose reply comes from reply_src:reply_src_port: those to one backend.
    Layout from OVS's include/openflow/nicira-ext.h (struct nx_ct_flush and its TLVs); an IPv4
    address is given IPv6-mapped, a 16-bit value padded to 32 bits."""
    mapped = bytes(10) + b"\xff\xff" + ipaddress.IPv4Address(reply_src).packed
    nested = (_prop(_NXT_CT_TUPLE_SRC, mapped)
              + _prop(_NXT_CT_TUPLE_SRC_PORT, struct.pack("!HH", reply_src_port, 0)))
    reply = struct.pack("!HH", _NXT_CT_REPLY_TUPLE, 8 + len(nested)) + bytes(4) + nested
    return (struct.pack("!B7x", ip_proto) + reply + bytes(-len(reply) % 8)
            + _prop(_NXT_CT_ZONE_ID, struct.pack("!HH", zone, 0)))  # ovs-ofctl's order
