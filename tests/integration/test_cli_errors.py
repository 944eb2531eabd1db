"""The CLI's bad invocations (issue 8): every failure, an unreachable or misbehaving API included,
is one line that names the problem and a non-zero exit, never a traceback.

What counts as one line: `weft: error: PROBLEM` on stderr, and nothing else there. Exit 1, or 2
for a command line argparse itself refuses (then PROBLEM ends with where the help is: `(see weft
COMMAND --help)`).
"""
import contextlib
import dataclasses
import os
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time

import pytest

from weft.lab import _free_ports
from weft.testing import Controller
from running_controller import running_controller  # tests/integration is on sys.path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GATEWAY = ["--host", "h1", "--uplink", "uplink0", "--next-hop", "192.0.2.1", "--timeout", "0"]

# Misbehaving APIs, each on its own unix socket: what it answers any request with (None: it closes
# the connection without answering).
STAND_INS = {
    "html": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body>It works!</body></html>",
    "empty": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n",
    "list": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[1, 2]",
    "object": b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"version": "9.9"}',
    "html500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n\r\n<h1>Server Error</h1>",
    "error-not-a-string": b'HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{"error": 42}',
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n",
    "close": None,
    "silent": "silent",  # it reads the request and never answers, nor closes
}

BAD_NAMES = {"non-ASCII": "ünï", "space": "a b", "long": "x" * 300}
# (argv with NAME for the bad name, a word the error must have): every command that takes a name.
NAME_COMMANDS = [
    (["host", "show", "NAME"], "no host named"),
    (["host", "leave", "NAME"], "no host named"),
    (["host", "delete", "NAME", "--force"], "no host named"),
    (["host", "join", "NAME", "--encap-ip", "192.0.2.9", "--ovsdb", "unix:/nonexistent/h9.sock"], "not a valid name"),
    (["network", "show", "NAME"], "no network named"),
    (["network", "delete", "NAME"], "no network named"),
    (["network", "create", "NAME", "--cidr", "10.9.0.0/24"], "not a valid name"),
    (["port", "show", "NAME"], "no port named"),
    (["port", "delete", "NAME"], "no port named"),
    (["port", "create", "NAME", "--network", "blue"], "not a valid name"),
    (["port", "create", "p9", "--network", "NAME"], "no network named"),
    (["router", "show", "NAME"], "no router named"),
    (["router", "create", "NAME"], "not a valid name"),
    (["router", "delete", "NAME"], "no router named"),
    (["router", "attach", "NAME", "blue"], "no router named"),
    (["router", "attach", "r1", "NAME"], "no network named"),
    (["router", "detach", "r1", "NAME"], "is not attached to router"),
    (["router", "route", "add", "NAME", "172.16.0.0/16", "--via", "10.7.0.9"], "no router named"),
    (["router", "route", "delete", "NAME", "172.16.0.0/16"], "no router named"),
    (["router", "set-gateway", "NAME", "--ip", "192.0.2.10/24", *GATEWAY], "no router named"),
    (["router", "clear-gateway", "NAME"], "no router named"),
    (["floating-ip", "create", "--port", "NAME", "--ip", "192.0.2.50"], "no port named"),
    (["floating-ip", "delete", "NAME"], "no floating IP"),
    (["trace", "--from", "NAME", "--to", "10.7.0.9"], "no port named"),
    (["attach", "NAME", "--network", "blue"], "no such container"),
    (["detach", "NAME"], "no port named"),
    (["port", "label", "NAME", "app=web"], "no port named"),
    (["port", "named-port", "NAME", "http=TCP/80"], "no port named"),
    (["network", "label", "NAME", "env=prod"], "no network named"),
    (["policy", "show", "blue/NAME"], "no policy named"),
    (["policy", "delete", "NAME", "-n", "blue"], "no policy named"),
    (["service", "show", "blue/NAME"], "no service named"),
    (["service", "delete", "blue/NAME"], "no service named"),
    (["apply", "-f", "{file no-namespace}", "-n", "NAME"], "is not a valid name"),
]

POLICY = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n"
          "spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n")
