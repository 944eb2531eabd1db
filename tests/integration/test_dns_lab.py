"""Weft's DNS and service rejects on a real 2-host lab: containers attached with `--dns` resolve
through their resolv.conf (glibc's resolver, `getent`) and with dnspython asking the resolver
directly; unknown names are refused, or forwarded once an upstream is configured; the DNS meter
caps what a host sends up; a connection to a service without backends is refused at once; and
ordinary traffic still sends nothing to the controller.

dnsnet 10.62.0.0/24: d1, d2 on h1, d3 on h2 (all with --dns); dnsother 10.63.0.0/24: o1 on h2.
"""
import os
import re
import socket
import subprocess
import sys
import threading
import time

import dns.message
import dns.rcode
import dns.rrset
import pytest

from flows.pipeline import DNS_BURST, DNS_METER, DNS_RATE
from weft import lab as weftlab

NET, OTHER = "dnsnet", "dnsother"
GATEWAY, OTHER_GATEWAY = "10.62.0.1", "10.63.0.1"

# Run inside a container with the venv's python (dnspython): one query, its rcode and addresses.
QUERY = """
import sys, dns.message, dns.query, dns.rcode
reply = dns.query.udp(dns.message.make_query(sys.argv[1], "A"), sys.argv[2], timeout=3)
print(dns.rcode.to_text(reply.rcode()), *sorted(a.to_text() for rrset in reply.answer for a in rrset))
"""
# N queries as fast as the socket takes them, then every reply until a second of silence.
FLOOD = """
import socket, struct, sys, dns.message
n, server = int(sys.argv[1]), sys.argv[2]
wire = dns.message.make_query("d2", "A").to_wire()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.connect((server, 53))
for i in range(n):
    s.send(struct.pack("!H", i & 0xFFFF) + wire[2:])
s.settimeout(1)
replies = 0
try:
    while True:
        s.recv(2048)
        replies += 1
except socket.timeout:
    pass
print(replies)
"""
# Connect (TCP) or send and wait for an answer (UDP): "refused", "timeout" or "connected".
PROBE = """
import socket, sys
proto, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(10)
try:
    s.connect((ip, port))
    if proto == "udp":
        s.send(b"ping")
        s.recv(100)
    print("connected")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"""


@pytest.fixture(scope="module")
def lab(make_lab):
    lab = make_lab(hosts=2, shared=False)
    lab.weft("network", "create", NET, "--cidr", "10.62.0.0/24")
    lab.weft("network", "create", OTHER, "--cidr", "10.63.0.0/24")
    lab.ports = {name: lab.attach(name, host, net, dns=True)
                 for name, host, net in (("d1", "h1", NET), ("d2", "h1", NET), ("d3", "h2", NET), ("o1", "h2", OTHER))}
    yield lab
    lab.down()


def ip(lab, name):
    return lab.ports[name]["ip"]


def resolve(lab, container, name):
    """What glibc's resolver in the container says (through its resolv.conf): addresses, or None."""
    res = lab.exec(container, "getent", "ahostsv4", name, check=False)
    return sorted({line.split()[0] for line in res.stdout.splitlines()}) or None


def ask(lab, container, name, server=GATEWAY):
    """(rcode, addresses) of one query from the container to `server`."""
    rcode, *addresses = lab.exec(container, sys.executable, "-c", QUERY, name, server).stdout.split()
    return rcode, addresses


def status(lab):
    return lab.api.get("/v1/status")


def test_resolv_conf_names_the_resolver_and_the_search_path(lab):
    text = lab.exec("d1", "cat", "/etc/resolv.conf").stdout
    assert f"nameserver {GATEWAY}\n" in text and f"search {NET}.svc.weft {NET}.weft\n" in text
    assert lab.ports["d1"]["dns"] == {"nameservers": [GATEWAY], "search": [f"{NET}.svc.weft", f"{NET}.weft"]}


def test_a_port_name_resolves_from_the_same_host_and_from_another(lab):
    for client in ("d1", "d3"):  # d2 is on h1 with d1; d3 asks on h2
        for name in ("d2", f"d2.{NET}", f"d2.{NET}.weft"):
            assert resolve(lab, client, name) == [ip(lab, "d2")], (client, name)
    assert resolve(lab, "d3", "d1") == [ip(lab, "d1")]


def test_names_of_another_network_resolve_qualified_only(lab):
    assert resolve(lab, "d1", "o1") is None
    assert resolve(lab, "d1", f"o1.{OTHER}") == [ip(lab, "o1")]
    assert ask(lab, "o1", "d1", OTHER_GATEWAY) == ("NXDOMAIN", [])


