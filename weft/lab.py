"""`weft lab`: a Mininet-style multi-host lab on one machine.

Each host is a network namespace running its own ovsdb-server + ovs-vswitchd (userspace datapath:
the machine has no openvswitch kernel module). Hosts share an underlay: a Linux bridge in a "fabric"
namespace, one veth per host, the VTEP IP on the host's br-phy (OVS userspace tunnelling). The lab then
starts a Weft controller on 127.0.0.1 and joins every host through the REST API, like a real deployment.

Everything the lab makes is recorded in /run/weft/labs/<name>/lab.json *before or right after* it is
made, so `down` (or the next `up` after a crash) removes exactly that and nothing else.
"Pitfall N" comments refer to the project's notes on running OVS userspace labs (ovs-userspace-lab.md).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from weft.client import ApiClient, ApiError, path as api_path
from weft.errors import WeftError

LABS_DIR = Path("/run/weft/labs")
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
UNDERLAY_MTU = 1600          # pitfall 2: containers can then use 1550 (Geneve adds 50 bytes)
# Every lab has its own fabric namespace, so all labs can use the same underlay addresses.
VTEP_PREFIX = "10.255.0."    # host hN has VTEP 10.255.0.N/24
MAX_HOSTS = 200
TIMEOUT = 30.0               # controller start and host join
REPO_ROOT = Path(__file__).resolve().parent.parent

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")
_CONTAINER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
# A host's name is also an interface name in the fabric (< 16 bytes) and part of its namespace's
# name, wl-<lab>-<host>: no '-', so it never reads as a container's wl-<lab>-c-<name>.
_HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,14}$")
# The lab's own namespaces, bridge and directories (a host's directory is <lab dir>/<host>).
_RESERVED_HOSTS = ("fab", "out", "br0", "fabric", "outside", "controller", "pki", "nbr0",
                   "nb1", "nb2", "nb3", "c1", "c2")


class LabError(WeftError):
    """A lab operation failed; the message is meant for the user (the CLI prints it, no traceback)."""


def _stderr(msg):
    print(msg, file=sys.stderr, flush=True)


def _quiet(msg):
    pass


# ---------------------------------------------------------------- naming and state

def check_name(name):
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise LabError(f"invalid lab name {name!r}: use 1-12 lowercase letters, digits or '-', "
                       "starting with a letter")
    return name


def lab_dir(name):
    return LABS_DIR / check_name(name)


def _load(name):
    try:
        return json.loads((lab_dir(name) / "lab.json").read_text())
    except FileNotFoundError:
        return None


def _save(st):
    # Write-then-rename so a crash never leaves a half-written record.
    path = Path(st["dir"]) / "lab.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=2) + "\n")
    tmp.replace(path)


def _require(name):
    st = _load(name)
    if st is None:
        raise LabError(f"lab {name} is not up (start it with `weft lab up --name {name}`)")
    return st


# ---------------------------------------------------------------- small process helpers

def _run(argv, env=None, input=None):
    try:
        res = subprocess.run([str(a) for a in argv], env=env, input=input, capture_output=True,
                             text=True, timeout=60)
    except FileNotFoundError:
        raise LabError(f"command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out: {' '.join(map(str, argv))}") from None
    if res.returncode != 0:
        raise LabError(f"`{' '.join(map(str, argv))}` failed (exit {res.returncode}): "
                       f"{(res.stderr or res.stdout).strip()}")
    return res.stdout


def _ovs_env(host_dir):
    # OVS tools derive every default path (db.sock, pidfiles, <daemon>.<pid>.ctl, br-int.mgmt)
    # from these, so plain `ovs-vsctl`/`ovs-ofctl`/`ovs-appctl` address this host's own OVS.
    d = str(host_dir)
    return {"OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d, "OVS_SYSCONFDIR": d}


def _full_env(extra):
    return {**os.environ, **extra}


def _netns_exists(ns):
    return os.path.exists(f"/run/netns/{ns}")


def _netns_add(st, ns):
    # Refuse (before recording it) a namespace we did not make, so `down` never deletes it.
    if _netns_exists(ns):
        raise LabError(f"network namespace {ns} already exists but lab {st['name']} did not record it; "
                       f"if it is a leftover, remove it with `ip netns del {ns}`")
    st["netns"].append(ns)
    _save(st)
    _run(["ip", "netns", "add", ns])
    _run(["ip", "-n", ns, "link", "set", "lo", "up"])
    # Pitfall 8: IPv6 ND/MLD noise makes captures nondeterministic; `default` covers later links.
    _sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")


def _sysctl(ns, *settings):
    _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings])


def _proc_state(pid):
    """The /proc state letter, or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid):
    # Pitfall 7: detached daemons are reaped late by PID 1 and `kill -0` succeeds on zombies.
    return _proc_state(pid) not in (None, "Z", "X")


def _is_ours(pid, marker):
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return marker.encode() in cmdline


def _record_pid(st, pid, what, group=False, proc=None, replacing=None):
    """Record a process for `down`. Its command line must mention the lab dir (checked before kill).

    proc: the Popen that started it, stopped here if the check fails (it would be recorded nowhere).
    replacing: the recorded entry of the process it replaces (a restarted daemon), whose place it takes.
    """
    # Popen returns during execve, before the kernel fills in the new /proc/<pid>/cmdline: retry.
    deadline = time.monotonic() + 2
    while not _is_ours(pid, st["marker"]):
        problem = None
        if not _alive(pid):
            problem = "exited right after it started"
        elif time.monotonic() > deadline:
            problem = f"does not mention {st['dir']} in its command line"
        if problem:
            if proc is not None:
                proc.kill()
                proc.wait()
            raise LabError(f"{what} (pid {pid}) {problem}")
        time.sleep(0.01)
    entry = {"pid": pid, "what": what, "group": group}
    if replacing is None:
        st["pids"].append(entry)
    else:
        st["pids"][st["pids"].index(replacing)] = entry
    _save(st)


def _read_pidfile(path):
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        raise LabError(f"cannot read pid file {path}") from None


def _signal(entry, sig):
    try:
        # Processes we started with start_new_session lead their own group: signal the whole group
        # so helpers they forked (socat's per-connection children) go too.
        if entry["group"] and os.getpgid(entry["pid"]) == entry["pid"]:
            os.killpg(entry["pid"], sig)
        else:
            os.kill(entry["pid"], sig)
    except ProcessLookupError:
        pass


