"""Only the operator can drive the API (issue 8): a real controller, its unix socket and its TCP
listener, tried as an unprivileged user and as a web page would (wrong content type, foreign Host)."""
import grp
import http.client
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

import pytest

from weft.client import ApiError
from running_controller import running_controller  # tests/integration is on sys.path
from weft.testing import Controller, eventually

NOBODY = 65534
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NETWORK = {"name": "blue", "cidr": "10.7.0.0/24"}


@pytest.fixture(scope="module")
def controller():
    with running_controller("weft-api-security-", tcp=True) as ctl:
        for package in ("weft", "controller"):  # what the CLI imports, readable for `nobody` (below)
            shutil.copytree(os.path.join(REPO, package), ctl.dir / "client" / package)
        yield ctl


def tcp_request(ctl, method, path, body=None, token="admin", headers=None, content_type="application/json"):
    """A raw HTTP request to the TCP listener: (status, decoded JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", ctl.api_port, timeout=10)
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    sent = {"Host": f"127.0.0.1:{ctl.api_port}", **({"Content-Type": content_type} if content_type else {})}
    if token == "admin":
        token = ctl.token_file.read_text().strip()
    if token:
        sent["Authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def as_nobody(ctl, *argv):
    """Runs `python3 argv...` as user nobody, with a copy of weft/ and controller/ (the CLI needs only
    the standard library) that nobody may read, and the system Python (a venv's may sit under /root)."""
    return subprocess.run([_python(), *argv], user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True,
                          text=True, timeout=60, cwd="/", env=_client_env(ctl))


def _python():
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _client_env(ctl):
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ctl.dir / "client"), "HOME": "/"}


def test_the_socket_is_owned_by_root_and_not_open_to_others(controller):
    info = os.stat(controller.socket)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660 and (info.st_uid, info.st_gid) == (0, 0)


def test_an_unprivileged_user_cannot_drive_weft_through_the_socket(controller):
    before = controller.nb_rows()
    code = ("import os, socket, sys; os.stat(sys.argv[1]); s = socket.socket(socket.AF_UNIX); "
            "s.connect(sys.argv[1])")
    result = as_nobody(controller, "-c", code, str(controller.socket))
    assert result.returncode != 0 and "PermissionError" in result.stderr, result.stderr
    assert "os.stat" not in result.stderr.splitlines()[-2]  # it could see the socket, not connect to it
    result = as_nobody(controller, "-m", "weft.cli", "--api", f"unix:{controller.socket}",
                       "network", "create", "evil", "--cidr", "10.66.0.0/24")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"weft: error: permission denied on {controller.socket}: only root and the socket's group may "
        "drive Weft (run as root, or ask for that group)"]
    assert controller.nb_rows() == before


@pytest.fixture
def weft_group():
    """A system group and two system users, one in it, one not, with names of their own (made with
    groupadd/useradd, removed afterwards): (group, member, outsider)."""
    suffix = uuid.uuid4().hex[:8]
    group, member, outsider = f"weftg{suffix}", f"weftm{suffix}", f"wefto{suffix}"
    subprocess.run(["groupadd", "--system", group], check=True)
    made = []
    try:
        for user, groups in ((member, [group]), (outsider, [])):
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            *(["--groups", ",".join(groups)] if groups else []), user], check=True)
            made.append(user)
        yield group, member, outsider
    finally:
        for user in made:
            subprocess.run(["userdel", user], check=True)
        subprocess.run(["groupdel", group], check=True)


def as_user(ctl, user, *argv):
    """`python3 argv...` as `user` (runuser: its own groups, as a login of it would have them)."""
    return subprocess.run(["runuser", "-u", user, "--", _python(), *argv], capture_output=True, text=True,
                          timeout=60, cwd="/", env=_client_env(ctl))


