"""Mininet topologies on Weft: `WeftNet` is a Mininet whose switches are Weft hosts.

    from weft.mininet import WeftNet   # first: it finds Debian's Mininet for Weft's venv
    from mininet.topo import Topo
    from mininet.cli import CLI

    class TwoSwitches(Topo):
        def build(self):
            s1, s2 = self.addSwitch("s1"), self.addSwitch("s2")
            self.addLink(s1, s2)
            self.addLink(self.addHost("h1"), s1)
            self.addLink(self.addHost("h2"), s2, network="blue")

    net = WeftNet(TwoSwitches(), networks={"blue": "10.0.0.0/24"})
    net.start(); net.pingAll(); CLI(net); net.stop()

Why switches are lab hosts. A Weft host is one OVSDB with its br-int, joined through the API, and
reaching the other hosts through Geneve; Mininet's switches are bridges of one shared vswitchd.
Making them bridges of one OVS would change what a Weft host is (one br-int per OVSDB), so each
switch is instead a host of a `weft lab` named after it: its own namespace, ovsdb-server and
ovs-vswitchd on the userspace datapath, joined to the lab's controller like a real machine. That is
Weft's own model, with nothing added to the controller. The switch's Mininet node is a shell inside
that host's namespace with OVS_* pointing at its OVS, so `s1 ovs-ofctl -O OpenFlow13 dump-flows
br-int` shows what Weft installed on s1. Links between switches are the underlay, which already
connects every lab host: they are accepted and left out.

Hosts are Mininet's own (any Host class): a shell in a network namespace of its own. A link from a
host to a switch is not a Mininet veth pair but `weft.attach.attach`, the code `weft attach` runs,
run on the switch's Weft host: a Weft port on a network (the link's or host's `network=`, else the
first of WeftNet's networks) with the address, MAC, MTU and checksum setting Weft gives it, up once
its flows are installed. Addresses come from Weft (`ip=`/`mac=` ask for given ones), not from
Mininet's ipBase. One link per host: attach gives each interface the default route.

What Mininet would do to the machine is left out: `fixLimits` (sysctls, rlimits) is disabled,
Mininet never moves an interface by name out of this namespace (its moveIntf runs `ip link set NAME
netns PID` here), no Mininet controller or OVS switch runs, hosts must be in their own namespace.
The lab records every node's shell, so `weft lab down` stops them even after a crash: never `mn -c`.

Debian's `mininet` package is installed for /usr/bin/python3, but Weft runs in its venv (Ryu for the
lab's controller, pyroute2 for attach). Mininet is pure Python on the standard library plus the
`mnexec` binary, and both interpreters are CPython 3.11, so the `mininet` package alone is loaded
from Debian's dist-packages: the rest of that directory stays out of the pinned venv.
"""
import functools
import importlib.machinery
import importlib.util
import ipaddress
import sys

from weft import attach, lab as weftlab, netns
from weft.client import ApiClient, ApiError, path as api_path
from weft.errors import WeftError

DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
DEFAULT_NETWORKS = {"mininet": "10.0.0.0/24"}
LINK_PARAMS = {"network", "ip", "mac", "intfName1"}


def _import_mininet():
    try:
        import mininet  # noqa: F401  (installed for this interpreter)
        return
    except ImportError:
        pass
    spec = importlib.machinery.PathFinder.find_spec("mininet", [DEBIAN_DIST_PACKAGES])
    if spec is None:
        raise ImportError(f"Mininet is not installed (apt-get install mininet puts it in {DEBIAN_DIST_PACKAGES})",
                          name="mininet")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mininet"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["mininet"]
        raise


_import_mininet()

import mininet.net  # noqa: E402
from mininet.link import Intf, Link  # noqa: E402
from mininet.log import error, info  # noqa: E402
from mininet.net import Mininet  # noqa: E402
from mininet.node import Host, Switch  # noqa: E402

# Mininet.init() would raise sysctls and rlimits of the whole machine (TCP buffers, kernel.pty.max,
# neighbour table sizes); nothing here needs them.
mininet.net.fixLimits = lambda: None


class MininetError(WeftError):
    """A topology Weft cannot build; the message names the node or link."""


def _stay(*_args, **_kwargs):
    """moveIntfFn for interfaces attach made where they belong (Mininet's would move them by name
    from this namespace)."""


class _Recorded:
    """A node whose shell the lab records, so `weft lab down` stops it even if this process dies:
    the lab dir goes on the shell's command line, a positional parameter that bash ignores."""
    weft_lab = None

    def _shell_argv(self, argv):
        return argv, None

    def _popen(self, cmd, **params):
        if cmd[-1:] != [f"mininet:{self.name}"]:  # popen() of a command, not startShell()
            return super()._popen(cmd, **params)
        argv, env = self._shell_argv([*cmd, f"{weftlab.lab_dir(self.weft_lab)}/mininet:{self.name}"])
        proc = super()._popen(argv, env=env, **params)
        weftlab.record(self.weft_lab, proc.pid, f"mininet {self.name}")
        return proc


