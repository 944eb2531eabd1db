"""The Docker plugin spoken to directly, with the JSON dockerd 20.10 sends (runtimes.md), for what a
real dockerd does not easily produce: refusals, retries, IPv6, an address race between two hosts.
The plugin runs on lab hosts beside their OVS, against the lab's controller; no dockerd is needed
(these calls never ask one). tests/integration/test_docker.py drives it through real dockerds."""
import concurrent.futures
import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weft import lab as weftlab
from weft.attach import host_device
from weft.client import ApiError, UnixHTTPConnection

GATEWAY = "com.docker.network.gateway"
GENERIC = "com.docker.network.generic"


class PluginProcess:
    """`weft docker-plugin` on a lab host, as the lab would start it, with no dockerd beside it."""

    def __init__(self, lab, host):
        self.lab, self.host = lab, host
        self.dir = lab.dir / host / f"dp-{secrets.token_hex(3)}"
        self.dir.mkdir()
        self.socket = str(self.dir / "weft.sock")
        self.log = self.dir / "plugin.log"
        with open(self.log, "wb") as log:
            self.proc = weftlab.spawn(lab.name, host, [
                sys.executable, "-m", "weft.cli", "docker-plugin", "--socket", self.socket,
                "--docker", f"unix://{self.dir}/no-dockerd.sock", "--state-dir", str(self.dir / "state")],
                what=f"{host} docker-plugin (protocol test)", stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while not Path(self.socket).exists():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"the plugin did not serve: {self.log.read_text()}"
            time.sleep(0.05)

    def __call__(self, name, body=None):
        conn = UnixHTTPConnection(self.socket, timeout=60)
        try:
            conn.request("POST", name, body=json.dumps(body),
                         headers={"Content-Type": "application/vnd.docker.plugins.v1.2+json"})
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            return json.loads(resp.read())
        finally:
            conn.close()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(15)
        shutil.rmtree(self.dir)


@pytest.fixture(scope="module")
def plugins(lab):
    started = {h: PluginProcess(lab, h) for h in ("h1", "h2")}
    yield started
    for plugin in started.values():
        plugin.stop()


@pytest.fixture
def names(lab):
    """Fresh Docker network and endpoint ids and a Weft network name; the Weft objects made under
    that name are removed afterwards."""
    made = {"weft": f"dp{secrets.token_hex(3)}", "nets": [], "eps": []}

    def new_id(kind="nets"):
        made[kind].append(secrets.token_hex(32))
        return made[kind][-1]
    made["id"] = new_id
    yield made
    for port in lab.api.get("/v1/ports"):
        if port["network"] == made["weft"]:
            lab.api.delete(f"/v1/ports/{port['name']}?force=true")
    try:
        lab.api.delete(f"/v1/networks/{made['weft']}")
    except ApiError:
        pass


def create_network(plugin, network_id, pool="10.77.0.0/24", gateway="10.77.0.1/24", options=None,
                   space="LocalDefault", ipv6=()):
    return plugin("/NetworkDriver.CreateNetwork", {
        "NetworkID": network_id, "Options": {"com.docker.network.enable_ipv6": bool(ipv6), GENERIC: options or {}},
        "IPv4Data": [{"AddressSpace": space, "Gateway": gateway, "Pool": pool}], "IPv6Data": list(ipv6)})


def create_endpoint(plugin, network_id, endpoint_id, address, mac="", ipv6="", options=None):
    """`options`: the driver-opts of `docker run --network name=NET,driver-opt=K=V` (runtimes.md)."""
    return plugin("/NetworkDriver.CreateEndpoint", {
        "NetworkID": network_id, "EndpointID": endpoint_id,
        "Interface": {"Address": address, "AddressIPv6": ipv6, "MacAddress": mac},
        "Options": {"com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": [],
                    **(options or {})}})


def test_activate_names_both_drivers(plugins):
    assert set(plugins["h1"]("/Plugin.Activate")["Implements"]) == {"NetworkDriver", "IpamDriver"}
    assert plugins["h1"]("/NetworkDriver.GetCapabilities") == {"Scope": "local", "ConnectivityScope": "global"}


@pytest.mark.parametrize("options, ipv6, expected", [
    ({"bridge.name": "x"}, (), "the weft driver has no option bridge.name: it takes -o weft.network=NAME"),
    ({"weft.vni": "lots"}, (), "-o weft.vni=lots is not a number from 1 to 16777215"),
    ({"weft.vni": "0"}, (), "-o weft.vni=0 is not a number from 1 to 16777215"),
    ({"weft.network": "a..b"}, (), "-o weft.network is not a Weft network name"),
    ({"com.docker.network.driver.mtu": "100"}, (), "is not a number from 576 to 65535"),
    ({"weft.label.env": "a b"}, (), "-o weft.label.env: 'a b' is not a valid label value"),
    ({"weft.label.Bad/env": "x"}, (), "-o weft.label: key 'Bad/env' is not a valid label key"),
    ({"weft.named-port.http": "TCP/80"}, (), "no option weft.named-port.http"),
    ({}, ({"AddressSpace": "LocalDefault", "Pool": "fd00::/64", "Gateway": "fd00::1/64"},),
     "Weft networks are IPv4 only: create the network without --ipv6"),
])
def test_create_network_refusals(lab, plugins, names, options, ipv6, expected):
    answer = create_network(plugins["h1"], names["id"](), options={"weft.network": names["weft"], **options},
                            ipv6=ipv6)
    assert expected in answer["Err"]
    assert names["weft"] not in {n["name"] for n in lab.api.get("/v1/networks")}


def test_two_subnets_are_refused(plugins, names):
    answer = plugins["h1"]("/NetworkDriver.CreateNetwork", {
        "NetworkID": names["id"](), "Options": {GENERIC: {}}, "IPv6Data": [],
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": "10.77.0.1/24", "Pool": "10.77.0.0/24"},
                     {"AddressSpace": "LocalDefault", "Gateway": "10.78.0.1/24", "Pool": "10.78.0.0/24"}]})
    assert answer["Err"] == "a Weft network has one subnet; 2 were given (one --subnet)"


