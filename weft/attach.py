"""Container port attach/detach, run on the host whose br-int the container plugs into.

The controller allocates the port (IP, MAC) and computes its flows; this side does the local work:
a veth whose container end becomes `eth0` (MAC, IP, MTU, default route via the network's gateway),
whose host end goes into br-int with external_ids:iface-id. Attach returns only once the controller
reports the port up on every host that needs flows for it; on any failure it undoes what it made.

The steps overlap where they can, since port-up latency is what a container runtime waits for: while
the controller allocates the port, the veth is made and its host end plugged into br-int (the
controller ignores an iface-id it does not know yet, and binds it once the port exists); while
vswitchd adds the port and the controller installs its flows, the container end is configured.
"""
import contextlib
import errno
import hashlib
import ipaddress
import os

from ovsdb import rpc, vswitch
from weft import netns
from weft.client import ApiClient, ApiError, path as api_path
from weft.errors import WeftError

DEFAULT_TIMEOUT = 10.0


class AttachError(WeftError):
    """Attach or detach failed (after rolling back what it had made)."""


class PortNotUp(AttachError):
    """The port's flows were not installed in time: a condition that may clear (a runtime retries)."""


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


RESOLV_MARK = "# Weft's resolver, written by `weft attach --dns` for port "
NETNS_DIRS = ("/var/run/netns/", "/run/netns/")
NETNS_ETC = "/etc/netns"  # NAME/resolv.conf there is what `ip netns exec NAME` mounts over /etc


def resolv_conf_path(container):
    """Where a container's resolv.conf goes: for a named network namespace NAME (given as NAME or
    as /run/netns/NAME), /etc/netns/NAME/resolv.conf, which `ip netns exec NAME` bind-mounts over
    /etc/resolv.conf. None for anything else (a PID, another path)."""
    name = next((container[len(d):] for d in NETNS_DIRS if container.startswith(d)), container)
    if not name or name.isdigit() or "/" in name or name in (".", ".."):
        return None
    return f"{NETNS_ETC}/{name}/resolv.conf"


def _resolv_conf_owner(path):
    """The port a resolv.conf was written for by `weft attach --dns`; None if Weft did not write it."""
    try:
        with open(path) as f:
            first = f.readline()
    except OSError:
        return None
    return first[len(RESOLV_MARK):].strip() if first.startswith(RESOLV_MARK) else None


def _check_resolv_conf(container):
    path = resolv_conf_path(container)
    if path is None:
        raise AttachError(f"--dns needs a named network namespace (`ip netns`), whose resolv.conf is "
                          f"/etc/netns/NAME/resolv.conf; {container!r} is not one")
    if os.path.exists(path) and _resolv_conf_owner(path) is None:
        raise AttachError(f"{path} exists and Weft did not write it; remove it, or attach without --dns")
    return path


