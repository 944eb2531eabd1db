"""Kubernetes manifests (NetworkPolicy networking.k8s.io/v1, Service v1) -> flows/policy.py's model.

Pure: no NB, no I/O. The server is the authority on manifests: it checks every document as the
Kubernetes API server would (pkg/apis/networking/validation, pkg/apis/core/validation and their
defaulting), and refuses, with the path of the field, whatever Weft would not honour (an unknown field,
a Kubernetes feature Weft does not implement), so that nothing is ever half applied or silently ignored.

Each document is checked in three passes: JSON values only, bounded (anywhere, status included); the
shape (every object and list where the schema has one, no unknown field, bounded lists); the meaning of
each value. The schema below drives the second pass and the hints of an unknown field ("did you mean",
"it belongs at spec.podSelector.matchLabels"), which is how a selector indented one level wrong is caught.
"""
from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from dataclasses import dataclass

from controller import validate
from flows import acl
from flows.policy import (PROTOCOLS, IpBlock, Labels, Peer, PolicyPort, PolicyRule, PolicyState,
                          Requirement, Selector, ServicePort, ServiceState)

MAX_DOCUMENTS = 1000       # per file (or request), the items of a List included
MAX_RULES = acl.MAX_RULES  # ingress or egress rules of one policy
MAX_ITEMS = 1000           # per list: rules, peers, ports, except entries, expressions, values, labels...
MAX_STRING = 64 * 1024     # any one string
MAX_ANNOTATIONS = 256 * 1024  # Kubernetes' limit on the total size of an object's annotations
MAX_DEPTH = 64             # nesting of a document (kubectl's managedFields nest ~12 deep)
SUPPORTED = "Weft takes NetworkPolicy (apiVersion networking.k8s.io/v1) and Service (apiVersion v1)"
API_VERSIONS = {"NetworkPolicy": "networking.k8s.io/v1", "Service": "v1"}
DEFAULT_AFFINITY_TIMEOUT = 10800  # core/v1 DefaultClientIPServiceAffinitySeconds
MAX_AFFINITY_TIMEOUT = 86400      # core MaxClientIPServiceAffinitySeconds


