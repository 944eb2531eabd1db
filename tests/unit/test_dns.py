"""Weft's DNS responder on real frames: built by hand (struct) around dnspython messages, answered
from a zone of ports and services, forwarded to a real UDP DNS server on 127.0.0.1."""
import socket
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings, strategies as st

from controller.dns import COUNTERS, CachedZone, DnsResponder, DnsZone
from flows.model import PortState
from flows.policy import ServicePort, ServiceState
from onesum import ones_sum  # tests/unit is on sys.path

CLIENT_MAC = bytes.fromhex("020000000001")
GATEWAY_MAC = bytes.fromhex("0200000000fe")
CLIENT_IP = bytes([10, 1, 0, 5])
RESOLVER_IP = bytes([10, 1, 0, 1])
WAIT = 10  # seconds a test waits at most for a forwarded reply: a bound, not a measurement

PORTS = [PortState("web1", 1, "prod", "02:00:00:00:00:01", "10.1.0.5"),
         PortState("db", 2, "prod", "02:00:00:00:00:02", "10.1.0.6"),
         PortState("api", 3, "dev", "02:00:00:00:00:03", "10.2.0.7"),
         PortState("cache", 4, "prod", "02:00:00:00:00:04", "10.1.0.8"),  # shadowed by the service
         PortState("web.2", 5, "prod", "02:00:00:00:00:05", "10.1.0.9")]  # a name with a dot
SERVICES = [ServiceState("frontend", "prod", 1, (("app", "web"),), (ServicePort("", "TCP", 80, 8080),),
                         "10.96.0.10"),
            ServiceState("cache", "prod", 2, (("app", "cache"),), (ServicePort("", "TCP", 6379, 6379),),
                         "10.96.0.11")]
ZONE = DnsZone(PORTS, SERVICES)


# --------------------------------------------------------------------------------------------
# Frames: a query as the switch hands it up, and checks on the reply as the client would see it
# --------------------------------------------------------------------------------------------


def frame(payload, sport=33333, dport=53, ihl=5, proto=17, frag=0, total=None, udp_len=None):
    udp = struct.pack("!HHHH", sport, dport, udp_len if udp_len is not None else 8 + len(payload), 0)
    options = b"\x01" * (ihl * 4 - 20) if ihl > 5 else b""  # NOPs
    length = total if total is not None else ihl * 4 + len(udp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, length, 7, frag, 64, proto, 0, CLIENT_IP, RESOLVER_IP)
    ip = ip[:10] + struct.pack("!H", ~ones_sum(ip + options) & 0xFFFF) + ip[12:]
    return GATEWAY_MAC + CLIENT_MAC + b"\x08\x00" + ip + options + udp + payload


def query(name, rdtype="A", **kw):
    msg = dns.message.make_query(name, rdtype, **kw)
    msg.id = 0x1234
    return msg


def parse_reply(reply_frame, sport=33333):
    """The DNS message in a reply frame, after checking what the client's kernel would check."""
    assert reply_frame[0:6] == CLIENT_MAC and reply_frame[6:12] == GATEWAY_MAC
    assert reply_frame[12:14] == b"\x08\x00"
    ip = reply_frame[14:34]
    assert ip[0] == 0x45 and ones_sum(ip) == 0xFFFF, "IPv4 header checksum"
    assert ip[9] == 17 and ip[12:16] == RESOLVER_IP and ip[16:20] == CLIENT_IP
    assert struct.unpack("!H", ip[2:4])[0] == len(reply_frame) - 14
    udp = reply_frame[34:]
    src, dst, length, csum = struct.unpack("!HHHH", udp[:8])
    assert (src, dst, length) == (53, sport, len(udp))
    assert csum != 0 and ones_sum(ip[12:20] + struct.pack("!BBH", 0, 17, length) + udp) == 0xFFFF, "UDP checksum"
    return dns.message.from_wire(udp[8:])


def ask(responder, msg, network="prod", **kw):
    reply = responder.answer(frame(msg.to_wire()), network, **kw)
    assert reply is not None
    return parse_reply(reply)


def addresses(msg):
    return sorted(rd.address for rrset in msg.answer for rd in rrset)


