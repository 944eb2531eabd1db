"""The packets the pipeline sends up on purpose, and the controller's answers to them.

Forwarding is proactive: the only stages that send a container's packet to the controller are
  DNS          a query to its network's resolver (the gateway IP, UDP 53), through the DNS meter:
               answered from the NB (controller/dns.py), or forwarded to dns_upstream;
  SERVICE_NAT  a new connection to a Service VIP and port without a ready backend, through the
               reject meter: refused with a TCP RST or an ICMP port unreachable (controller/reject.py).
Each answer goes back as a packet-out of the port the packet came in on. Anything else a switch
sends up is not answered here: the caller counts it (on the data path that count stays 0).

Framework-free: the switch handle only needs send_frame(ofport, frame).
"""
import itertools
import logging
import random

from controller.dns import CachedZone, DnsResponder, DnsZone
from controller.reject import reject
from flows.pipeline import DNS, SERVICE_NAT

LOG = logging.getLogger("weft.packetin")
KINDS = {DNS.id: "dns", SERVICE_NAT.id: "service_reject"}  # by the table that sends them up


def packet_in_kind(table_id):
    """What a packet-in sent up by table `table_id` is, for weft_packet_ins_total."""
    return KINDS.get(table_id, "other")


class PacketIns:
    """Answers DNS queries and service rejects; `topology()` is the compiler's current Topology."""

    def __init__(self, hub, topology, dns_upstream=""):
        self._topology = topology
        self.zone = CachedZone(self._build_zone)
        self._ports = CachedZone(self._build_port_index)  # (host, ofport) -> PortState
        self.dns = DnsResponder(self.zone, dns_upstream or None, spawn=hub.spawn)
        self._reject_counters = {"sent": 0, "ignored": 0}
        self._unknown_port = 0
        self._ip_id = itertools.count(random.getrandbits(16))

    def topology_changed(self):
        """The next query sees the topology as it is now (costs nothing until then)."""
        self.zone.invalidate()
        self._ports.invalidate()

    def _build_zone(self):
        topo = self._topology()
        return DnsZone(topo.ports.values(), topo.services.values())

    def _build_port_index(self):
        topo = self._topology()
        return {(b.host, b.ofport): topo.ports[b.port] for b in topo.bindings.values() if b.port in topo.ports}

    def counters(self):
        """For GET /v1/status: the DNS responder's counters and the rejects sent."""
        return {"dns": {**self.dns.counters(), "unknown_port": self._unknown_port},
                "service_rejects": dict(self._reject_counters)}

    def handle(self, host, switch, table_id, in_port, frame):
        """Answers a packet-in from `host`'s `switch`, sent up by table `table_id` (an OpenFlow
        packet-in's table id) from `in_port`; False if it is not one the pipeline sends up on purpose."""
        if table_id == DNS.id:
            self._dns(host, switch, in_port, frame)
        elif table_id == SERVICE_NAT.id:
            answer = reject(frame, next(self._ip_id))
            self._reject_counters["ignored" if answer is None else "sent"] += 1
            if answer is not None:
                switch.send_frame(in_port, answer)
        else:
            return False
        return True

    def _dns(self, host, switch, in_port, frame):
        port = self._ports().get((host, in_port))
        if port is None:  # unplugged meanwhile, or a binding the compiler has not seen yet
            self._unknown_port += 1
            return
        reply = self.dns.answer(frame, port.network, host=host, port=port.name,
                                send=lambda later: switch.send_frame(in_port, later))
        if reply is not None:
            switch.send_frame(in_port, reply)
