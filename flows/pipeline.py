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
    next: str = ""  # the stage a packet goes on to when this one lets it pass (see `proceed`)


# Ids leave gaps of 10 so a later stage can slot in without renumbering installed flows.
CLASSIFY = Table(
    "CLASSIFY", 0, next="PORT_SECURITY", purpose=
    "Local port, untagged frames only (vlan_vid=OFPVID_NONE; a VLAN-tagged frame, priority "
    "tag included, misses and is dropped): load the network key (metadata) and logical inport "
    "(reg14), go to PORT_SECURITY. "
    "Geneve port: network key from tun_id, set the from-tunnel flag, go straight to L2_LOOKUP "
    "(the sender's host already did port security, ARP and routing); on a gateway host, "
    "tun_id = a router key goes to GATEWAY. Uplink port, untagged frames only: go to "
    "UPLINK_IN.")
PORT_SECURITY = Table(
    "PORT_SECURITY", 10, next="ARP_RESPONDER", purpose=
    "IPv4 and ARP are let through only with the port's own MAC and IP (eth_src, ipv4_src, "
    "arp_sha, arp_spa); everything else, IPv6 included, misses and is dropped.")
ARP_RESPONDER = Table(
    "ARP_RESPONDER", 20, next="DNS", purpose=
    "ARP requests for a known IP of the network are answered in place and sent back out the "
    "in_port; requests for unknown IPs are dropped; all other traffic goes to L2_LOOKUP.")
DNS = Table(
    "DNS", 22, next="SERVICE", purpose=
    "UDP queries to the network's resolver (its gateway IP, port 53) go to the controller "
    "through the host's DNS meter, which answers them; nothing else leaves the data path.")
SERVICE = Table(
    "SERVICE", 24, next="ACL_EGRESS", purpose=
    "Sending host: TCP/UDP/SCTP to a Service's VIP and port loads the service key (reg1) and "
    "goes through ct(zone=the client network's LB zone, nat) into SERVICE_NAT, which applies an "
    "existing connection's DNAT. A backend's reply to a hairpin connection (to the VIP, from "
    "the target port) is un-SNATed and un-DNATed here. Everything else passes.")
SERVICE_NAT = Table(
    "SERVICE_NAT", 25, next="SERVICE_ROUTE", purpose=
    "Established: on to SERVICE_ROUTE. New: the service port's select group picks a ready "
    "backend, whose bucket commits the DNAT to it (or, with sessionAffinity ClientIP, a hash "
    "of the client address picks it); with no backend the connection is rejected by the "
    "controller (TCP RST, ICMP port unreachable) through the reject meter.")
SERVICE_AFFINITY = Table(
    "SERVICE_AFFINITY", 26, next="SERVICE_ROUTE", purpose=
    "sessionAffinity ClientIP: the backend index the client address hashed to (reg2) commits "
    "the DNAT to that backend.")
SERVICE_HAIRPIN = Table(
    "SERVICE_HAIRPIN", 27, next="OUTPUT", purpose=
    "A backend's reply to its own connection through its service: after un-SNAT (hairpin "
    "zone) it is un-DNATed (LB zone) and delivered straight back to it.")
SERVICE_ROUTE = Table(
    "SERVICE_ROUTE", 28, next="ACL_EGRESS", purpose=
    "(service, client network, backend address): deliver to the backend's network and MAC "
    "(the router's leg MAC as source when they differ, TTL decremented); a backend that is its "
    "own client is also SNATed to the VIP (hairpin). Then egress policy, as for any packet.")
ACL_EGRESS = Table(
    "ACL_EGRESS", 30, next="L3_GATE", purpose=
    "NetworkPolicy, sending side: IPv4 from a port that any policy selects goes through "
    "ct(zone=its network's key) into ACL_EGRESS_EVAL; everything else passes.")
ACL_EGRESS_EVAL = Table(
    "ACL_EGRESS_EVAL", 32, next="L3_GATE", purpose=
    "Established and related packets pass, invalid ones are dropped. A new connection from a "
    "port selected for egress passes only if a rule of a policy selecting it allows it "
    "(conjunctive matches: selected port, peer address, protocol and port), and is then "
    "committed; from a port selected for ingress only, it is committed and passes. The rest is "
    "dropped (default deny).")