def _wait_gone(entries, timeout):
    deadline = time.monotonic() + timeout
    while True:
        for e in entries:
            try:  # reap it if it is our own child (up and down in one process, e.g. tests)
                os.waitpid(e["pid"], os.WNOHANG)
            except ChildProcessError:
                pass
        left = [e for e in entries if _alive(e["pid"])]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def _stop_pids(st, progress):
    # Only pids the lab recorded, and only if their command line still names the lab dir
    # (a recorded pid may have exited and been reused by someone else's process).
    ours = [e for e in reversed(st["pids"]) if _alive(e["pid"]) and _is_ours(e["pid"], st["marker"])]
    # The controller stops its embedded NB server itself; should the controller die first (killed,
    # crashed), the server it started is found through its pidfile, in the lab dir, and stopped too.
    try:
        nb_pid = int((Path(st["dir"]) / "controller" / "nb.pid").read_text().strip())
        if _alive(nb_pid) and _is_ours(nb_pid, st["marker"]):
            ours.append({"pid": nb_pid, "what": "embedded NB ovsdb-server", "group": False})
    except (OSError, ValueError):
        pass
    for e in ours:
        _signal(e, signal.SIGTERM)
        if _proc_state(e["pid"]) == "T":  # a frozen host's daemon (freeze): it handles SIGTERM once thawed
            _signal(e, signal.SIGCONT)
    left = _wait_gone(ours, 5)
    for e in left:
        progress(f"lab {st['name']}: {e['what']} (pid {e['pid']}) ignored SIGTERM, sending SIGKILL")
        _signal(e, signal.SIGKILL)
    left = _wait_gone(left, 5)
    if left:
        raise LabError("could not stop: " + ", ".join(f"{e['what']} (pid {e['pid']})" for e in left))


def _free_ports(n):
    # Bind all at once so the kernel hands out distinct ports; a small race with other users remains.
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path, lines=20):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- up

def up(name="weft", hosts=2, controller=True, external=False, tls=False, runtimes=False, ha=False,
       progress=_stderr):
    """Build the lab (hosts h1..hN, fabric, controller, joined hosts, and with `external` an
    `outside` namespace on its own link to an uplink of the first host); with `tls`, OpenFlow runs
    over TLS with certificates from a PKI in the lab dir (`weft pki`); with `runtimes`, every host
    also runs a dockerd and podman (weft.labruntimes); with `ha`, a 3-member Raft NB cluster and two
    controllers, c1 and c2, an active/standby pair (see _start_ha). `hosts` is N, or the hosts' names
    (weft.mininet names them after its switches). Return info(name)."""
    d = lab_dir(name)
    names = _host_names(hosts)
    missing = [t for t in ("ip", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl",
                           "ovs-appctl", "socat") if not shutil.which(t)]
    if missing:
        raise LabError("missing commands: " + ", ".join(missing))
    if runtimes:
        from weft import labruntimes
        labruntimes.check_installed()
    if os.geteuid() != 0:
        raise LabError("weft lab needs root (network namespaces, Open vSwitch)")
    if ha and (tls or not controller):
        raise LabError("--ha needs the controllers and plain OpenFlow (not --tls or --no-controller)")
    ryu = controller_argv(0, "")[0]
    if controller and not os.path.exists(ryu):  # fail before building anything
        raise LabError(f"{ryu} not found: install Weft with its dependencies (Ryu), or use --no-controller")

    old = _load(name)
    if old is not None:
        if old.get("ready") and all(_alive(e["pid"]) for e in old["pids"]):
            raise LabError(f"lab {name} is already up; run `weft lab down --name {name}` first")
        progress(f"lab {name}: cleaning up leftovers of a previous run")
        down(name, progress=_quiet)
    elif d.exists():
        shutil.rmtree(d)  # a crash between mkdir and the first record: nothing was started

    t0 = time.monotonic()
    d.mkdir(parents=True)
    st = {"name": name, "dir": str(d), "marker": f"{d}/", "ready": False, "api": None,
          "ofp_port": None, "tls": tls, "fabric": {"netns": f"wl-{name}-fab"},
          "hosts": {}, "containers": {}, "netns": [], "pids": []}
    _save(st)
    try:
        _make_fabric(st, progress)
        for i, host in enumerate(names, 1):
            _make_host(st, i, host, progress)
        _seed_tunnel_arp(st, progress)
        if external:
            _make_outside(st, progress)
        if controller and ha:
            _start_ha(st, progress)
            _join_hosts(st, progress)
        elif controller:
            _start_controller(st, progress)
            _join_hosts(st, progress)
        if runtimes:
            labruntimes.start(st, progress)
    except BaseException:
        progress(f"lab {name}: bring-up failed, tearing down what was made")
        try:
            down(name, progress=_quiet)
        except LabError as err:
            progress(f"lab {name}: teardown after failure also failed: {err}")
        raise
    st["ready"] = True
    _save(st)
    where = f"API {st['api']}" if st["api"] else "no controller"
    if runtimes:
        where += ", dockerd and podman on every host"
    progress(f"lab {name}: up with {len(names)} hosts in {time.monotonic() - t0:.1f}s ({where})")
    return info(name)


def _host_names(hosts):
    if isinstance(hosts, int) and not isinstance(hosts, bool):
        if not 1 <= hosts <= MAX_HOSTS:
            raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}")
        return [f"h{i}" for i in range(1, hosts + 1)]
    names = list(hosts) if isinstance(hosts, (list, tuple)) else None
    if not names or len(names) > MAX_HOSTS:
        raise LabError(f"hosts must be a number or a list of 1 to {MAX_HOSTS} host names")
    for host in names:
        if not isinstance(host, str) or not _HOST_RE.fullmatch(host) or host in _RESERVED_HOSTS:
            raise LabError(f"invalid lab host name {host!r}: use 1-15 lowercase letters or digits, "
                           f"starting with a letter, and none of {', '.join(_RESERVED_HOSTS)}")
    if len(set(names)) != len(names):
        raise LabError("lab host names must be distinct")
    return names


EXTERNAL_CIDR = "192.0.2.0/24"   # TEST-NET-1, only ever inside the lab's own `outside` namespace
EXTERNAL_NEXT_HOP = "192.0.2.1"
EXTERNAL_UPLINK = "uplink0"


def _make_outside(st, progress):
    """The world beyond a gateway: a namespace with one link to `uplink0` on the first host, h1
    (plugged into br-int by the controller when a router's gateway uses it). Tests run their
    servers there."""
    ns = f"wl-{st['name']}-out"
    first = next(iter(st["hosts"]))
    h1 = st["hosts"][first]["netns"]
    progress(f"lab {st['name']}: outside namespace {ns} ({EXTERNAL_NEXT_HOP}) linked to {first}'s {EXTERNAL_UPLINK}")
    _netns_add(st, ns)
    _run(["ip", "-n", h1, "link", "add", EXTERNAL_UPLINK, "type", "veth", "peer", "name", "eth0", "netns", ns])
    _run(["ip", "-n", h1, "link", "set", EXTERNAL_UPLINK, "up"])
    # The kernel of h1 must leave the uplink's frames to OVS (pitfall 4), and IPv6 noise stays out.
    _run(["ip", "netns", "exec", h1, "sysctl", "-qw", f"net.ipv6.conf.{EXTERNAL_UPLINK}.disable_ipv6=1"])
    _run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
    _run(["ip", "-n", ns, "link", "set", "lo", "up"])
    _run(["ip", "-n", ns, "addr", "add", f"{EXTERNAL_NEXT_HOP}/24", "dev", "eth0"])
    _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    _run(["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"])  # pitfall 1
    st["external"] = {"netns": ns, "host": first, "uplink": EXTERNAL_UPLINK, "cidr": EXTERNAL_CIDR,
                      "next_hop": EXTERNAL_NEXT_HOP, "free_ips": [f"192.0.2.{i}" for i in range(10, 30)]}
    _save(st)