def test_a_user_in_the_api_socket_group_drives_weft_and_one_outside_it_cannot(weft_group):
    group, member, outsider = weft_group
    with running_controller("weft-api-group-", conf_extra=f"api_socket_group = {group}\n") as ctl:
        for package in ("weft", "controller"):
            shutil.copytree(os.path.join(REPO, package), ctl.dir / "client" / package)
        info = os.stat(ctl.socket)
        assert stat.S_IMODE(info.st_mode) == 0o660 and (info.st_uid, info.st_gid) == (0, grp.getgrnam(group).gr_gid)
        cli = ["-m", "weft.cli", "--api", f"unix:{ctl.socket}"]
        before = ctl.nb_rows()
        result = as_user(ctl, outsider, *cli, "network", "create", "evil", "--cidr", "10.66.0.0/24")
        assert result.returncode == 1 and result.stderr.splitlines() == [
            f"weft: error: permission denied on {ctl.socket}: only root and the socket's group may drive Weft "
            "(run as root, or ask for that group)"], result.stderr
        assert ctl.nb_rows() == before
        result = as_user(ctl, member, *cli, "network", "create", "ours", "--cidr", "10.67.0.0/24")
        assert result.returncode == 0, result.stderr
        assert ctl.api.get("/v1/networks/ours")["cidr"] == "10.67.0.0/24"
        uid = pwd.getpwnam(member).pw_uid
        assert f"POST /v1/networks by uid {uid} ({member}) on the unix socket -> 201" in ctl.log(20000)
        result = as_user(ctl, member, *cli, "network", "delete", "ours")
        assert result.returncode == 0 and ctl.nb_rows() == before, result.stderr


def test_the_tcp_listener_binds_loopback_only(controller):
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{controller.api_port}"], capture_output=True,
                               text=True).stdout
    assert [line.split()[3] for line in listening.splitlines()] == [f"127.0.0.1:{controller.api_port}"]


def test_the_admin_token_is_readable_by_root_only(controller):
    info = os.stat(controller.token_file)
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0
    assert stat.S_IMODE(os.stat(controller.token_file.parent).st_mode) == 0o700


@pytest.mark.parametrize("token,words", [
    (None, ["needs a bearer token"]),
    ("not-the-token-at-all-0123456789", ["not valid"]),
    ("", ["needs a bearer token"]),
])
def test_tcp_without_the_right_token_is_refused_and_changes_nothing(controller, token, words):
    before = controller.nb_rows()
    for method, path, body in (("GET", "/v1/networks", None), ("POST", "/v1/networks", NETWORK)):
        status, answer = tcp_request(controller, method, path, body, token=token)
        assert status == 401 and all(w in answer["error"] for w in words), answer
    assert controller.nb_rows() == before


def test_a_write_that_is_not_json_is_refused_even_with_the_token(controller):
    before = controller.nb_rows()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        status, answer = tcp_request(controller, "POST", "/v1/networks", json.dumps(NETWORK).encode(),
                                     content_type=content_type)
        assert status == 415 and "application/json" in answer["error"], (content_type, answer)
    assert controller.nb_rows() == before


@pytest.mark.parametrize("host", ["evil.example", "evil.example:1234", "localhost.evil.example", "", "127.0.0.2"])
def test_a_foreign_host_header_is_refused(controller, host):
    before = controller.nb_rows()
    status, answer = tcp_request(controller, "POST", "/v1/networks", NETWORK, headers={"Host": host})
    assert status == 421 and "does not name this API" in answer["error"], answer
    assert controller.nb_rows() == before


def test_the_listeners_own_names_are_accepted(controller):
    for host in (f"127.0.0.1:{controller.api_port}", f"localhost:{controller.api_port}", "127.0.0.1"):
        status, answer = tcp_request(controller, "GET", "/v1/status", headers={"Host": host})
        assert status == 200, (host, answer)


def test_a_foreign_host_header_on_the_unix_socket_is_refused(controller):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(controller.socket))
    sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    answer = b"".join(iter(lambda: sock.recv(65536), b""))
    sock.close()
    assert answer.startswith(b"HTTP/1.1 421")