UPLINK_IN = Table(
    "UPLINK_IN", 35,
    "Gateway host, frames from the uplink: ARP requests for the external or a floating IP are "
    "answered with the external MAC; the next hop's ARP reply goes to the controller; IPv4 to "
    "the external or a floating IP enters the router (metadata = router key) through "
    "ct(zone=router, nat) (un-SNAT of replies, un-DNAT of floating-IP traffic), recirculating "
    "into L3_GATE.")
L3_GATE = Table(
    "L3_GATE", 40, next="L2_LOOKUP", purpose=
    "IPv4 to a router-port MAC enters the router (metadata = router key) and goes to ROUTING. "
    "From the uplink: established connections go "
    "to ROUTING, new ones only to a floating IP (committed with DNAT), the rest is dropped. "
    "Everything else goes to L2_LOOKUP.")
ROUTING = Table(
    "ROUTING", 50,
    "Longest prefix on (router, ipv4_dst), priority growing with the prefix length: attached "
    "subnets and static routes set the destination network (metadata), the router-port MAC "
    "as eth_src, the next hop (reg0) and dec_ttl. The default route (lowest priority) leads "
    "to the router's gateway host: GATEWAY there, the tunnel with tun_id = router key "
    "elsewhere. Above all routes, an echo request to any of the router's addresses is "
    "answered in place, back out of the port it came from.")
NEIGHBOR = Table(
    "NEIGHBOR", 60,
    "(network, next hop) sets eth_dst to that port's MAC, known from the NB (no ARP); "
    "unknown next hops are dropped.")
GATEWAY = Table(
    "GATEWAY", 70,
    "Gateway host, traffic leaving a router for the outside: ct(zone=router, nat) applies an "
    "existing mapping (replies of floating-IP connections) and recirculates into NAT.")
NAT = Table(
    "NAT", 80,
    "Gateway host: new outgoing connections are committed with SNAT to the port's floating "
    "IP or else to the external IP; established ones go on to UPLINK_OUT.")
UPLINK_OUT = Table(
    "UPLINK_OUT", 85,
    "Gateway host: eth_src = external MAC, eth_dst = next hop MAC, output to the uplink; "
    "while the next hop's MAC is unknown this misses and the packet is dropped.")
L2_LOOKUP = Table(
    "L2_LOOKUP", 90, next="ACL_INGRESS", purpose=
    "(network, eth_dst) of a local port loads the logical outport (reg15) and goes to OUTPUT; "
    "of a remote port (only if not from a tunnel: split horizon) sets tun_id=VNI, "
    "tun_dst=that host and outputs to the Geneve port. Broadcast, multicast and unknown "
    "unicast are dropped: there is no flooding and no MAC learning.")
ACL_INGRESS = Table(
    "ACL_INGRESS", 100, next="SERVICE_REPLY", purpose=
    "NetworkPolicy, receiving side (on the receiver's host, wherever the sender is): IPv4 to a "
    "port that any policy selects goes through ct(zone=its network's key) into "
    "ACL_INGRESS_EVAL; everything else passes.")
ACL_INGRESS_EVAL = Table(
    "ACL_INGRESS_EVAL", 102, next="SERVICE_REPLY", purpose=
    "As ACL_EGRESS_EVAL, for the receiving port: new connections to a port selected for ingress "
    "pass only if a rule allows them (peer = the source address).")
SERVICE_REPLY = Table(
    "SERVICE_REPLY", 105, next="OUTPUT", purpose=
    "Client's host: a backend's reply (from its address and target port) to a local port goes "
    "through ct(zone=LB zone of the port's network, nat), which turns its source back into the "
    "VIP, then to OUTPUT.")
OUTPUT = Table("OUTPUT", 110, "Output to the ofport of the logical outport (reg15).")

TABLES: tuple[Table, ...] = (
    CLASSIFY, PORT_SECURITY, ARP_RESPONDER, DNS, SERVICE, SERVICE_NAT, SERVICE_AFFINITY,
    SERVICE_HAIRPIN, SERVICE_ROUTE,
    ACL_EGRESS, ACL_EGRESS_EVAL, UPLINK_IN, L3_GATE, ROUTING, NEIGHBOR, GATEWAY, NAT, UPLINK_OUT,
    L2_LOOKUP, ACL_INGRESS, ACL_INGRESS_EVAL, SERVICE_REPLY, OUTPUT,
)
TABLE_BY_ID: dict[int, Table] = {t.id: t for t in TABLES}
TABLE_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}