def test_create_joins_a_matching_network_and_refuses_another_subnet(lab, plugins, names):
    options = {"weft.network": names["weft"], "weft.vni": "7777"}
    assert create_network(plugins["h1"], names["id"](), options=options) == {}
    net = lab.api.get(f"/v1/networks/{names['weft']}")
    assert (net["cidr"], net["gateway"], net["vni"]) == ("10.77.0.0/24", "10.77.0.1", 7777)
    assert {k: v for k, v in net["external_ids"].items() if k != f"docker.network.{names['nets'][0][:12]}"} \
        == {"owner": "docker", "docker.network": names["nets"][0]}  # and h1's Docker network is a user
    assert create_network(plugins["h2"], names["id"](), options=options) == {}  # the second host joins
    assert {f"docker.network.{i[:12]}" for i in names["nets"][:2]} <= \
        set(lab.api.get(f"/v1/networks/{names['weft']}")["external_ids"])
    answer = create_network(plugins["h2"], names["id"](), pool="10.88.0.0/24", gateway="10.88.0.1/24",
                            options={"weft.network": names["weft"]})
    assert answer["Err"] == (
        f"Weft network {names['weft']} exists with subnet 10.77.0.0/24, gateway 10.77.0.1, vni 7777, mtu 1550; "
        f"this Docker network has subnet 10.88.0.0/24 (Weft has 10.77.0.0/24), gateway 10.88.0.1 (Weft has "
        f"10.77.0.1). Create it with --subnet 10.77.0.0/24 --gateway 10.77.0.1 to join it, or give another "
        f"Weft network with -o weft.network=NAME")
    # The Weft network goes with the last Docker network that uses it.
    assert plugins["h2"]("/NetworkDriver.DeleteNetwork", {"NetworkID": names["nets"][1]}) == {}
    assert lab.api.get(f"/v1/networks/{names['weft']}")
    assert plugins["h1"]("/NetworkDriver.DeleteNetwork", {"NetworkID": names["nets"][0]}) == {}
    assert names["weft"] not in {n["name"] for n in lab.api.get("/v1/networks")}
    assert plugins["h1"]("/NetworkDriver.DeleteNetwork", {"NetworkID": names["nets"][0]}) == {}  # again