def test_with_the_token_a_write_works_and_is_logged_with_its_caller(controller):
    status, answer = tcp_request(controller, "POST", "/v1/networks", NETWORK)
    assert status == 201, answer
    status, answer = tcp_request(controller, "DELETE", "/v1/networks/blue")
    assert status == 200, answer
    log = controller.log(20000)
    assert "POST /v1/networks by token admin from 127.0.0.1 -> 201" in log
    controller.api.post("/v1/networks", {"name": "green", "cidr": "10.8.0.0/24"})
    assert "POST /v1/networks by uid 0 (root) on the unix socket -> 201" in controller.log(20000)
    controller.api.delete("/v1/networks/green")


def test_a_read_only_token_reads_but_cannot_write(controller):
    directory = controller.token_file.parent / "read-only"
    directory.mkdir(mode=0o700, exist_ok=True)
    token = directory / "monitor"
    token.write_text("ro-secret-0123456789abcdef\n")
    os.chmod(token, 0o600)
    try:
        before = controller.nb_rows()
        assert tcp_request(controller, "GET", "/v1/networks", token="ro-secret-0123456789abcdef")[0] == 200
        status, answer = tcp_request(controller, "POST", "/v1/networks", NETWORK, token="ro-secret-0123456789abcdef")
        assert status == 403 and "may only read" in answer["error"]
        for path in ("/v1/policies", "/v1/services"):
            assert tcp_request(controller, "GET", path, token="ro-secret-0123456789abcdef")[0] == 200
        for method, path, body in (("POST", "/v1/apply", {"documents": [], "plan": True}),
                                   ("DELETE", "/v1/policies/blue/x", None), ("DELETE", "/v1/services/blue/x", None)):
            status, answer = tcp_request(controller, method, path, body, token="ro-secret-0123456789abcdef")
            assert status == 403 and "may only read" in answer["error"], (method, path)
        assert controller.nb_rows() == before
    finally:
        token.unlink()


def test_a_token_file_others_can_read_is_ignored(controller):
    token = controller.token_file.parent / "careless"
    token.write_text("careless-secret-0123456789\n")
    os.chmod(token, 0o644)
    try:
        assert tcp_request(controller, "GET", "/v1/networks", token="careless-secret-0123456789")[0] == 401
        assert "ignoring token file" in controller.log(20000)
    finally:
        token.unlink()


def test_the_cli_finds_the_token_from_its_file_and_says_when_refused(controller, tmp_path):
    env = {**os.environ, "WEFT_API": controller.url, "PYTHONPATH": os.getcwd()}
    ok = subprocess.run([sys.executable, "-m", "weft.cli", "--token-file", str(controller.token_file), "status"],
                        env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "NB:" in ok.stdout, ok.stderr
    refused = subprocess.run([sys.executable, "-m", "weft.cli", "status"], env=env, capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "weft: error: this API needs a bearer token over TCP (Authorization: Bearer TOKEN; weft --token-file "
        "FILE, or WEFT_TOKEN_FILE) (give a token with --token-file FILE or WEFT_TOKEN_FILE)"]
    config = tmp_path / "client.conf"
    config.write_text(f"[api]\nurl = {controller.url}\ntoken_file = {controller.token_file}\n")
    env = {**os.environ, "WEFT_CONFIG": str(config), "PYTHONPATH": os.getcwd()}
    env.pop("WEFT_API", None)
    from_config = subprocess.run([sys.executable, "-m", "weft.cli", "status"], env=env, capture_output=True,
                                 text=True)
    assert from_config.returncode == 0, from_config.stderr


@pytest.fixture(scope="module")
def unbound_port(controller):
    controller.api.post("/v1/networks", {"name": "waits", "cidr": "10.9.0.0/24"})
    controller.api.post("/v1/ports", {"name": "p", "network": "waits"})
    return "p"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "-1", "61", "1e3", "٣", "10s", ""])
def test_a_wait_that_is_not_a_finite_bounded_number_is_refused(controller, unbound_port, value):
    status, answer = tcp_request(controller, "GET", f"/v1/ports/{unbound_port}?wait_up={urllib.parse.quote(value)}")
    assert status == 400 and "wait_up" in answer["error"], answer


