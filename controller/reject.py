"""Rejecting a new connection to a Service that has no ready backend: one frame in, one frame out.

The switch sends the controller (through the reject meter) the first packet of a connection to a
service VIP and port with no backend, as a Kubernetes user expects it to be refused at once rather
than to time out. The controller sends back, out of the port it came in on:
  - TCP SYN: a RST|ACK (RFC 793, "If the connection is in any non-synchronized state ... and the
    incoming segment has no ACK": seq 0, ack = the SYN's seq + its length), so connect() fails
    with "connection refused";
  - UDP, SCTP: an ICMP destination unreachable, port unreachable (type 3, code 3) carrying the
    original IP header and the first 8 bytes of its payload (RFC 792), so a connected socket gets
    ECONNREFUSED;
from the VIP and port the client addressed, and from the MAC it sent to (its gateway's). Anything
else (not a SYN, a fragment, a frame that does not parse) gets no answer: an error is never sent
about an error, nor about a packet whose headers cannot be read back to the sender.
"""
import struct

from controller.frames import checksum, ipv4_frame, l4_checksum, unicast

IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP, IP_PROTO_SCTP = 1, 6, 17, 132
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
ICMP_UNREACHABLE, ICMP_PORT_UNREACHABLE = 3, 3


def reject(frame, ident=0):
    """The frame that refuses the connection `frame` opens (see the module's docstring), or None.
    `ident`: the IPv4 identification of the answer. Never raises on what is in the frame."""
    if len(frame) < 14 + 20 or frame[0] & 1 or frame[6] & 1 or frame[12:14] != b"\x08\x00":
        return None  # too short, a group MAC on either side (no answer could go back), not IPv4
    ver_ihl, _, total, _, frag, _, proto = struct.unpack_from("!BBHHHBB", frame, 14)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or total < ihl + 8 or 14 + total > len(frame) or frag & 0x3FFF:
        return None  # not a whole, unfragmented IPv4 packet with at least 8 bytes of payload
    packet = bytes(frame[14:14 + total])  # Ethernet padding left out
    src, dst = packet[12:16], packet[16:20]
    if not (unicast(src) and unicast(dst)) or checksum(packet[:ihl]):
        return None
    eth_dst, eth_src = bytes(frame[6:12]), bytes(frame[0:6])  # back to the sender, from whom it asked
    if proto == IP_PROTO_TCP:
        segment = _tcp_reset(packet[ihl:], src, dst)
        return None if segment is None else ipv4_frame(eth_dst, eth_src, dst, src, IP_PROTO_TCP, segment, ident)
    if proto in (IP_PROTO_UDP, IP_PROTO_SCTP):
        icmp = struct.pack("!BBHI", ICMP_UNREACHABLE, ICMP_PORT_UNREACHABLE, 0, 0) + packet[:ihl + 8]
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        return ipv4_frame(eth_dst, eth_src, dst, src, IP_PROTO_ICMP, icmp, ident)
    return None


def _tcp_reset(segment, src, dst):
    """The RST|ACK segment (from dst to src) answering a SYN `segment`, or None if it is not one."""
    if len(segment) < 20:
        return None
    sport, dport, seq, _, offset_flags = struct.unpack_from("!HHIIH", segment)
    offset, flags = (offset_flags >> 12) * 4, offset_flags & 0x3F
    if offset < 20 or offset > len(segment) or flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
        return None  # not a bare SYN: a RST answers only the opening of a connection
    if not sport or not dport:
        return None
    length = len(segment) - offset + 1 + (1 if flags & TCP_FIN else 0)  # SEG.LEN: data, SYN, FIN
    rst = struct.pack("!HHIIHHHH", dport, sport, 0, (seq + length) & 0xFFFFFFFF,
                      5 << 12 | TCP_RST | TCP_ACK, 0, 0, 0)
    return rst[:16] + struct.pack("!H", l4_checksum(dst, src, IP_PROTO_TCP, rst)) + rst[18:]
