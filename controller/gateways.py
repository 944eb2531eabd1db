"""Gateway next hops: each router gateway's next-hop MAC, learned by ARP through the uplink.

Control plane only: the request is a packet-out on the gateway host's uplink, the reply comes back
through the one flow that sends packets to the controller (UPLINK_IN). While a next hop is unknown,
egress through that gateway is dropped in UPLINK_OUT, so asking early and often matters: the first
request goes out as soon as the gateway host has acknowledged the router's flows, retries back off
from 50 ms to a second, and a known MAC is refreshed every 30 s. What is learned is also kept in the NB's MAC_Binding table
(by the core: WeftCore._publish_mac_bindings), so a restarted or newly active controller forwards with
the stored MAC at once while it asks again.
"""
import logging
import time

from flows.pipeline import UPLINK_OFPORT

LOG = logging.getLogger("weft.gateways")
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)   # seconds between ARP requests while unresolved
REFRESH = 30.0                               # and between refreshes once resolved


class NextHops:
    def __init__(self, hub):
        self.hub = hub
        self.learned = {}    # router name -> (next hop IP, its MAC, when learned)
        self._asked = {}     # router name -> (next hop IP, when last asked, how many times unanswered)
        self._kick = hub.Event()

    def mac(self, router, next_hop=None):
        """The MAC learned for the router's next hop (for `next_hop`, if given: a stale one is None)."""
        ip, mac, _ = self.learned.get(router, (None, None, 0))
        return mac if next_hop is None or ip == next_hop else None

    def learn(self, router, ip, mac):
        """Records an answer; True if it changed what is known."""
        known = self.learned.get(router)
        self.learned[router] = (ip, mac, time.monotonic())
        self._asked.pop(router, None)
        if known and known[:2] == (ip, mac):
            return False
        LOG.info("router %s: next hop %s is at %s", router, ip, mac)
        return True

    def ask_now(self, router):
        """Ask at once (the gateway's flows just went in), whatever the schedule said."""
        self._asked.pop(router, None)
        self._kick.set()

    def run(self, running, gateways):
        """Sends the ARP requests that are due, until running() is false. `gateways()` returns
        [(router name, gateway dict, its host's switch or None)], or None while that is unknown."""
        while running():
            current = gateways()
            if current is None:  # the NB is not connected: nothing to go by, nothing to forget
                self._kick.wait(timeout=1.0)
                self._kick.clear()
                continue
            for router in self.learned.keys() - {router for router, _, _ in current}:
                del self.learned[router]  # its gateway went away: a new one asks afresh
            self._kick.wait(timeout=self._send_due(current))
            self._kick.clear()

    def _send_due(self, gateways):
        """Sends what is due; returns the seconds until the next request is."""
        now, wait = time.monotonic(), 1.0
        for router, gw, switch in gateways:
            if switch is None:
                continue
            ip, mac, learned = self.learned.get(router, (None, None, 0))
            asked_ip, asked, tries = self._asked.get(router, (None, 0.0, 0))
            if ip == gw["next_hop"] and mac:
                due = max(learned, asked if asked_ip == ip else 0.0) + REFRESH
            elif asked_ip == gw["next_hop"]:
                due = asked + RETRY_DELAYS[min(tries - 1, len(RETRY_DELAYS) - 1)]
            else:
                due = now  # never asked for this next hop
            if due <= now:
                self._asked[router] = (gw["next_hop"], now, (tries + 1) if asked_ip == gw["next_hop"] else 1)
                try:
                    switch.send_arp_request(UPLINK_OFPORT, gw["mac"], gw["ip"], gw["next_hop"])
                except Exception as err:  # a switch going away mid-send: asked again on schedule
                    LOG.debug("ARP for %s failed: %s", gw["next_hop"], err)
                continue
            wait = min(wait, due - now)
        return max(wait, 0.01)

    def unanswered(self, router):
        """How many requests for the router's current next hop are unanswered."""
        return self._asked.get(router, (None, 0.0, 0))[2]
