"""The NB database itself refuses duplicates and dangling references, whoever writes."""
import pytest

from ovsdb.idl import TransactionError


def _create_network(nb, name, vni, cidr, gateway_ip, mtu):
    nb.create_network(name, lambda taken, name_in_use: vni, cidr, gateway_ip, mtu)


def _create_port(nb, name, network, mac, ip):
    """A raw write with a fixed address, past the API's checks: what the database alone enforces."""
    nb.create_port(name, network, lambda taken: (ip, mac))


def test_duplicate_network_name_is_refused(core):
    _create_network(core.nb, "blue", 100, "10.0.0.0/24", "10.0.0.1", 1450)
    with pytest.raises(TransactionError, match="index on column \"name\""):
        _create_network(core.nb, "blue", 101, "10.1.0.0/24", "10.1.0.1", 1450)
    assert list(core.nb_state().networks) == ["blue"]


def test_duplicate_vni_is_refused(core):
    _create_network(core.nb, "blue", 100, "10.0.0.0/24", "10.0.0.1", 1450)
    with pytest.raises(TransactionError, match="index on column \"vni\""):
        _create_network(core.nb, "red", 100, "10.0.0.0/24", "10.0.0.1", 1450)
    assert list(core.nb_state().networks) == ["blue"]


def test_vni_out_of_range_is_refused(core):
    with pytest.raises(TransactionError, match="valid range 1 to 16777215"):
        _create_network(core.nb, "blue", 2**24, "10.0.0.0/24", "10.0.0.1", 1450)


def test_duplicate_ip_in_one_network_is_refused_but_allowed_across_networks(core):
    _create_network(core.nb, "blue", 100, "10.0.0.0/24", "10.0.0.1", 1450)
    _create_network(core.nb, "red", 101, "10.0.0.0/24", "10.0.0.1", 1450)
    _create_port(core.nb, "a", "blue", "02:00:00:00:00:01", "10.0.0.5")
    _create_port(core.nb, "b", "red", "02:00:00:00:00:02", "10.0.0.5")
    with pytest.raises(TransactionError, match="\"network\" and \"ip\""):
        _create_port(core.nb, "c", "blue", "02:00:00:00:00:03", "10.0.0.5")
    assert sorted(core.nb_state().ports) == ["a", "b"]


def test_host_name_key_and_encap_ip_are_unique(core):
    core.nb.create_host("h1", "192.0.2.1", "tcp:192.0.2.1:6640", "system")
    with pytest.raises(TransactionError, match="encap_ip"):
        core.nb.create_host("h2", "192.0.2.1", "tcp:192.0.2.2:6640", "system")
    with pytest.raises(TransactionError, match="name"):
        core.nb.create_host("h1", "192.0.2.3", "tcp:192.0.2.3:6640", "system")
    core.nb.create_host("h3", "192.0.2.3", "tcp:192.0.2.3:6640", "system")
    assert sorted(h.key for h in core.nb_state().hosts.values()) == [1, 2]


def test_network_with_ports_cannot_be_deleted(core):
    _create_network(core.nb, "blue", 100, "10.0.0.0/24", "10.0.0.1", 1450)
    _create_port(core.nb, "a", "blue", "02:00:00:00:00:01", "10.0.0.5")
    with pytest.raises(TransactionError, match="remaining reference"):
        core.nb.delete("Network", "blue")
    assert "blue" in core.nb_state().networks


def test_port_in_missing_network_is_refused(core):
    with pytest.raises(LookupError, match="nowhere"):
        _create_port(core.nb, "a", "nowhere", "02:00:00:00:00:01", "10.0.0.5")
    assert core.nb_state().ports == {}


def test_concurrent_writes_are_batched_and_a_refused_one_fails_alone(core):
    """Writes queued together share one transaction; when the database refuses the batch, each is
    retried alone, so only the write at fault fails and the others land."""
    import threading
    _create_network(core.nb, "blue", 100, "10.0.0.0/24", "10.0.0.1", 1450)
    results = {}

    def create(name, ip, mac):
        try:
            _create_port(core.nb, name, "blue", mac, ip)
            results[name] = "ok"
        except TransactionError as err:
            results[name] = str(err)

    # p-dup takes an IP p5 also takes: one of the two must fail, the other 19 ports must land.
    jobs = [(f"p{i}", f"10.0.0.{i + 10}", f"02:00:00:00:01:{i:02x}") for i in range(20)]
    jobs.append(("p-dup", "10.0.0.15", "02:00:00:00:02:00"))
    threads = [threading.Thread(target=create, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [name for name, outcome in results.items() if outcome != "ok"]
    assert len(failed) == 1 and failed[0] in ("p5", "p-dup")
    assert '"network" and "ip"' in results[failed[0]]
    assert len(core.nb_state().ports) == 20
