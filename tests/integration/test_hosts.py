"""Hosts joined over OVSDB, checked on the hosts themselves with ovs-vsctl/ovs-ofctl (issue 2)."""
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from weft import lab as weftlab
from weft.testing import Controller, eventually

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def lab3(make_lab):
    return make_lab(hosts=3)


def vsctl(lab, host, *args):
    return lab.exec(host, "ovs-vsctl", *args).stdout.strip()


def host_config(lab, host):
    """What joining configures, read from the host's own OVSDB (volatile status columns left out)."""
    cols = "--columns=_uuid,name,fail_mode,datapath_type,protocols,other_config,external_ids,controller,ports"
    iface_cols = "--columns=_uuid,name,type,options,ofport_request,ofport"
    return (vsctl(lab, host, "--format=json", cols, "list", "Bridge", "br-int"),
            vsctl(lab, host, "--format=json", iface_cols, "list", "Interface", "weft-geneve"),
            vsctl(lab, host, "--format=json", "--columns=_uuid,target", "list", "Controller"))


def test_every_host_has_br_int_with_geneve_port_and_connected_controller(lab3):
    for host in ("h1", "h2", "h3"):
        assert vsctl(lab3, host, "get", "Bridge", "br-int", "fail_mode") == "secure"
        assert vsctl(lab3, host, "get", "Bridge", "br-int", "datapath_type") == "netdev"
        assert "OpenFlow13" in vsctl(lab3, host, "get", "Bridge", "br-int", "protocols")
        assert vsctl(lab3, host, "get", "Interface", "weft-geneve", "type") == "geneve"
        assert vsctl(lab3, host, "get", "Interface", "weft-geneve", "options") == '{key=flow, remote_ip=flow}'
        assert vsctl(lab3, host, "get", "Interface", "weft-geneve", "ofport") == "65000"
        assert vsctl(lab3, host, "get-controller", "br-int") == f"unix:{lab3.info['hosts'][host]['ovs_rundir']}/ctl.sock"
        # Packet-ins to the controller are rate limited by vswitchd.
        limits = vsctl(lab3, host, "--columns=controller_rate_limit,controller_burst_limit", "--bare",
                       "list", "Controller")
        assert limits.split() == ["300", "70"], limits  # the DNS and reject meters' sums
        # And a controller that went away is called back every second, not after up to 8 s.
        assert vsctl(lab3, host, "--columns=max_backoff", "--bare", "list", "Controller") == "1000"
        # The switch itself answers OpenFlow 1.3 with the datapath id Weft gave it.
        show = lab3.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "show", "br-int").stdout
        assert "OFPT_FEATURES_REPLY (OF1.3)" in show
        # is_connected is refreshed by vswitchd every few seconds (notes, pitfall 6).
        eventually(lambda: vsctl(lab3, host, "--columns=is_connected", "--bare", "list", "Controller") == "true",
                   15, f"{host}'s controller connection")
    status = lab3.api.get("/v1/status")["hosts"]
    assert all(s["ovsdb_connected"] and s["openflow_connected"] and s["ready"] for s in status.values())


def test_the_bridge_is_left_alone_but_br_phy_is_not_touched(lab3):
    # br-phy (the lab's underlay bridge) is not Weft's: joining must not have changed it.
    assert vsctl(lab3, "h1", "get", "Bridge", "br-phy", "fail_mode") == "standalone"
    assert vsctl(lab3, "h1", "get", "Bridge", "br-phy", "controller") == "[]"


def test_joining_again_changes_nothing(lab3):
    h = lab3.info["hosts"]["h2"]
    before = host_config(lab3, "h2"), lab3.flow_cookies("h2")
    result = lab3.weft("host", "join", "h2", "--encap-ip", h["encap_ip"], "--ovsdb", h["ovsdb"],
                       "--datapath", "netdev", "--of-target", h["of_target"])
    assert result.returncode == 0
    time.sleep(1)  # give a (wrong) reconfiguration time to show
    assert (host_config(lab3, "h2"), lab3.flow_cookies("h2")) == before


def test_joining_with_other_settings_is_refused(lab3):
    h = lab3.info["hosts"]["h2"]
    result = lab3.weft("host", "join", "h2", "--encap-ip", "10.255.0.99", "--ovsdb", h["ovsdb"],
                       "--datapath", "netdev", check=False)
    assert result.returncode == 1
    assert "different settings" in result.stderr and "Traceback" not in result.stderr


