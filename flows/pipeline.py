"""The br-int pipeline as data: tables, registers and the cookie layout, each named once.

Everything else (compiler, tracer, ofctl renderer, docgen) reads these names; nothing else
hard-codes a table id, a register or a cookie bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

DROP = "drop"  # br-int runs with fail_mode=secure and OF1.3 table-miss drops.


@dataclass(frozen=True)
class Table:
    name: str
    id: int
    purpose: str
    miss: str = DROP
    reserved_for: str = ""  # non-empty: the id is taken now, the flows come with that later work


# Ids leave gaps of 10 so a later stage can slot in without renumbering installed flows.
CLASSIFY = Table(
    "CLASSIFY", 0,
    "Local port: load the network key (metadata) and logical inport (reg14), go to PORT_SECURITY. "
    "Geneve port: network key from tun_id, set the from-tunnel flag, go straight to L2_LOOKUP "
    "(the sender's host already did port security and ARP).")
PORT_SECURITY = Table(
    "PORT_SECURITY", 10,
    "IPv4 and ARP are let through only with the port's own MAC and IP (eth_src, ipv4_src, "
    "arp_sha, arp_spa); everything else, IPv6 included, misses and is dropped.")
ARP_RESPONDER = Table(
    "ARP_RESPONDER", 20,
    "ARP requests for a known IP of the network are answered in place and sent back out the "
    "in_port; requests for unknown IPs are dropped; all other traffic goes to L2_LOOKUP.")
ACL_EGRESS = Table(
    "ACL_EGRESS", 30, "Policy from the sending port's point of view (ct, conjunction).",
    reserved_for="ACL issue")
L3_GATE = Table(
    "L3_GATE", 40, "Frames to a router-port MAC go to ROUTING, others to L2_LOOKUP.",
    reserved_for="L3 issue")
ROUTING = Table(
    "ROUTING", 50, "Longest-prefix match; rewrite metadata, eth_src, dec_ttl.",
    reserved_for="L3 issue")
NEIGHBOR = Table(
    "NEIGHBOR", 60, "(network, ipv4_dst) sets eth_dst to the known port MAC.",
    reserved_for="L3 issue")
GATEWAY = Table(
    "GATEWAY", 70, "ARP and ping for the gateway IPs answered in flows.",
    reserved_for="L3 issue")
NAT = Table(
    "NAT", 80, "SNAT/DNAT with ct on the gateway host.",
    reserved_for="NAT issue")
L2_LOOKUP = Table(
    "L2_LOOKUP", 90,
    "(network, eth_dst) of a local port loads the logical outport (reg15) and goes to OUTPUT; "
    "of a remote port (only if not from a tunnel: split horizon) sets tun_id=VNI, "
    "tun_dst=that host and outputs to the Geneve port. Broadcast, multicast and unknown "
    "unicast are dropped: there is no flooding and no MAC learning.")
ACL_INGRESS = Table(
    "ACL_INGRESS", 100, "Policy from the receiving port's point of view.",
    reserved_for="ACL issue")
OUTPUT = Table("OUTPUT", 110, "Output to the ofport of the logical outport (reg15).")

TABLES: tuple[Table, ...] = (
    CLASSIFY, PORT_SECURITY, ARP_RESPONDER, ACL_EGRESS, L3_GATE, ROUTING, NEIGHBOR, GATEWAY,
    NAT, L2_LOOKUP, ACL_INGRESS, OUTPUT,
)
TABLE_BY_ID: dict[int, Table] = {t.id: t for t in TABLES}

# --------------------------------------------------------------------------------------------
# Registers and metadata
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Register:
    name: str
    field: str  # Ryu OXM/NXM field name
    bits: tuple[int, int]  # inclusive (low, high)
    meaning: str
    reserved_for: str = ""


REG_DATAPATH = "metadata"
REG_INPORT = "reg14"
REG_OUTPORT = "reg15"
REG_FLAGS = "reg10"
REG_CT_ZONE = "reg13"

# reg10 flag bits. Registers are zero when a packet enters the pipeline, so CLASSIFY may write
# the whole register; later writers of other flags must use a masked load.
FLAG_FROM_TUNNEL = 1 << 0
FLAG_ROUTED = 1 << 1  # reserved for the L3 issue

REGISTERS: tuple[Register, ...] = (
    Register("datapath", REG_DATAPATH, (0, 23), "logical datapath key = network VNI (24 bits)"),
    Register("inport", REG_INPORT, (0, 31), "logical inport = port key"),
    Register("outport", REG_OUTPORT, (0, 31), "logical outport = port key"),
    Register("from_tunnel", REG_FLAGS, (0, 0),
             "frame came in on the Geneve port: never tunnel it again (split horizon)"),
    Register("routed", REG_FLAGS, (1, 1), "frame went through ROUTING", reserved_for="L3 issue"),
    Register("ct_zone", REG_CT_ZONE, (0, 15), "conntrack zone", reserved_for="ACL/NAT issues"),
)

# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------

# The controller creates one flow-based Geneve port (options remote_ip=flow, key=flow) on every
# host with ofport_request=TUNNEL_OFPORT, so flows can name it without asking OVSDB.
TUNNEL_OFPORT = 65000
OFPP_IN_PORT = 0xFFFFFFF8  # OpenFlow "send back out the port it came in on"

# --------------------------------------------------------------------------------------------
# Cookies: round (16) | category (8) | object key (40)
# --------------------------------------------------------------------------------------------


class Category(IntEnum):
    STATIC = 1
    HOST = 2
    NETWORK = 3
    PORT = 4
    ROUTER = 5


@dataclass(frozen=True)
class CookieField:
    name: str
    bits: tuple[int, int]  # inclusive (low, high)
    meaning: str


COOKIE_FIELDS: tuple[CookieField, ...] = (
    CookieField("object key", (0, 39), "port key, network VNI, host key, ...; 0 for STATIC"),
    CookieField("category", (40, 47),
                ", ".join(f"{c.name}={c.value}" for c in Category)),
    CookieField("round", (48, 63),
                "controller generation for stale-flow cleanup; always 0 for now "
                "(reserved for the hitless-restart issue)"),
)

_KEY_BITS = 40
_CATEGORY_SHIFT = 40
_ROUND_SHIFT = 48
COOKIE_OBJECT_MASK = (1 << _ROUND_SHIFT) - 1  # category + key: identifies the object, any round


def make_cookie(category: int, key: int, round: int = 0) -> int:
    if not 0 <= key < 1 << _KEY_BITS:
        raise ValueError(f"cookie key {key} does not fit in {_KEY_BITS} bits")
    if not 0 <= category < 1 << 8:
        raise ValueError(f"cookie category {category} does not fit in 8 bits")
    if not 0 <= round < 1 << 16:
        raise ValueError(f"cookie round {round} does not fit in 16 bits")
    return (round << _ROUND_SHIFT) | (category << _CATEGORY_SHIFT) | key


def parse_cookie(cookie: int) -> tuple[int, int, int]:
    """Return (round, category, key)."""
    return (cookie >> _ROUND_SHIFT, (cookie >> _CATEGORY_SHIFT) & 0xFF,
            cookie & ((1 << _KEY_BITS) - 1))


STATIC_COOKIE = make_cookie(Category.STATIC, 0)
