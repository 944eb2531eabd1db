"""A host that stops answering: when it is down (controller.liveness) and what the compiler then
keeps on the other hosts (no tunnel to its ports), restored exactly when it is back."""
import dataclasses

from controller.config import Config, check
from controller.liveness import Liveness
from flows.compiler import Compiler, port_cookie
from flows.examples import small_topology
from flows.pipeline import TUNNEL_OFPORT

import pytest


def test_a_host_is_down_once_silent_past_the_grace_and_up_again_at_its_next_answer():
    live = Liveness(grace=5)
    live.expect("h1", 90.0)
    assert not live.answered("h1", 100.0)
    assert live.state("h1", connected=True) == "up"
    assert live.expired(105.0) == []           # exactly the grace: not yet
    assert live.expired(105.1) == ["h1"]
    assert live.expired(200.0) == []           # said once
    assert live.is_down("h1") and live.state("h1", connected=True) == "down"
    assert live.silent_for("h1", 107.0) == 7.0
    assert live.answered("h1", 201.0)          # back
    assert live.state("h1", connected=True) == "up"
    assert live.state("h1", connected=False) == "connecting"  # reconnecting, within the grace
    live.expect("h1", 300.0)                   # known already: no new clock
    assert live.expired(206.1) == ["h1"]
    live.forget("h1")
    assert live.silent_for("h1", 202.0) is None and live.expired(1000.0) == []


def test_a_host_never_seen_is_connecting_for_the_grace_and_the_reconnect_margin_then_down():
    live = Liveness(grace=5, first_answer_margin=9)
    assert live.expired(100.0) == []           # not known to this controller: nothing to wait for
    live.expect("h1", 100.0)                   # the controller started, or the host joined
    live.expect("h1", 110.0)                   # a later pass: the clock runs from the first
    assert live.state("h1", connected=False) == "connecting"
    assert live.expired(114.0) == []           # a switch on vswitchd's 8 s back-off is not down
    assert live.expired(114.1) == ["h1"] and live.expired(120.0) == []
    assert live.state("h1", connected=False) == "down" and live.silent_for("h1", 120.0) is None
    assert live.answered("h1", 130.0)          # it connects at last: up, on the normal grace now
    assert live.state("h1", connected=True) == "up"
    assert live.expired(135.0) == [] and live.expired(135.1) == ["h1"]
    live.forget("h1")
    live.expect("h1", 200.0)                   # left and joined again: a new first clock
    assert live.expired(214.0) == [] and live.expired(214.1) == ["h1"]


def _tunnels_to(flows, encap_ip):
    return {f for owned in flows.values() for f in owned
            if ("set_field", "tun_ipv4_dst", encap_ip) in getattr(f, "actions", ()) and ("output", TUNNEL_OFPORT) in f.actions}


def test_peers_keep_no_tunnel_to_a_down_hosts_ports_and_get_them_back_by_difference():
    topo = small_topology()
    compiler = Compiler()
    compiler.update(topo)
    h2 = topo.hosts["h2"]
    before = {host: dict(flows) for host, flows in compiler.flows.items()}
    assert _tunnels_to(compiler.flows["h1"], h2.encap_ip)  # port b of h2, seen from h1

    down = topo.replace(hosts=[dataclasses.replace(h2, up=False)])
    changes = compiler.update(down)
    b = port_cookie(topo.ports["b"])
    assert set(changes.get("h1", {})) == {b}  # only b's flows on h1 change
    assert not _tunnels_to(compiler.flows["h1"], h2.encap_ip)
    assert compiler.flows["h1"][b]  # its ARP answer stays
    assert compiler.flows["h2"] == before["h2"]  # the down host's own flows are what it still has

    changes = compiler.update(down.replace(hosts=[h2]))
    assert set(changes.get("h1", {})) == {b}
    assert {host: dict(flows) for host, flows in compiler.flows.items()} == before


@pytest.mark.parametrize("value", [0, 3601])
def test_host_down_after_out_of_range_is_refused_by_name(value):
    with pytest.raises(ValueError, match=r"\[weft\] host_down_after: .* out of range"):
        check(Config(host_down_after=value))


def test_a_down_hosts_backends_get_no_new_connections_but_stay_endpoints():
    from collections import Counter
    from flows.model import Group
    from flows.policy import ServicePort
    from test_services import request, service, with_services
    three = service(selector=(("tier", "x"),), ports=(ServicePort("", "TCP", 80, 80),))
    topo = with_services(three, relabel={"web": {"tier": "x"}, "db": {"tier": "x"}, "cli": {"tier": "x"}})
    assert topo.bindings["db"].host == "h2"
    down = topo.replace(hosts=[dataclasses.replace(topo.hosts["h2"], up=False)])
    compiler = Compiler()
    compiler.update(down)
    [group] = [e for e in compiler.flows["h1"][8 << 40 | 7] if isinstance(e, Group)]
    assert len(group.buckets) == 2
    hits = Counter(request(down, "dcli", sport=s)[0].verdict.port for s in range(40000, 40060))
    assert set(hits) == {"web", "cli"}
    # Still an endpoint: its connections are not flushed, and go on if h2 comes back.
    assert any(address == topo.ports["db"].ip for _, address, _ in compiler.backend_endpoints)
    compiler.update(down.replace(hosts=[topo.hosts["h2"]]))
    [group] = [e for e in compiler.flows["h1"][8 << 40 | 7] if isinstance(e, Group)]
    assert len(group.buckets) == 3