class ManifestError(ValueError):
    """A manifest Weft refuses: where (document index in the file, path of the field) and why."""

    def __init__(self, message, path="", document=None, header=""):
        super().__init__(message)
        self.message = message
        self.path = path
        self.document = document
        self.header = header  # "NetworkPolicy allow-web": what the document is, once known

    def __str__(self):
        where = "" if self.document is None else f"document {self.document}"
        if where and self.header:
            where += f" ({self.header})"
        return ": ".join(part for part in (where, self.path, self.message) if part)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A Service as the user wrote it, before the controller gives it a key and its addresses."""
    name: str
    network: str
    selector: Labels
    ports: tuple[ServicePort, ...]
    type: str = "ClusterIP"  # or LoadBalancer
    cluster_ip: str | None = None  # the VIP asked for; None: the controller picks one
    load_balancer_ip: str | None = None  # type LoadBalancer: the address asked for, or None
    session_affinity: bool = False
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT

    @property
    def qualified(self) -> str:
        return f"{self.network}/{self.name}"

    def to_state(self, key: int, cluster_ip: str, load_balancer_ip: str | None = None) -> ServiceState:
        if self.type == "LoadBalancer" and load_balancer_ip is None:
            raise ValueError(f"the LoadBalancer service {self.qualified} needs a load balancer address")
        if self.type == "ClusterIP" and load_balancer_ip is not None:
            raise ValueError(f"the ClusterIP service {self.qualified} has no load balancer address")
        return ServiceState(self.name, self.network, key, self.selector, self.ports, cluster_ip, load_balancer_ip,
                            self.session_affinity, self.affinity_timeout)


@dataclass(frozen=True)
class Manifest:
    kind: str  # NetworkPolicy or Service
    name: str
    network: str
    obj: PolicyState | ServiceSpec
    source: dict  # the document as given, to store and show back
    warnings: tuple[str, ...] = ()  # accepted as Kubernetes does, but worth telling (like kubectl's warnings)
    document: int = 0  # its index among the documents given
    path: str = ""  # where it is in that document: "" or, in a List, "items[2]"

    def error(self, field, message):
        """A ManifestError at `field` ("spec.clusterIP") of this document: for what the controller
        refuses once it knows the NB (a network that does not exist, an address taken)."""
        return ManifestError(message, ".".join(filter(None, (self.path, field))), self.document,
                             f"{self.kind} {self.name}")


# --- the schema: each object's fields, and what each holds ---------------------------------------------
# A field holds a scalar (checked in the second pass), a free map of strings (LABELS), an object (the name
# of its shape), a list ([shape]), anything (ANY: accepted and ignored, like status), or a Kubernetes
# feature Weft does not implement (Unsupported: refused unless empty).
SCALAR, LABELS, ANY = "scalar", "labels", "any"


@dataclass(frozen=True)
class Unsupported:
    why: str


_SHAPES = {
    "NetworkPolicy": ("a NetworkPolicy", {
        "apiVersion": SCALAR, "kind": SCALAR, "metadata": "ObjectMeta", "spec": "NetworkPolicySpec",
        "status": ANY}),
    "Service": ("a Service", {
        "apiVersion": SCALAR, "kind": SCALAR, "metadata": "ObjectMeta", "spec": "ServiceSpec", "status": ANY}),
    "List": ("a List", {"apiVersion": SCALAR, "kind": SCALAR, "metadata": ANY, "items": [ANY]}),
    "ObjectMeta": ("metadata", {
        "name": SCALAR, "namespace": SCALAR, "labels": LABELS, "annotations": LABELS,
        # what `kubectl get -o yaml` carries: the server's bookkeeping, meaningless here
        "uid": ANY, "resourceVersion": ANY, "generation": ANY, "creationTimestamp": ANY, "managedFields": ANY,
        "selfLink": ANY,
        "generateName": Unsupported("Weft does not generate names: give metadata.name"),
        "ownerReferences": Unsupported("Weft does not garbage-collect objects by owner"),
        "finalizers": Unsupported("Weft does not run finalizers"),
        "deletionTimestamp": Unsupported("this object is being deleted"),
        "deletionGracePeriodSeconds": Unsupported("this object is being deleted")}),
    "NetworkPolicySpec": ("a NetworkPolicy spec", {
        "podSelector": "LabelSelector", "policyTypes": [SCALAR], "ingress": ["IngressRule"],
        "egress": ["EgressRule"]}),
    "IngressRule": ("an ingress rule", {"from": ["Peer"], "ports": ["PolicyPort"]}),
    "EgressRule": ("an egress rule", {"to": ["Peer"], "ports": ["PolicyPort"]}),
    "Peer": ("a peer", {"podSelector": "LabelSelector", "namespaceSelector": "LabelSelector",
                        "ipBlock": "IPBlock"}),
    "IPBlock": ("an ipBlock", {"cidr": SCALAR, "except": [SCALAR]}),
    "PolicyPort": ("a NetworkPolicy port", {"protocol": SCALAR, "port": SCALAR, "endPort": SCALAR}),
    "LabelSelector": ("a label selector", {"matchLabels": LABELS, "matchExpressions": ["Requirement"]}),
    "Requirement": ("a match expression", {"key": SCALAR, "operator": SCALAR, "values": [SCALAR]}),
    "ServiceSpec": ("a Service spec", {
        "selector": LABELS, "ports": ["ServicePort"], "type": SCALAR, "clusterIP": SCALAR,
        "clusterIPs": [SCALAR], "loadBalancerIP": SCALAR, "sessionAffinity": SCALAR,
        "sessionAffinityConfig": "SessionAffinityConfig", "ipFamilies": [SCALAR], "ipFamilyPolicy": SCALAR,
        "externalTrafficPolicy": SCALAR, "internalTrafficPolicy": SCALAR, "allocateLoadBalancerNodePorts": SCALAR,
        "publishNotReadyAddresses": Unsupported("Weft sends only to ready backends"),
        "externalIPs": Unsupported("Weft does not take external IPs: use type LoadBalancer"),
        "externalName": Unsupported("Weft does not support ExternalName services"),
        "loadBalancerSourceRanges": Unsupported("Weft does not filter a load balancer's clients"),
        "loadBalancerClass": Unsupported("Weft is the only load balancer implementation here"),
        "healthCheckNodePort": Unsupported("Weft has no node ports"),
        "trafficDistribution": Unsupported("Weft spreads connections over every ready backend")}),
    "ServicePort": ("a Service port", {
        "name": SCALAR, "protocol": SCALAR, "port": SCALAR, "targetPort": SCALAR, "appProtocol": SCALAR,
        "nodePort": Unsupported("Weft has no node ports")}),
    "SessionAffinityConfig": ("sessionAffinityConfig", {"clientIP": "ClientIPConfig"}),
    "ClientIPConfig": ("sessionAffinityConfig.clientIP", {"timeoutSeconds": SCALAR}),
}


def _fail(path, message):
    raise ManifestError(message, path)


def _child(path, key):
    """path.key, or path["odd key"] for a key that is not a plain identifier."""
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,62}", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{_shown(key)}]"


def _shown(value, limit=40):
    """A scalar as JSON writes it (quoted, non-ASCII escaped: one safe line), cut short."""
    if isinstance(value, (dict, list)):
        return validate.describe(value)
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        return type(value).__name__
    return text if len(text) <= limit else text[:limit] + ('..."' if text.endswith('"') else "...")


# --- pass 0: JSON values, bounded ----------------------------------------------------------------------

def _json_values(doc, path):
    """Only what JSON holds (so the document can be stored and shown back as it came), strings that are
    valid Unicode and bounded, nesting bounded; in document order, without recursion."""
    stack = [(doc, path, 0)]
    while stack:
        value, at, depth = stack.pop()
        if depth > MAX_DEPTH:
            _fail(at, f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    _fail(_child(at, key), f"a field name must be a string, got {validate.describe(key)}")
                _json_string(key, _child(at, key))
            stack.extend((inner, _child(at, key), depth + 1) for key, inner in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((value[i], f"{at}[{i}]", depth + 1) for i in reversed(range(len(value))))
        elif isinstance(value, str):
            _json_string(value, at)
        elif isinstance(value, float) and not math.isfinite(value):
            _fail(at, f"{value} is not a number JSON allows")
        elif value is not None and not isinstance(value, (bool, int, float)):
            _fail(at, f"{type(value).__name__} is not a JSON value")


def _json_string(text, path):
    if len(text) > MAX_STRING:
        _fail(path, f"a string of {len(text)} characters; the limit is {MAX_STRING}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            _fail(path, "is not valid Unicode (it holds a lone surrogate)")


# --- pass 1: shapes -------------------------------------------------------------------------------------

def _walk(obj, shape, path, ancestors):
    """Every object and list where the schema says, no unknown field, lists bounded."""
    if not isinstance(obj, dict):
        _fail(path, f"expected {_SHAPES[shape][0]} (an object), got {validate.describe(obj)}")
    fields = _SHAPES[shape][1]
    for key, value in obj.items():
        at = _child(path, key)
        if key not in fields:
            _fail(at, _unknown(key, value, shape, path, ancestors))
        held = fields[key]
        if value is None or held in (SCALAR, ANY):
            continue  # null is "not given", as in Kubernetes' JSON
        if isinstance(held, Unsupported):
            if value not in ("", 0, False, [], {}):
                _fail(at, f"not supported by Weft: {held.why}")
        elif held == LABELS:
            if not isinstance(value, dict):
                _fail(at, f"expected an object of strings, got {validate.describe(value)}")
            _bounded(value, at)
        elif isinstance(held, list):
            if not isinstance(value, list):
                _fail(at, f"expected a list, got {validate.describe(value)}")
            _bounded(value, at)
            if held[0] not in (SCALAR, ANY):
                for i, item in enumerate(value):
                    _walk(item, held[0], f"{at}[{i}]", [*ancestors, (path, shape)])
        else:
            _walk(value, held, at, [*ancestors, (path, shape)])


def _bounded(items, path):
    if len(items) > MAX_ITEMS:
        _fail(path, f"has {len(items)} entries; the limit is {MAX_ITEMS}")


def _unknown(key, value, shape, path, ancestors):
    description, fields = _SHAPES[shape]
    known = ", ".join(sorted(fields))
    message = f"unknown field {_shown(key)} ({description} has: {known})"
    place = _where_valid(key, shape, path, ancestors)
    if place:
        return f"{message}; {key} belongs at {place}: check the indentation"
    lowered = {field.lower(): field for field in fields}
    close = difflib.get_close_matches(key.lower(), lowered, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {lowered[close[0]]}?"
    if isinstance(value, str) and validate.label_key_problem(key) is None:
        _, labels = _below(lambda field, held: held == LABELS and field != "annotations", shape, path)
        if labels:
            return f"{message}; to match the label {key}, write it under {labels}: check the indentation"
    return message


def _where_valid(key, shape, path, ancestors):
    """Where a field of this name would be valid, the nearest first: one or two levels deeper (indented
    too little), in an enclosing object or beside this one (indented too much), three levels deeper."""
    levels, deeper = _below(lambda field, held: field == key, shape, path)
    if deeper and levels <= 2:
        return deeper
    for i, (above, above_shape) in enumerate(reversed(ancestors)):
        _, found = _below(lambda field, held: field == key, above_shape, above, depth=2 if i == 0 else 1)
        if found:
            return found
    return deeper


def _below(wanted, shape, path, depth=3):
    """(levels down, path) of the nearest field below `path` for which wanted(field, held), breadth first,
    lists written [*]; (None, None) if there is none within `depth` levels."""
    level = [(shape, path)]
    for down in range(1, depth + 1):
        below = []
        for here, at in level:
            for field, held in _SHAPES[here][1].items():
                if wanted(field, held):
                    return down, _child(at, field)
                inner = held[0] if isinstance(held, list) else held
                if isinstance(inner, str) and inner in _SHAPES:
                    below.append((inner, _child(at, field) + ("[*]" if isinstance(held, list) else "")))
        level = below
    return None, None


# --- pass 2: values -------------------------------------------------------------------------------------

def _string(obj, key, path, required=False):
    value = obj.get(key)
    at = _child(path, key)
    if value is None or value == "":
        if required:
            _fail(at, "missing")
        return None
    if not isinstance(value, str):
        hint = " (in YAML, quote values like yes, on or 80)" if isinstance(value, (bool, int, float)) else ""
        _fail(at, f"expected a string, got {_shown(value)}{hint}")
    return value


def _integer(obj, key, path, low, high):
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(_child(path, key), f"{_shown(value)} is not an integer")
    if not low <= value <= high:
        _fail(_child(path, key), f"{value} is out of range ({low}..{high})")
    return value


def _choice(obj, key, path, choices, default=None, unsupported=(), required=False):
    value = _string(obj, key, path, required)
    if value is None:
        return default
    if value in unsupported:
        _fail(_child(path, key), f"{value} is not supported by Weft{unsupported[value]}")
    if value not in choices:
        hint = next((f" (did you mean {c}?)" for c in choices if c.lower() == value.lower()), "")
        _fail(_child(path, key), f"{_shown(value)} is not supported: use {' or '.join(choices)}{hint}")
    return value


def _list(obj, key):
    return obj.get(key) or []


def _labels(obj, key, path):
    """A map of label keys to label values (matchLabels, a Service's selector, metadata.labels)."""
    at = _child(path, key)
    labels = obj.get(key) or {}
    for name, value in labels.items():
        problem = validate.label_key_problem(name)
        if problem:
            _fail(at, f"key {_shown(name)}: {problem}")
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, dict) and name in ("matchLabels", "matchExpressions") and key == "selector":
                hint = f"; a Service selects by labels directly: write them under {at}, not {_child(at, name)}"
            elif isinstance(value, (bool, int, float)):
                hint = " (in YAML, quote values like yes, on or 80)"
            _fail(_child(at, name), f"a label value must be a string, got {_shown(value)}{hint}")
        problem = validate.label_value_problem(value)
        if problem:
            _fail(_child(at, name), f"{_shown(value)}: {problem}")
    return tuple(sorted(labels.items()))


