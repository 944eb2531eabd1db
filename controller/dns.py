"""Weft's DNS: the names of ports and services, answered from the NB, one frame in, one frame out.

Each Weft network's resolver is its gateway_ip, UDP port 53. The switch sends the controller only
UDP/53 frames addressed to that IP from a local container port, through a meter that limits them
per host; the controller answers with a packet-out of the frame `DnsResponder.answer` returns, back
out of the port the query came in. This module knows neither Ryu nor eventlet: the caller passes a
`spawn` function for the forwards to an upstream resolver, and a `send` function for their replies.

Names (as Kubernetes and Docker name them), for a port P on network N and a service S on network N:
    P, P.N, P.N.<domain>          the port's IP
    S, S.N, S.N.svc.<domain>      the service's cluster IP
with <domain> `weft` unless configured. A bare P or S is looked up in the querying port's own
network, as a search path would; where a port and a service share a name, the service wins.
"""
import ipaddress
import logging
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from controller import frames

LOG = logging.getLogger("weft.dns")

DOMAIN = "weft"
UDP_LIMIT = 512     # a reply to a query without EDNS (RFC 1035)
EDNS_LIMIT = 1232   # the most we send with EDNS: fits any path's MTU without fragments (DNS flag day 2020)
REVERSE = ".in-addr.arpa"

# Counters, all present from the start so that a dashboard sees zeros rather than gaps.
COUNTERS = ("queries", "answered", "nxdomain", "refused", "forwarded", "servfail", "notimp",
            "dropped_rate", "malformed")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the zone says about a name: an rcode and, for NOERROR, the records of the asked type
    (IPv4 addresses for A, names for PTR; none: NODATA, the name exists without that type)."""
    rcode: int = dns.rcode.NOERROR
    rdtype: int = dns.rdatatype.A
    records: tuple[str, ...] = ()


def resolver_settings(network, gateway_ip, domain=DOMAIN):
    """What a container of `network` puts in its resolv.conf (the CNI result's `dns`): the resolver
    is the network's gateway IP; the search path makes a bare name a service first (as Kubernetes'
    <namespace>.svc.<domain>), then a port of the network."""
    network = network.lower()
    return {"nameservers": [gateway_ip], "search": [f"{network}.svc.{domain}", f"{network}.{domain}"]}


NXDOMAIN = Answer(dns.rcode.NXDOMAIN)
NODATA = Answer()


class DnsZone:
    """The names Weft answers. `ports`: records with .name, .network, .ip (flows.model.PortState);
    `services`: records with .name, .network, .cluster_ip (flows.policy.ServiceState). Built whole
    from the NB's contents: a few dict insertions per record (bench/dns_zone.py measures it)."""

    def __init__(self, ports=(), services=(), domain=DOMAIN):
        self.domain = domain.lower().strip(".")
        self._absolute = {}    # "p.n.weft", "s.n.svc.weft" -> ip
        self._qualified = {}   # "p.n", "s.n" -> ip (a service shadows a port of the same name)
        self._short = {}       # (network, "p") -> ip, the search path of the network's own ports
        self._reverse = {}     # (network, ip) -> port fqdn; (None, ip) -> service fqdn
        self._parents = {self.domain}  # names that exist only as parents of names: NODATA, not NXDOMAIN
        svc = f"svc.{self.domain}"
        # Services first, so that a port with the same name does not take their place (setdefault).
        for s in services:
            if s.cluster_ip:
                self._add(s.name.lower(), s.network.lower(), s.cluster_ip, svc, None)
        for p in ports:
            if p.ip:
                self._add(p.name.lower(), p.network.lower(), p.ip, self.domain, p.network.lower())

    def _add(self, name, network, ip, suffix, reverse_scope):
        fqdn = f"{name}.{network}.{suffix}"
        self._absolute.setdefault(fqdn, ip)
        self._qualified.setdefault(f"{name}.{network}", ip)
        self._short.setdefault((network, name), ip)
        self._reverse.setdefault((reverse_scope, ip), fqdn)
        parent = fqdn.partition(".")[2]
        while parent not in self._parents:  # a network's parents once, a dotted name's a few more
            self._parents.add(parent)
            parent = parent.partition(".")[2]

    def owns(self, name):
        """True if `name` (lowercase, no trailing dot) is in Weft's domain: nobody else answers it."""
        return name == self.domain or name.endswith("." + self.domain)

    def lookup(self, qname, qtype, client_network):
        """The Answer for `qname` (text, any case, trailing dot or not) asked by a port of
        `client_network`, or None if the name is not Weft's (the responder forwards or refuses)."""
        name = qname.lower()
        if name.endswith("."):
            name = name[:-1]
        if name.endswith(REVERSE):
            return self._lookup_reverse(name, qtype, client_network)
        if self.owns(name):
            ip = self._absolute.get(name)
            if ip is None:
                return NODATA if name in self._parents else NXDOMAIN
        else:
            ip = self._short.get((client_network.lower(), name)) or self._qualified.get(name)
            if ip is None:
                return None
        if qtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            return Answer(records=(ip,))
        return NODATA

    def _lookup_reverse(self, name, qtype, client_network):
        try:
            ip = str(ipaddress.IPv4Address(".".join(reversed(name[:-len(REVERSE)].split(".")))))
        except ValueError:
            return None  # not a whole IPv4 address: not ours
        target = self._reverse.get((client_network.lower(), ip)) or self._reverse.get((None, ip))
        if target is None:
            return None
        if qtype in (dns.rdatatype.PTR, dns.rdatatype.ANY):
            return Answer(rdtype=dns.rdatatype.PTR, records=(target + ".",))
        return NODATA


