"""weft.pki and `weft pki` with the real openssl, in temporary directories."""
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading

import pytest

from weft import cli, pki

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="the openssl command is not installed")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def text(cert):
    return subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-text"], check=True,
                          capture_output=True, text=True).stdout


def verify(ca_cert, cert):
    return subprocess.run(["openssl", "verify", "-CAfile", ca_cert, cert], capture_output=True, text=True)


def snapshot(directory):
    """Every file below directory: its bytes and mtime."""
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[path] = (fh.read(), os.stat(path).st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory):
    """A CA with a controller, a host and a client certificate (shared: these tests only read it)."""
    d = str(tmp_path_factory.mktemp("pki") / "pki")
    pki.init_ca(d)
    pki.issue_controller(d)
    pki.issue_host(d, "h1")
    pki.issue_client(d, "alice")
    return d


def test_init_makes_a_private_directory_and_key_whatever_the_umask(tmp_path):
    d = str(tmp_path / "a" / "pki")
    old = os.umask(0)  # the caller's umask must not matter: keys are private from their creation
    try:
        ca = pki.init_ca(d)
    finally:
        os.umask(old)
    assert ca.created and ca.cert == os.path.join(d, "ca-cert.pem") and ca.key == os.path.join(d, "ca-key.pem")
    assert mode(d) == 0o700
    assert mode(ca.key) == 0o600
    assert mode(ca.cert) == 0o644
    assert sorted(os.listdir(d)) == [".lock", "ca-cert.pem", "ca-key.pem"]  # no staging left behind
    assert mode(os.path.join(d, ".lock")) == 0o600


def test_ca_is_a_self_signed_ec_ca_for_ten_years(ca_dir):
    body = text(os.path.join(ca_dir, "ca-cert.pem"))
    assert "CA:TRUE" in body and "Certificate Sign" in body
    assert "Issuer: O = Weft, CN = Weft CA" in body and "Subject: O = Weft, CN = Weft CA" in body
    assert "ecdsa-with-SHA256" in body and "prime256v1" in body
    row = next(r for r in pki.inventory(ca_dir) if r["kind"] == "ca")
    assert 3640 <= row["days_left"] <= 3650


def test_controller_certificate_cn_san_usage_and_chain(ca_dir):
    cert = os.path.join(ca_dir, "controller-cert.pem")
    info = pki.read_cert(cert)
    assert info["cn"] == "weft-controller"
    assert info["sans"] == ["IP:127.0.0.1", "DNS:localhost"]
    body = text(cert)
    assert "CA:FALSE" in body
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in body
    assert verify(os.path.join(ca_dir, "ca-cert.pem"), cert).returncode == 0
    assert mode(os.path.join(ca_dir, "controller-key.pem")) == 0o600
    row = next(r for r in pki.inventory(ca_dir) if r["kind"] == "controller")
    assert 815 <= row["days_left"] <= 825


def test_controller_with_given_addresses_and_names(tmp_path):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    creds = pki.issue_controller(d, ips=["10.0.0.1", "10.0.0.1", "fd00::1"], dns=["Weft.Example"])
    assert pki.read_cert(creds.cert)["sans"] == ["IP:10.0.0.1", "IP:fd00::1", "DNS:weft.example"]


def test_host_and_client_certificates(ca_dir):
    ca_cert = os.path.join(ca_dir, "ca-cert.pem")
    for kind, name in (("host", "h1"), ("client", "alice")):
        cert = os.path.join(ca_dir, kind + "s", f"{name}-cert.pem")
        key = os.path.join(ca_dir, kind + "s", f"{name}-key.pem")
        assert pki.read_cert(cert)["cn"] == name
        assert verify(ca_cert, cert).returncode == 0
        assert mode(key) == 0o600 and mode(os.path.dirname(key)) == 0o700


def test_issue_returns_the_paths(tmp_path):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    creds = pki.issue_host(d, "node-2.rack_1")
    assert creds == pki.Credentials("node-2.rack_1", f"{d}/hosts/node-2.rack_1-cert.pem",
                                    f"{d}/hosts/node-2.rack_1-key.pem", f"{d}/ca-cert.pem", True)


def test_serials_are_random_and_large(ca_dir, tmp_path):
    serials = {r["serial"] for r in pki.inventory(ca_dir)}
    assert len(serials) == 4
    assert all(len(s.lstrip("0")) >= 30 for s in serials)  # about 127 bits, in hex


