"""Container port attach/detach, run on the host whose br-int the container plugs into.

The controller allocates the port (IP, MAC) and computes its flows; this side does the local work:
a veth whose container end becomes `eth0` (MAC, IP, MTU, default route via the network's gateway),
whose host end goes into br-int with external_ids:iface-id. Attach returns only once the controller
reports the port up on every host that needs flows for it; on any failure it undoes what it made.
"""
import errno
import ipaddress
import os

from ovsdb import rpc, vswitch
from weft import netns
from weft.client import ApiClient, ApiError
from weft.errors import WeftError

DEFAULT_TIMEOUT = 10.0


class AttachError(WeftError):
    """Attach or detach failed (after rolling back what it had made)."""


def netns_path(container):
    """A container given as a netns name, a netns path or a PID -> the path of its network namespace."""
    if container.isdigit():
        path = f"/proc/{container}/ns/net"
        what = f"process {container}"
    elif container.startswith("/"):
        path, what = container, container
    else:
        path, what = f"/var/run/netns/{container}", f"network namespace {container!r} (see `ip netns list`)"
    if not os.path.exists(path):
        raise AttachError(f"no such container: {what} does not exist")
    return path


def host_device(port_key):
    """The host end of a port's veth: derived from the port's key, unique, within IFNAMSIZ."""
    return f"wf{port_key:08x}"


def default_name(container, ifname):
    base = os.path.basename(container.rstrip("/")) if not container.isdigit() else f"pid{container}"
    return base if ifname == "eth0" else f"{base}-{ifname}"


def attach(container, network, ip=None, name=None, ifname="eth0", ovsdb=None, api=None,
           timeout=DEFAULT_TIMEOUT, mac=None):
    """Attaches a container to a network; returns the port as the API describes it (up)."""
    from pyroute2 import IPRoute  # imported here: the rest of the CLI starts without it
    from pyroute2.netlink.exceptions import NetlinkError

    api = api or ApiClient()
    ovsdb = ovsdb or rpc.default_remote()
    ns_path = netns_path(container)
    name = name or default_name(container, ifname)
    try:
        port = api.post("/v1/ports", {k: v for k, v in (("name", name), ("network", network), ("ip", ip),
                                                        ("mac", mac)) if v is not None})
    except ApiError as err:
        if err.status == 409 and "already exists" in err.message:
            raise AttachError(f"port {name!r} already exists; detach it first (weft detach {name})") from None
        raise
    undo = [lambda: api.delete(f"/v1/ports/{name}")]
    try:
        device = host_device(port["key"])
        # The container end is born inside the container, named and addressed: moving an interface
        # between namespaces afterwards costs the kernel ~20 ms, serialised across attaches.
        fd = os.open(ns_path, os.O_RDONLY)
        try:
            with IPRoute() as ipr:
                try:
                    ipr.link("add", ifname=device, kind="veth", mtu=port["mtu"],
                             peer={"ifname": ifname, "net_ns_fd": fd, "address": port["mac"], "mtu": port["mtu"]})
                except NetlinkError as err:
                    if err.code == errno.EEXIST:
                        raise AttachError(f"{device} exists on this host, or the container already has an "
                                          f"interface named {ifname}") from None
                    raise
                undo.append(lambda: _delete_link(device))
                ipr.link("set", index=ipr.link_lookup(ifname=device)[0], state="up")
        finally:
            os.close(fd)
        prefix = ipaddress.IPv4Network(port["cidr"]).prefixlen
        with netns.in_netns(ns_path), IPRoute() as ns:
            index = ns.link_lookup(ifname=ifname)[0]
            ns.addr("add", index=index, address=port["ip"], prefixlen=prefix)
            ns.link("set", index=index, state="up")
            lo = ns.link_lookup(ifname="lo")
            if lo:
                ns.link("set", index=lo[0], state="up")
            ns.route("add", dst="0.0.0.0/0", gateway=port["gateway"])
        datapath_type = vswitch.plug_port(ovsdb, device, name, port["mac"])
        undo.append(lambda: vswitch.unplug_port(ovsdb, device))
        if datapath_type == "netdev":
            # The userspace datapath never completes partial checksums handed over by a veth.
            with netns.in_netns(ns_path):
                netns.tx_checksum_off(ifname)
        port = api.get(f"/v1/ports/{name}?wait_up={timeout}")
        if not port["up"]:
            raise AttachError(f"port {name!r} was not up within {timeout:.0f} s: its flows are not installed "
                              "on every host that needs them (is the host joined and its switch connected?"
                              " see `weft status`)")
        return port
    except BaseException as err:
        for step in reversed(undo):
            try:
                step()
            except Exception:  # roll back as much as possible; the original error is what matters
                pass
        if isinstance(err, (ApiError, AttachError, KeyboardInterrupt)):
            raise
        if isinstance(err, rpc.OvsdbError):
            raise AttachError(str(err)) from None
        raise AttachError(f"attach failed and was rolled back: {err}") from None


def detach(name, ovsdb=None, api=None):
    """Removes the port's veth, its OVS port and the NB port (and so every flow for it)."""
    api = api or ApiClient()
    ovsdb = ovsdb or rpc.default_remote()
    port = api.get(f"/v1/ports/{name}")
    device = host_device(port["key"])
    try:
        vswitch.unplug_port(ovsdb, device)
    except rpc.OvsdbError as err:
        raise AttachError(f"cannot remove {device} from br-int: {err}") from None
    _delete_link(device)
    api.delete(f"/v1/ports/{name}")


def _delete_link(device):
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=device)
        if found:
            ipr.link("del", index=found[0])
