"""weft-cni through the real podman (CNI backend) on a 2-host lab with runtimes: `weft lab podman H
-- run --network NET ...` finds a conflist for every Weft network and calls the plugin installed as
`weft` in its CNI plugin dir. Checked with packets, files sent over TCP, and the hosts' OVS."""
import pytest

from weft.attach import host_device
from weft.client import path as api_path
from weft.testing import eventually

NET, CIDR = "pblue", "10.80.0.0/24"
IMAGE = "weft/busybox"


@pytest.fixture(scope="module")
def lab(runtimes_lab):
    runtimes_lab.api.post("/v1/networks", {"name": NET, "cidr": CIDR})
    yield runtimes_lab
    for host in ("h1", "h2"):  # a failed test's containers, then the network
        names = runtimes_lab.podman(host, "ps", "-aq", "--filter", f"network={NET}").stdout.split()
        if names:
            runtimes_lab.podman(host, "rm", "-f", "-t", "0", *names, check=False)
    runtimes_lab.api.delete(api_path("networks", NET))


def port_of(lab, container):
    found = [p for p in lab.api.get(api_path("ports") + f"?network={NET}")
             if p["external_ids"].get("container") == container]
    return found[0] if found else None


def assert_nothing_left(lab, port, host):
    """No Weft port, OVS port, veth or flow is left of `port` (the host's and the other's OVS)."""
    device = host_device(port["name"])
    assert port["name"] not in [p["name"] for p in lab.api.get(api_path("ports") + f"?network={NET}")]
    assert device not in lab.exec(host, "ovs-vsctl", "list-ports", "br-int").stdout.split()
    assert lab.exec(host, "ip", "link", "show", device, check=False).returncode != 0
    for h in ("h1", "h2"):  # the flows go after the NB delete, which is all DEL waits for
        eventually(lambda: port["mac"] not in lab.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows",
                                                      "br-int").stdout, timeout=10, what=f"no flow on {h} with {port['mac']}")


def serve(lab, host, name, file):
    """A podman container on host serving a 1 MiB random file over HTTP; (its port, the file's md5)."""
    lab.podman(host, "run", "-d", "--name", name, "--network", NET, IMAGE, "sh", "-c",
               f"dd if=/dev/urandom of=/var/www/{file}.tmp bs=1024 count=1024 2>/dev/null && "
               f"mv /var/www/{file}.tmp /var/www/{file} && httpd -f -p 80")
    eventually(lambda: lab.podman(host, "exec", name, "test", "-f", f"/var/www/{file}", check=False).returncode == 0,
             what=f"{name}'s file")
    return port_of(lab, name), lab.podman(host, "exec", name, "md5sum", f"/var/www/{file}").stdout.split()[0]


def test_podman_containers_on_two_hosts_ping_and_send_files_over_tcp(lab):
    web, web_md5 = serve(lab, "h1", "pweb", "big")
    sink, sink_md5 = serve(lab, "h2", "psink", "other")
    assert web["up"] and web["host"] == "h1" and web["name"].startswith("pweb-")
    assert web["external_ids"]["owner"] == "cni" and len(web["external_ids"]["cni.containerid"]) == 64
    # The container's eth0 is the port's: its MAC, address and the network's gateway.
    inside = lab.podman("h1", "exec", "pweb", "ip", "addr", "show", "eth0").stdout
    assert web["mac"] in inside and f"{web['ip']}/24" in inside
    assert "default via 10.80.0.1" in lab.podman("h1", "exec", "pweb", "ip", "route").stdout
    # A client on h2 pings the server on h1 and fetches its file.
    client = ("ip -4 -o addr show eth0 | grep -o 'inet [0-9.]*' && ping -c1 -W2 {ip} >/dev/null && "
              "echo ping ok && wget -qO- http://{ip}/big | md5sum")
    out = lab.podman("h2", "run", "--rm", "--name", "pclient", "--network", NET, IMAGE, "sh", "-c",
                     client.format(ip=web["ip"])).stdout.split()
    assert out[2:] == ["ping", "ok", web_md5, "-"]
    assert port_of(lab, "pclient") is None  # the --rm container's port went with it (podman's DEL)
    # The next client, on h1, given pclient's address: the server still holds pclient's neighbour
    # entry (Weft answers ARP itself, the server never hears the new client's), and the address's
    # MAC is the same again (controller.api._port_mac), so it is right and the fetch works at once.
    again = lab.podman("h1", "run", "--rm", "--network", f"{NET}:ip={out[1]}", IMAGE, "sh", "-c",
                       client.format(ip=web["ip"])).stdout.split()
    assert again == out
    # Back the other way: the container on h1 fetches the file of the one on h2.
    got = lab.podman("h1", "exec", "pweb", "sh", "-c", f"wget -qO- http://{sink['ip']}/other | md5sum").stdout
    assert got.split()[0] == sink_md5
    lab.podman("h2", "rm", "-f", "-t", "0", "psink")
    lab.podman("h1", "rm", "-f", "-t", "0", "pweb")
    assert_nothing_left(lab, web, "h1")
    assert_nothing_left(lab, sink, "h2")