def test_mutual_tls_between_controller_and_host_certificates(ca_dir):
    """The controller's certificate as a server that requires a client certificate, a host's as the client."""
    ca_cert = os.path.join(ca_dir, "ca-cert.pem")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*(os.path.join(ca_dir, f"controller-{f}.pem") for f in ("cert", "key")))
    server_ctx.load_verify_locations(ca_cert)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=ca_cert)  # checks the name too: 127.0.0.1 is in the SAN
    client_ctx.load_cert_chain(*(os.path.join(ca_dir, "hosts", f"h1-{f}.pem") for f in ("cert", "key")))
    a, b = socket.socketpair()
    seen = {}

    def serve():
        with server_ctx.wrap_socket(a, server_side=True) as s:
            seen["peer"] = dict(x[0] for x in s.getpeercert()["subject"])
            s.sendall(b"ok")

    t = threading.Thread(target=serve)
    t.start()
    with client_ctx.wrap_socket(b, server_hostname="127.0.0.1") as c:
        assert c.recv(2) == b"ok"
        assert dict(x[0] for x in c.getpeercert()["subject"])["commonName"] == "weft-controller"
    t.join(5)
    assert seen["peer"] == {"commonName": "h1"}


def test_init_refuses_to_replace_a_ca(tmp_path):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    before = snapshot(d)
    with pytest.raises(pki.PkiError, match="a CA already exists"):
        pki.init_ca(d)
    assert snapshot(d) == before
    again = pki.init_ca(d, exist_ok=True)
    assert not again.created and snapshot(d) == before


def test_init_in_an_existing_empty_directory(tmp_path):
    d = tmp_path / "pki"
    d.mkdir(mode=0o755)
    assert pki.init_ca(str(d)).created
    assert mode(d) == 0o700


def test_half_a_ca_is_reported_not_completed(tmp_path):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    os.unlink(os.path.join(d, "ca-cert.pem"))
    with pytest.raises(pki.PkiError, match="incomplete CA.*ca-key.pem exists but ca-cert.pem does not"):
        pki.init_ca(d)
    with pytest.raises(pki.PkiError, match="incomplete CA"):
        pki.issue_host(d, "h1")


def test_leaves_are_idempotent(tmp_path):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    pki.issue_controller(d, ips=["10.0.0.1"], dns=["weft"])
    pki.issue_host(d, "h1")
    before = snapshot(d)
    assert not pki.issue_controller(d, ips=["10.0.0.1"], dns=["weft"]).created
    assert not pki.issue_controller(d, dns=["weft"], ips=["10.0.0.1"]).created
    assert not pki.issue_host(d, "h1").created
    assert snapshot(d) == before


def test_a_different_request_is_refused_until_forced(tmp_path):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    old = pki.issue_controller(d)
    before = snapshot(d)
    with pytest.raises(pki.PkiError, match="already exists .* not IP:10.0.0.1; replace it with --force"):
        pki.issue_controller(d, ips=["10.0.0.1"])
    assert snapshot(d) == before
    new = pki.issue_controller(d, ips=["10.0.0.1"], force=True)
    assert new.created and pki.read_cert(new.cert)["sans"] == ["IP:10.0.0.1"]
    assert open(old.key).read() != before[old.key][0].decode()
    assert mode(new.key) == 0o600


def test_a_certificate_of_another_ca_is_not_kept(tmp_path):
    d, other = str(tmp_path / "pki"), str(tmp_path / "other")
    for x in (d, other):
        pki.init_ca(x)
        pki.issue_host(x, "h1")
    for f in ("h1-cert.pem", "h1-key.pem"):
        shutil.copy(os.path.join(other, "hosts", f), os.path.join(d, "hosts", f))
    with pytest.raises(pki.PkiError, match="does not verify against this CA"):
        pki.issue_host(d, "h1")
    row = next(r for r in pki.inventory(d) if r["kind"] == "host")
    assert row["problem"]
    assert pki.issue_host(d, "h1", force=True).created
    assert next(r for r in pki.inventory(d) if r["kind"] == "host")["problem"] is None


def test_a_key_that_is_not_the_certificates_is_not_kept(tmp_path):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    pki.issue_host(d, "h1")
    pki.issue_host(d, "h2")
    shutil.copy(os.path.join(d, "hosts", "h2-key.pem"), os.path.join(d, "hosts", "h1-key.pem"))
    with pytest.raises(pki.PkiError, match="is not the key of"):
        pki.issue_host(d, "h1")


@pytest.mark.parametrize("name", ["", ".", "..", "a..b", "-a", ".a", "a/b", "../etc", "a b", "a" * 64, "é",
                                  "a\nb", None, 7])
