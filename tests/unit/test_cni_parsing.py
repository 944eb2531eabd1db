"""weft.cni's pure parts: the CNI environment, CNI_ARGS, the configuration, port names, results,
and the answers given without a controller (VERSION, and the errors found before one is asked)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.validate import NAME_RE
from weft import cni

ID64 = "0123456789abcdef" * 4
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": ID64, "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}
CONFIG = {"cniVersion": "1.0.0", "name": "blue", "type": "weft"}
PORT = {"name": "web-12345678", "network": "blue", "ip": "10.50.0.2", "mac": "02:00:00:00:00:02",
        "cidr": "10.50.0.0/24", "gateway": "10.50.0.1", "mtu": 1550}
HOST_IF = {"name": "wf0123456789ab", "mac": "7a:00:00:00:00:01"}


def run(env, config):
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    return cni.run({**env, "CNI_PATH": "/usr/lib/cni"}, raw)


@pytest.mark.parametrize("env, code, words", [
    ({}, 4, "CNI_COMMAND is missing"),
    ({"CNI_COMMAND": "add"}, 4, "'add' is not a CNI command"),
    ({**ENV, "CNI_NETNS": ""}, 4, "CNI_NETNS"),
    ({"CNI_COMMAND": "DEL", "CNI_IFNAME": "eth0"}, 4, "CNI_CONTAINERID"),
    ({**ENV, "CNI_CONTAINERID": "-abc"}, 4, "CNI_CONTAINERID"),
    ({**ENV, "CNI_CONTAINERID": "abc/def"}, 4, "CNI_CONTAINERID"),
    ({**ENV, "CNI_IFNAME": "eth0-is-too-long"}, 4, "CNI_IFNAME"),
    ({**ENV, "CNI_IFNAME": "et:0"}, 4, "CNI_IFNAME"),
    ({**ENV, "CNI_NETNS": "netns-x"}, 4, "not a path"),
    ({**ENV, "CNI_ARGS": "FOO=1"}, 4, "unknown argument 'FOO'"),
    ({**ENV, "CNI_ARGS": "IgnoreUnknown=1;IP"}, 4, "not KEY=VALUE"),
    ({**ENV, "CNI_ARGS": "IgnoreUnknown=maybe"}, 4, "IgnoreUnknown"),
    ({**ENV, "CNI_ARGS": "IP=10.50.0.300"}, 4, "IPv4"),
    ({**ENV, "CNI_ARGS": "MAC=02:00:00:00:00"}, 4, "MAC"),
])
def test_environment_errors(env, code, words):
    status, out = run(env, CONFIG)
    assert status == 1 and out["code"] == code and words in out["msg"], out
    assert out["cniVersion"] == "1.0.0"  # the configuration's version, which is a supported one


@pytest.mark.parametrize("config, code, words", [
    (b"{", 6, "not JSON"),
    (b"[1]", 6, "not a JSON object"),
    ({**CONFIG, "cniVersion": "0.3.1"}, 1, "incompatible CNI version 0.3.1"),
    ({**CONFIG, "cniVersion": "2.0.0"}, 1, "incompatible CNI version 2.0.0"),
    ({**CONFIG, "cniVersion": "one"}, 6, "not a version"),
    ({"name": "blue", "type": "weft"}, 7, "missing cniVersion"),
    ({**CONFIG, "netwrok": "blue"}, 2, "unsupported field netwrok"),
    ({**CONFIG, "mtu": 1400}, 2, "unsupported field mtu: 1400"),
    ({**CONFIG, "ipMasq": True}, 2, "ipMasq"),
    ({**CONFIG, "name": ""}, 7, "invalid network name"),
    ({"cniVersion": "1.0.0", "type": "weft"}, 7, "missing network name"),
    ({**CONFIG, "network": "a..b"}, 7, "not a Weft network name"),
    ({**CONFIG, "network": 5}, 7, "wrong type"),
    ({**CONFIG, "timeout": 0}, 7, "timeout"),
    ({**CONFIG, "timeout": True}, 7, "wrong type"),
    ({**CONFIG, "ipam": {}}, 7, "ipam.type"),
    ({**CONFIG, "ipam": {"type": "../bin/sh"}}, 7, "ipam.type"),
    ({**CONFIG, "ovsdb": "/run/db.sock"}, 7, "OVSDB remote"),
    ({**CONFIG, "api": "ftp://x"}, 7, "api"),
    ({**CONFIG, "runtimeConfig": {"ips": ["fd00::1/64"]}}, 7, "runtimeConfig.ips"),
    ({**CONFIG, "runtimeConfig": {"mac": "zz"}}, 7, "runtimeConfig.mac"),
    ({**CONFIG, "args": {"cni": {"labels": {"app": "web"}}}}, 7, "args.cni.labels is not a list"),
    ({**CONFIG, "args": {"cni": {"labels": [{"key": "app"}]}}}, 7, "args.cni.labels is not a list"),
    ({**CONFIG, "args": {"cni": []}}, 7, "args.cni.labels is not a list"),
    ({**CONFIG, "args": {"cni": {"labels": [{"key": "app", "value": "a"}, {"key": "app", "value": "b"}]}}}, 7,
     "the key 'app' twice"),
    ({**CONFIG, "args": {"cni": {"labels": [{"key": "app", "value": "-web"}]}}}, 7, "a label is not valid"),
])
def test_configuration_errors(config, code, words):
    status, out = run(ENV, config)
    assert status == 1 and out["code"] == code and words in out["msg"], out


@pytest.mark.parametrize("command", ["STATUS", "GC"])
def test_status_and_gc_need_1_1(command):
    status, out = run({"CNI_COMMAND": command}, CONFIG)
    assert (status, out["code"]) == (1, 1) and f"{command} needs cniVersion 1.1.0" in out["msg"]


def test_gc_attachments_are_checked():
    status, out = run({"CNI_COMMAND": "GC"}, {**CONFIG, "cniVersion": "1.1.0",
                                              "cni.dev/valid-attachments": [{"containerID": 1}]})
    assert (status, out["code"]) == (1, 7) and "valid-attachments" in out["msg"]


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_version(version):
    assert run({"CNI_COMMAND": "VERSION"}, {"cniVersion": version}) == \
        (0, {"cniVersion": version, "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})


def test_version_of_an_old_runtime_still_answers():
    """VERSION is how a runtime learns what is supported: it answers whatever version it was asked in."""
    assert run({"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.2.0"})[1]["supportedVersions"][0] == "0.4.0"
    assert run({"CNI_COMMAND": "VERSION"}, b"")[0] == 0


def test_cni_args():
    args = cni.parse_args("IgnoreUnknown=1;IP=10.50.0.9/24;MAC=02:AA:00:00:00:01;K8S_POD_NAMESPACE=ns;"
                          "K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;FOO=bar")
    assert args == {"IgnoreUnknown": "1", "IP": "10.50.0.9", "MAC": "02:aa:00:00:00:01",
                    "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "web-0", "K8S_POD_INFRA_CONTAINER_ID": "abc"}
    assert cni.parse_args("") == {}
    assert cni.parse_args("K8S_POD_NAME=web;K8S_POD_UID=1-2") == {"K8S_POD_NAME": "web", "K8S_POD_UID": "1-2"}


def test_config_settings():
    settings = cni.parse_config({**CONFIG, "network": "green", "api": "unix:/tmp/api.sock", "timeout": 3,
                                 "runtimeConfig": {"ips": ["10.50.0.7/24"], "mac": "02:00:00:00:00:07"},
                                 "dns": {"nameservers": ["10.50.0.1"]}, "cni.dev/anything": 1}, "ADD")
    assert (settings["network"], settings["ip"], settings["mac"], settings["timeout"]) == \
        ("green", "10.50.0.7", "02:00:00:00:00:07", 3.0)
    assert settings["api"].base == "unix:/tmp/api.sock"
    assert cni.parse_config(CONFIG, "ADD")["network"] == "blue"  # the network defaults to the name
    gc = cni.parse_config({**CONFIG, "cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}]}, "GC")
    assert gc["valid"] == {("a", "eth0")}


def test_labels_come_from_args_cni_labels():
    """CNI's CONVENTIONS.md form; the rest of args is the runtime's and ignored."""
    args = {"cni": {"labels": [{"key": "app", "value": "web"}, {"key": "example.com/tier", "value": ""}],
                    "ips": ["10.50.0.9"]}, "org.apache.mesos": {"x": 1}}
    assert cni.parse_config({**CONFIG, "args": args}, "ADD")["labels"] == {"app": "web", "example.com/tier": ""}
    assert cni.parse_config({**CONFIG, "args": {"other": 1}}, "ADD")["labels"] == {}
    assert cni.parse_config(CONFIG, "ADD")["labels"] == {}
    status, out = run(ENV, {**CONFIG, "args": {"cni": {"labels": [{"key": "Bad/key", "value": "x"}]}}})
    assert (status, out["code"]) == (1, 7) and "args.cni.labels: key 'Bad/key'" in out["details"], out


@pytest.mark.parametrize("args, expected", [
    ({"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0"}, r"default\.web-0-[0-9a-f]{8}"),
    ({"K8S_POD_NAME": "web"}, r"web-[0-9a-f]{8}"),  # podman: the container's name
    ({}, r"0123456789ab-[0-9a-f]{8}"),
    ({"K8S_POD_NAMESPACE": "n" * 63, "K8S_POD_NAME": "p" * 253}, r"n{54}-[0-9a-f]{8}"),
    ({"K8S_POD_NAME": "..weird name..x"}, r"weird-name\.x-[0-9a-f]{8}"),
    ({"K8S_POD_NAME": "___"}, r"cni-[0-9a-f]{8}"),
])
def test_port_names(args, expected):
    import re
    name = cni.port_name(ID64, "eth0", args)
    assert re.fullmatch(expected, name) and NAME_RE.fullmatch(name) and len(name) <= 63, name


def test_port_names_are_per_attachment():
    pod = {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0"}
    names = {cni.port_name(ID64, "eth0", pod), cni.port_name(ID64, "net1", pod),
             cni.port_name(ID64[::-1], "eth0", pod)}  # the same pod made again: another container
    assert len(names) == 3
    assert cni.port_name(ID64, "eth0", pod) == cni.port_name(ID64, "eth0", pod)  # DEL finds ADD's


def test_external_ids():
    env = {"container_id": ID64, "ifname": "eth0", "args": {"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "web"}}
    ids = cni.port_external_ids({"name": "blue"}, env)
    assert ids == {"owner": "cni", "cni.network": "blue", "cni.containerid": ID64, "cni.ifname": "eth0",
                   "container": "ns/web"}
    assert cni.is_ours({"external_ids": ids}, "blue", ID64, "eth0")
    assert not cni.is_ours({"external_ids": ids}, "blue", ID64, "net1")
    assert not cni.is_ours({"external_ids": {**ids, "owner": "docker"}}, "blue")
    assert cni.port_external_ids({"name": "blue"}, {**env, "args": {}})["container"] == ID64


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_result(version):
    result = cni.build_result(version, "eth0", "/run/netns/x", PORT, HOST_IF, dns={"nameservers": ["10.50.0.1"]})
    assert result["cniVersion"] == version
    host, sandbox = result["interfaces"]
    assert host["name"] == HOST_IF["name"] and "sandbox" not in host
    assert sandbox == {"name": "eth0", "mac": PORT["mac"], "sandbox": "/run/netns/x",
                       **({"mtu": 1550} if version == "1.1.0" else {})}
    ip = {"address": "10.50.0.2/24", "gateway": "10.50.0.1", "interface": 1}
    assert result["ips"] == [{**ip, "version": "4"} if version == "0.4.0" else ip]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.50.0.1"}]
    assert result["dns"] == {"nameservers": ["10.50.0.1"]}


def test_result_keeps_a_previous_plugins_result():
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "127.0.0.2/8", "interface": 0}], "dns": {"search": ["example"]}}
    result = cni.build_result("1.0.0", "eth0", "/run/netns/x", PORT, HOST_IF, prev=prev)
    assert [i["name"] for i in result["interfaces"]] == ["lo", HOST_IF["name"], "eth0"]
    assert [i["interface"] for i in result["ips"]] == [0, 2]
    assert result["dns"] == {"search": ["example"]}


def test_conflist():
    assert cni.conflist("blue", api="unix:/run/weft/api.sock") == {
        "cniVersion": "1.0.0", "name": "blue",
        "plugins": [{"type": "weft", "network": "blue", "api": "unix:/run/weft/api.sock"}]}
    listed = cni.conflist("blue", name="b", version="1.1.0", token_file="/t", ca_file="/ca", ovsdb="unix:/db")
    plugin = listed["plugins"][0]
    # What a runtime passes the plugin (the plugin object, cniVersion, name) is a valid configuration.
    settings = cni.parse_config({**plugin, "cniVersion": listed["cniVersion"], "name": listed["name"]}, "ADD")
    assert (settings["name"], settings["network"], settings["ovsdb"]) == ("b", "blue", "unix:/db")


def test_plugin_process():
    """The plugin as a runtime runs it: a process, env + stdin, the answer on stdout and its exit
    status; no Ryu or eventlet imported, and pyroute2's package __init__ skipped."""
    repo = Path(__file__).resolve().parents[2]
    # (VERSION, which podman runs before every ADD and DEL, does not even load the API client.)
    probe = ("import runpy, sys; sys.argv = ['weft-cni']; import weft.cni as c; rc = c.main(); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ryu', 'eventlet') and sys.modules[m] "
             "or m.startswith('pyroute2.') or m in ('weft.client', 'weft.attach')), file=sys.stderr); "
             "sys.exit(rc)")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(repo), "CNI_COMMAND": "VERSION"}
    res = subprocess.run([sys.executable, "-c", probe], input=b'{"cniVersion": "1.1.0"}', env=env,
                         capture_output=True)
    assert res.returncode == 0 and json.loads(res.stdout)["cniVersion"] == "1.1.0"
    assert res.stderr.decode().strip() == "[]"
    res = subprocess.run([sys.executable, "-m", "weft.cni"], input=b"nope", capture_output=True,
                         env={**env, "CNI_COMMAND": "ADD", **{k: v for k, v in ENV.items() if k != "CNI_COMMAND"}})
    assert res.returncode == 1 and json.loads(res.stdout)["code"] == 6 and not res.stderr