SERVICE = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {}\nspec:\n  ports: [{{port: 80}}]\n"
# Manifest files for `weft apply` (written in the controller's directory; {file NAME} in CASES).
FILES = {
    "no-namespace": POLICY.encode(),
    "good": (POLICY.replace("name: deny", "name: deny\n  namespace: blue") + "---\n" + SERVICE.format("blue")).encode(),
    "unknown field": (POLICY + "---\n" + POLICY.replace("policyTypes", "policyTipes")).encode(),
    "indented wrong": POLICY.replace("  podSelector: {}", "  podSelector:\n  matchLabels: {app: web}").encode(),
    "bad YAML": b"kind: [NetworkPolicy\n",
    "YAML alias": b"a: &x 1\nb: *x\n",
    "not UTF-8": b"kind: \xff\n",
    "missing network": SERVICE.format("nowhere").encode(),
    "bad clusterIP": SERVICE.format("blue").replace("web", "api").replace("ports:", "clusterIP: 10.97.0.1\n  ports:")
                     .encode(),
    "empty": b"",
}

# (id, argv, exit status, a word the error must have). {ctl}: the real controller's API, {stand-in
# NAME}: a misbehaving one, {refused}: a TCP port nothing listens on, {plain}: a plain HTTP server.
CASES = [
    # the issue's
    ("non-ASCII name", ["port", "show", "ünï"], 1, "no port named 'ünï'"),
    ("space in --network", ["port", "create", "p9", "--network", "a b"], 1, "no network named 'a b'"),
    ("superscript prefix", ["port", "create", "p9", "--network", "blue", "--ip", "192.0.2.10/²"], 1, "ip:"),
    ("malformed --api", ["--api", "http://x:abc", "status"], 1, "not an API address"),
    ("API answers HTML", ["--api", "{stand-in html}", "status"], 1, "not JSON"),
    ("API answers a list", ["--api", "{stand-in list}", "status"], 1, "unexpected answer"),
    # addresses and values
    ("--ip not an address", ["port", "create", "p9", "--network", "blue", "--ip", "10.7.0.999"], 1, "ip:"),
    ("--ip empty", ["port", "create", "p9", "--network", "blue", "--ip", ""], 1, "ip:"),
    ("--ip with a prefix", ["port", "create", "p9", "--network", "blue", "--ip", "10.7.0.9/24"], 1, "ip:"),
    ("--mac not a MAC", ["port", "create", "p9", "--network", "blue", "--mac", "zz"], 1, "mac:"),
    ("--mac multicast", ["port", "create", "p9", "--network", "blue", "--mac", "01:00:00:00:00:01"], 1, "multicast"),
    ("--cidr not a network", ["network", "create", "n9", "--cidr", "banana"], 1, "cidr:"),
    ("--cidr Arabic-Indic prefix", ["network", "create", "n9", "--cidr", "10.9.0.0/٢٤"], 1, "cidr:"),
    ("--cidr host bits", ["network", "create", "n9", "--cidr", "10.9.0.1/24"], 1, "host bits"),
    ("--vni not a number", ["network", "create", "n9", "--cidr", "10.9.0.0/24", "--vni", "abc"], 2, "--vni"),
    ("--vni Arabic-Indic", ["network", "create", "n9", "--cidr", "10.9.0.0/24", "--vni", "٣"], 2, "--vni"),
    ("--vni with _", ["network", "create", "n9", "--cidr", "10.9.0.0/24", "--vni", "1_000"], 2, "--vni"),
    ("--vni negative", ["network", "create", "n9", "--cidr", "10.9.0.0/24", "--vni", "-1"], 2, "--vni"),
    ("--vni huge", ["network", "create", "n9", "--cidr", "10.9.0.0/24", "--vni", "99999999999999999999"], 1, "vni:"),
    ("--mtu a float", ["network", "create", "n9", "--cidr", "10.9.0.0/24", "--mtu", "1e3"], 2, "--mtu"),
    ("--mtu too small", ["network", "create", "n9", "--cidr", "10.9.0.0/24", "--mtu", "100"], 1, "mtu:"),
    ("--gateway outside", ["network", "create", "n9", "--cidr", "10.9.0.0/24", "--gateway", "10.8.0.1"], 1,
     "gateway:"),
    ("--timeout nan", ["router", "set-gateway", "r1", "--ip", "192.0.2.10/24", *GATEWAY[:-2], "--timeout", "nan"],
     2, "--timeout"),
    ("--timeout inf", ["router", "set-gateway", "r1", "--ip", "192.0.2.10/24", *GATEWAY[:-2], "--timeout", "inf"],
     2, "--timeout"),
    ("--timeout Arabic-Indic", ["router", "set-gateway", "r1", "--ip", "192.0.2.10/24", *GATEWAY[:-2],
                                "--timeout", "٣"], 2, "--timeout"),
    ("--timeout too long", ["attach", "c1", "--network", "blue", "--timeout", "61"], 2, "--timeout"),
    ("--timeout not a number", ["attach", "c1", "--network", "blue", "--timeout", "soon"], 2, "--timeout"),
    ("--ip Arabic-Indic prefix", ["router", "set-gateway", "r1", "--ip", "192.0.2.10/٢٤", *GATEWAY], 1, "ip:"),
    ("--uplink option-like", ["router", "set-gateway", "r1", "--ip", "192.0.2.10/24", *GATEWAY[:2], "--uplink=-a",
                              *GATEWAY[4:]], 1, "uplink:"),
    ("--dport not a number", ["trace", "--from", "p1", "--to", "10.7.0.9", "--dport", "x"], 2, "--dport"),
    ("--dport Arabic-Indic", ["trace", "--from", "p1", "--to", "10.7.0.9", "--proto", "tcp", "--dport", "٢"], 2,
     "--dport"),
    ("--dport too big", ["trace", "--from", "p1", "--to", "10.7.0.9", "--proto", "tcp", "--dport", "70000"], 1,
     "dport:"),
    ("--to not an address", ["trace", "--from", "p1", "--to", "banana"], 1, "to:"),
    ("route cidr", ["router", "route", "add", "r1", "banana", "--via", "10.7.0.9"], 1, "cidr:"),
    ("route via an integer", ["router", "route", "add", "r1", "172.16.0.0/16", "--via", "167837961"], 1, "via:"),
    ("--encap-ip broadcast", ["host", "join", "h9", "--encap-ip", "255.255.255.255", "--ovsdb", "unix:/x"], 1,
     "encap_ip:"),
    ("--ovsdb not a remote", ["host", "join", "h9", "--encap-ip", "192.0.2.9", "--ovsdb", "http://x"], 1, "ovsdb:"),
    ("--datapath unknown", ["host", "join", "h9", "--encap-ip", "192.0.2.9", "--ovsdb", "unix:/x", "--datapath",
                            "dpdk"], 2, "--datapath"),
    # labels and named ports
    ("--label not KEY=VALUE", ["port", "create", "p9", "--network", "blue", "--label", "app"], 2, "--label"),
    ("--label twice", ["network", "create", "n9", "--cidr", "10.9.0.0/24", "--label", "a=1", "--label", "a=2"], 1,
     "--label a is given more than once"),
    ("--label bad value", ["port", "create", "p9", "--network", "blue", "--label", "app=-web"], 1, "labels.app:"),
    ("--named-port bad protocol", ["port", "create", "p9", "--network", "blue", "--named-port", "http=ICMP/1"], 1,
     "named_ports.http:"),
    ("--named-port bad name", ["port", "create", "p9", "--network", "blue", "--named-port", "HTTP=TCP/80"], 1,
     "not a valid port name"),
    ("label edit neither set nor remove", ["port", "label", "lp", "app"], 2, "neither KEY=VALUE"),
    ("label change without --overwrite", ["port", "label", "lp", "app=db"], 1,
     "label 'app' already has a value (web), and --overwrite is not given"),
    ("label set and removed at once", ["port", "label", "lp", "app=db", "app-", "--overwrite"], 1,
     "changed more than once"),
    ("label bad key", ["network", "label", "blue", "Bad/key=x"], 1, "not a valid label key"),
    ("--label non-ASCII key", ["port", "create", "p9", "--network", "blue", "--label", "ünï=x"], 1,
     "key 'ünï' is not a valid label key"),
    ("named port change without --overwrite", ["port", "named-port", "lp", "http=TCP/81"], 1, "--overwrite"),
    ("--selector bad", ["port", "list", "--selector", "app web"], 1, "selector:"),
    ("--selector < >", ["network", "list", "-l", "replicas>1"], 1, "not supported"),
    ("missing name", ["port", "show"], 2, "name"),
    ("option for a name", ["port", "show", "-a"], 2, "name"),
    ("unknown command", ["frobnicate"], 2, "frobnicate"),
    # weft apply, policy and service
    ("apply without -f", ["apply"], 2, "-f"),
    ("apply a missing file", ["apply", "-f", "/nonexistent/x.yaml"], 1, "/nonexistent/x.yaml: cannot read it"),
    ("apply a directory", ["apply", "-f", "/etc"], 1, "/etc: cannot read it"),
    ("apply bad YAML", ["apply", "-f", "{file bad YAML}"], 1, "bad-YAML.yaml: line 2, column 1: not valid YAML"),
    ("apply a YAML alias", ["apply", "-f", "{file YAML alias}"], 1, "aliases"),
    ("apply not UTF-8", ["apply", "-f", "{file not UTF-8}"], 1, "not-UTF-8.yaml: not UTF-8 text (byte 6 is 0xff)"),
    ("apply an unknown field", ["apply", "-f", "{file unknown field}", "-n", "blue"], 1,
     "unknown-field.yaml: document 1 (NetworkPolicy deny): spec.policyTipes: unknown field"),
    ("apply a selector indented wrong", ["apply", "-f", "{file indented wrong}", "-n", "blue"], 1,
     "spec.matchLabels"),
    ("apply without a network", ["apply", "-f", "{file no-namespace}"], 1, "document 0 (NetworkPolicy deny): "
                                                                          "metadata.namespace: missing"),
    ("apply a network that differs", ["apply", "-f", "{file good}", "-n", "red"], 1, "differs from the network"),
    ("apply to a missing network", ["apply", "-f", "{file good}", "-f", "{file missing network}"], 1,
     "missing-network.yaml: document 0 (Service web): metadata.namespace: no network named 'nowhere'"),
    ("apply a clusterIP outside", ["apply", "-f", "{file good}", "-f", "{file bad clusterIP}"], 1,
     "bad-clusterIP.yaml: document 0 (Service api): spec.clusterIP: 10.97.0.1 is not an address of the service CIDR"),
    ("apply an empty file", ["apply", "-f", "{file empty}"], 1, "no NetworkPolicy or Service"),
    ("apply --plan-lines too many", ["apply", "-f", "{file good}", "--plan", "--plan-lines", "201"], 2,
     "--plan-lines"),
    ("apply --plan-lines Arabic-Indic", ["apply", "-f", "{file good}", "--plan", "--plan-lines", "٣"], 2,
     "--plan-lines"),
    ("apply --timeout too long", ["apply", "-f", "{file good}", "--timeout", "61"], 2, "--timeout"),
    ("policy show without a network", ["policy", "show", "deny"], 1, "NETWORK/NAME, or as NAME -n NETWORK"),
    ("policy show two networks", ["policy", "show", "blue/deny", "-n", "red"], 1, "give one"),
    ("service show in a missing network", ["service", "show", "nowhere/web"], 1, "in network 'nowhere'"),
    # errors the API itself reports
    ("404", ["network", "show", "ghost"], 1, "no network named 'ghost'"),
    ("409 exists", ["network", "create", "blue", "--cidr", "10.9.0.0/24"], 1, "already exists"),
    ("409 in use", ["network", "delete", "blue"], 1, "still has"),
    ("409 unreachable host", ["host", "leave", "h1"], 1, "force"),
    ("409 no gateway", ["floating-ip", "create", "--port", "p1", "--ip", "192.0.2.50"], 1, "gateway"),
    ("414 name too long", ["port", "show", "x" * 9000], 1, "Too Long"),
    # where the API is, and how to prove who you are
    ("--api ftp", ["--api", "ftp://x", "status"], 1, "not an API address"),
    ("--api with a path", ["--api", "http://127.0.0.1:8080/v1", "status"], 1, "not an API address"),
    ("--api with a space", ["--api", "http://x y:8080", "status"], 1, "not an API address"),
    ("--api bracket", ["--api", "http://[::1", "status"], 1, "not an API address"),
    ("--api port out of range", ["--api", "http://127.0.0.1:99999", "status"], 1, "not an API address"),
    ("--api unix: without a path", ["--api", "unix:", "status"], 1, "unix:/PATH"),
    ("--api no socket", ["--api", "unix:/nonexistent/api.sock", "status"], 1, "no Weft controller is listening"),
    ("--api not a socket", ["--api", "unix:/etc/hostname", "status"], 1, "no Weft controller is listening"),
    ("--api nothing listens", ["--api", "http://127.0.0.1:{refused}", "status"], 1, "Connection refused"),
    ("--api https to plain HTTP", ["--api", "https://127.0.0.1:{plain}", "status"], 1, "TLS"),
    ("--api http answers HTML", ["--api", "http://127.0.0.1:{plain}", "status"], 1, "not JSON"),
    ("--api-timeout 0", ["--api-timeout", "0", "status"], 2, "--api-timeout: '0' is not a timeout"),
    ("--api-timeout nan", ["--api-timeout", "nan", "status"], 2, "--api-timeout: 'nan' is not a timeout"),
    ("--api-timeout inf", ["--api-timeout", "inf", "status"], 2, "--api-timeout: 'inf' is not a timeout"),
    ("--api-timeout negative", ["--api-timeout=-1", "status"], 2, "--api-timeout: '-1' is not a timeout"),
    ("--api-timeout too long", ["--api-timeout", "601", "status"], 2, "at most 600"),
    ("--api-timeout Arabic-Indic", ["--api-timeout", "٣", "status"], 2, "--api-timeout"),
    ("--token-file missing", ["--token-file", "/nonexistent/token", "status"], 1, "cannot read the token file"),
    ("--token-file a directory", ["--token-file", "/etc", "status"], 1, "cannot read the token file"),
    ("--token-file not text", ["--token-file", "{binary token}", "status"], 1, "not a bearer token"),
    ("--token-file not ASCII", ["--token-file", "{non-ASCII token}", "status"], 1, "not a bearer token"),
    # an API that misbehaves
    ("API answers an empty body", ["--api", "{stand-in empty}", "status"], 1, "unexpected answer"),
    ("API answers an object without the keys", ["--api", "{stand-in object}", "status"], 1, "unexpected answer"),
    ("API answers an object for a list", ["--api", "{stand-in object}", "network", "list"], 1, "unexpected answer"),
    ("API answers 500 HTML", ["--api", "{stand-in html500}", "status"], 1, "HTTP 500"),
    ("API error is not a string", ["--api", "{stand-in error-not-a-string}", "port", "show", "p1"], 1, "HTTP 404"),
    ("API is not HTTP", ["--api", "{stand-in not-http}", "status"], 1, "does not answer in HTTP"),
    ("API closes the connection", ["--api", "{stand-in close}", "status"], 1, "closed connection"),
] + [
    (f"{kind} name: {' '.join(argv[:2])}", [BAD_NAMES[kind] if a == "NAME" else a for a in argv], 1, word)
    for argv, word in NAME_COMMANDS for kind in BAD_NAMES
]


