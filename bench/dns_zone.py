"""DNS zone at scale: rebuilding the zone from 10,000 ports (50 networks) and 1,000 services, and
answering one query frame, end to end (parse, lookup, reply frame) and in the zone alone.

    .venv/bin/python bench/dns_zone.py [--quick] [--hosts 100] [--ports 100] [--networks 50] [--services 1000]
Target: a rebuild in the tens of milliseconds at 10,000 ports; a query well under a millisecond.
"""
import argparse
import gc
import ipaddress
import struct
import sys
import time

import dns.message
import dns.rdatatype

import _common
from _common import median, pct, table

from controller.dns import DnsResponder, DnsZone
from flows.examples import scale_topology
from flows.policy import ServicePort, ServiceState


def query_frame(name):
    """An Ethernet/IPv4/UDP frame carrying an A query for `name` (checksums are not checked)."""
    payload = dns.message.make_query(name, "A").to_wire()
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]))
    return bytes.fromhex("0200000000fe" "020000000002") + b"\x08\x00" + ip + udp + payload


def timed(fn, n):
    """Per-call times of fn() over n calls, in seconds."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 rebuilds and 1,000 queries instead of 10 and 10,000")
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--ports", type=int, default=100, help="ports per host")
    ap.add_argument("--networks", type=int, default=50)
    ap.add_argument("--services", type=int, default=1000)
    a = ap.parse_args()
    runs, queries = (3, 1000) if a.quick else (10, 10000)

    topo = scale_topology(a.hosts, a.ports, a.networks)
    ports = list(topo.ports.values())
    vip = ipaddress.IPv4Address("10.96.0.10")
    services = [ServiceState(f"svc{i}", f"n{i % a.networks + 1}", i + 1, (("app", f"a{i}"),),
                             (ServicePort("", "TCP", 80, 8080),), str(vip + i)) for i in range(a.services)]

    gc.collect()
    rebuild = timed(lambda: DnsZone(ports, services), runs)
    zone = DnsZone(ports, services)
    port = ports[len(ports) // 2]
    lookups = {
        "zone.lookup, port by short name": (f"{port.name}", port.network),
        "zone.lookup, port by full name": (f"{port.name}.{port.network}.weft.", "n1"),
        "zone.lookup, service by short name": (services[-1].name, services[-1].network),
        "zone.lookup, name outside Weft": ("www.example.com", port.network),
    }
    rows = [[f"zone rebuild, {len(ports)} ports + {len(services)} services (median of {runs})",
             f"{median(rebuild) * 1e3:.1f} ms (min {min(rebuild) * 1e3:.1f}, max {max(rebuild) * 1e3:.1f})",
             "tens of ms"]]
    for label, (name, network) in lookups.items():
        t = timed(lambda: zone.lookup(name, dns.rdatatype.A, network), queries)
        rows.append([label, f"{median(t) * 1e6:.1f} µs", "-"])
    responder = DnsResponder(lambda: zone, port_rate=10 ** 9, host_rate=10 ** 9)
    for label, name in (("answer(), a port's A record: frame in, frame out", port.name),
                        ("answer(), a name outside Weft, no upstream (REFUSED)", "www.example.com")):
        frame = query_frame(name)
        t = timed(lambda: responder.answer(frame, port.network, host="h1", port=1), queries)
        rows.append([label, f"{median(t) * 1e6:.0f} µs (p99 {pct(t, 99) * 1e6:.0f} µs)", "< 1 ms"])

    _common.header(f"dns_zone: {len(ports)} ports in {a.networks} networks, {len(services)} services", sys.argv)
    print(table(["measure", "value", "target"], rows))


if __name__ == "__main__":
    main()
