"""weft-cni called exactly as a runtime calls it: CNI_* in the environment, the configuration on
stdin, run inside the lab host's namespace with its OVS environment; the containers are namespaces
the tests make. Checked as a user would: the result, packets, `ovs-vsctl`/`ovs-ofctl` on the host."""
import itertools
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weft import lab as weftlab
from weft.attach import host_device
from weft.client import path as api_path
from weft.testing import eventually

NET, CIDR, GATEWAY = "cniblue", "10.60.0.0/24", "10.60.0.1"
PLUGIN = [sys.executable, "-m", "weft.cni"]
_names = itertools.count(1)


class Call:
    def __init__(self, res):
        self.rc, self.stderr = res.returncode, res.stderr.decode(errors="replace")
        self.out = json.loads(res.stdout) if res.stdout.strip() else None

    def __repr__(self):
        return f"rc={self.rc} out={self.out} stderr={self.stderr[-500:]}"


def cni(lab, host, command, config, cid=None, netns=None, ifname="eth0", args=None, path="/usr/lib/cni",
        env=None):
    """One plugin process on `host`, as a runtime runs it."""
    argv, environ = weftlab.target_cmd(lab.name, host, PLUGIN)
    environ = {k: v for k, v in environ.items() if not k.startswith("CNI_")}
    environ.update({"CNI_COMMAND": command, "CNI_PATH": path, **(env or {})})
    for key, value in (("CNI_CONTAINERID", cid), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname), ("CNI_ARGS", args)):
        if value is not None:
            environ[key] = value
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    return Call(subprocess.run(argv, env=environ, input=raw, capture_output=True, timeout=90))


def config(lab, version="1.0.0", **extra):
    return {"cniVersion": version, "name": NET, "type": "weft", "api": lab.info["api"], **extra}


@pytest.fixture(scope="module")
def lab(make_lab):
    lab = make_lab()
    lab.api.post("/v1/networks", {"name": NET, "cidr": CIDR})
    yield lab
    for port in lab.api.get(api_path("ports") + f"?network={NET}"):  # a failed test's leftovers
        lab.api.delete(api_path("ports", port["name"]) + "?force=true")
    lab.api.delete(api_path("networks", NET))


@pytest.fixture
def container(lab):
    """container(host) -> a new empty namespace on host: {"name", "host", "netns" (its path)}."""
    made = []

    def make(host="h1"):
        name = f"cni{next(_names)}"
        created = lab.container(name, host)
        made.append(name)
        return {"name": name, "host": host, "netns": f"/run/netns/{created['netns']}"}
    yield make
    for name in made:
        if name in lab.info["containers"]:  # (a test may have deleted it, as a crash would)
            weftlab.container_del(lab.name, name)


def new_id():
    return secrets.token_hex(32)  # 64 hex digits, as podman, containerd and CRI-O make them


def ports_of(lab, cid):
    return [p for p in lab.api.get(api_path("ports") + f"?network={NET}")
            if p["external_ids"].get("cni.containerid") == cid]


def add(lab, c, cid=None, version="1.0.0", args="IgnoreUnknown=1", **extra):
    cid = cid or new_id()
    call = cni(lab, c["host"], "ADD", config(lab, version, **extra), cid, c["netns"], args=args)
    assert call.rc == 0, call
    c.update(cid=cid, result=call.out, ip=call.out["ips"][0]["address"].split("/")[0])
    (c["port"],) = ports_of(lab, cid)
    return call.out


def delete(lab, c, version="1.0.0", **extra):
    call = cni(lab, c["host"], "DEL", config(lab, version, prevResult=c.get("result"), **extra), c["cid"],
               c["netns"], args="IgnoreUnknown=1")
    assert (call.rc, call.out) == (0, None), call