@dataclasses.dataclass
class Where:
    places: dict            # CASES' placeholders, filled in
    controller: Controller  # the real one


@pytest.fixture(scope="module")
def where():
    """A real controller, the stand-ins, the token files."""
    with running_controller("weft-cli-errors-") as ctl, contextlib.ExitStack() as servers:
        ctl.api.post("/v1/hosts", {"name": "h1", "encap_ip": "192.0.2.1", "ovsdb": "unix:/nonexistent/h1.sock"})
        ctl.api.post("/v1/networks", {"name": "blue", "cidr": "10.7.0.0/24"})
        ctl.api.post("/v1/ports", {"name": "p1", "network": "blue"})
        ctl.api.post("/v1/ports", {"name": "lp", "network": "blue", "labels": {"app": "web"},
                                   "named_ports": {"http": "TCP/80"}})
        ctl.api.post("/v1/routers", {"name": "r1"})
        config = ctl.dir / "client.conf"  # empty: not the client.conf of whoever runs the tests
        config.write_text("")
        places = {"ctl": f"unix:{ctl.socket}", "refused": str(_free_ports(1)[0]), "config": str(config)}
        for name, content in FILES.items():
            path = ctl.dir / (name.replace(" ", "-") + ".yaml")
            path.write_bytes(content)
            places[f"file {name}"] = str(path)
        for name, answer in STAND_INS.items():
            path = ctl.dir / f"{name}.sock"
            servers.enter_context(_serving(socketserver.ThreadingUnixStreamServer, str(path), answer))
            places[f"stand-in {name}"] = f"unix:{path}"
        plain = servers.enter_context(_serving(socketserver.ThreadingTCPServer, ("127.0.0.1", 0), STAND_INS["html"]))
        places["plain"] = str(plain.server_address[1])
        tokens = {"binary token": b"\xff\xfe\x00token\n", "non-ASCII token": "漢字トークン\n".encode()}
        for name, content in tokens.items():
            path = ctl.dir / name.replace(" ", "-")
            path.write_bytes(content)
            places[name] = str(path)
        yield Where(places, ctl)