def _annotations(meta, path):
    """Accepted and ignored, but checked as Kubernetes does: qualified-name keys, bounded total size."""
    at = _child(path, "annotations")
    annotations = meta.get("annotations") or {}
    size = 0
    for name, value in annotations.items():
        if validate.label_key_problem(name.lower()):
            _fail(at, f"key {_shown(name)} is not a qualified name (like example.com/note)")
        if not isinstance(value, str):
            _fail(_child(at, name), f"an annotation value must be a string, got {_shown(value)}")
        size += len(name) + len(value)
    if size > MAX_ANNOTATIONS:
        _fail(at, f"{size} characters in all; the limit is {MAX_ANNOTATIONS}")


def _metadata(doc, kind, path, default_network):
    meta = doc.get("metadata")
    at = _child(path, "metadata")
    if meta is None:
        _fail(at, "missing (metadata.name names the object)")
    name = _string(meta, "name", at, required=True)
    problem = (validate.dns1035_label_problem if kind == "Service" else validate.dns_subdomain_problem)(name)
    if problem is None and not validate.NAME_RE.fullmatch(name):
        problem = "is longer than the 63 characters a Weft name may have"
    if problem:
        _fail(_child(at, "name"), f"{_shown(name)} {problem}")
    network = _string(meta, "namespace", at)
    if network is None:
        if default_network is None:
            _fail(_child(at, "namespace"),
                  "missing: name the Weft network (a namespace in Kubernetes terms), or give --network")
        network = default_network
    elif not validate.NAME_RE.fullmatch(network):
        _fail(_child(at, "namespace"), f"{_shown(network)} is not a valid Weft network name ({validate.NAME_RULE})")
    elif default_network is not None and network != default_network:
        # as kubectl does with --namespace: a file is not silently moved to another network
        _fail(_child(at, "namespace"), f"{_shown(network)} differs from the network given ({default_network}): "
                                       "remove one of them")
    _labels(meta, "labels", at)
    _annotations(meta, at)
    return name, network