def test_unknown_names_are_refused_without_an_upstream(lab):
    assert ask(lab, "d1", "example.com") == ("REFUSED", [])
    assert ask(lab, "d1", "nosuch") == ("NXDOMAIN", [])  # a bare name is only ever Weft's
    assert ask(lab, "d1", f"nosuch.{NET}.weft") == ("NXDOMAIN", [])
    assert resolve(lab, "d1", "example.com") is None
    assert status(lab)["dns"]["refused"] >= 1


class Upstream:
    """A DNS server on 127.0.0.1 (the root namespace's loopback, where the lab's controller runs):
    outside.example. is 192.0.2.99, anything else NXDOMAIN; records the names it was asked."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.asked = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return  # closed
            query = dns.message.from_wire(data)
            name = query.question[0].name.to_text()
            self.asked.append(name)
            reply = dns.message.make_response(query)
            if name == "outside.example.":
                reply.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "192.0.2.99"))
            else:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)

    def close(self):
        self.sock.close()


def test_unknown_names_are_forwarded_to_the_configured_upstream(lab):
    upstream = Upstream()
    try:
        with lab.controller_options(dns_upstream=f"127.0.0.1:{upstream.port}"):
            assert ask(lab, "d3", "outside.example") == ("NOERROR", ["192.0.2.99"])
            assert resolve(lab, "d1", "outside.example") == ["192.0.2.99"]
            assert ask(lab, "d1", "gone.example") == ("NXDOMAIN", [])
            assert ask(lab, "d1", "d2") == ("NOERROR", [ip(lab, "d2")])  # Weft's own: never forwarded
            assert "outside.example." in upstream.asked and not any("d2" in n for n in upstream.asked)
            assert status(lab)["dns"]["forwarded"] >= 3
    finally:
        upstream.close()
    assert ask(lab, "d1", "outside.example") == ("REFUSED", [])  # the option is gone again


def test_the_dns_meter_limits_a_flood(lab):
    sent = 3000
    before = status(lab)["dns"]["queries"]
    start = time.monotonic()
    replies = int(lab.exec("d1", sys.executable, "-c", FLOOD, sent, GATEWAY, timeout=120).stdout)
    # The controller has counted every query that reached it once its count stops moving.
    reached, last = before, None
    while reached != last:
        time.sleep(0.5)
        last, reached = reached, status(lab)["dns"]["queries"]
    elapsed = time.monotonic() - start
    # An upper bound only (a slower machine makes it looser): the meter's rate over the whole run,
    # its burst, and a second's worth of rate for the bucket the meter starts with.
    limit = DNS_RATE * elapsed + DNS_BURST + DNS_RATE
    assert 0 < reached - before <= limit < sent, (reached - before, elapsed)
    assert 0 < replies <= reached - before
    stats = lab.exec("h1", "ovs-ofctl", "-O", "OpenFlow13", "meter-stats", "br-int", f"meter={DNS_METER}").stdout
    dropped = re.search(r"bands:\s+0: packet_count:(\d+)", stats)
    assert dropped and int(dropped.group(1)) > 0, stats  # the switch dropped the rest, not the controller


def test_ordinary_traffic_sends_nothing_to_the_controller(lab):
    before = status(lab)
    assert lab.ping("d1", ip(lab, "d3")) and lab.ping("d1", ip(lab, "d2"))
    # UDP to the resolver on another port, and TCP to it, are not DNS: dropped in the switch.
    lab.exec("d1", sys.executable, "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             f"s.sendto(b'x', ('{GATEWAY}', 54))")
    assert lab.exec("d1", sys.executable, "-c", PROBE, "tcp", GATEWAY, "53").stdout.strip() == "timeout"
    assert ask(lab, "d1", "d3") == ("NOERROR", [ip(lab, "d3")])
    after = status(lab)
    assert after["packet_ins"] == before["packet_ins"] == 0
    assert after["dns"]["queries"] == before["dns"]["queries"] + 1
    shown = lab.weft("status").stdout
    assert "DNS: " in shown and "other packet-ins: 0" in shown, shown


def test_detach_removes_the_resolv_conf_and_a_foreign_one_is_left_alone(lab):
    lab.attach("d9", "h1", NET, dns=True)
    netns = lab.info["containers"]["d9"]["netns"]
    path = f"/etc/netns/{netns}/resolv.conf"
    assert os.path.exists(path)
    lab.weft("detach", "d9", target="h1")
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    # A resolv.conf Weft did not write: attach --dns refuses, before making anything, and keeps it.
    lab.container("d8", "h1")
    netns = lab.info["containers"]["d8"]["netns"]
    made_etc_netns = not os.path.exists("/etc/netns")
    os.makedirs(f"/etc/netns/{netns}")
    try:
        with open(f"/etc/netns/{netns}/resolv.conf", "w") as f:
            f.write("nameserver 192.0.2.53\n")
        res = lab.weft("attach", netns, "--network", NET, "--name", "d8", "--dns", target="h1", check=False)
        assert res.returncode == 1 and "Weft did not write it" in res.stderr
        assert open(f"/etc/netns/{netns}/resolv.conf").read() == "nameserver 192.0.2.53\n"
        assert "d8" not in [p["name"] for p in lab.api.get("/v1/ports")]
    finally:
        os.unlink(f"/etc/netns/{netns}/resolv.conf")
        os.rmdir(f"/etc/netns/{netns}")
        if made_etc_netns and not os.listdir("/etc/netns"):
            os.rmdir("/etc/netns")
        weftlab.container_del(lab.name, "d8")


# --- services -------------------------------------------------------------------------------------

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: frontend
spec:
  selector:
    app: nobody-has-this
  ports:
  - name: http
    port: 80
  - name: syslog
    protocol: UDP
    port: 514
"""