def goto(table: Table) -> tuple:
    """The action that sends a packet on to `table`'s stage (flows name stages, not ids)."""
    return ("goto", table.name)


def proceed(table: Table) -> tuple:
    """The action that lets a packet pass `table`'s stage on to the stage after it. A stage that
    becomes active (ACL_EGRESS, load balancing) slots in by changing one `next`, and the flows
    of the stages around it follow without being rewritten."""
    return ("goto", table.next)

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
REG_NEXT_HOP = "reg0"
REG_SERVICE = "reg1"
REG_BACKEND = "reg2"
REG_LB_CHECKED = "reg3"

# reg10 flag bits. Registers are zero when a packet enters the pipeline, so CLASSIFY may write
# the whole register; later writers of other flags must use a masked load.
FLAG_FROM_TUNNEL = 1 << 0

REGISTERS: tuple[Register, ...] = (
    Register("datapath", REG_DATAPATH, (0, 23),
             "logical datapath key = network VNI or router key (one 24-bit space)"),
    Register("next_hop", REG_NEXT_HOP, (0, 31),
             "IPv4 next hop chosen by ROUTING, looked up in NEIGHBOR"),
    Register("service", REG_SERVICE, (0, 23),
             "service key, set by SERVICE for its VIP (kept across ct recirculation)"),
    Register("backend", REG_BACKEND, (0, 15),
             "sessionAffinity ClientIP: the backend index the client address hashes to"),
    Register("lb_checked", REG_LB_CHECKED, (0, 0),
             "gateway host: this packet from a backend was already looked up in the LB zone"),
    Register("inport", REG_INPORT, (0, 31), "logical inport = port key"),
    Register("outport", REG_OUTPORT, (0, 31), "logical outport = port key"),
    Register("from_tunnel", REG_FLAGS, (0, 0),
             "frame came in on the Geneve port: never tunnel it again (split horizon)"),
)

# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------

# The controller creates one flow-based Geneve port (options remote_ip=flow, key=flow) on every
# host with ofport_request=TUNNEL_OFPORT, so flows can name it without asking OVSDB.
TUNNEL_OFPORT = 65000
# On a router's gateway host the uplink interface is plugged into br-int with this ofport.
UPLINK_OFPORT = 65001
OFPP_IN_PORT = 0xFFFFFFF8  # OpenFlow "send back out the port it came in on"

# --------------------------------------------------------------------------------------------
# Meters (per host) and conntrack zones
# --------------------------------------------------------------------------------------------

DNS_METER = 1  # packets per second of DNS queries a host sends to the controller
REJECT_METER = 2  # ... of connections to a service without backends, to be rejected
DNS_RATE, DNS_BURST = 200, 50
REJECT_RATE, REJECT_BURST = 100, 20
# Conntrack zones: a network's ACLs use its key, a router's NAT its key (one key space, so they
# never meet); every service DNAT uses LB_ZONE: VIPs are unique, so original tuples never clash,
# and when two clients with one address and port (unrouted networks may share a CIDR) reach
# backends with one address and port, conntrack gives the later one another source port (measured
# on OVS 3.1). A zone per network would not fit: the keys take the 16-bit zone space already. (A
# direct connection beside a VIP one is a known limitation, README "Known limitations of
# Services".) Hairpin SNAT to the VIP has a zone of its own. Keys from LB_ZONE up are refused
# where they would be zones.
LB_ZONE = 0xFFFE
HAIRPIN_ZONE = 0xFFFF

# --------------------------------------------------------------------------------------------
# Cookies: round (16) | category (8) | object key (40)
# --------------------------------------------------------------------------------------------


class Category(IntEnum):
    STATIC = 1
    HOST = 2
    NETWORK = 3
    PORT = 4
    ROUTER = 5
    POLICY = 6  # a NetworkPolicy's rules on a host (key: flows.acl.policy_ids)
    ACL = 7  # a selected port's conntrack and default-deny flows (key: the port key)
    SERVICE = 8  # a Service's VIP, groups and routes on a host (key: the service key)


@dataclass(frozen=True)
class CookieField:
    name: str
    bits: tuple[int, int]  # inclusive (low, high)
    meaning: str


COOKIE_FIELDS: tuple[CookieField, ...] = (
    CookieField("object key", (0, 39),
                "port key, network VNI, router key, host key, ...; 0 for STATIC"),
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
