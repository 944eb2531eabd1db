"""NetworkPolicy and Services with real connections on a 3-host lab with a router (issue 10).

prod (labels ns=prod) and dev (ns=dev) on router r1, gateway on h1's uplink to `outside`:
    web1 prod h1 app=web     web2 prod h2 app=web     web3 prod h3 app=web
    db   prod h2 app=db      cli  prod h3 app=client  dcli dev h1 app=client
Every container runs a TCP server on 8000 and 8001 and a UDP server on 5353, each answering with
the container's name, so a client sees which backend served it.
"""
import subprocess
import sys
import time
from collections import Counter

import pytest

from weft import lab as weftlab

NAMES = {"web1": ("h1", "prod", "web"), "web2": ("h2", "prod", "web"),
         "web3": ("h3", "prod", "web"), "db": ("h2", "prod", "db"),
         "cli": ("h3", "prod", "client"), "dcli": ("h1", "dev", "client")}
TCP_PORTS = (8000, 8001)
UDP_PORT = 5353
# socat ends 0.5 s after one side's end (its -t) unless told otherwise: a server's answer can take
# longer to fork and run on a loaded machine, and a client's to arrive.
SERVER_PATIENCE = "5"
# One process answering every datagram with its name (argv[1]). socat's UDP-RECVFROM,fork left
# datagrams unanswered for seconds at a time here, while TCP to the same container was served.
UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2])))
while True:
    _, peer = s.recvfrom(100)
    s.sendto(sys.argv[1].encode() + b"\\n", peer)
"""


@pytest.fixture(scope="module")
def lab(make_lab):
    lab = make_lab(hosts=3, shared=False, external=True)
    ext = lab.info["external"]
    lab.weft("network", "create", "prod", "--cidr", "10.40.1.0/24", "--label", "ns=prod")
    lab.weft("network", "create", "dev", "--cidr", "10.40.2.0/24", "--label", "ns=dev")
    lab.weft("router", "create", "r1")
    for net in ("prod", "dev"):
        lab.weft("router", "attach", "r1", net)
    lab.ports, lab.servers = {}, []
    for name, (host, net, app) in NAMES.items():
        lab.ports[name] = lab.attach(name, host, net)
        lab.weft("port", "label", name, f"app={app}")
        for port in TCP_PORTS:
            lab.servers.append(weftlab.spawn(
                lab.name, name, ["socat", "-t", SERVER_PATIENCE, f"TCP-LISTEN:{port},reuseaddr,fork",
                                 f"SYSTEM:echo {name} # {lab.dir}/server"],
                what=f"{name}: tcp {port}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        lab.servers.append(weftlab.spawn(
            lab.name, name, [sys.executable, "-c", UDP_SERVER, name, UDP_PORT, lab.dir / "server"],
            what=f"{name}: udp", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    lab.weft("router", "set-gateway", "r1", "--host", ext["host"], "--uplink", ext["uplink"],
             "--ip", f"{ext['free_ips'][0]}/24", "--next-hop", ext["next_hop"])
    lab.exec("outside", "ip", "route", "replace", "10.40.0.0/16", "via", ext["free_ips"][0])
    for name in NAMES:
        _wait_listening(lab, name)
    yield lab
    for server in lab.servers:
        server.terminate()
        server.wait(timeout=5)
    lab.down()


def _wait_listening(lab, name):
    deadline = time.monotonic() + 10
    while not (all(f":{p} " in lab.exec(name, "ss", "-Hltn").stdout for p in TCP_PORTS)
               and f":{UDP_PORT} " in lab.exec(name, "ss", "-Hlun").stdout):
        assert time.monotonic() < deadline, f"no servers in {name}"
        time.sleep(0.05)


def ip(lab, name):
    return lab.ports[name]["ip"]


def tcp(lab, src, dst_ip, port=8000, timeout=1.5):
    """The name of whoever answered a TCP connection from src to dst_ip:port, or None."""
    res = lab.exec(src, "socat", "-T", str(timeout), "-t", str(timeout), "-",
                   f"TCP:{dst_ip}:{port},connect-timeout={timeout}", check=False, timeout=timeout + 10)
    return res.stdout.strip() or None if res.returncode == 0 else None


def udp(lab, src, dst_ip, port=UDP_PORT, timeout=3):
    """The name of whoever answered a UDP datagram from src to dst_ip:port, or None (no answer
    within `timeout` s: socat's client would give up half a second after sending, answer or not)."""
    script = ("import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "s.settimeout(float(sys.argv[3]))\ns.sendto(b'?\\n', (sys.argv[1], int(sys.argv[2])))\n"
              "try:\n  print(s.recv(100).decode().strip())\nexcept OSError: pass")
    answer = lab.exec(src, sys.executable, "-c", script, dst_ip, port, timeout, timeout=timeout + 10).stdout
    return answer.strip() or None


def apply(lab, tmp_path, text, *extra):
    path = tmp_path / f"m{time.monotonic_ns()}.yaml"
    path.write_text(text)
    return lab.weft("apply", "-f", path, *extra)


@pytest.fixture
def clean(lab):
    """Every policy and service a test applied is deleted after it."""
    yield
    for kind in ("policies", "services"):
        for obj in lab.api.get(f"/v1/{kind}"):
            lab.api.delete(f"/v1/{kind}/{obj['network']}/{obj['name']}")
    lab.weft("port", "label", "web3", "app=web", "--overwrite")
    for host in ("h1", "h2", "h3"):
        lab.wait_flows_in_sync(host)


DENY_DB = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-deny, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
"""
DB_FROM_WEB = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports:
    - {protocol: TCP, port: 8000}
"""


def test_without_policies_every_container_reaches_every_other(lab):
    for src, dst in (("cli", "db"), ("dcli", "web1"), ("web2", "cli")):
        assert tcp(lab, src, ip(lab, dst)) == dst


def test_deny_all_ingress_then_allow_from_pods_by_label_on_one_port(lab, tmp_path, clean):
    apply(lab, tmp_path, DENY_DB)
    assert tcp(lab, "web1", ip(lab, "db")) is None  # across hosts: h1 -> h2
    assert udp(lab, "cli", ip(lab, "db")) is None
    assert tcp(lab, "db", ip(lab, "cli")) == "cli"  # egress is not selected; the reply comes back
    apply(lab, tmp_path, DB_FROM_WEB)
    assert tcp(lab, "web1", ip(lab, "db")) == "db"
    assert tcp(lab, "web2", ip(lab, "db")) == "db"  # same host
    assert tcp(lab, "web1", ip(lab, "db"), port=8001) is None  # not that port
    assert tcp(lab, "cli", ip(lab, "db")) is None  # not that label


def test_namespace_selector_and_its_and_with_a_pod_selector(lab, tmp_path, clean):
    apply(lab, tmp_path, DENY_DB + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-dev-clients, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: dev}}
      podSelector: {matchLabels: {app: client}}
