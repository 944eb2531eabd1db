"""POST /v1/apply and the policy and service resources, on the real embedded NB: a file's objects
are stored all together or not at all, re-applying is a no-op, services get their key and addresses
(kept across re-applies), a plan writes nothing, and bad input is refused naming the document and
the field."""
import shutil
import time

import pytest

from controller.api import NorthboundApi
from controller.config import Config
from controller.core import WeftCore
from controller.manifests import parse_documents
from ovsdb.idl import ThreadHub
from test_api import call  # tests/unit is on sys.path

GATEWAY = {"host": "h1", "uplink": "uplink0", "ip": "198.51.100.2/29", "next_hop": "198.51.100.1"}


def policy(name="allow-web", namespace="blue", **spec):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": spec or {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                             "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}}


def service(name="web", namespace="blue", **spec):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}], **spec}}


def apply(api, *documents, **fields):
    return call(api, "POST", "/v1/apply", {"documents": list(documents), **fields})


def stored(core):
    state = core.nb_state()
    return dict(state.policies), dict(state.services)


@pytest.fixture
def blue(api):
    assert call(api, "POST", "/v1/networks", {"name": "blue", "cidr": "10.0.0.0/24"})[0] == 201
    assert call(api, "POST", "/v1/networks", {"name": "red", "cidr": "10.1.0.0/24"})[0] == 201
    for name, labels in (("web1", {"app": "web"}), ("web2", {"app": "web"}), ("cli", {"app": "client"})):
        body = {"name": name, "network": "blue", "labels": labels}
        if name.startswith("web"):
            body["named_ports"] = {"http": "TCP/8080" if name == "web1" else "TCP/9090"}
        assert call(api, "POST", "/v1/ports", body)[0] == 201
    return api


def small_service_cidr_api(tmp_path, cidr):
    if not shutil.which("ovsdb-server"):
        pytest.skip("ovsdb-server is not installed (scripts/setup.sh installs it)")
    core = WeftCore(ThreadHub, Config(state_dir=str(tmp_path / "small"), underlay_mtu=1600, service_cidr=cidr))
    core.start()
    core.nb.conn.wait_synced(10)
    core.wait_active(10)
    api = NorthboundApi(core)
    assert call(api, "POST", "/v1/networks", {"name": "blue", "cidr": "10.0.0.0/24"})[0] == 201
    return core, api


# --- apply ------------------------------------------------------------------------------------------

def test_apply_creates_then_an_unchanged_manifest_is_a_no_op_and_a_changed_one_replaces_it(blue, core):
    status, answer = apply(blue, policy(), service())
    assert status == 200, answer
    assert answer == [{"kind": "NetworkPolicy", "network": "blue", "name": "allow-web", "action": "created"},
                      {"kind": "Service", "network": "blue", "name": "web", "action": "created"}]
    web = core.nb_state().services["blue/web"]
    assert (web.key, web.cluster_ip, web.load_balancer_ip) == (1, "10.96.0.1", None)

    before = stored(core)
    status, answer = apply(blue, policy(namespace=None), service(), network="blue")  # -n blue: the same objects
    assert status == 200 and [a["action"] for a in answer] == ["unchanged", "unchanged"], answer
    assert stored(core) == before

    status, answer = apply(blue, service(ports=[{"port": 8080, "targetPort": "http"}]))
    assert status == 200 and answer[0]["action"] == "configured"
    web = core.nb_state().services["blue/web"]
    assert (web.key, web.cluster_ip) == (1, "10.96.0.1") and '"port":8080' in web.manifest  # key and VIP kept
    assert stored(core)[0] == before[0]

    status, answer = apply(blue, service(clusterIP="10.96.0.77"))
    assert status == 200 and core.nb_state().services["blue/web"].cluster_ip == "10.96.0.77"


def test_apply_may_wait_until_it_is_in_force(blue, core):
    body = {"documents": [policy()]}
    status, answer = call(blue, "POST", "/v1/apply", body, query="wait_up=61")
    assert status == 400 and "wait_up" in answer["error"] and stored(core) == ({}, {})
    status, answer = call(blue, "POST", "/v1/apply", body, query="wait_up=10")
    # no switch is connected, so nothing lags once the controller has compiled it
    assert status == 200 and answer == {"objects": [{"kind": "NetworkPolicy", "network": "blue",
                                                     "name": "allow-web", "action": "created"}], "lagging": []}
    assert "blue/allow-web" in core.compiler.topo.policies  # in the pipeline when the answer comes


