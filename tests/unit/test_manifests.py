"""controller/manifests.py: Kubernetes NetworkPolicy and Service manifests, checked as the Kubernetes API
server checks them, into flows/policy.py's model; every refusal names the document, the field's path and
the problem, and nothing is returned unless every document is good."""
import copy
import datetime
import functools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from controller import validate
from controller.manifests import (MAX_DEPTH, MAX_DOCUMENTS, MAX_ITEMS, ManifestError, ServiceSpec, parse_documents,
                                  text_to_documents)
from flows.policy import (IpBlock, Peer, PolicyPort, PolicyRule, PolicyState, Requirement, Selector, ServicePort,
                          ServiceState)

# The Kubernetes documentation's NetworkPolicy example (concepts/services-networking/network-policies).
DOCS_POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
"""

POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "allow-web", "namespace": "blue"},
          "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "blue"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}


def policy(**spec):
    doc = copy.deepcopy(POLICY)
    doc["spec"] = {"podSelector": {}, **spec}
    return doc


def service(**spec):
    doc = copy.deepcopy(SERVICE)
    doc["spec"] = {"ports": [{"port": 80}], **spec}
    return doc


def parse_one(doc, network=None):
    (manifest,) = parse_documents([doc], network)
    return manifest


def refused(docs, network=None):
    with pytest.raises(ManifestError) as caught:
        parse_documents(docs if isinstance(docs, list) else [docs], network)
    return caught.value


def assert_refused(doc, path, *words, network=None):
    err = refused(doc, network)
    assert err.path == path, str(err)
    for word in words:
        assert word in err.message, str(err)
    assert "\n" not in str(err)
    return err


def peer_rule(*peers, ports=()):
    return {"from": list(peers), **({"ports": list(ports)} if ports else {})}


# --- valid upstream-style manifests -------------------------------------------------------------------

def test_the_kubernetes_docs_example_policy():
    (manifest,) = parse_documents(text_to_documents(DOCS_POLICY), None)
    assert (manifest.kind, manifest.name, manifest.network) == ("NetworkPolicy", "test-network-policy", "default")
    assert manifest.source["metadata"]["name"] == "test-network-policy"  # the document itself, to show back
    assert manifest.obj == PolicyState(
        name="test-network-policy", network="default", pod_selector=Selector((("role", "db"),)),
        ingress=(PolicyRule(
            peers=(Peer(ip_block=IpBlock("172.17.0.0/16", ("172.17.1.0/24",))),
                   Peer(namespace_selector=Selector((("project", "myproject"),))),
                   Peer(pod_selector=Selector((("role", "frontend"),)))),
            ports=(PolicyPort("TCP", 6379),)),),
        egress=(PolicyRule(peers=(Peer(ip_block=IpBlock("10.0.0.0/24")),), ports=(PolicyPort("TCP", 5978),)),))
    assert manifest.obj.key == "default/test-network-policy"
    assert manifest.warnings == ()


def test_pod_and_namespace_selector_in_one_peer_is_and_in_two_peers_is_or():
    both = {"namespaceSelector": {"matchLabels": {"user": "alice"}}, "podSelector": {"matchLabels": {"role": "client"}}}
    one = parse_one(policy(ingress=[peer_rule(both)])).obj
    two = parse_one(policy(ingress=[peer_rule({"namespaceSelector": both["namespaceSelector"]},
                                              {"podSelector": both["podSelector"]})])).obj
    alice, client = Selector((("user", "alice"),)), Selector((("role", "client"),))
    assert one.ingress[0].peers == (Peer(pod_selector=client, namespace_selector=alice),)
    assert two.ingress[0].peers == (Peer(namespace_selector=alice), Peer(pod_selector=client))


def test_end_port_named_ports_and_protocols():
    ports = [{"protocol": "TCP", "port": 32000, "endPort": 32768}, {"port": "http"}, {"protocol": "UDP"},
             {"protocol": "SCTP", "port": 9999}]
    rule = parse_one(policy(egress=[{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": ports}],
                            policyTypes=["Egress"])).obj.egress[0]
    assert rule.ports == (PolicyPort("TCP", 32000, 32768), PolicyPort("TCP", "http"), PolicyPort("UDP"),
                          PolicyPort("SCTP", 9999))


def test_match_expressions():
    selector = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api", "web"]},
                                     {"key": "env", "operator": "NotIn", "values": ["dev"]},
                                     {"key": "team", "operator": "Exists"},
                                     {"key": "legacy", "operator": "DoesNotExist", "values": []}],
                "matchLabels": {"app": "shop", "app.kubernetes.io/part-of": "x"}}
    got = parse_one(policy(podSelector=selector)).obj.pod_selector
    assert got == Selector((("app", "shop"), ("app.kubernetes.io/part-of", "x")), (
        Requirement("tier", "In", ("api", "web")), Requirement("env", "NotIn", ("dev",)),
        Requirement("team", "Exists"), Requirement("legacy", "DoesNotExist")))


def test_deny_all_and_allow_all():
    deny_ingress = parse_one(policy()).obj
    assert (deny_ingress.ingress, deny_ingress.egress) == ((), None)
    deny_both = parse_one(policy(policyTypes=["Ingress", "Egress"])).obj
    assert (deny_both.ingress, deny_both.egress) == ((), ())
    allow_all = parse_one(policy(ingress=[{}])).obj
    assert allow_all.ingress == (PolicyRule(),)
    empty_lists = parse_one(policy(ingress=[{"from": [], "ports": []}])).obj
    assert empty_lists.ingress == (PolicyRule(),)


@pytest.mark.parametrize("spec, ingress, egress", [
    # upstream SetDefaults_NetworkPolicy: Ingress always, Egress if len(spec.egress) != 0
    ({}, (), None),
    ({"ingress": None}, (), None),
    ({"egress": []}, (), None),
    ({"egress": None}, (), None),
    ({"egress": [{}]}, (), (PolicyRule(),)),
    ({"policyTypes": []}, (), None),
    ({"policyTypes": ["Egress"]}, None, ()),
    ({"policyTypes": ["Egress"], "egress": [{}]}, None, (PolicyRule(),)),
])
def test_policy_types_default_as_kubernetes(spec, ingress, egress):
    got = parse_one(policy(**spec)).obj
    assert (got.ingress, got.egress) == (ingress, egress)


def test_rules_of_a_direction_the_policy_is_not_for_are_ignored_with_a_warning():
    manifest = parse_one(policy(policyTypes=["Egress"], ingress=[{}]))
    assert manifest.obj.ingress is None
    assert manifest.warnings == ("spec.ingress: ignored, as policyTypes does not include Ingress",)


def test_host_bits_in_a_cidr_are_masked_off_as_kubernetes_does_with_a_warning():
    manifest = parse_one(policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.1.2.3/8", "except": ["10.9.9.9/16"]}})]))
    assert manifest.obj.ingress[0].peers[0].ip_block == IpBlock("10.0.0.0/8", ("10.9.0.0/16",))
    assert manifest.warnings == (
        "spec.ingress[0].from[0].ipBlock.cidr: 10.1.2.3/8 has host bits set; it means 10.0.0.0/8",
        "spec.ingress[0].from[0].ipBlock.except[0]: 10.9.9.9/16 has host bits set; it means 10.9.0.0/16")


def test_a_service_with_two_named_ports_and_client_ip_affinity():
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-service"},
           "spec": {"selector": {"app.kubernetes.io/name": "MyApp"}, "sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                    "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9376},
                              {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": "dns"}]}}
    manifest = parse_one(doc, network="blue")
    assert (manifest.kind, manifest.name, manifest.network) == ("Service", "my-service", "blue")
    assert manifest.warnings == ("spec.sessionAffinityConfig.clientIP.timeoutSeconds: not kept: a client "
                                 "keeps its backend while the backends stay the same, however long it is idle",)
    assert manifest.obj == ServiceSpec(
        name="my-service", network="blue", selector=(("app.kubernetes.io/name", "MyApp"),),
        ports=(ServicePort("http", "TCP", 80, 9376), ServicePort("dns", "UDP", 53, "dns")),
        type="ClusterIP", session_affinity=True, affinity_timeout=600)
    assert manifest.obj.to_state(7, "10.96.0.10") == ServiceState(
        "my-service", "blue", 7, (("app.kubernetes.io/name", "MyApp"),), manifest.obj.ports, "10.96.0.10",
        None, True, 600)


def test_service_defaults():
    spec = parse_one(service(sessionAffinity="ClientIP")).obj
    assert spec.ports == (ServicePort("", "TCP", 80, 80),)  # one unnamed port; targetPort = port
    assert (spec.type, spec.cluster_ip, spec.load_balancer_ip) == ("ClusterIP", None, None)
    assert (spec.session_affinity, spec.affinity_timeout) == (True, 10800)
    no_selector = parse_one(service(ports=[{"port": 53, "protocol": "UDP", "targetPort": 0}])).obj
    assert no_selector.selector == () and no_selector.ports == (ServicePort("", "UDP", 53, 53),)


def test_a_load_balancer_service_with_the_addresses_it_asks_for():
    doc = service(type="LoadBalancer", clusterIP="10.96.0.20", clusterIPs=["10.96.0.20"],
                  loadBalancerIP="203.0.113.7", externalTrafficPolicy="Cluster", allocateLoadBalancerNodePorts=True)
    spec = parse_one(doc).obj
    assert (spec.type, spec.cluster_ip, spec.load_balancer_ip) == ("LoadBalancer", "10.96.0.20", "203.0.113.7")
    state = spec.to_state(9, "10.96.0.20", "203.0.113.7")
    assert (state.key, state.cluster_ip, state.load_balancer_ip) == (9, "10.96.0.20", "203.0.113.7")
    with pytest.raises(ValueError):
        spec.to_state(9, "10.96.0.20")
    with pytest.raises(ValueError):
        parse_one(service()).obj.to_state(9, "10.96.0.20", "203.0.113.7")


def test_what_kubectl_get_prints_is_accepted():
    doc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "blue", "uid": "0d7c0d1e-0000-4000-8000-000000000000",
                        "resourceVersion": "123", "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z",
                        "labels": {"app": "web"}, "selfLink": "/api/v1/namespaces/blue/services/web",
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:ports": {}}}}]},
           "spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"], "internalTrafficPolicy": "Cluster",
                    "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                    "type": "ClusterIP", "selector": {"app": "web"},
                    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080, "appProtocol": "http"}]},
           "status": {"loadBalancer": {}}}
    spec = parse_one(doc).obj
    assert (spec.cluster_ip, spec.ports) == ("10.96.0.5", (ServicePort("", "TCP", 80, 8080),))


def test_lists_are_flattened_and_empty_documents_skipped():
    kube_list = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [POLICY, SERVICE]}
    other = copy.deepcopy(SERVICE)
    other["metadata"]["name"] = "api"
    got = parse_documents([None, kube_list, [other, None], None], None)
    assert [(m.kind, m.name, m.network) for m in got] == [
        ("NetworkPolicy", "allow-web", "blue"), ("Service", "web", "blue"), ("Service", "api", "blue")]
    assert got[1].source is SERVICE


def test_an_error_in_a_list_names_the_document_and_the_item():
    bad = service(ports=[{"port": 0}])
    err = assert_refused([POLICY, {"apiVersion": "v1", "kind": "List", "items": [SERVICE, bad]}],
                         "items[1].spec.ports[0].port", "0 is out of range (1..65535)")
    # (the same name twice would also be refused, but the first error in the file is the one raised)
    assert err.document == 1 and str(err).startswith("document 1 (Service web): items[1].spec.ports[0].port: ")


def test_the_same_kind_and_name_twice_in_one_file_is_refused():
    assert_refused([POLICY, SERVICE, POLICY], "metadata", "NetworkPolicy blue/allow-web is also document 0")
    twice = {"apiVersion": "v1", "kind": "List", "items": [SERVICE, SERVICE]}
    assert_refused(twice, "items[1].metadata", "Service blue/web is also document 0 items[0]")
    other_network = copy.deepcopy(POLICY)
    other_network["metadata"]["namespace"] = "red"
    assert len(parse_documents([POLICY, other_network, SERVICE], None)) == 3  # a name is per network and kind


# --- refusals: each names the path of the field and the problem ---------------------------------------

def test_the_error_reads_document_kind_name_path_problem():
    doc = policy(ingress=[peer_rule({"podSelector": {}}, {"ipBlock": {"cidr": "10.0.0/8"}})])
    err = refused([SERVICE, None, doc])
    assert (err.document, err.path) == (2, "spec.ingress[0].from[1].ipBlock.cidr")
    assert str(err) == ('document 2 (NetworkPolicy allow-web): spec.ingress[0].from[1].ipBlock.cidr: '
                        '"10.0.0/8" is not an IPv4 CIDR')
    assert isinstance(err, ValueError)


def test_every_error_names_the_document_it_is_in():
    err = refused([POLICY, {**SERVICE, "status": {"x": float("inf")}}])
    assert str(err) == "document 1 (Service web): status.x: inf is not a number JSON allows"
    err = refused([{"apiVersion": "v2", "kind": "List"}])
    assert str(err) == 'document 0 (List): apiVersion: "v2" is not the apiVersion of a List: use v1'


def test_a_selector_indented_one_level_wrong():
    """The two slips the issue names: matchLabels directly under spec, and a label directly under podSelector."""
    too_shallow = copy.deepcopy(POLICY)
    too_shallow["spec"] = {"podSelector": {}, "matchLabels": {"app": "web"}}
    err = assert_refused(too_shallow, "spec.matchLabels", 'unknown field "matchLabels"',
                         "belongs at spec.podSelector.matchLabels", "indentation")
    assert "egress, ingress, podSelector, policyTypes" in err.message
    label_too_high = copy.deepcopy(POLICY)
    label_too_high["spec"] = {"podSelector": {"app": "web"}}
    err = assert_refused(label_too_high, "spec.podSelector.app", 'unknown field "app"',
                         "to match the label app, write it under spec.podSelector.matchLabels")
    assert "matchExpressions, matchLabels" in err.message
    in_a_peer = policy(ingress=[peer_rule({"podSelector": {"role": "client"}})])
    assert_refused(in_a_peer, "spec.ingress[0].from[0].podSelector.role",
                   "write it under spec.ingress[0].from[0].podSelector.matchLabels")
    # and in the YAML a user writes, through the CLI's reader
    text = DOCS_POLICY.replace("  podSelector:\n    matchLabels:\n      role: db\n", "  podSelector:\n    role: db\n")
    err = refused(text_to_documents(text))
    assert str(err).startswith("document 0 (NetworkPolicy test-network-policy): spec.podSelector.role: ")


@pytest.mark.parametrize("doc, path, words", [
    # a field one level too deep or too shallow, or misspelt
    ({**POLICY, "spce": {}}, "spce", ["did you mean spec?"]),
    (policy(podselector={}), "spec.podselector", ["did you mean podSelector?"]),
    (policy(ingress=[{"podSelector": {}}]), "spec.ingress[0].podSelector",
     ["podSelector belongs at spec.ingress[0].from[*].podSelector"]),
    (policy(ingress=[peer_rule({"podSelector": {}, "ports": [{"port": 80}]})]), "spec.ingress[0].from[0].ports",
     ["ports belongs at spec.ingress[0].ports"]),
    (policy(podSelector={"matchLabels": {"a": "b"}, "ingress": []}), "spec.podSelector.ingress",
     ["ingress belongs at spec.ingress"]),
    (policy(ingress=[{"to": []}]), "spec.ingress[0].to", ['unknown field "to"', "an ingress rule has: from, ports"]),
    (policy(egress=[{"from": []}]), "spec.egress[0].from", ["an egress rule has: ports, to"]),
    (policy(ingress=[peer_rule({"namespace": {}})]), "spec.ingress[0].from[0].namespace",
     ["did you mean namespaceSelector?"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0/8", "exception": []}})]),
     "spec.ingress[0].from[0].ipBlock.exception", ["did you mean except?"]),
    (policy(ingress=[peer_rule(ports=[{"port": 80, "protocl": "TCP"}])]), "spec.ingress[0].ports[0].protocl",
     ["did you mean protocol?"]),
    ({**POLICY, "metadata": {"name": "a", "nmae": "b"}}, "metadata.nmae", ["did you mean name?"]),
    ({**POLICY, "metadata": {"name": "a"}, "spec": {"podSelector": {}, "namespace": "blue"}}, "spec.namespace",
     ["namespace belongs at metadata.namespace"]),
    ({**POLICY, "metadata": {"name": "a", "spec": {}}}, "metadata.spec", ["spec belongs at spec"]),
    ({**POLICY, "metadata": {"name": "a", "generateName": "a-"}}, "metadata.generateName",
     ["not supported by Weft", "give metadata.name"]),
    ({**POLICY, "metadata": {"name": "a", "finalizers": ["x/y"]}}, "metadata.finalizers", ["not supported by Weft"]),
    (service(selector={"matchLabels": {"app": "web"}}), "spec.selector.matchLabels",
     ["a Service selects by labels directly", "under spec.selector"]),
    (service(app="web"), "spec.app", ["to match the label app, write it under spec.selector"]),
    (service(ports=[{"port": 80, "target": 8080}]), "spec.ports[0].target", ["did you mean targetPort?"]),
    ({**SERVICE, "spec": {"ports": [{"port": 80}], "sessionAffinityConfig": {"clientIp": {}}},
      }, "spec.sessionAffinityConfig.clientIp", ["did you mean clientIP?"]),
    # only JSON values, bounded, anywhere in a document (status and managedFields included)
    ({**POLICY, 1: "x"}, "[1]", ["a field name must be a string"]),
    ({**POLICY, "status": {"a": [{2.5: "x"}]}}, "status.a[0][2.5]", ["a field name must be a string"]),
    ({**POLICY, "status": {"ratio": float("nan")}}, "status.ratio", ["nan is not a number JSON allows"]),
    ({**POLICY, "status": {"when": datetime.date(2026, 1, 1)}}, "status.when", ["date is not a JSON value"]),
    ({**POLICY, "status": {"x": b"bytes"}}, "status.x", ["bytes is not a JSON value"]),
    ({**POLICY, "status": {"x": "\ud800"}}, "status.x", ["is not valid Unicode (it holds a lone surrogate)"]),
    ({**POLICY, "status": {"x": "x" * 70000}}, "status.x", ["a string of 70000 characters; the limit is 65536"]),
    ({**POLICY, "status": {"x" * 70000: 1}}, 'status["' + "x" * 39 + '..."]', ["the limit is 65536"]),
    ({**POLICY, "status": functools.reduce(lambda inner, _: {"a": inner}, range(MAX_DEPTH), {})},
     "status" + ".a" * MAX_DEPTH, [f"nests deeper than {MAX_DEPTH} levels"]),
    ({**POLICY, "a b": 1}, '["a b"]', ['unknown field "a b"']),
    # types
    ("NetworkPolicy", "", ["expected a Kubernetes manifest (an object), got a string"]),
    ({**POLICY, "spec": []}, "spec", ["expected a NetworkPolicy spec (an object), got a list"]),
    (policy(ingress={}), "spec.ingress", ["expected a list, got an object"]),
    (policy(ingress=["from"]), "spec.ingress[0]", ["expected an ingress rule (an object), got a string"]),
    (policy(podSelector={"matchLabels": ["app=web"]}), "spec.podSelector.matchLabels",
     ["expected an object of strings, got a list"]),
    # kinds and versions
    ({k: v for k, v in POLICY.items() if k != "kind"}, "kind",
     ["missing", "NetworkPolicy (apiVersion networking.k8s.io/v1) and Service (apiVersion v1)"]),
    ({**POLICY, "kind": "Deployment"}, "kind", ['"Deployment" is not supported', "Weft takes NetworkPolicy"]),
    ({**POLICY, "kind": ["Service"]}, "kind", ["a list is not supported"]),
    ({**POLICY, "apiVersion": "extensions/v1beta1"}, "apiVersion",
     ['"extensions/v1beta1" is not supported', "a NetworkPolicy is apiVersion networking.k8s.io/v1"]),
    ({**SERVICE, "apiVersion": "networking.k8s.io/v1"}, "apiVersion", ["a Service is apiVersion v1"]),
    ({k: v for k, v in SERVICE.items() if k != "apiVersion"}, "apiVersion", ["missing"]),
    ({"apiVersion": "v2", "kind": "List", "items": []}, "apiVersion", ["use v1"]),
    ({"apiVersion": "v1", "kind": "List", "items": [POLICY], "itmes": []}, "itmes", ["did you mean items?"]),
    ({"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "List", "items": []}]}, "items[0]",
     ["a List inside a List"]),
    ({"apiVersion": "v1", "kind": "List", "items": "x"}, "items", ["expected a list"]),
    # metadata
    ({**POLICY, "metadata": None}, "metadata", ["missing"]),
    ({**POLICY, "metadata": {"namespace": "blue"}}, "metadata.name", ["missing"]),
    ({**POLICY, "metadata": {"name": 7}}, "metadata.name", ["expected a string, got 7"]),
    ({**POLICY, "metadata": {"name": "Allow_Web"}}, "metadata.name", ['"Allow_Web"', "lowercase DNS subdomain"]),
    ({**POLICY, "metadata": {"name": "a" * 64}}, "metadata.name", ["longer than the 63 characters a Weft name"]),
    ({**POLICY, "metadata": {"name": "a" * 70000}}, "metadata.name", ["the limit is 65536"]),
    ({**SERVICE, "metadata": {"name": "1web"}}, "metadata.name", ["DNS-1035 label"]),
    ({**SERVICE, "metadata": {"name": "web.blue"}}, "metadata.name", ["DNS-1035 label"]),
    ({**POLICY, "metadata": {"name": "a", "namespace": "bad name"}}, "metadata.namespace",
     ['"bad name" is not a valid Weft network name']),
    ({**POLICY, "metadata": {"name": "a", "namespace": 3}}, "metadata.namespace", ["expected a string"]),
    ({**POLICY, "metadata": {"name": "a", "namespace": "blue", "labels": {"-app": "x"}}}, "metadata.labels",
     ['key "-app"', "a label key is"]),
    ({**POLICY, "metadata": {"name": "a", "namespace": "blue", "labels": {"enabled": True}}}, "metadata.labels.enabled",
     ["must be a string, got true", "quote"]),
    ({**POLICY, "metadata": {"name": "a", "namespace": "blue", "annotations": {"note": 1}}}, "metadata.annotations.note",
     ["must be a string, got 1"]),
    ({**POLICY, "metadata": {"name": "a", "namespace": "blue", "annotations": {"a b": "x"}}}, "metadata.annotations",
     ['key "a b" is not a qualified name']),
    ({**POLICY, "metadata": {"name": "a", "namespace": "blue", "annotations": {f"k{i}": "x" * 60000 for i in range(5)}}},
     "metadata.annotations", ["the limit is 262144"]),
    # the selector
    ({**POLICY, "spec": None}, "spec", ["missing", "spec.podSelector"]),
    ({**POLICY, "spec": {"ingress": []}}, "spec.podSelector", ["missing", "podSelector: {}"]),
    (policy(podSelector=None), "spec.podSelector", ["missing"]),
    (policy(podSelector={"matchLabels": {"Example.com/app": "x"}}), "spec.podSelector.matchLabels",
     ["its prefix (before the '/') must be a lowercase DNS subdomain"]),
    (policy(podSelector={"matchLabels": {"a" * 64: "x"}}), "spec.podSelector.matchLabels", ["a label key is"]),
    (policy(podSelector={"matchLabels": {"app": "x" * 64}}), "spec.podSelector.matchLabels.app",
     ["a label value is empty, or 1-63"]),
    (policy(podSelector={"matchLabels": {"app": "-x"}}), "spec.podSelector.matchLabels.app", ["a label value"]),
    (policy(podSelector={"matchLabels": {"port": 80}}), "spec.podSelector.matchLabels.port", ["got 80", "quote"]),
    (policy(podSelector={"matchLabels": {"app.kubernetes.io/name": {}}}),
     'spec.podSelector.matchLabels["app.kubernetes.io/name"]', ["got an object"]),
    (policy(podSelector={"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]}),
     "spec.podSelector.matchExpressions[0].operator", ['"in" is not supported', "did you mean In?"]),
    (policy(podSelector={"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}),
     "spec.podSelector.matchExpressions[0].operator", ["use In or NotIn or Exists or DoesNotExist"]),
    (policy(podSelector={"matchExpressions": [{"key": "a", "values": ["x"]}]}),
     "spec.podSelector.matchExpressions[0].operator", ["missing"]),
    (policy(podSelector={"matchExpressions": [{"operator": "Exists"}]}),
     "spec.podSelector.matchExpressions[0].key", ["missing"]),
    (policy(podSelector={"matchExpressions": [{"key": "a/b/c", "operator": "Exists"}]}),
     "spec.podSelector.matchExpressions[0].key", ["prefix"]),
    (policy(podSelector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
     "spec.podSelector.matchExpressions[0].values", ["must be given (at least one value) when the operator is In"]),
    (policy(podSelector={"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}),
     "spec.podSelector.matchExpressions[0].values", ["when the operator is NotIn"]),
    (policy(podSelector={"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
     "spec.podSelector.matchExpressions[0].values", ["must be empty when the operator is Exists"]),
    (policy(podSelector={"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x"]}]}),
     "spec.podSelector.matchExpressions[0].values", ["must be empty when the operator is DoesNotExist"]),
    (policy(podSelector={"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}),
     "spec.podSelector.matchExpressions[0].values[0]", ["expected a string, got 1"]),
    (policy(podSelector={"matchExpressions": [{"key": "a", "operator": "In", "values": ["a b"]}]}),
     "spec.podSelector.matchExpressions[0].values[0]", ["a label value"]),
    # policyTypes
    (policy(policyTypes=["ingress"]), "spec.policyTypes[0]", ['"ingress" is not supported: use Ingress or Egress']),
    (policy(policyTypes=["Ingress", "Ingress"]), "spec.policyTypes[1]", ["Ingress is given twice"]),
    (policy(policyTypes="Ingress"), "spec.policyTypes", ["expected a list, got a string"]),
    # peers
    (policy(ingress=[peer_rule({})]), "spec.ingress[0].from[0]", ["must give a peer", "leave the list of peers out"]),
    (policy(egress=[{"to": [{"podSelector": None}]}]), "spec.egress[0].to[0]", ["must give a peer"]),
    (policy(ingress=[peer_rule(None)]), "spec.ingress[0].from[0]", ["expected a peer (an object), got null"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}})]), "spec.ingress[0].from[0]",
     ["may not give both ipBlock and a selector"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}})]),
     "spec.ingress[0].from[0]", ["may not give both ipBlock and a selector"]),
    (policy(ingress=[peer_rule({"ipBlock": {}})]), "spec.ingress[0].from[0].ipBlock.cidr", ["missing"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": 10}})]), "spec.ingress[0].from[0].ipBlock.cidr",
     ["expected a string, got 10"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "fd00::/8"}})]), "spec.ingress[0].from[0].ipBlock.cidr",
     ["IPv6 is not supported by Weft"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "::ffff:10.0.0.0/104"}})]),
     "spec.ingress[0].from[0].ipBlock.cidr", ["IPv6 is not supported by Weft"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0"}})]), "spec.ingress[0].from[0].ipBlock.cidr",
     ['"10.0.0.0" is not an IPv4 CIDR']),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0/33"}})]), "spec.ingress[0].from[0].ipBlock.cidr",
     ["is not an IPv4 CIDR"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.256/24"}})]), "spec.ingress[0].from[0].ipBlock.cidr",
     ["is not an IPv4 CIDR"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "010.0.0.0/8"}})]), "spec.ingress[0].from[0].ipBlock.cidr",
     ["is not an IPv4 CIDR", "eading zeros"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}})]),
     "spec.ingress[0].from[0].ipBlock.except[0]", ["11.0.0.0/16 is not strictly inside the cidr 10.0.0.0/8"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/16", "10.0.0.0/8"]}})]),
     "spec.ingress[0].from[0].ipBlock.except[1]", ["not strictly inside"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}})]),
     "spec.ingress[0].from[0].ipBlock.except[0]", ["not strictly inside"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}})]),
     "spec.ingress[0].from[0].ipBlock.except[0]", ["IPv6"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0/8", "except": [None]}})]),
     "spec.ingress[0].from[0].ipBlock.except[0]", ["expected a string, got null"]),
    # ports
    (policy(ingress=[peer_rule(ports=[{"protocol": "tcp"}])]), "spec.ingress[0].ports[0].protocol",
     ['"tcp" is not supported: use TCP or UDP or SCTP (did you mean TCP?)']),
    (policy(ingress=[peer_rule(ports=[{"protocol": "ICMP"}])]), "spec.ingress[0].ports[0].protocol",
     ["is not supported"]),
    (policy(ingress=[peer_rule(ports=[{"port": 0}])]), "spec.ingress[0].ports[0].port", ["out of range (1..65535)"]),
    (policy(ingress=[peer_rule(ports=[{"port": 65536}])]), "spec.ingress[0].ports[0].port", ["out of range"]),
    (policy(ingress=[peer_rule(ports=[{"port": 80.5}])]), "spec.ingress[0].ports[0].port", ["80.5 is not an integer"]),
    (policy(ingress=[peer_rule(ports=[{"port": True}])]), "spec.ingress[0].ports[0].port", ["true is not an integer"]),
    (policy(ingress=[peer_rule(ports=[{"port": "80"}])]), "spec.ingress[0].ports[0].port",
     ["write a port number without quotes"]),
    (policy(ingress=[peer_rule(ports=[{"port": "HTTP"}])]), "spec.ingress[0].ports[0].port", ["a port name is"]),
    (policy(ingress=[peer_rule(ports=[{"port": "my-very-long-port"}])]), "spec.ingress[0].ports[0].port",
     ["1-15 lowercase"]),
    (policy(ingress=[peer_rule(ports=[{"port": "web--app"}])]), "spec.ingress[0].ports[0].port", ["no '--'"]),
    (policy(ingress=[peer_rule(ports=[{"port": ""}])]), "spec.ingress[0].ports[0].port", ["a port name is"]),
    (policy(ingress=[peer_rule(ports=[{"port": 80, "endPort": 79}])]), "spec.ingress[0].ports[0].endPort",
     ["79 is less than the port 80"]),
    (policy(ingress=[peer_rule(ports=[{"port": 80, "endPort": 65536}])]), "spec.ingress[0].ports[0].endPort",
     ["out of range (1..65535)"]),
    (policy(ingress=[peer_rule(ports=[{"port": 80, "endPort": "90"}])]), "spec.ingress[0].ports[0].endPort",
     ["is not an integer"]),
    (policy(ingress=[peer_rule(ports=[{"port": "http", "endPort": 90}])]), "spec.ingress[0].ports[0].endPort",
     ["may not be given with a named port"]),
    (policy(ingress=[peer_rule(ports=[{"endPort": 90}])]), "spec.ingress[0].ports[0].endPort",
     ["may not be given without a port"]),
    # limits
    (policy(ingress=[{}] * (MAX_ITEMS + 1)), "spec.ingress", [f"has {MAX_ITEMS + 1} entries; the limit is {MAX_ITEMS}"]),
    (policy(egress=[{"to": [{"podSelector": {}}] * (MAX_ITEMS + 1)}]), "spec.egress[0].to", ["the limit is"]),
    (policy(ingress=[{"ports": [{}] * (MAX_ITEMS + 1)}]), "spec.ingress[0].ports", ["the limit is"]),
    (policy(podSelector={"matchLabels": {f"k{i}": "v" for i in range(MAX_ITEMS + 1)}}),
     "spec.podSelector.matchLabels", ["the limit is"]),
    (policy(ingress=[peer_rule({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/16"] * (MAX_ITEMS + 1)}})]),
     "spec.ingress[0].from[0].ipBlock.except", ["the limit is"]),
    (service(ports=[{"port": 80}] * (MAX_ITEMS + 1)), "spec.ports", ["the limit is"]),
    # Service
    ({**SERVICE, "spec": None}, "spec", ["missing", "spec.ports"]),
    (service(ports=None), "spec.ports", ["missing: a Service needs at least one port"]),
    (service(ports=[]), "spec.ports", ["missing"]),
    (service(ports=[{"name": "http"}]), "spec.ports[0].port", ["missing"]),
    (service(ports=[{"port": 70000}]), "spec.ports[0].port", ["out of range"]),
    (service(ports=[{"port": "80"}]), "spec.ports[0].port", ['"80" is not an integer']),
    (service(ports=[{"port": 80, "protocol": "HTTP"}]), "spec.ports[0].protocol", ["use TCP or UDP or SCTP"]),
    (service(ports=[{"name": "http", "port": 80}, {"port": 443}]), "spec.ports[1].name",
     ["missing: each port of a service with several ports needs a name"]),
    (service(ports=[{"name": "web", "port": 80}, {"name": "web", "port": 443}]), "spec.ports[1].name",
     ["web names two ports"]),
    (service(ports=[{"name": "HTTP", "port": 80}]), "spec.ports[0].name", ["lowercase DNS label"]),
    (service(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]), "spec.ports[1]",
     ["TCP port 80 is also ports[0]"]),
    (service(ports=[{"port": 80, "targetPort": 70000}]), "spec.ports[0].targetPort", ["out of range"]),
    (service(ports=[{"port": 80, "targetPort": -1}]), "spec.ports[0].targetPort", ["out of range"]),
    (service(ports=[{"port": 80, "targetPort": "8080"}]), "spec.ports[0].targetPort",
     ["write a port number without quotes"]),
    (service(ports=[{"port": 80, "targetPort": "Web"}]), "spec.ports[0].targetPort", ["a port name is"]),
    (service(ports=[{"port": 80, "targetPort": 80.0}]), "spec.ports[0].targetPort", ["not an integer"]),
    (service(ports=[{"port": 80, "nodePort": 30080}]), "spec.ports[0].nodePort",
     ["not supported by Weft: Weft has no node ports"]),
    (service(ports=[{"port": 80, "appProtocol": "not valid"}]), "spec.ports[0].appProtocol", ["qualified name"]),
    (service(selector={"app": 1}), "spec.selector.app", ["must be a string, got 1"]),
    (service(selector={"bad key": "x"}), "spec.selector", ['key "bad key"']),
    (service(type="NodePort"), "spec.type", ["NodePort is not supported by Weft", "no node ports"]),
    (service(type="ExternalName"), "spec.type", ["ExternalName is not supported by Weft"]),
    (service(type="clusterIP"), "spec.type", ["did you mean ClusterIP?"]),
    (service(clusterIP="None"), "spec.clusterIP", ["headless services (clusterIP: None) are not supported by Weft"]),
    (service(clusterIPs=["None"]), "spec.clusterIPs", ["headless"]),
    (service(clusterIP="10.96.0.300"), "spec.clusterIP", ['"10.96.0.300" is not an IPv4 address']),
    (service(clusterIP="fd00::1"), "spec.clusterIP", ["IPv6 is not supported by Weft"]),
    (service(clusterIPs=["10.96.0.1", "fd00::1"]), "spec.clusterIPs[1]", ["dual-stack", "not supported by Weft"]),
    (service(clusterIP="10.96.0.1", clusterIPs=["10.96.0.2"]), "spec.clusterIPs[0]",
     ["10.96.0.2 differs from clusterIP 10.96.0.1"]),
    (service(clusterIPs=[5]), "spec.clusterIPs[0]", ["expected a string"]),
    (service(loadBalancerIP="203.0.113.7"), "spec.loadBalancerIP", ["only a LoadBalancer service has one"]),
    (service(type="LoadBalancer", loadBalancerIP="203.0.113"), "spec.loadBalancerIP", ["not an IPv4 address"]),
    (service(sessionAffinity="clientip"), "spec.sessionAffinity", ["did you mean ClientIP?"]),
    (service(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}), "spec.sessionAffinityConfig",
     ["may only be set when sessionAffinity is ClientIP"]),
    (service(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}),
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", ["0 is out of range (1..86400)"]),
    (service(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86401}}),
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", ["out of range"]),
    (service(type="LoadBalancer", externalTrafficPolicy="Local"), "spec.externalTrafficPolicy",
     ["Local is not supported by Weft"]),
    (service(externalTrafficPolicy="Cluster"), "spec.externalTrafficPolicy", ["only be set on a LoadBalancer"]),
    (service(internalTrafficPolicy="Local"), "spec.internalTrafficPolicy", ["Local is not supported by Weft"]),
    (service(ipFamilies=["IPv6"]), "spec.ipFamilies[0]", ["IPv6 is not supported by Weft"]),
    (service(ipFamilies=["IPv4", "IPv6"]), "spec.ipFamilies[1]", ["IPv6 is not supported by Weft"]),
    (service(ipFamilies=["IPv4", "IPv4"]), "spec.ipFamilies[1]", ["given twice"]),
    (service(ipFamilies=["ipv4"]), "spec.ipFamilies[0]", ["use IPv4"]),
    (service(ipFamilyPolicy="RequireDualStack"), "spec.ipFamilyPolicy", ["not supported by Weft", "IPv4 only"]),
    (service(externalIPs=["198.51.100.1"]), "spec.externalIPs", ["not supported by Weft", "use type LoadBalancer"]),
    (service(externalName="db.example.com"), "spec.externalName", ["not supported by Weft"]),
    (service(type="LoadBalancer", loadBalancerSourceRanges=["10.0.0.0/8"]), "spec.loadBalancerSourceRanges",
     ["not supported by Weft"]),
    (service(type="LoadBalancer", loadBalancerClass="example.com/lb"), "spec.loadBalancerClass",
     ["not supported by Weft"]),
    (service(publishNotReadyAddresses=True), "spec.publishNotReadyAddresses", ["only to ready backends"]),
    (service(trafficDistribution="PreferClose"), "spec.trafficDistribution", ["not supported by Weft"]),
    (service(allocateLoadBalancerNodePorts=False), "spec.allocateLoadBalancerNodePorts",
     ["only be set on a LoadBalancer"]),
    (service(type="LoadBalancer", allocateLoadBalancerNodePorts="yes"), "spec.allocateLoadBalancerNodePorts",
     ["expected true or false"]),
])
def test_refusals(doc, path, words):
    assert_refused(doc, path, *words)


def test_harmless_defaults_of_unsupported_features_are_accepted():
    spec = service(externalIPs=[], publishNotReadyAddresses=False, ipFamilyPolicy="PreferDualStack",
                   ports=[{"port": 80, "nodePort": 0}], clusterIP="", loadBalancerIP=None)
    assert parse_one(spec).obj.ports == (ServicePort("", "TCP", 80, 80),)
    assert parse_one({**POLICY, "metadata": {"name": "a", "namespace": "blue", "finalizers": []}}).name == "a"


def test_the_network_comes_from_the_namespace_or_the_callers_default():
    unnamed = {**POLICY, "metadata": {"name": "allow-web"}}
    assert parse_one(unnamed, network="red").network == "red"
    assert parse_one(POLICY, network="blue").network == "blue"
    err = assert_refused(unnamed, "metadata.namespace")
    assert err.message == "missing: name the Weft network (a namespace in Kubernetes terms), or give --network"
    assert_refused(POLICY, "metadata.namespace", '"blue" differs from the network given (red)', network="red")
    with pytest.raises(ManifestError, match="not a valid name"):
        parse_documents([POLICY], "no good")


def test_too_many_documents():
    with pytest.raises(ManifestError, match=f"more than {MAX_DOCUMENTS} documents"):
        parse_documents([None] + [service()] * MAX_DOCUMENTS + [POLICY], None)
    err = refused([None, {"apiVersion": "v1", "kind": "List", "items": [None] * (MAX_DOCUMENTS + 1)}])
    assert (err.document, err.path, err.message) == (1, "items", "has 1001 entries; the limit is 1000")


def test_nothing_is_returned_when_one_document_is_bad():
    with pytest.raises(ManifestError) as caught:
        parse_documents([POLICY, SERVICE, service(ports=[])], None)
    assert caught.value.document == 2
    with pytest.raises(ManifestError, match="expected a list of documents"):
        parse_documents(POLICY, None)


# --- text_to_documents: YAML or JSON, only JSON values out ---------------------------------------------

def test_yaml_with_several_documents():
    text = "---\n" + DOCS_POLICY + "---\n# only a comment\n---\n" + json.dumps(SERVICE) + "\n---\n"
    docs = text_to_documents(text)
    assert [doc and doc["kind"] for doc in docs] == ["NetworkPolicy", None, "Service", None]  # None: empty
    assert [m.kind for m in parse_documents(docs, None)] == ["NetworkPolicy", "Service"]
    assert json.loads(json.dumps(docs)) == docs  # JSON values only: the CLI sends them as they are


def test_json_one_object_a_list_or_several_in_a_row():
    assert text_to_documents(json.dumps(POLICY, indent="\t")) == [POLICY]  # tabs: JSON, not YAML
    assert text_to_documents(json.dumps([POLICY, SERVICE])) == [POLICY, SERVICE]
    assert text_to_documents(json.dumps(POLICY) + "\n" + json.dumps(SERVICE) + "\n") == [POLICY, SERVICE]
    kube_list = {"apiVersion": "v1", "kind": "List", "items": [POLICY, SERVICE]}
    assert [m.name for m in parse_documents(text_to_documents(json.dumps(kube_list)), None)] == ["allow-web", "web"]


def test_yaml_scalars_stay_what_json_would_hold():
    (doc,) = text_to_documents("creationTimestamp: 2026-01-01T00:00:00Z\nday: 2026-01-01\nport: 80\nname: web\n"
                               "enabled: yes\nratio: 1.5\nnothing: ~\n")
    assert doc == {"creationTimestamp": "2026-01-01T00:00:00Z", "day": "2026-01-01", "port": 80, "name": "web",
                   "enabled": True, "ratio": 1.5, "nothing": None}


@pytest.mark.parametrize("text, words", [
    ("a: 1\nb: 2\na: 3\n", ['line 3, column 1: the key "a" appears twice in one mapping (first on line 1)']),
    ("spec:\n  podSelector: {}\n  podSelector:\n    matchLabels: {app: web}\n",
     ['line 3, column 3: the key "podSelector" appears twice']),
    ('{"a": 1, "a": 2}', ["not valid JSON: the key 'a' appears twice"]),
    ("a: &x [1, 2]\nb: *x\n", ["line 2, column 4: YAML aliases (*name) are not accepted"]),
    ("a: &a [x]\nb: &b [*a, *a]\n", ["YAML aliases"]),
    ("base: {a: 1}\nc:\n  <<: {a: 2}\n", ["line 3, column 3: YAML merge keys (<<) are not accepted"]),
    ("a: [1, 2\nb: 3\n", ["not valid YAML", "line"]),
    ("a: b: c\n", ["line 1, column 5: not valid YAML", "mapping values are not allowed here"]),
    ("\ta: 1\n", ["line 1, column 1: not valid YAML"]),
    ('{"a": [1, 2}', ["line 1, column 12: not valid JSON"]),
    ('{"a": NaN}', ["NaN is not a number JSON allows"]),
    ("a: .inf\n", ["line 1, column 4: .inf is not a number JSON allows"]),
    ("a: !!binary aGVsbG8=\n", ["line 1, column 4: the tag !!binary is not accepted in a manifest"]),
    ("a: !!set {x}\n", ["the tag !!set is not accepted"]),
    ("a: !!timestamp 2026-01-01\n", ["the tag !!timestamp is not accepted"]),
    ("a: !!omap [b: 1]\n", ["the tag !!omap is not accepted"]),
    ("a: !local x\n", ["line 1, column 4: not valid YAML", "!local"]),
    ("a: !!python/object:os.system x\n", ["not valid YAML"]),
    ("80: http\n", ["line 1, column 1: the key 80 is not a string: quote it"]),
    ("on: [push]\n", ["the key true is not a string"]),  # YAML 1.1, as Kubernetes reads it too
    ("? [a, b]\n: c\n", ["is not a string"]),
    ("a: \x07\n", ["not valid YAML", "#x0007"]),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), [f"nests deeper than {MAX_DEPTH} levels"]),
    ("a:\n" + "".join("  " * i + "- \n" for i in range(1, MAX_DEPTH + 2)), [f"nests deeper than {MAX_DEPTH}"]),
    ("---\na: 1\n" * (MAX_DOCUMENTS + 1), [f"the limit is {MAX_DOCUMENTS}"]),
])
def test_text_refusals(text, words):
    with pytest.raises(ManifestError) as caught:
        text_to_documents(text)
    for word in words:
        assert word in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


def test_text_must_be_text():
    with pytest.raises(ManifestError, match="expected text"):
        text_to_documents(b"a: 1")


def test_a_yaml_boolean_where_a_label_value_goes_says_to_quote_it():
    text = DOCS_POLICY.replace("role: frontend", "frontend: yes")
    err = refused(text_to_documents(text))
    assert err.path == "spec.ingress[0].from[2].podSelector.matchLabels.frontend"
    assert "got true (in YAML, quote values like yes, on or 80)" in err.message


def test_the_cli_can_read_manifests_without_importing_yaml_at_start():
    """weft/cli.py imports controller modules and starts fast: PyYAML loads only when a file is read."""
    import subprocess
    import sys
    code = ("import sys, controller.manifests as m; assert 'yaml' not in sys.modules; "
            "m.text_to_documents('a: 1'); assert 'yaml' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# --- Kubernetes' name syntaxes, as controller/validate.py has them ---------------------------------------

@pytest.mark.parametrize("check, good, bad", [
    (validate.label_key_problem, ["app", "a", "A.b_c-1", "app.kubernetes.io/name", "example.com/" + "x" * 63,
                                  "x" * 63], ["", "-a", "a-", "a b", "x" * 64, "/a", "Example.com/a", "a/b/c",
                                              "a/", "é"]),
    (validate.label_value_problem, ["", "web", "v1.2_x-y", "x" * 63], ["-x", "x-", "a b", "x" * 64, "a/b"]),
    (validate.dns_subdomain_problem, ["a", "a.b-c", "a" * 63 + "." + "b" * 63], ["", "A", "a..b", "-a", "a_b",
                                                                                  ("a" * 63 + ".") * 4 + "a"]),
    (validate.dns_label_problem, ["a", "1a", "a-b"], ["", "a.b", "A", "a-", "x" * 64]),
    (validate.dns1035_label_problem, ["a", "a-1"], ["1a", "a.b", "A", "a-", "x" * 64]),
    (validate.service_name_problem, ["http", "h2", "grpc-web", "a" * 15], ["", "80", "-http", "http-", "a--b", "HTTP",
                                                                         "a" * 16, "a_b"]),
])
def test_kubernetes_syntaxes(check, good, bad):
    assert [value for value in good if check(value)] == []
    assert [value for value in bad if not check(value)] == []


# --- garbage never raises anything but ManifestError ----------------------------------------------------

FIELDS = sorted({"apiVersion", "kind", "metadata", "name", "namespace", "spec", "podSelector", "matchLabels",
                 "matchExpressions", "key", "operator", "values", "ingress", "egress", "from", "to", "ports",
                 "port", "endPort", "protocol", "ipBlock", "cidr", "except", "namespaceSelector", "policyTypes",
                 "selector", "targetPort", "type", "clusterIP", "clusterIPs", "sessionAffinity", "items",
                 "sessionAffinityConfig", "clientIP", "timeoutSeconds", "labels", "annotations", "nodePort"})
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.sampled_from(["NetworkPolicy", "Service", "List", "networking.k8s.io/v1", "v1", "TCP", "In",
                                     "Exists", "Ingress", "Egress", "10.0.0.0/8", "LoadBalancer", "ClientIP", "None",
                                     "http", "", "a", "blue"]), st.text(max_size=20))
JSONISH = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=5)), max_leaves=30)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(JSONISH, max_size=3), st.one_of(st.none(), st.sampled_from(["blue", "red"])))
def test_garbage_documents_raise_only_manifest_errors(docs, network):
    try:
        parse_documents(docs, network)
    except ManifestError as err:
        assert "\n" not in str(err) and str(err).isascii() and str(err).isprintable()


def _paths(value, prefix=()):
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from _paths(inner, (*prefix, key))


VALID = [json.loads(json.dumps(doc)) for doc in (
    text_to_documents(DOCS_POLICY)[0],
    policy(podSelector={"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]},
           ingress=[peer_rule({"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}},
                              ports=[{"port": 80, "endPort": 90}, {"port": "http", "protocol": "UDP"}])]),
    service(type="LoadBalancer", sessionAffinity="ClientIP", selector={"app": "web"},
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 5}},
            ports=[{"name": "a", "port": 80, "targetPort": "http"}, {"name": "b", "port": 53, "protocol": "UDP"}]))]


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_a_valid_document_with_one_part_replaced_by_garbage_raises_only_manifest_errors(doc, data):
    doc = copy.deepcopy(doc)
    path = data.draw(st.sampled_from(list(_paths(doc))[1:]))
    garbage = data.draw(JSONISH)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = garbage
    try:
        parse_documents([doc], "blue")
    except ManifestError as err:
        assert "\n" not in str(err) and str(err).isascii()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.text(alphabet="{}[]:,-?&*!|>'\"#%@`\n\t abc01.\\", max_size=80)))
def test_garbage_text_raises_only_manifest_errors(text):
    try:
        docs = text_to_documents(text)
    except ManifestError as err:
        assert "\n" not in str(err)
    else:
        assert json.loads(json.dumps(docs, allow_nan=False)) == docs


def test_more_rules_than_a_policy_may_hold_are_refused_with_the_path():
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "big", "namespace": "blue"},
           "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 1 + i}]} for i in range(129)]}}
    with pytest.raises(ManifestError, match=r"spec\.ingress: has 129 rules; Weft takes at most 128"):
        parse_documents([doc], None)