""")
    assert tcp(lab, "dcli", ip(lab, "db")) == "db"  # routed, dev -> prod
    assert tcp(lab, "cli", ip(lab, "db")) is None  # a client, but in prod


def test_udp_only_rule_does_not_allow_tcp(lab, tmp_path, clean):
    apply(lab, tmp_path, """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-udp, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - ports: [{protocol: UDP, port: 5353}]
""")
    assert udp(lab, "cli", ip(lab, "db")) == "db"
    assert tcp(lab, "cli", ip(lab, "db")) is None


def test_egress_deny_on_the_client_wins_and_ip_block_except(lab, tmp_path, clean):
    apply(lab, tmp_path, f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: cli-out, namespace: prod}}
spec:
  podSelector: {{matchLabels: {{app: client}}}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {{cidr: 10.40.1.0/24, except: ["{ip(lab, 'web2')}/32"]}}
""" + "".join(f"""---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-clients, namespace: {net}}}
spec:
  podSelector: {{matchLabels: {{app: {app}}}}}
  ingress:
  - from:
    - namespaceSelector: {{}}
      podSelector: {{matchLabels: {{app: client}}}}
""" for net, app in (("prod", "web"), ("dev", "client"))))
    # web2 and dcli take connections from every client, cli's among them: only its egress denies
    assert tcp(lab, "dcli", ip(lab, "web2")) == "web2"  # the ingress allow works
    assert tcp(lab, "cli", ip(lab, "web1")) == "web1"
    assert tcp(lab, "cli", ip(lab, "web2")) is None  # excepted: the egress deny wins
    assert tcp(lab, "cli", ip(lab, "dcli")) is None  # outside the block: likewise
    assert tcp(lab, "dcli", ip(lab, "cli")) == "cli"  # ingress to cli is not selected


def test_a_label_change_and_a_delete_take_effect(lab, tmp_path, clean):
    apply(lab, tmp_path, DENY_DB + "---" + DB_FROM_WEB)
    assert tcp(lab, "cli", ip(lab, "db")) is None
    lab.weft("port", "label", "cli", "app=web", "--overwrite")
    try:
        lab.wait_flows_in_sync("h2")
        assert tcp(lab, "cli", ip(lab, "db")) == "db"
    finally:
        lab.weft("port", "label", "cli", "app=client", "--overwrite")
    lab.weft("policy", "delete", "prod/db-deny")
    lab.weft("policy", "delete", "prod/db-from-web")
    lab.wait_flows_in_sync("h2")
    assert tcp(lab, "cli", ip(lab, "db")) == "db"


