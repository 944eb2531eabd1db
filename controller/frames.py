"""Building the IPv4 frames the controller answers with (DNS replies, service rejects): struct only.

The parsing side stays with each answer (controller/dns.py, controller/reject.py): what they accept
differs, what they send is the same Ethernet/IPv4 shape with correct checksums.
"""
import struct

ETH_TYPE_IPV4 = b"\x08\x00"
TTL = 64


def checksum(data):
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def unicast(ip):
    """Whether IPv4 address `ip` (4 bytes) is one a host may have: not 0/8, multicast, reserved or
    broadcast. Nothing is ever answered to or from any other."""
    return 0 < ip[0] < 224


def l4_checksum(src, dst, proto, segment):
    """The TCP/UDP checksum of `segment` (its checksum field zero) between IPv4 addresses src and
    dst (4 bytes each), over the pseudo-header."""
    return checksum(src + dst + struct.pack("!BBH", 0, proto, len(segment)) + segment)


def ipv4_frame(eth_dst, eth_src, ip_src, ip_dst, proto, payload, ident):
    """An Ethernet frame carrying an IPv4 packet (no options, DF clear, TTL 64) with `payload`.
    MACs and addresses are bytes (6 and 4); `payload` carries its own checksum already."""
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0, TTL,
                                   proto, 0, ip_src, ip_dst))
    struct.pack_into("!H", header, 10, checksum(bytes(header)))
    return eth_dst + eth_src + ETH_TYPE_IPV4 + bytes(header) + payload
