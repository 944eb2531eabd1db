"""Conntrack across changes on a 2-host lab: a departed service backend's connections flushed once
the switch has the new flows, established connections across a policy change, deletes that wait,
and one load-balancer zone shared by networks with one CIDR (issue 10).

blue (10.61.0.0/24): b1 on h1 and b2 on h2 (app=web), client c on h1 (app=client). Each backend
runs a server (Python, in its namespace) answering its own name: to a UDP datagram on 5353, and
to each line of a TCP connection on 8000. n1 and n2 (both 10.62.0.0/24, no router) each hold a
client (c1, c2: 10.62.0.10 on h1) and a backend (s1, s2: 10.62.0.20 on h2) running the same server.
"""
import subprocess
import sys
import time

import pytest

from controller.core import FLUSH_AGAIN_AFTER
from weft import lab as weftlab
from weft.testing import eventually

NAMES = {"b1": ("h1", "app=web"), "b2": ("h2", "app=web"), "c": ("h1", "app=client")}
# Two unrouted networks with one CIDR, a client and a backend in each with the same addresses.
TWINS = {"n1": ("c1", "s1"), "n2": ("c2", "s2")}
LB_ZONE = 65534

SERVER = r"""
import socket, sys, threading
name = sys.argv[1].encode()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", 5353))
    while True:
        _, peer = s.recvfrom(2048)
        s.sendto(name, peer)
def serve(conn):
    with conn:
        for _ in conn.makefile("rb"):
            conn.sendall(name + b"\n")
threading.Thread(target=udp, daemon=True).start()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 8000))
s.listen(64)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

# One TCP connection held open: each line read from stdin is sent, and the answer (or TIMEOUT,
# or CLOSED) printed, so a test sees whether the same connection still carries data.
HELD = r"""
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3,
                                source_address=("", int(sys.argv[3]) if len(sys.argv) > 3 else 0))
print("CONNECTED", flush=True)
for line in sys.stdin:
    try:
        conn.sendall(line.encode())
        answer = conn.recv(100).decode().strip()
        print(answer or "CLOSED", flush=True)
    except socket.timeout:
        print("TIMEOUT", flush=True)
    except OSError as err:
        print(f"ERROR {err}", flush=True)
"""

# Datagrams from fresh source ports, one every millisecond, for argv[2] seconds: some are sent
# while a change is on its way to the switches.
STREAM = r"""
import socket, sys, time
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"?", (sys.argv[1], 53))
    s.close()
    time.sleep(0.001)
"""


@pytest.fixture(scope="module")
def lab(make_lab):
    lab = make_lab(hosts=2, shared=False)
    for name, text in (("server.py", SERVER), ("held.py", HELD), ("stream.py", STREAM)):
        (lab.dir / name).write_text(text)
    lab.weft("network", "create", "blue", "--cidr", "10.61.0.0/24")
    lab.ports, servers = {}, []
    for name, (host, label) in NAMES.items():
        lab.ports[name] = lab.attach(name, host, "blue", labels=(label,))
        if name != "c":
            servers.append(weftlab.spawn(lab.name, name, [sys.executable, lab.dir / "server.py", name],
                                         what=f"{name}: servers", stdout=subprocess.DEVNULL))
    for net, (client, backend) in TWINS.items():
        lab.weft("network", "create", net, "--cidr", "10.62.0.0/24")
        lab.ports[client] = lab.attach(client, "h1", net, ip="10.62.0.10")
        lab.ports[backend] = lab.attach(backend, "h2", net, ip="10.62.0.20", labels=(f"app={backend}",))
        servers.append(weftlab.spawn(lab.name, backend, [sys.executable, lab.dir / "server.py", backend],
                                     what=f"{backend}: servers", stdout=subprocess.DEVNULL))
    for name in ("b1", "b2", "s1", "s2"):
        deadline = time.monotonic() + 10
        while ":8000 " not in lab.exec(name, "ss", "-Hltn").stdout:
            assert time.monotonic() < deadline, f"no server in {name}"
            time.sleep(0.05)
    yield lab
    for server in servers:
        server.terminate()
        server.wait(timeout=5)
    lab.down()


def ip(lab, name):
    return lab.ports[name]["ip"]


def apply(lab, text, network="blue"):
    path = lab.dir / f"m{time.monotonic_ns()}.yaml"
    path.write_text(text)
    return lab.weft("apply", "-f", path, "-n", network)


def udp_from(lab, src, dst_ip, port, sport):
    """Who answers a datagram from src:sport to dst_ip:port (None: nobody within a second)."""
    script = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('', int(sys.argv[3]))); "
              "s.settimeout(1); s.sendto(b'?', (sys.argv[1], int(sys.argv[2])))\n"
              "try: print(s.recv(100).decode())\nexcept socket.timeout: pass")
    return lab.exec(src, sys.executable, "-c", script, dst_ip, port, sport).stdout.strip() or None


def lb_entries_to(lab, host, backend_ip):
    """The conntrack entries of host's LB zone whose replies come from backend_ip."""
    dump = lab.exec(host, "ovs-appctl", "dpctl/dump-conntrack", f"zone={LB_ZONE}").stdout
    return [line for line in dump.splitlines() if f"reply=(src={backend_ip}," in line]