def test_a_delete_may_wait_until_it_is_out_of_force_as_apply_does(blue, core):
    call(blue, "POST", "/v1/apply", {"documents": [policy(), service()]}, query="wait_up=10")
    for kind in ("policies", "services"):
        name = "allow-web" if kind == "policies" else "web"
        status, answer = call(blue, "DELETE", f"/v1/{kind}/blue/{name}", query="wait_up=10")
        assert status == 200 and answer == {"deleted": f"blue/{name}", "lagging": []}
    assert not core.compiler.topo.policies and not core.compiler.topo.services  # compiled without them
    apply(blue, policy())
    assert call(blue, "DELETE", "/v1/policies/blue/allow-web", query="wait_up=x")[0] == 400
    assert "blue/allow-web" in core.nb_state().policies  # a bad wait deletes nothing


def test_trace_takes_sctp(blue, core):
    deadline = time.monotonic() + 10  # the tracer reads the compiled topology: wait for cli's pass
    while "cli" not in core.compiler.topo.ports:
        assert time.monotonic() < deadline, "cli was never compiled"
        time.sleep(0.01)
    status, answer = call(blue, "GET", "/v1/trace", query="from=cli&to=10.0.0.3&proto=sctp&dport=9")
    assert status == 409 and "not plugged in" in answer["error"]  # past the checks: cli is not bound
    status, answer = call(blue, "GET", "/v1/trace", query="from=cli&to=10.0.0.3&proto=gre")
    assert status == 400 and "icmp, tcp, udp, sctp" in answer["error"]


def test_a_bad_document_anywhere_stores_nothing_and_is_named(blue, core):
    apply(blue, policy("first"))
    before = stored(core)
    cases = [
        ([policy("second"), policy("bad", podSelector={"matchLabels": {"app": ["web"]}})], 400,
         ["document 1 (NetworkPolicy bad)", "spec.podSelector.matchLabels"]),
        ([policy("second"), {**policy("x"), "spec": {"podSelector": {}, "ingres": []}}], 400,
         ["document 1", "spec.ingres", "unknown field"]),
        ([policy("second"), service(namespace="nowhere")], 400,
         ["document 1 (Service web)", "metadata.namespace", "no network named 'nowhere'"]),
        ([policy("second"), service("a", clusterIP="10.96.0.9"), service("b", clusterIP="10.96.0.9")], 409,
         ["document 2 (Service b)", "spec.clusterIP", "10.96.0.9", "blue/a"]),
        ([policy("second"), service(clusterIP="10.97.0.1")], 400, ["spec.clusterIP", "service CIDR 10.96.0.0/16"]),
        ([policy("second"), service(clusterIP="10.96.255.255")], 400, ["spec.clusterIP", "10.96.255.255"]),
        ([policy("second"), service(type="LoadBalancer")], 400, ["spec.type", "attached to no router"]),
        ([], 400, ["documents", "no NetworkPolicy or Service"]),
        ([None], 400, ["documents", "no NetworkPolicy or Service"]),
    ]
    for documents, status, words in cases:
        got, answer = apply(blue, *documents)
        assert got == status, (documents, answer)
        assert all(w in answer["error"] for w in words), (words, answer["error"])
        assert stored(core) == before
    got, answer = apply(blue, policy("second"), service(namespace="nowhere"))
    assert answer["document"] == 1  # what the CLI maps back to a file


def test_the_body_of_apply_may_nest_as_deep_as_a_manifest_and_no_deeper(blue, core):
    deep = policy(podSelector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
                  ingress=[{"from": [{"podSelector": {"matchExpressions": [
                      {"key": "app", "operator": "In", "values": ["client"]}]}}]}])
    assert apply(blue, deep)[0] == 200
    nested = {"a": None}
    for _ in range(80):
        nested = {"a": nested}
    status, answer = apply(blue, {**policy("x"), "status": nested})
    assert status == 400 and "nests deeper than 66 levels" in answer["error"]
    status, answer = call(blue, "POST", "/v1/networks", {"name": "x", "cidr": "10.9.0.0/24",
                                                         "labels": {"a": [[[[[[[[1]]]]]]]]}})
    assert status == 400 and "nests deeper than 8 levels" in answer["error"]  # other routes keep their bound


