"""The lab itself: hosts, underlay, containers, exec, teardown. Controller behaviour is tested elsewhere;
these labs run without the controller (controller=False) except the join test's stand-in."""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weft import lab as weftlab
from weft import labcli


def _netns_inode(ns):
    return os.stat(f"/run/netns/{ns}").st_ino


def _proc_netns_inode(pid):
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def _alive(pid):
    return weftlab._alive(pid)


@pytest.fixture(scope="module")
def lab3(make_lab):
    return make_lab(hosts=3, controller=False)


def test_hosts_run_their_own_ovs(lab3):
    info = lab3.info
    assert sorted(info["hosts"]) == ["h1", "h2", "h3"]
    pids = {e["what"]: e["pid"] for e in info["pids"]}
    for host, h in info["hosts"].items():
        # Plain OVS tools in the host namespace address that host's own daemons...
        out = lab3.exec(host, "ovs-vsctl", "show").stdout
        assert "br-phy" in out and "datapath_type: netdev" in out
        assert "br-int" not in out  # created by the controller on join, not by the lab
        mac = lab3.exec(host, "ovs-vsctl", "get", "interface", "phy", "mac_in_use").stdout
        assert mac.strip().strip('"') == h["mac"]
        assert "phy" in lab3.exec(host, "ovs-appctl", "dpif/show").stdout  # ovs-appctl without -t
        # ...which run inside the host's namespace, from the host's own dir.
        for daemon in ("ovsdb-server", "ovs-vswitchd"):
            pid = pids[f"{host} {daemon}"]
            assert int(Path(h["ovs_rundir"], f"{daemon}.pid").read_text()) == pid
            assert _proc_netns_inode(pid) == _netns_inode(h["netns"])
        assert h["ovsdb"] == f"unix:{h['ovs_rundir']}/db.sock"
        # Pitfall 3: every other VTEP is pre-seeded.
        arp = lab3.exec(host, "ovs-appctl", "tnl/arp/show").stdout
        for other, o in info["hosts"].items():
            if other != host:
                assert o["encap_ip"] in arp and o["mac"] in arp


def test_underlay_between_vteps(lab3):
    hosts = lab3.info["hosts"]
    for src in hosts:
        for dst, d in hosts.items():
            if src != dst:
                assert lab3.ping(src, d["encap_ip"]), f"{src} cannot reach {dst}"
    # MTU 1600 end to end: a 1600-byte IP packet with DF passes, 1601 does not.
    assert lab3.exec("h1", "ping", "-c1", "-W2", "-M", "do", "-s", "1572", hosts["h3"]["encap_ip"])
    assert lab3.exec("h1", "ping", "-c1", "-W2", "-M", "do", "-s", "1573", hosts["h3"]["encap_ip"],
                     check=False).returncode != 0
    assert "mtu 1600" in lab3.exec("fabric", "ip", "link", "show", "br0").stdout


def test_info_and_env_shape(lab3):
    info = lab3.info
    assert info["name"] == lab3.name and info["api"] is None  # no controller in this lab
    for i, (host, h) in enumerate(sorted(info["hosts"].items()), 1):
        assert {"netns", "encap_ip", "ovs_rundir", "ovsdb"} <= set(h)
        assert h["netns"] == f"wl-{lab3.name}-{host}" and h["encap_ip"] == f"10.255.0.{i}"
    assert isinstance(info["containers"], dict)
    assert f"export WEFT_LAB={lab3.name}" in weftlab.env(lab3.name)
    assert weftlab.host_env(lab3.name, "h2")["OVS_RUNDIR"] == info["hosts"]["h2"]["ovs_rundir"]


def test_containers(lab3):
    c = lab3.container("web", "h2")
    assert c["host"] == "h2" and c["host_netns"] == f"wl-{lab3.name}-h2"
    assert lab3.info["containers"]["web"] == {"netns": c["netns"], "host": "h2"}
    assert "LOOPBACK,UP" in lab3.exec("web", "ip", "link", "show", "lo").stdout
    assert lab3.exec("web", "cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6").stdout.strip() == "1"
    with pytest.raises(weftlab.LabError, match="already exists"):
        lab3.container("web", "h1")
    with pytest.raises(weftlab.LabError, match="no host h9"):
        lab3.container("db", "h9")
    weftlab.container_del(lab3.name, "web")
    assert not os.path.exists(f"/run/netns/{c['netns']}") and "web" not in lab3.info["containers"]
    with pytest.raises(weftlab.LabError, match="no host or container web"):
        lab3.exec("web", "true")


