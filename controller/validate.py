"""Checks on northbound input. Each failure names the field and the problem; nothing here writes.

Every field's type is checked before its value; numbers are ASCII digits, addresses are written as
addresses (never as integers), names are a fixed ASCII alphabet (so they are valid UTF-8, fit OVSDB
and Linux, and never look like a command-line option).
"""
import ipaddress
import json
import math
import re

GENEVE_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + Geneve 8, with no TLV options
MIN_MTU = 576
MAX_VNI = 2**24 - 1
MAX_WAIT = 60.0           # seconds: the longest a ?wait_up= request (or weft --timeout) may wait
MAX_JSON_DEPTH = 8        # Weft's bodies nest 1 deep; a deeper document is not a Weft request
NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,62}")
IFNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")  # Linux: < 16 bytes, no '/', ':', space
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
REMOTE_RE = re.compile(r"unix:/[\x21-\x7e]{1,4094}|(tcp|ssl):[0-9.]{7,15}:[0-9]{1,5}")  # a path fits PATH_MAX
DECIMAL_RE = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")
INTEGER_RE = re.compile(r"[0-9]{1,10}")
NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, no '..'"


class ApiError(Exception):
    """An error a client should see: HTTP status and a message naming the field and the problem."""

    def __init__(self, status, message, details=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}  # more fields of the error's answer, for a client to act on


def bad(field, problem):
    return ApiError(400, f"{field}: {problem}")


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", dict: "an object", list: "a list"}


def body_fields(body, required, optional):
    """The request body as a dict with only known fields, each of its declared type, every required
    one present. `required` and `optional` map a field to its type (str, int, bool)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    known = {**required, **optional}
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise bad(shown(unknown[0]), f"unknown field (expected one of: {', '.join(sorted(known))})")
    fields = {}
    for field, value in body.items():
        if value is None:
            continue
        wanted = known[field]
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            raise bad(field, f"expected {_TYPE_NAMES[wanted]}, got {describe(value)}")
        fields[field] = value
    for field in required:
        if fields.get(field) in (None, ""):
            raise bad(field, "is required")
    return fields


def describe(value):
    """What kind of JSON value this is, in words (for "expected ..., got ...")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    for kind, words in ((str, "a string"), (int, "a number"), (float, "a number"), (dict, "an object"),
                        (list, "a list")):
        if isinstance(value, kind):
            return words
    return type(value).__name__


def shown(value, limit=40):
    """value as the client sent it, cut short: an error names the problem, it does not echo input."""
    text = repr(value)
    closing = text[-1] if isinstance(value, str) else ""  # the quote repr chose
    return text if len(text) <= limit else text[:limit] + "..." + closing


