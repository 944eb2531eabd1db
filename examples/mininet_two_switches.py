"""Two Mininet switches, each a Weft host, with one Weft network across them and two hosts on each.

    sudo .venv/bin/python examples/mininet_two_switches.py [--lab NAME] [--cli]

Builds a weft lab named after --lab (default mininet) unless one is up, pings every pair of hosts
(h1 and h2 on s1, h3 and h4 on s2: across switches through Geneve), sends 1 MiB over TCP from h1 to
h3, optionally opens Mininet's CLI, and leaves nothing behind. Exit status 0 when everything arrived.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this source tree

from weft.errors import WeftError  # noqa: E402
from weft.mininet import WeftNet  # noqa: E402  (first: it finds Debian's Mininet for the venv)
from mininet.cli import CLI  # noqa: E402
from mininet.log import setLogLevel  # noqa: E402
from mininet.topo import Topo  # noqa: E402

TCP_BYTES = 1 << 20


class TwoSwitches(Topo):
    def build(self):
        s1, s2 = self.addSwitch("s1"), self.addSwitch("s2")
        self.addLink(s1, s2)  # the underlay between Weft hosts: accepted, already there
        for i, switch in ((1, s1), (2, s1), (3, s2), (4, s2)):
            self.addLink(self.addHost(f"h{i}"), switch, network="blue")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="mininet", help="weft lab to run on (built if not up)")
    parser.add_argument("--cli", action="store_true", help="open Mininet's CLI before stopping")
    args = parser.parse_args()
    setLogLevel("info")
    try:
        net = WeftNet(TwoSwitches(), networks={"blue": "10.0.0.0/24"}, lab=args.lab)
    except WeftError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    try:
        net.start()
        loss = net.pingAll()
        h1, h3 = net.get("h1", "h3")
        # A Mininet idiom: the receiver runs in the background of h3's shell, the sender in h1's.
        h3.sendCmd(f"timeout 30 socat -u TCP-LISTEN:5001,bind={h3.IP()} - | wc -c")
        h1.cmd(f"head -c {TCP_BYTES} /dev/zero | timeout 30 socat -u - TCP:{h3.IP()}:5001,retry=100,interval=0.1")
        received = int(h3.waitOutput().strip() or 0)
        print(f"TCP {h1.name} -> {h3.name}: {received} of {TCP_BYTES} bytes")
        if args.cli:
            CLI(net)
    finally:
        net.stop()
    return 0 if loss == 0 and received == TCP_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