# --- NetworkPolicy ---

def _selector(obj, key, path):
    at = _child(path, key)
    selector = obj[key]
    expressions = []
    for i, expression in enumerate(_list(selector, "matchExpressions")):
        expressions.append(_requirement(expression, f"{at}.matchExpressions[{i}]"))
    return Selector(_labels(selector, "matchLabels", at), tuple(expressions))


def _requirement(expression, path):
    key = _string(expression, "key", path, required=True)
    problem = validate.label_key_problem(key)
    if problem:
        _fail(_child(path, "key"), f"{_shown(key)}: {problem}")
    operator = _choice(expression, "operator", path, ("In", "NotIn", "Exists", "DoesNotExist"), required=True)
    values = []
    for i, value in enumerate(_list(expression, "values")):
        if not isinstance(value, str):
            _fail(f"{path}.values[{i}]", f"expected a string, got {_shown(value)}")
        problem = validate.label_value_problem(value)
        if problem:
            _fail(f"{path}.values[{i}]", f"{_shown(value)}: {problem}")
        values.append(value)
    if operator in ("In", "NotIn") and not values:
        _fail(_child(path, "values"), f"must be given (at least one value) when the operator is {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        _fail(_child(path, "values"), f"must be empty when the operator is {operator}")
    return Requirement(key, operator, tuple(sorted(set(values))))


def _ip_block(block, path, warnings):
    cidr = _cidr(_string(block, "cidr", path, required=True), _child(path, "cidr"), warnings)
    excepts = []
    for i, text in enumerate(_list(block, "except")):
        at = f"{path}.except[{i}]"
        if not isinstance(text, str):
            _fail(at, f"expected a string, got {_shown(text)}")
        inner = _cidr(text, at, warnings)
        # upstream ValidateIPBlock: "must be a strict subset of `cidr`"
        if not (inner.subnet_of(cidr) and inner.prefixlen > cidr.prefixlen):
            _fail(at, f"{inner} is not strictly inside the cidr {cidr}")
        excepts.append(str(inner))
    return IpBlock(str(cidr), tuple(excepts))


def _cidr(text, path, warnings):
    if ":" in text:
        _fail(path, f"{_shown(text)}: IPv6 is not supported by Weft")
    if not re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}", text):
        _fail(path, f"{_shown(text)} is not an IPv4 CIDR")
    try:
        net = ipaddress.IPv4Network(text, strict=False)
    except ValueError as err:
        # Python refuses leading zeros; Kubernetes warns that it will (libc reads them as octal)
        _fail(path, f"{_shown(text)} is not an IPv4 CIDR ({err})")
    if str(net) != text:
        # Kubernetes (with StrictIPCIDRValidation off, the default up to 1.35) accepts host bits and masks
        # them off, with a warning: so does Weft.
        warnings.append(f"{path}: {text} has host bits set; it means {net}")
    return net