def _make_fabric(st, progress):
    ns = st["fabric"]["netns"]
    progress(f"lab {st['name']}: fabric namespace {ns}")
    _netns_add(st, ns)
    _run(["ip", "-n", ns, "link", "add", "br0", "mtu", UNDERLAY_MTU, "type", "bridge"])
    _run(["ip", "-n", ns, "link", "set", "br0", "up"])


def _make_host(st, i, host, progress):
    ns = f"wl-{st['name']}-{host}"
    hd = Path(st["dir"]) / host
    fab = st["fabric"]["netns"]
    mac = f"02:77:6c:00:00:{i:02x}"  # fixed per host, so peers can pre-seed it (pitfall 3)
    h = {"netns": ns, "dir": str(hd), "encap_ip": f"{VTEP_PREFIX}{i}", "mac": mac,
         "ovsdb": f"unix:{hd}/db.sock", "of_target": f"unix:{hd}/ctl.sock"}
    st["hosts"][host] = h
    progress(f"{host}: namespace {ns}, underlay {h['encap_ip']}, ovsdb-server and ovs-vswitchd in {hd}")
    hd.mkdir()
    _netns_add(st, ns)

    # Underlay veth: `hN` on the fabric bridge, `phy` in the host. Created in the fabric namespace
    # with the peer placed straight into the host, so no name ever appears in the root namespace.
    _run(["ip", "-n", fab, "link", "add", host, "mtu", UNDERLAY_MTU, "type", "veth", "peer", "name",
          "phy", "netns", ns, "mtu", UNDERLAY_MTU, "address", mac])
    _run(["ip", "-n", fab, "link", "set", host, "master", "br0", "up"])
    # Pitfall 4: the kernel sees every frame on phy too; keep it from answering ARP / sending
    # ICMP port-unreachable for the Geneve traffic OVS handles.
    _sysctl(ns, "net.ipv4.conf.phy.rp_filter=1", "net.ipv6.conf.phy.disable_ipv6=1")
    _run(["ip", "-n", ns, "link", "set", "phy", "up"])

    env = _full_env(_ovs_env(hd))
    _run(["ovsdb-tool", "create", hd / "conf.db", SCHEMA])
    _start_daemon(h, "ovsdb-server")
    _record_pid(st, _read_pidfile(hd / "ovsdb-server.pid"), f"{host} ovsdb-server")
    _run(["ovs-vsctl", "--no-wait", "init"], env=env)
    _start_daemon(h, "ovs-vswitchd")
    _record_pid(st, _read_pidfile(hd / "ovs-vswitchd.pid"), f"{host} ovs-vswitchd")

    # br-phy carries the VTEP IP (OVS userspace tunnelling howto); hwaddr = phy's MAC so the
    # VTEP's MAC is the one peers pre-seed.
    _run(["ovs-vsctl", "--timeout=20",
          "--", "add-br", "br-phy",
          "--", "set", "bridge", "br-phy", "datapath_type=netdev", "fail_mode=standalone",
          f'other_config:hwaddr="{mac}"',
          "--", "set", "interface", "br-phy", f"mtu_request={UNDERLAY_MTU}",
          "--", "add-port", "br-phy", "phy",
          "--", "set", "interface", "phy", f"mtu_request={UNDERLAY_MTU}"], env=env)
    _run(["ip", "-n", ns, "addr", "add", f"{h['encap_ip']}/24", "dev", "br-phy"])
    _run(["ip", "-n", ns, "link", "set", "br-phy", "up"])
    _save(st)


def _start_daemon(h, daemon):
    """Starts a host's ovsdb-server or ovs-vswitchd (at bring-up, and again after `restart`). Daemons
    run inside the namespace (vswitchd needs it for its tap devices and routes); default pidfile/ctl/
    log paths come from OVS_RUNDIR so plain ovs-appctl finds them. --detach returns once the daemon
    is ready."""
    hd = Path(h["dir"])
    first = ([hd / "conf.db", f"--remote=punix:{hd}/db.sock"] if daemon == "ovsdb-server"
             else [f"unix:{hd}/db.sock"])
    _run(["ip", "netns", "exec", h["netns"], daemon, *first,
          "--pidfile", "--log-file", "--detach", "--no-chdir", "-vconsole:off"], env=_full_env(_ovs_env(hd)))


def _seed_tunnel_arp(st, progress, hosts=None):
    """Pitfall 3: OVS drops the first packet to a VTEP it has not resolved yet. `hosts`: only the
    vswitchds of these (one that restarted has lost its cache); default all."""
    if len(st["hosts"]) < 2:
        return
    progress(f"lab {st['name']}: pre-seeding tunnel ARP entries")
    for a, ha in st["hosts"].items():
        if hosts is not None and a not in hosts:
            continue
        env = _full_env(_ovs_env(ha["dir"]))
        for b, hb in st["hosts"].items():
            if a != b:
                _run(["ovs-appctl", "tnl/arp/set", "br-phy", hb["encap_ip"], hb["mac"]], env=env)


def controller_argv(ofp_port, conf, tls=None):
    """The controller command line (a function so tests can substitute a stand-in). Its API is on
    the unix socket the config file names: unix sockets are not namespaced, so `weft` run inside a
    host's namespace reaches it as well, through the same file permissions as everyone else.
    `tls`: the controller's pki.Credentials; OpenFlow then listens for TLS only."""
    listen = ["--ofp-tcp-listen-port", str(ofp_port)] if tls is None else [
        "--ofp-ssl-listen-port", str(ofp_port), "--ctl-privkey", tls.key, "--ctl-cert", tls.cert,
        "--ca-certs", tls.ca_cert]
    return [str(Path(sys.executable).parent / "ryu-manager"), *listen, "--config-file", str(conf),
            "controller.app"]


TLS_OF_PORT = 6653  # inside each host's namespace, where its vswitchd finds the controller over TLS