@pytest.fixture(scope="module")
def service(lab):
    manifest = lab.dir / "dns-service.yaml"
    manifest.write_text(SERVICE)
    lab.weft("apply", "-f", manifest, "-n", NET)
    yield lab.api.get(f"/v1/services/{NET}/frontend")
    lab.weft("service", "delete", "frontend", "-n", NET)
    manifest.unlink()


def test_a_service_name_resolves_to_its_vip(lab, service):
    vip = service["cluster_ip"]
    for client in ("d1", "d3"):
        for name in ("frontend", f"frontend.{NET}", f"frontend.{NET}.svc.weft"):
            assert resolve(lab, client, name) == [vip], (client, name)


def test_a_service_without_backends_refuses_connections_at_once(lab, service):
    vip = service["cluster_ip"]
    before = status(lab)["service_rejects"]["sent"]
    for client in ("d1", "d3"):  # the client's own host refuses: h1 and h2
        assert lab.exec(client, sys.executable, "-c", PROBE, "tcp", vip, "80").stdout.strip() == "refused"
        assert lab.exec(client, sys.executable, "-c", PROBE, "udp", vip, "514").stdout.strip() == "refused"
    after = status(lab)
    assert after["service_rejects"]["sent"] == before + 4 and after["packet_ins"] == 0


def test_a_client_behind_the_router_is_refused_too_and_a_backend_ends_the_refusals(lab, service):
    """o1 (dnsother) reaches the service through a router, whose leg MAC the reject then comes
    from; once a ready backend exists, connections reach it instead."""
    vip = service["cluster_ip"]
    lab.weft("router", "create", "dnsr")
    lab.weft("router", "attach", "dnsr", NET)
    lab.weft("router", "attach", "dnsr", OTHER)
    for container in ("d1", "o1"):  # the gateway's MAC is now the router's: forget the old one
        lab.exec(container, "ip", "neigh", "flush", "all")
    assert resolve(lab, "o1", f"frontend.{NET}") == [vip]
    assert lab.exec("o1", sys.executable, "-c", PROBE, "tcp", vip, "80").stdout.strip() == "refused"
    lab.attach("dnsb1", "h2", NET, labels=["app=nobody-has-this"])
    server = weftlab.spawn(lab.name, "dnsb1", ["socat", "-t", "5", "TCP-LISTEN:80,reuseaddr,fork",
                                               f"SYSTEM:echo dnsb1 # {lab.dir}/dnsb1-server"],
                           what="dnsb1: test server", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while ":80 " not in lab.exec("dnsb1", "ss", "-Hltn").stdout:
            assert time.monotonic() < deadline, "the backend's server did not start"
            time.sleep(0.05)
        for client in ("d1", "o1"):
            res = lab.exec(client, "socat", "-T", "5", "-t", "5", "-", f"TCP:{vip}:80,connect-timeout=5", check=False)
            assert res.stdout.strip() == "dnsb1", (client, res)
    finally:
        server.terminate()
        server.wait(timeout=10)
        weftlab.container_del(lab.name, "dnsb1")
