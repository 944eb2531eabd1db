"""Checks on northbound input. Each failure names the field and the problem; nothing here writes."""
import ipaddress
import re

GENEVE_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + Geneve 8, with no TLV options
MIN_MTU = 576
MAX_VNI = 2**24 - 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
REMOTE_RE = re.compile(r"^(unix:/\S+|(tcp|ssl):[0-9.]+:\d{1,5})$")


class ApiError(Exception):
    """An error a client should see: HTTP status and a message naming the field and the problem."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def bad(field, problem):
    return ApiError(400, f"{field}: {problem}")


def body_fields(body, required, optional):
    """The request body as a dict with only known fields, every required one present."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise bad(unknown[0], f"unknown field (expected one of: {', '.join(sorted({*required, *optional}))})")
    for field in required:
        if body.get(field) in (None, ""):
            raise bad(field, "is required")
    return {k: v for k, v in body.items() if v is not None}


def name(value, field="name"):
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise bad(field, f"{value!r} is not a valid name (1-63 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit)")
    return value


def integer(value, field, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(field, f"{value!r} is not an integer")
    if not low <= value <= high:
        raise bad(field, f"{value} is out of range ({low}..{high})")
    return value


def ipv4_address(value, field):
    try:
        addr = ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        raise bad(field, f"{value!r} is not an IPv4 address") from None
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        raise bad(field, f"{value} is not a usable unicast address")
    return str(addr)


def interface_name(value, field):
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9_.:-]{1,15}$", value):
        raise bad(field, f"{value!r} is not a network interface name (1-15 characters)")
    return value


def ipv4_network(value, field="cidr", max_prefix=29):
    if not isinstance(value, str) or "/" not in value:
        raise bad(field, f"{value!r} is not an IPv4 network in CIDR form (like 10.0.0.0/24)")
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise bad(field, f"{value!r} is not a valid IPv4 network") from None
    if str(net) != value:
        raise bad(field, f"{value!r} has host bits set (did you mean {net}?)")
    if net.prefixlen > max_prefix:
        raise bad(field, f"/{net.prefixlen} leaves too few addresses (the longest prefix allowed is /{max_prefix})")
    return net


def address_in(value, net, field, reserved=()):
    addr = ipaddress.IPv4Address(ipv4_address(value, field))
    if addr not in net:
        raise bad(field, f"{addr} is not in {net}")
    if addr in (net.network_address, net.broadcast_address):
        raise bad(field, f"{addr} is the {'network' if addr == net.network_address else 'broadcast'} "
                         f"address of {net}")
    if str(addr) in reserved:
        raise ApiError(409, f"{field}: {addr} is reserved for the network's gateway")
    return str(addr)


def mac(value, field="mac"):
    value = value.lower() if isinstance(value, str) else value
    if not isinstance(value, str) or not MAC_RE.match(value):
        raise bad(field, f"{value!r} is not a MAC address (like 02:00:00:00:00:01)")
    if int(value[:2], 16) & 1:
        raise bad(field, f"{value} is a multicast address")
    if value == "00:00:00:00:00:00":
        raise bad(field, "the all-zero MAC is not usable")
    return value


def remote(value, field):
    if not isinstance(value, str) or not REMOTE_RE.match(value):
        raise bad(field, f"{value!r} is not an OVSDB/OpenFlow remote (unix:/path, tcp:IP:PORT or ssl:IP:PORT)")
    if not value.startswith("unix:"):
        ipv4_address(value.split(":")[1], field)
        integer(int(value.rsplit(":", 1)[1]), field + " port", 1, 65535)
    return value


def network_mtu(value, underlay_mtu, field="mtu"):
    highest = underlay_mtu - GENEVE_OVERHEAD
    value = integer(value, field, MIN_MTU, 9000)
    if value > highest:
        raise bad(field, f"{value} is too large for the underlay: Geneve needs {GENEVE_OVERHEAD} bytes, so "
                         f"with an underlay MTU of {underlay_mtu} the largest network MTU is {highest}")
    return value
