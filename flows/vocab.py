"""The flow vocabulary, each match field and each action defined once.

One entry per action drives all four things done with it: its OpenFlow encoding, its decoding from
what a switch reports, its ovs-ofctl text and its simulation in the tracer (as OVN declares its
actions once in include/ovn/actions.h). A new action is one class here, not four edits.

Nothing here imports Ryu: encode() is handed the switch's `parser` and `ofp` modules, decode()
recognises Ryu's objects by class name, so the Ryu app stays the only module that imports it.

Match fields are Ryu OXM/NXM names. Values are ints, except MAC fields (lowercase
"aa:bb:cc:dd:ee:ff") and IPv4 fields ("10.0.0.1"). A masked match is a (value, mask) tuple of the
same types. `ct_state` is matched as (value, mask) of the CT_* bits (OVS's own bit values).
`vlan_vid` is the OpenFlow 1.3 field: OFPVID_NONE for an untagged frame, OFPVID_PRESENT | VID for
a tagged one; eth_type is the ethertype after the tag. OpenFlow prerequisites are spelled out:
a match on ipv4_*/ip_proto carries eth_type=0x0800, one on icmpv4_* also ip_proto=1, one on
arp_* eth_type=0x0806, one on tcp_*/udp_*/sctp_* its ip_proto.

Actions are tuples, applied in order (see each class for its arguments):
    ("output", port)  ("set_field", field, value)  ("move", src, dst, n_bits)
    ("push", field)  ("pop", field)  ("dec_ttl",)  ("ct", commit, zone, table, nat)  ("ct_clear",)
    ("conjunction", id, clause, n_clauses)  ("group", group_id)  ("controller",)
    ("multipath", basis, n_links, dst_register)
    ("meter", meter_id)   first, if present: becomes an OpenFlow meter instruction
    ("goto", stage)       last, if present: a goto-table instruction to the stage of that name
Empty actions = drop.
"""
from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

from flows.pipeline import OFPP_IN_PORT, TABLE_BY_ID, TABLE_BY_NAME

# ct_state bits, as OVS numbers them.
CT_NEW = 0x01
CT_EST = 0x02
CT_REL = 0x04
CT_RPL = 0x08
CT_INV = 0x10
CT_TRK = 0x20
CT_FLAGS = (("new", CT_NEW), ("est", CT_EST), ("rel", CT_REL), ("rpl", CT_RPL), ("inv", CT_INV),
            ("trk", CT_TRK))  # as ovs-ofctl names them

# ---------------------------------------------------------------------------------------------
# Match fields
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str  # Ryu's
    bits: int
    kind: str = "hex"  # how values read and print: hex, decimal, mac, ipv4, ct_state, vlan, ethertype
    ofctl: str = ""  # ovs-ofctl's name, when it differs
    nxm: str = ""  # the NXM name ovs-ofctl prints in move/push/pop

    @property
    def ofctl_name(self) -> str:
        return self.ofctl or self.name

    def to_int(self, value: Any) -> int:
        if isinstance(value, int):
            return value
        if self.kind == "mac":
            return int(value.replace(":", ""), 16)
        if self.kind == "ipv4":
            return int(ipaddress.IPv4Address(value))
        raise TypeError(f"{self.name}: expected int, got {value!r}")

    def from_int(self, number: int) -> Any:
        if self.kind == "mac":
            raw = f"{number:012x}"
            return ":".join(raw[i:i + 2] for i in range(0, 12, 2))
        if self.kind == "ipv4":
            return str(ipaddress.IPv4Address(number))
        return number

    def text(self, value: Any) -> str:
        """The value as ovs-ofctl prints it."""
        if self.kind == "ct_state":
            bits, mask = value if isinstance(value, tuple) else (value, 0xFF)
            return "".join(("+" if bits & b else "-") + n for n, b in CT_FLAGS if mask & b)
        if self.kind == "vlan":  # OVS shows the TCI bits the match covers (its dl_vlan=N form is unused)
            vid, mask = value if isinstance(value, tuple) else (value, (1 << self.bits) - 1)
            return f"0x{vid:04x}/0x{mask:04x}"
        if isinstance(value, tuple):
            return f"{self.text(value[0])}/{self.text(value[1])}"
        if self.kind in ("mac", "ipv4", "decimal"):
            return str(value)
        if self.kind == "ethertype":
            return f"0x{value:04x}"
        return hex(value)


