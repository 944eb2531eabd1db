"""A controller restart, after SIGTERM or kill -9, loses no packet and replaces no flow (issue 11).
That holds through the gateway too because its next-hop MAC is stored in the NB's MAC_Binding table,
so the restarted controller compiles the gateway's UPLINK_OUT flow with it at once instead of
replacing it with a drop until ARP answers again. Measured on the switches: no flow of either host is
replaced, and 100/s echoes across hosts and through the gateway to the outside lose nothing."""
import signal
import time

import pytest


@pytest.fixture(scope="module")
def gatewayed(make_lab):
    lab = make_lab(hosts=2, shared=False, external=True)
    ext = lab.info["external"]
    lab.weft("network", "create", "blue", "--cidr", "10.31.1.0/24")
    lab.weft("router", "create", "r1")
    lab.weft("router", "attach", "r1", "blue")
    lab.attach("b1", "h1", "blue")
    lab.attach("b2", "h2", "blue")
    lab.weft("router", "set-gateway", "r1", "--host", ext["host"], "--uplink", ext["uplink"],
             "--ip", f"{ext['free_ips'][0]}/24", "--next-hop", ext["next_hop"])
    yield lab
    lab.down()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_controller_restart_replaces_no_flow_and_loses_no_echo(gatewayed, sig):
    lab, ext = gatewayed, gatewayed.info["external"]
    mac = lab.api.get("/v1/routers/r1")["gateway"]["next_hop_mac"]
    hosts = ("h1", "h2")
    for host in hosts:
        lab.wait_flows_in_sync(host)
    before = {h: lab.flow_ages(h) for h in hosts}
    b2 = lab.api.get("/v1/ports/b2")["ip"]
    with lab.echoes("b1", b2) as across, lab.echoes("b2", ext["next_hop"]) as through_gateway:
        with lab.controller_stopped(sig):
            time.sleep(2)
        time.sleep(1)  # the restarted controller's ARP refresh has answered meanwhile
    assert across["lost"] == 0, across
    assert through_gateway["lost"] == 0, through_gateway
    for host in hosts:
        after = lab.flow_ages(host)
        assert set(after) == set(before[host]), host
        replaced = [f for f in after if after[f] < before[host][f]]
        assert not replaced, (host, replaced)
    assert lab.api.get("/v1/routers/r1")["gateway"]["next_hop_mac"] == mac