def test_network_and_endpoint_labels(lab, plugins, names):
    """-o weft.label.K=V labels the Weft network; a host joining it with other labels is refused,
    never changing them. driver-opt weft.label.K=V and weft.named-port.N=P/N label the port, with
    Docker's IPAM (the port made at CreateEndpoint) and with Weft's (the port made before, labelled
    at CreateEndpoint, before Join plugs it)."""
    h1, h2 = plugins["h1"], plugins["h2"]
    net = names["id"]()
    assert create_network(h1, net, options={"weft.network": names["weft"], "weft.label.env": "prod"}) == {}
    assert lab.api.get(f"/v1/networks/{names['weft']}")["labels"] == {"env": "prod"}
    joined = names["id"]()
    assert create_network(h2, joined, options={"weft.network": names["weft"], "weft.label.env": "prod"}) == {}
    answer = create_network(h2, names["id"](), options={"weft.network": names["weft"], "weft.label.env": "dev",
                                                        "weft.label.team": "a"})
    assert "this Docker network has label env=dev (Weft has env=prod), label team=a (Weft has no team)" \
        in answer["Err"]
    assert lab.api.get(f"/v1/networks/{names['weft']}")["labels"] == {"env": "prod"}
    ep = names["id"]("eps")
    create_endpoint(h1, net, ep, "10.77.0.2/24", options={"weft.label.app": "web", "other.driver.opt": "x",
                                                          "weft.named-port.http": "tcp/8080"})
    port = lab.api.get(f"/v1/ports/docker-{ep[:12]}")
    assert (port["labels"], port["named_ports"]) == ({"app": "web"}, {"http": "TCP/8080"})
    answer = create_endpoint(h1, net, names["id"]("eps"), "10.77.0.3/24", options={"weft.lable.app": "web"})
    assert answer["Err"].startswith("the weft driver has no endpoint option weft.lable.app")
    answer = create_endpoint(h1, net, names["id"]("eps"), "10.77.0.3/24", options={"weft.named-port.HTTP": "TCP/1"})
    assert "driver-opt weft.named-port: 'HTTP' is not a valid port name" in answer["Err"]
    assert [p["name"] for p in lab.api.get(f"/v1/ports?network={names['weft']}")] == [port["name"]]
    assert h1("/NetworkDriver.DeleteEndpoint", {"NetworkID": net, "EndpointID": ep}) == {}
    assert h1("/NetworkDriver.DeleteNetwork", {"NetworkID": net}) == {}
    assert names["weft"] in {n["name"] for n in lab.api.get("/v1/networks")}  # h2's Docker network uses it
    assert h2("/NetworkDriver.DeleteNetwork", {"NetworkID": joined}) == {}
    assert names["weft"] not in {n["name"] for n in lab.api.get("/v1/networks")}  # the last one removed it
    # Weft's IPAM.
    pool_id, net = ipam_network(h1, names, pool="10.79.0.0/24")
    ip = request_address(h1, pool_id)["Address"].split("/")[0]
    ep = names["id"]("eps")
    create_endpoint(h1, net, ep, f"{ip}/24", options={"weft.label.app": "db"})
    (port,) = lab.api.get(f"/v1/ports?network={names['weft']}")
    assert port["labels"] == {"app": "db"} and port["external_ids"]["docker.endpoint"] == ep
    assert h1("/NetworkDriver.DeleteEndpoint", {"NetworkID": net, "EndpointID": ep}) == {}
    assert h1("/IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": ip}) == {}
    assert h1("/NetworkDriver.DeleteNetwork", {"NetworkID": net}) == {}
    assert h1("/IpamDriver.ReleasePool", {"PoolID": pool_id}) == {}


def host_links(lab, host):
    return lab.exec(host, "ip", "-br", "link").stdout