def test_podman_static_ip_and_mac(lab):
    lab.podman("h1", "run", "-d", "--name", "pstatic", "--network", f"{NET}:ip=10.80.0.77,mac=02:ab:00:00:00:77",
               IMAGE, "sleep", "3600")
    port = port_of(lab, "pstatic")
    assert (port["ip"], port["mac"]) == ("10.80.0.77", "02:ab:00:00:00:77")
    assert "02:ab:00:00:00:77" in lab.podman("h1", "exec", "pstatic", "ip", "link", "show", "eth0").stdout
    lab.podman("h1", "rm", "-f", "-t", "0", "pstatic")
    assert_nothing_left(lab, port, "h1")


def test_a_container_that_exits_gives_its_port_back(lab):
    """podman's cleanup (conmon's exit command) runs the DEL when the container exits by itself."""
    lab.podman("h2", "run", "-d", "--name", "pshort", "--network", NET, IMAGE, "sleep", "1")
    eventually(lambda: lab.podman("h2", "inspect", "-f", "{{.State.Status}}", "pshort").stdout.strip() == "exited",
             what="the container to exit")
    eventually(lambda: port_of(lab, "pshort") is None, what="the port to go")
    lab.podman("h2", "rm", "pshort")


def test_a_network_made_later_is_there_for_podman(lab):
    """Every podman call first writes a conflist per Weft network (and removes those gone)."""
    lab.api.post("/v1/networks", {"name": "plate", "cidr": "10.81.0.0/24"})
    try:
        out = lab.podman("h1", "run", "--rm", "--network", "plate", IMAGE, "ip", "-4", "addr", "show", "eth0").stdout
        assert "10.81.0.2/24" in out
    finally:
        lab.api.delete(api_path("networks", "plate"))
    assert "plate" not in lab.podman("h1", "network", "ls", "--format", "{{.Name}}").stdout.split()
    res = lab.podman("h1", "run", "--rm", "--network", "plate", IMAGE, "true", check=False)
    assert res.returncode != 0 and "plate" in res.stderr


def test_podman_and_docker_containers_on_one_weft_network(lab):
    """A Docker network of the weft driver mapped onto the same Weft network (weft docker-plugin,
    Weft's IPAM so the addresses never clash): Docker and podman containers reach each other, on one
    host and across hosts, by ping and over TCP."""
    docker_made = []
    try:
        for host in ("h1", "h2"):
            lab.docker(host, "network", "create", "-d", "weft", "--ipam-driver", "weft", "--subnet", CIDR,
                       "-o", f"weft.network={NET}", "dblue")
            docker_made.append((host, "network", "dblue"))
        web, web_md5 = serve(lab, "h2", "pweb2", "big")  # podman on h2
        docker_made.append(("h1", "container", "dweb"))
        lab.docker("h1", "run", "-d", "--net", "dblue", "--name", "dweb", IMAGE, "sh", "-c",
                   "dd if=/dev/urandom of=/var/www/d.tmp bs=1024 count=1024 2>/dev/null && "
                   "mv /var/www/d.tmp /var/www/d && httpd -f -p 80")
        dweb_ip = lab.docker("h1", "inspect", "-f", '{{(index .NetworkSettings.Networks "dblue").IPAddress}}',
                             "dweb").stdout.strip()
        dport = [p for p in lab.api.get(api_path("ports") + f"?network={NET}")
                 if p["external_ids"].get("owner") == "docker"]
        assert [p["ip"] for p in dport] == [dweb_ip]
        eventually(lambda: lab.docker("h1", "exec", "dweb", "test", "-f", "/var/www/d", check=False).returncode == 0,
                 what="dweb's file")
        d_md5 = lab.docker("h1", "exec", "dweb", "md5sum", "/var/www/d").stdout.split()[0]
        # Docker (h1) -> podman (h2), across hosts; then podman on h1 and on h2 -> Docker (h1).
        got = lab.docker("h1", "exec", "dweb", "sh", "-c",
                         f"ping -c1 -W2 {web['ip']} >/dev/null && wget -qO- http://{web['ip']}/big | md5sum")
        assert got.stdout.split()[0] == web_md5
        for host in ("h1", "h2"):
            out = lab.podman(host, "run", "--rm", "--network", NET, IMAGE, "sh", "-c",
                             f"ping -c1 -W2 {dweb_ip} >/dev/null && wget -qO- http://{dweb_ip}/d | md5sum").stdout
            assert out.split()[0] == d_md5, host
        lab.podman("h2", "rm", "-f", "-t", "0", "pweb2")
        assert_nothing_left(lab, web, "h2")
    finally:
        for host, kind, name in reversed(docker_made):  # the container, then h2's network, then h1's
            lab.docker(host, *(("rm", "-f") if kind == "container" else ("network", "rm")), name, check=False)
    assert [p for p in lab.api.get(api_path("ports") + f"?network={NET}")] == []
    assert lab.api.get(api_path("networks", NET))["name"] == NET  # a network Docker only joined stays