_FIELD_LIST = (
    Field("in_port", 32, "decimal"),
    Field("eth_src", 48, "mac", "dl_src", "NXM_OF_ETH_SRC"),
    Field("eth_dst", 48, "mac", "dl_dst", "NXM_OF_ETH_DST"),
    Field("eth_type", 16, "ethertype", "dl_type"),
    Field("vlan_vid", 13, "vlan", "vlan_tci"),  # 12-bit VID + the OFPVID_PRESENT bit
    Field("arp_op", 16, "decimal"),
    Field("arp_spa", 32, "ipv4", nxm="NXM_OF_ARP_SPA"),
    Field("arp_tpa", 32, "ipv4", nxm="NXM_OF_ARP_TPA"),
    Field("arp_sha", 48, "mac", nxm="NXM_NX_ARP_SHA"),
    Field("arp_tha", 48, "mac", nxm="NXM_NX_ARP_THA"),
    Field("ip_proto", 8, "decimal", "nw_proto"),
    Field("ipv4_src", 32, "ipv4", "nw_src", "NXM_OF_IP_SRC"),
    Field("ipv4_dst", 32, "ipv4", "nw_dst", "NXM_OF_IP_DST"),
    Field("nw_ttl", 8, "decimal"),
    Field("icmpv4_type", 8, "decimal", "icmp_type"),
    Field("icmpv4_code", 8, "decimal", "icmp_code"),
    Field("tcp_src", 16, "decimal", nxm="NXM_OF_TCP_SRC"),
    Field("tcp_dst", 16, "decimal", nxm="NXM_OF_TCP_DST"),
    Field("udp_src", 16, "decimal", nxm="NXM_OF_UDP_SRC"),
    Field("udp_dst", 16, "decimal", nxm="NXM_OF_UDP_DST"),
    Field("sctp_src", 16, "decimal"),
    Field("sctp_dst", 16, "decimal"),
    Field("tunnel_id", 64, "hex", "tun_id", "NXM_NX_TUN_ID"),
    Field("tun_ipv4_dst", 32, "ipv4", "tun_dst"),
    Field("metadata", 64, "hex", nxm="OXM_OF_METADATA"),
    Field("ct_state", 32, "ct_state"),
    Field("ct_zone", 16, "decimal"),
    Field("ct_mark", 32, "hex", nxm="NXM_NX_CT_MARK"),
    Field("conj_id", 32, "decimal"),
    *(Field(f"reg{i}", 32, "hex", nxm=f"NXM_NX_REG{i}") for i in range(16)),
)
FIELDS: dict[str, Field] = {f.name: f for f in _FIELD_LIST}
FIELD_BITS: dict[str, int] = {f.name: f.bits for f in _FIELD_LIST}
MAC_FIELDS = frozenset(f.name for f in _FIELD_LIST if f.kind == "mac")
IPV4_FIELDS = frozenset(f.name for f in _FIELD_LIST if f.kind == "ipv4")


def value_to_int(field_name: str, value: Any) -> int:
    """MAC/IPv4 strings to ints; ints unchanged. Used where fields are compared or moved."""
    if isinstance(value, int):
        return value
    return FIELDS[field_name].to_int(value)


def int_to_value(field_name: str, number: int) -> Any:
    """Inverse of value_to_int: back to the vocabulary's type for that field."""
    found = FIELDS.get(field_name)
    return found.from_int(number) if found else number


def match_text(match: tuple) -> str:
    return ",".join(f"{FIELDS[f].ofctl_name}={FIELDS[f].text(v)}" for f, v in match)


def encode_match(parser, match: tuple):
    return parser.OFPMatch(**dict(match))


def decode_match(ofp_match) -> tuple:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in ofp_match._fields2)


def _port_text(port: int) -> str:
    return "IN_PORT" if port == OFPP_IN_PORT else str(port)