def test_endpoint_lifecycle_and_retries(lab, plugins, names):
    """CreateEndpoint answers Weft's MAC, Join plugs a veth whose peer waits in the host's namespace
    with the port up, Leave and DeleteEndpoint remove everything; each call may come twice."""
    h1 = plugins["h1"]
    net, ep = names["id"](), names["id"]("eps")
    assert create_network(h1, net, options={"weft.network": names["weft"]}) == {}
    first = create_endpoint(h1, net, ep, "10.77.0.2/24")
    mac = first["Interface"]["MacAddress"]
    assert create_endpoint(h1, net, ep, "10.77.0.2/24") == first  # dockerd's retry: the same port
    (port,) = lab.api.get(f"/v1/ports?network={names['weft']}")
    assert (port["name"], port["ip"], port["mac"]) == (f"docker-{ep[:12]}", "10.77.0.2", mac)
    assert port["external_ids"] == {**port["external_ids"], "owner": "docker", "docker.network": net,
                                    "docker.endpoint": ep}
    join = h1("/NetworkDriver.Join", {"NetworkID": net, "EndpointID": ep, "SandboxKey": "/nonexistent",
                                      "Options": {}})
    peer = join["InterfaceName"]["SrcName"]
    assert join == {"InterfaceName": {"SrcName": peer, "DstPrefix": "eth"}, "Gateway": "10.77.0.1",
                    "StaticRoutes": [], "DisableGatewayService": True}
    assert lab.api.get(f"/v1/ports/{port['name']}")["up"]
    assert peer in host_links(lab, "h1") and mac in lab.exec("h1", "ip", "link", "show", peer).stdout
    assert h1("/NetworkDriver.EndpointOperInfo", {"NetworkID": net, "EndpointID": ep}) == {"Value": {}}
    assert h1("/NetworkDriver.ProgramExternalConnectivity", {"NetworkID": net, "EndpointID": ep,
                                                              "Options": {}}) == {}
    for _ in range(2):
        assert h1("/NetworkDriver.RevokeExternalConnectivity", {"NetworkID": net, "EndpointID": ep}) == {}
        assert h1("/NetworkDriver.Leave", {"NetworkID": net, "EndpointID": ep}) == {}
        links = host_links(lab, "h1")
        assert peer not in links and host_device(port["name"]) not in links
        assert host_device(port["name"]) not in lab.exec("h1", "ovs-vsctl", "list-ports", "br-int").stdout
    for _ in range(2):
        assert h1("/NetworkDriver.DeleteEndpoint", {"NetworkID": net, "EndpointID": ep}) == {}
        assert lab.api.get(f"/v1/ports?network={names['weft']}") == []


