"""Labels and named ports through the API, on a real embedded NB: set at create, replaced whole with
PUT, listed by selector, refused with the field named (and nothing changed), and seen by the compiler."""
import time

import pytest

from test_api import call  # tests/unit is on sys.path


@pytest.fixture
def labelled(api):
    assert call(api, "POST", "/v1/networks", {"name": "prod", "cidr": "10.0.0.0/24",
                                              "labels": {"env": "prod"}})[0] == 201
    assert call(api, "POST", "/v1/networks", {"name": "dev", "cidr": "10.1.0.0/24"})[0] == 201
    for name, network, labels in (("web1", "prod", {"app": "web", "tier": "front"}),
                                  ("web2", "dev", {"app": "web"}),
                                  ("db1", "prod", {"app": "db", "tier": "db"}),
                                  ("bare", "dev", None)):
        body = {"name": name, "network": network, **({"labels": labels} if labels else {})}
        assert call(api, "POST", "/v1/ports", body)[0] == 201
    return api


def names(answer):
    status, items = answer
    assert status == 200, items
    return [item["name"] for item in items]


def test_labels_and_named_ports_given_at_create_are_shown(api):
    status, net = call(api, "POST", "/v1/networks", {"name": "blue", "cidr": "10.0.0.0/24",
                                                     "labels": {"project": "p1"}})
    assert status == 201 and net["labels"] == {"project": "p1"}
    status, port = call(api, "POST", "/v1/ports", {"name": "p1", "network": "blue", "labels": {"app": "web"},
                                                   "named_ports": {"http": "tcp/8080", "dns": "UDP/53"}})
    assert status == 201
    assert port["labels"] == {"app": "web"} and port["named_ports"] == {"http": "TCP/8080", "dns": "UDP/53"}
    assert call(api, "GET", "/v1/ports/p1")[1]["named_ports"] == {"http": "TCP/8080", "dns": "UDP/53"}
    assert call(api, "GET", "/v1/networks/blue")[1]["labels"] == {"project": "p1"}
    status, plain = call(api, "POST", "/v1/ports", {"name": "p2", "network": "blue"})
    assert (plain["labels"], plain["named_ports"]) == ({}, {})


def test_put_replaces_the_whole_map(labelled):
    status, port = call(labelled, "PUT", "/v1/ports/web1/labels", {"labels": {"app": "api", "new": ""}})
    assert status == 200 and port["labels"] == {"app": "api", "new": ""}  # tier is gone
    assert call(labelled, "GET", "/v1/ports/web1")[1]["labels"] == {"app": "api", "new": ""}
    status, net = call(labelled, "PUT", "/v1/networks/prod/labels", {"labels": {}})
    assert status == 200 and net["labels"] == {}
    status, port = call(labelled, "PUT", "/v1/ports/web1/named_ports", {"named_ports": {"metrics": "TCP/9090"}})
    assert status == 200 and port["named_ports"] == {"metrics": "TCP/9090"}
    assert port["labels"] == {"app": "api", "new": ""}  # the other map is left alone


@pytest.mark.parametrize("selector,expected", [
    ("app=web", ["web1", "web2"]),
    ("app=web,tier!=db", ["web1", "web2"]),
    ("tier!=db", ["bare", "web1", "web2"]),  # a port without the key: not equal
    ("tier", ["db1", "web1"]),
    ("!tier", ["bare", "web2"]),
    ("app in (db, web),tier notin (front)", ["db1", "web2"]),
    ("app=nothing", []),
    ("", ["bare", "db1", "web1", "web2"]),
])
def test_ports_listed_by_selector(labelled, selector, expected):
    assert names(call(labelled, "GET", "/v1/ports", query=f"selector={selector}")) == expected


def test_selector_and_network_filters_combine(labelled):
    assert names(call(labelled, "GET", "/v1/ports", query="selector=app%3Dweb&network=dev")) == ["web2"]


