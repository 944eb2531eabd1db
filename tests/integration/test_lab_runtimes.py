"""`weft lab up --runtimes`: a real dockerd and podman on every lab host, the image weft/busybox, and
a teardown that leaves nothing behind. The Weft network plugins are tested elsewhere; here the
runtimes run with `--network none`, or with a probe plugin that only records dockerd's calls."""
import json
import os
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from weft import lab as weftlab
from weft import labruntimes
from weft.testing import root_state, runtimes_skip_reason

HOSTS = ("h1", "h2")


def _weft_lab(*args, **kw):
    return subprocess.run([sys.executable, "-m", "weft.cli", "lab", *args], capture_output=True, text=True,
                          timeout=120, **kw)


@pytest.mark.parametrize("host", HOSTS)
def test_docker_and_podman_run_a_container_on_each_host(runtimes_lab, host):
    runtimes_lab.docker(host, "run", "--rm", "--network", "none", "weft/busybox", "true")
    runtimes_lab.podman(host, "run", "--rm", "--network", "none", "weft/busybox", "true")


def test_bring_up_left_the_root_namespace_alone(runtimes_lab):
    # Links, addresses, routes, ip_forward, the packet filter, and the root mount namespace's
    # /run/docker/plugins: as they were before the lab's dockerds and podmans started.
    assert root_state() == runtimes_lab.root_before
    # The runtimes' mounts (the plugin dir, the covered /run, /var/lib, ...) exist only in their own
    # mount namespace.
    assert runtimes_lab.info["dir"] not in Path("/proc/self/mountinfo").read_text()
    # Each dockerd runs in its host's network namespace, never in the root one.
    for host, h in runtimes_lab.info["hosts"].items():
        for pid in (h["runtimes"]["dockerd_pid"], h["runtimes"]["containerd_pid"]):
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{h['netns']}").st_ino
        forward = runtimes_lab.exec(host, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
        assert forward == "0", f"dockerd enabled forwarding in {host}"


def test_the_image_serves_fetches_pings_and_talks_nc(runtimes_lab):
    # nc: the listener runs in the foreground and prints what it got; the client, in the background,
    # first waits for it to listen (on a busy machine it may take a while), so no sleep and no race.
    # The client's message is a here-document, in its stdin before it connects: the listener's own
    # stdin is empty, so it half-closes at once, and busybox nc exits at the peer's EOF; from
    # `echo |` the message could come after that EOF, and was lost (2 runs in 5 on a loaded machine).
    script = ("httpd -p 80 && wget -qO- http://localhost/ && ping -c1 -W2 127.0.0.1 >/dev/null && echo ping ok"
              " || exit 1\n"
              "(for i in $(seq 300); do netstat -ltn | grep -q ':7 ' && break; sleep 0.1; done;"
              " nc 127.0.0.1 7 <<END\nvia-nc\nEND\n) &\n"
              "timeout 60 nc -l -p 7\n")
    expected = "hello from weft/busybox\nping ok\nvia-nc\n"
    out = runtimes_lab.docker("h1", "run", "--rm", "--network", "none", "weft/busybox", "sh", "-c", script).stdout
    assert out == expected
    # podman gives containers fewer capabilities than Docker; the lab grants NET_RAW, which
    # busybox's ping needs (it has no ICMP datagram socket fallback).
    out = runtimes_lab.podman("h2", "run", "--rm", "--network", "none", "weft/busybox", "sh", "-c", script).stdout
    assert out == expected
    # Without arguments the image runs sh.
    res = runtimes_lab.docker("h2", "run", "--rm", "-i", "--network", "none", "weft/busybox", check=False)
    assert res.returncode == 0
    inspect = json.loads(runtimes_lab.docker("h1", "image", "inspect", "weft/busybox").stdout)[0]
    assert inspect["Config"]["Cmd"] == ["sh"]


def test_weft_lab_docker_and_podman_are_the_clients_themselves(runtimes_lab):
    # Exit status, stdout and stderr are the client's (weft lab docker execs it).
    res = _weft_lab("docker", "--name", runtimes_lab.name, "h1", "--", "run", "--rm", "--network", "none",
                    "weft/busybox", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")
    res = _weft_lab("podman", "--name", runtimes_lab.name, "h2", "--", "run", "--rm", "--network", "none",
                    "weft/busybox", "sh", "-c", "exit 9")
    assert res.returncode == 9
    # Each client reaches its own host's runtime: a container made on h1 is not on h2.
    runtimes_lab.docker("h1", "create", "--name", "only-on-h1", "--network", "none", "weft/busybox")
    try:
        assert "only-on-h1" in runtimes_lab.docker("h1", "ps", "-a", "--format", "{{.Names}}").stdout
        assert "only-on-h1" not in runtimes_lab.docker("h2", "ps", "-a", "--format", "{{.Names}}").stdout
    finally:
        runtimes_lab.docker("h1", "rm", "only-on-h1")
    # podman runs in the host's network namespace: where podman calls its CNI plugins.
    ns = runtimes_lab.info["hosts"]["h1"]["netns"]
    argv, env = labruntimes.podman_cmd(runtimes_lab.name, "h1", ["info", "--format", "{{.Host.NetworkBackend}}"])
    assert subprocess.run(argv, env=env, capture_output=True, text=True).stdout.strip() == "cni"
    argv, env = labruntimes.runtime_cmd(runtimes_lab.name, "h1", ["readlink", "/proc/self/ns/net"])
    inode = subprocess.run(argv, env=env, capture_output=True, text=True).stdout.strip()
    assert inode == f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]"


class _ProbePlugin(BaseHTTPRequestHandler):
    """Answers dockerd's remote network driver calls with the least that works, and records them."""
    calls = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.calls.append(self.path)
        answer = {"/Plugin.Activate": {"Implements": ["NetworkDriver"]},
                  "/NetworkDriver.GetCapabilities": {"Scope": "local"}}.get(self.path, {})
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_dockerd_finds_plugins_in_its_hosts_own_directory(runtimes_lab):
    h1 = runtimes_lab.info["hosts"]["h1"]["runtimes"]
    plugins = Path(h1["docker_plugins_dir"])
    assert plugins.stat().st_mode & 0o777 == 0o700
    before = root_state()["/run/docker/plugins"]
    sock = plugins / "probe.sock"
    server = socketserver.UnixStreamServer(str(sock), _ProbePlugin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        runtimes_lab.docker("h1", "network", "create", "-d", "probe", "--subnet", "10.99.0.0/24", "probed")
        runtimes_lab.docker("h1", "network", "rm", "probed")
        assert _ProbePlugin.calls[:3] == ["/Plugin.Activate", "/NetworkDriver.GetCapabilities",
                                          "/NetworkDriver.CreateNetwork"]
        assert "/NetworkDriver.DeleteNetwork" in _ProbePlugin.calls
        # The socket is in the host's /run/docker/plugins only: not in the root mount namespace's,
        # nor in h2's (where the lab's own weft plugin is alone).
        assert root_state()["/run/docker/plugins"] == before
        argv, env = labruntimes.runtime_cmd(runtimes_lab.name, "h2", ["ls", "-A", "/run/docker/plugins"])
        assert subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout == "weft.sock\n"
    finally:
        server.shutdown()
        server.server_close()
        sock.unlink()


def test_a_dockerd_restart_keeps_containers_running(runtimes_lab):
    runtimes_lab.docker("h2", "run", "-d", "--name", "survivor", "--network", "none", "weft/busybox", "sleep", "600")
    try:
        pid = runtimes_lab.docker("h2", "inspect", "-f", "{{.State.Pid}}", "survivor").stdout.strip()
        old = runtimes_lab.info["hosts"]["h2"]["runtimes"]["dockerd_pid"]
        labruntimes.restart_docker(runtimes_lab.name, "h2")
        assert runtimes_lab.info["hosts"]["h2"]["runtimes"]["dockerd_pid"] != old
        assert runtimes_lab.docker("h2", "inspect", "-f", "{{.State.Running}} {{.State.Pid}}",
                                   "survivor").stdout.split() == ["true", pid]
        assert runtimes_lab.docker("h2", "exec", "survivor", "echo", "still here").stdout == "still here\n"
    finally:
        runtimes_lab.docker("h2", "rm", "-f", "survivor")


def _lab_processes(marker):
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and weftlab._alive(int(entry.name)):
                found.append(f"{entry.name}: {cmdline}")
    return found


def test_down_removes_containers_and_leaves_nothing(make_lab):
    reason = runtimes_skip_reason()
    if reason:
        pytest.skip(reason)
    netns_before = set(os.listdir("/run/netns"))
    lab = make_lab(hosts=1, runtimes=True, shared=False)
    info = lab.info
    marker = info["dir"] + "/"
    rt = info["hosts"]["h1"]["runtimes"]
    # Containers still running at down, in both runtimes: down removes them through the clients.
    lab.docker("h1", "run", "-d", "--network", "none", "weft/busybox", "sleep", "600")
    # A CNI network of the reference loopback plugin alone: podman then makes the container's
    # network namespace itself, in /run/netns of the host's runtime mount namespace (shared by every
    # podman call on h1), not of the root one.
    Path(rt["podman"]["network_config_dir"], "loonly.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "loonly", "plugins": [{"type": "loopback"}]}))
    cid = lab.podman("h1", "run", "-d", "--network", "loonly", "weft/busybox", "sleep", "600").stdout.strip()
    sandbox = lab.podman("h1", "inspect", "-f", "{{.NetworkSettings.SandboxKey}}", cid).stdout.strip()
    assert sandbox.startswith("/run/netns/netns-")
    assert Path(f"/proc/{rt['ns_pid']}/root{sandbox}").exists() and not Path(sandbox).exists()
    assert list(Path(rt["podman"]["cni_cache_dir"]).glob(f"results/loonly-{cid}-eth0"))
    assert any("containerd-shim" in p for p in _lab_processes(marker))
    assert any("conmon" in p for p in _lab_processes(marker))
    cgroups = list(Path("/sys/fs/cgroup").glob(f"*/{rt['docker_cgroup_parent'].strip('/')}"))
    assert cgroups
    lab.down()
    assert root_state() == lab.root_before
    assert _lab_processes(marker) == []
    assert not Path(info["dir"]).exists()
    assert [p for p in cgroups if p.exists()] == []
    # None of the lab's namespaces remain, and none of podman's appeared (other labs may come and go).
    new = set(os.listdir("/run/netns")) - netns_before
    assert {ns for ns in new if ns.startswith(("netns-", f"wl-{lab.name}-"))} == set()


def test_clients_need_a_lab_with_runtimes(make_lab):
    plain = make_lab(hosts=1, controller=False)
    res = _weft_lab("docker", "--name", plain.name, "h1", "--", "ps")
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "runs no container runtimes" in res.stderr and "Traceback" not in res.stderr
    res = _weft_lab("podman", "--name", plain.name, "h9", "--", "ps")
    assert res.returncode == 1 and "runs no container runtimes" in res.stderr


def test_a_dockerd_that_fails_to_start_is_reported_with_its_log(make_lab, monkeypatch):
    reason = runtimes_skip_reason()
    if reason:
        pytest.skip(reason)
    real = labruntimes._dockerd_argv
    monkeypatch.setattr(labruntimes, "_dockerd_argv", lambda paths: [*real(paths), "--no-such-flag"])
    with pytest.raises(weftlab.LabError) as err:
        make_lab(hosts=1, controller=False, runtimes=True, shared=False)
    message = str(err.value)
    assert "h1: dockerd exited with status" in message and "dockerd.log" in message
    assert "unknown flag: --no-such-flag" in message
    # The failed bring-up took down what it had made.
    name = message.split("/run/weft/labs/", 1)[1].split("/", 1)[0]
    assert not (weftlab.LABS_DIR / name).exists() and _lab_processes(f"/run/weft/labs/{name}/") == []