def assert_gone(lab, c):
    """No NB port, no OVS port, no host veth and no flow is left of c's attachment (the flows go
    after DEL has answered: it returns once the NB has the delete)."""
    name, mac = c["port"]["name"], c["port"]["mac"]
    assert ports_of(lab, c["cid"]) == []
    device = host_device(name)
    for host in ("h1", "h2"):
        assert device not in lab.exec(host, "ovs-vsctl", "list-ports", "br-int").stdout.split()
        assert lab.exec(host, "ip", "link", "show", device, check=False).returncode != 0
        eventually(lambda: mac not in lab.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout,
                   timeout=10, what=f"no flow on {host} with {mac}")


def link(lab, c, ifname="eth0"):
    out = lab.exec(c["name"], "ip", "-j", "addr", "show", ifname, check=False)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_add_check_del(lab, container, version):
    c1, c2 = container("h1"), container("h2")
    result = add(lab, c1, version=version, args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
                                                "K8S_POD_INFRA_CONTAINER_ID=x;K8S_POD_UID=u")
    add(lab, c2, version=version)
    port = c1["port"]
    # The result, in the version asked for, says what the container got.
    assert result["cniVersion"] == version
    host_if, sandbox = result["interfaces"]
    eth0 = link(lab, c1)
    assert sandbox["name"] == "eth0" and sandbox["sandbox"] == c1["netns"]
    assert sandbox["mac"] == eth0["address"] == port["mac"]
    assert host_if["name"] == host_device(port["name"]) and "sandbox" not in host_if
    assert ("mtu" in sandbox) == (version == "1.1.0") and eth0["mtu"] == port["mtu"]
    ip = result["ips"][0]
    assert ip["address"] == f"{port['ip']}/24" and ip["gateway"] == GATEWAY and ip["interface"] == 1
    assert ("version" in ip) == (version == "0.4.0")
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": GATEWAY}]
    # Weft's resolver, for the runtime to write into the container's resolv.conf.
    assert result["dns"] == {"nameservers": [GATEWAY], "search": [f"{NET}.svc.weft", f"{NET}.weft"]}
    assert [a["local"] for a in eth0["addr_info"] if a["family"] == "inet"] == [port["ip"]]
    assert f"default via {GATEWAY} dev eth0" in lab.exec(c1["name"], "ip", "route").stdout
    # A Weft port named after the pod, marked as the CNI's, plugged into h1's br-int.
    assert port["name"].startswith("default.web-0-") and port["up"] and port["host"] == "h1"
    assert port["external_ids"] == {"owner": "cni", "cni.network": NET, "cni.containerid": c1["cid"],
                                    "cni.ifname": "eth0", "container": "default/web-0"}
    assert c2["port"]["name"].startswith(c2["cid"][:12] + "-")
    iface = lab.exec("h1", "ovs-vsctl", "get", "Interface", host_device(port["name"]), "external_ids:iface-id")
    assert iface.stdout.strip().strip('"') == port["name"]
    assert lab.ping(c1["name"], c2["ip"]) and lab.ping(c2["name"], c1["ip"])  # across hosts

    for c in (c1, c2):
        check = cni(lab, c["host"], "CHECK", config(lab, version, prevResult=c["result"]), c["cid"], c["netns"],
                    args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0" if c is c1 else None)
        assert (check.rc, check.out) == (0, None), check
    for c in (c1, c2):
        delete(lab, c, version)
        assert link(lab, c) is None  # the container's end went with the host's
        assert_gone(lab, c)
        delete(lab, c, version)  # again: still success


def test_tcp_across_hosts(lab, container):
    """The result is a working interface for TCP too: checksum offload is off on the userspace datapath."""
    c1, c2 = container("h1"), container("h2")
    add(lab, c1)
    add(lab, c2)
    features = lab.exec(c1["name"], "ethtool", "-k", "eth0").stdout
    assert "tx-checksumming: off" in features
    report = lab.iperf_report(c1["name"], c2["name"], seconds=1, dst_ip=c2["ip"])
    assert report["sum_received"]["bytes"] > 100_000, report["sum_received"]
    for c in (c1, c2):
        delete(lab, c)


def test_cni_args_ip_and_mac(lab, container):
    c = container()
    add(lab, c, args="IgnoreUnknown=1;IP=10.60.0.77;MAC=02:AB:00:00:00:77;K8S_POD_NAME=db")
    assert (c["port"]["ip"], c["port"]["mac"]) == ("10.60.0.77", "02:ab:00:00:00:77")
    assert c["port"]["name"].startswith("db-") and c["port"]["external_ids"]["container"] == "db"
    assert link(lab, c)["address"] == "02:ab:00:00:00:77"
    delete(lab, c)
    # The `ips` and `mac` capabilities (runtimeConfig) do the same.
    c2 = container()
    add(lab, c2, runtimeConfig={"ips": ["10.60.0.78/24"], "mac": "02:ab:00:00:00:78"})
    assert (c2["port"]["ip"], c2["port"]["mac"]) == ("10.60.0.78", "02:ab:00:00:00:78")
    delete(lab, c2)


def test_labels_from_args(lab, container):
    """`args.cni.labels` (CNI's conventions) are the port's labels from its creation, so a policy's
    podSelector picks the container from its first packet; a selector lists it."""
    c = container()
    labels = [{"key": "app", "value": "web"}, {"key": "example.com/tier", "value": "front"}]
    conf = config(lab, args={"cni": {"labels": labels}})  # (add()'s `args` is CNI_ARGS)
    cid = new_id()
    call = cni(lab, "h1", "ADD", conf, cid, c["netns"], args="IgnoreUnknown=1")
    assert call.rc == 0, call
    (port,) = ports_of(lab, cid)
    assert port["labels"] == {"app": "web", "example.com/tier": "front"}
    picked = lab.api.get(api_path("ports") + f"?network={NET}&selector=example.com/tier%3Dfront,app")
    assert [p["name"] for p in picked] == [port["name"]]
    c.update(cid=cid, port=port, result=call.out)
    delete(lab, c, args={"cni": {"labels": labels}})
    assert_gone(lab, c)


def test_config_defaults_from_the_environment(lab, container):
    """Without `api` the plugin finds the controller as `weft` does (WEFT_API in the runtime's env)."""
    c = container()
    conf = {**config(lab), "network": NET, "name": "other-name"}  # a CNI name other than the network's
    del conf["api"]
    call = cni(lab, "h1", "ADD", conf, new_id(), c["netns"])
    assert call.rc == 0, call
    (port,) = [p for p in lab.api.get(api_path("ports") + f"?network={NET}")
               if p["external_ids"]["cni.network"] == "other-name"]
    c.update(cid=port["external_ids"]["cni.containerid"], port=port)
    call = cni(lab, "h1", "DEL", conf, c["cid"], c["netns"])
    assert call.rc == 0, call
    assert_gone(lab, c)


def test_del_is_idempotent(lab, container):
    # Never added: success. Without CNI_NETNS: success.
    for netns in ("/run/netns/does-not-exist", None):
        call = cni(lab, "h1", "DEL", config(lab), new_id(), netns)
        assert (call.rc, call.out) == (0, None), call
    # The namespace deleted before DEL (a crashed container): the port, OVS port and veth still go.
    c = container()
    add(lab, c)
    weftlab.container_del(lab.name, c["name"])
    delete(lab, c)
    assert_gone(lab, c)
    delete(lab, c)
    # The NB port deleted behind the plugin's back: DEL removes what is left on the host.
    c = container()
    add(lab, c)
    lab.api.delete(api_path("ports", c["port"]["name"]) + "?force=true")  # unplugs; the veth stays
    assert lab.exec("h1", "ip", "link", "show", host_device(c["port"]["name"]), check=False).returncode == 0
    delete(lab, c)
    assert_gone(lab, c)


def test_check_finds_what_is_wrong(lab, container):
    c = container()
    add(lab, c)
    prev = c["result"]
    lab.exec(c["name"], "ip", "addr", "flush", "dev", "eth0")
    call = cni(lab, "h1", "CHECK", config(lab, prevResult=prev), c["cid"], c["netns"])
    assert call.rc == 1 and call.out["code"] == 102, call
    assert f"eth0 does not have {c['ip']}/24" in call.out["details"]
    assert f"no default route via {GATEWAY}" in call.out["details"]
    # A prevResult that is not this port's: said so.
    other = json.loads(json.dumps(prev).replace(c["port"]["mac"], "02:00:00:00:00:99"))
    call = cni(lab, "h1", "CHECK", config(lab, prevResult=other), c["cid"], c["netns"])
    assert call.out["code"] == 102 and "MAC" in call.out["details"], call
    call = cni(lab, "h1", "CHECK", config(lab), c["cid"], c["netns"])
    assert call.out["code"] == 7 and "prevResult" in call.out["msg"], call
    call = cni(lab, "h1", "CHECK", config(lab, prevResult=prev), new_id(), c["netns"])
    assert call.out["code"] == 102 and "no Weft port" in call.out["msg"], call
    delete(lab, c)


def test_errors(lab, container):
    """Every error a runtime can get from a lab, with its code, a message naming the problem, and
    nothing left behind."""
    c = container()
    host_netns = f"/run/netns/{lab.info['hosts']['h1']['netns']}"
    cases = [
        ("no such Weft network", config(lab, network="nosuch"), {}, 7, "no Weft network named 'nosuch'"),
        ("netns gone", config(lab), {"netns": "/run/netns/nosuch"}, 3, "/run/netns/nosuch does not exist"),
        ("the plugin's own netns", config(lab), {"netns": host_netns}, 4, "the plugin's own network namespace"),
        ("controller unreachable", config(lab, api=f"unix:{lab.dir}/nosuch.sock"), {}, 11,
         "not available"),
        ("address out of the network", config(lab), {"args": "IP=10.61.0.5"}, 100, "refused"),
        ("IPAM plugin missing", config(lab, ipam={"type": "nosuch-ipam"}), {}, 7, "'nosuch-ipam' not found"),
        ("CNI_PATH missing for IPAM", config(lab, ipam={"type": "host-local"}), {"path": ""}, 4, "CNI_PATH"),
        ("unknown CNI_ARGS", config(lab), {"args": "FOO=bar"}, 4, "unknown argument 'FOO'"),
        ("CNI_NETNS missing", config(lab), {"netns": None}, 4, "CNI_NETNS"),
        ("undecodable", b"{not json", {}, 6, "not JSON"),
        ("old version", config(lab, "0.3.1"), {}, 1, "incompatible CNI version 0.3.1"),
        ("unsupported field", config(lab, mtu=9000), {}, 2, "unsupported field mtu: 9000"),
        ("bad label", config(lab, args={"cni": {"labels": [{"key": "app", "value": "a b"}]}}), {}, 7,
         "args.cni.labels.app: 'a b' is not a valid label value"),
    ]
    for what, conf, override, code, words in cases:
        cid = new_id()
        kwargs = {"cid": cid, "netns": c["netns"], **override}
        call = cni(lab, "h1", "ADD", conf, **kwargs)
        assert call.rc != 0 and call.out["code"] == code and words in call.out["msg"] + call.out.get("details", ""), \
            (what, call)
        assert not call.stderr.strip() or "Traceback" not in call.stderr, (what, call)
        assert ports_of(lab, cid) == [] and link(lab, c) is None, what
    # An address another port has: refused by Weft (100); the same interface twice: refused here (101).
    add(lab, c)
    c2 = container()
    call = cni(lab, "h1", "ADD", config(lab), new_id(), c2["netns"], args=f"IP={c['ip']}")
    assert call.out["code"] == 100 and "already used" in call.out["details"], call
    call = cni(lab, "h1", "ADD", config(lab), new_id(), c["netns"])
    assert call.out["code"] == 101 and "already has an interface named eth0" in call.out["details"], call
    assert len(lab.api.get(api_path("ports") + f"?network={NET}")) == 1
    delete(lab, c)


def wait_status(lab, conf, host="h1", timeout=15):
    """STATUS until it answers 0 (br-int's is_connected in OVSDB lags its connection by up to 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        call = cni(lab, host, "STATUS", conf)
        if call.rc == 0 or time.monotonic() > deadline:
            return call
        time.sleep(0.5)


def test_status(lab, make_lab):
    call = wait_status(lab, config(lab, "1.1.0"))
    assert (call.rc, call.out) == (0, None), call
    call = cni(lab, "h1", "STATUS", config(lab, "1.1.0", api=f"unix:{lab.dir}/nosuch.sock"))
    assert call.out["code"] == 50 and "controller is not available" in call.out["msg"], call
    call = cni(lab, "h1", "STATUS", config(lab, "1.1.0", ovsdb=f"unix:{lab.dir}/nosuch.sock"))
    assert call.out["code"] == 50 and "Open vSwitch is not available" in call.out["msg"], call
    # A host that never joined (its own OVS, no Weft br-int), then one whose br-int is Weft's but
    # not connected to the controller: 50, then 51.
    bare = make_lab(hosts=1, controller=False)
    ovsdb = f"unix:{bare.info['hosts']['h1']['ovs_rundir']}/db.sock"
    call = cni(lab, "h1", "STATUS", config(lab, "1.1.0", ovsdb=ovsdb))
    assert call.out["code"] == 50 and "has not joined" in call.out["msg"], call
    bare.exec("h1", "ovs-vsctl", "add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev",
              "external_ids:weft-owner=weft", "--", "set-controller", "br-int", "tcp:127.0.0.1:9")
    try:
        call = cni(lab, "h1", "STATUS", config(lab, "1.1.0", ovsdb=ovsdb))
        assert call.out["code"] == 51 and "not connected" in call.out["msg"], call
    finally:
        bare.exec("h1", "ovs-vsctl", "del-br", "br-int")


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc(lab, container, key):
    """GC removes this host's CNI ports whose attachment is not in the list, and only those."""
    keep, stale, elsewhere = container("h1"), container("h1"), container("h2")
    for c in (keep, stale, elsewhere):
        add(lab, c, version="1.1.0")
    other = lab.api.post("/v1/ports", {"name": "not-cni", "network": NET})  # not the plugin's
    try:
        call = cni(lab, "h1", "GC", config(lab, "1.1.0", **{key: [{"containerID": keep["cid"], "ifname": "eth0"}]}))
        assert (call.rc, call.out) == (0, None), call
        assert_gone(lab, stale)
        assert ports_of(lab, keep["cid"]) and ports_of(lab, elsewhere["cid"])
        assert lab.api.get(api_path("ports", other["name"]))
        assert lab.ping(keep["name"], elsewhere["ip"])
    finally:
        lab.api.delete(api_path("ports", other["name"]))
    for c in (keep, elsewhere):
        delete(lab, c, "1.1.0")


def test_ipam_host_local(lab, container):
    """With `ipam`, the address comes from the IPAM plugin (the reference host-local), run the
    standard way, and is released on DEL and when the attach fails."""
    data_dir = lab.dir / "cni-ipam"
    ipam = {"type": "host-local", "dataDir": str(data_dir),
            "ranges": [[{"subnet": CIDR, "rangeStart": "10.60.0.200", "rangeEnd": "10.60.0.210"}]]}
    reserved = data_dir / NET / "10.60.0.200"
    c = container()
    add(lab, c, ipam=ipam)
    assert c["ip"] == c["port"]["ip"] == "10.60.0.200" and reserved.read_text().startswith(c["cid"])
    call = cni(lab, "h1", "CHECK", config(lab, ipam=ipam, prevResult=c["result"]), c["cid"], c["netns"])
    assert call.rc == 0, call
    delete(lab, c, ipam=ipam)
    assert_gone(lab, c)
    assert not reserved.exists()
    # An address Weft refuses (outside the Weft network): nothing is left, the reservation neither.
    outside = {**ipam, "ranges": [[{"subnet": "10.61.0.0/24"}]]}
    cid = new_id()
    call = cni(lab, "h1", "ADD", config(lab, ipam=outside), cid, c["netns"])
    assert call.out["code"] == 100, call
    assert ports_of(lab, cid) == [] and not [p for p in (data_dir / NET).iterdir() if p.name.startswith("10.")]
    # The reference plugins here (1.1.1) know CNI 1.0.0 at most: their error is passed on.
    call = cni(lab, "h1", "ADD", config(lab, "1.1.0", ipam=ipam), new_id(), c["netns"])
    assert call.out["code"] == 1 and call.out["msg"].startswith("IPAM plugin host-local:"), call


def test_cni_config_conflist(lab, container):
    """`weft cni-config` prints a conflist; what a runtime derives from it works as a configuration."""
    out = lab.weft("cni-config", NET, "--api", lab.info["api"]).stdout
    conflist = json.loads(out)
    assert conflist["name"] == NET and conflist["cniVersion"] == "1.0.0"
    (plugin,) = conflist["plugins"]
    assert plugin == {"type": "weft", "network": NET, "api": lab.info["api"]}
    c = container()
    call = cni(lab, "h1", "ADD", {**plugin, "cniVersion": conflist["cniVersion"], "name": conflist["name"]},
               new_id(), c["netns"])
    assert call.rc == 0, call
    (port,) = lab.api.get(api_path("ports") + f"?network={NET}")
    c.update(cid=port["external_ids"]["cni.containerid"], port=port, result=call.out)
    delete(lab, c)
    res = lab.weft("cni-config", "nosuch", check=False)
    assert res.returncode == 1 and res.stderr.strip() == "weft: error: no network named 'nosuch'"


def test_concurrent_adds(lab, container):
    """A runtime may start several containers at once: each ADD gets its own address and port."""
    import concurrent.futures
    cs = [container("h1") for _ in range(5)]
    with concurrent.futures.ThreadPoolExecutor(len(cs)) as pool:
        list(pool.map(lambda c: add(lab, c), cs))
    assert len({c["ip"] for c in cs}) == len(cs)
    assert all(lab.ping(c["name"], cs[0]["ip"]) for c in cs[1:])
    with concurrent.futures.ThreadPoolExecutor(len(cs)) as pool:
        list(pool.map(lambda c: delete(lab, c), cs))
    for c in cs:
        assert_gone(lab, c)


def test_tcp_api_with_a_token_file(tmp_path):
    """`api` may be the controller's TCP listener; `token_file` is then its bearer token."""
    sys.path.insert(0, str(Path(__file__).parent))
    from running_controller import running_controller
    with running_controller("weft-cni-tcp-", tcp=True) as ctl:
        conf = {"cniVersion": "1.1.0", "name": "x", "type": "weft", "api": ctl.url,
                "ovsdb": f"unix:{tmp_path}/no-ovsdb.sock"}
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": weftlab.REPO_ROOT.as_posix(), "CNI_COMMAND": "STATUS"}

        def status(config):
            res = subprocess.run(PLUGIN, input=json.dumps(config).encode(), env=env, capture_output=True, timeout=60)
            return Call(res)
        call = status(conf)  # no token: refused by the API
        assert call.out["code"] == 50 and "configuration's token_file" in call.out["details"], call
        call = status({**conf, "token_file": str(ctl.token_file)})  # the API answers; this host has no OVS
        assert call.out["code"] == 50 and "Open vSwitch is not available" in call.out["msg"], call
        call = status({**conf, "token_file": str(tmp_path / "nosuch")})
        assert call.out["code"] == 50 and "cannot read the token file" in call.out["details"], call
