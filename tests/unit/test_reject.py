"""Rejecting a connection to a service without backends, on hand-built frames: what the client's
kernel gets back (a TCP RST it accepts in SYN-SENT, an ICMP port unreachable it can match to its
socket), with checksums a receiver verifies, and nothing for frames that open no connection."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from controller.reject import reject
from onesum import ones_sum  # tests/unit is on sys.path

CLIENT_MAC = bytes.fromhex("020000000005")
GATEWAY_MAC = bytes.fromhex("0a0000000064")  # what the client sent to: the network's gateway MAC
CLIENT_IP = bytes([10, 1, 0, 5])
VIP = bytes([10, 96, 0, 10])


def ip_packet(proto, payload, frag=0, ihl=5, src=CLIENT_IP, dst=VIP):
    options = b"\x01" * (ihl * 4 - 20)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), 99, frag, 64, proto, 0, src, dst)
    header += options
    header = header[:10] + struct.pack("!H", ~ones_sum(header) & 0xFFFF) + header[12:]
    return header + payload


def frame(packet, eth_src=CLIENT_MAC, padding=b""):
    return GATEWAY_MAC + eth_src + b"\x08\x00" + packet + padding


def tcp(flags, seq=1000, data=b"", sport=40000, dport=80):
    return struct.pack("!HHIIHHHH", sport, dport, seq, 0, 5 << 12 | flags, 64240, 0, 0) + data


def udp(sport=40000, dport=53, data=b"hello"):
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


SYN, ACK, RST, FIN, PSH = 0x02, 0x10, 0x04, 0x01, 0x08


def parsed(reply):
    """(eth dst, eth src, IP header fields, L4 bytes) of a reply, with its IPv4 checksum checked."""
    assert reply[12:14] == b"\x08\x00"
    ip = reply[14:34]
    assert ip[0] == 0x45 and ones_sum(ip) == 0xFFFF, "IPv4 header checksum"
    total, ident, frag, ttl, proto = struct.unpack_from("!HHHBB", ip, 2)
    assert len(reply) == 14 + total and frag == 0 and ttl == 64
    return reply[0:6], reply[6:12], {"proto": proto, "src": ip[12:16], "dst": ip[16:20], "id": ident}, reply[34:]


def test_a_syn_gets_a_reset_the_client_accepts_in_syn_sent():
    reply = reject(frame(ip_packet(6, tcp(SYN, seq=0xFFFFFFFF))), ident=7)
    eth_dst, eth_src, ip, segment = parsed(reply)
    assert (eth_dst, eth_src) == (CLIENT_MAC, GATEWAY_MAC)
    assert ip == {"proto": 6, "src": VIP, "dst": CLIENT_IP, "id": 7}
    sport, dport, seq, ack, offset_flags, window, _, urgent = struct.unpack("!HHIIHHHH", segment)
    assert (sport, dport) == (80, 40000)
    assert (seq, ack) == (0, 0)  # ack = seq + 1, modulo 2**32
    assert offset_flags == 5 << 12 | RST | ACK and window == 0 and urgent == 0
    assert ones_sum(VIP + CLIENT_IP + struct.pack("!BBH", 0, 6, len(segment)) + segment) == 0xFFFF, "TCP checksum"


def test_a_syn_with_data_is_acknowledged_whole():
    """SEG.LEN counts the data of a SYN (TCP Fast Open) as well as the SYN itself (RFC 793)."""
    *_, segment = parsed(reject(frame(ip_packet(6, tcp(SYN, seq=1000, data=b"GET /")))))
    assert struct.unpack_from("!I", segment, 8)[0] == 1000 + 1 + 5


def test_udp_and_sctp_get_port_unreachable_quoting_the_packet():
    for proto, l4 in ((17, udp()), (132, struct.pack("!HHII", 40000, 80, 0, 0) + b"\x01" * 16)):
        original = ip_packet(proto, l4)
        eth_dst, eth_src, ip, icmp = parsed(reject(frame(original)))
        assert (eth_dst, eth_src) == (CLIENT_MAC, GATEWAY_MAC)
        assert ip["proto"] == 1 and (ip["src"], ip["dst"]) == (VIP, CLIENT_IP)
        assert icmp[:2] == b"\x03\x03" and icmp[4:8] == b"\0\0\0\0" and ones_sum(icmp) == 0xFFFF
        assert icmp[8:] == original[:28]  # the IP header and the first 8 bytes of its payload


def test_the_quote_keeps_ip_options_and_ignores_ethernet_padding():
    original = ip_packet(17, udp(data=b""), ihl=6)
    *_, icmp = parsed(reject(frame(original, padding=b"\0" * 10)))
    assert icmp[8:] == original[:24 + 8]


@pytest.mark.parametrize("flags", [ACK, SYN | ACK, RST, SYN | RST, FIN, PSH | ACK, 0])
def test_only_a_bare_syn_is_answered(flags):
    assert reject(frame(ip_packet(6, tcp(flags)))) is None


@pytest.mark.parametrize("bad", [
    frame(ip_packet(17, udp(), frag=0x2000)),            # first fragment (more fragments)
    frame(ip_packet(6, tcp(SYN), frag=0x0001)),          # a later fragment
    frame(ip_packet(1, b"\x08\x00" + b"\0" * 6)),        # ICMP: never an error about anything but TCP/UDP/SCTP
    frame(ip_packet(17, udp()), eth_src=bytes.fromhex("030000000005")),  # a group source MAC
    frame(ip_packet(17, udp(), src=bytes([0, 0, 0, 0]))),                # no source to answer
    frame(ip_packet(17, udp(), dst=bytes([224, 0, 0, 1]))),              # multicast
    frame(ip_packet(17, udp()))[:-3],                                    # truncated below its total length
    frame(ip_packet(17, b"\0" * 4)),                                     # less than 8 bytes of payload
    frame(ip_packet(6, tcp(SYN)[:16])),                                  # a TCP header cut short
    frame(ip_packet(6, tcp(SYN, sport=0))),                              # port 0
    GATEWAY_MAC + CLIENT_MAC + b"\x86\xdd" + ip_packet(17, udp()),      # not IPv4
    GATEWAY_MAC + CLIENT_MAC + b"\x81\x00\x00\x0a\x08\x00" + ip_packet(17, udp()),  # VLAN-tagged
])
def test_no_answer_to_what_opens_no_connection_or_does_not_parse(bad):
    assert reject(bad) is None


def test_a_bad_ip_header_checksum_gets_no_answer():
    packet = bytearray(ip_packet(17, udp()))
    packet[10] ^= 0xFF
    assert reject(frame(bytes(packet))) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_garbage_never_raises(data):
    reject(data)
    reject(frame(data))
    reject(frame(ip_packet(6, data)))
    reject(frame(ip_packet(17, data)))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=20, max_size=60), st.integers(0, 0x3F))
def test_any_tcp_header_with_syn_alone_is_answered_well_formed(segment, flags):
    segment = bytearray(segment)
    segment[12] = 5 << 4  # a header of 20 bytes, the rest data
    segment[13] = flags
    segment[0:4] = b"\x9c\x40\x00\x50"  # ports 40000 -> 80
    reply = reject(frame(ip_packet(6, bytes(segment))))
    if flags & (SYN | ACK | RST) != SYN:
        assert reply is None
        return
    *_, rst = parsed(reply)
    assert ones_sum(VIP + CLIENT_IP + struct.pack("!BBH", 0, 6, len(rst)) + rst) == 0xFFFF
