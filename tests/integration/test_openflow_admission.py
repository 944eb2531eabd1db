"""An OpenFlow side only real hosts can use (issue 8): impostors that claim a joined host's datapath id
from the same machine get no flows and leave the real host in sync; OpenFlow over TLS forwards."""
import os
import signal
import time

import pytest

from weft.testing import FakeSwitch


@pytest.fixture(scope="module")
def pair(make_lab):
    lab = make_lab(hosts=2, shared=False)
    lab.api.post("/v1/networks", {"name": "adm", "cidr": "10.31.0.0/24"})
    lab.attach("adm1", "h1", "adm")
    lab.attach("adm2", "h2", "adm")
    return lab


def datapath_id(lab, host):
    return int(lab.exec(host, "ovs-vsctl", "get", "Bridge", "br-int", "datapath_id").stdout.strip().strip('"'), 16)


def impostor(lab, dpid):
    """Connects a fake switch claiming dpid, waits for the controller to hang up on it; returns it."""
    fake = FakeSwitch(lab.info["ofp_port"], dpid)
    assert fake.closed.wait(15), "the controller did not close the impostor's connection"
    return fake


def host_in_sync(lab, host):
    status = lab.api.get(f"/v1/hosts/{host}")["status"]
    return status["openflow_connected"] and status.get("flows_in_sync", False)


def test_the_datapath_id_is_random_not_the_host_key(pair):
    dpids = {datapath_id(pair, h) for h in ("h1", "h2")}
    keys = {pair.api.get(f"/v1/hosts/{h}")["key"] for h in ("h1", "h2")}
    assert not dpids & keys and all(d > 2**32 for d in dpids)  # 64 random bits, not 1, 2...


def test_an_impostor_with_a_hosts_datapath_id_gets_no_flows_and_the_host_stays_in_sync(pair):
    before = pair.flow_cookies("h1")
    mods_before = pair.api.get("/v1/hosts/h1")["status"]["flow_mods"]
    fake = impostor(pair, datapath_id(pair, "h1"))
    assert FakeSwitch.FLOW_MOD not in fake.received and FakeSwitch.PACKET_OUT not in fake.received
    assert host_in_sync(pair, "h1")
    assert pair.api.get("/v1/hosts/h1")["status"]["flow_mods"] == mods_before  # the real one was not re-synced
    assert pair.flow_cookies("h1") == before
    assert pair.ping("adm2", pair.api.get("/v1/ports/adm1")["ip"])
    assert "refused the OpenFlow connection" in (pair.dir / "controller.log").read_text()


@pytest.mark.parametrize("what", ["unknown id", "the host's key", "the other host's id, twice"])
def test_impostors_are_refused_whatever_they_claim(pair, what):
    if what == "unknown id":
        claims = [0x0123456789abcdef]
    elif what == "the host's key":
        claims = [pair.api.get("/v1/hosts/h1")["key"]]
    else:
        claims = [datapath_id(pair, "h2")] * 2
    for dpid in claims:
        fake = impostor(pair, dpid)
        assert FakeSwitch.FLOW_MOD not in fake.received
    assert host_in_sync(pair, "h1") and host_in_sync(pair, "h2")


def test_after_impostors_the_real_host_resyncs_and_takes_new_ports(pair):
    for _ in range(3):
        impostor(pair, datapath_id(pair, "h1")).close()
    status = pair.reconnect_switch("h1")
    assert status["flows_in_sync"] or pair.wait_flows_in_sync("h1") is None
    port = pair.attach("adm3", "h1", "adm")
    assert pair.ping("adm2", port["ip"]) and pair.ping("adm3", pair.api.get("/v1/ports/adm1")["ip"])