def test_cluster_ips_are_the_lowest_free_and_run_out_with_a_clear_error(tmp_path):
    core, api = small_service_cidr_api(tmp_path, "10.96.0.0/30")  # two usable addresses
    try:
        assert apply(api, service("a"), service("b"))[0] == 200
        state = core.nb_state()
        assert [(s.key, s.cluster_ip) for _, s in sorted(state.services.items())] == \
            [(1, "10.96.0.1"), (2, "10.96.0.2")]
        status, answer = apply(api, service("c"))
        assert status == 409 and "service CIDR 10.96.0.0/30 has no free address left" in answer["error"]
        assert call(api, "DELETE", "/v1/services/blue/a")[0] == 200
        assert apply(api, service("c"))[0] == 200  # the freed VIP and key go to the next one
        assert (state.services["blue/c"].key, state.services["blue/c"].cluster_ip) == (1, "10.96.0.1")
        status, answer = call(api, "POST", "/v1/networks", {"name": "x", "cidr": "10.96.0.0/24"})
        assert status == 409 and "overlaps the service CIDR" in answer["error"]
    finally:
        core.stop()


def test_load_balancer_addresses_come_from_the_gateway_subnet_and_avoid_what_is_taken(blue, core):
    assert call(blue, "POST", "/v1/hosts", {"name": "h1", "encap_ip": "192.0.2.1",
                                            "ovsdb": "unix:/nonexistent/db.sock"})[0] == 201
    assert call(blue, "POST", "/v1/routers", {"name": "r1"})[0] == 201
    assert call(blue, "POST", "/v1/routers/r1/ports", {"network": "blue"})[0] == 201
    status, answer = apply(blue, service(type="LoadBalancer"))
    assert status == 400 and "router 'r1' has no gateway" in answer["error"], answer
    assert call(blue, "PUT", "/v1/routers/r1/gateway", GATEWAY)[0] == 200  # 198.51.100.0/29, hosts .1 to .6
    assert call(blue, "POST", "/v1/floating-ips", {"port": "cli", "ip": "198.51.100.3"})[0] == 201

    status, answer = apply(blue, service("a", type="LoadBalancer"), service("b", type="LoadBalancer"))
    assert status == 200, answer
    state = core.nb_state()
    assert [state.services[q].load_balancer_ip for q in ("blue/a", "blue/b")] == ["198.51.100.4", "198.51.100.5"]
    for asked, status, words in (("198.51.100.2", 409, ["gateway address"]), ("198.51.100.1", 409, ["next hop"]),
                                 ("198.51.100.3", 409, ["floating IP of port 'cli'"]),
                                 ("198.51.100.4", 409, ["service blue/a"]),
                                 ("198.51.100.7", 400, ["not an address of router 'r1'"]),
                                 ("203.0.113.5", 400, ["198.51.100.0/29"])):
        got, answer = apply(blue, service("c", type="LoadBalancer", loadBalancerIP=asked))
        assert got == status and "spec.loadBalancerIP" in answer["error"], (asked, answer)
        assert all(w in answer["error"] for w in words), (asked, answer["error"])
    assert apply(blue, service("c", type="LoadBalancer", loadBalancerIP="198.51.100.6"))[0] == 200
    status, answer = apply(blue, service("d", type="LoadBalancer"))
    assert status == 409 and "198.51.100.0/29 has no free address left" in answer["error"]

    # the re-applied service keeps its address; the others cannot take it or pull the gateway away
    assert apply(blue, service("a", type="LoadBalancer"))[1][0]["action"] == "unchanged"
    status, answer = call(blue, "POST", "/v1/floating-ips", {"port": "web1", "ip": "198.51.100.4"})
    assert status == 409 and "service blue/a" in answer["error"]
    status, answer = call(blue, "DELETE", "/v1/routers/r1/gateway")
    assert status == 409 and "floating IPs" in answer["error"]
    assert call(blue, "DELETE", "/v1/floating-ips/198.51.100.3")[0] == 200
    status, answer = call(blue, "DELETE", "/v1/routers/r1/gateway")
    assert status == 409 and "blue/a" in answer["error"] and "LoadBalancer" in answer["error"]
    status, answer = call(blue, "DELETE", "/v1/routers/r1/ports/blue")
    assert status == 409 and "LoadBalancer" in answer["error"]
    status, answer = call(blue, "PUT", "/v1/routers/r1/gateway", {**GATEWAY, "ip": "203.0.113.2/24",
                                                                  "next_hop": "203.0.113.1"})
    assert status == 409 and "outside 203.0.113.0/24" in answer["error"]

    assert apply(blue, service("a"))[1][0]["action"] == "configured"  # back to ClusterIP: its address goes
    assert core.nb_state().services["blue/a"].load_balancer_ip is None
    assert "198.51.100.4" not in core.nb_state().service_ips