_host_classes = {}


def _in_lab(cls, lab):
    """cls (a Mininet Host class, or a partial of one as Mininet allows), its shell recorded in lab."""
    if isinstance(cls, functools.partial):
        return functools.partial(_in_lab(cls.func, lab), *cls.args, **cls.keywords)
    key = (cls, lab)
    if key not in _host_classes:
        _host_classes[key] = type(cls.__name__, (_Recorded, cls), {"weft_lab": lab})
    return _host_classes[key]


class WeftSwitch(_Recorded, Switch):
    """A Mininet switch that is a Weft host of a lab: a shell in that host's namespace, with OVS_*
    and WEFT_API set for its own OVS and the lab's controller."""

    def __init__(self, name, weft_lab, weft_host, api, **params):
        self.weft_lab, self.weft_host, self.api = weft_lab, weft_host, api
        Switch.__init__(self, name, **params)

    def _shell_argv(self, argv):
        return weftlab.target_cmd(self.weft_lab, self.weft_host, argv)

    def defaultDpid(self, dpid=None):
        # br-int's, as Weft set it when the host joined (Mininet's would come from the name).
        return self.cmd("ovs-vsctl get bridge br-int datapath_id").strip().strip('"')

    def connected(self):
        status = self.api.get(api_path("hosts", self.weft_host)).get("status") or {}
        return bool(status.get("openflow_connected") and status.get("ready"))

    def start(self, controllers):
        pass  # the lab joined the host; its controller is Weft's

    def stop(self, deleteIntfs=True):
        pass  # its interfaces are Weft ports, detached by their links


class WeftLink(Link):
    """A host's interface on a Weft network: the port attach makes on the switch's Weft host (a veth
    from the host's namespace into br-int), in place of Mininet's veth pair."""

    def __init__(self, net, host, switch, port1=None, port2=None, intfName1=None, network=None,
                 ip=None, mac=None):
        self.net, self.switch = net, switch
        port1 = host.newPort() if port1 is None else port1
        self.port = intfName1 or f"{host.name}-eth{port1}"  # the Weft port takes the interface's name
        ip = ip or host.params.get("ip")
        port = net.on_host(switch.weft_host, attach.attach, str(host.pid), network, name=self.port,
                           ifname=self.port, ip=ip and ip.split("/")[0], mac=mac or host.params.get("mac"),
                           external_ids={"owner": "mininet", "mininet.host": host.name,
                                         "mininet.switch": switch.name})
        self.intf1 = Intf(self.port, node=host, port=port1, link=self, mac=port["mac"], moveIntfFn=_stay, up=None)
        self.intf1.ip, self.intf1.prefixLen = port["ip"], ipaddress.IPv4Network(port["cidr"]).prefixlen
        self.intf2 = Intf(attach.host_device(self.port), node=switch, port=port2, link=self, moveIntfFn=_stay,
                          up=None)

    def delete(self):
        try:
            self.net.on_host(self.switch.weft_host, attach.detach, self.port)
        except WeftError as err:  # the rest of the network still stops
            error(f"*** {self}: {err}\n")
        for intf in (self.intf1, self.intf2):
            intf.node.delIntf(intf)
            intf.link = None