def _policy_port(port, path):
    protocol = _choice(port, "protocol", path, PROTOCOLS, "TCP")
    number = port.get("port")
    end = port.get("endPort")
    if number is None:
        if end is not None:
            _fail(_child(path, "endPort"), "may not be given without a port")
        return PolicyPort(protocol)
    if isinstance(number, str):
        _port_name(number, _child(path, "port"))
        if end is not None:
            _fail(_child(path, "endPort"), "may not be given with a named port (endPort needs a port number)")
        return PolicyPort(protocol, number)
    number = _integer(port, "port", path, 1, 65535)
    end = _integer(port, "endPort", path, 1, 65535)
    if end is not None and end < number:
        _fail(_child(path, "endPort"), f"{end} is less than the port {number}")
    return PolicyPort(protocol, number, end)


def _port_name(name, path):
    if name.isdigit():
        _fail(path, f"{_shown(name)} is a string: write a port number without quotes")
    problem = validate.service_name_problem(name)
    if problem:
        _fail(path, f"{_shown(name)}: {problem}")


def _peer(peer, path, warnings):
    pod = peer.get("podSelector") is not None
    namespace = peer.get("namespaceSelector") is not None
    if peer.get("ipBlock") is not None:
        if pod or namespace:
            _fail(path, "may not give both ipBlock and a selector: make them two peers")
        return Peer(ip_block=_ip_block(peer["ipBlock"], _child(path, "ipBlock"), warnings))
    if not (pod or namespace):
        _fail(path, "must give a peer: podSelector, namespaceSelector (or both), or ipBlock "
                    "(to allow every peer, leave the list of peers out)")
    return Peer(_selector(peer, "podSelector", path) if pod else None,
                _selector(peer, "namespaceSelector", path) if namespace else None)


def _rules(spec, direction, peers_key, path, warnings):
    rules = []
    listed = _list(spec, direction)
    if len(listed) > MAX_RULES:  # each rule is one conjunction id of 7 bits (flows.acl)
        _fail(_child(path, direction), f"has {len(listed)} rules; Weft takes at most {MAX_RULES} "
                                       "per direction in one policy (split it into several)")
    for i, rule in enumerate(listed):
        at = f"{path}.{direction}[{i}]"
        peers = tuple(_peer(peer, f"{at}.{peers_key}[{j}]", warnings) for j, peer in enumerate(_list(rule, peers_key)))
        ports = tuple(_policy_port(port, f"{at}.ports[{j}]") for j, port in enumerate(_list(rule, "ports")))
        rules.append(PolicyRule(peers, ports))
    return tuple(rules)


def _network_policy(doc, path, name, network, warnings):
    spec = doc.get("spec")
    at = _child(path, "spec")
    if spec is None:
        _fail(at, "missing (a NetworkPolicy needs at least spec.podSelector)")
    if spec.get("podSelector") is None:
        _fail(_child(at, "podSelector"), "missing: write podSelector: {} to select every port of the network")
    types = []
    for i, value in enumerate(_list(spec, "policyTypes")):
        item = f"{at}.policyTypes[{i}]"
        if value not in ("Ingress", "Egress"):
            _fail(item, f"{_shown(value)} is not supported: use Ingress or Egress")
        if value in types:
            _fail(item, f"{value} is given twice")  # Kubernetes accepts the repeat; it can only be a slip
        types.append(value)
    ingress = _rules(spec, "ingress", "from", at, warnings)
    egress = _rules(spec, "egress", "to", at, warnings)
    if not types:
        # upstream SetDefaults_NetworkPolicy (pkg/apis/networking/v1/defaults.go): without policyTypes, a
        # policy is an Ingress policy, and an Egress one too if len(spec.egress) != 0 (so `egress: []` is not).
        types = ["Ingress", *(["Egress"] if egress else [])]
    for direction, rules in (("Ingress", ingress), ("Egress", egress)):
        if rules and direction not in types:
            warnings.append(f"{at}.{direction.lower()}: ignored, as policyTypes does not include {direction}")
    return PolicyState(name, network, _selector(spec, "podSelector", at),
                       ingress if "Ingress" in types else None, egress if "Egress" in types else None)


