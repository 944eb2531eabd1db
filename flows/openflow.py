"""Flows, groups and meters to and from OpenFlow 1.3 messages, built from the one definition of
each field and action in flows/vocab.py. Like vocab, it is handed Ryu's `parser` and `ofp` modules
instead of importing Ryu, so it is unit-tested against Ryu's real message classes without OVS.
"""
from __future__ import annotations

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