class WeftNet(Mininet):
    """A Mininet on a weft lab: each switch a lab host, each host-switch link a Weft port.

    networks: {name: CIDR or {"cidr", "vni", "mtu", ...}}, the Weft networks to make (one of that
    name and CIDR is used as it is); made ones are deleted by stop(). lab: the lab's name. If it is
    up, its hosts carry the switches (by name, else in order) and it stays up; otherwise it is built
    with one host per switch (the topo's, or `switches` without a topo) and stop() takes it down.
    Other arguments are Mininet's; switch, link and controller are Weft's own."""

    def __init__(self, topo=None, networks=None, lab="mininet", switches=None, build=True, **params):
        for key in ("switch", "link", "controller", "inNamespace"):
            if key in params:
                raise MininetError(f"WeftNet sets {key} itself: switches are Weft hosts, links Weft ports")
        Mininet.__init__(self, topo, switch=WeftSwitch, controller=None, link=WeftLink, build=False, **params)
        self.lab, self._owns_lab, self._stopped = lab, False, False
        self._networks = dict(DEFAULT_NETWORKS if networks is None else networks)
        self._made_networks = []
        try:
            self._lab_up(topo.switches() if topo else switches)
            for name, spec in self._networks.items():
                self._network(name, spec)
            if topo and build:
                self.build()
        except BaseException:
            self.stop()
            raise

    def _lab_up(self, switches):
        try:
            self.lab_info = weftlab.info(self.lab)
        except weftlab.LabError:
            self.lab_info = None
        if not (self.lab_info and self.lab_info["ready"]):
            if not switches:
                raise MininetError(f"lab {self.lab} is not up: give a topo or the switches' names to build it")
            self.lab_info = weftlab.up(self.lab, list(switches), progress=lambda line: info(line + "\n"))
            self._owns_lab = True
        if not self.lab_info["api"]:
            raise MininetError(f"lab {self.lab} runs no controller")
        self.api = ApiClient(self.lab_info["api"])

    def _network(self, name, spec):
        body = {"name": name, **({"cidr": spec} if isinstance(spec, str) else dict(spec))}
        try:
            self.api.post("/v1/networks", {**body, "external_ids": {"owner": "mininet"}})
            self._made_networks.append(name)
        except ApiError as err:
            if err.status != 409:
                raise MininetError(f"network {name}: {err.message}") from None
            cidr = self.api.get(api_path("networks", name))["cidr"]
            if cidr != body.get("cidr"):
                raise MininetError(f"network {name} exists with CIDR {cidr}, not {body.get('cidr')}") from None

    def on_host(self, weft_host, function, *args, **kwargs):
        """function(*args, ovsdb=..., api=..., **kwargs) run on a lab host, as `weft` would run there:
        with this thread in its namespace, where its vswitchd opens a port's device by name."""
        h = self.lab_info["hosts"][weft_host]
        try:
            with netns.in_netns(f"/run/netns/{h['netns']}"):
                return function(*args, ovsdb=h["ovsdb"], api=self.api, **kwargs)
        except ApiError as err:
            raise MininetError(err.message) from None

    def addHost(self, name, cls=None, **params):
        if not params.get("inNamespace", True):
            raise MininetError(f"host {name}: a host on Weft needs its own namespace (inNamespace=False)")
        # Without Mininet's default ip= from ipBase: Weft allocates the address of each port.
        host = _in_lab(cls or self.host, self.lab)(name, **params)
        self.hosts.append(host)
        self.nameToNode[name] = host
        return host

    def addSwitch(self, name, cls=None, **params):
        if cls is not None and not issubclass(cls, WeftSwitch):
            raise MininetError(f"switch {name}: its class is WeftSwitch (a Weft host), not {cls.__name__}")
        params.pop("batch", None)
        return Mininet.addSwitch(self, name, cls=cls, weft_lab=self.lab, api=self.api,
                                 weft_host=params.pop("weft_host", None) or self._free_host(name), **params)

    def _free_host(self, switch):
        taken = {s.weft_host for s in self.switches}
        free = [h for h in self.lab_info["hosts"] if h not in taken]
        if not free:
            raise MininetError(f"switch {switch}: every host of lab {self.lab} carries a switch already")
        return switch if switch in free else free[0]

    def addLink(self, node1, node2, port1=None, port2=None, cls=None, **params):
        node1, node2 = (self[n] if isinstance(n, str) else n for n in (node1, node2))
        if isinstance(node1, WeftSwitch) and isinstance(node2, WeftSwitch):
            return None  # the underlay: Geneve between every two lab hosts
        if isinstance(node1, WeftSwitch):
            node1, node2, port1, port2 = node2, node1, port2, port1
            params["intfName1"], params["intfName2"] = params.get("intfName2"), params.get("intfName1")
        params.pop("intfName2", None)  # the switch's side is the port's device, named by attach
        name = f"link {node1.name}-{node2.name}"
        if not isinstance(node2, WeftSwitch):
            raise MininetError(f"{name}: a host links to a switch (a Weft host), not to another host")
        extra = sorted(params.keys() - LINK_PARAMS) + (["cls"] if cls is not None else [])
        if extra:
            raise MininetError(f"{name}: a Weft port takes network=, ip=, mac= and intfName1=, not "
                               + ", ".join(f"{key}=" for key in extra))
        if any(isinstance(i.link, WeftLink) for i in node1.intfList()):
            raise MininetError(f"{name}: {node1.name} has a Weft interface already (one per host)")
        network = params.pop("network", None) or node1.params.get("network") or next(iter(self._networks), None)
        if not network:
            raise MininetError(f"{name}: no network (give network=, or WeftNet networks)")
        try:
            link = WeftLink(self, node1, node2, port1, port2, network=network, **params)
        except WeftError as err:
            raise MininetError(f"{name}: {err}") from None
        self.links.append(link)
        return link

    def configHosts(self):
        # Each host's interface was configured by attach; Mininet would reconfigure it by ifconfig.
        for host in self.hosts:
            host.cmd("ip link set lo up")

    def stop(self):
        """Detaches every port, stops every node, deletes the networks it made; takes the lab down if
        it built it. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            Mininet.stop(self)
            nodes = {node.pid for node in (*self.hosts, *self.switches)}
            if not self._owns_lab and nodes:
                weftlab.forget(self.lab, nodes)
                for name in reversed(self._made_networks):
                    try:
                        self.api.delete(api_path("networks", name))
                    except ApiError as err:
                        error(f"*** network {name}: {err.message}\n")
        finally:
            if self._owns_lab:
                weftlab.down(self.lab, progress=lambda line: info(line + "\n"))