def _make_pki(st, progress):
    """A CA, the controller's certificate and one per host (CN = the host's name), in the lab dir."""
    from weft import pki
    directory = str(Path(st["dir"]) / "pki")
    progress(f"lab {st['name']}: PKI in {directory} (OpenFlow over TLS)")
    pki.init_ca(directory)
    controller = pki.issue_controller(directory, ips=["127.0.0.1"])
    env_of = {host: _full_env(_ovs_env(h["dir"])) for host, h in st["hosts"].items()}
    for host in st["hosts"]:
        cert = pki.issue_host(directory, host)
        _run(["ovs-vsctl", "set-ssl", cert.key, cert.cert, cert.ca_cert], env=env_of[host])
    return controller


def _start_controller(st, progress):
    d = Path(st["dir"])
    (ofp,) = _free_ports(1)
    conf = d / "weft.conf"
    conf.write_text(f"[weft]\nstate_dir = {d}/controller\nunderlay_mtu = {UNDERLAY_MTU}\n"
                    f"api_socket = {d}/api.sock\n")
    argv = controller_argv(ofp, conf, _make_pki(st, progress) if st["tls"] else None)
    st.update(ofp_port=ofp, api=f"unix:{d}/api.sock")
    st["controller_argv"] = [str(a) for a in argv]
    progress(f"lab {st['name']}: starting the controller (OpenFlow 127.0.0.1:{ofp}, API {st['api']}), "
             f"log {d / 'controller.log'}")
    launch_controller(st)

    # Pitfall 9 / notes: OVS only accepts a unix controller target inside its own OVS_RUNDIR and
    # Ryu only listens on TCP, so each host gets a unix->TCP relay in the root namespace. `nodelay`,
    # as OVS and Ryu set on their own TCP sockets: without it Nagle held a barrier reply queued behind
    # a PORT_STATUS until Ryu's delayed ACK, 40 ms, on about one port attach in five.
    for host, h in st["hosts"].items():
        _start_relay(st, host, Path(h["dir"]) / "ctl.sock", ofp, f"{host} controller relay", "relay.log")
    for host, h in st["hosts"].items():
        sock = Path(h["dir"]) / "ctl.sock"
        _wait_relay(host, sock, Path(h["dir"]) / "relay.log")
        if st["tls"]:
            # An ssl: target must be an address: a TCP listener in the host's own namespace, chained
            # to the unix relay. TLS runs end to end, between vswitchd and the controller.
            with open(Path(h["dir"]) / "tls-relay.log", "wb") as log:
                relay = subprocess.Popen(["ip", "netns", "exec", h["netns"], "socat",
                                          f"TCP-LISTEN:{TLS_OF_PORT},bind=127.0.0.1,fork,reuseaddr,nodelay",
                                          f"UNIX-CONNECT:{sock}"], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True)
            _record_pid(st, relay.pid, f"{host} TLS relay", group=True, proc=relay)
            h["of_target"] = f"ssl:127.0.0.1:{TLS_OF_PORT}"
    _save(st)


def _start_relay(st, host, sock, ofp, what, log_name):
    with open(Path(st["hosts"][host]["dir"]) / log_name, "wb") as log:
        relay = subprocess.Popen(["socat", f"UNIX-LISTEN:{sock},fork,unlink-early,backlog=128",
                                  f"TCP:127.0.0.1:{ofp},nodelay"], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, start_new_session=True)
    _record_pid(st, relay.pid, what, group=True, proc=relay)


def _wait_relay(host, sock, log):
    deadline = time.monotonic() + 5
    while not sock.exists():
        if time.monotonic() > deadline:
            raise LabError(f"the relay for {host} did not create {sock}; see {log}")
        time.sleep(0.01)


# ---------------------------------------------------------------- high availability (--ha)

NB_LINK_PREFIX = "10.254.0."  # member nbN has 10.254.0.N/24 on the lab's NB link (nbr0 in the fabric)
NB_MEMBERS = ("nb1", "nb2", "nb3")
HA_CONTROLLERS = ("c1", "c2")
RAFT_PORT = 6643
NB_DATABASE = "Weft_NB"