class CachedZone:
    """A zone_fn that builds the zone only when asked after a change: NB changes call invalidate(),
    which costs nothing, so a burst of changes costs one build, and none while nobody asks."""

    def __init__(self, build):
        self._build = build
        self._zone = None

    def invalidate(self):
        self._zone = None

    def __call__(self):
        zone = self._zone
        if zone is None:
            zone = self._zone = self._build()
        return zone


class TokenBuckets:
    """One token bucket per key: `rate` tokens a second, at most `rate` saved up (one second's burst)."""

    MAX_KEYS = 65536  # the keys come from the wire (source MACs): bound the memory they can take

    def __init__(self, rate, clock):
        self.rate = float(rate)
        self.clock = clock
        self._buckets = {}  # key -> [tokens, time of the last refill]

    def take(self, key):
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_KEYS:
                self._forget_idle(now)
            bucket = self._buckets[key] = [self.rate, now]
        tokens = min(self.rate, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    def _forget_idle(self, now):
        # A bucket that has refilled is the same as a new one: forgetting it changes nothing.
        for key, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * self.rate >= self.rate:
                del self._buckets[key]
        if len(self._buckets) >= self.MAX_KEYS:  # all busy: a flood; start over rather than grow
            self._buckets.clear()


@dataclass(frozen=True, slots=True)
class _Query:
    """The L2-L4 addresses of a query frame, and its UDP payload."""
    eth_dst: bytes
    eth_src: bytes
    ip_src: bytes
    ip_dst: bytes
    sport: int
    dport: int
    payload: bytes


def _parse_frame(frame):
    """The _Query in an Ethernet/IPv4/UDP frame to port 53, or None for anything else."""
    if len(frame) < 14 + 20 + 8 or frame[0] & 1 or frame[6] & 1:
        return None  # too short, or a group MAC on either side: a reply could not go back to it
    if frame[12:14] != b"\x08\x00":
        return None
    ver_ihl, _, total, _, frag, _, proto = struct.unpack_from("!BBHHHBB", frame, 14)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or total < ihl + 8 or 14 + total > len(frame):
        return None
    if frag & 0x3FFF or proto != 17:
        return None  # a fragment (a DNS query over UDP fits one packet), or not UDP
    ip_src, ip_dst = frame[26:30], frame[30:34]
    if not frames.unicast(ip_src) or not frames.unicast(ip_dst):
        return None
    udp = 14 + ihl
    sport, dport, length = struct.unpack_from("!HHH", frame, udp)
    if dport != 53 or sport == 0 or length < 8 or udp + length > 14 + total:
        return None
    return _Query(frame[0:6], frame[6:12], ip_src, ip_dst, sport, dport, bytes(frame[udp + 8:udp + length]))


class DnsResponder:
    """Answers the DNS queries the switch sends up: Weft's names from the zone, others forwarded to
    `upstream` ("IP[:port]") or refused.

    Without an upstream, a name outside Weft gets REFUSED, not NXDOMAIN: Weft is authoritative only
    for its own names, and an NXDOMAIN would tell the client (and any cache) that the name does not
    exist anywhere, whereas REFUSED says "not here", so a stub with a second nameserver asks that
    one. A single-label name (`db`) is the exception: it can only be meant relative to the search
    path, which is Weft's, so without an upstream an unknown one is NXDOMAIN.

    zone_fn() returns the current DnsZone. spawn(fn, *args) runs a forward concurrently (the
    controller's green threads; default: a thread). clock() is for the rate limits (tests step it).
    """

    def __init__(self, zone_fn, upstream=None, ttl=5, *, spawn=None, port_rate=100, host_rate=500,
                 max_forwards=64, timeout=2.0, clock=time.monotonic):
        self.zone_fn = zone_fn
        self.upstream = _parse_upstream(upstream) if upstream else None
        self.ttl = ttl
        self.spawn = spawn or _thread_spawn
        self.max_forwards = max_forwards
        self.timeout = timeout
        self._port_buckets = TokenBuckets(port_rate, clock)
        self._host_buckets = TokenBuckets(host_rate, clock)
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()  # counters and forwards change in forward threads too
        self._forwards = 0
        self._ip_id = random.getrandbits(16)

    def counters(self):
        """A copy of the counters, for metrics and status."""
        with self._lock:
            return dict(self._counters)

    def _count(self, name):
        with self._lock:
            self._counters[name] += 1

    def answer(self, frame, in_network, *, host="", port=None, send=None):
        """The reply frame to the query `frame`, which came in from a port of network `in_network`
        (on `host`, from `port`: the rate limits' keys; default port: the frame's source MAC), or
        None: the frame is dropped, or forwarded upstream, whose answer goes to send(frame) later.

        Never raises on what is in the frame: no IPv4/UDP/53 frame: None; a DNS header that is
        unreadable or a response: None; a readable header with a message that does not parse,
        QDCOUNT != 1, or EDNS that does not parse: FORMERR; EDNS version > 0: BADVERS; an opcode
        other than QUERY: NOTIMP."""
        self._count("queries")
        key = port if port is not None else bytes(frame[6:12])
        if not self._port_buckets.take((host, key)) or not self._host_buckets.take(host):
            self._count("dropped_rate")
            return None
        query = _parse_frame(frame)
        if query is None or len(query.payload) < 12 or query.payload[2] & 0x80:
            self._count("malformed")  # a response is dropped, never answered: no reply loops
            return None
        relay = None if send is None else lambda wire: send(self._frame(query, wire))
        reply = self._reply(query.payload, in_network, relay)
        return None if reply is None else self._frame(query, reply)

    def _reply(self, payload, in_network, relay):
        """The DNS reply to `payload` (a query whose header is readable), or None if forwarded:
        relay(wire) takes the upstream's answer later (None: no forwarding, SERVFAIL)."""
        qid, flags, qdcount = struct.unpack_from("!HHH", payload)
        opcode = (flags >> 11) & 0xF
        if opcode != dns.opcode.QUERY:
            self._count("notimp")
            return _header_reply(qid, flags, dns.rcode.NOTIMP)
        try:
            if qdcount != 1:
                raise dns.exception.FormError("QDCOUNT is not 1")
            msg = dns.message.from_wire(payload)
        except Exception:  # dnspython's parser on untrusted bytes: any failure means "does not parse"
            self._count("malformed")
            return _header_reply(qid, flags, dns.rcode.FORMERR)
        limit = UDP_LIMIT if msg.edns < 0 else max(UDP_LIMIT, min(msg.payload, EDNS_LIMIT))
        if msg.edns > 0:
            self._count("malformed")
            return self._local(msg, dns.rcode.BADVERS, limit)
        question = msg.question[0]
        if question.rdclass != dns.rdataclass.IN or question.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            self._count("refused")  # no other classes, no zone transfers, here or upstream
            return self._local(msg, dns.rcode.REFUSED, limit)
        zone = self.zone_fn()
        name = question.name.to_text(omit_final_dot=True).lower()
        found = zone.lookup(name, question.rdtype, in_network)
        if found is not None:
            self._count("nxdomain" if found.rcode == dns.rcode.NXDOMAIN else "answered")
            return self._local(msg, found.rcode, limit, found, authoritative=True)
        if self.upstream is None:
            if len(question.name.labels) == 2:  # one label and the root: only ever a search-path name
                self._count("nxdomain")
                return self._local(msg, dns.rcode.NXDOMAIN, limit)
            self._count("refused")
            return self._local(msg, dns.rcode.REFUSED, limit)
        with self._lock:
            busy = relay is None or self._forwards >= self.max_forwards
            if not busy:
                self._forwards += 1
                self._counters["forwarded"] += 1
        if busy:
            self._count("servfail")
            return self._local(msg, dns.rcode.SERVFAIL, limit)
        self.spawn(self._forward, msg, limit, relay)
        return None

    def _local(self, msg, rcode, limit, found=None, authoritative=False):
        """Weft's own reply to `msg`: question echoed, RD copied, RA if there is an upstream."""
        reply = dns.message.make_response(msg, recursion_available=self.upstream is not None,
                                          our_payload=EDNS_LIMIT)
        reply.set_rcode(rcode)
        if authoritative:
            reply.flags |= dns.flags.AA
        if found is not None and found.records:
            reply.answer.append(dns.rrset.from_text_list(msg.question[0].name, self.ttl, dns.rdataclass.IN,
                                                         found.rdtype, list(found.records)))
        return _to_wire(reply, limit)

    def _forward(self, msg, limit, relay):
        """Asks the upstream and relays its reply, or SERVFAIL if none comes in time (a thread)."""
        try:
            client_id = msg.id
            msg.id = random.getrandbits(16)  # not the client's: an off-path spoofer must guess it
            if msg.edns >= 0:  # the upstream's reply must fit what we may relay
                msg.use_edns(msg.edns, msg.ednsflags, limit, options=msg.options)
            try:
                reply, wire = self._ask_upstream(msg)
            except (OSError, dns.exception.DNSException) as e:
                LOG.info("upstream %s:%d: %s for %s", *self.upstream, e, msg.question[0].name)
                reply = None
            msg.id = client_id
            if reply is None:
                self._count("servfail")
                relay(self._local(msg, dns.rcode.SERVFAIL, limit))
            elif len(wire) <= limit:  # relayed as it came, but for the ID: nothing re-encoded
                relay(struct.pack("!H", client_id) + wire[2:])
            else:  # the upstream ignored the size we asked for: what is left of it fits
                reply.id = client_id
                relay(_to_wire(reply, limit))
        finally:
            with self._lock:
                self._forwards -= 1

    def _ask_upstream(self, msg):
        """The upstream's reply to `msg` and its wire form, ignoring datagrams that are not it,
        until the timeout."""
        deadline = time.monotonic() + self.timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(self.upstream)  # a fresh ephemeral port per query, and only its replies
            sock.send(msg.to_wire())
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise dns.exception.Timeout()
                sock.settimeout(left)
                try:
                    data = sock.recv(65535)
                except TimeoutError:
                    raise dns.exception.Timeout() from None
                try:
                    reply = dns.message.from_wire(data)
                except Exception:  # garbage from the network: wait for the real reply
                    continue
                if msg.is_response(reply):
                    return reply, data

    def _frame(self, query, wire):
        """The Ethernet/IPv4/UDP frame carrying `wire` back to where `query` came from."""
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        udp = struct.pack("!HHHH", query.dport, query.sport, 8 + len(wire), 0) + wire
        csum = frames.l4_checksum(query.ip_dst, query.ip_src, 17, udp) or 0xFFFF  # 0: "no checksum"
        udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
        return frames.ipv4_frame(query.eth_src, query.eth_dst, query.ip_dst, query.ip_src, 17, udp, self._ip_id)


def _header_reply(qid, flags, rcode):
    """A reply with no sections, for a query whose header is all that can be read: ID, opcode and
    RD copied. Smaller than the query, so it amplifies nothing."""
    flags = dns.flags.QR | (flags & (0xF << 11)) | (flags & dns.flags.RD) | rcode
    return struct.pack("!6H", qid, flags, 0, 0, 0, 0)


def _to_wire(msg, limit):
    """`msg` in at most `limit` bytes: if it does not fit, its sections go and TC says so."""
    try:
        return msg.to_wire(max_size=limit)
    except dns.exception.TooBig:
        msg.answer.clear()
        msg.authority.clear()
        msg.additional.clear()
        msg.flags |= dns.flags.TC
        return msg.to_wire(max_size=limit)


def _parse_upstream(text):
    """("IP", port) from "IP[:port]"; ValueError naming the value otherwise."""
    host, _, port = text.partition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port) if port else 53
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise ValueError(f"DNS upstream {text!r} is not IP[:port] (an IPv4 address, a port 1-65535)") from None
    return host, number


def _thread_spawn(fn, *args):
    threading.Thread(target=fn, args=args, daemon=True).start()