# --------------------------------------------------------------------------------------------
# Weft's own names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, network, expected", [
    ("web1", "prod", "10.1.0.5"),                   # a port, by its name in the client's network
    ("web1.prod", "prod", "10.1.0.5"),
    ("web1.prod.weft", "prod", "10.1.0.5"),
    ("web1.prod", "dev", "10.1.0.5"),               # another network's port, qualified
    ("api.dev.weft.", "prod", "10.2.0.7"),
    ("frontend", "prod", "10.96.0.10"),             # a service
    ("frontend.prod", "dev", "10.96.0.10"),
    ("frontend.prod.svc.weft", "dev", "10.96.0.10"),
    ("cache", "prod", "10.96.0.11"),                # a service shadows a port of the same name
    ("cache.prod.weft", "prod", "10.1.0.8"),        # ... whose own full name still resolves
    ("web.2", "prod", "10.1.0.9"),                  # a port name with a dot
    ("web.2.prod.weft", "dev", "10.1.0.9"),
    ("WEB1.Prod.WEFT.", "prod", "10.1.0.5"),        # names are case-insensitive
    ("FrontEnd", "prod", "10.96.0.10"),
])
def test_a_records_of_ports_and_services(name, network, expected):
    reply = ask(DnsResponder(lambda: ZONE), query(name), network)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA and reply.flags & dns.flags.QR
    assert reply.id == 0x1234 and addresses(reply) == [expected]
    assert reply.answer[0].name == dns.name.from_text(name) and reply.answer[0].ttl == 5
    assert reply.question == query(name).question  # the question echoed, as asked


def test_recursion_flags():
    rd = ask(DnsResponder(lambda: ZONE), query("web1"))
    assert rd.flags & dns.flags.RD and not rd.flags & dns.flags.RA  # RD copied; no upstream: no RA
    no_rd = query("web1")
    no_rd.flags &= ~dns.flags.RD
    assert not ask(DnsResponder(lambda: ZONE, upstream="127.0.0.1:9"), no_rd).flags & dns.flags.RD
    assert ask(DnsResponder(lambda: ZONE, upstream="127.0.0.1:9"), query("web1")).flags & dns.flags.RA


@pytest.mark.parametrize("name, rdtype", [("web1", "AAAA"), ("frontend.prod.svc.weft", "AAAA"),
                                          ("web1.prod", "MX"), ("prod.weft", "A"), ("svc.weft", "A"),
                                          ("weft", "SOA"), ("2.prod.weft", "A")])
def test_known_names_without_the_type_are_nodata(name, rdtype):
    reply = ask(DnsResponder(lambda: ZONE), query(name, rdtype))
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer == [] and reply.flags & dns.flags.AA


@pytest.mark.parametrize("name, network", [("nope.prod.weft", "prod"), ("nope.svc.weft", "prod"),
                                           ("frontend.dev.svc.weft", "prod"), ("web1.dev.weft", "prod"),
                                           ("nope", "prod"), ("web1", "dev")])
def test_unknown_names_inside_weft_are_nxdomain(name, network):
    responder = DnsResponder(lambda: ZONE)
    reply = ask(responder, query(name), network)
    assert reply.rcode() == dns.rcode.NXDOMAIN and reply.answer == []
    assert responder.counters()["nxdomain"] == 1


def test_names_outside_weft_are_refused_without_upstream():
    responder = DnsResponder(lambda: ZONE)
    for name in ("example.com", "web1.prod.cluster.local", "."):
        reply = ask(responder, query(name))
        assert reply.rcode() == dns.rcode.REFUSED and not reply.flags & dns.flags.AA
    assert responder.counters()["refused"] == 3


def test_reverse_names():
    responder = DnsResponder(lambda: ZONE)
    ptr = ask(responder, query("5.0.1.10.in-addr.arpa", "PTR"))
    assert [rd.target.to_text() for rd in ptr.answer[0]] == ["web1.prod.weft."]
    svc = ask(responder, query("10.0.96.10.in-addr.arpa", "PTR"), "dev")
    assert [rd.target.to_text() for rd in svc.answer[0]] == ["frontend.prod.svc.weft."]
    assert ask(responder, query("7.0.2.10.in-addr.arpa", "PTR")).rcode() == dns.rcode.REFUSED  # dev's, asked from prod
    assert ask(responder, query("5.0.1.10.in-addr.arpa", "A")).answer == []


def test_edns_queries_get_edns_replies():
    reply = ask(DnsResponder(lambda: ZONE), query("web1", use_edns=0, payload=4096))
    assert reply.edns == 0 and reply.payload == 1232 and addresses(reply) == ["10.1.0.5"]