def test_leave_removes_what_join_made_and_join_restores_it(lab3):
    h = lab3.info["hosts"]["h3"]
    lab3.weft("host", "leave", "h3")
    assert "br-int" not in vsctl(lab3, "h3", "list-br").split()
    assert vsctl(lab3, "h3", "--bare", "--columns=target", "list", "Controller") == ""
    assert "br-phy" in vsctl(lab3, "h3", "list-br").split()  # not Weft's: untouched
    assert "h3" not in lab3.api.get("/v1/status")["hosts"]
    lab3.weft("host", "join", "h3", "--encap-ip", h["encap_ip"], "--ovsdb", h["ovsdb"], "--datapath", "netdev",
              "--of-target", h["of_target"])
    eventually(lambda: lab3.api.get("/v1/hosts/h3")["status"]["ready"] and
               lab3.api.get("/v1/hosts/h3")["status"]["openflow_connected"], 15, "h3 to be ready again")
    assert vsctl(lab3, "h3", "get", "Interface", "weft-geneve", "type") == "geneve"


def test_lab_down_leaves_nothing_behind(make_lab):
    lab = make_lab(hosts=2, shared=False)
    info = lab.info
    pids = [entry["pid"] for entry in info["pids"]]
    namespaces = [h["netns"] for h in info["hosts"].values()] + [info["fabric"]["netns"]]
    lab.down()
    for pid in pids:
        assert not weftlab._alive(pid), f"pid {pid} survived lab down"
    for ns in namespaces:
        assert not os.path.exists(f"/run/netns/{ns}"), f"namespace {ns} survived lab down"
    assert not os.path.exists(info["dir"])
    # Nor any process that was started for it (recorded or not, e.g. the controller's NB server).
    leftovers = []
    for proc in os.listdir("/proc"):
        try:
            if proc.isdigit() and (info["dir"] + "/").encode() in open(f"/proc/{proc}/cmdline", "rb").read():
                leftovers.append(proc)
        except OSError:
            pass
    assert leftovers == []
    # The netdev datapath's tap devices lived in the hosts' namespaces; none leaked into ours.
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert "br-int" not in links and "br-phy" not in links


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port):
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    return [line.split()[3] for line in out.splitlines()]


