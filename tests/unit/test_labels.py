"""Labels, named ports and label selectors as Kubernetes writes them: what is accepted, what is
refused (with the field and the bad key named), and what a selector string picks."""
import pytest

from controller import validate as v
from controller.validate import ApiError
from flows.policy import Requirement, Selector

GOOD_LABELS = [
    {},
    {"app": "web", "tier": "frontend"},
    {"example.com/app": "web", "a.b-c_d": "", "x": "X"},
    {"k" * 63: "v" * 63, ("p" * 63 + ".") * 3 + "p" * 61 + "/" + "n": "1"},  # a 253-character prefix
]
BAD_LABELS = [
    # (labels, words the message must have)
    ("app=web", ["labels", "not an object"]),
    ({"app": 1}, ["labels.app", "not a valid label value"]),
    ({"app": "-web"}, ["labels.app", "not a valid label value"]),
    ({"app": "w" * 64}, ["labels.app", "not a valid label value"]),
    ({"app": "a b"}, ["labels.app"]),
    ({"": "x"}, ["labels", "key ''"]),
    ({"-app": "x"}, ["labels", "key '-app'"]),
    ({"a" * 64: "x"}, ["labels", "not a valid label key"]),
    ({"Example.com/app": "x"}, ["labels", "key 'Example.com/app'"]),  # a prefix is lowercase
    ({"/app": "x"}, ["labels", "key '/app'"]),
    ({"a/b/c": "x"}, ["labels", "key 'a/b/c'"]),
    ({"example.com/": "x"}, ["labels", "key 'example.com/'"]),
    ({"p" * 254 + "/n": "x"}, ["labels", "not a valid label key"]),
    ({"ünï": "x"}, ["labels", "key"]),
    ({f"k{i}": "v" for i in range(65)}, ["labels", "65 labels", "64"]),
]


@pytest.mark.parametrize("labels", GOOD_LABELS)
def test_kubernetes_labels_are_accepted(labels):
    assert v.labels(labels) == labels


@pytest.mark.parametrize("labels,words", BAD_LABELS, ids=[w[-1] for _, w in BAD_LABELS])
def test_bad_labels_are_refused_naming_the_field_and_key(labels, words):
    with pytest.raises(ApiError) as err:
        v.labels(labels)
    assert err.value.status == 400
    for word in words:
        assert word in err.value.message


def test_named_ports_are_stored_with_protocols_in_capitals():
    assert v.named_ports({"http": "TCP/8080", "dns": "udp/53", "sig": "Sctp/0099", "a1-b2": "TCP/65535"}) == \
        {"http": "TCP/8080", "dns": "UDP/53", "sig": "SCTP/99", "a1-b2": "TCP/65535"}


@pytest.mark.parametrize("named,words", [
    ({"HTTP": "TCP/80"}, ["named_ports", "'HTTP'", "not a valid port name"]),
    ({"8080": "TCP/80"}, ["named_ports", "'8080'"]),  # a name needs a letter
    ({"a--b": "TCP/80"}, ["named_ports", "'a--b'"]),
    ({"-web": "TCP/80"}, ["named_ports", "'-web'"]),
    ({"web-": "TCP/80"}, ["named_ports", "'web-'"]),
    ({"a" * 16: "TCP/80"}, ["named_ports", "not a valid port name"]),
    ({"web": "TCP"}, ["named_ports.web", "PROTOCOL/NUMBER"]),
    ({"web": "ICMP/1"}, ["named_ports.web", "TCP, UDP, SCTP"]),
    ({"web": "TCP/0"}, ["named_ports.web", "out of range"]),
    ({"web": "TCP/65536"}, ["named_ports.web", "out of range"]),
    ({"web": "TCP/-1"}, ["named_ports.web", "PROTOCOL/NUMBER"]),
    ({"web": "TCP/٣"}, ["named_ports.web", "PROTOCOL/NUMBER"]),
    ({"web": 80}, ["named_ports.web", "PROTOCOL/NUMBER"]),
    ({f"p{i}": "TCP/1" for i in range(65)}, ["named_ports", "65 named ports"]),
])
def test_bad_named_ports_are_refused_naming_the_field_and_name(named, words):
    with pytest.raises(ApiError) as err:
        v.named_ports(named)
    for word in words:
        assert word in err.value.message


SELECTORS = [
    ("", Selector()),
    ("app=web", Selector((("app", "web"),))),
    ("app==web", Selector((("app", "web"),))),
    (" tier = db , app=web ", Selector((("app", "web"), ("tier", "db")))),
    ("tier!=db", Selector((), (Requirement("tier", "NotIn", ("db",)),))),
    ("app", Selector((), (Requirement("app", "Exists"),))),
    ("!legacy", Selector((), (Requirement("legacy", "DoesNotExist"),))),
    ("env in (prod, staging)", Selector((), (Requirement("env", "In", ("prod", "staging")),))),
    ("env notin (dev)", Selector((), (Requirement("env", "NotIn", ("dev",)),))),
    ("example.com/app=web,env in(a,b),!x", Selector((("example.com/app", "web"),), (
        Requirement("env", "In", ("a", "b")), Requirement("x", "DoesNotExist")))),
    ("app=", Selector((("app", ""),))),  # as Kubernetes: the empty value
    ("in in (in)", Selector((), (Requirement("in", "In", ("in",)),))),
]


@pytest.mark.parametrize("text,expected", SELECTORS, ids=[t or "empty" for t, _ in SELECTORS])
def test_selector_strings_parse_as_kubernetes_reads_them(text, expected):
    assert v.selector(text) == expected


@pytest.mark.parametrize("text,words", [
    ("app=web=x", ["expected ','"]),
    ("app web", ["expected =, ==, !=, in or notin after app"]),
    ("app in web", ["expected '(' after app in"]),
    ("app in ()", ["needs at least one value"]),
    ("app in (a", ["expected ',' or ')'"]),
    ("app in (a,)", ["expected a value after ','"]),
    ("app,", ["after the last ','"]),
    (",app", ["at the start"]),
    ("!", ["expected a label key after '!'"]),
    ("replicas>1", ["< and > are not supported"]),
    ("Bad/app=x", ["key 'Bad/app'"]),
    ("app=-x", ["'-x' is not a valid label value"]),
])
def test_bad_selector_strings_say_what_is_wrong(text, words):
    with pytest.raises(ApiError) as err:
        v.selector(text)
    assert err.value.message.startswith("selector: ")
    for word in words:
        assert word in err.value.message


def test_a_selector_picks_labels_as_kubernetes_does():
    picks = v.selector("app=web,tier!=db,env in (prod,staging),!legacy").matches
    assert picks({"app": "web", "env": "prod"})
    assert picks({"app": "web", "env": "staging", "tier": "front"})
    assert not picks({"app": "web", "env": "prod", "tier": "db"})
    assert not picks({"app": "web", "env": "prod", "legacy": ""})
    assert not picks({"app": "web"})  # `in` needs the key
    assert v.selector("tier notin (db)").matches({})  # `notin` and `!=` take a missing key
    assert v.selector("").matches({})