UDP_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: dns-ish}
spec:
  selector: {app: web}
  ports: [{protocol: UDP, port: 53, targetPort: 5353}]
"""


@pytest.fixture
def udp_service(lab):
    apply(lab, UDP_SERVICE)
    yield lab.api.get("/v1/services/blue/dns-ish")["cluster_ip"]
    lab.weft("service", "delete", "blue/dns-ish")
    for name in ("b1", "b2"):
        lab.weft("port", "label", name, "app=web", "--overwrite")


def test_a_departed_backends_udp_flow_is_flushed_and_its_next_datagram_goes_to_the_other(lab, udp_service):
    vip = udp_service
    first = udp_from(lab, "c", vip, 53, 40000)
    assert first in ("b1", "b2")
    assert udp_from(lab, "c", vip, 53, 40000) == first  # the same flow: its conntrack entry holds
    assert lb_entries_to(lab, "h1", ip(lab, first))
    other = "b2" if first == "b1" else "b1"
    lab.weft("port", "label", first, "app=gone", "--overwrite")  # no longer a backend; still answers
    lab.wait_flows_in_sync("h1")
    assert lb_entries_to(lab, "h1", ip(lab, first)) == []
    assert udp_from(lab, "c", vip, 53, 40000) == other


def test_no_connection_opened_while_a_backend_leaves_survives_the_flush(lab, udp_service):
    """Datagrams from new ports every millisecond while their backend leaves: those the switch sent
    to it before it had the new group are flushed with the rest (the flush waits for its barrier,
    and comes again FLUSH_AGAIN_AFTER later for what vswitchd's cached datapath flows still sent it).
    (UDP from one client goes to one backend: OVS's select group hashes UDP without its ports.)"""
    vip = udp_service
    stream = weftlab.spawn(lab.name, "c", [sys.executable, lab.dir / "stream.py", vip, "60"],
                           what="c: stream")
    try:
        time.sleep(1)
        used = [name for name in ("b1", "b2") if lb_entries_to(lab, "h1", ip(lab, name))]
        assert len(used) == 1, used
        lab.weft("port", "label", used[0], "app=gone", "--overwrite")
        lab.wait_flows_in_sync("h1")
        time.sleep(1.5)  # the stream goes on through the group's change
        assert stream.poll() is None, "the stream stopped early"
    finally:
        stream.terminate()
        stream.wait(timeout=5)
    # UDP entries live 30 s unless flushed: one left past the second flush is one that survived.
    eventually(lambda: lb_entries_to(lab, "h1", ip(lab, used[0])) == [], timeout=FLUSH_AGAIN_AFTER + 2,
               what=f"no conntrack entry left to the departed backend {used[0]}")
    other = "b2" if used[0] == "b1" else "b1"
    assert lb_entries_to(lab, "h1", ip(lab, other))  # the stream went on, to the other backend


def web_policy(name, allow_from=None):
    """A policy selecting app=web for ingress: denying all, or allowing from app=`allow_from`."""
    rules = f"  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: {allow_from}}}}}}}]}}]\n" if allow_from else ""
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}}}\n"
            f"spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  policyTypes: [Ingress]\n{rules}")


DENY_WEB = web_policy("deny-web")