def test_the_switch_holds_conjunctions_and_a_plan_changes_nothing(lab, tmp_path, clean):
    apply(lab, tmp_path, DB_FROM_WEB)
    dump = lab.exec("h2", "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout
    assert "conjunction(" in dump and "conj_id=" in dump
    before = lab.exec("h3", "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int", "--no-stats").stdout
    plan = apply(lab, tmp_path, DENY_DB.replace("app: db", "app: client").replace(
        "Ingress", "Egress").replace("db-deny", "cli-shut"), "--plan").stdout
    assert "h3" in plan and "ACL_EGRESS_EVAL" in plan, plan  # cli's host, its egress stage
    assert lab.exec("h3", "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int", "--no-stats").stdout == before
    assert [p["name"] for p in lab.api.get("/v1/policies")] == ["db-from-web"]


WEB_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: prod}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8000}]
"""


def _service(lab, name="web"):
    return lab.api.get(f"/v1/services/prod/{name}")


def test_a_service_spreads_over_backends_on_three_hosts_and_survives_losing_one(lab, tmp_path, clean):
    apply(lab, tmp_path, WEB_SERVICE)
    vip = _service(lab)["cluster_ip"]
    served = Counter(tcp(lab, "cli", vip, port=80) for _ in range(30))
    assert set(served) == {"web1", "web2", "web3"}, served
    assert tcp(lab, "dcli", vip, port=80) in ("web1", "web2", "web3")  # from the other network
    lab.weft("port", "label", "web3", "app=gone", "--overwrite")
    lab.wait_flows_in_sync("h3")
    served = Counter(tcp(lab, "cli", vip, port=80) for _ in range(20))
    assert set(served) == {"web1", "web2"}, served


def test_session_affinity_keeps_a_client_on_one_backend(lab, tmp_path, clean):
    apply(lab, tmp_path, WEB_SERVICE + "  sessionAffinity: ClientIP\n")
    vip = _service(lab)["cluster_ip"]
    assert len({tcp(lab, "cli", vip, port=80) for _ in range(10)}) == 1


def test_hairpin_a_backend_reaches_its_own_service(lab, tmp_path, clean):
    apply(lab, tmp_path, """
apiVersion: v1
kind: Service
metadata: {name: only-web1, namespace: prod}
spec:
  selector: {app: web}
  ports: [{port: 81, targetPort: 8001}]
""")
    lab.weft("port", "label", "web2", "app=web-not", "--overwrite")
    lab.weft("port", "label", "web3", "app=web-not", "--overwrite")
    try:
        lab.wait_flows_in_sync("h1")
        vip = _service(lab, "only-web1")["cluster_ip"]
        assert tcp(lab, "web1", vip, port=81) == "web1"
    finally:
        lab.weft("port", "label", "web2", "app=web", "--overwrite")


def test_udp_service(lab, tmp_path, clean):
    apply(lab, tmp_path, """
apiVersion: v1
kind: Service
metadata: {name: dns-ish, namespace: prod}
spec:
  selector: {app: db}
  ports: [{protocol: UDP, port: 53, targetPort: 5353}]
""")
    assert udp(lab, "cli", _service(lab, "dns-ish")["cluster_ip"], port=53) == "db"


def test_a_load_balancer_service_answers_from_outside(lab, tmp_path, clean):
    apply(lab, tmp_path, WEB_SERVICE.replace("name: web,", "name: web-lb,") + "  type: LoadBalancer\n")
    address = _service(lab, "web-lb")["load_balancer_ip"]
    assert address in lab.info["external"]["free_ips"] or address.startswith(
        lab.info["external"]["free_ips"][0].rsplit(".", 1)[0])
    served = {tcp(lab, "outside", address, port=80) for _ in range(10)}
    assert served and served <= {"web1", "web2", "web3"}, served


def test_no_data_path_packet_ins(lab, tmp_path, clean):
    before = lab.api.get("/v1/status")["packet_ins"]
    apply(lab, tmp_path, DB_FROM_WEB + "---" + WEB_SERVICE)
    tcp(lab, "web1", ip(lab, "db"))
    tcp(lab, "cli", _service(lab)["cluster_ip"], port=80)
    assert lab.api.get("/v1/status")["packet_ins"] == before


def test_a_controller_restart_replaces_no_policy_or_service_flow(lab, tmp_path, clean):
    """Conjunctions, groups and meters read back from the switch equal what the compiler wants, so a
    restarted controller sends nothing and connections go on."""
    apply(lab, tmp_path, DENY_DB + "---" + DB_FROM_WEB + "---" + WEB_SERVICE)
    vip = _service(lab)["cluster_ip"]
    groups = {h: lab.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "dump-groups", "br-int").stdout
              for h in ("h1", "h2", "h3")}
    before = {h: lab.flow_ages(h) for h in ("h1", "h2", "h3")}
    with lab.controller_stopped():
        assert tcp(lab, "web1", ip(lab, "db")) == "db"  # the switches go on alone
    assert tcp(lab, "cli", vip, port=80) in ("web1", "web2", "web3")
    for host in ("h1", "h2", "h3"):
        after = lab.flow_ages(host)
        assert set(after) == set(before[host]), host  # the same flows, none replaced (the gateway's
        # UPLINK_OUT either: its next hop's MAC is stored in the NB, in MAC_Binding)
        replaced = [f for f in after if after[f] < before[host][f]]
        assert not replaced, (host, replaced)
        assert lab.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "dump-groups", "br-int").stdout \
            == groups[host]
