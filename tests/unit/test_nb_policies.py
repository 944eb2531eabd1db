"""Policies and services in the NB: one write creates, replaces and deletes several at once or none,
the database keeps names, service keys and cluster IPs unique, and the replica reports what changed."""
import shutil

import pytest

from ovsdb.idl import ThreadHub, TransactionError
from ovsdb.nb import Nb
from ovsdb.server import EmbeddedNbServer


@pytest.fixture
def nb(tmp_path):
    """An NB on its own ovsdb-server, with no controller core taking the replica's changes."""
    if not shutil.which("ovsdb-server"):
        pytest.skip("ovsdb-server is not installed (scripts/setup.sh installs it)")
    server = EmbeddedNbServer(str(tmp_path / "state"))
    nb = Nb(ThreadHub, server.start()).start()
    try:
        nb.conn.wait_synced(10)
        yield nb
    finally:
        nb.stop()
        server.stop()


def service(name, key, cluster_ip, lb=None, network="blue"):
    return ("Service", network, name, {"manifest": f'{{"name":"{name}"}}', "key": key, "cluster_ip": cluster_ip,
                                       "load_balancer_ip": lb})


def policy(name, network="blue", manifest="{}"):
    return ("Policy", network, name, {"manifest": manifest})


def test_one_write_creates_replaces_and_deletes_and_the_replica_says_what_changed(nb):
    state = nb.replica
    nb.apply(lambda taken: [policy("deny"), policy("allow"), service("web", 1, "10.96.0.1")])
    changes = state.take_changes()
    assert (changes.policies, changes.services) == ({"blue/deny", "blue/allow"}, {"blue/web"})
    assert state.policies_of_network == {"blue": {"blue/deny", "blue/allow"}}
    assert state.services["blue/web"].cluster_ip == "10.96.0.1" and state.services["blue/web"].load_balancer_ip is None
    assert state.service_ips == {"10.96.0.1": "blue/web"}

    nb.apply(lambda taken: [policy("deny", manifest='{"x":1}'), service("web", 1, "10.96.0.9", "192.0.2.7")],
                  remove=[("Policy", "blue", "allow")])
    changes = state.take_changes()
    assert (changes.policies, changes.services) == ({"blue/deny", "blue/allow"}, {"blue/web"})
    assert list(state.policies) == ["blue/deny"] and state.policies["blue/deny"].manifest == '{"x":1}'
    assert state.service_ips == {"10.96.0.9": "blue/web", "192.0.2.7": "blue/web"}

    nb.apply(lambda taken: [], remove=[("Service", "blue", "web"), ("Policy", "blue", "deny")])
    assert (state.policies, state.services, state.service_ips) == ({}, {}, {})
    assert state.take_changes().services == {"blue/web"}


def test_a_failing_choice_or_a_refused_row_writes_nothing(nb):
    def choose(taken):
        raise LookupError("no free address")
    with pytest.raises(LookupError):
        nb.apply(choose)
    nb.apply(lambda taken: [policy("a")])
    with pytest.raises(TransactionError, match="16777215"):  # the last row breaks the key's range
        nb.apply(lambda taken: [policy("b"), policy("a", manifest='{"x":1}'), service("s", 2**24, "10.96.0.1")],
                      remove=[("Policy", "blue", "a")])
    state = nb.replica
    assert list(state.policies) == ["blue/a"] and state.policies["blue/a"].manifest == "{}" and not state.services


def test_the_database_keeps_service_keys_and_cluster_ips_unique(nb):
    nb.apply(lambda taken: [service("a", 1, "10.96.0.1")])
    with pytest.raises(TransactionError, match="key"):
        nb.apply(lambda taken: [service("b", 1, "10.96.0.2")])
    with pytest.raises(TransactionError, match="cluster_ip"):
        nb.apply(lambda taken: [service("b", 2, "10.96.0.1")])
    with pytest.raises(TransactionError, match="16777215"):
        nb.apply(lambda taken: [service("b", 2**24, "10.96.0.2")])
    assert list(nb.replica.services) == ["blue/a"]


def test_the_same_name_in_two_networks_is_two_objects(nb):
    nb.apply(lambda taken: [policy("p", "blue"), policy("p", "red"), service("s", 1, "10.96.0.1", network="red"),
                                 service("s", 2, "10.96.0.2")])
    state = nb.replica
    assert sorted(state.policies) == ["blue/p", "red/p"] and sorted(state.services) == ["blue/s", "red/s"]


def test_picks_of_one_transaction_are_seen_by_the_next_pick(nb):
    nb.apply(lambda taken: [service("a", 1, "10.96.0.1")])

    def choose(taken):
        rows = []
        for name in ("b", "c"):
            key = taken.lowest_key()
            ip = next(f"10.96.0.{i}" for i in range(1, 255) if taken.ip_owner(f"10.96.0.{i}") is None)
            taken.pick(f"blue/{name}", key, [ip])
            rows.append(service(name, key, ip))
        return rows
    nb.apply(choose)
    state = nb.replica
    assert [(s.key, s.cluster_ip) for _, s in sorted(state.services.items())] == \
        [(1, "10.96.0.1"), (2, "10.96.0.2"), (3, "10.96.0.3")]
    nb.apply(lambda taken: [], remove=[("Service", "blue", "b")])
    assert state.service_keys.lowest() == 2  # a freed key is the next one again
