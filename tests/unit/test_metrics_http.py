"""GET /metrics behind the API's own rules (controller/http.py), and the API latency it records."""
import io
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.http import HostCheck, HttpFront, Peer, TokenStore

READ_ONLY = "ro-secret-0123456789abcdef"


@pytest.fixture
def front(core, api, tmp_path):
    tokens = TokenStore(str(tmp_path / "tokens"))
    tokens.ensure_admin()
    os.makedirs(tmp_path / "tokens" / "read-only", mode=0o700)
    path = tmp_path / "tokens" / "read-only" / "prometheus"
    path.write_text(READ_ONLY + "\n")
    os.chmod(path, 0o600)
    checks = {"unix": HostCheck("unix"), "tcp": HostCheck("tcp", bound_ip="127.0.0.1", port=8080)}
    return HttpFront(api, tokens, checks, metrics=core.metrics)


def request(front, method, path, listener="unix", host=None, token=None, body=b""):
    """(status, content type, body bytes)."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
               "HTTP_HOST": host or ("localhost" if listener == "unix" else "127.0.0.1:8080"),
               "weft.peer": Peer(listener, "0" if listener == "unix" else "127.0.0.1"),
               "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    if token:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    answer = {}

    def start_response(status, headers):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)
    data = b"".join(front(environ, start_response))
    return answer["status"], answer["headers"]["Content-Type"], data


def families(data):
    return {f.name: f for f in text_string_to_metric_families(data.decode())}


def test_the_unix_socket_scrapes_in_the_text_format(front):
    status, content_type, data = request(front, "GET", "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert "weft_nb_connected" in families(data)


def test_over_tcp_a_scrape_needs_a_token_and_a_read_only_one_will_do(front):
    status, content_type, data = request(front, "GET", "/metrics", listener="tcp")
    assert status == 401 and content_type == "application/json" and b"bearer token" in data
    assert request(front, "GET", "/metrics", listener="tcp", token="not-a-token-0123456789")[0] == 401
    status, _, data = request(front, "GET", "/metrics", listener="tcp", token=READ_ONLY)
    assert status == 200 and "weft_ports" in families(data)


def test_a_foreign_host_header_or_another_method_is_refused(front):
    assert request(front, "GET", "/metrics", host="evil.example")[0] == 421
    assert request(front, "GET", "/metrics", listener="tcp", host="evil.example:8080", token=READ_ONLY)[0] == 421
    status, _, data = request(front, "POST", "/metrics", body=b"{}")
    assert status == 405 and b"allowed: GET" in data
    assert request(front, "POST", "/metrics", listener="tcp", token=READ_ONLY, body=b"{}")[0] == 403
    assert request(front, "GET", "/metrics/x")[0] == 404  # only /metrics itself; the rest is the API's


def test_api_requests_are_timed_by_method_and_status_class(front, core):
    request(front, "GET", "/v1/networks")
    request(front, "GET", "/v1/nothing")
    request(front, "POST", "/v1/networks", body=b'{"name": "blue", "cidr": "10.0.0.0/24"}')
    counts = {(s.labels["method"], s.labels["code"]): s.value
              for s in families(request(front, "GET", "/metrics")[2])["weft_api_request_seconds"].samples
              if s.name == "weft_api_request_seconds_count"}
    assert counts == {("GET", "2xx"): 1, ("GET", "4xx"): 1, ("POST", "2xx"): 1}


def test_a_5xx_answer_counts_as_an_api_error(front, core, monkeypatch):
    def broken(*args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(front.api, "handle", broken)
    assert request(front, "GET", "/v1/networks")[0] == 500
    assert core.counters.get("errors", kind="api_5xx") == 1
    status, _, data = request(front, "GET", "/metrics")  # /metrics is not the API's: it still answers
    errors = {s.labels["kind"]: s.value for s in families(data)["weft_errors"].samples}
    assert status == 200 and errors["api_5xx"] == 1
