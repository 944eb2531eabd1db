"""What Open vSwitch 3.1 and python-ovs do with `weft pki` certificates, on real daemons.

These pin the facts Weft's TLS design rests on: a host's vswitchd connects to an ssl: controller with
its host certificate (the controller learns the host from the peer's CN) and checks the controller's
chain but not its name; an ovsdb-server serves pssl: with keys from files or from the SSL table that
`ovs-vsctl set-ssl` fills (the flags Debian's ovs-ctl uses); python-ovs connects to it over ssl: once
the three Stream.ssl_set_* calls are made, and refuses a server certificate of another CA.
"""
import dataclasses
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading

import pytest

from weft import lab as weftlab
from weft import pki

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"

pytestmark = pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("socat")),
                                reason="needs openssl and socat")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    base = tmp_path_factory.mktemp("tls")
    d, other = str(base / "pki"), str(base / "other")
    pki.init_ca(d)
    pki.init_ca(other)
    return {"dir": d, "controller": pki.issue_controller(d), "h1": pki.issue_host(d, "h1"),
            "rogue": pki.issue_controller(other)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tls_openflow_server(path, creds, result):
    """Accepts one TLS connection on a unix socket (client certificate required), records the peer's
    CN and the version of the OpenFlow HELLO it sends, or the handshake error."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(creds.cert, creds.key)
    ctx.load_verify_locations(creds.ca_cert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(20)

    def serve():
        try:
            raw, _ = srv.accept()
            raw.settimeout(10)
            with ctx.wrap_socket(raw, server_side=True) as s:
                result["cn"] = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
                result["tls"] = s.version()
                result["hello_version"] = struct.unpack("!BB", s.recv(8)[:2])[0]
        except (OSError, ssl.SSLError) as err:
            result["error"] = str(err)
        finally:
            srv.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("server", ["controller", "rogue"])
def test_vswitchd_connects_to_an_ssl_controller_with_its_host_certificate(make_lab, certs, server, tmp_path):
    lab = make_lab(hosts=1, controller=False, shared=False)
    h1, port = certs["h1"], free_port()
    sock = str(tmp_path / "of.sock")
    result = {}
    # The server trusts our CA for the client's certificate; "rogue" shows one of another CA.
    thread = tls_openflow_server(sock, dataclasses.replace(certs[server], ca_cert=h1.ca_cert), result)
    # OVS in the namespace reaches the server in the root namespace through a TCP->unix relay.
    argv, env = weftlab.target_cmd(lab.name, "h1", ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                                                   f"UNIX-CONNECT:{sock}"])
    relay = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        lab.exec("h1", "ip", "link", "set", "lo", "up")
        lab.exec("h1", "ovs-vsctl", "set-ssl", h1.key, h1.cert, h1.ca_cert)
        lab.exec("h1", "ovs-vsctl", "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
                 "fail_mode=secure", "--", "set-controller", "br-int", f"ssl:127.0.0.1:{port}")
        thread.join(25)
    finally:
        relay.terminate()
        relay.wait(5)
    if server == "controller":
        # The controller's certificate names 127.0.0.1 and localhost; the host's names only h1.
        assert result == {"cn": "h1", "tls": "TLSv1.3", "hello_version": 6}
    else:
        assert "UNKNOWN_CA" in result["error"].upper()  # vswitchd checked the chain and refused it


def start_ovsdb_server(tmp_path, remote_args):
    env = {**os.environ, "OVS_RUNDIR": str(tmp_path), "OVS_DBDIR": str(tmp_path), "OVS_LOGDIR": str(tmp_path)}
    subprocess.run(["ovsdb-tool", "create", tmp_path / "conf.db", SCHEMA], check=True)
    subprocess.run(["ovsdb-server", tmp_path / "conf.db", f"--remote=punix:{tmp_path}/db.sock", *remote_args,
                    f"--pidfile={tmp_path}/ovsdb-server.pid", f"--unixctl={tmp_path}/ovsdb-server.ctl",
                    f"--log-file={tmp_path}/ovsdb-server.log", "--detach", "--no-chdir", "-vconsole:off"],
                   check=True, env=env, capture_output=True)
    pid = int((tmp_path / "ovsdb-server.pid").read_text())
    vsctl = ["ovs-vsctl", f"--db=unix:{tmp_path}/db.sock", "--timeout=10"]
    subprocess.run([*vsctl, "--no-wait", "init", "--", "add-br", "br-x"], check=True, capture_output=True)
    return pid, vsctl


def stop(pid, tmp_path):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert str(tmp_path).encode() in f.read()
    os.kill(pid, 15)


# python-ovs as Weft uses it: a separate process, since the ssl files are class attributes of Stream.
IDL_CLIENT = """
import json, sys, time
import ovs.db.idl, ovs.poller, ovs.stream
remote, key, cert, ca = sys.argv[1:5]
ovs.stream.Stream.ssl_set_private_key_file(key)
ovs.stream.Stream.ssl_set_certificate_file(cert)
ovs.stream.Stream.ssl_set_ca_cert_file(ca)
helper = ovs.db.idl.SchemaHelper(sys.argv[5])
helper.register_columns("Bridge", ["name"])
idl = ovs.db.idl.Idl(remote, helper)
deadline = time.time() + float(sys.argv[6])
while idl.change_seqno == 0 and time.time() < deadline:
    idl.run(); poller = ovs.poller.Poller(); idl.wait(poller); poller.timer_wait(100); poller.block()
print(json.dumps({"synced": idl.change_seqno > 0, "bridges": [r.name for r in idl.tables["Bridge"].rows.values()]}))
"""


def idl_over_ssl(port, creds, wait=5.0):
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", IDL_CLIENT, f"ssl:127.0.0.1:{port}", creds.key,
                          creds.cert, creds.ca_cert, SCHEMA, str(wait)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("keys_from", ["files", "ssl-table"])
def test_python_ovs_reaches_an_ovsdb_server_over_ssl(certs, tmp_path, keys_from):
    h1, port = certs["h1"], free_port()
    if keys_from == "files":
        args = [f"--remote=pssl:{port}:127.0.0.1", f"--private-key={h1.key}", f"--certificate={h1.cert}",
                f"--ca-cert={h1.ca_cert}"]
    else:  # what Debian's ovs-ctl passes; `ovs-vsctl set-ssl` and `set-manager pssl:` configure it
        args = ["--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
                "--private-key=db:Open_vSwitch,SSL,private_key", "--certificate=db:Open_vSwitch,SSL,certificate",
                "--bootstrap-ca-cert=db:Open_vSwitch,SSL,ca_cert"]
    pid, vsctl = start_ovsdb_server(tmp_path, args)
    try:
        if keys_from == "ssl-table":
            subprocess.run([*vsctl, "--no-wait", "set-ssl", h1.key, h1.cert, h1.ca_cert, "--", "set-manager",
                            f"pssl:{port}:127.0.0.1"], check=True, capture_output=True)
        # The host's certificate names h1, not 127.0.0.1: python-ovs checks the chain, not the name.
        assert idl_over_ssl(port, certs["controller"]) == {"synced": True, "bridges": ["br-x"]}
        rogue = certs["rogue"]
        assert idl_over_ssl(port, dataclasses.replace(rogue, ca_cert=h1.ca_cert),
                            wait=2) == {"synced": False, "bridges": []}  # the server refuses the client
    finally:
        stop(pid, tmp_path)


def test_python_ovs_refuses_a_server_certificate_of_another_ca(certs, tmp_path):
    rogue, port = certs["rogue"], free_port()
    pid, _ = start_ovsdb_server(tmp_path, [f"--remote=pssl:{port}:127.0.0.1", f"--private-key={rogue.key}",
                                           f"--certificate={rogue.cert}", f"--ca-cert={certs['h1'].ca_cert}"])
    try:
        assert idl_over_ssl(port, certs["controller"], wait=2) == {"synced": False, "bridges": []}
    finally:
        stop(pid, tmp_path)
