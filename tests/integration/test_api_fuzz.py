"""Fuzzing the northbound API against a real controller and NB (issue 8): whatever a client sends,
the answer is never a 5xx nor a traceback, a refusal is JSON naming the problem, and a refused
request changes nothing in the NB.

Requests go over the unix socket as raw bytes, so malformed paths, bodies and headers reach the
server exactly as generated. WEFT_FUZZ_SEED picks another sequence and WEFT_FUZZ_COUNT another
length; a failure prints the exact request.
"""
import ast
import collections
import concurrent.futures
import dataclasses
import functools
import http.client
import inspect
import ipaddress
import itertools
import json
import os
import random
import re
import socket
import textwrap
import time
import urllib.parse

import pytest

from controller import validate
from controller.api import NorthboundApi
from controller.http import MAX_WAITS_PER_CALLER
from weft.client import ApiError
from running_controller import running_controller  # tests/integration is on sys.path

SEED = int(os.environ.get("WEFT_FUZZ_SEED", "1275"))
COUNT = int(os.environ.get("WEFT_FUZZ_COUNT", "1500"))
RESTORE_EVERY = 50
ROUTES = [(method, pattern, handler.__name__, params) for method, pattern, handler, params
          in NorthboundApi(None).routes]
MAX_ERROR = 1000      # an error names what is wrong; it does not echo a whole input back
DEEP = "\x00deep\x00"  # stands for a value nested 1000 levels deep, written out as JSON text
NESTED_1000 = "[" * 1000 + "]" * 1000

# A small deployment for the requests to hit (hosts on OVSDB remotes nobody serves: the controller
# only reports them disconnected).
POPULATION = [
    ("POST", "/v1/hosts", {"name": "h1", "encap_ip": "192.0.2.1", "ovsdb": "unix:/nonexistent/h1.sock"}),
    ("POST", "/v1/hosts", {"name": "h2", "encap_ip": "192.0.2.2", "ovsdb": "unix:/nonexistent/h2.sock"}),
    ("POST", "/v1/networks", {"name": "blue", "cidr": "10.1.0.0/24"}),
    ("POST", "/v1/networks", {"name": "green", "cidr": "10.2.0.0/24"}),
    ("POST", "/v1/networks", {"name": "red", "cidr": "10.3.0.0/24"}),
    ("POST", "/v1/ports", {"name": "web", "network": "blue"}),
    ("POST", "/v1/ports", {"name": "db", "network": "green", "ip": "10.2.0.5"}),
    ("POST", "/v1/ports", {"name": "solo", "network": "red"}),
    ("POST", "/v1/routers", {"name": "r1"}),
    ("POST", "/v1/routers", {"name": "r2"}),
    ("POST", "/v1/routers/r1/ports", {"network": "blue"}),
    ("POST", "/v1/routers/r1/ports", {"network": "green"}),
    ("POST", "/v1/routers/r1/routes", {"cidr": "172.16.0.0/16", "via": "10.2.0.254"}),
    ("PUT", "/v1/routers/r1/gateway", {"host": "h1", "uplink": "uplink0", "ip": "198.51.100.10/24",
                                       "next_hop": "198.51.100.1"}),
    ("POST", "/v1/floating-ips", {"port": "web", "ip": "198.51.100.20"}),
    ("POST", "/v1/apply", {"documents": [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny"},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
         "spec": {"type": "LoadBalancer", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}],
        "network": "green"}),
]
NAMES = {"hosts": ["h1", "h2"], "networks": ["blue", "green", "red"], "ports": ["web", "db", "solo"],
         "routers": ["r1", "r2"], "floating-ips": ["198.51.100.20"], "policies": ["deny", "allow-web"],
         "services": ["lb", "web"]}