# --- Service ---

def _service(doc, path, name, network, warnings):
    spec = doc.get("spec")
    at = _child(path, "spec")
    if spec is None:
        _fail(at, "missing (a Service needs at least spec.ports)")
    service_type = _choice(spec, "type", at, ("ClusterIP", "LoadBalancer"), "ClusterIP", unsupported={
        "NodePort": ": Weft has no node ports (use ClusterIP, or LoadBalancer to reach it from outside)",
        "ExternalName": ": Weft serves no DNS aliases to external names"})
    selector = _labels(spec, "selector", at)
    ports = _service_ports(spec, at)
    cluster_ip = _cluster_ip(spec, at)
    load_balancer_ip = _address(spec, "loadBalancerIP", at)
    if load_balancer_ip and service_type != "LoadBalancer":
        _fail(_child(at, "loadBalancerIP"), "only a LoadBalancer service has one (type is ClusterIP)")
    _families(spec, at)
    external = _choice(spec, "externalTrafficPolicy", at, ("Cluster",), None, unsupported={
        "Local": ": a LoadBalancer service sends to backends on any host (Cluster)"})
    if external and service_type != "LoadBalancer":
        _fail(_child(at, "externalTrafficPolicy"), "may only be set on a LoadBalancer service")
    _choice(spec, "internalTrafficPolicy", at, ("Cluster",), None, unsupported={
        "Local": ": a service sends to backends on any host (Cluster)"})
    allocate = spec.get("allocateLoadBalancerNodePorts")
    if allocate is not None:  # Weft allocates no node ports either way
        if not isinstance(allocate, bool):
            _fail(_child(at, "allocateLoadBalancerNodePorts"), f"expected true or false, got {_shown(allocate)}")
        if service_type != "LoadBalancer":
            _fail(_child(at, "allocateLoadBalancerNodePorts"), "may only be set on a LoadBalancer service")
    affinity = _choice(spec, "sessionAffinity", at, ("None", "ClientIP"), "None")
    timeout = DEFAULT_AFFINITY_TIMEOUT
    config = spec.get("sessionAffinityConfig")
    if config is not None:
        config_at = _child(at, "sessionAffinityConfig")
        if affinity != "ClientIP":
            _fail(config_at, "may only be set when sessionAffinity is ClientIP")
        client = config.get("clientIP") or {}
        timeout = _integer(client, "timeoutSeconds", f"{config_at}.clientIP", 1, MAX_AFFINITY_TIMEOUT) or timeout
        if "timeoutSeconds" in client:  # the select hash keeps a client on its backend, for good
            warnings.append(f"{config_at}.clientIP.timeoutSeconds: not kept: a client keeps its backend "
                            "while the backends stay the same, however long it is idle")
    return ServiceSpec(name, network, selector, ports, service_type, cluster_ip, load_balancer_ip,
                       affinity == "ClientIP", timeout)


def _service_ports(spec, path):
    at = _child(path, "ports")
    items = _list(spec, "ports")
    if not items:
        _fail(at, "missing: a Service needs at least one port")
    ports, names, seen = [], set(), {}
    for i, item in enumerate(items):
        item_at = f"{at}[{i}]"
        name = _string(item, "name", item_at) or ""
        if name:
            problem = validate.dns_label_problem(name)
            if problem:
                _fail(_child(item_at, "name"), f"{_shown(name)} {problem}")
            if name in names:
                _fail(_child(item_at, "name"), f"{name} names two ports")
            names.add(name)
        elif len(items) > 1:
            _fail(_child(item_at, "name"), "missing: each port of a service with several ports needs a name")
        protocol = _choice(item, "protocol", item_at, PROTOCOLS, "TCP")
        if item.get("port") is None:
            _fail(_child(item_at, "port"), "missing")
        number = _integer(item, "port", item_at, 1, 65535)
        if (number, protocol) in seen:
            _fail(item_at, f"{protocol} port {number} is also ports[{seen[number, protocol]}]")
        seen[number, protocol] = i
        target = item.get("targetPort")
        if target is None or target == "" or (type(target) is int and target == 0):
            target = number  # upstream defaulting: an absent (or 0, or "") targetPort is the port
        elif isinstance(target, str):
            _port_name(target, _child(item_at, "targetPort"))
        else:
            target = _integer(item, "targetPort", item_at, 1, 65535)
        app_protocol = _string(item, "appProtocol", item_at)  # a hint for implementations: Weft needs none
        if app_protocol and validate.label_key_problem(app_protocol):
            _fail(_child(item_at, "appProtocol"), f"{_shown(app_protocol)} is not a qualified name (like http or "
                                                  "kubernetes.io/h2c)")
        ports.append(ServicePort(name, protocol, number, target))
    return tuple(ports)