class Held:
    """A TCP connection from src to dst_ip:8000 held open by a process in src's namespace."""

    def __init__(self, lab, src, dst_ip, port=8000, sport=0):
        self.proc = weftlab.spawn(lab.name, src, [sys.executable, lab.dir / "held.py", dst_ip, port, sport],
                                  what=f"{src}: held connection", stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout.readline().strip() == "CONNECTED"

    def answer(self):
        """Who answers a line sent on the connection (TIMEOUT: nobody within 3 s)."""
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def tcp_new(lab, src, dst_ip):
    """Who answers a new TCP connection from src to dst_ip:8000 (None: it failed)."""
    script = ("import socket, sys\ntry:\n  c = socket.create_connection((sys.argv[1], 8000), timeout=1)\n"
              "  c.sendall(b'?\\n'); print(c.recv(100).decode())\nexcept OSError: pass")
    return lab.exec(src, sys.executable, "-c", script, dst_ip).stdout.strip() or None


@pytest.fixture
def policies(lab):
    yield
    for obj in lab.api.get("/v1/policies"):
        lab.api.delete(f"/v1/policies/{obj['network']}/{obj['name']}?wait_up=10")  # gone from every host


def test_an_established_connection_survives_a_policy_change_that_denies_new_ones(lab, policies):
    apply(lab, DENY_WEB + "---\n" + web_policy("web-from", "client"))
    held = Held(lab, "c", ip(lab, "b1"))
    try:
        assert held.answer() == "b1"
        apply(lab, web_policy("web-from", "nobody"))  # returns once the switches have it
        assert tcp_new(lab, "c", ip(lab, "b1")) is None  # a new connection is denied
        assert held.answer() == "b1"  # the established one goes on
        assert held.answer() == "b1"
    finally:
        held.close()


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "denied"])
def test_a_ports_first_selection_judges_its_connections_at_their_next_packet(lab, policies, allowed):
    """Before any policy selects b1 its connections are not tracked: once one does, the next packet
    of an existing connection is judged as a new connection's first (and tracked if allowed)."""
    held = Held(lab, "c", ip(lab, "b1"))
    try:
        assert held.answer() == "b1"
        apply(lab, DENY_WEB + ("---\n" + web_policy("web-from", "client") if allowed else ""))
        assert held.answer() == ("b1" if allowed else "TIMEOUT")
        assert tcp_new(lab, "c", ip(lab, "b1")) == ("b1" if allowed else None)
    finally:
        held.close()


def flows(lab, host):
    dump = lab.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int", "--no-stats").stdout
    groups = lab.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "dump-groups", "br-int").stdout
    return sorted(dump.splitlines()[1:] + groups.splitlines()[1:])


@pytest.mark.parametrize("kind, manifest, name", [("policy", DENY_WEB, "deny-web"),
                                                  ("service", UDP_SERVICE, "dns-ish")])
def test_a_delete_returns_once_the_flows_are_gone_from_every_switch(lab, kind, manifest, name):
    before = {host: flows(lab, host) for host in ("h1", "h2")}
    apply(lab, manifest)
    assert all(flows(lab, host) != before[host] for host in ("h1", "h2"))
    lab.weft(kind, "delete", f"blue/{name}")
    assert {host: flows(lab, host) for host in ("h1", "h2")} == before


def test_one_lb_zone_keeps_two_networks_vip_connections_from_one_address_and_port_apart(lab):
    """c1 and c2 (same address, unrouted networks of one CIDR, one host) each reach their network's
    Service from port 45000; the backends share an address and port too, so the two connections'
    replies would be one tuple in the LB zone: conntrack gives the later one another source port."""
    for net, (_, backend) in TWINS.items():
        apply(lab, f"apiVersion: v1\nkind: Service\nmetadata: {{name: {backend}}}\nspec:\n"
                   f"  selector: {{app: {backend}}}\n  ports: [{{port: 80, targetPort: 8000}}]\n", net)
    vips = {net: lab.api.get(f"/v1/services/{net}/{backend}")["cluster_ip"] for net, (_, backend) in TWINS.items()}
    try:
        first = Held(lab, "c1", vips["n1"], port=80, sport=45000)
        second = Held(lab, "c2", vips["n2"], port=80, sport=45000)
        try:
            assert [first.answer(), second.answer(), first.answer()] == ["s1", "s2", "s1"]
        finally:
            first.close()
            second.close()
    finally:
        for net, (_, backend) in TWINS.items():
            lab.weft("service", "delete", f"{net}/{backend}")
