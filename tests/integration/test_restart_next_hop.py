"""A gateway's next-hop MAC survives a controller restart (issue 11): it is stored in the NB's
MAC_Binding table, so the restarted controller compiles the gateway's UPLINK_OUT flow with it at once
instead of replacing it with a drop until ARP answers again. Measured on the switch: no flow of the
gateway host is replaced, and a 100/s echo through the gateway to the outside loses nothing."""
import time

import pytest


@pytest.fixture(scope="module")
def gatewayed(make_lab):
    lab = make_lab(hosts=2, shared=False, external=True)
    ext = lab.info["external"]
    lab.weft("network", "create", "blue", "--cidr", "10.31.1.0/24")
    lab.weft("router", "create", "r1")
    lab.weft("router", "attach", "r1", "blue")
    lab.attach("b2", "h2", "blue")
    lab.weft("router", "set-gateway", "r1", "--host", ext["host"], "--uplink", ext["uplink"],
             "--ip", f"{ext['free_ips'][0]}/24", "--next-hop", ext["next_hop"])
    yield lab
    lab.down()


def test_a_controller_restart_replaces_no_flow_on_the_gateway_and_loses_no_echo(gatewayed):
    lab, ext = gatewayed, gatewayed.info["external"]
    mac = lab.api.get("/v1/routers/r1")["gateway"]["next_hop_mac"]
    hosts = ("h1", "h2")
    for host in hosts:
        lab.wait_flows_in_sync(host)
    before = {h: lab.flow_ages(h) for h in hosts}
    with lab.echoes("b2", ext["next_hop"]) as report:
        with lab.controller_stopped():
            time.sleep(2)
        time.sleep(1)  # the restarted controller's ARP refresh has answered meanwhile
    assert report["lost"] == 0, report
    for host in hosts:
        after = lab.flow_ages(host)
        assert set(after) == set(before[host]), host
        replaced = [f for f in after if after[f] < before[host][f]]
        assert not replaced, (host, replaced)
    assert lab.api.get("/v1/routers/r1")["gateway"]["next_hop_mac"] == mac