def test_cli(lab3, capsys):
    parser = argparse.ArgumentParser(prog="weft")
    labcli.add_lab_commands(parser.add_subparsers(dest="command", required=True))

    def run(*argv):
        args = parser.parse_args(["lab", *argv])
        return args.func(args)

    weft_lab = [sys.executable, "-m", "weft.cli", "lab"]
    assert subprocess.run([*weft_lab, "exec", "--name", lab3.name, "h1", "--", "ovs-vsctl", "br-exists",
                           "br-phy"]).returncode == 0
    assert subprocess.run([*weft_lab, "exec", "--name", lab3.name, "h1", "ovs-vsctl", "br-exists",
                           "br-int"]).returncode == 2  # the command's own exit status
    assert run("info", "--name", lab3.name) == 0
    assert json.loads(capsys.readouterr().out)["name"] == lab3.name
    assert run("container", "add", "--name", lab3.name, "c9", "--host", "h3") == 0
    assert run("container", "del", "--name", lab3.name, "c9") == 0


def test_lab_exec_stopped_by_its_pid_stops_its_command(lab3):
    """`weft lab exec` becomes its command (as `ip netns exec` does), so the pid a script records is
    the command's: stopping it stops the command, and nothing is left listening."""
    def listening():
        return ":18765 " in lab3.exec("h1", "ss", "-Hltn").stdout
    proc = subprocess.Popen([sys.executable, "-m", "weft.cli", "lab", "exec", "--name", lab3.name, "h1", "--",
                             sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "18765"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not listening():
        assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
        time.sleep(0.1)
    assert "http.server" in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
    proc.terminate()
    assert proc.wait(timeout=10) == -signal.SIGTERM  # the command's own death, not a wrapper's status
    assert not listening()


def test_lab_exec_in_the_background_runs_until_the_lab_goes_down(make_lab):
    """`weft lab exec --background` leaves a server running, its output in the lab dir, and `weft lab
    down` stops it with the rest (a process in a deleted namespace would otherwise live on)."""
    lab = make_lab(hosts=1, controller=False, shared=False)
    lab.container("c1", "h1")
    weft_lab = [sys.executable, "-m", "weft.cli", "lab", "exec", "--name", lab.name, "--background"]
    result = subprocess.run([*weft_lab, "c1", "--", "socat", "TCP-LISTEN:18766,reuseaddr,fork", "SYSTEM:echo hi"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout == f"running in c1, output in {lab.info['dir']}/c1.log\n"
    deadline = time.monotonic() + 10
    while ":18766 " not in lab.exec("c1", "ss", "-Hltn").stdout:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    assert lab.exec("c1", "socat", "-", "TCP:127.0.0.1:18766").stdout == "hi\n"
    pids = [e["pid"] for e in lab.info["pids"] if e["what"] == "c1: socat"]
    # (socat forks a child per connection, with the same command line, until that child is done)
    deadline = time.monotonic() + 10
    while len(server := [int(p) for p in os.listdir("/proc")
                         if p.isdigit() and _cmdline(p).startswith("socat TCP-LISTEN:18766")]) > 1:
        assert time.monotonic() < deadline, f"more than one listening socat: {server}"
        time.sleep(0.1)
    assert len(pids) == 1 and len(server) == 1
    bad = subprocess.run([*weft_lab, "nowhere", "--", "true"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "no host or container nowhere" in bad.stderr
    lab.down()
    assert not any(_alive(pid) for pid in pids + server)


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_tcpdump_and_iperf_helpers(lab3):
    hosts = lab3.info["hosts"]
    with lab3.tcpdump("fabric", "br0", "icmp", count=2) as cap:
        assert lab3.ping("h1", hosts["h2"]["encap_ip"])
    assert len(cap.lines) == 2 and "echo request" in cap.text and "echo reply" in cap.text
    assert lab3.iperf("h2", "h3", seconds=1) > 1e6
    # the iperf3 server and tcpdump were recorded, and are gone
    for e in lab3.info["pids"]:
        if "iperf3" in e["what"] or "tcpdump" in e["what"]:
            assert not _alive(e["pid"])


def test_names_are_validated():
    for bad in ("", "Weft", "a" * 13, "1lab", "a/b"):
        with pytest.raises(weftlab.LabError, match="invalid lab name"):
            weftlab.down(bad)


def test_host_names_are_validated_before_anything_is_built():
    for hosts, problem in ((["s1", "br0"], "invalid lab host name 'br0'"), (["s1", "s-2"], "invalid lab host name"),
                           (["controller"], "invalid lab host name"), (["a" * 16], "invalid lab host name"),
                           (["s1", "s1"], "must be distinct"), ([], "a number or a list"), (0, "--hosts must be")):
        with pytest.raises(weftlab.LabError, match=re.escape(problem)):
            weftlab.up(f"t{os.getpid()}hn", hosts, controller=False)
        assert not weftlab.lab_dir(f"t{os.getpid()}hn").exists()


def test_down_removes_only_its_own(make_lab, lab3):
    lab = make_lab(hosts=2, controller=False, shared=False)
    lab.container("c1", "h1")
    info = lab.info
    namespaces = [h["netns"] for h in info["hosts"].values()] + [info["fabric"]["netns"], f"wl-{lab.name}-c-c1"]
    pids = [e["pid"] for e in info["pids"]]
    lab.down()
    assert not any(os.path.exists(f"/run/netns/{ns}") for ns in namespaces)
    assert not any(_alive(pid) for pid in pids)
    assert not Path(info["dir"]).exists()
    lab.down()  # idempotent
    # The other lab is untouched.
    assert all(_alive(e["pid"]) for e in lab3.info["pids"] if e["what"].endswith(("-server", "-vswitchd")))
    assert lab3.ping("h1", lab3.info["hosts"]["h3"]["encap_ip"])


def test_up_cleans_up_a_crashed_run(make_lab):
    lab = make_lab(hosts=2, controller=False, shared=False)
    with pytest.raises(weftlab.LabError, match="already up"):
        weftlab.up(lab.name, 2, controller=False)
    old = lab.info
    # Simulate a crash: one daemon dies, the record stays.
    victim = next(e["pid"] for e in old["pids"] if e["what"] == "h2 ovs-vswitchd")
    os.kill(victim, 9)
    deadline = time.monotonic() + 5
    while _alive(victim) and time.monotonic() < deadline:  # SIGKILL is delivered asynchronously
        time.sleep(0.01)
    new = weftlab.up(lab.name, 2, controller=False)
    assert not any(_alive(e["pid"]) for e in old["pids"])
    assert all(_alive(e["pid"]) for e in new["pids"])
    assert lab.ping("h2", new["hosts"]["h1"]["encap_ip"])
    lab.down()


# A stand-in for the controller, enough to exercise the lab's real join path (relays, POST /v1/hosts,
# status polling, teardown of the controller and relays) until the real one is tested by its own suite.
STAND_IN = r'''
import json, socket, subprocess, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
hosts, conns = {}, []
def openflow():
    srv = socket.create_server(("127.0.0.1", int(args["--ofp-tcp-listen-port"])))
    while True:
        c, _ = srv.accept(); c.sendall(bytes([4, 0, 0, 8, 0, 0, 0, 1])); conns.append(c)
threading.Thread(target=openflow, daemon=True).start()
class H(BaseHTTPRequestHandler):
    def reply(self, body, code=200):
        data = json.dumps(body).encode(); self.send_response(code)
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        if self.path == "/v1/status": return self.reply({"nb": {"connected": True}})
        h = hosts.get(self.path.rsplit("/", 1)[-1])
        if h is None: return self.reply({"error": "no such host"}, 404)
        self.reply({"name": h["name"], "status": {"ovsdb_connected": True,
                                                  "openflow_connected": len(conns) >= len(hosts)}})
    def do_POST(self):
        h = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        subprocess.run(["ovs-vsctl", "--db=" + h["ovsdb"], "add-br", "br-int", "--", "set", "bridge",
                        "br-int", "datapath_type=netdev", "--", "set-controller", "br-int", h["of_target"]],
                       check=True)
        hosts[h["name"]] = h; self.reply(h, 201)
class UnixServer(ThreadingHTTPServer):
    address_family = socket.AF_UNIX
    def server_bind(self): self.socket.bind(self.server_address)
    def get_request(self):
        sock, _ = self.socket.accept(); return sock, ("unix", 0)
conf = open(args["--config-file"]).read()
UnixServer(conf.split("api_socket = ")[1].split()[0], H).serve_forever()
'''


def test_join_path_with_stand_in_controller(make_lab, tmp_path, monkeypatch):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    monkeypatch.setattr(weftlab, "controller_argv", lambda ofp, conf, tls=None: [
        sys.executable, str(script), "--ofp-tcp-listen-port", str(ofp), "--config-file", str(conf)])
    lab = make_lab(hosts=2, controller=True, shared=False)
    info = lab.info
    assert info["api"] == f"unix:{info['dir']}/api.sock" and lab.api.get("/v1/status") == {"nb": {"connected": True}}
    assert f"export WEFT_API={info['api']}" in weftlab.env(lab.name)
    conf = Path(info["dir"], "weft.conf").read_text()
    assert f"state_dir = {info['dir']}/controller" in conf and "underlay_mtu = 1600" in conf
    assert f"api_socket = {info['dir']}/api.sock" in conf
    for host in ("h1", "h2"):
        assert lab.api.get(f"/v1/hosts/{host}")["status"]["openflow_connected"] is True
        target = lab.exec(host, "ovs-vsctl", "get-controller", "br-int").stdout.strip()
        assert target == info["hosts"][host]["of_target"]
    pids = [e["pid"] for e in info["pids"]]
    assert {"controller", "h1 controller relay", "h2 controller relay"} <= {e["what"] for e in info["pids"]}
    lab.down()
    assert not any(_alive(pid) for pid in pids)