def _nxm_bits(name: str, n_bits: int) -> str:
    return "[]" if n_bits == FIELD_BITS[name] else f"[0..{n_bits - 1}]"


# ---------------------------------------------------------------------------------------------
# The tracer's state while it runs one flow's actions
# ---------------------------------------------------------------------------------------------

@dataclass
class Execution:
    """What a flow's actions see and change in the tracer. An action that ends the pass sets
    `stop` to (kind, argument): ("goto", table id), ("controller", None), ("drop", reason)."""
    host: str
    pkt: dict[str, int]
    conntrack: Any  # flows.trace.Conntrack
    groups: Callable[[int], Any]  # group id -> flows.model.Group | None (the host's)
    stack: list[int] = field(default_factory=list)
    output: int | None = None
    notes: list[str] = field(default_factory=list)
    stop: tuple[str, Any] | None = None
    meter: int | None = None


# ---------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------

class Action:
    """One action kind. `decodes`: the Ryu classes whose objects decode() turns back into it."""
    name = ""
    decodes: tuple[str, ...] = ()

    def text(self, a: tuple) -> str:
        raise NotImplementedError

    def encode(self, a: tuple, parser, ofp):
        raise NotImplementedError

    def decode(self, obj, ofp) -> tuple | None:
        """The vocabulary tuple for a Ryu action object, or None if it is not this kind's."""
        raise NotImplementedError

    def execute(self, a: tuple, ex: Execution) -> None:
        raise NotImplementedError


class Output(Action):
    name, decodes = "output", ("OFPActionOutput",)

    def text(self, a):
        return f"output:{_port_text(a[1])}"

    def encode(self, a, parser, ofp):
        return parser.OFPActionOutput(a[1], 0xffff)

    def decode(self, obj, ofp):
        return None if obj.port == ofp.OFPP_CONTROLLER else ("output", obj.port)

    def execute(self, a, ex):
        if ex.output is not None:
            raise NotImplementedError("more than one output")
        ex.output = a[1]


class Controller(Action):
    name, decodes = "controller", ("OFPActionOutput",)

    def text(self, a):
        return "CONTROLLER:65535"

    def encode(self, a, parser, ofp):
        return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)

    def decode(self, obj, ofp):
        return ("controller",) if obj.port == ofp.OFPP_CONTROLLER else None

    def execute(self, a, ex):
        ex.stop = ("controller", None)


class SetField(Action):
    name, decodes = "set_field", ("OFPActionSetField",)

    def text(self, a):
        return f"set_field:{FIELDS[a[1]].text(a[2])}->{FIELDS[a[1]].ofctl_name}"

    def encode(self, a, parser, ofp):
        return parser.OFPActionSetField(**{a[1]: a[2]})

    def decode(self, obj, ofp):
        return ("set_field", obj.key, obj.value)

    def execute(self, a, ex):
        ex.pkt[a[1]] = value_to_int(a[1], a[2])


class Move(Action):
    """NXM move of the low n_bits of src to the low n_bits of dst."""
    name, decodes = "move", ("NXActionRegMove",)

    def text(self, a):
        _, src, dst, n_bits = a
        return (f"move:{FIELDS[src].nxm}{_nxm_bits(src, n_bits)}->"
                f"{FIELDS[dst].nxm}{_nxm_bits(dst, n_bits)}")

    def encode(self, a, parser, ofp):
        return parser.NXActionRegMove(src_field=a[1], dst_field=a[2], n_bits=a[3], src_ofs=0,
                                      dst_ofs=0)

    def decode(self, obj, ofp):  # Ryu reads NXM fields back as "eth_src_nxm"
        return ("move", obj.src_field.removesuffix("_nxm"), obj.dst_field.removesuffix("_nxm"),
                obj.n_bits)

    def execute(self, a, ex):
        _, src, dst, n_bits = a
        mask = (1 << n_bits) - 1
        ex.pkt[dst] = (ex.pkt.get(dst, 0) & ~mask) | (ex.pkt.get(src, 0) & mask)


