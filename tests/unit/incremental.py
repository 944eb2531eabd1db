"""Shared by the incremental-compile property tests: L2 edits of a Topology, and the check that
Compiler.update ended where a full compile would, reporting exactly the cookies that changed."""
from flows.compiler import changed_objects, compile_all
from flows.model import Binding, HostState, NetworkState, PortState

L2_EDITS = ["bind", "unbind", "remove", "move_net", "host_ip", "vni"]


def apply_l2_edit(topo, kind, n, a, b, hosts, nets):
    """Port n bound to host b in network a, unbound, removed, moved; a host's IP; a network's VNI."""
    name = f"p{n}"
    if kind == "bind":
        net = nets[a]
        prefix = net.cidr.rsplit(".", 1)[0]
        port = PortState(name, n, net.name, f"02:00:00:00:00:{n:02x}", f"{prefix}.{n + 1}")
        return topo.replace(ports=[port], bindings=[Binding(name, hosts[b].name, n)])
    if kind == "unbind":
        return topo.replace(remove_bindings=[name])
    if kind == "remove":
        return topo.replace(remove_ports=[name])
    if kind == "move_net" and name in topo.ports:
        old = topo.ports[name]
        return topo.replace(ports=[PortState(name, n, nets[a].name, old.mac, old.ip)])
    if kind == "host_ip":
        return topo.replace(hosts=[HostState(hosts[a].name, a + 1, f"192.168.{b + 1}.{a}")])
    if kind == "vni":
        net = nets[a]
        return topo.replace(networks=[NetworkState(net.name, 10 * b + a + 1, net.cidr, net.gateway_ip,
                                                   net.mtu)])
    return topo


def update_and_check(compiler, topo):
    before = {h: dict(f) for h, f in compiler.flows.items()}
    changes = compiler.update(topo)
    full = compile_all(topo)
    assert compiler.flows == full
    for host in set(before) | set(full):
        expected = changed_objects(before.get(host, {}), full.get(host, {}))
        assert set(changes.get(host, {})) == expected