# --- plan ---------------------------------------------------------------------------------------------

def test_a_plan_writes_nothing_and_counts_the_flows_per_host_and_table(blue, core):
    assert call(blue, "POST", "/v1/hosts", {"name": "h1", "encap_ip": "192.0.2.1",
                                            "ovsdb": "unix:/nonexistent/db.sock"})[0] == 201
    for ofport, port in enumerate(("web1", "cli"), 1):  # what h1's OVSDB would report
        core.port_plugged("h1", port, ofport)
    deadline = time.monotonic() + 10
    while set(core.compiler.topo.bindings) != {"web1", "cli"}:
        assert time.monotonic() < deadline, "the controller did not compile the bindings"
        time.sleep(0.02)
    live = {host: dict(flows) for host, flows in core.compiler.flows.items()}
    status, answer = apply(blue, policy(), plan=True, plan_lines=3)
    assert status == 200, answer
    assert answer["objects"] == [{"kind": "NetworkPolicy", "network": "blue", "name": "allow-web",
                                  "action": "created"}]
    h1 = answer["hosts"]["h1"]
    assert set(answer["hosts"]) == {"h1"} and h1["total"]["added"] > 0 and len(h1["added"]) == 3
    assert any(table.startswith("ACL") for table in h1["tables"]) and all(line.startswith("table=")
                                                                           for line in h1["added"])
    assert answer["total"] == h1["total"]
    assert stored(core) == ({}, {}) and {h: dict(f) for h, f in core.compiler.flows.items()} == live

    assert apply(blue, policy())[0] == 200
    status, answer = apply(blue, policy(), plan=True)  # applied: nothing left to change
    assert answer["objects"][0]["action"] == "unchanged"
    deadline = time.monotonic() + 10
    while apply(blue, policy(), plan=True)[1]["total"]["added"]:  # once the controller compiled it
        assert time.monotonic() < deadline, "the applied policy was not compiled"
        time.sleep(0.05)
    status, answer = apply(blue, service(), plan=True)
    assert status == 200 and stored(core)[1] == {}
    status, answer = apply(blue, policy(), plan=True, plan_lines=201)
    assert status == 400 and "plan_lines" in answer["error"]


# --- show, list, delete -------------------------------------------------------------------------------

def test_show_says_what_a_policy_and_a_service_select_right_now(blue, core):
    assert apply(blue, policy(), service(), service("other", ports=[{"port": 53, "protocol": "UDP",
                                                                        "targetPort": "http"}]))[0] == 200
    status, shown = call(blue, "GET", "/v1/policies/blue/allow-web")
    assert status == 200 and shown["selects"] == ["web1", "web2"] and shown["pod_selector"] == "app=web"
    assert shown["policy_types"] == ["Ingress"] and shown["manifest"]["metadata"]["namespace"] == "blue"
    assert call(blue, "PUT", "/v1/ports/web2/labels", {"labels": {"app": "db"}})[0] == 200
    assert call(blue, "GET", "/v1/policies/blue/allow-web")[1]["selects"] == ["web1"]
    assert call(blue, "GET", "/v1/policies")[1] == [{"name": "allow-web", "network": "blue", "pod_selector": "app=web",
                                                     "policy_types": ["Ingress"], "selects": 1}]
    assert call(blue, "GET", "/v1/policies", query="network=red")[1] == []

    status, shown = call(blue, "GET", "/v1/services/blue/web")
    assert status == 200 and (shown["cluster_ip"], shown["type"], shown["key"]) == ("10.96.0.1", "ClusterIP", 1)
    assert shown["backends"] == [{"port": "web1", "ip": core.nb_state().ports["web1"].ip, "host": None,
                                  "ready": False, "targets": {"": 8080}}]  # not plugged anywhere: not ready
    other = call(blue, "GET", "/v1/services/blue/other")[1]
    assert other["backends"][0]["targets"] == {"": None}  # web1's http is TCP, the service port UDP
    assert [(s["name"], s["backends"], s["ready"]) for s in call(blue, "GET", "/v1/services")[1]] == \
        [("other", 1, 0), ("web", 1, 0)]