def test_endpoint_refusals(lab, plugins, names):
    h1 = plugins["h1"]
    net = names["id"]()
    assert create_network(h1, net, options={"weft.network": names["weft"]}) == {}
    assert "Interface" in create_endpoint(h1, net, names["id"]("eps"), "10.77.0.9/24")
    # Docker's default IPAM on another host hands out the same address: named, with the way out.
    other = names["id"]()
    assert create_network(plugins["h2"], other, options={"weft.network": names["weft"]}) == {}
    answer = create_endpoint(plugins["h2"], other, names["id"]("eps"), "10.77.0.9/24")
    assert answer["Err"].startswith(f"10.77.0.9 is already used by port docker-{names['eps'][0][:12]} "
                                    "(not plugged in yet) in Weft network ")
    assert answer["Err"].endswith("Docker's default IPAM allocates on each host alone: give --ip, a disjoint "
                                  "--ip-range per host, or create the network with --ipam-driver weft on every host")
    assert create_endpoint(h1, net, names["id"]("eps"), "10.77.0.3/24", ipv6="fd00::3/64")["Err"] == \
        "Weft networks are IPv4 only: run the container without --ip6"
    assert "has no Weft port" in h1("/NetworkDriver.Join", {"NetworkID": net, "EndpointID": "f" * 64,
                                                           "SandboxKey": "/x", "Options": {}})["Err"]
    assert "do not publish container ports (-p/--publish)" in h1("/NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": net, "EndpointID": names["eps"][0],
        "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 8080}]}})["Err"]
    assert "swarm" in h1("/NetworkDriver.AllocateNetwork", {"NetworkID": net})["Err"]
    assert len(lab.api.get(f"/v1/ports?network={names['weft']}")) == 1  # only the first one


@pytest.mark.parametrize("request_body, expected", [
    ({"AddressSpace": "weft", "Pool": "", "SubPool": "", "Options": {}, "V6": False},
     "--ipam-driver weft needs --subnet"),
    ({"AddressSpace": "weft", "Pool": "10.77.0.0/24", "SubPool": "10.77.0.128/25", "Options": {}, "V6": False},
     "--ip-range does not apply with --ipam-driver weft"),
    ({"AddressSpace": "weft", "Pool": "fd00::/64", "SubPool": "", "Options": {}, "V6": True},
     "Weft networks are IPv4 only"),
    ({"AddressSpace": "weft", "Pool": "10.77.0.0/24", "SubPool": "", "Options": {"x": "y"}, "V6": False},
     "the weft IPAM driver takes no --ipam-opt (given: x)"),
])
def test_ipam_pool_refusals(plugins, request_body, expected):
    # An IPAM driver's error is "Error" (libnetwork ignores "Err" there, and says "No address returned").
    assert expected in plugins["h1"]("/IpamDriver.RequestPool", request_body)["Error"]


def ipam_network(plugin, names, pool="10.77.0.0/24"):
    """What `docker network create -d weft --ipam-driver weft --subnet POOL` sends; the pool id."""
    assert plugin("/IpamDriver.GetCapabilities") == {"RequiresMACAddress": False, "RequiresRequestReplay": False}
    assert plugin("/IpamDriver.GetDefaultAddressSpaces")["LocalDefaultAddressSpace"] == "weft"
    pool_id = plugin("/IpamDriver.RequestPool", {"AddressSpace": "weft", "Pool": pool, "SubPool": "",
                                                 "Options": {}, "V6": False})["PoolID"]
    gateway = plugin("/IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "",
                                                    "Options": {"RequestAddressType": GATEWAY}})
    net = pool.split("/")[0].rsplit(".", 1)[0]
    assert gateway == {"Address": f"{net}.1/24", "Data": {}}
    network_id = names["id"]()
    assert create_network(plugin, network_id, pool=pool, gateway=f"{net}.1/24", space="weft",
                          options={"weft.network": names["weft"]}) == {}
    return pool_id, network_id


def request_address(plugin, pool_id, address=""):
    return plugin("/IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": address, "Options": {}})


def test_ipam_address_is_the_port(lab, plugins, names):
    """RequestAddress makes the port (the NB picks the address, atomically across hosts);
    CreateEndpoint takes it over and answers its MAC; ReleaseAddress removes what DeleteEndpoint has not."""
    h1 = plugins["h1"]
    pool_id, net = ipam_network(h1, names)
    got = request_address(h1, pool_id)
    ip = got["Address"].split("/")[0]
    assert got == {"Address": f"{ip}/24", "Data": {}} and ip != "10.77.0.1"
    (port,) = lab.api.get(f"/v1/ports?network={names['weft']}")
    assert port["ip"] == ip and port["external_ids"]["docker.pool"] == pool_id
    taken = request_address(plugins["h1"], pool_id, address=ip)
    assert taken["Error"] == (f"{ip} is already used by port {port['name']} (not plugged in yet) in "
                              f"Weft network {names['weft']}: pick a free --ip")
    ep = names["id"]("eps")
    assert create_endpoint(h1, net, ep, f"{ip}/24") == {"Interface": {"MacAddress": port["mac"]}}
    assert create_endpoint(h1, net, ep, f"{ip}/24") == {"Interface": {"MacAddress": port["mac"]}}  # a retry
    assert lab.api.get(f"/v1/ports/{port['name']}")["external_ids"]["docker.endpoint"] == ep
    assert h1("/NetworkDriver.DeleteEndpoint", {"NetworkID": net, "EndpointID": ep}) == {}
    assert h1("/IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": ip}) == {}
    assert lab.api.get(f"/v1/ports?network={names['weft']}") == []
    # The address again (--ip), for another container: the same MAC (peers may still have it cached).
    assert request_address(h1, pool_id, address=ip)["Address"] == f"{ip}/24"
    assert lab.api.get(f"/v1/ports?network={names['weft']}")[0]["mac"] == port["mac"]
    # `--mac-address`: the port is made again with Docker's MAC (no answer then: Docker chose it).
    ep = names["id"]("eps")
    assert create_endpoint(h1, net, ep, f"{ip}/24", mac="02:42:0a:4d:00:99") == {}
    (again,) = lab.api.get(f"/v1/ports?network={names['weft']}")
    assert (again["ip"], again["mac"], again["external_ids"]["docker.endpoint"]) == (ip, "02:42:0a:4d:00:99", ep)
    assert h1("/NetworkDriver.DeleteEndpoint", {"NetworkID": net, "EndpointID": ep}) == {}
    assert h1("/IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": ip}) == {}
    # An address Docker released before making an endpoint (its start failed) goes with its port.
    other = request_address(h1, pool_id)["Address"].split("/")[0]
    assert lab.api.get(f"/v1/ports?network={names['weft']}")[0]["ip"] == other
    assert h1("/IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": other}) == {}
    assert lab.api.get(f"/v1/ports?network={names['weft']}") == []
    # The gateway is no port; releasing it and the pool changes nothing in Weft.
    assert h1("/IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": "10.77.0.1"}) == {}
    assert h1("/IpamDriver.ReleasePool", {"PoolID": pool_id}) == {}
    assert h1("/IpamDriver.ReleasePool", {"PoolID": pool_id}) == {}
    assert "has no pool" in request_address(h1, pool_id)["Error"]