def _start_ha(st, progress):
    """A 3-member Raft NB cluster and two controllers pointed at all three members. Each member runs
    in its own namespace, on a private link (a bridge in the fabric namespace), and Raft runs over TCP
    between them; clients reach each member through a unix socket in the lab dir (unix sockets are not
    namespaced). c1 starts first, so it is the active one; every host's br-int gets both as targets."""
    d, fab = Path(st["dir"]), st["fabric"]["netns"]
    progress(f"lab {st['name']}: NB cluster of {len(NB_MEMBERS)} members on {NB_LINK_PREFIX}0/24")
    _run(["ip", "-n", fab, "link", "add", "nbr0", "type", "bridge"])
    _run(["ip", "-n", fab, "link", "set", "nbr0", "up"])
    st["nb_members"] = {}
    for i, member in enumerate(NB_MEMBERS, 1):
        md = d / member
        md.mkdir()
        ns = f"wl-{st['name']}-{member}"
        _netns_add(st, ns)
        _run(["ip", "-n", fab, "link", "add", member, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "-n", fab, "link", "set", member, "master", "nbr0", "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{NB_LINK_PREFIX}{i}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        m = {"netns": ns, "dir": str(md), "db": str(md / "nb.db"), "raft": f"tcp:{NB_LINK_PREFIX}{i}:{RAFT_PORT}",
             "remote": f"unix:{md}/nb.sock", "ctl": str(md / "nb.ctl"), "log": str(md / "nb.log")}
        st["nb_members"][member] = m
        if i == 1:
            _run(["ovsdb-tool", "create-cluster", m["db"], REPO_ROOT / "ovsdb" / "weft_nb.ovsschema", m["raft"]])
        else:
            _run(["ovsdb-tool", "join-cluster", m["db"], NB_DATABASE, m["raft"],
                  st["nb_members"][NB_MEMBERS[0]]["raft"]])
        _save(st)
        start_nb_member(st, member)
    _wait_nb_cluster(st)

    st["controllers"] = {}
    remotes = ",".join(m["remote"] for m in st["nb_members"].values())
    for controller, ofp in zip(HA_CONTROLLERS, _free_ports(len(HA_CONTROLLERS))):
        cd = d / controller
        cd.mkdir()
        conf = cd / "weft.conf"
        conf.write_text(f"[weft]\nstate_dir = {cd}/state\nunderlay_mtu = {UNDERLAY_MTU}\n"
                        f"api_socket = {cd}/api.sock\nnb_remote = {remotes}\ncontroller_name = {controller}\n")
        st["controllers"][controller] = {"dir": str(cd), "api": f"unix:{cd}/api.sock", "ofp_port": ofp,
                                         "log": str(cd / "controller.log"),
                                         "argv": [str(a) for a in controller_argv(ofp, conf)]}
    st.update(api=",".join(c["api"] for c in st["controllers"].values()),
              ofp_port=st["controllers"][HA_CONTROLLERS[0]]["ofp_port"])
    for controller, c in st["controllers"].items():
        progress(f"lab {st['name']}: starting controller {controller} (OpenFlow 127.0.0.1:{c['ofp_port']}, "
                 f"API {c['api']}), log {c['log']}")
        launch_controller(st, controller)
    for host, h in st["hosts"].items():
        socks = []
        for controller, c in st["controllers"].items():
            sock = Path(h["dir"]) / f"ctl-{controller}.sock"
            _start_relay(st, host, sock, c["ofp_port"], f"{host} relay to {controller}", f"relay-{controller}.log")
            socks.append(sock)
        for sock in socks:
            _wait_relay(host, sock, Path(h["dir"]))
        h["of_target"] = ",".join(f"unix:{sock}" for sock in socks)
    _save(st)


def start_nb_member(st, member):
    """Starts an NB member's ovsdb-server (again, after a stop: on the same db file, so it rejoins)."""
    m = st["nb_members"][member]
    st["pids"] = [e for e in st["pids"] if e["what"] != f"NB member {member}" or _alive(e["pid"])]
    _run(["ip", "netns", "exec", m["netns"], "ovsdb-server", m["db"], f"--remote=punix:{m['remote'][5:]}",
          f"--unixctl={m['ctl']}", f"--pidfile={m['dir']}/nb.pid", f"--log-file={m['log']}", "--detach",
          "--no-chdir", "-vconsole:off"])
    _record_pid(st, _read_pidfile(Path(m["dir"]) / "nb.pid"), f"NB member {member}")


def _wait_nb_cluster(st, timeout=TIMEOUT):
    def joined(member):
        try:
            return "\nStatus: cluster member\n" in nb_cluster_status(st["name"], member)
        except LabError:
            return False
    deadline = time.monotonic() + timeout
    while nb_leader(st["name"]) is None or not all(map(joined, st["nb_members"])):
        if time.monotonic() > deadline:
            raise LabError(f"the NB cluster elected no leader in {timeout:.0f}s; see "
                           f"{st['nb_members'][NB_MEMBERS[0]]['log']}")
        time.sleep(0.1)


def nb_cluster_status(name, member):
    """`ovs-appctl cluster/status` of one member, as text (LabError if it does not answer)."""
    st = _require(name)
    if member not in st.get("nb_members", {}):
        raise LabError(f"no NB member {member} in lab {name} (members: {', '.join(st.get('nb_members', {})) or 'none: not --ha'})")
    return _run(["ovs-appctl", "-t", st["nb_members"][member]["ctl"], "cluster/status", NB_DATABASE])


def nb_leader(name):
    """The NB member that is the Raft leader now, as its own cluster/status says; None during an election."""
    for member in _require(name).get("nb_members", {}):
        try:
            if "\nRole: leader\n" in nb_cluster_status(name, member):
                return member
        except LabError:  # stopped or killed
            continue
    return None


def _entry(st, what):
    entries = [e for e in st["pids"] if e["what"] == what and _alive(e["pid"])]
    if not entries:
        raise LabError(f"{what} is not running in lab {st['name']}")
    return entries[0]


def _ha_process(st, kind, which):
    table = st.get("controllers" if kind == "controller" else "nb_members") or {}
    if which not in table:
        raise LabError(f"no {kind} {which} in lab {st['name']} ({', '.join(table) or 'the lab is not --ha'})")
    return f"controller {which}" if kind == "controller" else f"NB member {which}"


def stop_process(name, kind, which, sig=signal.SIGTERM, timeout=10):
    """Signals a controller (kind "controller": c1, c2) or an NB member ("nb": nb1..nb3) of an --ha lab by
    its recorded pid (SIGKILL: kill -9), waits until it is gone, and forgets it. Returns its pid."""
    st = _require(name)
    entry = _entry(st, _ha_process(st, kind, which))
    _signal(entry, sig)
    if _wait_gone([entry], timeout):
        raise LabError(f"{entry['what']} (pid {entry['pid']}) did not stop within {timeout}s")
    st["pids"].remove(entry)
    _save(st)
    return entry["pid"]


def start_process(name, kind, which):
    """Starts a stopped controller or NB member of an --ha lab again (same ports, files and state)."""
    st = _require(name)
    what = _ha_process(st, kind, which)
    if any(e["what"] == what and _alive(e["pid"]) for e in st["pids"]):
        raise LabError(f"{what} is already running in lab {name}")
    if kind == "controller":
        launch_controller(st, which)
    else:
        start_nb_member(st, which)


def source_pythonpath():
    """A PYTHONPATH with this source tree first: lab processes run this copy of Weft (`controller.app`
    is imported by module name), installed or not."""
    return os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)


def launch_controller(st, controller=None):
    """Starts the lab's controller (again, after a stop: same ports, state and log), or in an --ha lab
    the one named `controller`, records it, and returns once it serves. The API answers before the
    embedded NB is connected, and joining a host needs the NB: waiting for both keeps the first
    POST /v1/hosts from racing it into a 503."""
    if controller is None:
        d, argv, what, api = Path(st["dir"]), st["controller_argv"], "controller", st["api"]
    else:
        c = st["controllers"][controller]
        d, argv, what, api = Path(c["dir"]), c["argv"], f"controller {controller}", c["api"]
    log_path = d / "controller.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=d, env=_full_env({"PYTHONPATH": source_pythonpath()}),
                                start_new_session=True)
    _record_pid(st, proc.pid, what, group=True, proc=proc)
    wait_until_serving(proc, api, log_path)


def wait_until_serving(proc, api, log_path, timeout=TIMEOUT):
    """Waits until the controller started as `proc` answers on `api` with its NB connected; LabError
    with the end of its log if it exits or takes longer than `timeout`."""
    client = ApiClient(api, timeout=2)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise LabError(f"the controller exited with status {proc.returncode}; "
                           f"last lines of {log_path}:\n{_tail(log_path)}")
        try:
            status = client.get("/v1/status") or {}
            me = (status.get("controller") or {}).get("name")
            # Active itself, or (a standby) with another controller active: its own old row does not count.
            roles = [c.get("role") for name, c in (status.get("controllers") or {}).items() if name != me]
            roles.append((status.get("controller") or {}).get("role"))
            if (status.get("nb") or {}).get("connected") and ("active" in roles or "controllers" not in status):
                return
            waiting_for = "its NB database to connect and a controller to be active"
        except ApiError as err:
            waiting_for = f"GET /v1/status on {api} ({err.message})"
        if time.monotonic() > deadline:
            raise LabError(f"the controller was still waiting for {waiting_for} after "
                           f"{timeout:.0f}s; last lines of {log_path}:\n{_tail(log_path)}")
        time.sleep(0.1)