def test_plain_ryu_manager_starts_listens_on_loopback_and_its_socket_only(tmp_path):
    """The standard launch, from outside the source tree, so the installed package (and its .pth
    eventlet fix) is what runs. With no options: the API on its unix socket only, OpenFlow on
    loopback only."""
    ctl = Controller(tmp_path, installed=True)
    try:
        status = ctl.api.get("/v1/status")
        assert status["nb"]["connected"] and status["nb"]["embedded"]
        assert _listening(ctl.ofp_port) == [f"127.0.0.1:{ctl.ofp_port}"]
        assert _listening(ctl.api_port) == []  # no TCP API unless --wsapi-port asks for it
        assert not (ctl.state_dir / "tokens").exists()  # and no token without a TCP listener
        nb_pid = int((ctl.state_dir / "nb.pid").read_text())
    finally:
        ctl.stop()
    # Stopping the controller stops its embedded NB server and removes its socket.
    deadline = time.monotonic() + 5
    while weftlab._alive(nb_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not weftlab._alive(nb_pid)
    assert not ctl.socket.exists()


def test_docker_compose_file_is_valid_and_runs_what_the_lab_runs():
    compose = os.path.join(REPO, "docker-compose.yml")
    result = subprocess.run(["docker-compose", "-f", compose, "config"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = open(compose).read()
    assert "tokens/admin, as token" not in text  # each host has a token of its own (test below)
    for command in ("ovsdb-server", "ovs-vswitchd", "ryu-manager", "controller.app", "host join", "--datapath"):
        assert command in text
    # The same secure defaults as the controller itself: nothing unauthenticated can change the network.
    services = yaml.safe_load(result.stdout)["services"]
    published = {name: sorted(p["target"] for p in service.get("ports", ())) for name, service in services.items()}
    assert published == {**dict.fromkeys(services, []), **dict.fromkeys(("controller", "c1", "c2"), [6653, 8443])}
    assert "tcp:" not in text  # no plain-TCP remote or target anywhere (ptcp:, tcp:)
    for secure in ("--ofp-ssl-listen-port", "--ca-certs", "api_tls_cert", "pssl:6640", "set-ssl",
                   "https://", "--token-file", "--ovsdb ssl:", "--of-target ssl:"):
        assert secure in text, secure


def compose_services(*options, **env):
    result = subprocess.run(["docker-compose", "-f", os.path.join(REPO, "docker-compose.yml"), *options, "config"],
                            capture_output=True, text=True, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_docker_compose_gives_each_host_an_api_token_of_its_own(tmp_path):
    """host-credentials, run for h1 and h2 (its command as compose gives it, on a directory of the
    test's for the weft-state volume): two tokens, named after their hosts, as the controller's
    TokenStore reads them; the hosts' join services use their copy, never the admin token."""
    from controller.http import TokenStore
    env = {"PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "PYTHONPATH": REPO}
    subprocess.run(["weft", "pki", "init", "--dir", str(tmp_path / "pki")], env=env, check=True, capture_output=True)
    secrets = {}
    for host in ("h1", "h2", "h1"):  # h1 again: its token is kept
        service = compose_services(HOST_NAME=host)["host-credentials"]
        assert service["environment"]["HOST_NAME"] == host
        command = service["command"].replace("$$", "$").replace("/var/lib/weft", str(tmp_path))
        result = subprocess.run(["sh", "-c", command], env={**env, "HOST_NAME": host}, capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
        token = tmp_path / "tokens" / f"host-{host}"
        assert os.stat(token).st_mode & 0o777 == 0o600
        assert (tmp_path / "pki" / "hosts" / f"{host}-cert.pem").exists()
        assert secrets.setdefault(host, token.read_text().strip()) == token.read_text().strip()
    assert os.stat(tmp_path / "tokens").st_mode & 0o777 == 0o700
    store = TokenStore(str(tmp_path / "tokens"))
    assert {host: store.lookup(secret) for host, secret in secrets.items()} == {
        "h1": ("host-h1", False), "h2": ("host-h2", False)}
    services = compose_services()
    for join in ("join", "join-ha"):
        assert "--token-file /etc/weft/token" in services[join]["command"] and "admin" not in services[join]["command"]
    assert "tokens/host-NAME as token" in open(os.path.join(REPO, "docker-compose.yml")).read()


@pytest.mark.parametrize("option,value,words", [
    ("underlay_mtu", "abc", ["underlay_mtu", "abc"]),
    ("underlay_mtu", "100", ["underlay_mtu", "out of range"]),
    ("nb_remote", "http://nb:6641", ["nb_remote", "not an OVSDB remote"]),
    ("of_target", "localhost", ["of_target", "not an OpenFlow target"]),
    ("api_socket", "api.sock", ["api_socket", "absolute path"]),
    ("api_socket_group", "no-such-group-here", ["api_socket_group", "no group"]),
    ("api_tls_cert", "/nonexistent/cert.pem", ["api_tls_cert", "api_tls_key"]),
    ("service_cidr", "10.96.0.1/16", ["service_cidr", "host bits", "10.96.0.0/16"]),
    ("service_cidr", "fd00::/108", ["service_cidr", "not an IPv4 network"]),
    ("dns_upstream", "192.0.2.53:99999", ["dns_upstream", "IP[:port]"]),
])
def test_bad_configuration_stops_the_controller_with_a_clear_message(tmp_path, option, value, words):
    ryu_manager = os.path.join(os.path.dirname(sys.executable), "ryu-manager")
    conf = tmp_path / "weft.conf"
    conf.write_text(f"[weft]\nstate_dir = {tmp_path}/state\napi_socket = {tmp_path}/api.sock\n{option} = {value}\n")
    result = subprocess.run([ryu_manager, "--ofp-tcp-listen-port", str(_free_port()), "--config-file", str(conf),
                             "controller.app"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": weftlab.source_pythonpath()})  # this tree's controller
    assert result.returncode == 1
    assert "weft: bad configuration" in result.stderr and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr
    assert not (tmp_path / "state" / "nb.pid").exists()  # it stopped before starting anything


def test_docker_compose_describes_the_clustered_deployment_over_ssl():
    compose = os.path.join(REPO, "docker-compose.yml")
    result = subprocess.run(["docker-compose", "-f", compose, "--profile", "ha", "config"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    members = [services[f"nb{i}"]["command"] for i in (1, 2, 3)]
    assert "create-cluster" in members[0] and all("join-cluster" in m for m in members[1:])
    assert all("--remote=pssl:6641" in m and "--ca-cert" in m and "MEMBER_IP:6643" in m for m in members)
    for controller in ("c1", "c2"):
        command = services[controller]["command"]
        assert "nb_remote = ssl:" in command and command.count(":6641") == 3
        assert f"CONTROLLER: {controller}" not in command  # given as the environment, not inlined
        assert services[controller]["environment"]["CONTROLLER"] == controller
    assert "--of-target ssl:" in services["join-ha"]["command"] and ",ssl:" in services["join-ha"]["command"]