class Push(Action):
    """Push a whole field on the NXM stack (the compiler pops within the flow that pushed)."""
    name, decodes = "push", ("NXActionStackPush",)
    ryu_class = "NXActionStackPush"

    def text(self, a):
        return f"{self.name}:{FIELDS[a[1]].nxm}[]"

    def encode(self, a, parser, ofp):
        return getattr(parser, self.ryu_class)(field=a[1], start=0, end=FIELD_BITS[a[1]] - 1)

    def decode(self, obj, ofp):
        return (self.name, obj.field.removesuffix("_nxm"))

    def execute(self, a, ex):
        ex.stack.append(ex.pkt.get(a[1], 0))


class Pop(Push):
    name, decodes = "pop", ("NXActionStackPop",)
    ryu_class = "NXActionStackPop"

    def execute(self, a, ex):
        ex.pkt[a[1]] = ex.stack.pop()


class DecTtl(Action):
    """OVS drops the packet when the TTL would reach 0."""
    name, decodes = "dec_ttl", ("OFPActionDecNwTtl",)

    def text(self, a):
        return "dec_ttl"

    def encode(self, a, parser, ofp):
        return parser.OFPActionDecNwTtl()

    def decode(self, obj, ofp):
        return ("dec_ttl",)

    def execute(self, a, ex):
        if ex.pkt.get("nw_ttl", 64) <= 1:
            ex.stop = ("drop", "TTL exceeded")
        else:
            ex.pkt["nw_ttl"] = ex.pkt.get("nw_ttl", 64) - 1


CT_COMMIT = 1           # NX_CT_F_COMMIT
CT_NO_RECIRC = 0xff     # NX_CT_RECIRC_NONE
NAT_SRC, NAT_DST = 1, 2  # NX_NAT_F_SRC, NX_NAT_F_DST


def _padded(nx_action):
    """`nx_action` serialized with the padding to 8 bytes that its length says it has. Ryu 4.34
    appends a nested action's body to ct()'s unpadded, so a nat() with a port range (28 bytes,
    declared 32) leaves the message 4 bytes shorter than its lengths say, and OVS refuses it
    (OFPBRC_BAD_LEN): a service's group, whose bucket ends with it, never got installed."""
    unpadded = nx_action.serialize_body
    header = 10  # type, len, experimenter, subtype: what precedes the body (ryu's NXAction)

    def serialize_body():
        data = unpadded()
        return data + bytes(-(header + len(data)) % 8)
    nx_action.serialize_body = serialize_body
    return nx_action


class Ct(Action):
    """OVS ct(): ("ct", commit, zone, table, nat). commit: bool; zone: int (16 bits); table: a
    stage name or None (recirculate there with ct_state set; nothing may follow it); nat: None |
    ("nat",) (apply the connection's existing mapping, e.g. un-NAT a reply) | ("snat", ip) |
    ("dnat", ip) | ("dnat", ip, port) (a new mapping; only with commit=True)."""
    name, decodes = "ct", ("NXActionCT",)

    def text(self, a):
        _, commit, zone, table, nat = a
        args = ["commit"] if commit else []
        args.append(f"zone={zone}")
        if table is not None:
            args.append(f"table={TABLE_BY_NAME[table].id}")
        if nat is not None:
            if nat[0] == "nat":
                args.append("nat")
            else:
                where = {"snat": "src", "dnat": "dst"}[nat[0]]
                args.append(f"nat({where}={nat[1]}{':' + str(nat[2]) if len(nat) > 2 else ''})")
        return f"ct({','.join(args)})"

    def encode(self, a, parser, ofp):
        _, commit, zone, table, nat = a
        nat_actions = []
        if nat is not None:
            if nat[0] == "nat":
                nat_actions.append(parser.NXActionNAT(flags=0))
            else:
                ports = {"range_proto_min": nat[2], "range_proto_max": nat[2]} if len(nat) > 2 else {}
                nat_actions.append(_padded(parser.NXActionNAT(
                    flags=NAT_SRC if nat[0] == "snat" else NAT_DST, range_ipv4_min=nat[1],
                    range_ipv4_max=nat[1], **ports)))
        return parser.NXActionCT(
            flags=CT_COMMIT if commit else 0, zone_src="", zone_ofs_nbits=zone,
            recirc_table=CT_NO_RECIRC if table is None else TABLE_BY_NAME[table].id, alg=0,
            actions=nat_actions)

    def decode(self, obj, ofp):
        nat = None
        for inner in obj.actions:
            if type(inner).__name__ == "NXActionNAT":
                kind = "snat" if inner.flags & NAT_SRC else "dnat" if inner.flags & NAT_DST else "nat"
                nat = ("nat",) if kind == "nat" else (kind, inner.range_ipv4_min)
                if kind != "nat" and inner.range_proto_min is not None:
                    nat = (*nat, inner.range_proto_min)
        table = None if obj.recirc_table == CT_NO_RECIRC else _stage_name(obj.recirc_table)
        return ("ct", bool(obj.flags & CT_COMMIT), obj.zone_ofs_nbits, table, nat)

    def execute(self, a, ex):
        _, commit, zone, table, nat = a
        state, done = ex.conntrack.execute(ex.host, ex.pkt, commit, zone, nat)
        ex.notes.append("; ".join(filter(None, (
            f"ct(zone={zone}{', ' + ' '.join(map(str, nat)) if nat else ''})",
            format_ct_state(state), done))))
        if table is not None:
            ex.pkt["ct_state"], ex.pkt["ct_zone"] = state, zone
            ex.stop = ("goto", TABLE_BY_NAME[table].id)