def parse_json(raw, max_depth=MAX_JSON_DEPTH):
    """A request body: UTF-8 JSON, no NaN or Infinity, no duplicate keys, nested at most
    `max_depth` deep (checked before parsing, so a hostile document costs one linear scan)."""
    if not raw:
        raise ApiError(400, "a JSON request body is required")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not valid UTF-8") from None
    if nesting(text) > max_depth:
        raise ApiError(400, f"the request body nests deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=no_constant, object_pairs_hook=unique_keys)
    except ValueError as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None


def nesting(text):
    """How deep a JSON text nests its lists and objects, in one pass and without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def unique_keys(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {shown(key)} appears twice")
        result[key] = value
    return result


def name(value, field="name"):
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise bad(field, f"{shown(value)} is not a valid name ({NAME_RULE})")
    return value


EXTERNAL_ID_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}")
MAX_EXTERNAL_IDS = 16
MAX_EXTERNAL_ID_VALUE = 255


def external_ids(value, field="external_ids"):
    """A client's own keys on a network or port (a runtime's ids, a container's name), as in OVN's NB:
    Weft stores and shows them and never acts on them. Bounded, so they cannot bloat the NB."""
    if not isinstance(value, dict):
        raise bad(field, f"{shown(value)} is not an object of strings")
    if len(value) > MAX_EXTERNAL_IDS:
        raise bad(field, f"{len(value)} keys is more than the {MAX_EXTERNAL_IDS} allowed")
    for key, item in value.items():
        if not EXTERNAL_ID_KEY_RE.fullmatch(key):
            raise bad(field, f"key {shown(key)} is not valid (1-63 letters, digits, '_', '.', ':', '/' or '-', "
                             "starting with a letter or digit)")
        if not isinstance(item, str) or len(item) > MAX_EXTERNAL_ID_VALUE or not item.isprintable():
            raise bad(f"{field}.{key}", f"{shown(item)} is not a printable string of at most "
                                        f"{MAX_EXTERNAL_ID_VALUE} characters")
    return dict(value)


def integer(value, field, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(field, f"{shown(value)} is not an integer")
    if not low <= value <= high:
        raise bad(field, f"{shown(value)} is out of range ({low}..{high})")
    return value


def query_integer(value, field, low, high):
    """An integer written in a query string: ASCII digits only."""
    if not INTEGER_RE.fullmatch(value):
        raise bad(field, f"{shown(value)} is not a number (ASCII digits)")
    return integer(int(value), field, low, high)


def seconds(value, field, high):
    """A duration in a query string: ASCII decimal, finite, 0..high."""
    if not DECIMAL_RE.fullmatch(value):
        raise bad(field, f"{shown(value)} is not a number of seconds (like 10 or 2.5)")
    number = float(value)
    if not (math.isfinite(number) and 0 <= number <= high):
        raise bad(field, f"{value} is out of range (0..{high} seconds)")
    return number


def ipv4_address(value, field):
    if not isinstance(value, str):
        raise bad(field, f"{shown(value)} is not an IPv4 address (write it as a string, like \"192.0.2.1\")")
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise bad(field, f"{shown(value)} is not an IPv4 address") from None
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback or addr.is_reserved \
            or addr == ipaddress.IPv4Address("255.255.255.255"):
        raise bad(field, f"{value} is not a usable unicast address")
    return str(addr)


def interface_name(value, field):
    if not isinstance(value, str) or not IFNAME_RE.fullmatch(value) or value in (".", ".."):
        raise bad(field, f"{shown(value)} is not a network interface name (1-15 letters, digits, '_', "
                         "'.' or '-', not starting with '-' or '.')")
    return value


def ipv4_network(value, field="cidr", max_prefix=29):
    if not isinstance(value, str) or not re.fullmatch(r"[0-9.]{7,15}/[0-9]{1,2}", value):
        raise bad(field, f"{shown(value)} is not an IPv4 network in CIDR form (like 10.0.0.0/24)")
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise bad(field, f"{shown(value)} is not a valid IPv4 network") from None
    if str(net) != value:
        raise bad(field, f"{value!r} has host bits set (did you mean {net}?)")
    if net.prefixlen > max_prefix:
        raise bad(field, f"/{net.prefixlen} leaves too few addresses (the longest prefix allowed is /{max_prefix})")
    return net


def ipv4_interface(value, field, max_prefix=30):
    """An address with its prefix length, like 203.0.113.10/24 -> (address, prefix length)."""
    if not isinstance(value, str) or not re.fullmatch(r"[^/]{1,15}/[0-9]{1,2}", value):
        raise bad(field, f"{shown(value)} needs a prefix length, like 203.0.113.10/24")
    address, _, length = value.partition("/")
    return ipv4_address(address, field), integer(int(length), f"{field} prefix length", 1, max_prefix)


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
    if not isinstance(value, str) or not MAC_RE.fullmatch(value):
        raise bad(field, f"{shown(value)} is not a MAC address (like 02:00:00:00:00:01)")
    if int(value[:2], 16) & 1:
        raise bad(field, f"{value} is a multicast address")
    if value == "00:00:00:00:00:00":
        raise bad(field, "the all-zero MAC is not usable")
    return value


def remote(value, field):
    if not isinstance(value, str) or not REMOTE_RE.fullmatch(value):
        raise bad(field, f"{shown(value)} is not an OVSDB/OpenFlow remote (unix:/path, tcp:IP:PORT or "
                         "ssl:IP:PORT)")
    if not value.startswith("unix:"):
        address = value.split(":")[1]
        if address != "127.0.0.1":  # loopback is fine for a remote: the controller may be on the host
            ipv4_address(address, field)
        integer(int(value.rsplit(":", 1)[1]), field + " port", 1, 65535)
    return value


def network_mtu(value, underlay_mtu, field="mtu"):
    highest = underlay_mtu - GENEVE_OVERHEAD
    value = integer(value, field, MIN_MTU, 9000)
    if value > highest:
        raise bad(field, f"{value} is too large for the underlay: Geneve needs {GENEVE_OVERHEAD} bytes, so "
                         f"with an underlay MTU of {underlay_mtu} the largest network MTU is {highest}")
    return value


# --- labels, named ports, selectors and names, as Kubernetes has them (k8s.io/apimachinery/pkg/util/validation)
LABEL_NAME_RE = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")  # also a value's form
DNS_LABEL_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
DNS1035_LABEL_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
SERVICE_NAME_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,13}[a-z0-9])?")  # IANA_SVC_NAME, without its other rules
MAX_LABELS = 64
MAX_NAMED_PORTS = 64
LABEL_KEY_RULE = ("an optional DNS subdomain prefix and '/', then 1-63 letters, digits, '-', '_' or '.', "
                  "starting and ending with a letter or digit")
LABEL_VALUE_RULE = "empty, or 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
SERVICE_NAME_RULE = ("1-15 lowercase letters, digits or '-', with a letter, no '--', not starting or ending "
                     "with '-'")
PROTOCOLS = ("TCP", "UDP", "SCTP")

# Each *_problem function says what is wrong with a string, or returns None: the API raises it as a 400
# (label_key, labels... below), the manifest parser (controller/manifests.py) with the path of the field.


def label_key_problem(key):
    """A label key is a qualified name: an optional DNS-subdomain prefix and '/', then a name."""
    prefix, slash, name_part = key.rpartition("/")
    if slash and not (0 < len(prefix) <= 253 and DNS_SUBDOMAIN_RE.fullmatch(prefix)):
        return "its prefix (before the '/') must be a lowercase DNS subdomain of at most 253 characters"
    if not LABEL_NAME_RE.fullmatch(name_part):
        return f"a label key is {LABEL_KEY_RULE} (like app.kubernetes.io/name)"
    return None


def label_value_problem(value):
    if value and not LABEL_NAME_RE.fullmatch(value):
        return f"a label value is {LABEL_VALUE_RULE}"
    return None


def service_name_problem(value):
    """A named port is an IANA_SVC_NAME (RFC 6335): the name of a container's port, like "http"."""
    if not (SERVICE_NAME_RE.fullmatch(value) and "--" not in value and re.search("[a-z]", value)):
        return f"a port name is {SERVICE_NAME_RULE} (like http)"
    return None


def dns_subdomain_problem(value):
    if not (len(value) <= 253 and DNS_SUBDOMAIN_RE.fullmatch(value)):
        return "must be a lowercase DNS subdomain: at most 253 lowercase letters, digits, '-' or '.', " \
               "starting and ending with a letter or digit"
    return None


def dns_label_problem(value):
    if not DNS_LABEL_RE.fullmatch(value):
        return "must be a lowercase DNS label: 1-63 lowercase letters, digits or '-', starting and ending " \
               "with a letter or digit"
    return None


def dns1035_label_problem(value):
    if not DNS1035_LABEL_RE.fullmatch(value):
        return "must be a DNS-1035 label: 1-63 lowercase letters, digits or '-', starting with a letter and " \
               "ending with a letter or digit"
    return None


def label_key(value, field):
    if not isinstance(value, str) or label_key_problem(value):
        raise bad(field, f"key {shown(value)} is not a valid label key ({LABEL_KEY_RULE})")
    return value


def label_value(value, field):
    if not isinstance(value, str) or label_value_problem(value):
        raise bad(field, f"{shown(value)} is not a valid label value ({LABEL_VALUE_RULE})")
    return value


def labels(value, field="labels"):
    """A port's or network's labels ({key: value}, Kubernetes' syntax): what policies select by."""
    if not isinstance(value, dict):
        raise bad(field, f"{shown(value)} is not an object of strings")
    if len(value) > MAX_LABELS:
        raise bad(field, f"{len(value)} labels is more than the {MAX_LABELS} allowed")
    for key, item in value.items():
        label_value(item, f"{field}.{label_key(key, field)}")
    return dict(value)


def service_name(value, field):
    """An IANA_SVC_NAME, as Kubernetes takes for a named port."""
    if not isinstance(value, str) or service_name_problem(value):
        raise bad(field, f"{shown(value)} is not a valid port name ({SERVICE_NAME_RULE})")
    return value


def named_port_target(value, field):
    """"TCP/8080" (any case) -> ("TCP", 8080)."""
    protocol, slash, number = value.partition("/") if isinstance(value, str) else ("", "", "")
    if not slash or protocol.upper() not in PROTOCOLS or not INTEGER_RE.fullmatch(number):
        raise bad(field, f"{shown(value)} is not PROTOCOL/NUMBER (like TCP/8080; protocols: "
                         f"{', '.join(PROTOCOLS)})")
    return protocol.upper(), integer(int(number), field, 1, 65535)


def named_ports(value, field="named_ports"):
    """A port's named ports ({"http": "TCP/8080"}), which policies and services may name instead of a
    number -> the same, protocols in capitals and numbers as written without leading zeros."""
    if not isinstance(value, dict):
        raise bad(field, f"{shown(value)} is not an object of strings")
    if len(value) > MAX_NAMED_PORTS:
        raise bad(field, f"{len(value)} named ports is more than the {MAX_NAMED_PORTS} allowed")
    out = {}
    for key, item in value.items():
        service_name(key, field)
        protocol, number = named_port_target(item, f"{field}.{key}")
        out[key] = f"{protocol}/{number}"
    return out


_SELECTOR_TOKEN = re.compile(r"\s*(?:(==|!=|=|!|\(|\)|,|<|>)|([^\s=!(),<>]+))")
_SELECTOR_OPERATORS = frozenset({"==", "!=", "=", "!", "(", ")", ",", "<", ">"})


def selector(text, field="selector"):
    """A Kubernetes label selector string (`kubectl get -l`): requirements joined by ',', each one of
    `key=value`, `key==value`, `key!=value`, `key`, `!key`, `key in (a,b)`, `key notin (a,b)` ->
    flows.policy.Selector. The empty string selects everything."""
    from flows.policy import Requirement, Selector
    tokens, pos = [], 0
    while pos < len(text):
        found = _SELECTOR_TOKEN.match(text, pos)
        if not found:  # only white space is left
            break
        tokens.append(found.group(1) or found.group(2))
        pos = found.end()
    equal, expressions = [], []
    where = [0]

    def take():
        where[0] += 1
        return tokens[where[0] - 1] if where[0] <= len(tokens) else None

    def peek():
        return tokens[where[0]] if where[0] < len(tokens) else None

    def word(what, after):
        token = take()
        if token is None or token in _SELECTOR_OPERATORS:
            place = f"after {after!r}" if after else "at the start"
            raise bad(field, f"{shown(text)}: expected {what} {place}{'' if token is None else f', found {token!r}'}")
        return token

    def value_after(op):
        return "" if peek() in (None, ",") else label_value(word("a value", op), field)

    while tokens:
        if peek() == "!":
            take()
            key = label_key(word("a label key", "!"), field)
            expressions.append(Requirement(key, "DoesNotExist"))
        else:
            key = label_key(word("a label key", "," if where[0] else None), field)
            op = peek()
            if op in (None, ","):
                expressions.append(Requirement(key, "Exists"))
            elif op in ("=", "=="):
                take()
                equal.append((key, value_after(op)))
            elif op == "!=":
                take()
                expressions.append(Requirement(key, "NotIn", (value_after(op),)))
            elif op in ("in", "notin"):
                take()
                if take() != "(":
                    raise bad(field, f"{shown(text)}: expected '(' after {key} {op}")
                if peek() == ")":
                    raise bad(field, f"{shown(text)}: {key} {op} () needs at least one value")
                values = []
                while True:
                    values.append(value_after("(" if not values else ","))
                    closing = take()
                    if closing == ")":
                        break
                    if closing != ",":
                        raise bad(field, f"{shown(text)}: expected ',' or ')' in the values of {key} {op}")
                expressions.append(Requirement(key, "In" if op == "in" else "NotIn", tuple(sorted(set(values)))))
            elif op in ("<", ">"):
                raise bad(field, f"{shown(text)}: the operators < and > are not supported (=, ==, !=, in, notin, "
                                 "key and !key are)")
            else:
                raise bad(field, f"{shown(text)}: expected =, ==, !=, in or notin after {key}, found {op!r}")
        separator = take()
        if separator is None:
            break
        if separator != ",":
            raise bad(field, f"{shown(text)}: expected ',' between requirements, found {separator!r}")
        if peek() is None:
            raise bad(field, f"{shown(text)}: expected a requirement after the last ','")
    return Selector(tuple(sorted(equal)), tuple(expressions))