def test_ipam_refuses_an_address_for_a_pool_with_no_weft_network(plugins):
    """A pool whose network went to another driver (`-d bridge --ipam-driver weft`), or an
    --aux-address, which Docker asks for before CreateNetwork."""
    h1 = plugins["h1"]
    pool_id = h1("/IpamDriver.RequestPool", {"AddressSpace": "weft", "Pool": "10.79.0.0/24", "SubPool": "",
                                             "Options": {}, "V6": False})["PoolID"]
    try:
        answer = h1("/IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "10.79.0.5", "Options": {}})
        assert answer["Error"] == ("the weft IPAM driver hands out addresses on weft networks only (-d weft), "
                                   "and takes no --aux-address")
    finally:
        assert h1("/IpamDriver.ReleasePool", {"PoolID": pool_id}) == {}


def test_ipam_two_hosts_at_once_never_share_an_address(lab, plugins, names):
    """Both hosts' plugins ask for 12 addresses each, all at once, on one Weft network."""
    pools = {h: ipam_network(plugins[h], names)[0] for h in ("h1", "h2")}
    jobs = [h for _ in range(12) for h in pools]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda host: request_address(plugins[host], pools[host]), jobs))
    addresses = [a["Address"] for a in answers]
    assert len(set(addresses)) == len(jobs), answers
    assert len(lab.api.get(f"/v1/ports?network={names['weft']}")) == len(jobs)
    for host, address in zip(jobs, addresses):
        plugins[host]("/IpamDriver.ReleaseAddress", {"PoolID": pools[host], "Address": address.split("/")[0]})
    assert lab.api.get(f"/v1/ports?network={names['weft']}") == []
    for host, pool_id in pools.items():
        plugins[host]("/IpamDriver.ReleasePool", {"PoolID": pool_id})


def test_controller_down_leaves_nothing(lab, plugins, names):
    h1 = plugins["h1"]
    net = names["id"]()
    assert create_network(h1, net, options={"weft.network": names["weft"]}) == {}
    before = host_links(lab, "h1")
    with lab.controller_stopped():
        answer = create_endpoint(h1, net, names["id"]("eps"), "10.77.0.2/24")
        assert answer["Err"].startswith("the Weft controller is not reachable, so weft cannot create the "
                                        "container's port: no Weft controller is listening on ")
        assert create_network(h1, names["id"](), options={"weft.network": "other"})["Err"].startswith(
            "the Weft controller is not reachable")
    assert host_links(lab, "h1") == before
    assert lab.api.get(f"/v1/ports?network={names['weft']}") == []
    assert "other" not in {n["name"] for n in lab.api.get("/v1/networks")}