def write_resolv_conf(path, port):
    """The container's resolv.conf: the network's resolver and search path (the port's `dns`)."""
    settings = port["dns"]
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    # Written beside NAME/, not in it: `ip netns exec` bind-mounts whatever NAME/ holds over /etc.
    directory = os.path.dirname(path)
    tmp = f"{os.path.dirname(directory)}/.{os.path.basename(directory)}.resolv.conf.weft-tmp"
    with open(tmp, "w") as f:
        f.write(f"{RESOLV_MARK}{port['name']}\n# (`weft detach {port['name']}` removes it)\n"
                + "".join(f"nameserver {ip}\n" for ip in settings["nameservers"])
                + f"search {' '.join(settings['search'])}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # a process reading it sees the old file or the new, never half of one


def remove_resolv_conf(container, port=None):
    """Removes the resolv.conf `weft attach --dns` wrote for the container (for `port`, or for any
    port), and its /etc/netns/NAME directory (and /etc/netns) if then empty. Anything else stays."""
    path = resolv_conf_path(container)
    owner = path and _resolv_conf_owner(path)
    if owner is None or (port is not None and owner != port):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(OSError):  # not empty: someone else's files are there too
        os.rmdir(os.path.dirname(path))
        os.rmdir(NETNS_ETC)  # and /etc/netns, if that was all it held (ip netns needs none)


def host_device(port_name):
    """The host end of a port's veth, within IFNAMSIZ. Derived from the port's name, which is known
    before the controller answers (48 bits of hash: a clash is refused as an existing device)."""
    return "wf" + hashlib.sha256(port_name.encode()).hexdigest()[:12]


def default_name(container, ifname):
    base = os.path.basename(container.rstrip("/")) if not container.isdigit() else f"pid{container}"
    return base if ifname == "eth0" else f"{base}-{ifname}"


def attach(container, network, ip=None, name=None, ifname="eth0", ovsdb=None, api=None,
           timeout=DEFAULT_TIMEOUT, mac=None, external_ids=None, labels=None, named_ports=None, dns=False):
    """Attaches a container to a network; returns the port as the API describes it (up). The port has
    its `labels` and `named_ports` from its creation: no policy ever sees it without them. With `dns`,
    the container's resolv.conf names the network's resolver (a named netns only, see
    resolv_conf_path); detach removes it."""
    from pyroute2 import IPRoute  # imported here: the rest of the CLI starts without it

    api = api or ApiClient()
    ovsdb = ovsdb or rpc.default_remote()
    ns_path = netns_path(container)
    resolv_conf = _check_resolv_conf(container) if dns else None
    name = name or default_name(container, ifname)
    body = {k: v for k, v in (("name", name), ("network", network), ("ip", ip), ("mac", mac),
                              ("external_ids", external_ids), ("labels", labels),
                              ("named_ports", named_ports)) if v is not None}
    port_answer = api.send("POST", "/v1/ports", body)
    with _rollback_on_error() as undo:
        port, datapath_type = _make_and_plug(undo, api, ovsdb, name, port_answer, ifname, ns_path)
        prefix = ipaddress.IPv4Network(port["cidr"]).prefixlen
        with netns.in_netns(ns_path), IPRoute() as ns:
            ns.link("set", ifname=ifname, address=port["mac"], mtu=port["mtu"], state="up")
            ns.addr("add", index=ns.link_lookup(ifname=ifname)[0], address=port["ip"], prefixlen=prefix)
            ns.link("set", ifname="lo", state="up")
            ns.route("add", dst="0.0.0.0/0", gateway=port["gateway"])
            if datapath_type == "netdev":
                # The userspace datapath never completes partial checksums handed over by a veth.
                netns.tx_checksum_off(ifname)
        if resolv_conf:
            write_resolv_conf(resolv_conf, port)
            undo.append(lambda: remove_resolv_conf(container, name))
        return wait_up(api, name, timeout)


def plug(name, peer, ovsdb=None, api=None, timeout=DEFAULT_TIMEOUT):
    """For a runtime that moves the container's end into the container and addresses it itself
    (Docker): plugs existing port `name` through a veth whose container end `peer` stays in this
    namespace, with the port's MAC and MTU (and checksum offload off, which survives the move).
    Returns the port once up; on failure nothing made here is left (the NB port stays)."""
    from pyroute2 import IPRoute

    api = api or ApiClient()
    ovsdb = ovsdb or rpc.default_remote()
    answer = api.send("GET", api_path("ports", name))
    with _rollback_on_error() as undo:
        port, datapath_type = _make_and_plug(undo, api, ovsdb, name, answer, peer, None, delete_port=False)
        with IPRoute() as ipr:
            ipr.link("set", ifname=peer, address=port["mac"], mtu=port["mtu"])
        if datapath_type == "netdev":
            netns.tx_checksum_off(peer)
        return wait_up(api, name, timeout)


def wait_up(api, name, timeout):
    """The port, once the controller reports its flows installed on every host that needs them."""
    port = api.get(api_path("ports", name) + f"?wait_up={timeout:g}")
    if not port["up"]:
        raise PortNotUp(f"port {name!r} was not up within {timeout:.0f} s: its flows are not installed "
                        "on every host that needs them (is the host joined and its switch connected?"
                        " see `weft status`)")
    return port


def _make_and_plug(undo, api, ovsdb, name, port_answer, peer, ns_path, delete_port=True):
    """The veth (host end into br-int, as `name`'s interface; the peer born in `ns_path`, or here),
    overlapped with the controller's answer `port_answer`. Returns (port, datapath type)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    device = host_device(name)
    with IPRoute() as ipr:
        try:
            peer_spec = {"ifname": peer}
            fd = None
            if ns_path:
                # The container end is born inside the container: moving an interface between
                # namespaces afterwards costs the kernel ~20 ms, serialised across attaches.
                fd = peer_spec["net_ns_fd"] = os.open(ns_path, os.O_RDONLY)
            try:
                ipr.link("add", ifname=device, kind="veth", state="up", peer=peer_spec)
            except NetlinkError as err:
                if err.code == errno.EEXIST:
                    where = "the container" if ns_path else "this host"
                    raise AttachError(f"{device} (the host end for port {name!r}) exists on this host, "
                                      f"or {where} already has an interface named {peer}") from None
                raise
            finally:
                if fd is not None:
                    os.close(fd)
            undo.append(lambda: _delete_link(device))
            datapath_type = vswitch.plug_port(ovsdb, device, name)
            undo.append(lambda: vswitch.unplug_port(ovsdb, device))
        finally:  # the answer is read even when the above failed, so a port made for it is undone
            port = _created_port(port_answer, name)
            if delete_port:
                undo.append(lambda: api.delete(api_path("ports", name) + "?force=true"))
        ipr.link("set", ifname=device, mtu=port["mtu"])
    return port, datapath_type


@contextlib.contextmanager
def _rollback_on_error():
    """Yields a list of undo steps, run newest first if the block fails; errors become AttachError."""
    undo = []
    try:
        yield undo
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


def _created_port(answer, name):
    try:
        return answer()
    except ApiError as err:
        if err.status == 409 and "already exists" in err.message:
            raise AttachError(f"port {name!r} already exists; detach it first (weft detach {name})") from None
        raise


def detach(name, ovsdb=None, api=None):
    """Removes the port's veth, its OVS port and the NB port (and so every flow for it)."""
    api = api or ApiClient()
    ovsdb = ovsdb or rpc.default_remote()
    port = api.get(api_path("ports", name))  # it must exist: a clear error before anything is removed
    remove_local(name, ovsdb)
    container = (port.get("external_ids") or {}).get("container")
    if container:
        remove_resolv_conf(container, name)
    api.delete(api_path("ports", name) + "?force=true")  # unplugged above; force covers a replica lag


def remove_local(name, ovsdb):
    """What attach made on this host for port `name`: its OVS port and its veth (idempotent)."""
    device = host_device(name)
    try:
        vswitch.unplug_port(ovsdb, device)
    except rpc.OvsdbError as err:
        raise AttachError(f"cannot remove {device} from br-int: {err}") from None
    _delete_link(device)


def _delete_link(device):
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=device)
        if found:
            ipr.link("del", index=found[0])
