"""The NB replica kept row by row (ovsdb.nb.NbReplica, fed by the IDL's change tracking) equals one
rebuilt from scratch from the same IDL tables, indexes included (free port and service keys, IPs
and MACs in use, names and uuids, router legs), after every step of a seeded random sequence of
creates, updates and deletes written to a real ovsdb-server, refused writes among them. The one
index that may differ by design is where the next free address is looked for (after the last one
handed out, not after the highest in use): there, the address it gives must be free."""
import ipaddress
import random

import pytest

from ovsdb.idl import TransactionError
from ovsdb.nb import NbReplica
from test_nb_policies import nb  # noqa: F401 - the fixture: an NB on its own ovsdb-server

NETWORKS = {f"n{i}": f"10.{i}.0.0/28" for i in range(3)}  # 13 addresses each: they run out, and free up
HOSTS, ROUTERS, PORTS = ["h0", "h1", "h2"], ["r0", "r1"], [f"p{i}" for i in range(30)]
STEPS = 300


def snapshot(replica):
    """Everything the replica holds that does not depend on the order it was built in (an emptied
    set or dict in an index means what a missing one does)."""
    def pruned(index):
        return {key: value for key, value in index.items() if value}
    return {
        **{name: getattr(replica, name) for name in (
            "hosts", "networks", "ports", "routers", "floating_ips", "macs", "router_of_network", "policies",
            "services", "service_ips", "controllers", "mac_bindings", "_name_of", "_uuid_of", "_router_rows",
            "_router_ports", "_port_keys_used", "_service_keys_used")},
        **{name: pruned(getattr(replica, name)) for name in (
            "ports_of_network", "ports_on_host", "ips", "policies_of_network", "services_of_network")},
        "counts": replica.row_counts(), "tunnel_keys": replica.tunnel_keys(),
        "lowest_port_key": replica.port_keys.lowest(), "lowest_service_key": replica.service_keys.lowest(),
    }


def check_free_ips(replica, rebuilt):
    for name, net in replica.networks.items():
        free = replica.free_ip(name)
        assert (free is None) == (rebuilt.free_ip(name) is None), name
        if free is not None:
            assert ipaddress.IPv4Address(free) in ipaddress.IPv4Network(net.cidr)
            assert free not in replica.ips.get(name, {}) and free != net.gateway_ip


class Writer:
    """One random write to the NB; what it picks (keys, addresses) it picks as the API does, from
    the replica's indexes, inside the transaction."""

    def __init__(self, nb, rng):
        self.nb, self.rng, self.macs = nb, rng, 0

    def mac(self):
        self.macs += 1
        return f"02:00:00:00:{self.macs // 256:02x}:{self.macs % 256:02x}"

    def lowest_key(self, taken, name_in_use):
        if name_in_use:
            raise LookupError("name in use")
        return next(key for key in range(1, 4096) if key not in taken)

    def step(self):
        nb, rng, state = self.nb, self.rng, self.nb.replica
        kind = rng.choice(["network", "network-", "port", "port", "port", "port-", "port-", "labels", "bind",
                           "host", "host-", "router", "router-", "attach", "detach", "gateway", "route",
                           "floating", "floating-", "service", "service-", "mac_binding"])
        network, port, router = rng.choice(list(NETWORKS)), rng.choice(PORTS), rng.choice(ROUTERS)
        if kind != "port" and state.ports and rng.random() < 0.8:  # mostly a port that exists
            port = rng.choice(sorted(state.ports))
        if kind == "network":
            cidr = NETWORKS[network]
            nb.create_network(network, self.lowest_key, cidr, str(ipaddress.IPv4Network(cidr)[1]), 1400)
        elif kind == "network-":
            nb.delete("Network", network)  # refused while it has ports or a router leg
        elif kind == "port":
            fixed = rng.random() < 0.3

            def choose(taken):
                if taken.port_network(port) is not None:
                    raise LookupError("port exists")
                ip = (str(ipaddress.IPv4Network(NETWORKS[network])[rng.randrange(2, 15)]) if fixed
                      else taken.free_ip())
                if ip is None or taken.ip_owner(ip):
                    raise LookupError("no free address")
                return ip, self.mac()
            nb.create_port(port, network, choose, labels={"app": rng.choice("ab")})
        elif kind == "port-":
            nb.delete("Port", port)  # refused while a floating IP points at it
        elif kind == "labels":
            nb.set_map("Port", port, "labels", {"app": rng.choice("abc")})
        elif kind == "bind":
            nb.set_port_hosts({port: rng.choice([*HOSTS, None])})
        elif kind == "host":
            host = rng.choice(HOSTS)
            nb.create_host(host, f"192.0.2.{HOSTS.index(host) + 1}", f"unix:/nonexistent/{host}.sock", "netdev")
        elif kind == "host-":
            nb.delete("Host", rng.choice(HOSTS))
        elif kind == "router":
            nb.create_router(router, self.lowest_key)
        elif kind == "router-":
            nb.delete("Router", router)
        elif kind == "attach":
            if network in state.router_of_network:
                raise LookupError("already attached")
            nb.attach_router(router, network, self.mac())
        elif kind == "detach":
            nb.detach_router(router, network)
        elif kind == "gateway":
            gateway = rng.choice([{}, {"host": "h0", "uplink": "u0", "ip": "198.51.100.10", "prefixlen": "24",
                                       "next_hop": f"198.51.100.{rng.randrange(1, 4)}", "mac": self.mac()}])
            nb.set_gateway(router, gateway)
        elif kind == "route":
            nb.set_route(router, f"172.16.{rng.randrange(3)}.0/24", rng.choice([None, "10.0.0.9"]))
        elif kind == "floating":
            nb.create_floating_ip(f"198.51.100.{rng.randrange(20, 24)}", port)
        elif kind == "floating-":
            nb.delete("Floating_IP", f"198.51.100.{rng.randrange(20, 24)}")
        elif kind == "service":
            name = f"s{rng.randrange(6)}"

            def services(taken):
                key = taken.lowest_key()
                return [("Service", network, name, {"manifest": "{}", "key": key, "cluster_ip": f"10.96.0.{key}",
                                                    "load_balancer_ip": None})]
            nb.apply(services)
        elif kind == "service-":
            nb.apply(lambda taken: [], remove=[("Service", network, f"s{rng.randrange(6)}")])
        elif kind == "mac_binding":
            nb.set_mac_binding(router, f"198.51.100.{rng.randrange(1, 4)}", rng.choice([None, self.mac()]))
        return kind


@pytest.mark.parametrize("seed", range(1, 6))
def test_the_replica_kept_row_by_row_equals_one_rebuilt_from_scratch(nb, seed):  # noqa: F811
    rng = random.Random(seed)
    writer = Writer(nb, rng)
    reloads = []
    reload = nb.replica.reload
    nb.replica.reload = lambda tables: (reloads.append(True), reload(tables))  # a rebuild would hide a drift
    done, refused = [], 0
    for step in range(STEPS):
        try:
            done.append(writer.step())
        except (TransactionError, LookupError):  # refused: the database or the choice said no
            refused += 1
        with nb.conn.lock:
            rebuilt = NbReplica()
            rebuilt.reload(nb.conn.idl.tables)
            assert snapshot(nb.replica) == snapshot(rebuilt), f"seed {seed}, step {step}: after {done[-3:]}"
            check_free_ips(nb.replica, rebuilt)
    assert not reloads, "the replica was rebuilt: the row-by-row model lost track"
    assert len(nb.replica.ports) > 5 and refused and len(set(done)) > 15  # the sequence did exercise it