class CtClear(Action):
    name, decodes = "ct_clear", ("NXActionCTClear",)

    def text(self, a):
        return "ct_clear"

    def encode(self, a, parser, ofp):
        return parser.NXActionCTClear()

    def decode(self, obj, ofp):
        return ("ct_clear",)

    def execute(self, a, ex):
        ex.pkt["ct_state"], ex.pkt["ct_zone"] = 0, 0


class Conjunction(Action):
    """("conjunction", id, clause, n_clauses), clause 1-based as ovs-ofctl writes it (the wire,
    and so Ryu, counts from 0). A flow with conjunction actions has no other actions; the tracer
    evaluates it as part of the table lookup (see flows.trace), never as an action."""
    name, decodes = "conjunction", ("NXActionConjunction",)

    def text(self, a):
        return f"conjunction({a[1]},{a[2]}/{a[3]})"

    def encode(self, a, parser, ofp):
        return parser.NXActionConjunction(clause=a[2] - 1, n_clauses=a[3], id_=a[1])

    def decode(self, obj, ofp):
        return ("conjunction", obj.id, obj.clause + 1, obj.n_clauses)

    def execute(self, a, ex):
        raise AssertionError("conjunction flows are resolved by the lookup, not executed")


class Group(Action):
    """("group", group_id): hand the packet to that group of the host (flows.model.Group)."""
    name, decodes = "group", ("OFPActionGroup",)

    def text(self, a):
        return f"group:{a[1]}"

    def encode(self, a, parser, ofp):
        return parser.OFPActionGroup(a[1])

    def decode(self, obj, ofp):
        return ("group", obj.group_id)

    def execute(self, a, ex):
        group = ex.groups(a[1])
        if group is None or not group.buckets:
            ex.stop = ("drop", f"group {a[1]} {'has no buckets' if group else 'does not exist'}")
            return
        bucket = group.choose(ex.pkt)
        ex.notes.append(f"group {a[1]}: bucket {group.buckets.index(bucket)} of "
                        f"{len(group.buckets)}")
        for action in bucket.actions:
            ACTIONS[action[0]].execute(action, ex)
            if ex.stop:
                return


NX_HASH_FIELDS_NW_SRC = 4  # OVS's nx_hash_fields (Ryu names only the first two)
NX_MP_ALG_HRW = 2