def test_networks_listed_by_selector(labelled):
    assert names(call(labelled, "GET", "/v1/networks", query="selector=env=prod")) == ["prod"]
    assert names(call(labelled, "GET", "/v1/networks", query="selector=!env")) == ["dev"]


def nb_labels(core):
    state = core.nb_state()
    return ({n: (x.labels,) for n, x in state.networks.items()},
            {n: (p.labels, p.named_ports) for n, p in state.ports.items()})


BAD = [
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24", "labels": {"Bad Key": "v"}}, 400,
     ["labels", "'Bad Key'"]),
    ("POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24", "labels": ["app=web"]}, 400,
     ["labels", "expected an object"]),
    ("POST", "/v1/ports", {"name": "x", "network": "dev", "labels": {"app": "-"}}, 400, ["labels.app"]),
    ("POST", "/v1/ports", {"name": "x", "network": "dev", "named_ports": {"http": "TCP/0"}}, 400,
     ["named_ports.http", "out of range"]),
    ("POST", "/v1/ports", {"name": "x", "network": "dev", "named_ports": {"Http": "TCP/80"}}, 400,
     ["named_ports", "'Http'"]),
    ("PUT", "/v1/ports/web1/labels", {"labels": {"app": "x" * 64}}, 400, ["labels.app", "not a valid label value"]),
    ("PUT", "/v1/ports/web1/labels", {"app": "web"}, 400, ["app", "unknown field", "labels"]),
    ("PUT", "/v1/ports/web1/labels", {}, 400, ["labels", "required"]),
    ("PUT", "/v1/ports/web1/labels", {"labels": "app=web"}, 400, ["labels", "expected an object"]),
    ("PUT", "/v1/ports/nope/labels", {"labels": {}}, 404, ["no port named 'nope'"]),
    ("PUT", "/v1/networks/nope/labels", {"labels": {}}, 404, ["no network named 'nope'"]),
    ("PUT", "/v1/networks/prod/labels", {"labels": {"a/b/c": "x"}}, 400, ["labels", "'a/b/c'"]),
    ("PUT", "/v1/ports/web1/named_ports", {"named_ports": {"web": "HTTP/80"}}, 400, ["named_ports.web"]),
    ("PUT", "/v1/ports/nope/named_ports", {"named_ports": {}}, 404, ["no port named 'nope'"]),
    ("GET", "/v1/ports?selector=app%20web", None, 400, ["selector", "after app"]),
    ("GET", "/v1/networks?selector=a%3E1", None, 400, ["selector", "not supported"]),
]


@pytest.mark.parametrize("method,path,body,status,words", BAD, ids=[f"{m} {p} {w[-1]}" for m, p, _, _, w in BAD])
def test_bad_labels_are_refused_and_change_nothing(labelled, core, method, path, body, status, words):
    path, _, query = path.partition("?")
    before = nb_labels(core)
    got_status, got = call(labelled, method, path, body, query)
    assert got_status == status, got
    for word in words:
        assert word in got["error"], got["error"]
    assert nb_labels(core) == before


def test_a_label_change_reaches_the_compilers_input(labelled, core):
    """What the compiler sees: sorted pairs, and named ports as (name, protocol, number)."""
    call(labelled, "PUT", "/v1/ports/web1/named_ports", {"named_ports": {"http": "TCP/8080", "dns": "udp/53"}})
    call(labelled, "PUT", "/v1/ports/web1/labels", {"labels": {"tier": "front", "app": "api"}})
    call(labelled, "PUT", "/v1/networks/dev/labels", {"labels": {"env": "dev"}})
    wanted = ((("app", "api"), ("tier", "front")), (("dns", "UDP", 53), ("http", "TCP", 8080)),
              (("env", "dev"),))
    deadline = time.monotonic() + 30  # the controller's own loop takes the change to the topology
    while True:
        topo = core.topology.topo
        seen = (topo.ports["web1"].labels, topo.ports["web1"].named_ports, topo.networks["dev"].labels)
        if seen == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert seen == wanted
    assert topo.ports["bare"].labels == () and topo.ports["bare"].named_ports == ()
