"""Container sysctls for latency runs, set from the calling thread (weft.netns.in_netns: setns, no fork)."""
import _common  # noqa: F401  (puts the repo on sys.path)
from weft.netns import in_netns

_in_netns = in_netns  # the worker wraps weft.netns.in_netns to time attach(); this stays unwrapped


def fast_arp(netns_path, ifname="eth0"):
    """Pitfall 1 of measuring.md: re-send an unanswered ARP after 10 ms, one try (not 1 s, 3 tries).
    Written through /proc/sys from this thread (there is no neigh.default in a non-initial netns here)."""
    with _in_netns(netns_path):
        base = f"/proc/sys/net/ipv4/neigh/{ifname}/"
        with open(base + "retrans_time_ms", "w") as f:
            f.write("10")
        with open(base + "mcast_solicit", "w") as f:
            f.write("1")
