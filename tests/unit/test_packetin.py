"""The packet-ins the pipeline sends up on purpose, through the controller's dispatch: a DNS query
from table DNS answered out of the port it came in on, from the network of the port bound there; a
new connection from table SERVICE_NAT refused; anything else left to the data-path count."""
import struct

import dns.message
import dns.rcode
import dns.rdatatype

from controller.packetin import PacketIns
from flows.model import Binding, HostState, NetworkState, PortState, Topology
from flows.pipeline import CLASSIFY, DNS, SERVICE_NAT
from flows.policy import ServicePort, ServiceState
from ovsdb.idl import ThreadHub

CLIENT_MAC, GATEWAY_MAC = bytes.fromhex("020000000001"), bytes.fromhex("0a0000000064")


def topology(*extra_ports, services=()):
    ports = [PortState("web", 1, "prod", "02:00:00:00:00:01", "10.1.0.5"),
             PortState("api", 2, "dev", "02:00:00:00:00:02", "10.2.0.5"), *extra_ports]
    return Topology.build(
        hosts=[HostState("h1", 1, "10.255.0.1"), HostState("h2", 2, "10.255.0.2")],
        networks=[NetworkState("prod", 100, "10.1.0.0/24", "10.1.0.1"),
                  NetworkState("dev", 101, "10.2.0.0/24", "10.2.0.1")],
        ports=ports, bindings=[Binding("web", "h1", 5), Binding("api", "h2", 5)], services=services)


class Switch:
    def __init__(self):
        self.sent = []

    def send_frame(self, port, frame):
        self.sent.append((port, frame))


def udp_frame(src_ip, dst_ip, dport, payload, sport=40000):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, bytes(src_ip), bytes(dst_ip))
    total = sum(struct.unpack("!10H", ip))
    total = (total & 0xFFFF) + (total >> 16)
    ip = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:]
    return GATEWAY_MAC + CLIENT_MAC + b"\x08\x00" + ip + udp


def query(name, src=(10, 1, 0, 5), resolver=(10, 1, 0, 1)):
    return udp_frame(src, resolver, 53, dns.message.make_query(name, "A").to_wire())


def answer_of(frame):
    return dns.message.from_wire(frame[14 + 20 + 8:])


def test_a_query_is_answered_out_of_its_port_from_the_network_of_the_port_bound_there():
    topo = topology()
    answers, switch = PacketIns(ThreadHub, lambda: topo), Switch()
    assert answers.handle("h1", switch, DNS.id, 5, query("web"))
    [(port, frame)] = switch.sent
    reply = answer_of(frame)
    assert port == 5 and reply.rcode() == dns.rcode.NOERROR
    assert [r.address for r in reply.answer[0]] == ["10.1.0.5"]
    # The same ofport on h2 is `api`, in network dev: a bare "web" is not a name there.
    answers.handle("h2", switch, DNS.id, 5, query("web", src=(10, 2, 0, 5), resolver=(10, 2, 0, 1)))
    assert answer_of(switch.sent[1][1]).rcode() == dns.rcode.NXDOMAIN
    assert answers.counters()["dns"]["answered"] == 1


def test_the_zone_follows_the_topology_once_told_it_changed():
    topo = topology()
    current = [topo]
    answers, switch = PacketIns(ThreadHub, lambda: current[0]), Switch()
    answers.handle("h1", switch, DNS.id, 5, query("db"))
    assert answer_of(switch.sent[-1][1]).rcode() == dns.rcode.NXDOMAIN
    svc = ServiceState("frontend", "prod", 7, (("app", "web"),), (ServicePort("", "TCP", 80, 8080),), "10.96.0.10")
    current[0] = topology(PortState("db", 3, "prod", "02:00:00:00:00:03", "10.1.0.6"), services=[svc])
    answers.topology_changed()
    for name, ip in (("db", "10.1.0.6"), ("frontend", "10.96.0.10"), ("frontend.prod.svc.weft", "10.96.0.10")):
        answers.handle("h1", switch, DNS.id, 5, query(name))
        assert [r.address for r in answer_of(switch.sent[-1][1]).answer[0]] == [ip], name


def test_a_query_from_a_port_nobody_is_bound_to_gets_no_answer():
    topo = topology()
    answers, switch = PacketIns(ThreadHub, lambda: topo), Switch()
    assert answers.handle("h1", switch, DNS.id, 9, query("web"))
    assert switch.sent == [] and answers.counters()["dns"]["unknown_port"] == 1


def test_a_connection_sent_up_by_service_nat_is_refused_out_of_its_port():
    topo = topology()
    answers, switch = PacketIns(ThreadHub, lambda: topo), Switch()
    assert answers.handle("h1", switch, SERVICE_NAT.id, 5, udp_frame((10, 1, 0, 5), (10, 96, 0, 10), 80, b"x"))
    [(port, frame)] = switch.sent
    assert port == 5 and frame[14 + 9] == 1 and frame[34:36] == b"\x03\x03"  # ICMP port unreachable
    assert frame[26:30] == bytes([10, 96, 0, 10]) and frame[:6] == CLIENT_MAC
    assert answers.handle("h1", switch, SERVICE_NAT.id, 5, b"\x00" * 20)  # garbage: nothing sent
    assert len(switch.sent) == 1 and answers.counters()["service_rejects"] == {"sent": 1, "ignored": 1}


def test_anything_else_is_not_answered_here():
    topo = topology()
    answers, switch = PacketIns(ThreadHub, lambda: topo), Switch()
    assert not answers.handle("h1", switch, CLASSIFY.id, 5, query("web"))
    assert not answers.handle("h1", switch, None, 5, query("web"))
    assert switch.sent == []
