"""GET /metrics on a real controller, as Prometheus scrapes it, parsed with prometheus_client's own
parser: on a lab through the API's unix socket, before and after a container is attached; and on the
TCP listener, where a read-only token may scrape and a request without one may not."""
import http.client
import os
import secrets
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from running_controller import running_controller  # tests/integration is on sys.path
from weft import lab as weftlab
from weft.client import UnixHTTPConnection, path as api_path

READ_ONLY = "metrics-ro-" + secrets.token_hex(12)


def parse(status, content_type, text):
    """{(sample name, frozenset of its labels): value}, checking the answer is the text format."""
    assert status == 200, text
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(conn, path, headers):
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read().decode()
    finally:
        conn.close()


def scrape_unix(lab):
    return parse(*get(UnixHTTPConnection(lab.info["api"][len("unix:"):], 10), "/metrics", {"Host": "localhost"}))


def total(samples, name, **labels):
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab()


@pytest.fixture
def network(lab):
    name = f"met{secrets.token_hex(3)}"
    lab.api.post("/v1/networks", {"name": name, "cidr": "10.62.0.0/24"})
    made = []
    yield name, made
    for container in made:
        weftlab.container_del(lab.name, container)
    for port in lab.api.get(api_path("ports") + f"?network={name}"):
        lab.api.delete(api_path("ports", port["name"]) + "?force=true")
    lab.api.delete(api_path("networks", name))


def test_a_scrape_shows_the_lab_and_rises_as_a_port_is_attached(lab, network):
    net, made = network
    first = f"{net}a"
    made.append(first)
    lab.attach(first, "h1", net)  # so h1 holds flows of this network before the scrape
    for host in lab.info["hosts"]:  # settled (the attach's last batches checked), so that the scrape
        lab.wait_flows_in_sync(host)  # and the API, read one after the other, see the same flags
    before = scrape_unix(lab)
    hosts = sorted(lab.api.get("/v1/hosts"), key=lambda h: h["name"])
    for host in hosts:
        name, status = host["name"], host["status"]
        for flag in ("ovsdb_connected", "openflow_connected", "ready", "flows_in_sync"):
            assert before[("weft_host_" + flag, frozenset({("host", name)}))] == float(bool(status.get(flag))), flag
        for state in ("connecting", "up", "down"):  # 1 for the state the API reports, 0 for the others
            assert before[("weft_host_state", frozenset({("host", name), ("state", state)}))] == \
                (state == status["state"]), state
    assert total(before, "weft_nb_connected") == 1
    assert total(before, "weft_controller_role", role="active") == 1
    assert total(before, "weft_ports") == len(lab.api.get("/v1/ports"))

    second = f"{net}b"
    made.append(second)
    port = lab.attach(second, "h2", net)
    assert port["up"], port
    # What the controller compiled is in at once; what the switch acknowledged, once its batch is.
    deadline = time.monotonic() + 10
    while True:
        after = scrape_unix(lab)
        if total(after, "weft_switch_flows", host="h2") > total(before, "weft_switch_flows", host="h2") \
                or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert total(after, "weft_flows", host="h2") > total(before, "weft_flows", host="h2")
    assert total(after, "weft_switch_flows", host="h2") > total(before, "weft_switch_flows", host="h2")
    assert total(after, "weft_flows", host="h2", table="L2_LOOKUP") > total(before, "weft_flows", host="h2",
                                                                          table="L2_LOOKUP")
    assert total(after, "weft_flow_mods_total", host="h2") > total(before, "weft_flow_mods_total", host="h2")
    assert total(after, "weft_flow_batches_total", host="h2") > total(before, "weft_flow_batches_total", host="h2")
    assert total(after, "weft_port_up_seconds_count") == total(before, "weft_port_up_seconds_count") + 1
    assert total(after, "weft_port_up_seconds_sum") > total(before, "weft_port_up_seconds_sum")
    assert total(after, "weft_ports") == total(before, "weft_ports") + 1
    assert total(after, "weft_ports_up") == total(before, "weft_ports_up") + 1
    assert total(after, "weft_api_request_seconds_count", method="POST", code="2xx") \
        > total(before, "weft_api_request_seconds_count", method="POST", code="2xx")
    assert total(after, "process_resident_memory_bytes") > 0


@pytest.fixture(scope="module")
def controller():
    with running_controller("weft-metrics-", tcp=True) as ctl:
        directory = ctl.token_file.parent / "read-only"
        directory.mkdir(mode=0o700, exist_ok=True)
        token = directory / "prometheus"
        token.write_text(READ_ONLY + "\n")
        os.chmod(token, 0o600)
        yield ctl


def scrape_tcp(ctl, token=None, host=None):
    headers = {"Host": host or f"127.0.0.1:{ctl.api_port}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return get(http.client.HTTPConnection("127.0.0.1", ctl.api_port, timeout=10), "/metrics", headers)


def test_over_tcp_a_read_only_token_scrapes_and_no_token_does_not(controller):
    samples = parse(*scrape_tcp(controller, READ_ONLY))
    assert total(samples, "weft_nb_connected") == 1
    status, content_type, body = scrape_tcp(controller)
    assert status == 401 and content_type == "application/json" and "bearer token" in body
    assert scrape_tcp(controller, "not-the-token-0123456789")[0] == 401
    assert scrape_tcp(controller, READ_ONLY, host="metrics.example:80")[0] == 421
    # The refusals are counted like any other answer, by status class.
    samples = parse(*scrape_tcp(controller, READ_ONLY))
    assert total(samples, "weft_api_request_seconds_count", method="GET", code="4xx") >= 3