# A valid body for each handler that takes one (every field of its v.body_fields call), which the
# fuzzer then spoils field by field.
VALID_BODIES = {
    "join_host": {"name": "h3", "encap_ip": "192.0.2.3", "ovsdb": "unix:/nonexistent/h3.sock",
                  "datapath_type": "netdev", "of_target": "tcp:127.0.0.1:6653"},
    "create_network": {"name": "n4", "cidr": "10.4.0.0/24", "vni": 4000, "mtu": 1400, "gateway": "10.4.0.254",
                       "external_ids": {"owner": "docker", "docker.network": "cada2d"},
                       "labels": {"example.com/project": "p1"}},
    "create_port": {"name": "p5", "network": "blue", "ip": "10.1.0.50", "mac": "02:00:00:00:00:50",
                    "external_ids": {"container": "web"}, "labels": {"app": "web", "tier": ""},
                    "named_ports": {"http": "TCP/8080", "dns": "udp/53"}},
    "set_port_external_ids": {"external_ids": {"container": "db", "owner": "cni"}},
    "set_port_labels": {"labels": {"app": "db"}},
    "set_port_named_ports": {"named_ports": {"pg": "TCP/5432"}},
    "set_network_labels": {"labels": {"env": "prod"}},
    "add_network_external_ids": {"external_ids": {"docker.network.0a1b2c3d4e5f": "h1-0a1b2c3d4e5f"}},
    "create_router": {"name": "r3"},
    "attach_router": {"network": "red"},
    "add_route": {"cidr": "172.17.0.0/16", "via": "10.1.0.254"},
    "set_gateway": {"host": "h2", "uplink": "uplink1", "ip": "203.0.113.10/24", "next_hop": "203.0.113.1"},
    "create_floating_ip": {"port": "db", "ip": "198.51.100.21"},
    "apply": {"documents": [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "allow-web", "namespace": "blue"},
         "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                  "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                      {"key": "app", "operator": "In", "values": ["client"]}]}}, {"ipBlock": {"cidr": "10.0.0.0/8"}}],
                      "ports": [{"port": "http"}, {"protocol": "UDP", "port": 53, "endPort": 60}]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "blue"},
         "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.80",
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}],
        "network": "blue", "plan": False, "plan_lines": 5},
}
# Valid values of each query parameter. wait_up only ever waits a moment: a valid long wait would
# hold the run for as long.
VALID_QUERY = {"force": ["true", "false", "yes", "0"], "wait_up": ["0", "0.01"], "network": NAMES["networks"],
               "cidr": ["172.16.0.0/16", "172.17.0.0/16"], "from": NAMES["ports"],
               "to": ["10.2.0.5", "10.1.0.2", "198.51.100.1"], "proto": ["icmp", "tcp", "udp"],
               "dport": ["80", "1", "65535"], "selector": ["app=web", "app in (web,db),!tier", ""]}