def test_bad_names_are_refused_before_anything_is_written(tmp_path, name):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    before = snapshot(d)
    for issue in (pki.issue_host, pki.issue_client):
        with pytest.raises(pki.PkiError, match="name .* is not valid"):
            issue(d, name)
    assert snapshot(d) == before and sorted(os.listdir(d)) == [".lock", "ca-cert.pem", "ca-key.pem"]


def test_longest_name_is_accepted(tmp_path):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    assert pki.issue_host(d, "a" * 63).created


@pytest.mark.parametrize("ips,dns,error", [(["10.0.0"], None, "--ip '10.0.0' is not an IPv4 or IPv6 address"),
                                           (["10.0.0.1/24"], None, "--ip"),
                                           (None, ["bad_name"], "--dns 'bad_name' is not a DNS name"),
                                           (None, ["-x.example"], "--dns"),
                                           (None, ["a..b"], "--dns")])
def test_bad_addresses_are_refused_before_anything_is_written(tmp_path, ips, dns, error):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    before = snapshot(d)
    with pytest.raises(pki.PkiError, match=error):
        pki.issue_controller(d, ips=ips, dns=dns)
    assert snapshot(d) == before


def test_leaves_need_a_ca(tmp_path):
    d = str(tmp_path / "pki")
    with pytest.raises(pki.PkiError, match=f"no CA in {d}: create it first with `weft pki init --dir {d}`"):
        pki.issue_host(d, "h1")
    assert not os.path.exists(d)


def test_a_failing_openssl_leaves_nothing_behind(tmp_path, monkeypatch):
    d = str(tmp_path / "pki")
    monkeypatch.setattr(pki, "CA_SUBJECT", "not-a-subject")
    with pytest.raises(pki.PkiError, match="^openssl req failed: "):
        pki.init_ca(d)
    assert sorted(os.listdir(d)) == [".lock"]


def test_missing_openssl_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pki.PkiError, match="the openssl command is not installed"):
        pki.init_ca(str(tmp_path / "pki"))


def test_inventory_lists_everything(ca_dir):
    rows = pki.inventory(ca_dir)
    assert [(r["kind"], r["name"], r["cn"]) for r in rows] == [
        ("ca", "ca", "Weft CA"), ("controller", "controller", "weft-controller"), ("host", "h1", "h1"),
        ("client", "alice", "alice")]
    assert all(r["problem"] is None for r in rows)


# The command line


def run(capsys, *argv):
    rc = cli.main(["pki", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_init_controller_host_show(tmp_path, capsys):
    d = str(tmp_path / "pki")
    rc, out, err = run(capsys, "init", "--dir", d)
    assert rc == 0 and f"CA created in {d}" in out and f"weft pki controller --dir {d}" in out
    rc, out, _ = run(capsys, "controller", "--dir", d, "--ip", "10.0.0.1", "127.0.0.1", "--dns", "weft")
    assert rc == 0 and "IP:10.0.0.1, IP:127.0.0.1, DNS:weft created" in out
    rc, out, _ = run(capsys, "host", "h1", "--dir", d)
    assert rc == 0
    assert f"ovs-vsctl set-ssl {d}/hosts/h1-key.pem {d}/hosts/h1-cert.pem {d}/ca-cert.pem" in out
    rc, out, _ = run(capsys, "host", "h1", "--dir", d)
    assert rc == 0 and "already exists, unchanged" in out
    rc, out, _ = run(capsys, "show", "--dir", d)
    assert rc == 0 and "host h1" in out and "CN=weft-controller" in out and "hosts/h1-cert.pem" in out


def test_cli_default_dir_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WEFT_PKI_DIR", str(tmp_path / "pki"))
    rc, out, _ = run(capsys, "init")
    assert rc == 0 and "--dir" not in out  # the next command needs no --dir
    assert os.path.exists(tmp_path / "pki" / "ca-key.pem")


@pytest.mark.parametrize("argv,message", [
    (["init"], "a CA already exists in {d}; not replacing it"),
    (["host", "../h1"], "host name '../h1' is not valid"),
    (["controller", "--ip", "300.1.1.1"], "--ip '300.1.1.1' is not an IPv4 or IPv6 address"),
    (["show", "--dir", "{d}/nothing"], "no CA in {d}/nothing"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    argv = [a.format(d=d) for a in argv]
    rc, out, err = run(capsys, *argv, *([] if "--dir" in argv else ["--dir", d]))
    assert rc == 1 and out == ""
    assert err.startswith("weft: error: " + message.format(d=d)) and err.count("\n") == 1