def test_stdin_that_cannot_be_read():
    repo = Path(__file__).resolve().parents[2]
    fd = os.open("/dev/null", os.O_WRONLY)  # reading it fails: EBADF
    try:
        res = subprocess.run([sys.executable, "-m", "weft.cni"], stdin=fd, capture_output=True,
                             env={"PATH": os.environ["PATH"], "PYTHONPATH": str(repo), **ENV})
    finally:
        os.close(fd)
    assert res.returncode == 1 and json.loads(res.stdout)["code"] == 5


def test_console_script():
    """The `weft-cni` executable a runtime calls: the console script that ./scripts/setup.sh installs
    into .venv, run as a runtime runs it (env and stdin). The tree's weft is put first on its path:
    the venv's installed copy may be older than the tree (setup.sh reinstalls it)."""
    repo = Path(__file__).resolve().parents[2]
    script = repo / ".venv" / "bin" / "weft-cni"
    assert script.is_file() and os.access(script, os.X_OK), \
        f"{script} is not installed: ./scripts/setup.sh installs the weft-cni console script"
    res = subprocess.run([str(script)], input=json.dumps({"cniVersion": "1.1.0"}).encode(), capture_output=True,
                         env={"PATH": os.environ["PATH"], "PYTHONPATH": str(repo), "CNI_COMMAND": "VERSION"})
    assert res.returncode == 0 and not res.stderr, res.stderr
    assert json.loads(res.stdout) == {"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


def test_sync_conflists(tmp_path):
    theirs = tmp_path / "podman.conflist"
    theirs.write_text(json.dumps({"cniVersion": "1.0.0", "name": "podman", "plugins": [{"type": "bridge"}]}))
    assert cni.sync_conflists(tmp_path, ["blue", "red"], api="unix:/a.sock") == ["blue", "red"]
    blue = json.loads((tmp_path / "blue.conflist").read_text())
    assert blue["plugins"] == [{"type": "weft", "network": "blue", "api": "unix:/a.sock"}]
    assert cni.sync_conflists(tmp_path, ["blue", "red"], api="unix:/a.sock") == []  # unchanged: not rewritten
    assert cni.sync_conflists(tmp_path, ["blue"], api="unix:/a.sock") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blue.conflist", "podman.conflist"]


def test_write_plugin(tmp_path):
    plugin = tmp_path / "weft"
    cni.write_plugin(str(plugin), source=Path(__file__).resolve().parents[2])
    res = subprocess.run([str(plugin)], input=b'{"cniVersion": "1.0.0"}', capture_output=True,
                         env={"PATH": os.environ["PATH"], "CNI_COMMAND": "VERSION"})
    assert res.returncode == 0 and json.loads(res.stdout)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]