GATEWAY = {"host": "h2", "uplink": "uplink1", "ip": "203.0.113.10/24", "next_hop": "203.0.113.1"}
# Requests that once got a 500 or were wrongly accepted (issue 8, and what this fuzzer found since):
# (method, request target, body (a JSON value, or bytes as they are), status, words of the error).
KNOWN_BAD = [
    ("POST", "/v1/ports", {"name": "p9", "network": []}, 400, ["network", "expected a string"]),
    ("POST", "/v1/ports", {"name": "p9", "network": "blue", "external_ids": {"a b": "x"}}, 400,
     ["external_ids", "a b"]),
    ("POST", "/v1/ports", {"name": "p9", "network": "blue", "external_ids": {"k": 1}}, 400,
     ["external_ids.k", "printable string"]),
    ("PUT", "/v1/ports/db/external_ids", {"external_ids": {f"k{i}": "v" for i in range(17)}}, 400,
     ["external_ids", "16 allowed"]),
    ("POST", "/v1/routers/r2/ports", {"network": []}, 400, ["network", "expected a string"]),
    ("PUT", "/v1/routers/r2/gateway", {**GATEWAY, "host": []}, 400, ["host", "expected a string"]),
    ("POST", "/v1/floating-ips", {"port": [], "ip": "198.51.100.21"}, 400, ["port", "expected a string"]),
    ("POST", "/v1/networks", {"name": DEEP, "cidr": "10.9.0.0/24"}, 400, ["nests deeper"]),
    ("POST", "/v1/networks", NESTED_1000.encode(), 400, ["nests deeper"]),
    ("POST", "/v1/apply", {"documents": [DEEP]}, 400, ["nests deeper than 66"]),
    ("POST", "/v1/apply", {"documents": "x"}, 400, ["documents", "expected a list"]),
    ("POST", "/v1/apply", {"documents": [{"kind": "Service", "metadata": {"name": "x"}}]}, 400,
     ["document 0 (Service x)", "apiVersion"]),
    ("POST", "/v1/apply", {"documents": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                                          "spec": {"ports": [{"port": 1}]}}]}, 400, ["metadata.namespace"]),
    ("POST", "/v1/apply", {"documents": [], "plan": True}, 400, ["documents", "no NetworkPolicy"]),
    ("POST", "/v1/apply", b'{"documents": []}' + b" " * (1024 * 1024), 413, ["limit is 1048576"]),
    ("GET", "/v1/trace?from=web&to=10.2.0.5&proto=tcp&dport=%D9%A2", None, 400, ["dport", "ASCII digits"]),
    ("PUT", "/v1/routers/r2/gateway", {**GATEWAY, "host": "a.."}, 404, ["host", "a.."]),
    ("PUT", "/v1/routers/r2/gateway", {**GATEWAY, "uplink": "-a"}, 400, ["uplink", "interface name"]),
    ("PUT", "/v1/routers/r2/gateway", {**GATEWAY, "uplink": ".."}, 400, ["uplink", "interface name"]),
    ("PUT", "/v1/routers/r2/gateway", {**GATEWAY, "uplink": "::1"}, 400, ["uplink", "interface name"]),
    ("PUT", "/v1/routers/r2/gateway", {**GATEWAY, "ip": "203.0.113.20/٢٤"}, 400, ["ip", "prefix length"]),
    ("POST", "/v1/routers/r1/routes", {"cidr": "172.18.0.0/16", "via": 167837953}, 400, ["via", "expected a string"]),
    ("POST", "/v1/routers/r1/routes", {"cidr": "172.18.0.0/16", "via": "167837953"}, 400, ["via", "IPv4 address"]),
    ("POST", "/v1/hosts", {"name": "h9", "encap_ip": "255.255.255.255", "ovsdb": "unix:/nonexistent/h9.sock"}, 400,
     ["encap_ip", "not a usable unicast address"]),
    ("DELETE", "/v1/hosts/h1?force=true", None, 409, ["h1", "r1", "gateway"]),  # it would leave r1's on no host
    ("DELETE", "/v1/routers/r1/routes", None, 400, ["cidr", "is required"]),  # was a 404 for the route None
    ("POST", "/v1/networks", b"{}" + b" " * 65535, 413, ["65537 bytes", "limit is 65536"]),
    ("POST", "/v1/hosts", {"name": "h9", "encap_ip": "192.0.2.9", "ovsdb": "unix:/" + "x" * 5000}, 400,
     ["ovsdb", "not an OVSDB/OpenFlow remote"]),  # no path is that long (PATH_MAX)
    # An error names the problem without echoing the whole input back (check_answer bounds it).
    ("GET", "/v1/" + "a" * 5000, None, 404, ["no such resource", "/v1/aaaa"]),
    ("GET", "/v1/ports/%ff" + "a" * 5000, None, 400, ["'%ffaaaa", "not valid UTF-8"]),
    ("PUT", "/v1/routers/r2/gateway", {**GATEWAY, "host": "h" * 1001}, 404, ["host", "'hhhh"]),
    ("POST", "/v1/ports", {"name": "p9", "network": "x" * 60000}, 404, ["network", "'xxxx"]),
    ("POST", "/v1/floating-ips", {"port": "x" * 1001, "ip": "198.51.100.21"}, 404, ["port", "'xxxx"]),
    ("POST", "/v1/routers/r2/ports", {"network": "x" * 1001}, 404, ["network", "'xxxx"]),
    ("DELETE", "/v1/routers/r1/ports/" + "x" * 5000, None, 404, ["network", "'xxxx"]),
    ("DELETE", "/v1/routers/r1/routes?cidr=" + "x" * 5000, None, 404, ["cidr", "'xxxx"]),
    ("DELETE", "/v1/floating-ips/" + "x" * 5000, None, 404, ["floating IP", "'xxxx"]),
    ("GET", "/v1/trace?from=web&to=10.2.0.5&proto=" + "x" * 5000, None, 400, ["proto", "'xxxx"]),
    ("POST", "/v1/hosts", {"name": "h9", "encap_ip": "192.0.2.9", "ovsdb": "unix:/nonexistent/h9.sock",
                           "datapath_type": "x" * 1001}, 400, ["datapath_type", "'xxxx"]),
    ("POST", "/v1/networks", {"name": "n9", "cidr": "10.9.0.0/24", "vni": 10**4000}, 400, ["vni", "out of range"]),
    ("POST", "/v1/networks", b'{"%s": 1, "%s": 2}' % (b"k" * 30000, b"k" * 30000), 400, ["appears twice"]),
] + [  # a name that is not valid UTF-8, on every route that takes one
    (method, "/" + "/".join(["v1", *("%ff" if p is None else p for p in pattern)]),
     VALID_BODIES.get(handler), 400, ["'%ff'", "not valid UTF-8"])
    for method, pattern, handler, _ in ROUTES if None in pattern
]