def test_a_bounded_wait_answers_when_its_time_is_over(controller, unbound_port):
    status, answer = tcp_request(controller, "GET", f"/v1/ports/{unbound_port}?wait_up=0.2")
    assert status == 200 and answer["up"] is False


def test_one_callers_waits_are_capped_and_others_are_still_served(controller, unbound_port):
    from controller.http import MAX_WAITS_PER_CALLER
    statuses = []

    def wait():
        try:
            controller.api.get(f"/v1/ports/{unbound_port}?wait_up=10")
            statuses.append(200)
        except ApiError as err:
            statuses.append(err.status)
    waiters = [threading.Thread(target=wait) for _ in range(MAX_WAITS_PER_CALLER)]
    for waiter in waiters:
        waiter.start()

    def all_in_flight():  # a probe that waits 0 s: answered at once while the cap is not reached
        try:
            controller.api.get(f"/v1/ports/{unbound_port}?wait_up=0")
            return False
        except ApiError as err:
            return err.status == 429
    eventually(all_in_flight, timeout=8, what=f"{MAX_WAITS_PER_CALLER} waits in flight")
    assert statuses == []
    with pytest.raises(ApiError) as refused:  # root, over the socket, is one caller
        controller.api.get(f"/v1/ports/{unbound_port}?wait_up=4")
    assert refused.value.status == 429 and "waiting requests in flight" in refused.value.message
    started = time.monotonic()
    assert tcp_request(controller, "GET", f"/v1/ports/{unbound_port}")[0] == 200  # another caller: served
    assert time.monotonic() - started < 3  # not held back until the waits end, 10 s after they began
    for waiter in waiters:
        waiter.join(timeout=25)
    assert statuses == [200] * MAX_WAITS_PER_CALLER


def test_the_tcp_api_over_https_with_client_certificates(tmp_path, monkeypatch):
    """The documented TLS option: a server certificate (here from `weft pki`), and client
    certificates required when api_tls_client_ca is set; the token is still needed."""
    from weft import pki
    d = str(tmp_path / "pki")
    pki.init_ca(d)
    server, client = pki.issue_controller(d, ips=["127.0.0.1"]), pki.issue_client(d, "operator")
    ctl = Controller(tmp_path / "ctl", tcp=True, conf_extra=f"api_tls_cert = {server.cert}\n"
                     f"api_tls_key = {server.key}\napi_tls_client_ca = {server.ca_cert}\n")
    try:
        url = f"https://127.0.0.1:{ctl.api_port}"
        import ssl
        context = ssl.create_default_context(cafile=server.ca_cert)
        context.load_cert_chain(client.cert, client.key)
        conn = http.client.HTTPSConnection("127.0.0.1", ctl.api_port, context=context, timeout=10)
        conn.request("GET", "/v1/status", headers={"Authorization": f"Bearer {ctl.token_file.read_text().strip()}"})
        assert conn.getresponse().status == 200
        conn.close()
        # Without a client certificate the handshake fails; the weft client says so in one line.
        from weft.client import ApiClient
        with pytest.raises(ApiError) as refused:
            ApiClient(url, token_file=str(ctl.token_file), ca_file=server.ca_cert).get("/v1/status")
        assert refused.value.status is None and "TLS" in refused.value.message, refused.value.message
        monkeypatch.setenv("WEFT_CERT_FILE", client.cert)
        monkeypatch.setenv("WEFT_KEY_FILE", client.key)
        assert ApiClient(url, token_file=str(ctl.token_file), ca_file=server.ca_cert).get("/v1/status")["nb"]
        # Plain HTTP to the HTTPS listener gets nothing it could use.
        with pytest.raises((OSError, http.client.HTTPException)):
            plain = http.client.HTTPConnection("127.0.0.1", ctl.api_port, timeout=5)
            plain.request("GET", "/v1/status")
            plain.getresponse()
    finally:
        ctl.stop()