def _join_hosts(st, progress):
    client = ApiClient(st["api"])
    for host, h in st["hosts"].items():
        progress(f"{host}: joining through POST /v1/hosts")
        body = {"name": host, "encap_ip": h["encap_ip"], "ovsdb": h["ovsdb"],
                "datapath_type": "netdev", "of_target": h["of_target"]}
        try:
            client.post("/v1/hosts", body)
        except ApiError as err:
            raise LabError(f"joining {host} failed: {err.message}") from None

    progress(f"lab {st['name']}: waiting for every host to connect (OVSDB and OpenFlow)")
    # In an --ha lab, to each controller: the standby keeps its connections warm too.
    clients = [ApiClient(c["api"]) for c in st["controllers"].values()] if st.get("controllers") else [client]
    pending = {(host, i): None for host in st["hosts"] for i in range(len(clients))}
    deadline = time.monotonic() + TIMEOUT
    while pending:
        for host, i in list(pending):
            try:
                status = (clients[i].get(api_path("hosts", host)) or {}).get("status") or {}
            except ApiError as err:
                status = {"error": err.message}
            pending[host, i] = status
            if status.get("ovsdb_connected") is True and status.get("openflow_connected") is True:
                del pending[host, i]
        if not pending:
            break
        if time.monotonic() > deadline:
            (host, _), status = next(iter(pending.items()))
            hd = st["hosts"][host]["dir"]
            raise LabError(f"host {host} did not connect to the controller within {TIMEOUT:.0f}s "
                           f"(last status {json.dumps(status)}); see {st['dir']}/controller.log and "
                           f"{hd}/ovs-vswitchd.log")
        time.sleep(0.1)


# ---------------------------------------------------------------- down, info, env

def down(name="weft", progress=_stderr):
    """Stop every recorded process, delete every recorded namespace, remove the lab dir. Idempotent."""
    d = lab_dir(name)
    st = _load(name)
    if st is None:
        if d.exists():
            shutil.rmtree(d)  # crashed before recording anything
        progress(f"lab {name} is not up; nothing to do")
        return
    t0 = time.monotonic()
    if st.get("runtimes"):
        # First, while the controller and any network plugin still run: containers removed through
        # the runtimes, so the plugins see them leave; a failure here must not keep the rest up.
        from weft import labruntimes
        try:
            labruntimes.stop(st, progress)
        except LabError as err:
            progress(f"lab {name}: stopping the runtimes: {err}")
    progress(f"lab {name}: stopping {len(st['pids'])} processes")
    _stop_pids(st, progress)
    if st.get("runtimes"):
        labruntimes.check_nothing_left(st)
    containers = {c["netns"] for c in st["containers"].values()}
    for ns in reversed(st["netns"]):  # containers, then hosts, then the fabric
        if ns in containers:
            _del_container_netns(ns)
        elif _netns_exists(ns):
            _run(["ip", "netns", "del", ns])
    shutil.rmtree(d)
    progress(f"lab {name}: down in {time.monotonic() - t0:.1f}s")


def info(name="weft"):
    st = _require(name)
    return {
        "name": st["name"], "dir": st["dir"], "ready": st["ready"], "api": st["api"],
        "ofp_port": st["ofp_port"], "tls": st.get("tls", False),
        "fabric": dict(st["fabric"]),
        "hosts": {h: {"netns": v["netns"], "encap_ip": v["encap_ip"], "ovs_rundir": v["dir"],
                      "ovsdb": v["ovsdb"], "of_target": v["of_target"], "mac": v["mac"],
                      "frozen": bool(v.get("frozen")),
                      **({"runtimes": _runtimes_info(st, h)} if st.get("runtimes") else {})}
                  for h, v in st["hosts"].items()},
        "runtimes": bool(st.get("runtimes")),
        "containers": {c: dict(v) for c, v in st["containers"].items()},
        "pids": [dict(e) for e in st["pids"]],
        **({"external": dict(st["external"])} if st.get("external") else {}),
        **({"nb_members": {m: dict(v) for m, v in st["nb_members"].items()},
            "controllers": {c: {k: v[k] for k in ("dir", "api", "ofp_port", "log")}
                            for c, v in st["controllers"].items()}} if st.get("controllers") else {}),
    }


def _runtimes_info(st, host):
    from weft import labruntimes
    h = st["hosts"][host]
    return {**labruntimes.host_paths(st, host), "ns_pid": h.get("runtime_ns_pid"),
            "dockerd_pid": h.get("dockerd_pid"), "containerd_pid": h.get("containerd_pid"),
            "docker_plugin_pid": h.get("docker_plugin_pid")}


def env(name="weft"):
    st = _require(name)
    lines = [f"export WEFT_LAB={name}"]
    if st["api"]:
        lines.insert(0, f"export WEFT_API={st['api']}")
    return "\n".join(lines) + "\n"


def host_env(name, host):
    """The OVS_* variables that point OVS tools at `host`'s own OVS (merge into os.environ)."""
    st = _require(name)
    if host not in st["hosts"]:
        raise LabError(f"no host {host} in lab {name} (hosts: {', '.join(st['hosts'])})")
    return _ovs_env(st["hosts"][host]["dir"])


# ---------------------------------------------------------------- host faults: restart, freeze, thaw

DAEMONS = {"vswitchd": "ovs-vswitchd", "ovsdb": "ovsdb-server"}  # what `restart` takes -> the program


def _lab_host(st, host):
    if host not in st["hosts"]:
        raise LabError(f"no host {host!r} in lab {st['name']} (hosts: {', '.join(st['hosts'])})")
    return st["hosts"][host]


def _daemon_entry(st, host, program):
    """The recorded entry of a host's running ovsdb-server or ovs-vswitchd."""
    what = f"{host} {program}"
    entry = next((e for e in st["pids"] if e["what"] == what), None)
    if entry is None or not _alive(entry["pid"]) or not _is_ours(entry["pid"], st["marker"]):
        raise LabError(f"{what} is not running" + (f" (pid {entry['pid']} is gone)" if entry else ""))
    return entry


def _log_time(line):
    """The CLOCK_MONOTONIC time of an OVS log line (which is stamped in UTC, to the millisecond)."""
    from datetime import datetime, timezone
    logged = datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
    return time.monotonic() - (time.time() - logged)