def _address(obj, key, path):
    text = _string(obj, key, path)
    return None if text is None else _ipv4(text, _child(path, key))


def _ipv4(text, path):
    if not isinstance(text, str):
        _fail(path, f"expected a string, got {_shown(text)}")
    if ":" in text:
        _fail(path, f"{_shown(text)}: IPv6 is not supported by Weft")
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        _fail(path, f"{_shown(text)} is not an IPv4 address")


def _cluster_ip(spec, path):
    if spec.get("clusterIP") == "None" or "None" in _list(spec, "clusterIPs"):
        at = _child(path, "clusterIP" if spec.get("clusterIP") == "None" else "clusterIPs")
        _fail(at, "headless services (clusterIP: None) are not supported by Weft: a Weft service has a VIP")
    cluster_ip = _address(spec, "clusterIP", path)
    ips = _list(spec, "clusterIPs")
    if len(ips) > 1:
        _fail(f"{path}.clusterIPs[1]", "dual-stack services are not supported by Weft (IPv4 only)")
    if ips:
        first = _ipv4(ips[0], f"{path}.clusterIPs[0]")
        if cluster_ip is not None and first != cluster_ip:
            _fail(f"{path}.clusterIPs[0]", f"{first} differs from clusterIP {cluster_ip}")
        cluster_ip = first
    return cluster_ip


def _families(spec, path):
    for i, family in enumerate(_list(spec, "ipFamilies")):
        at = f"{path}.ipFamilies[{i}]"
        if family == "IPv6":
            _fail(at, "IPv6 is not supported by Weft")
        if family != "IPv4":
            _fail(at, f"{_shown(family)} is not supported: use IPv4")
        if i:
            _fail(at, "IPv4 is given twice")
    _choice(spec, "ipFamilyPolicy", path, ("SingleStack", "PreferDualStack"), None, unsupported={
        "RequireDualStack": ": Weft is IPv4 only"})


# --- documents ------------------------------------------------------------------------------------------

def parse_documents(docs: list, default_network: str | None) -> list[Manifest]:
    """Every document checked, then all of them returned, or the first error raised (ManifestError).
    A Kubernetes List and a list of documents are flattened; None (an empty YAML document) is skipped."""
    if not isinstance(docs, list):
        raise ManifestError(f"expected a list of documents, got {validate.describe(docs)}")
    if default_network is not None and not validate.NAME_RE.fullmatch(default_network):
        raise ManifestError(f"the network {_shown(default_network)} is not a valid name ({validate.NAME_RULE})")
    flat = []
    for index, doc in enumerate(docs):
        try:
            _json_values(doc, "")
            flat.extend((index, path, item) for path, item in _flatten(doc))
        except ManifestError as err:
            err.document, err.header = index, _header(doc)
            raise
        if len(flat) > MAX_DOCUMENTS:
            raise ManifestError(f"more than {MAX_DOCUMENTS} documents (the limit), List items included")
    manifests, seen = [], {}
    for index, path, doc in flat:
        manifest = _document(doc, index, path, default_network)
        key = (manifest.kind, manifest.network, manifest.name)
        if key in seen:
            raise ManifestError(f"{manifest.kind} {manifest.network}/{manifest.name} is also {seen[key]}",
                                _child(path, "metadata"), index, f"{manifest.kind} {manifest.name}")
        seen[key] = f"document {index}" + (f" {path}" if path else "")
        manifests.append(manifest)
    return manifests


def _flatten(doc):
    """(path, document) of each document in doc: itself, or the items of a List or of a list."""
    if doc is None:
        return []
    if isinstance(doc, list):
        items = [(f"[{i}]", item) for i, item in enumerate(doc)]
    elif isinstance(doc, dict) and doc.get("kind") == "List":
        _walk(doc, "List", "", [])
        if doc.get("apiVersion") != "v1":
            _fail("apiVersion", f"{_shown(doc.get('apiVersion'))} is not the apiVersion of a List: use v1")
        items = [(f"items[{i}]", item) for i, item in enumerate(_list(doc, "items"))]
    else:
        return [("", doc)]
    if len(items) > MAX_DOCUMENTS:
        _fail("", f"has {len(items)} items; the limit is {MAX_DOCUMENTS} documents")
    for path, item in items:
        if isinstance(item, list) or (isinstance(item, dict) and item.get("kind") == "List"):
            _fail(path, "a List inside a List is not a Kubernetes manifest")
    return [(path, item) for path, item in items if item is not None]


def _header(doc):
    """What a document is, for its errors: "NetworkPolicy allow-web", as far as it can be told."""
    if not isinstance(doc, dict) or doc.get("kind") not in (*API_VERSIONS, "List"):
        return ""
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", name):
        return f"{doc['kind']} {name}"
    return doc["kind"]