def test_cached_zone_builds_once_per_change():
    built = []
    zone = CachedZone(lambda: built.append(1) or DnsZone(PORTS, SERVICES))
    responder = DnsResponder(zone)
    ask(responder, query("web1"))
    ask(responder, query("db"))
    assert len(built) == 1
    zone.invalidate()
    zone.invalidate()
    assert len(built) == 1  # nothing built until asked
    ask(responder, query("db"))
    assert len(built) == 2


# --------------------------------------------------------------------------------------------
# Forwarding to an upstream
# --------------------------------------------------------------------------------------------


class Upstream:
    """A tiny DNS server on 127.0.0.1: A records for *.example, 200 of them for many.example, and
    silence for slow.example."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.seen = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            data, peer = self.sock.recvfrom(65535)
            if self.stopping:
                return
            msg = dns.message.from_wire(data)
            self.seen.append(msg)
            name = msg.question[0].name.to_text()
            if name == "slow.example.":
                continue
            reply = dns.message.make_response(msg, recursion_available=True)
            if name == "nx.example.":
                reply.set_rcode(dns.rcode.NXDOMAIN)
            else:
                count = 200 if name == "many.example." else 1
                reply.answer.append(dns.rrset.from_text_list(msg.question[0].name, 60, "IN", "A",
                                                             [f"192.0.2.{i % 250}" for i in range(count)]))
            self.sock.sendto(reply.to_wire(max_size=65535), peer)

    def close(self):
        self.stopping = True
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wake:  # a blocked recv wakes only so
            wake.sendto(b"", self.sock.getsockname())
        self.thread.join(WAIT)
        self.sock.close()


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


def forward(responder, msg, network="prod"):
    """Sends `msg` through the responder, which must forward it, and returns the relayed reply."""
    sent = []
    done = threading.Event()
    result = responder.answer(frame(msg.to_wire()), network, send=lambda f: (sent.append(f), done.set()))
    assert result is None  # not answered at once: forwarded
    assert done.wait(WAIT), "no reply relayed"
    assert len(sent) == 1
    return parse_reply(sent[0])


def test_unknown_names_are_forwarded_and_relayed(upstream):
    responder = DnsResponder(lambda: ZONE, upstream=upstream.address)
    reply = forward(responder, query("www.example"))
    assert reply.id == 0x1234 and reply.rcode() == dns.rcode.NOERROR and addresses(reply) == ["192.0.2.0"]
    assert forward(responder, query("nx.example")).rcode() == dns.rcode.NXDOMAIN
    assert forward(responder, query("printer")).rcode() == dns.rcode.NOERROR  # one label: forwarded too
    # Weft's own names, and unknown ones in its domain, never go upstream.
    assert addresses(ask(responder, query("web1"))) == ["10.1.0.5"]
    assert ask(responder, query("nope.prod.weft")).rcode() == dns.rcode.NXDOMAIN
    assert [m.question[0].name.to_text() for m in upstream.seen] == ["www.example.", "nx.example.", "printer."]
    counters = responder.counters()
    assert (counters["forwarded"], counters["answered"], counters["nxdomain"]) == (3, 1, 1)


def test_a_relayed_answer_that_does_not_fit_is_truncated(upstream):
    responder = DnsResponder(lambda: ZONE, upstream=upstream.address)
    plain = forward(responder, query("many.example"))
    assert plain.flags & dns.flags.TC and plain.answer == []
    edns = query("many.example", use_edns=0, payload=4096)
    raw = []
    done = threading.Event()
    responder.answer(frame(edns.to_wire()), "prod", send=lambda f: (raw.append(f), done.set()))
    assert done.wait(WAIT)
    assert len(raw[0]) - 42 <= 1232  # never more than 1232 bytes of DNS, whatever the client offers
    assert upstream.seen[-1].payload == 1232  # and the upstream was told so


def test_upstream_timeout_is_servfail(upstream):
    responder = DnsResponder(lambda: ZONE, upstream=upstream.address, timeout=0.2)
    reply = forward(responder, query("slow.example"))
    assert reply.rcode() == dns.rcode.SERVFAIL and reply.id == 0x1234
    assert responder.counters()["servfail"] == 1


def test_upstream_that_is_not_listening_is_servfail():
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    address = "127.0.0.1:%d" % closed.getsockname()[1]
    closed.close()  # nobody on that port: the kernel answers ICMP port unreachable
    reply = forward(DnsResponder(lambda: ZONE, upstream=address, timeout=1), query("www.example"))
    assert reply.rcode() == dns.rcode.SERVFAIL


def test_forwards_are_bounded(upstream):
    started = []
    responder = DnsResponder(lambda: ZONE, upstream=upstream.address, max_forwards=2,
                             spawn=lambda fn, *args: started.append((fn, args)))  # never run: in flight
    for _ in range(2):
        assert responder.answer(frame(query("www.example").to_wire()), "prod", send=lambda f: None) is None
    reply = parse_reply(responder.answer(frame(query("www.example").to_wire()), "prod", send=lambda f: None))
    assert reply.rcode() == dns.rcode.SERVFAIL and len(started) == 2
    fn, args = started[0]
    fn(*args)  # one completes: room for one more
    assert responder.answer(frame(query("www.example").to_wire()), "prod", send=lambda f: None) is None


def test_no_send_callback_no_forward(upstream):
    reply = ask(DnsResponder(lambda: ZONE, upstream=upstream.address), query("www.example"))
    assert reply.rcode() == dns.rcode.SERVFAIL and upstream.seen == []


def test_upstream_must_be_an_address():
    for bad in ("dns.example", "10.0.0.1:0", "10.0.0.1:x", "10.0.0.1:70000"):
        with pytest.raises(ValueError, match="is not IP\\[:port\\]"):
            DnsResponder(lambda: ZONE, upstream=bad)


# --------------------------------------------------------------------------------------------
# Malformed input: dropped, or answered with an error that is no larger than the query
# --------------------------------------------------------------------------------------------


GOOD = query("web1").to_wire()


@pytest.mark.parametrize("bad", [
    b"",
    frame(GOOD)[:40],                                   # truncated inside UDP
    frame(GOOD)[:-5],                                   # shorter than its IP total length
    frame(GOOD, ihl=4),                                 # IHL below 5
    frame(GOOD, ihl=15)[:60],                           # IHL past the frame
    frame(GOOD, proto=6),                               # TCP
    frame(GOOD, dport=5353),                            # not port 53
    frame(GOOD, sport=0),                               # no port to answer to
    frame(GOOD, frag=0x2000),                           # a first fragment
    frame(GOOD, frag=0x0010),                           # a later fragment
    frame(GOOD, udp_len=4),                             # UDP length below its header
    frame(GOOD, udp_len=len(GOOD) + 100),               # UDP length past the packet
    b"\xff" * 6 + frame(GOOD)[6:],                      # to the broadcast MAC
    frame(GOOD)[:12] + b"\x86\xdd" + frame(GOOD)[14:],  # not IPv4
    frame(GOOD[:11]),                                   # less than a DNS header
    frame(dns.message.make_response(query("web1")).to_wire()),  # a response: never answered
])
def test_frames_that_are_dropped(bad):
    responder = DnsResponder(lambda: ZONE)
    assert responder.answer(bad, "prod") is None
    assert responder.counters()["malformed"] == 1


def _header(qid=0x4321, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack("!6H", qid, flags, qd, an, ns, ar)


def _opt(code, data, declared=None):
    """An OPT record with one option, its length as `declared` (default: the truth)."""
    option = struct.pack("!HH", code, len(data) if declared is None else declared) + data
    return b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(option)) + option


def _with_opts(*opts):
    return GOOD[:10] + struct.pack("!H", len(opts)) + GOOD[12:] + b"".join(opts)


@pytest.mark.parametrize("payload, rcode", [
    (_header() + b"\x07garbage", dns.rcode.FORMERR),               # a question that does not parse
    (_header(qd=0), dns.rcode.FORMERR),
    (_header(qd=2) + GOOD[12:] + GOOD[12:], dns.rcode.FORMERR),
    (GOOD + b"junk", dns.rcode.FORMERR),                           # trailing bytes
    (_with_opts(_opt(65001, b"odd", declared=40)), dns.rcode.FORMERR),  # an option past its record
    (_with_opts(_opt(65001, b"odd"), _opt(3, b"")), dns.rcode.FORMERR),  # two OPT records
    (_header(flags=(dns.opcode.NOTIFY << 11) | 0x0100) + GOOD[12:], dns.rcode.NOTIMP),
    (_header(flags=(dns.opcode.UPDATE << 11)) + GOOD[12:], dns.rcode.NOTIMP),
])
def test_malformed_queries_with_a_readable_header(payload, rcode):
    responder = DnsResponder(lambda: ZONE)
    reply_frame = responder.answer(frame(payload), "prod")
    reply = parse_reply(reply_frame)
    assert reply.rcode() == rcode and reply.flags & dns.flags.QR
    assert reply.id == struct.unpack("!H", payload[:2])[0]
    assert reply.opcode() == (payload[2] >> 3) & 0xF
    assert len(reply_frame) <= len(frame(payload))  # amplifies nothing


def test_unknown_edns_option_is_ignored_and_edns_version_1_is_badvers():
    assert addresses(parse_reply(DnsResponder(lambda: ZONE).answer(
        frame(_with_opts(_opt(65001, b"odd"))), "prod"))) == ["10.1.0.5"]
    v1 = query("web1", use_edns=1)
    reply = ask(DnsResponder(lambda: ZONE), v1)
    assert reply.rcode() == dns.rcode.BADVERS and reply.answer == []


def test_zone_transfers_and_other_classes_are_refused():
    responder = DnsResponder(lambda: ZONE, upstream="127.0.0.1:9")
    assert ask(responder, query("weft", "AXFR")).rcode() == dns.rcode.REFUSED
    assert ask(responder, query("version.bind", "TXT", rdclass="CH")).rcode() == dns.rcode.REFUSED


ANY_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20).filter(
    lambda s: ".." not in s and not s.startswith(".") and not s.endswith("."))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_frames_never_raise(data):
    responder = DnsResponder(lambda: ZONE)
    for candidate in (data, frame(data), GATEWAY_MAC + CLIENT_MAC + b"\x08\x00" + data):
        reply = responder.answer(candidate, "prod")
        if reply is not None:
            assert len(parse_reply(reply).to_wire()) <= 512


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([GOOD, query("nope.example").to_wire(), query("web1", use_edns=0).to_wire()]),
       st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=6), st.integers(0, 90))
def test_damaged_queries_never_raise(payload, flips, cut):
    damaged = bytearray(payload)
    for at, value in flips:
        if at < len(damaged):
            damaged[at] = value
    damaged = bytes(damaged[:len(damaged) - cut % (len(damaged) + 1)])
    responder = DnsResponder(lambda: ZONE)
    reply = responder.answer(frame(damaged), "prod")
    if reply is not None:
        parsed = parse_reply(reply)
        assert parsed.flags & dns.flags.QR and len(reply) - 42 <= 512
        if not parsed.answer:  # an error or NODATA: no larger than the query, give or take a
            assert len(reply) <= len(frame(damaged)) + 16  # compressed name written out


@settings(max_examples=200, deadline=None)
@given(ANY_LABEL, st.sampled_from(["A", "AAAA", "TXT", "PTR", "ANY", "MX"]), st.sampled_from(["prod", "dev", "x"]))
def test_any_name_gets_a_well_formed_reply(name, rdtype, network):
    reply = ask(DnsResponder(lambda: ZONE), query(name, rdtype), network)
    assert reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED)


# --------------------------------------------------------------------------------------------
# Rate limits and counters
# --------------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_rate_limit_per_port_and_per_host():
    clock = Clock()
    responder = DnsResponder(lambda: ZONE, port_rate=3, host_rate=5, clock=clock)
    q = frame(GOOD)
    assert [responder.answer(q, "prod", host="h1", port=1) is not None for _ in range(4)] == [True] * 3 + [False]
    # Another port of the same host has its own bucket, until the host's runs out (3 + 2 = 5).
    assert [responder.answer(q, "prod", host="h1", port=2) is not None for _ in range(3)] == [True, True, False]
    assert responder.answer(q, "prod", host="h2", port=1) is not None  # another host: its own
    clock.now += 1  # a second later: both buckets are full again
    assert responder.answer(q, "prod", host="h1", port=1) is not None
    counters = responder.counters()
    assert counters["dropped_rate"] == 2 and counters["queries"] == 9 and counters["answered"] == 7


def test_rate_limit_by_source_mac_without_a_port():
    responder = DnsResponder(lambda: ZONE, port_rate=1, clock=Clock())
    assert responder.answer(frame(GOOD), "prod") is not None
    assert responder.answer(frame(GOOD), "prod") is None
    other = frame(GOOD)[:6] + bytes.fromhex("020000000099") + frame(GOOD)[12:]
    assert responder.answer(other, "prod") is not None


def test_counters_are_all_there_from_the_start():
    assert DnsResponder(lambda: ZONE).counters() == dict.fromkeys(COUNTERS, 0)
