"""`weft docker-plugin` driven by real dockerds (20.10) on a 2-host lab with runtimes: each host runs
its own dockerd with the plugin beside it (weft.labruntimes). Checked the way a user would check:
packets and files delivered, `ip link`, `ovs-vsctl list-ports` and `ovs-ofctl dump-flows` on the
hosts, and the Weft API. Every test removes the containers and networks it made.
(tests/integration/test_docker_protocol.py speaks the protocol itself, for the error paths.)"""
import ipaddress
import os
import re
import secrets
import signal
import time

import pytest

from flows.compiler import network_gateway_mac
from flows.pipeline import COOKIE_OBJECT_MASK, Category, make_cookie
from weft import labruntimes
from weft.attach import host_device
from weft.dockerplugin import peer_device
from weft.testing import eventually

HOSTS = ("h1", "h2")
SUBNET = "10.50.0.0/24"


class Docker:
    """The real docker clients of the lab's hosts, remembering what they made, to remove it."""

    def __init__(self, lab):
        self.lab, self.made = lab, []

    def __call__(self, host, *args, check=True):
        return self.lab.docker(host, *args, check=check)

    def network(self, host, name, *args, check=True):
        res = self(host, "network", "create", "-d", "weft", *args, name, check=check)
        if res.returncode == 0:
            self.made.append((host, "network", name))
        return res

    def run(self, host, name, network, *args, check=True):
        """A container left running (`sleep` unless a command is given)."""
        res = self(host, "run", "-d", "--net", network, "--name", name, *args,
                   *(() if "weft/busybox" in args else ("weft/busybox", "sleep", "600")), check=check)
        self.made.append((host, "container", name))  # a failed start may leave it created
        return res

    def ip(self, host, container, network):
        return self(host, "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                    container).stdout.strip()

    def port(self, host, container, network):
        """The Weft port of a container's endpoint on network."""
        endpoint = self(host, "inspect", "-f",
                        f'{{{{(index .NetworkSettings.Networks "{network}").EndpointID}}}}', container).stdout.strip()
        (port,) = [p for p in self.lab.api.get("/v1/ports") if p["external_ids"].get("docker.endpoint") == endpoint]
        return port

    def remove(self, host, kind, name):
        self(host, *(("rm", "-f") if kind == "container" else ("network", "rm")), name, check=False)
        self.made.remove((host, kind, name))

    def cleanup(self):
        for host, kind, name in reversed(list(self.made)):  # containers first; creators' networks last
            self.remove(host, kind, name)


@pytest.fixture
def docker(runtimes_lab):
    d = Docker(runtimes_lab)
    yield d
    d.cleanup()


def uniq(prefix):
    return f"{prefix}{secrets.token_hex(3)}"


def weft_networks(lab):
    return {n["name"] for n in lab.api.get("/v1/networks")}


def pings(docker, host, container, ip):
    return docker(host, "exec", container, "ping", "-c1", "-W2", ip, check=False).returncode == 0


@pytest.fixture(scope="module")
def blue(runtimes_lab):
    """A Weft network made by `docker network create` on both hosts (--ipam-driver weft), with a web
    server on h1 and a client on h2."""
    d = Docker(runtimes_lab)
    net = uniq("blue")
    for host in HOSTS:
        d.network(host, net, "--ipam-driver", "weft", "--subnet", SUBNET)
    d.run("h1", f"web-{net}", net, "weft/busybox", "sh", "-c",
          "head -c 300000 /dev/urandom > /var/www/blob && exec httpd -f -p 80")
    d.run("h2", f"cli-{net}", net)
    d.net, d.web, d.cli = net, f"web-{net}", f"cli-{net}"
    d.web_ip, d.cli_ip = d.ip("h1", d.web, net), d.ip("h2", d.cli, net)
    yield d
    d.cleanup()


def test_containers_on_two_hosts_ping_and_transfer_a_file(runtimes_lab, blue):
    assert pings(blue, "h2", blue.cli, blue.web_ip) and pings(blue, "h1", blue.web, blue.cli_ip)
    sent = blue("h1", "exec", blue.web, "md5sum", "/var/www/blob").stdout.split()[0]
    got = blue("h2", "exec", blue.cli, "sh", "-c", f"wget -qO- http://{blue.web_ip}/blob | md5sum").stdout.split()[0]
    assert got == sent
    # The container's interface: the network's MTU, its Weft port's MAC and address.
    port = blue.port("h1", blue.web, blue.net)
    link = blue("h1", "exec", blue.web, "ip", "-o", "link", "show", "eth0").stdout
    assert "mtu 1550" in link and port["mac"] in link
    assert (port["ip"], port["host"], port["up"]) == (blue.web_ip, "h1", True)
    # The port says whose it is, the container's name once Docker has it.
    eventually(lambda: blue.port("h1", blue.web, blue.net)["external_ids"].get("container") == blue.web,
               what="the port naming its container")
    assert blue.web in runtimes_lab.weft("port", "list", "--network", blue.net).stdout


def test_a_new_containers_first_ping_is_answered_even_on_a_reused_address(blue):
    """Join returns once the flows are in place on both hosts, so the container's first echo request
    is answered. With --ip each run has the address the previous one had: the peer may still hold it
    in its ARP cache, so the port gets that address's MAC again (Weft's MAC for an address is stable)."""
    macs = set()
    for args in ((), ("--ip", "10.50.0.150"), ("--ip", "10.50.0.150"), ("--ip", "10.50.0.150")):
        out = blue("h2", "run", "--rm", "--net", blue.net, *args, "weft/busybox", "sh", "-c",
                   f"ip -o link show eth0; ping -c1 -W1 {blue.web_ip}", check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        if args:
            macs |= set(re.findall(r"link/ether (\S+)", out.stdout))
    assert len(macs) == 1  # the same MAC, run after run


def test_names_resolve_on_the_same_host_and_port_names_through_weft_dns(runtimes_lab, blue):
    out = blue("h1", "run", "--rm", "--net", blue.net, "weft/busybox", "wget", "-qO-", f"http://{blue.web}/").stdout
    assert out == "hello from weft/busybox\n"
    # Across hosts, as the README says: Docker's DNS pointed at Weft's resolver (the gateway IP) resolves
    # every host's port names; a container's name on another dockerd is known to neither: NXDOMAIN
    # (not a timeout: the resolver answered).
    gateway, port = runtimes_lab.api.get(f"/v1/networks/{blue.net}")["gateway"], blue.port("h1", blue.web, blue.net)
    res = blue("h2", "run", "--rm", "--net", blue.net, "--dns", gateway, "--dns-search", f"{blue.net}.svc.weft",
               "--dns-search", f"{blue.net}.weft", "weft/busybox", "sh", "-c",
               f"wget -qO- http://{port['name']}/ && nslookup {port['name']}; nslookup {blue.web}", check=False)
    assert res.stdout.startswith("hello from weft/busybox\n"), res.stdout + res.stderr
    assert re.search(rf"Name:\s+{port['name']}\.{blue.net}\.weft\s+Address:\s+{re.escape(blue.web_ip)}\n", res.stdout)
    assert re.search(rf"can't find {blue.web}(\.\S+)?: NXDOMAIN", res.stdout), res.stdout
    assert res.returncode != 0 and "timed out" not in res.stdout


def test_another_network_with_the_same_subnet_is_isolated(blue, docker):
    other = uniq("other")
    for host in HOSTS:
        docker.network(host, other, "--ipam-driver", "weft", "--subnet", SUBNET)
    docker.run("h1", f"a-{other}", other)
    docker.run("h2", f"b-{other}", other)
    b_ip = docker.ip("h2", f"b-{other}", other)
    # Same subnet, and so the same addresses as blue's: each reaches its own network's holder.
    assert {blue.web_ip, blue.cli_ip} == {docker.ip("h1", f"a-{other}", other), b_ip}
    assert pings(docker, "h1", f"a-{other}", b_ip)
    # An address only blue has, on both hosts: blue reaches it, the other network never does.
    for host in HOSTS:
        docker.run(host, f"only-{other}-{host}", blue.net, "--ip", f"10.50.0.{200 + int(host[1])}")
    for host, container in (("h1", f"a-{other}"), ("h2", f"b-{other}")):
        for ip in ("10.50.0.201", "10.50.0.202"):
            assert pings(blue, "h2", blue.cli, ip)
            assert not pings(docker, host, container, ip), f"{container} ({other}) reached {ip} of {blue.net}"


def test_default_ipam_across_hosts_names_the_conflict(runtimes_lab, docker):
    """Docker's own IPAM hands out addresses per dockerd: the second host's first container gets
    the first host's address, and is refused with the way out; --ip works."""
    net = uniq("dflt")
    for host in HOSTS:
        docker.network(host, net, "--subnet", "10.51.0.0/24")
    docker.run("h1", f"a-{net}", net)
    res = docker.run("h2", f"b-{net}", net, check=False)
    assert res.returncode != 0
    holder = docker.port("h1", f"a-{net}", net)["name"]
    assert (f"10.51.0.2 is already used by port {holder} (container a-{net}, on host h1) in Weft network {net}: "
            "Docker's default IPAM allocates on each host alone: give --ip, a disjoint --ip-range per host, "
            "or create the network with --ipam-driver weft on every host") in res.stderr
    assert len(runtimes_lab.api.get(f"/v1/ports?network={net}")) == 1
    docker.remove("h2", "container", f"b-{net}")
    docker.run("h2", f"b-{net}", net, "--ip", "10.51.0.100")
    assert pings(docker, "h2", f"b-{net}", "10.51.0.2")
    # The MAC Weft chose (Docker's default IPAM gives none) is the container's.
    port = docker.port("h2", f"b-{net}", net)
    assert port["mac"] in docker("h2", "exec", f"b-{net}", "ip", "link", "show", "eth0").stdout


def leftovers(lab, host, port):
    """What is left of a removed container's port: in the API, on its host, in any host's flows."""
    found = []
    if any(p["name"] == port["name"] for p in lab.api.get("/v1/ports")):
        found.append("the NB port")
    ns = lab.info["hosts"][host]["netns"]
    links = lab.exec(host, "ip", "-n", ns, "-br", "link").stdout
    found += [f"link {d}" for d in (host_device(port["name"]), peer_device(port["name"])) if d in links]
    if host_device(port["name"]) in lab.exec(host, "ovs-vsctl", "list-ports", "br-int").stdout.split():
        found.append("the OVS port")
    ip = re.compile(rf"(?<![\d.]){re.escape(port['ip'])}(?![\d])")
    for h in HOSTS:
        flows = lab.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout
        found += [f"flows on {h} with its {what}" for what, hit in
                  (("MAC", port["mac"] in flows.lower()), ("IP", bool(ip.search(flows)))) if hit]
    return found


def network_leftovers(lab, net, port_names):
    """What is left of a Weft network on the hosts: flows (ovs-ofctl) with its cookie, its VNI as
    tunnel key, its gateway MAC or an address of its subnet; interfaces of its ports (ovs-vsctl)."""
    vni, subnet, found = net["vni"], ipaddress.IPv4Network(net["cidr"]), []
    tunnel_key = re.compile(rf"tun_id=0x{vni:x}\b|\b0x{vni:x}->tun_id")
    for h in HOSTS:
        for flow in lab.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout.splitlines():
            cookie = re.search(r"cookie=(0x[0-9a-f]+)", flow)
            hits = [what for what, hit in (
                ("its cookie", cookie and int(cookie[1], 16) & COOKIE_OBJECT_MASK == make_cookie(Category.NETWORK, vni)),
                ("its tunnel key", tunnel_key.search(flow)),
                ("its gateway MAC", network_gateway_mac(vni) in flow),
                ("an address of its subnet", any(ipaddress.IPv4Address(a) in subnet for a in
                                                 re.findall(r"(?<![\d.])\d+\.\d+\.\d+\.\d+(?![\d.])", flow))),
            ) if hit]
            found += [f"a flow on {h} with {', '.join(hits)}: {flow.strip()}"] if hits else []
        interfaces = lab.exec(h, "ovs-vsctl", "--bare", "--columns=name,external_ids", "list", "Interface").stdout
        found += [f"an interface on {h} of port {name}" for name in port_names
                  if name in interfaces or host_device(name) in interfaces]
    return found


def users(lab, net):
    """The Docker networks a plugin-made Weft network records as using it."""
    return {k.removeprefix("docker.network.") for k in lab.api.get(f"/v1/networks/{net}")["external_ids"]
            if k.startswith("docker.network.")}


@pytest.mark.parametrize("h1_args, h2_args, rm_order", [
    (("--ipam-driver", "weft"), ("--ipam-driver", "weft"), ("h2", "h1")),
    ((), ("--ip-range", "10.52.0.128/25", "--gateway", "10.52.0.1"), ("h1", "h2")),  # disjoint ranges, Docker's IPAM
], ids=["weft-ipam-joiner-first", "default-ipam-creator-first"])
def test_rm_and_network_rm_leave_nothing(runtimes_lab, docker, h1_args, h2_args, rm_order):
    net = uniq("gone")
    h1_id = docker.network("h1", net, *h1_args, "--subnet", "10.52.0.0/24").stdout.strip()
    # h1's Docker network makes the Weft network (just after dockerd has named it to the plugin).
    eventually(lambda: net in weft_networks(runtimes_lab), what="the Weft network")
    ids = runtimes_lab.api.get(f"/v1/networks/{net}")["external_ids"]
    assert (ids["owner"], ids["docker.network"], users(runtimes_lab, net)) == ("docker", h1_id, {h1_id[:12]})
    h2_id = docker.network("h2", net, *h2_args, "--subnet", "10.52.0.0/24").stdout.strip()
    docker.run("h1", f"a-{net}", net)
    docker.run("h2", f"b-{net}", net)
    ports = {"h1": docker.port("h1", f"a-{net}", net), "h2": docker.port("h2", f"b-{net}", net)}
    assert pings(docker, "h1", f"a-{net}", ports["h2"]["ip"])
    assert all(leftovers(runtimes_lab, h, p) for h, p in ports.items())  # the checks see them while there
    weft_net, names = runtimes_lab.api.get(f"/v1/networks/{net}"), [p["name"] for p in ports.values()]
    seen = network_leftovers(runtimes_lab, weft_net, names)
    assert all(any(f.startswith(f"a flow on {h} with ") and what in f.split(": ", 1)[0] for f in seen)
               for h in HOSTS for what in ("its cookie", "its tunnel key", "its gateway MAC"))
    assert all(any(f"interface on {h} of port {p['name']}" in f for f in seen) for h, p in ports.items())
    docker.remove("h1", "container", f"a-{net}")
    docker.remove("h2", "container", f"b-{net}")
    for host, port in ports.items():
        eventually(lambda: not leftovers(runtimes_lab, host, port), what=f"{host}'s port gone without a trace")
    # The Weft network goes with the last Docker network using it, whichever host made it.
    assert users(runtimes_lab, net) == {h1_id[:12], h2_id[:12]}
    first, last = rm_order
    docker.remove(first, "network", net)
    assert users(runtimes_lab, net) == {{"h1": h1_id, "h2": h2_id}[last][:12]}
    docker.remove(last, "network", net)
    assert net not in weft_networks(runtimes_lab)
    # ... and nothing of it is left on either host.
    eventually(lambda: not network_leftovers(runtimes_lab, weft_net, names), what="the network gone from the hosts")


@pytest.mark.parametrize("ipam", [("--ipam-driver", "weft"), ()], ids=["weft-ipam", "default-ipam"])
def test_a_container_started_while_the_controller_is_down_fails_and_leaves_nothing(runtimes_lab, docker, ipam):
    net = uniq("down")
    docker.network("h1", net, *ipam, "--subnet", "10.53.0.0/24")
    ns = runtimes_lab.info["hosts"]["h1"]["netns"]
    links = runtimes_lab.exec("h1", "ip", "-n", ns, "-br", "link").stdout
    ovs_ports = runtimes_lab.exec("h1", "ovs-vsctl", "list-ports", "br-int").stdout
    # (named as the Docker network, which dockerd tells only once it is made: made just after)
    eventually(lambda: net in weft_networks(runtimes_lab), what="the Weft network")
    with runtimes_lab.controller_stopped():
        res = docker.run("h1", f"c-{net}", net, check=False)
        assert res.returncode != 0
        assert "the Weft controller is not reachable, so weft cannot create the container's port: no Weft " \
               "controller is listening on " in res.stderr, res.stderr
        assert runtimes_lab.exec("h1", "ip", "-n", ns, "-br", "link").stdout == links
        assert runtimes_lab.exec("h1", "ovs-vsctl", "list-ports", "br-int").stdout == ovs_ports
    assert runtimes_lab.api.get(f"/v1/ports?network={net}") == []
    docker.remove("h1", "container", f"c-{net}")
    docker.run("h1", f"c-{net}", net)  # and with the controller back, it starts
    assert runtimes_lab.api.get(f"/v1/ports?network={net}")[0]["up"]


def test_a_network_rm_while_the_controller_is_down_is_told_to_weft_when_it_is_back(runtimes_lab, docker):
    """dockerd removes its network whatever the driver answers: the plugin keeps the release it could
    not tell Weft (in its state, across its restarts) and tells it once the controller answers."""
    net = uniq("rmdown")
    for host in HOSTS:
        docker.network(host, net, "--subnet", "10.58.0.0/24")
    eventually(lambda: net in weft_networks(runtimes_lab) and len(users(runtimes_lab, net)) == 2,
               what="both Docker networks recorded")
    docker.remove("h2", "network", net)
    with runtimes_lab.controller_stopped():
        docker.remove("h1", "network", net)
        assert docker("h1", "network", "ls", "-q", "--filter", f"name=^{net}$").stdout.strip() == ""
        labruntimes.stop_plugin(runtimes_lab.name, "h1")  # and a plugin restart does not forget it
        labruntimes.start_plugin(runtimes_lab.name, "h1")
    eventually(lambda: net not in weft_networks(runtimes_lab), timeout=30, what="the Weft network deleted")


def port_rows(lab, net):
    return sorted((p["name"], p["ip"], p["mac"], p["host"], p["up"]) for p in lab.api.get(f"/v1/ports?network={net}"))


def test_a_dockerd_restart_keeps_running_containers_connected(runtimes_lab, blue, docker):
    before = port_rows(runtimes_lab, blue.net)
    for host in HOSTS:
        labruntimes.restart_docker(runtimes_lab.name, host)
        assert port_rows(runtimes_lab, blue.net) == before  # nothing flapped
        assert pings(blue, "h2", blue.cli, blue.web_ip) and pings(blue, "h1", blue.web, blue.cli_ip)
    # The reconcile the restarts triggered (dockerd activates the plugin again) removed nothing.
    time.sleep(1)
    assert port_rows(runtimes_lab, blue.net) == before
    docker.run("h1", uniq("after-"), blue.net)  # and new containers still start


@pytest.fixture
def fresh_runtimes_lab(runtimes_lab, make_lab):
    """A lab with runtimes of the test's own (skipped as runtimes_lab is): dockerds that have only
    the networks the test makes."""
    lab = make_lab(runtimes=True, shared=False)
    yield lab
    lab.down()


def test_a_container_lost_over_a_dockerd_restart_leaves_nothing(fresh_runtimes_lab):
    """A container whose process died while its dockerd was down (killed here, by its pid from
    `docker inspect`). A dockerd with no network on weft IPAM has no reason to load the plugin while
    it starts: it removes the dead container's sandbox as stale, dropping the endpoint without
    calling the driver. The plugin reconciles once dockerd serves again, even in the process that
    made the port; the other containers keep their connectivity."""
    lab, docker = fresh_runtimes_lab, Docker(fresh_runtimes_lab)
    net, lost, kept, peer = uniq("lost"), uniq("lost-"), uniq("kept-"), uniq("peer-")
    docker.network("h1", net, "--subnet", "10.57.0.0/24", "--ip-range", "10.57.0.0/25")
    docker.network("h2", net, "--subnet", "10.57.0.0/24", "--ip-range", "10.57.0.128/25", "--gateway", "10.57.0.1")
    for host, name in (("h1", lost), ("h1", kept), ("h2", peer)):
        docker.run(host, name, net)
    peer_ip, lost_port = docker.ip("h2", peer, net), docker.port("h1", lost, net)
    others = [r for r in port_rows(lab, net) if r[0] != lost_port["name"]]
    eventually(lambda: docker.port("h1", lost, net)["external_ids"].get("container") == lost,
               what="dockerd showing the endpoint")  # the port is no longer one the plugin is making
    assert leftovers(lab, "h1", lost_port)
    pid = int(docker("h1", "inspect", "-f", "{{.State.Pid}}", lost).stdout)
    labruntimes.stop_docker(lab.name, "h1")
    try:
        os.kill(pid, signal.SIGKILL)
        # Reaped before dockerd is back: it finds the container dead, rather than seeing it die.
        eventually(lambda: not os.path.exists(f"/proc/{pid}"), what=f"the container's process {pid} gone")
    finally:
        labruntimes.start_docker(lab.name, "h1")
    eventually(lambda: not leftovers(lab, "h1", lost_port), what="the lost container's port reconciled away")
    assert docker("h1", "inspect", "-f", "{{.State.Running}}", lost).stdout.strip() == "false"
    assert port_rows(lab, net) == others
    assert pings(docker, "h1", kept, peer_ip) and pings(docker, "h2", peer, docker.ip("h1", kept, net))
    docker.cleanup()


def test_a_plugin_restarted_after_a_container_went_removes_its_port(runtimes_lab, blue, docker):
    stale, kept = uniq("stale-"), uniq("kept-")
    docker.run("h1", stale, blue.net)
    docker.run("h1", kept, blue.net)
    stale_port, kept_port = docker.port("h1", stale, blue.net), docker.port("h1", kept, blue.net)
    others = [r for r in port_rows(runtimes_lab, blue.net) if r[0] not in (stale_port["name"], kept_port["name"])]
    labruntimes.stop_plugin(runtimes_lab.name, "h1")
    try:
        # dockerd tries the plugin's socket for 15 s for each of its calls, then removes the container.
        docker.remove("h1", "container", stale)
        assert leftovers(runtimes_lab, "h1", stale_port)  # the port, veth and OVS port stayed behind
    finally:
        labruntimes.start_plugin(runtimes_lab.name, "h1")
    eventually(lambda: not leftovers(runtimes_lab, "h1", stale_port), what="the stale port reconciled away")
    assert port_rows(runtimes_lab, blue.net) == sorted(others + [
        (kept_port["name"], kept_port["ip"], kept_port["mac"], "h1", True)])
    assert pings(docker, "h1", kept, blue.cli_ip)


def test_bad_options_are_refused_clearly(runtimes_lab, blue, docker):
    net = uniq("bad")
    for args, expected in [
        (("-o", "color=blue", "--subnet", "10.54.0.0/24"),
         "the weft driver has no option color: it takes -o weft.network=NAME"),
        (("-o", "weft.vni=many", "--subnet", "10.54.0.0/24"), "-o weft.vni=many is not a number from 1 to 16777215"),
        (("--ipam-driver", "weft"), "--ipam-driver weft needs --subnet"),
        (("-o", f"weft.network={blue.net}", "--subnet", "10.54.0.0/24"),
         f"Weft network {blue.net} exists with subnet {SUBNET}"),
        (("--ipv6", "--subnet", "10.54.0.0/24", "--subnet", "fd00:54::/64"), "Weft networks are IPv4 only"),
    ]:
        res = docker.network("h1", net, *args, check=False)
        assert res.returncode != 0 and expected in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert net not in weft_networks(runtimes_lab)
    res = docker.run("h1", uniq("pub-"), blue.net, "-p", "8080:80", check=False)
    assert res.returncode != 0 and "Weft networks do not publish container ports (-p/--publish)" in res.stderr


def test_labels_from_network_options_and_endpoint_driver_opts(runtimes_lab, docker):
    """-o weft.label.* labels the Weft network; driver-opt weft.label.* / weft.named-port.* (`docker run
    --network name=NET,driver-opt=...`, `docker network connect --driver-opt`) the container's port.
    `docker run --label` does not reach a network driver."""
    net, other = uniq("lbl"), uniq("lbl")
    docker.network("h1", net, "--subnet", "10.55.0.0/24", "-o", "weft.label.env=prod", "-o", f"weft.network={net}")
    docker.network("h1", other, "--subnet", "10.56.0.0/24")
    assert runtimes_lab.api.get(f"/v1/networks/{net}")["labels"] == {"env": "prod"}
    name = uniq("lblc-")
    docker.run("h1", name, f"name={net},driver-opt=weft.label.app=web,driver-opt=weft.named-port.http=TCP/80",
               "--label", "tier=front")
    port = docker.port("h1", name, net)
    assert (port["labels"], port["named_ports"], port["up"]) == ({"app": "web"}, {"http": "TCP/80"}, True)
    docker("h1", "network", "connect", "--driver-opt", "weft.label.app=web-admin", other, name)
    assert docker.port("h1", name, other)["labels"] == {"app": "web-admin"}
    res = docker.run("h1", uniq("lblc-"), f"name={net},driver-opt=weft.label.app=-", check=False)
    assert res.returncode != 0 and "driver-opt weft.label.app: '-' is not a valid label value" in res.stderr


def test_a_weft_router_joins_two_docker_networks_and_trace_follows(runtimes_lab, docker):
    """Docker's gateway is the Weft network's, so a router attached later routes the running
    containers without touching them; `weft trace` works from a Docker container's port."""
    a, b, router = uniq("rta"), uniq("rtb"), uniq("r")
    docker.network("h1", a, "--subnet", "10.55.0.0/24")
    docker.network("h2", b, "--subnet", "10.56.0.0/24")
    docker.run("h1", f"c-{a}", a)
    docker.run("h2", f"c-{b}", b)
    b_ip = docker.ip("h2", f"c-{b}", b)
    assert not pings(docker, "h1", f"c-{a}", b_ip)
    runtimes_lab.weft("router", "create", router)
    try:
        for net in (a, b):
            runtimes_lab.weft("router", "attach", router, net)
        assert runtimes_lab.api.get(f"/v1/routers/{router}?wait_up=10")["up"]
        # (the container's failed ARP for its gateway, from the ping above, is retried within seconds)
        eventually(lambda: pings(docker, "h1", f"c-{a}", b_ip), what="a routed ping")
        port = docker.port("h1", f"c-{a}", a)["name"]
        trace = runtimes_lab.weft("trace", "--from", port, "--to", b_ip).stdout
        assert f"=> delivered to port {docker.port('h2', f'c-{b}', b)['name']} on host h2" in trace
    finally:
        for net in (a, b):
            runtimes_lab.weft("router", "detach", router, net, check=False)
        runtimes_lab.weft("router", "delete", router)


def test_floating_ips_reach_docker_and_podman_containers_from_outside(runtimes_lab, make_lab):
    """Docker's and CNI's ports are ports like any other: a Weft router with an external gateway,
    attached to the Docker network after the containers started, and a floating IP on a container's
    port make its server reachable from `outside` (a lab with an external network of its own): a
    Docker container on h2, a podman one (weft-cni) on h1, the gateway's host."""
    lab = make_lab(runtimes=True, external=True, shared=False)
    try:
        ext, docker = lab.info["external"], Docker(lab)
        net, router, web, pweb = uniq("fip"), uniq("r"), uniq("web-"), uniq("pweb-")
        docker.network("h2", net, "--subnet", "10.59.0.0/24")
        docker.run("h2", web, net, "weft/busybox", "httpd", "-f", "-p", "80")
        lab.podman("h1", "run", "-d", "--name", pweb, "--network", net, "weft/busybox", "httpd", "-f", "-p", "80")
        ports = {web: docker.port("h2", web, net), pweb: eventually(lambda: next(
            (p for p in lab.api.get(f"/v1/ports?network={net}") if p["external_ids"].get("container") == pweb),
            None), what="the podman container's port")}
        assert ports[pweb]["external_ids"]["owner"] == "cni"
        lab.weft("router", "create", router)
        lab.weft("router", "attach", router, net)
        lab.weft("router", "set-gateway", router, "--host", ext["host"], "--uplink", ext["uplink"],
                 "--ip", f"{ext['free_ips'][0]}/24", "--next-hop", ext["next_hop"])

        def fetch(ip):  # an HTTP GET from outside (socat: the test command installs it)
            return lab.exec("outside", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
                            f"socat -T 2 - TCP:{ip}:80,connect-timeout=2", check=False).stdout

        for container, fip in zip(ports, ext["free_ips"][1:]):
            assert fetch(fip) == ""  # no floating IP yet
            lab.weft("floating-ip", "create", "--port", ports[container]["name"], "--ip", fip)

            def served(fip=fip):
                answer = fetch(fip)
                return answer if answer.endswith("\nhello from weft/busybox\n") else None
            answer = eventually(served, what=f"outside fetching from {container} at its floating IP {fip}")
            assert answer.startswith("HTTP/1.1 200 OK"), answer
    finally:
        lab.down()  # with its containers, router and floating IPs