@dataclasses.dataclass
class Request:
    method: str
    target: bytes           # the request target as sent: path and query, raw bytes
    headers: list           # [(name, value)] as sent (UTF-8), in order
    body: bytes = b""

    def wire(self):
        head = b"%s %s HTTP/1.1\r\n" % (self.method.encode(), self.target)
        head += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in self.headers)
        return head + b"\r\n" + self.body

    def __str__(self):
        return f"{self.method} {_exact(self.target)}\n  headers: {self.headers!r}\n  body: {_exact(self.body)}"


def _exact(data):
    """data as a Python expression, each run of 20 or more of one byte written as b'x' * N."""
    pieces, plain = [], b""
    for byte, run in itertools.groupby(data):
        count = len(list(run))
        if count < 20:
            plain += bytes([byte]) * count
            continue
        if plain:
            pieces.append(repr(plain))
        pieces.append(f"{bytes([byte])!r} * {count}")
        plain = b""
    if plain or not pieces:
        pieces.append(repr(plain))
    return " + ".join(pieces)


@dataclasses.dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


def send(ctl, request, timeout=20):
    """Sends request as it is over the unix socket; its Answer, or None if the server closed the
    connection without one."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(ctl.socket))
        try:
            sock.sendall(request.wire())
            sock.shutdown(socket.SHUT_WR)  # so a body shorter than its Content-Length ends here
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read the whole body: the answer is still there to read
        response = http.client.HTTPResponse(sock, method=request.method)
        try:
            response.begin()
            return Answer(response.status, response.getheader("Content-Type", ""), response.read())
        except http.client.RemoteDisconnected:
            return None
    finally:
        sock.close()


def request(method, target, body=None):
    """A Request with the usual headers; body is a JSON value, or bytes as they are; target a str of
    latin-1 characters (each one byte) or bytes."""
    data = b"" if body is None else body if isinstance(body, bytes) else to_json(body)
    target = target.encode("latin-1") if isinstance(target, str) else target
    sent = [("Host", "localhost"), ("Connection", "close")]
    if method in ("POST", "PUT", "DELETE", "PATCH"):
        sent.append(("Content-Type", "application/json"))
    if body is not None:
        sent.append(("Content-Length", str(len(data))))
    return Request(method, target, sent, data)


def as_raw_utf8(text):
    """text for a request target: non-ASCII as raw UTF-8 bytes (one latin-1 character each), what
    HTTP cannot carry as it is (space, control characters) percent-encoded."""
    return "".join(c.encode("utf-8").decode("latin-1") if ord(c) > 127 else urllib.parse.quote(c, safe="%/")
                   for c in text)


def to_json(value, ascii_only=True):
    text = json.dumps(value, ensure_ascii=ascii_only).replace(json.dumps(DEEP), NESTED_1000)
    return text.encode("utf-8", errors="surrogatepass")  # a lone surrogate goes out as invalid UTF-8


# --- the controller ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def controller():
    with running_controller("weft-api-fuzz-") as ctl:
        for method, path, body in POPULATION:
            ctl.api.request(method, path, body)
        yield ctl


def check_answer(request, answer):
    """What every answer must be; returns the problem, or None."""
    if answer is None:
        return "the server closed the connection without an answer"
    if answer.status >= 500:
        return f"answered {answer.status}: {answer.body[:2000]!r}"
    if b"Traceback" in answer.body or b'File "' in answer.body:
        return f"a traceback in the answer: {answer.body[:2000]!r}"
    if request.method == "HEAD":
        return None
    if answer.status == 400 and not answer.content_type:
        # eventlet's refusal of the HTTP framing itself (a Content-Length that is not a number,
        # oversized headers, Content-Length with Transfer-Encoding), written before any Weft code
        # runs: its status line says what is wrong. Everything Weft answers is application/json.
        return None
    if answer.content_type != "application/json":
        return f"answered {answer.status} as {answer.content_type!r}: {answer.body[:200]!r}"
    try:
        value = json.loads(answer.body)
    except ValueError:
        return f"answered {answer.status} with something that is not JSON: {answer.body[:200]!r}"
    if answer.status >= 400:
        if not (isinstance(value, dict) and isinstance(value.get("error"), str)):
            return f"answered {answer.status} without an error message: {answer.body[:200]!r}"
        if len(value["error"]) > MAX_ERROR:
            return (f"answered {answer.status} with an error of {len(value['error'])} characters: "
                    f"{value['error'][:200]!r}...")
    return None


def nb_problem(rows):
    """What is wrong with the NB's content, whatever requests made it, or None. Weft stores names,
    addresses, keys and socket paths: every string is printable ASCII without spaces, no longer
    than a path may be (PATH_MAX, 4096 bytes with its NUL), every name a valid name, and every
    gateway on a joined host."""
    hosts = {json.loads(text)["name"] for text in rows["Host"]}
    for text in rows["Router"]:
        gateway = dict(json.loads(text)["gateway"][1])
        if gateway and gateway["host"] not in hosts:
            return f"router row {text}: its gateway is on {gateway['host']!r}, which is not joined"
    for table, table_rows in rows.items():
        for text in table_rows:
            row = json.loads(text)
            if "manifest" in row:  # a JSON document as applied (what it holds is the manifest parser's to check)
                try:
                    json.loads(row.pop("manifest"))
                except ValueError:
                    return f"{table} row {text[:300]}: its manifest is not JSON"
            # external_ids are the client's own strings: any printable value (validate.external_ids)
            for key, value in row.pop("external_ids", ["map", []])[1]:
                if not (validate.EXTERNAL_ID_KEY_RE.fullmatch(key) and value.isprintable()
                        and len(value) <= validate.MAX_EXTERNAL_ID_VALUE):
                    return f"{table} row {text[:300]}: external_ids {key!r}: {value[:200]!r} is not a client's id"
            for string in _strings(row):
                if not re.fullmatch(r"[\x21-\x7e]{0,4095}", string):
                    return f"{table} row {text[:300]}: {string[:200]!r} is not printable ASCII of at most 4095 bytes"
            if isinstance(row.get("name"), str) and not validate.NAME_RE.fullmatch(row["name"]):
                return f"{table} row {text}: the name {row['name']!r} is not a valid name"
    return None


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, dict)):
        for item in (value.values() if isinstance(value, dict) else value):
            yield from _strings(item)


def exchange(ctl, request, before):
    """Sends request and checks its answer and the NB; returns (problem or None, the NB after, the
    answer's status or None)."""
    answer = send(ctl, request)
    after = ctl.nb_rows()
    problem = check_answer(request, answer)
    # Only the controller's own reporting moves in the NB by itself here (Host.status, Port.status,
    # left out by nb_rows); Port.host would move when a switch binds a port, and no switch connects
    # to these hosts. So any other change came from the request.
    if problem is None and after != before:
        if answer is None or answer.status >= 400:
            problem = f"refused ({answer and answer.status}) but the NB changed: {_nb_diff(before, after)}"
        elif request.method in ("GET", "HEAD"):
            problem = f"a read changed the NB: {_nb_diff(before, after)}"
        else:
            problem = nb_problem(after)
    return problem, after, answer and answer.status


def _nb_diff(before, after):
    changes = []
    for table in before:
        gone, new = set(before[table]) - set(after[table]), set(after[table]) - set(before[table])
        changes += [f"{table} -{row}" for row in sorted(gone)] + [f"{table} +{row}" for row in sorted(new)]
    return "; ".join(changes)[:3000]


# --- the tests --------------------------------------------------------------------------------------

@functools.cache
def body_fields_of(handler_name):
    """(required, optional) field names of the handler's v.body_fields(...) call, read from its
    source; None if it takes no body."""
    source = textwrap.dedent(inspect.getsource(getattr(NorthboundApi, handler_name)))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "body_fields":
            return tuple({key.value for key in arg.keys} for arg in node.args[1:3])
    return None


def test_the_fuzzer_knows_every_route_its_body_fields_and_query_parameters():
    for method, pattern, handler, params in ROUTES:
        fields = body_fields_of(handler)
        if fields is not None:
            every = fields[0] | fields[1]
            assert set(VALID_BODIES.get(handler, ())) == every, \
                f"{handler} takes the body fields {sorted(every)}: give VALID_BODIES a valid value for each"
        for param in params:
            assert param in VALID_QUERY, f"{handler} takes ?{param}=: give VALID_QUERY valid values for it"


@pytest.mark.parametrize("method,target,body,status,words", KNOWN_BAD,
                         ids=[f"{m} {t[:50]} {w[0]}" for m, t, _, _, w in KNOWN_BAD])
def test_a_known_bad_request_is_refused_naming_the_problem(controller, method, target, body, status, words):
    before = controller.nb_rows()
    sent = request(method, target, body)
    answer = send(controller, sent)
    assert check_answer(sent, answer) is None, f"{check_answer(sent, answer)}\nrequest: {sent}"
    error = json.loads(answer.body)["error"]
    assert answer.status == status and all(w in error for w in words), f"{answer.status} {error!r}\nrequest: {sent}"
    assert controller.nb_rows() == before, f"the NB changed\nrequest: {sent}"


def test_a_percent_encoded_wait_counts_against_the_callers_waits(controller):
    """The limit on waiting requests reads ?wait_up= as the API does, encoded or not."""
    # Each waits long enough for all of them to be in flight at once, even on a loaded machine.
    waiting = [request("GET", "/v1/ports/solo?wait_up=10") for _ in range(MAX_WAITS_PER_CALLER)]
    with concurrent.futures.ThreadPoolExecutor(len(waiting)) as pool:
        answers = [pool.submit(send, controller, r) for r in waiting]
        for _ in range(160):  # until the controller has all of them in flight
            one_more = send(controller, request("GET", "/v1/ports/solo?wait%5Fup=0"))
            if one_more.status == 429:
                break
            time.sleep(0.05)
        assert one_more.status == 429 and b"waiting requests" in one_more.body, one_more
        assert all(a.result().status == 200 for a in answers)


def test_fuzzed_requests_get_a_clean_answer_and_a_refusal_changes_nothing(controller):
    rng = random.Random(SEED)
    failures, statuses = [], collections.Counter()
    for number in range(COUNT):
        if number % RESTORE_EVERY == 0:  # what earlier requests deleted, so that requests hit real objects
            restore_population(controller)
            before = controller.nb_rows()
        fuzzed = fuzz_request(rng)
        problem, before, status = exchange(controller, fuzzed, before)
        statuses[status] += 1
        if problem:
            failures.append(f"#{number}: {problem}\n  request: {fuzzed}")
    assert not failures, (f"{len(failures)} of {COUNT} fuzzed requests (WEFT_FUZZ_SEED={SEED}) went wrong:\n"
                          + "\n".join(failures[:15]))
    # The requests reached past the first checks: some were accepted, some refused for what they meant.
    assert all(statuses[s] for s in (200, 201, 400, 404, 405, 409)), statuses
    log = controller.log(10**8)  # since it started: the Controller polls /v1/status while it comes up
    assert "internal error answering" not in log, log[log.find("internal error answering"):][:3000]


def restore_population(ctl):
    for method, path, body in POPULATION:
        try:
            ctl.api.request(method, path, body)
        except ApiError as err:
            assert err.status in (404, 409), err.message  # there already, or what it needs was deleted


def test_a_request_line_that_http_cannot_parse_is_answered(controller):
    for target in (b"/v1/ports/a b", b"/v1/ports/\xc3\xa0"):  # "\xa0" splits a latin-1 request line too
        answer = send(controller, request("GET", target))
        assert answer is not None and answer.status == 400, target


# --- the generator ----------------------------------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO", "get"]
ODD_SEGMENTS = ["%ff", "%c3", "%c3%28", "%ed%a0%80", "%00", "%0a", "%20", "%2f", "a%2Fb", "%2e%2e", "..", ".",
                "", "ünï", "%C3%BCn%C3%AF", "١", "%D9%A1", "a" * 1001, "-a", "blue ", "%", "%zz", "*", ";", "blue;x",
                "blue%3Fx", "~", "h1%00", "198.51.100.020", "3325256724"]
BAD_JSON_VALUES = [[], [1], ["blue"], {}, {"name": "blue"}, True, False, None, 0, -1, 1.5, -0.0, 1e308, 10**30,
                   2**64, -2**63, DEEP, "", " ", "\x00", "blue\x00", "١٢٣", "²", "٢٤", "-a", "-1", " blue", "blue ",
                   "blue\n", "\tblue", "ünï", "a" * 1001, "..", ".", "::1", "a/b", "%ff", "\ud800", "3221225985",
                   3221225985, "0xc0000201", "192.0.2.1 ", "192.0.2.01", "192.0.2.1/٢٤", "192.0.2.1/24\n",
                   "255.255.255.255", "0.0.0.0", "127.0.0.1", "224.0.0.1", "NaN", "1e400", "unix:", "tcp:1.2.3.4:0"]
BAD_QUERY_VALUES = ["nan", "inf", "-inf", "1e400", "-1", "٢", "²", "١٠", "0x10", "", " 1", "1 ", "1\n", "61",
                    "99999999999999999999", "1.5.5", "maybe", "TRUE ", "%ff", "%c3", "ünï", "a" * 1001, "\x00",
                    "blue\x00", "0.0000001", "60.0000001", "+1", "1_0", "١.٢"]
RAW_BODIES = [b"", b"{", b"}", b"not json", b"\xff\xfe{}", b"\xef\xbb\xbf{}", b'{"name": "a", "name": "b"}',
              b'{"vni": NaN}', b'{"mtu": Infinity}', b"-Infinity", b"null", b"[]", b'"blue"', b"1", b"\x00",
              b'{"name": "\\ud800"}', b"[" * 60000, b'{"a": ' * 9 + b"1" + b"}" * 9, b"{}" + b" " * 65535,
              b"{}" + b" " * (65536 - 2), b'{"name": "blue"}\x00', b"{'name': 'blue'}", b'{"name": "blue",}',
              b'{"mtu": 1' + b"0" * 5000 + b"}", b'{"name": "r\xc3"}', b"\x1f\x8b\x08\x00"]
CONTENT_TYPES = [None, "text/plain", "application/json; charset=utf-16", "application/jsonx", "APPLICATION/JSON",
                 "application/json, text/plain", "", "multipart/form-data; boundary=x"]
RAW_BYTE_SEGMENTS = ["\xff", "\xc3", "a\x80b"]  # each character one byte on the wire: not UTF-8
HOSTS = [None, "evil.example", "localhost:80", "LOCALHOST", "[::1]", "localhost.", "127.0.0.1", "localhost:abc"]


def fuzz_request(rng):
    roll = rng.random()
    if roll < 0.05:
        return _unknown_path(rng)
    method, pattern, handler, params = rng.choice(ROUTES)
    if roll < 0.1:
        method = rng.choice(METHODS)
    target = _path(rng, pattern) + _query(rng, params)
    body = None
    if method in ("POST", "PUT") or rng.random() < 0.05:
        body = _body(rng, handler)
    fuzzed = request(method, target, body)
    if rng.random() < 0.15:
        _spoil_headers(rng, fuzzed)
    return fuzzed


def _unknown_path(rng):
    target = rng.choice(["/", "", "*", "/v1", "/v1/", "/v2/status", "/V1/status", "/v1/../v1/status", "/v1//status",
                         "/v1/status/", "/v1/status/x", "/v1/nothing", "//v1/status", "/v1/hosts/h1/x/y/z",
                         "http://localhost/v1/status", "/%76%31/status", "/v1/" + "a" * 5000, "/v1/trace/x",
                         "/v1/routers/r1/gateway/x", "/v1/floating-ips/198.51.100.20/x", "/v1%2fstatus"])
    return request(rng.choice(METHODS), target, rng.choice([None, {}, {"name": "x"}]))


def _segment(rng, names):
    roll = rng.random()
    if roll < 0.7:
        return urllib.parse.quote(rng.choice(names), safe="")
    if roll < 0.8:
        return rng.choice(["ghost", "x" * 63, "h9", "10.0.0.1"])
    if roll < 0.83:
        return rng.choice(RAW_BYTE_SEGMENTS)
    return as_raw_utf8(rng.choice(ODD_SEGMENTS))


def _names(pattern, i):
    """The names the route `pattern` takes at place i: a collection's own; below it, a router's network
    (/v1/routers/R/ports/NET); a policy's or service's after its network (/v1/policies/NET/NAME)."""
    if pattern[0] in ("policies", "services"):
        return NAMES["networks"] if i == 1 else NAMES[pattern[0]]
    return NAMES[pattern[0]] if i == 1 else NAMES["networks"]


def _path(rng, pattern):
    segments = ["v1"]
    for i, part in enumerate(pattern):
        if part is None:
            segments.append(_segment(rng, _names(pattern, i)))
        elif rng.random() < 0.03:
            segments.append(rng.choice([part.upper(), part + "x", "%" + part.encode().hex()[:2] + part[1:], ""]))
        else:
            segments.append(part)
    path = "/" + "/".join(segments)
    if rng.random() < 0.05:
        path = rng.choice([path + "/", path.replace("/", "//", 1), path + "/extra", path + "/.."])
    return path


def _query(rng, params):
    items = []
    for param in params:
        if rng.random() < 0.7:
            value = rng.choice(VALID_QUERY[param]) if rng.random() < 0.6 else rng.choice(BAD_QUERY_VALUES)
            items.append((param, value))
    if rng.random() < 0.1:
        items.append((rng.choice(["colour", "force", "wait_up", "x" * 50, "", "ünï", "%ff"]), "1"))
    if items and rng.random() < 0.1:
        items.append(rng.choice(items))  # a parameter given twice
    if not items:
        return rng.choice([""] * 60 + ["?", "?&", "?=", "?a=%", "?%zz=1", "?%ff", "?&&&"])
    encode = as_raw_utf8 if rng.random() < 0.2 else (lambda s: urllib.parse.quote(s, safe="%"))
    return "?" + "&".join(f"{encode(k)}={encode(v)}" for k, v in items)


def _body(rng, handler):
    if rng.random() < 0.1:
        return rng.choice(RAW_BODIES)
    valid = VALID_BODIES.get(handler, {"name": "x"})
    if "name" in valid and rng.random() < 0.5:  # a new object, not one an earlier request made
        valid = {**valid, "name": f"{valid['name']}x{rng.randrange(10**6)}"}
    required = body_fields_of(handler)[0] if handler in VALID_BODIES else ()
    body = {k: v for k, v in valid.items() if k in required or rng.random() < 0.5}
    for _ in range(rng.choice([0, 1, 1, 1, 2])):
        field = rng.choice(list(valid))
        body[field] = rng.choice(BAD_JSON_VALUES) if rng.random() < 0.6 else _spoiled(rng, valid[field])
    if rng.random() < 0.05:
        body[rng.choice(["colour", "", "NAME", "name ", "\x00"])] = "x"
    if rng.random() < 0.05 and body:
        del body[rng.choice(list(body))]
    return to_json(body, ascii_only=rng.random() < 0.5)


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
SPOILED_STRINGS = [  # a valid string, nearly: what a sloppy client or a hostile one sends in its place
    lambda s: s + "\n", lambda s: " " + s, lambda s: "-" + s, lambda s: s + "\x00", lambda s: s.upper(),
    lambda s: s.translate(ARABIC_INDIC), lambda s: s.translate(FULLWIDTH), lambda s: s + "x" * 1000,
    lambda s: s + "x" * 5000, lambda s: s[:-1], lambda s: s * 2, lambda s: s.replace(".", ".."),
    lambda s: s.replace(".", ","), lambda s: s.replace("/", "/0"), lambda s: s + "/33", lambda s: _as_integer(s),
]


def _spoiled(rng, value):
    if isinstance(value, list):  # documents, or a list inside one: an item spoiled, or the list itself
        if not value or rng.random() < 0.3:
            return rng.choice([[], [None], [[]], value * 2, value + [value[:1]]])
        spoiled = list(value)
        index = rng.randrange(len(value))
        spoiled[index] = _spoiled(rng, value[index])
        return spoiled
    if isinstance(value, dict):  # external_ids: a key or a value spoiled, or too many keys
        key = rng.choice(list(value))
        spoiled = dict(value)
        choice = rng.random()
        if choice < 0.4:
            spoiled[_spoiled(rng, key)] = spoiled.pop(key)
        elif choice < 0.8:
            spoiled[key] = _spoiled(rng, value[key])
        else:
            spoiled.update({f"k{i}": "v" for i in range(20)})
        return spoiled
    if isinstance(value, bool):
        return rng.choice([not value, None, 0, "true", [value]])
    if isinstance(value, int):
        return rng.choice([str(value), value * 1000, -value, float(value), value + 0.5, [value], str(value) + " "])
    return rng.choice(SPOILED_STRINGS)(value)


def _as_integer(text):
    """An address written as an integer (as inet_aton would take it), else the text unchanged."""
    try:
        return int(ipaddress.IPv4Address(text.partition("/")[0]))
    except ValueError:
        return text


def _spoil_headers(rng, fuzzed):
    headers = dict(fuzzed.headers)
    roll = rng.random()
    if roll < 0.25:
        content_type = rng.choice(CONTENT_TYPES)
        headers.pop("Content-Type", None)
        if content_type is not None:
            headers["Content-Type"] = content_type
    elif roll < 0.45:
        headers.pop("Content-Length", None)
    elif roll < 0.6:
        length = rng.choice(["abc", "-1", "1e3", " 5", "٣", str(len(fuzzed.body) + 10), "0", "99999999999999999999"])
        headers["Content-Length"] = length
    elif roll < 0.7:
        headers.pop("Content-Length", None)
        headers["Transfer-Encoding"] = "chunked"
        fuzzed.body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(fuzzed.body), fuzzed.body) if fuzzed.body else b"0\r\n\r\n"
    elif roll < 0.85:
        host = rng.choice(HOSTS)
        headers.pop("Host")
        if host is not None:
            headers["Host"] = host
    else:
        headers[rng.choice(["Expect", "Authorization", "X-Forwarded-For", "Cookie"])] = rng.choice(
            ["100-continue", "Bearer x", "127.0.0.1", "\xff\xfe", "a" * 4000])
    fuzzed.headers = list(headers.items())