def test_an_impostor_admitted_while_the_switch_was_away_gives_way_to_the_real_switch(pair):
    """h1's vswitchd stops answering (SIGSTOP): a fake switch with h1's datapath id takes its place,
    as the one-connection rule lets it (the live one missed its barrier). Once vswitchd is back, its
    new connection is the one h1's own OVSDB reports, younger than the fake's: the real switch takes
    h1 back, and h1 comes back in sync and forwards."""
    dpid = datapath_id(pair, "h1")
    vswitchd = next(e["pid"] for e in pair.info["pids"] if e["what"] == "h1 ovs-vswitchd")
    os.kill(vswitchd, signal.SIGSTOP)
    try:
        fake = FakeSwitch(pair.info["ofp_port"], dpid)
        assert logged(pair, "its switch did not answer a barrier", timeout=15)
        assert not fake.closed.is_set()  # admitted: the real switch was away
        time.sleep(3)  # so that vswitchd's next connection is clearly younger than the fake's
    finally:
        os.kill(vswitchd, signal.SIGCONT)
    assert fake.closed.wait(30), "the fake switch kept h1's place"
    assert logged(pair, "its own OVSDB says its switch connected after the live connection was admitted")
    deadline = time.monotonic() + 30
    while not host_in_sync(pair, "h1"):
        assert time.monotonic() < deadline, pair.api.get("/v1/hosts/h1")["status"]
        time.sleep(0.2)
    assert pair.ping("adm2", pair.api.get("/v1/ports/adm1")["ip"])
    port = pair.attach("adm4", "h1", "adm")
    assert pair.ping("adm2", port["ip"])


@pytest.fixture(scope="module")
def tls_pair(make_lab):
    lab = make_lab(hosts=2, tls=True, shared=False)
    lab.api.post("/v1/networks", {"name": "tls", "cidr": "10.32.0.0/24"})
    lab.attach("t1", "h1", "tls")
    lab.attach("t2", "h2", "tls")
    yield lab
    lab.down()


def logged(lab, text, timeout=5):
    deadline = time.monotonic() + timeout
    while text not in (lab.dir / "controller.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return text in (lab.dir / "controller.log").read_text()


def test_openflow_over_tls_forwards_and_checks_certificates(tls_pair):
    lab = tls_pair
    for host in ("h1", "h2"):
        target = lab.exec(host, "ovs-vsctl", "get-controller", "br-int").stdout.strip()
        assert target.startswith("ssl:")
    assert lab.ping("t1", lab.api.get("/v1/ports/t2")["ip"])
    # Plain TCP to the TLS listener gets no OpenFlow session: the handshake fails.
    fake = FakeSwitch(lab.info["ofp_port"], datapath_id(lab, "h1"))
    assert fake.closed.wait(15) and not fake.received
    assert logged(lab, "TLS handshake")
    assert host_in_sync(lab, "h1")


def test_a_valid_certificate_of_another_host_cannot_claim_a_hosts_datapath_id(tls_pair):
    """h2's own certificate (signed by the lab's CA, made by weft pki) gets through the TLS handshake,
    but the datapath id it announces is h1's: refused, for its certificate names h2, with no flows,
    and h1 stays in sync."""
    lab = tls_pair
    mods_before = lab.api.get("/v1/hosts/h1")["status"]["flow_mods"]
    pki = lab.dir / "pki"
    h2 = (str(pki / "hosts" / "h2-cert.pem"), str(pki / "hosts" / "h2-key.pem"), str(pki / "ca-cert.pem"))
    fake = FakeSwitch(lab.info["ofp_port"], datapath_id(lab, "h1"), tls=h2)
    assert fake.closed.wait(15), "the controller did not close the impostor's connection"
    assert FakeSwitch.FEATURES_REQUEST in fake.received  # it spoke OpenFlow over TLS: its handshake passed
    assert not {FakeSwitch.FLOW_MOD, FakeSwitch.PACKET_OUT, FakeSwitch.GROUP_MOD} & set(fake.received)
    assert logged(lab, "its certificate names 'h2', not host 'h1'")
    assert host_in_sync(lab, "h1") and lab.api.get("/v1/hosts/h1")["status"]["flow_mods"] == mods_before
    assert lab.ping("t2", lab.api.get("/v1/ports/t1")["ip"])
