"""The Docker plugin's socket and protocol framing, with no controller or dockerd (see
tests/integration/test_docker.py for the real thing)."""
import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from weft.client import UnixHTTPConnection

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def call(path, name, body):
    conn = UnixHTTPConnection(path, timeout=10)
    conn.request("POST", name, body=json.dumps(body),
                 headers={"Content-Type": "application/vnd.docker.plugins.v1.2+json"})
    resp = conn.getresponse()
    return json.loads(resp.read())


@pytest.fixture
def plugin(tmp_path):
    sock = str(tmp_path / "plugins" / "weft.sock")
    env = dict(os.environ, WEFT_API=f"unix:{tmp_path}/nothing.sock", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "weft.cli", "docker-plugin", "--socket", sock,
                             "--docker", f"unix://{tmp_path}/no-docker.sock", "--state-dir", str(tmp_path / "state")],
                            env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the plugin did not create its socket"
        time.sleep(0.05)
    yield proc, sock
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def test_activate_and_capabilities(plugin):
    _, sock = plugin
    assert "NetworkDriver" in call(sock, "/Plugin.Activate", None)["Implements"]
    assert call(sock, "/NetworkDriver.GetCapabilities", {})["Scope"] == "local"
    assert "Err" in call(sock, "/NetworkDriver.NoSuchCall", {})
    assert "Error" in call(sock, "/IpamDriver.NoSuchCall", {})


def test_socket_mode_and_removed_on_sigterm(plugin):
    proc, sock = plugin
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    proc.terminate()
    assert proc.wait(10) == 0
    assert not os.path.exists(sock)


def test_refuses_a_live_socket_of_another_plugin(plugin, tmp_path):
    _, sock = plugin
    env = dict(os.environ, WEFT_API=f"unix:{tmp_path}/nothing.sock", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "weft.cli", "docker-plugin", "--socket", sock,
                           "--state-dir", str(tmp_path / "state2")],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith("weft: error: another plugin is serving on") and "Traceback" not in done.stderr
    assert os.path.exists(sock)  # the other one's socket is left alone


def test_takes_over_a_stale_socket(tmp_path):
    path = tmp_path / "plugins"
    path.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path / "weft.sock"))
    stale.close()  # bound, never listening: what a killed plugin leaves
    env = dict(os.environ, WEFT_API=f"unix:{tmp_path}/nothing.sock", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "weft.cli", "docker-plugin", "--socket", str(path / "weft.sock"),
                             "--state-dir", str(tmp_path / "state")],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert "NetworkDriver" in call(str(path / "weft.sock"), "/Plugin.Activate", None)["Implements"]
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)