class Multipath(Action):
    """("multipath", basis, n_links, dst): dst (16 low bits of a register) = which of n_links
    the packet's source address picks, by highest random weight, so removing a link moves only
    the sources that picked it. OVS's hash is its own; the tracer's is stable but different."""
    name, decodes = "multipath", ("NXActionMultipath",)

    def text(self, a):
        return f"multipath(nw_src,{a[1]},hrw,{a[2] - 1},0,{FIELDS[a[3]].nxm}[0..15])"

    def encode(self, a, parser, ofp):
        return parser.NXActionMultipath(fields=NX_HASH_FIELDS_NW_SRC, basis=a[1],
                                        algorithm=NX_MP_ALG_HRW, max_link=a[2] - 1, arg=0,
                                        ofs_nbits=15, dst=a[3])

    def decode(self, obj, ofp):
        return ("multipath", obj.basis, obj.max_link + 1, obj.dst.removesuffix("_nxm"))

    def execute(self, a, ex):
        source = ex.pkt.get("ipv4_src", 0)
        ex.pkt[a[3]] = max(range(a[2]), key=lambda i: zlib.crc32(f"{source}/{a[1]}/{i}".encode()))


class Meter(Action):
    """("meter", meter_id), first in a flow's actions: an OpenFlow meter instruction."""
    name, decodes = "meter", ()

    def text(self, a):
        return f"meter:{a[1]}"

    def encode(self, a, parser, ofp):
        return parser.OFPInstructionMeter(a[1], ofp.OFPIT_METER)

    def execute(self, a, ex):
        ex.meter = a[1]


class Goto(Action):
    """("goto", stage name), last: a goto-table instruction."""
    name, decodes = "goto", ()

    def text(self, a):
        return f"goto_table:{_table_id(a[1])}"

    def encode(self, a, parser, ofp):
        return parser.OFPInstructionGotoTable(TABLE_BY_NAME[a[1]].id)

    def execute(self, a, ex):
        ex.stop = ("goto", TABLE_BY_NAME[a[1]].id)


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Output(), Controller(), SetField(), Move(), Push(), Pop(), DecTtl(), Ct(), CtClear(),
    Conjunction(), Group(), Multipath(), Meter(), Goto())}
_DECODERS: dict[str, list[Action]] = {}
for _kind in ACTIONS.values():
    for _cls in _kind.decodes:
        _DECODERS.setdefault(_cls, []).append(_kind)


def _stage_name(table_id: int) -> str | int:
    """A table id read from a switch: its stage's name (an unknown id stays an int, so the flow
    differs from every desired one and the diff replaces it)."""
    table = TABLE_BY_ID.get(table_id)
    return table.name if table else table_id


def _table_id(stage: str | int) -> int:
    return stage if isinstance(stage, int) else TABLE_BY_NAME[stage].id


def format_ct_state(state: int) -> str:
    return "".join(f"+{name}" for name, bit in CT_FLAGS if state & bit) or "-trk"


def actions_text(actions: tuple) -> str:
    return ",".join(ACTIONS[a[0]].text(a) if a[0] in ACTIONS else f"unknown:{a[1:]}"
                    for a in actions) or "drop"


def encode_actions(parser, ofp, actions: tuple) -> list:
    """A flow's actions as OpenFlow 1.3 instructions: meter, apply-actions, goto-table."""
    instructions = [ACTIONS["meter"].encode(a, parser, ofp) for a in actions if a[0] == "meter"]
    applied = [ACTIONS[a[0]].encode(a, parser, ofp) for a in actions
               if a[0] not in ("meter", "goto")]
    if applied:
        instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, applied))
    instructions += [ACTIONS["goto"].encode(a, parser, ofp) for a in actions if a[0] == "goto"]
    return instructions


def decode_action(obj, ofp) -> tuple:
    for kind in _DECODERS.get(type(obj).__name__, ()):
        decoded = kind.decode(obj, ofp)
        if decoded is not None:
            return decoded
    return ("unknown", type(obj).__name__)  # not ours: differs from any desired flow


def decode_instructions(instructions, ofp) -> tuple:
    """The inverse of encode_actions."""
    actions: list[tuple] = []
    for inst in instructions:
        name = type(inst).__name__
        if name == "OFPInstructionMeter":
            actions.insert(0, ("meter", inst.meter_id))
        elif name == "OFPInstructionGotoTable":
            actions.append(("goto", _stage_name(inst.table_id)))
        elif hasattr(inst, "actions"):
            actions.extend(decode_action(a, ofp) for a in inst.actions)
        else:
            actions.append(("unknown", name))
    return tuple(actions)