@contextlib.contextmanager
def _serving(server_class, address, answer):
    """A server at address that answers every request with answer, or closes it (None)."""
    stopping = threading.Event()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.recv(65536)  # the request (the CLI's fit in one read)
            if answer == "silent":
                stopping.wait()
            elif answer is not None:
                self.request.sendall(answer)
            self.request.shutdown(socket.SHUT_RDWR)

    server = server_class(address, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()


def run_weft(places, argv, **weft_env):
    argv = [re.sub(r"\{([^}]+)\}", lambda m: places[m.group(1)], a) for a in argv]
    if "--api" not in argv:
        argv = ["--api", places["ctl"], *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    env.update(PYTHONPATH=REPO, WEFT_CONFIG=places["config"], **weft_env)
    return subprocess.run([sys.executable, "-m", "weft.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("argv,status,word", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_bad_invocation_is_one_line_naming_the_problem(where, argv, status, word):
    before = where.controller.nb_rows()
    result = run_weft(where.places, argv)
    shown = (f"weft {' '.join(argv)[:200]}\nexit {result.returncode}\nstdout: {result.stdout!r}\n"
             f"stderr: {result.stderr!r}")
    assert "Traceback" not in result.stdout + result.stderr, shown
    lines = result.stderr.splitlines()
    assert result.returncode == status and len(lines) == 1 and lines[0].startswith("weft: error: "), shown
    if status == 2:  # argparse refused it: where the help is
        assert re.search(r" \(see weft( [a-z-]+)* --help\)$", lines[0]), shown
    assert word in lines[0], shown
    assert where.controller.nb_rows() == before, f"a failed command changed the NB\n{shown}"



def timed_weft(places, argv, **weft_env):
    started = time.monotonic()
    result = run_weft(places, argv, **weft_env)
    return result, time.monotonic() - started, f"exit {result.returncode}\nstderr: {result.stderr!r}"


def test_an_api_that_never_answers_is_one_line_within_the_timeout(where):
    """Once, not twice: a read that timed out is not asked again (as one cut short is)."""
    result, took, shown = timed_weft(where.places, ["--api-timeout", "3", "--api", "{stand-in silent}", "status"])
    assert result.returncode == 1 and "Traceback" not in result.stderr, shown
    assert result.stderr.splitlines() == [f"weft: error: the Weft API at {where.places['stand-in silent']} did not "
                                          "answer within 3 s (is the controller overloaded or stuck? --api-timeout "
                                          "or WEFT_API_TIMEOUT gives it longer)"], shown
    assert 3 <= took < 6, f"took {took:.1f} s\n{shown}"


def test_a_write_to_an_api_that_never_answers_has_an_unknown_outcome(where):
    result, took, shown = timed_weft(where.places, ["--api", "{stand-in silent}", "network", "create", "n9",
                                                    "--cidr", "10.9.0.0/24"], WEFT_API_TIMEOUT="3")
    assert result.returncode == 3 and len(result.stderr.splitlines()) == 1, shown  # OUTCOME_UNKNOWN
    assert result.stderr.startswith("weft: outcome unknown: the Weft API at ") and "within 3 s" in result.stderr
    assert "weft network show n9" in result.stderr and 3 <= took < 6, f"took {took:.1f} s\n{shown}"  # once


@pytest.mark.parametrize("value", ["0", "soon", "nan", "1e3", "601", "-1", ""])
def test_a_bad_weft_api_timeout_is_one_line(where, value):
    result, _, shown = timed_weft(where.places, ["status"], WEFT_API_TIMEOUT=value)
    if value == "":  # unset, in effect: the default
        assert result.returncode == 0, shown
        return
    assert result.returncode == 1 and result.stderr.splitlines() == [
        f"weft: error: WEFT_API_TIMEOUT: {value!r} is not a timeout (seconds, more than 0 and at most 600, like 30 "
        "or 2.5)"], shown


def test_a_wait_asked_of_the_api_is_not_cut_short_by_the_api_timeout(where):
    """set-gateway's --timeout 3 is the API's to wait (h1 has no switch): an --api-timeout of 1 s is
    for the answer beyond it, so the user hears why the gateway does not forward, not a timeout."""
    where.controller.api.post("/v1/routers", {"name": "r9"})
    try:
        result, took, shown = timed_weft(where.places, [
            "--api-timeout", "1", "router", "set-gateway", "r9", "--ip", "192.0.2.19/24", *GATEWAY[:-2],
            "--timeout", "3"])
        lines = result.stderr.splitlines()  # (h1 has no switch: "not connected", or "down" once it is due)
        assert result.returncode == 1 and len(lines) == 1, shown
        assert lines[0].startswith("weft: error: router r9's gateway is set but does not forward after 3 s: the "
                                   "gateway host h1"), shown
        assert took >= 3, shown
    finally:
        where.controller.api.delete("/v1/routers/r9/gateway")
        where.controller.api.delete("/v1/routers/r9")