def _wait_log_line(path, texts, after, timeout):
    """The monotonic time of the first line of the log at `path` after its first `after` bytes that
    contains one of `texts`; LabError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with open(path, "rb") as log:
            log.seek(after)
            for line in log.read().decode(errors="replace").splitlines():
                if any(text in line for text in texts):
                    return _log_time(line)
        if time.monotonic() > deadline:
            raise LabError(f"none of {texts} in {path} within {timeout:.0f}s")
        time.sleep(0.005)


def restart(name, host, daemon, progress=_stderr, timeout=TIMEOUT):
    """Restarts a host's ovs-vswitchd ("vswitchd") or ovsdb-server ("ovsdb") as a service manager
    would: SIGTERM to the recorded pid, wait until it is gone (SIGKILL after 10 s), start it again with
    the same arguments in the host's namespace, and record the new pid in the old one's place. After
    a vswitchd restart the lab re-seeds what that vswitchd lost (its tunnel ARP entries, pitfall 3 and
    measuring pitfall 5; br-phy's address is on a tap device vswitchd recreates, and is checked) and,
    with a controller, waits until the new vswitchd's br-int has connected to it.

    Returns the timings, CLOCK_MONOTONIC seconds (comparable with weft.echo's): `stopping` (SIGTERM
    sent), `stopped` (the old process gone), `started` (the new one ready: --detach returned); for
    vswitchd with a controller, `connected` (the vswitchd log's `br-int<->...: connected`, for the
    first of its controllers); for ovsdb,
    `vswitchd_reconnected` (the vswitchd log's `<db>: connected`: the userspace datapath does not
    forward while vswitchd has no database); and `own_restart_s`, from stopping to the last of those:
    the daemons' own share of the outage, before the controller can do anything."""
    st = _require(name)
    if daemon not in DAEMONS:
        raise LabError(f"cannot restart {daemon!r}: the lab restarts vswitchd or ovsdb")
    h = _lab_host(st, host)
    if h.get("frozen"):
        raise LabError(f"host {host} is frozen: thaw it first (weft lab thaw {host})")
    program = DAEMONS[daemon]
    entry = _daemon_entry(st, host, program)
    vswitchd_log = Path(h["dir"]) / "ovs-vswitchd.log"
    log_size = vswitchd_log.stat().st_size
    progress(f"{host}: restarting {program} (pid {entry['pid']})")
    timings = {"host": host, "daemon": daemon, "old_pid": entry["pid"], "stopping": time.monotonic()}
    _signal(entry, signal.SIGTERM)
    if _wait_gone([entry], 10):
        progress(f"{host}: {program} (pid {entry['pid']}) ignored SIGTERM, sending SIGKILL")
        _signal(entry, signal.SIGKILL)
        if _wait_gone([entry], 5):
            raise LabError(f"{host} {program} (pid {entry['pid']}) did not stop")
    timings["stopped"] = time.monotonic()
    _start_daemon(h, program)
    timings["started"] = time.monotonic()
    pid = _read_pidfile(Path(h["dir"]) / f"{program}.pid")
    _record_pid(st, pid, entry["what"], replacing=entry)
    timings["pid"] = pid
    end = timings["started"]
    if daemon == "vswitchd":
        _seed_tunnel_arp(st, _quiet, hosts=[host])
        _check_vtep_address(h)
        if st.get("api"):
            # With several controllers (lab up --ha), the first of them to be connected again.
            end = timings["connected"] = _wait_log_line(
                vswitchd_log, [f"br-int<->{target}: connected" for target in h["of_target"].split(",")],
                log_size, timeout)
    else:
        # vswitchd reconnects on its own back-off (1 s, then 2, 4, 8 when restarts come close together),
        # and OVS 3.1's userspace datapath does not forward without vswitchd's database lock.
        end = timings["vswitchd_reconnected"] = _wait_log_line(vswitchd_log, [f"{h['ovsdb']}: connected"],
                                                               log_size, timeout)
    timings["own_restart_s"] = round(end - timings["stopping"], 4)
    progress(f"{host}: {program} restarted (pid {pid}) in {timings['own_restart_s']:.3f}s")
    return timings


def _check_vtep_address(h):
    """br-phy (the tap device of the bridge's internal port) keeps the VTEP address across a vswitchd
    restart only if vswitchd reuses the device; put it back if it did not."""
    shown = _run(["ip", "-n", h["netns"], "-4", "-o", "addr", "show", "dev", "br-phy"])
    if f"{h['encap_ip']}/" not in shown:
        _run(["ip", "-n", h["netns"], "addr", "add", f"{h['encap_ip']}/24", "dev", "br-phy"])
    _run(["ip", "-n", h["netns"], "link", "set", "br-phy", "up"])


def freeze(name, host, progress=_stderr):
    """Freezes a host as a hung machine would be: SIGSTOP to its ovsdb-server and ovs-vswitchd (their
    sockets stay open, nothing answers). `thaw` resumes them; `down` thaws before it stops. Returns
    the CLOCK_MONOTONIC time the host froze."""
    st = _require(name)
    h = _lab_host(st, host)
    if h.get("frozen"):
        raise LabError(f"host {host} is already frozen (weft lab thaw {host})")
    entries = [_daemon_entry(st, host, program) for program in DAEMONS.values()]
    h["frozen"] = True
    _save(st)  # recorded first, so `down` knows to thaw what it finds stopped
    for entry in entries:
        _signal(entry, signal.SIGSTOP)
    deadline = time.monotonic() + 5  # a signal is delivered asynchronously: return once they are stopped
    while any(_proc_state(e["pid"]) != "T" for e in entries) and time.monotonic() < deadline:
        time.sleep(0.001)
    progress(f"{host}: frozen (SIGSTOP to " + ", ".join(f"{e['what']} {e['pid']}" for e in entries) + ")")
    return time.monotonic()


def thaw(name, host, progress=_stderr):
    """Resumes a frozen host's daemons (SIGCONT). Returns the CLOCK_MONOTONIC time it thawed."""
    st = _require(name)
    h = _lab_host(st, host)
    if not h.get("frozen"):
        raise LabError(f"host {host} is not frozen")
    for program in DAEMONS.values():
        _signal(_daemon_entry(st, host, program), signal.SIGCONT)
    h["frozen"] = False
    _save(st)
    progress(f"{host}: thawed")
    return time.monotonic()


# ---------------------------------------------------------------- containers and exec

def container_add(name, container, host):
    """Create an empty container namespace associated with `host`.

    Returns {"netns", "host", "host_netns", "host_dir"}: what the code attaching it to a network
    (veth into the container, other end a port of br-int in host_netns) needs.
    """
    st = _require(name)
    if not _CONTAINER_RE.fullmatch(container or ""):
        raise LabError(f"invalid container name {container!r}: use up to 32 letters, digits, '_', '.', '-'")
    if container in st["hosts"] or container in ("fabric", "outside"):
        raise LabError(f"{container} is a host or a lab namespace of lab {name}; pick another container name")
    if container in st["containers"]:
        raise LabError(f"container {container} already exists in lab {name}")
    if host not in st["hosts"]:
        raise LabError(f"no host {host} in lab {name} (hosts: {', '.join(st['hosts'])})")
    ns = f"wl-{name}-c-{container}"
    _netns_add(st, ns)
    st["containers"][container] = {"netns": ns, "host": host}
    _save(st)
    h = st["hosts"][host]
    return {"netns": ns, "host": host, "host_netns": h["netns"], "host_dir": h["dir"]}


def container_attach(name, container, network, ip=None, timeout=10.0, labels=(), named_ports=(), dns=False):
    """Attach a lab container to a network by running `weft attach` inside its host's namespace, the
    same code a real host runs (there OVS_RUNDIR points the attach at that host's own OVSDB).
    `labels` and `named_ports`: "KEY=VALUE" and "NAME=PROTO/PORT" texts, as weft attach takes them.
    With `dns`, commands run in the container (`weft lab exec`) resolve names through Weft's resolver."""
    st = _require(name)
    c = st["containers"].get(container)
    if c is None:
        raise LabError(f"no container {container} in lab {name}")
    if not st.get("api"):
        raise LabError(f"lab {name} has no controller to attach through")
    argv = [sys.executable, "-m", "weft.cli", "attach", c["netns"], "--network", network,
            "--name", container, "--timeout", str(timeout), "--json"]
    if ip:
        argv += ["--ip", ip]
    argv += [arg for label in labels for arg in ("--label", label)]
    argv += [arg for named in named_ports for arg in ("--named-port", named)]
    if dns:
        argv.append("--dns")
    cmd, cmd_env = target_cmd(name, c["host"], argv)
    result = subprocess.run(cmd, env=cmd_env, capture_output=True, text=True)
    if result.returncode:
        raise LabError(result.stderr.strip().removeprefix("weft: error: ") or f"attach of {container} failed")
    st = _require(name)
    st["containers"][container]["port"] = container
    _save(st)
    return json.loads(result.stdout)


def container_del(name, container):
    st = _require(name)
    c = st["containers"].get(container)
    if c is None:
        raise LabError(f"no container {container} in lab {name}")
    if c.get("port"):
        cmd, cmd_env = target_cmd(name, c["host"], [sys.executable, "-m", "weft.cli", "detach", c["port"]])
        result = subprocess.run(cmd, env=cmd_env, capture_output=True, text=True)
        if result.returncode and "no port named" not in result.stderr:
            raise LabError(f"detach of {container} failed: {result.stderr.strip()}")
    st = _require(name)
    st["containers"].pop(container)
    _del_container_netns(c["netns"])
    st["netns"].remove(c["netns"])
    _save(st)


def _del_container_netns(ns):
    from weft.attach import remove_resolv_conf
    if _netns_exists(ns):
        _run(["ip", "netns", "del", ns])
    remove_resolv_conf(ns)  # if `weft attach --dns` wrote one and no detach removed it


def target_cmd(name, target, argv):
    """(argv, env) that run `argv` in a lab namespace: a host (with its OVS_* set), a container or
    "fabric"."""
    st = _require(name)
    argv = [str(a) for a in argv]
    if not argv:
        raise LabError("no command given")
    if target in st["hosts"]:
        host_env = _ovs_env(st["hosts"][target]["dir"])
        if st.get("api"):
            host_env["WEFT_API"] = st["api"]  # `weft` run on the host reaches the controller
        # `python -m weft.cli` on a host runs this same copy of Weft, wherever the caller's cwd is.
        host_env["PYTHONPATH"] = source_pythonpath()
        return ["ip", "netns", "exec", st["hosts"][target]["netns"], *argv], _full_env(host_env)
    if target in st["containers"]:
        return ["ip", "netns", "exec", st["containers"][target]["netns"], *argv], dict(os.environ)
    if target == "fabric":
        return ["ip", "netns", "exec", st["fabric"]["netns"], *argv], dict(os.environ)
    if target == "outside" and st.get("external"):
        return ["ip", "netns", "exec", st["external"]["netns"], *argv], dict(os.environ)
    raise LabError(f"no host or container {target} in lab {name} (targets: "
                   f"{', '.join([*st['hosts'], *st['containers'], 'fabric'])})")


def exec(name, target, argv):  # noqa: A001 - the CLI verb
    """Replace this process with argv run in a lab namespace, as `ip netns exec` does (which execs
    too): the pid, the signals and the exit status are then the command's own, so a script that
    stops `weft lab exec ... &` by its pid stops the command."""
    exec_as(*target_cmd(name, target, argv))


def exec_as(cmd, environ):
    """Replace this process with `cmd` (argv) in `environ`; LabError if it cannot be run."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(cmd[0], cmd, environ)
    except OSError as err:
        raise LabError(f"cannot run {cmd[0]}: {err.strerror}") from None


def record(name, pid, what):
    """Records a process started outside the lab (Mininet's node shells) so `down` stops it, with
    the processes it leads (its session's group). Its command line must mention the lab dir."""
    _record_pid(_require(name), pid, what, group=True)


def forget(name, pids):
    """Drops recorded processes that have exited (see record), so the lab stays "all alive"."""
    st = _require(name)
    st["pids"] = [e for e in st["pids"] if e["pid"] not in pids or _alive(e["pid"])]
    _save(st)


def background(name, target, argv):
    """`weft lab exec --background`: argv left running in target (recorded, so `down` stops it), its
    output appended to TARGET.log in the lab dir, which is returned. A shell stays its parent, so the
    recorded command line names the lab dir (see spawn) whatever argv is."""
    if not argv:
        raise LabError("no command given (weft lab exec --background TARGET -- CMD ...)")
    target_cmd(name, target, argv)  # a target the lab does not have is refused before its log is made
    log = lab_dir(name) / f"{target}.log"
    with open(log, "ab") as out:
        spawn(name, target, ["sh", "-c", f'"$@"; exit $?  # {log}', "sh", *argv], what=f"{target}: {argv[0]}",
              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return log


def spawn(name, target, argv, what=None, runtime=False, **popen_kw):
    """Start a background process in a lab namespace and record it so `down` stops it.

    Its command line must mention a path inside the lab dir (e.g. a pid, log or capture file):
    that is how `down` verifies a recorded pid is still ours before killing it. With `runtime`, it
    runs beside the host's container runtimes (weft.labruntimes.runtime_cmd: their mount namespace,
    where /run/docker/plugins is the host's own).
    """
    st = _require(name)
    if runtime:
        from weft import labruntimes
        cmd, environ = labruntimes.runtime_cmd(name, target, argv)
    else:
        cmd, environ = target_cmd(name, target, argv)
    if not any(st["marker"] in a for a in cmd):
        raise LabError(f"a spawned command must mention a path under {st['dir']}/")
    proc = subprocess.Popen(cmd, env=environ, start_new_session=True, **popen_kw)
    # `ip netns exec` execs the command, so proc.pid is the command itself.
    _record_pid(st, proc.pid, what or f"{target}: {argv[0]}", group=True, proc=proc)
    return proc