def test_delete_and_the_network_that_still_holds_them(blue, core):
    assert apply(blue, policy(), service())[0] == 200
    status, answer = call(blue, "DELETE", "/v1/networks/red")
    assert status == 200
    for port in ("web1", "web2", "cli"):
        assert call(blue, "DELETE", f"/v1/ports/{port}")[0] == 200
    status, answer = call(blue, "DELETE", "/v1/networks/blue")
    assert status == 409 and "policies (allow-web)" in answer["error"] and "weft policy delete" in answer["error"]
    assert call(blue, "DELETE", "/v1/policies/blue/allow-web") == (200, {"deleted": "blue/allow-web"})
    status, answer = call(blue, "DELETE", "/v1/networks/blue")
    assert status == 409 and "services (web)" in answer["error"]
    assert call(blue, "DELETE", "/v1/services/blue/web")[0] == 200
    for path in ("/v1/policies/blue/allow-web", "/v1/services/blue/web"):
        status, answer = call(blue, "DELETE", path)
        assert status == 404 and "in network 'blue'" in answer["error"]
        assert call(blue, "GET", path)[0] == 404
    assert stored(core) == ({}, {})
    assert call(blue, "DELETE", "/v1/networks/blue")[0] == 200


# --- into the compiler's input ------------------------------------------------------------------------

def wait_for(condition, what):
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_applied_objects_reach_the_topology_and_follow_each_change(blue, core):
    assert apply(blue, policy(), service())[0] == 200
    topo = lambda: core.compiler.topo  # noqa: E731
    wait_for(lambda: "blue/allow-web" in topo().policies and "blue/web" in topo().services, "not compiled")
    assert topo().policies["blue/allow-web"] == parse_documents([policy()], None)[0].obj
    web = topo().services["blue/web"]
    assert (web.key, web.cluster_ip, web.load_balancer_ip, web.ports[0].target_port) == (1, "10.96.0.1", None, "http")

    assert apply(blue, policy(podSelector={}, policyTypes=["Egress"]))[0] == 200  # replaced: by difference
    wait_for(lambda: topo().policies["blue/allow-web"].egress == (), "the replaced policy was not compiled")
    assert call(blue, "DELETE", "/v1/services/blue/web")[0] == 200
    wait_for(lambda: "blue/web" not in topo().services, "the deleted service stayed")
    core._full = True  # a rebuild from scratch gives the same
    core._wake.set()
    wait_for(lambda: not core._full, "no rebuild")
    assert set(topo().policies) == {"blue/allow-web"} and not topo().services


def test_a_stored_manifest_this_controller_refuses_is_left_out_not_fatal(blue, core):
    core.nb.apply(lambda taken: [("Policy", "blue", "odd", {"manifest": '{"kind": "NetworkPolicy"}'})])
    assert apply(blue, policy())[0] == 200
    wait_for(lambda: "blue/allow-web" in core.compiler.topo.policies, "the good policy was not compiled")
    assert "blue/odd" not in core.compiler.topo.policies and core.topology_error is None
    status, shown = call(blue, "GET", "/v1/policies/blue/odd")
    assert status == 200 and shown["selects"] == [] and "cannot use the manifest" in shown["error"]


def test_a_network_whose_vni_is_a_load_balancer_zone_takes_no_policy(api):
    assert call(api, "POST", "/v1/networks", {"name": "big", "cidr": "10.9.0.0/24", "vni": 70000})[0] == 201
    status, body = apply(api, policy(namespace="big"))
    assert status == 400 and "VNI 70000 is its conntrack zone" in body["error"], body
    assert stored(api.core) == ({}, {})