def _document(doc, index, path, default_network):
    try:
        if not isinstance(doc, dict):
            _fail(path, f"expected a Kubernetes manifest (an object), got {validate.describe(doc)}")
        kind = doc.get("kind")
        if kind is None:
            _fail(_child(path, "kind"), f"missing: {SUPPORTED}")
        if not isinstance(kind, str) or kind not in API_VERSIONS:
            _fail(_child(path, "kind"), f"{_shown(kind)} is not supported: {SUPPORTED}")
        api_version = doc.get("apiVersion")
        if api_version != API_VERSIONS[kind]:
            problem = "missing" if api_version is None else f"{_shown(api_version)} is not supported"
            _fail(_child(path, "apiVersion"), f"{problem}: a {kind} is apiVersion {API_VERSIONS[kind]}")
        _walk(doc, kind, path, [])
        name, network = _metadata(doc, kind, path, default_network)
        warnings = []
        parse = _network_policy if kind == "NetworkPolicy" else _service
        obj = parse(doc, path, name, network, warnings)
    except ManifestError as err:
        err.document, err.header = index, _header(doc)
        raise
    return Manifest(kind, name, network, obj, doc, tuple(warnings), index, path)


# --- text (for the CLI) ---------------------------------------------------------------------------------

def text_to_documents(text: str) -> list:
    """The documents of a manifest file: JSON (one value, or several in a row; a top-level list is its
    documents) or YAML (multi-document). Only JSON values come out, so the result can be sent as JSON:
    a YAML alias, merge key, tag like !!binary or !!set, non-string key, NaN or duplicated key is refused
    (with its line), not guessed at. PyYAML is imported only here: the CLI starts without it."""
    if not isinstance(text, str):
        raise ManifestError(f"expected text, got {validate.describe(text)}")
    body = text.lstrip("\ufeff \t\r\n")
    try:
        if body[:1] in ("{", "["):
            docs = _json_documents(body)
        else:
            docs = _yaml_documents(text)
    except RecursionError:
        raise ManifestError(f"the file nests deeper than {MAX_DEPTH} levels") from None
    if len(docs) > MAX_DOCUMENTS:
        raise ManifestError(f"the file has {len(docs)} documents; the limit is {MAX_DOCUMENTS}")
    return docs


def _json_documents(text):
    if validate.nesting(text) > MAX_DEPTH:
        raise ManifestError(f"the file nests deeper than {MAX_DEPTH} levels")
    decoder = json.JSONDecoder(object_pairs_hook=validate.unique_keys, parse_constant=validate.no_constant)
    docs, at = [], 0
    while at < len(text) and len(docs) <= MAX_DOCUMENTS:
        try:
            value, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as err:
            raise ManifestError(f"line {err.lineno}, column {err.colno}: not valid JSON: {err.msg}") from None
        except ValueError as err:  # a key twice, NaN
            raise ManifestError(f"not valid JSON: {err}") from None
        docs.extend(value if isinstance(value, list) else [value])
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
    return docs


_yaml_loader = None


def _yaml_documents(text):
    import yaml  # here, not at the top: the CLI imports this module and should start fast
    docs, loader = [], None
    try:
        loader = _loader_class(yaml)(text)  # the reader refuses control characters here
        while loader.check_data():
            docs.append(loader.get_data())
            if len(docs) > MAX_DOCUMENTS:
                break
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = ", ".join(part for part in (err.context, err.problem) if part)
        raise ManifestError(f"{where}not valid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise ManifestError(f"not valid YAML: {' '.join(str(err).split())}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return docs


def _loader_class(yaml):
    global _yaml_loader
    if _yaml_loader is not None:
        return _yaml_loader

    def at(node, problem):
        mark = node.start_mark
        return ManifestError(f"line {mark.line + 1}, column {mark.column + 1}: {problem}")

    base = yaml.SafeLoader  # not CSafeLoader: its C parser would not call compose_node below

    class Loader(base):
        # no implicit timestamps: `2024-01-01` stays the string it is in JSON
        yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
            for first, resolvers in base.yaml_implicit_resolvers.items()}
        depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                # an alias can make a small file expand without bound (a "billion laughs")
                raise at(self.peek_event(), "YAML aliases (*name) are not accepted in a manifest: write the "
                                            "value out")
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise at(self.peek_event(), f"the document nests deeper than {MAX_DEPTH} levels")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise at(key_node, "YAML merge keys (<<) are not accepted in a manifest")
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, str):
                    raise at(key_node, f"the key {_shown(key)} is not a string: quote it")
                if key in seen:
                    raise at(key_node, f"the key {_shown(key)} appears twice in one mapping (first on line "
                                       f"{seen[key]})")
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_float(self, node):
            value = super().construct_yaml_float(node)
            if not math.isfinite(value):
                raise at(node, f"{node.value} is not a number JSON allows")
            return value

        def refuse(self, node):
            raise at(node, f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not accepted in a "
                           "manifest (JSON values only)")

    Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_yaml_float)
    for tag in ("binary", "timestamp", "set", "omap", "pairs"):
        Loader.add_constructor(f"tag:yaml.org,2002:{tag}", Loader.refuse)
    _yaml_loader = Loader
    return Loader
