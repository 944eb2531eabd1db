"""weft-cni: a CNI plugin (spec 0.4.0, 1.0.0 and 1.1.0) that puts a container on a Weft network.

A runtime runs it once per operation, in the host's network namespace: CNI_COMMAND and the other
CNI_* variables in the environment, the network configuration as JSON on stdin, the result (or a
CNI error) as JSON on stdout. ADD is `weft attach` (weft.attach.attach, the same code), DEL is
`weft detach`; the Weft port records which attachment it is in its external_ids, which is how DEL,
CHECK and GC find it again:
    owner=cni, cni.network=<CNI network name>, cni.containerid=<CNI_CONTAINERID>,
    cni.ifname=<CNI_IFNAME>, container=<namespace/pod, pod or container id>.

The configuration (README "CNI and podman" has the same list):
    cniVersion   "0.4.0", "1.0.0" or "1.1.0" (STATUS and GC need 1.1.0)
    name         the CNI network's name
    type         "weft" (the executable's name in the runtime's CNI plugin path)
    network      the Weft network (default: `name`); it must exist (weft network create)
    api          the controller's API (default as for `weft`: WEFT_API, the client config, then
                 unix:/run/weft/api.sock); token_file, ca_file for a TCP (https) API
    ovsdb        this host's OVSDB (default unix:$OVS_RUNDIR/db.sock, i.e. /var/run/openvswitch)
    timeout      seconds ADD waits for the port's flows (default 10)
    ipam         optional: an IPAM plugin (host-local, static...) run from CNI_PATH; only the
                 address it returns is used. Without it Weft allocates.
    dns          optional: the result's `dns`; by default the IPAM plugin's, else Weft's resolver
                 (the network's gateway IP, search NETWORK.svc.weft NETWORK.weft), which the
                 runtime writes into the container's resolv.conf
    args         optional: `args.cni.labels` ([{"key": K, "value": V}], the CNI conventions' form)
                 become the port's labels; anything else in args is ignored
Unknown fields are refused (code 2), so a misspelt field is not silently ignored; so are `mtu` (the
Weft network's MTU applies) and `ipMasq: true` (Weft's routers do SNAT).

Error codes: the spec's (1 version, 2 unsupported field, 3 unknown container, 4 environment, 5 I/O,
6 decode, 7 configuration, 11 try again later; STATUS: 50 not ready, 51 not ready and existing
containers may have limited connectivity) and Weft's own: 100 the
controller refused the request, 101 the attach failed on this host (rolled back), 102 CHECK found
the attachment not as it should be, 999 a bug in weft-cni.

Start-up time is part of every container start (podman runs VERSION before each ADD and DEL, too),
so at the top this module imports json, os, re and sys only: VERSION costs little more than the
interpreter. Everything else, down to Weft's API client and the attach code (pyroute2, the OVSDB
client), is imported by the functions that use it.
"""
import json
import os
import re
import sys

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
OWNER = "cni"
DEFAULT_TIMEOUT = 10.0

(INCOMPATIBLE_VERSION, UNSUPPORTED_FIELD, UNKNOWN_CONTAINER, INVALID_ENV, IO_FAILURE, DECODE_FAILURE,
 INVALID_CONFIG) = range(1, 8)
TRY_AGAIN = 11
NOT_AVAILABLE, LIMITED = 50, 51
WEFT_REFUSED, ATTACH_FAILED, CHECK_FAILED = 100, 101, 102
INTERNAL = 999

# CNI's own rule for container ids and network names (libcni's utils.ValidateContainerID).
CNI_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# The CNI_ARGS keys this plugin reads; K8S_POD_INFRA_CONTAINER_ID and K8S_POD_UID come from kubelet
# with every call and are accepted (and unused) so that IgnoreUnknown is not needed for them.
KNOWN_ARGS = ("IgnoreUnknown", "IP", "MAC", "K8S_POD_NAMESPACE", "K8S_POD_NAME",
              "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")
CONFIG_FIELDS = {  # field: its JSON type(s)
    "cniVersion": str, "cniVersions": list, "name": str, "type": str, "network": str, "api": str,
    "token_file": str, "ca_file": str, "ovsdb": str, "timeout": (int, float), "ipam": dict, "dns": dict,
    "ipMasq": bool, "capabilities": dict, "runtimeConfig": dict, "args": dict, "prevResult": dict,
    "disableCheck": bool,
}


class CniError(Exception):
    """A failure reported to the runtime as a CNI error: code, a short msg, and details."""

    def __init__(self, code, msg, details=""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def as_json(self, version):
        out = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


# ---------------------------------------------------------------- parsing (pure)

def version_tuple(text):
    if not isinstance(text, str) or not re.fullmatch(r"\d+\.\d+\.\d+", text):
        raise CniError(DECODE_FAILURE, f"cniVersion {text!r} is not a version (like 1.0.0)")
    return tuple(int(part) for part in text.split("."))


def check_version(text, command=None):
    version = version_tuple(text)
    if text not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"incompatible CNI version {text}",
                       f"weft-cni supports {', '.join(SUPPORTED_VERSIONS)}")
    if command in ("STATUS", "GC") and version < (1, 1, 0):
        raise CniError(INCOMPATIBLE_VERSION, f"{command} needs cniVersion 1.1.0",
                       f"the configuration says {text}; {command} is a CNI 1.1 command")
    return text


def parse_env(environ):
    """The CNI_* parameters -> dict (command, container_id, netns, ifname, args, path)."""
    command = environ.get("CNI_COMMAND", "")
    if command not in ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"):
        raise CniError(INVALID_ENV, "CNI_COMMAND is missing" if not command else
                       f"CNI_COMMAND {command!r} is not a CNI command",
                       "expected ADD, DEL, CHECK, VERSION, STATUS or GC")
    env = {"command": command, "container_id": environ.get("CNI_CONTAINERID", ""),
           "netns": environ.get("CNI_NETNS", ""), "ifname": environ.get("CNI_IFNAME", ""),
           "path": [p for p in environ.get("CNI_PATH", "").split(os.pathsep) if p]}
    required = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
                "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
                "DEL": ("CNI_CONTAINERID", "CNI_IFNAME")}.get(command, ())
    missing = [name for name in required if not environ.get(name)]
    if missing:
        raise CniError(INVALID_ENV, f"required environment variables missing: {', '.join(missing)}",
                       f"CNI_COMMAND={command} needs {', '.join(required)}")
    if required:
        if not CNI_NAME_RE.fullmatch(env["container_id"]):
            raise CniError(INVALID_ENV, "invalid characters in CNI_CONTAINERID",
                           f"{env['container_id']!r}: a letter or digit, then letters, digits, '_', '.' or '-'")
        check_ifname(env["ifname"])
        if env["netns"] and not env["netns"].startswith("/"):
            raise CniError(INVALID_ENV, f"CNI_NETNS {env['netns']!r} is not a path",
                           "a network namespace's path, e.g. /run/netns/NAME or /proc/PID/ns/net")
        env["args"] = parse_args(environ.get("CNI_ARGS", ""))
    return env


def check_ifname(ifname):
    """CNI's rule (libcni's utils.ValidateInterfaceName): what Linux takes as an interface name."""
    if not ifname or len(ifname.encode()) > 15 or ifname in (".", "..") or re.search(r"[/:\s]", ifname):
        raise CniError(INVALID_ENV, f"CNI_IFNAME {ifname!r} is not an interface name",
                       "1-15 bytes, not '.' or '..', without '/', ':' or white space")
    return ifname


def parse_args(text):
    """CNI_ARGS ("K=V;K=V") -> dict. Unknown keys are an error unless IgnoreUnknown=1 (as libcni's
    LoadArgs has it); IP and MAC are checked here."""
    args = {}
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key or "=" in value:
            raise CniError(INVALID_ENV, f"CNI_ARGS: {pair!r} is not KEY=VALUE", f"CNI_ARGS={text}")
        args[key] = value
    ignore = args.get("IgnoreUnknown", "0").lower()
    if ignore not in ("0", "1", "true", "false"):
        raise CniError(INVALID_ENV, f"CNI_ARGS: IgnoreUnknown={args['IgnoreUnknown']} is not a boolean")
    unknown = [k for k in args if k not in KNOWN_ARGS]
    if unknown and ignore not in ("1", "true"):
        raise CniError(INVALID_ENV, f"CNI_ARGS: unknown argument {unknown[0]!r}",
                       f"weft-cni takes {', '.join(KNOWN_ARGS)} (or set IgnoreUnknown=1)")
    if "IP" in args:
        args["IP"] = _ipv4(args["IP"], "CNI_ARGS IP", INVALID_ENV)
    if "MAC" in args:
        args["MAC"] = _mac(args["MAC"], "CNI_ARGS MAC", INVALID_ENV)
    return {k: v for k, v in args.items() if k in KNOWN_ARGS}


def _ipv4(text, what, code):
    """An address, with or without a /prefix (the ips capability gives CIDRs), -> the address."""
    import ipaddress
    try:
        return str(ipaddress.IPv4Interface(text).ip)
    except ValueError:
        raise CniError(code, f"{what} {text!r} is not an IPv4 address") from None


def _mac(text, what, code):
    if not isinstance(text, str) or not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", text):
        raise CniError(code, f"{what} {text!r} is not a MAC address (like 02:00:00:00:00:01)")
    return text.lower()


def decode_config(raw):
    try:
        config = json.loads(raw)
    except ValueError as err:
        raise CniError(DECODE_FAILURE, "the network configuration on stdin is not JSON", str(err)) from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "the network configuration on stdin is not a JSON object")
    return config


def parse_config(config, command):
    """Checks the network configuration (decoded) -> dict of settings. Raises CniError (2, 7)."""
    from controller.validate import NAME_RE
    from weft.client import ApiClient, ApiError
    for field, value in config.items():
        if field.startswith("cni.dev/"):
            continue
        if field == "mtu":
            raise CniError(UNSUPPORTED_FIELD, f"unsupported field mtu: {json.dumps(value)}",
                           "the MTU is the Weft network's (weft network create --mtu)")
        if field not in CONFIG_FIELDS:
            raise CniError(UNSUPPORTED_FIELD, f"unsupported field {field}: {json.dumps(value)[:80]}",
                           f"weft-cni's fields: {', '.join(CONFIG_FIELDS)}")
        types = CONFIG_FIELDS[field]
        if not isinstance(value, types) or (isinstance(value, bool) and types != bool):
            raise CniError(INVALID_CONFIG, f"field {field} has the wrong type: {json.dumps(value)[:80]}")
    if config.get("ipMasq"):
        raise CniError(UNSUPPORTED_FIELD, "unsupported field ipMasq: true",
                       "Weft does SNAT in its routers (weft router set-gateway), not on each host")
    if "name" not in config:
        raise CniError(INVALID_CONFIG, "missing network name", "the configuration needs a `name`")
    if not CNI_NAME_RE.fullmatch(config["name"]):
        raise CniError(INVALID_CONFIG, f"invalid network name {config['name']!r}",
                       "a letter or digit, then letters, digits, '_', '.' or '-'")
    network = config.get("network", config["name"])
    if not NAME_RE.fullmatch(network):
        raise CniError(INVALID_CONFIG, f"network {network!r} is not a Weft network name",
                       "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, no '..'")
    timeout = config.get("timeout", DEFAULT_TIMEOUT)
    if not 0 < timeout <= 60:
        raise CniError(INVALID_CONFIG, f"timeout {timeout} is not between 0 and 60 seconds")
    ipam = config.get("ipam")
    if ipam is not None and (not isinstance(ipam.get("type"), str) or not ipam["type"]
                             or "/" in ipam["type"] or ipam["type"].startswith(".")):
        raise CniError(INVALID_CONFIG, f"ipam.type {json.dumps(ipam.get('type'))} does not name an IPAM plugin",
                       "the name of an executable in CNI_PATH, e.g. host-local")
    ovsdb = config.get("ovsdb")
    if ovsdb is not None and not re.fullmatch(r"(unix:/|tcp:|ssl:)\S+", ovsdb):
        raise CniError(INVALID_CONFIG, f"ovsdb {ovsdb!r} is not an OVSDB remote (unix:PATH, tcp:IP:PORT, ssl:IP:PORT)")
    runtime = config.get("runtimeConfig") or {}
    settings = {"version": config["cniVersion"], "name": config["name"], "network": network,
                "timeout": float(timeout), "ipam": ipam, "dns": config.get("dns"), "ovsdb": ovsdb,
                "prev_result": config.get("prevResult"), "ip": None, "mac": None,
                "labels": _labels(config.get("args") or {})}
    if "ips" in runtime:  # the `ips` and `mac` capabilities (CNI CONVENTIONS.md)
        ips = runtime["ips"]
        v4 = [ip for ip in ips if isinstance(ip, str) and ":" not in ip] if isinstance(ips, list) else None
        if v4 is None or len(v4) != len(ips):
            raise CniError(INVALID_CONFIG, f"runtimeConfig.ips {json.dumps(ips)[:80]} is not a list of IPv4 addresses")
        settings["ip"] = _ipv4(v4[0], "runtimeConfig.ips", INVALID_CONFIG) if v4 else None
    if "mac" in runtime:
        settings["mac"] = _mac(runtime["mac"], "runtimeConfig.mac", INVALID_CONFIG)
    if command == "GC":
        settings["valid"] = _attachments(config)
    try:
        settings["api"] = ApiClient(config.get("api"), token_file=config.get("token_file"),
                                    ca_file=config.get("ca_file"))
    except ApiError as err:
        raise CniError(INVALID_CONFIG, "the api, token_file or ca_file is not usable", err.message) from None
    return settings


def _labels(args):
    """`args.cni.labels` (CNI's CONVENTIONS.md: [{"key": K, "value": V}]) -> the port's labels. The
    conventions let a plugin ignore what it does not understand in args; labels that are there but
    malformed are refused instead: a policy would otherwise select (or miss) the container unseen."""
    from controller.validate import ApiError, labels
    cni = args.get("cni", {})
    found = cni.get("labels", []) if isinstance(cni, dict) else None
    if not isinstance(found, list) or not all(
            isinstance(item, dict) and set(item) == {"key", "value"} for item in found):
        raise CniError(INVALID_CONFIG, "args.cni.labels is not a list of {\"key\": K, \"value\": V}",
                       json.dumps(args.get("cni"))[:200])
    keys = [item["key"] for item in found]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise CniError(INVALID_CONFIG, f"args.cni.labels has the key {twice!r} twice")
    try:
        return labels({item["key"]: item["value"] for item in found}, "args.cni.labels")
    except ApiError as err:
        raise CniError(INVALID_CONFIG, "args.cni.labels: a label is not valid", err.message) from None


def _attachments(config):
    """GC's still-valid attachments -> {(containerID, ifname)}. libcni sends them as
    cni.dev/valid-attachments; the 1.1.0 spec text names them cni.dev/attachments: both are read."""
    found = config.get("cni.dev/valid-attachments", config.get("cni.dev/attachments", []))
    valid = set()
    for item in found if isinstance(found, list) else [None]:
        if not (isinstance(item, dict) and isinstance(item.get("containerID"), str)
                and isinstance(item.get("ifname"), str)):
            raise CniError(INVALID_CONFIG, "cni.dev/valid-attachments is not a list of {containerID, ifname}",
                           json.dumps(found)[:200])
        valid.add((item["containerID"], item["ifname"]))
    return valid


def port_name(container_id, ifname, args):
    """The Weft port's name: after the pod when Kubernetes arguments are there (NAMESPACE.POD, or
    POD alone: podman passes its container's name as K8S_POD_NAME), else the container id's first 12
    characters; then '-' and 8 hex digits of a hash of the container id and interface name, so that
    two attachments never share a name (a pod made again under its old name, a second interface).
    Always a valid Weft name (<= 63 characters)."""
    import hashlib
    from controller.validate import NAME_RE
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:8]
    pod, namespace = args.get("K8S_POD_NAME"), args.get("K8S_POD_NAMESPACE")
    base = f"{namespace}.{pod}" if pod and namespace else pod or container_id[:12]
    base = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.-]", "-", base))
    base = re.sub(r"^[^A-Za-z0-9]+", "", base)[:63 - len(digest) - 1] or "cni"
    name = f"{base}-{digest}"
    assert NAME_RE.fullmatch(name), name
    return name


def port_external_ids(settings, env):
    args = env["args"]
    pod, namespace = args.get("K8S_POD_NAME"), args.get("K8S_POD_NAMESPACE")
    container = f"{namespace}/{pod}" if pod and namespace else pod or env["container_id"]
    return {"owner": OWNER, "cni.network": settings["name"], "cni.containerid": env["container_id"],
            "cni.ifname": env["ifname"], "container": container[:255]}


def is_ours(port, network_name, container_id=None, ifname=None):
    ids = port.get("external_ids") or {}
    return (ids.get("owner") == OWNER and ids.get("cni.network") == network_name
            and (container_id is None or ids.get("cni.containerid") == container_id)
            and (ifname is None or ids.get("cni.ifname") == ifname))


def build_result(version, ifname, netns, port, host_if, dns=None, prev=None):
    """The ADD result for `port` (as the API describes it), in the form `version` asks for. A
    prevResult (a plugin before this one in the chain) is kept, with this attachment added to it."""
    import ipaddress
    prev = prev or {}
    interfaces = list(prev.get("interfaces") or [])
    host = {"name": host_if["name"], **({"mac": host_if["mac"]} if host_if.get("mac") else {})}
    sandbox = {"name": ifname, "mac": port["mac"], "sandbox": netns}
    if version >= "1.1.0":  # (the supported versions compare correctly as strings)
        host["mtu"] = sandbox["mtu"] = port["mtu"]
    interfaces += [host, sandbox]
    prefix = ipaddress.IPv4Network(port["cidr"]).prefixlen
    ip = {"address": f"{port['ip']}/{prefix}", "gateway": port["gateway"], "interface": len(interfaces) - 1}
    if version < "1.0.0":
        ip["version"] = "4"
    result = {"cniVersion": version, "interfaces": interfaces, "ips": [*(prev.get("ips") or []), ip],
              "routes": [*(prev.get("routes") or []), {"dst": "0.0.0.0/0", "gw": port["gateway"]}]}
    dns = dns or prev.get("dns")
    if dns:
        result["dns"] = dns
    return result


def conflist(network, name=None, api=None, version="1.0.0", ovsdb=None, token_file=None, ca_file=None):
    """A network configuration list (/etc/cni/net.d/NAME.conflist) that puts containers on Weft
    network `network`. 1.0.0 by default: the newest version podman 4 and containerd 1.x take."""
    plugin = {"type": "weft", "network": network}
    plugin.update({k: v for k, v in (("api", api), ("token_file", token_file), ("ca_file", ca_file),
                                     ("ovsdb", ovsdb)) if v})
    return {"cniVersion": version, "name": name or network, "plugins": [plugin]}


def sync_conflists(directory, networks, **plugin):
    """Makes `directory` (a runtime's network_config_dir) hold one NETWORK.conflist per Weft network
    in `networks` (names), each with `plugin`'s fields (api, ovsdb...), and no other conflist of
    Weft's: a conflist whose plugin is not Weft's is left alone. Returns the names written."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for network in networks:
        path = os.path.join(directory, f"{network}.conflist")
        text = json.dumps(conflist(network, **plugin), indent=2) + "\n"
        try:
            with open(path) as f:
                if f.read() == text:
                    continue
        except FileNotFoundError:
            pass
        with open(f"{path}.tmp", "w") as f:
            f.write(text)
        os.replace(f"{path}.tmp", path)  # a runtime never reads half a file
        written.append(network)
    for entry in os.listdir(directory):
        if entry.endswith(".conflist") and entry[:-len(".conflist")] not in networks:
            path = os.path.join(directory, entry)
            try:
                with open(path) as f:
                    plugins = json.load(f).get("plugins") or [{}]
            except (OSError, ValueError, AttributeError):
                continue
            if plugins[0].get("type") == "weft":
                os.unlink(path)
    return written


def write_plugin(path, source=None, python=sys.executable):
    """Writes an executable `path` that runs weft-cni with this interpreter (its venv) and, given a
    source tree, that tree's weft (a lab's plugin, as `python -m weft.cli` on a lab host). A runtime
    runs it by the name in the configuration's `type`, so `path` ends in /weft."""
    lines = [f"#!{python}", "# weft-cni (written by weft.cni.write_plugin)", "import sys"]
    if source:
        lines.append(f"sys.path.insert(0, {str(source)!r})")
    lines += ["from weft.cni import main", "sys.exit(main())", ""]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)  # a runtime never runs a half-written plugin


# ---------------------------------------------------------------- talking to the world

def _api_details(err):
    """The API's message; for a refused token, which field of the configuration gives one."""
    return err.message + ("; the configuration's token_file gives the plugin a token" if err.status == 401 else "")


def api_error(err, settings, what):
    """An ApiError -> the CNI error a runtime can act on."""
    if err.status is None or err.status >= 500:  # unreachable, or 503 while the NB loads
        return CniError(TRY_AGAIN, f"the Weft controller is not available ({what})", _api_details(err))
    if err.status == 404 and err.message.startswith("network:"):
        return CniError(INVALID_CONFIG, f"no Weft network named {settings['network']!r}",
                        f"{err.message}; create it with `weft network create {settings['network']} --cidr ...`")
    return CniError(WEFT_REFUSED, f"the Weft controller refused to {what}", _api_details(err))


def network_ports(settings, env=None):
    """This CNI network's Weft ports (all of them, or those of env's attachment)."""
    import urllib.parse
    from weft.client import ApiError, path as api_path
    query = "?network=" + urllib.parse.quote(settings["network"], safe="")
    try:
        ports = settings["api"].get(api_path("ports") + query)
    except ApiError as err:
        raise api_error(err, settings, "list the network's ports") from None
    return [p for p in ports if is_ours(p, settings["name"], *((env["container_id"], env["ifname"]) if env else ()))]


def ovsdb_remote(settings):
    from ovsdb import rpc
    return settings["ovsdb"] or rpc.default_remote()


def delegate(command, settings, env, raw, environ):
    """Runs the IPAM plugin as the spec's delegation says: found in CNI_PATH, the same environment
    (CNI_COMMAND set to `command`) and the same configuration on stdin, its stderr ours. Returns its
    result (None when it printed nothing); its error becomes ours."""
    import subprocess
    kind = settings["ipam"]["type"]
    if not env["path"]:
        raise CniError(INVALID_ENV, "CNI_PATH is missing", f"it is needed to find the IPAM plugin {kind!r}")
    plugin = next((os.path.join(d, kind) for d in env["path"]
                   if os.access(os.path.join(d, kind), os.X_OK)), None)
    if plugin is None:
        raise CniError(INVALID_CONFIG, f"IPAM plugin {kind!r} not found",
                       f"no executable {kind} in CNI_PATH ({os.pathsep.join(env['path'])})")
    try:
        proc = subprocess.run([plugin], input=raw, env={**environ, "CNI_COMMAND": command},
                              stdout=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CniError(IO_FAILURE, f"cannot run the IPAM plugin {plugin}", str(err)) from None
    try:
        answer = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        answer = {"msg": proc.stdout.decode(errors="replace").strip()[:200]}
    if proc.returncode:
        answer = answer if isinstance(answer, dict) else {}
        raise CniError(answer.get("code") if isinstance(answer.get("code"), int) else INTERNAL,
                       f"IPAM plugin {kind}: {answer.get('msg') or f'exited {proc.returncode}'}",
                       str(answer.get("details") or ""))
    return answer


def _link_mac(device):
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=device)
        return ipr.get_links(found[0])[0].get_attr("IFLA_ADDRESS") if found else None


def _same_netns(path):
    own, other = os.stat("/proc/self/ns/net"), os.stat(path)
    return (own.st_dev, own.st_ino) == (other.st_dev, other.st_ino)


def _check_netns(env):
    if not os.path.exists(env["netns"]):
        raise CniError(UNKNOWN_CONTAINER, f"the container's network namespace {env['netns']} does not exist")
    if _same_netns(env["netns"]):
        raise CniError(INVALID_ENV, f"CNI_NETNS {env['netns']} is the plugin's own network namespace",
                       "the runtime must run the plugin in the host's namespace and name the container's")


# ---------------------------------------------------------------- the commands

def cmd_add(settings, env, raw, environ):
    from weft.attach import AttachError, PortNotUp, attach, host_device
    from weft.client import ApiError
    _check_netns(env)
    ip = env["args"].get("IP") or settings["ip"]
    mac = env["args"].get("MAC") or settings["mac"]
    ipam = None
    if settings["ipam"]:
        ipam = delegate("ADD", settings, env, raw, environ) or {}
        found = [i.get("address") for i in ipam.get("ips") or [] if ":" not in str(i.get("address"))]
        if not found:
            _undo_ipam(settings, env, raw, environ)
            raise CniError(INVALID_CONFIG, f"IPAM plugin {settings['ipam']['type']} gave no IPv4 address",
                           json.dumps(ipam)[:200])
        ip = _ipv4(found[0], "the IPAM plugin's address", INVALID_CONFIG)
    name = port_name(env["container_id"], env["ifname"], env["args"])
    try:
        port = attach(env["netns"], settings["network"], ip=ip, name=name, ifname=env["ifname"],
                      ovsdb=ovsdb_remote(settings), api=settings["api"], timeout=settings["timeout"],
                      mac=mac, external_ids=port_external_ids(settings, env), labels=settings["labels"])
    except (ApiError, AttachError) as err:
        if ipam is not None:
            _undo_ipam(settings, env, raw, environ)
        if isinstance(err, ApiError):
            raise api_error(err, settings, f"create port {name}") from None
        code = TRY_AGAIN if isinstance(err, PortNotUp) else ATTACH_FAILED
        raise CniError(code, f"attaching {env['ifname']} of {env['netns']} to {settings['network']} failed",
                       str(err)) from None
    device = host_device(name)
    return build_result(settings["version"], env["ifname"], env["netns"], port,
                        {"name": device, "mac": _link_mac(device)},
                        settings["dns"] or ipam and ipam.get("dns") or port.get("dns"), settings["prev_result"])


def _undo_ipam(settings, env, raw, environ):
    try:  # the spec: a delegated ADD that is not used is undone with DEL
        delegate("DEL", settings, env, raw, environ)
    except CniError as err:
        print(f"weft-cni: releasing the IPAM address failed: {err.msg} {err.details}", file=sys.stderr)


def cmd_del(settings, env, raw, environ):
    """Idempotent: a port, netns or veth already gone is success. The port is found by its
    external_ids; with none left in the NB, what this attachment would have plugged on this host
    (its port name is known) is removed if it is still there."""
    from weft.attach import AttachError, detach, remove_local
    from weft.client import ApiError, path as api_path
    ovsdb = ovsdb_remote(settings)
    ports = network_ports(settings, env)
    try:
        for port in ports:
            try:
                detach(port["name"], ovsdb=ovsdb, api=settings["api"])
            except ApiError as err:
                if err.status != 404:
                    raise
        if not ports:
            name = port_name(env["container_id"], env["ifname"], env["args"])
            try:
                settings["api"].get(api_path("ports", name))
            except ApiError as err:
                if err.status != 404:
                    raise
                remove_local(name, ovsdb)  # no NB port of that name: what is left here is ours
    except ApiError as err:
        raise api_error(err, settings, "delete the port") from None
    except AttachError as err:
        raise CniError(ATTACH_FAILED, "removing the attachment on this host failed", str(err)) from None
    if settings["ipam"]:
        delegate("DEL", settings, env, raw, environ)


def cmd_check(settings, env, raw, environ):
    import ipaddress
    from ovsdb import rpc, vswitch
    from weft.attach import host_device
    from weft.client import ApiError, path as api_path
    prev = settings["prev_result"]
    if not prev:
        raise CniError(INVALID_CONFIG, "CHECK needs prevResult", "the runtime passes the ADD's result as prevResult")
    ports = network_ports(settings, env)
    if not ports:
        raise CniError(CHECK_FAILED, f"no Weft port for container {env['container_id']} {env['ifname']}",
                       f"none of network {settings['network']}'s ports has this attachment's external_ids")
    name = ports[0]["name"]
    try:
        port = settings["api"].get(api_path("ports", name) + f"?wait_up={settings['timeout']:g}")
    except ApiError as err:
        raise api_error(err, settings, f"read port {name}") from None
    problems = [] if port["up"] else [f"port {name} is not up (its flows are not installed everywhere)"]
    expected = [i for i in prev.get("interfaces") or [] if i.get("sandbox") and i.get("name") == env["ifname"]]
    prefix = ipaddress.IPv4Network(port["cidr"]).prefixlen
    address = f"{port['ip']}/{prefix}"
    if not expected or expected[0].get("mac") != port["mac"]:
        problems.append(f"prevResult's {env['ifname']} is not port {name}'s MAC {port['mac']}")
    if address not in [i.get("address") for i in prev.get("ips") or []]:
        problems.append(f"prevResult's ips do not have port {name}'s address {address}")
    if not os.path.exists(env["netns"]):
        raise CniError(UNKNOWN_CONTAINER, f"the container's network namespace {env['netns']} does not exist")
    problems += _check_interface(env["netns"], env["ifname"], port, prefix)
    device = host_device(name)
    try:
        plugged = vswitch.plugged_ports(ovsdb_remote(settings)).get(name)
    except rpc.OvsdbError as err:
        raise CniError(TRY_AGAIN, "cannot read this host's OVSDB", str(err)) from None
    if not plugged or plugged[0] != device or not plugged[1] or plugged[1] < 0:
        problems.append(f"{device} is not a working port of br-int for {name} on this host")
    if problems:
        raise CniError(CHECK_FAILED, f"the attachment of {env['ifname']} is not as it should be", "; ".join(problems))
    if settings["ipam"]:
        delegate("CHECK", settings, env, raw, environ)


def _check_interface(netns_path, ifname, port, prefix):
    """What is wrong with the container's interface: present, up, the port's MAC and address, a
    default route via the gateway."""
    from pyroute2 import IPRoute
    from weft import netns
    with netns.in_netns(netns_path), IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return [f"the container has no interface {ifname}"]
        link, problems = ipr.get_links(found[0])[0], []
        if link.get_attr("IFLA_ADDRESS") != port["mac"]:
            problems.append(f"{ifname} has MAC {link.get_attr('IFLA_ADDRESS')}, not {port['mac']}")
        if not link["flags"] & 1:  # IFF_UP
            problems.append(f"{ifname} is down")
        addrs = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=link["index"], family=2)]
        if (port["ip"], prefix) not in addrs:
            problems.append(f"{ifname} does not have {port['ip']}/{prefix}")
        routes = [r.get_attr("RTA_GATEWAY") for r in ipr.get_routes(family=2, dst_len=0, table=254)
                  if r.get_attr("RTA_OIF") == link["index"]]
        if port["gateway"] not in routes:
            problems.append(f"no default route via {port['gateway']} on {ifname}")
    return problems


def cmd_status(settings, env, raw, environ):
    """Ready when the controller answers with its NB connected (else 50), this host has joined
    (br-int is Weft's; else 50) and br-int is connected to the controller (OVSDB's is_connected,
    which vswitchd refreshes every few seconds; else 51)."""
    from ovsdb import rpc, vswitch
    from weft.client import ApiError
    try:
        status = settings["api"].get("/v1/status")
    except ApiError as err:
        raise CniError(NOT_AVAILABLE, "the Weft controller is not available", _api_details(err)) from None
    if not status.get("nb", {}).get("connected"):
        raise CniError(NOT_AVAILABLE, "the Weft controller has no NB connection",
                       str(status.get("nb", {}).get("error") or status.get("nb")))
    remote = ovsdb_remote(settings)
    try:
        bridge, controllers = rpc.transact(remote, vswitch.DATABASE, [
            {"op": "select", "table": "Bridge", "where": [["name", "==", vswitch.INTEGRATION_BRIDGE]],
             "columns": ["external_ids", "controller"]},
            {"op": "select", "table": "Controller", "where": [], "columns": ["_uuid", "is_connected"]}])
    except rpc.OvsdbError as err:
        raise CniError(NOT_AVAILABLE, "this host's Open vSwitch is not available", str(err)) from None
    rows = bridge["rows"]
    if not rows or vswitch.OWNER_KEY not in dict(rows[0]["external_ids"][1]):
        raise CniError(NOT_AVAILABLE, "this host has not joined Weft",
                       f"{remote} has no br-int of Weft's (weft host join)")
    ours = rows[0]["controller"]
    ours = {ours[1]} if ours[0] == "uuid" else {u[1] for u in ours[1]}
    if not any(c["is_connected"] is True for c in controllers["rows"] if c["_uuid"][1] in ours):
        # Its flows stay (fail_mode secure), but it learns no new port, here or elsewhere.
        raise CniError(LIMITED, "this host's br-int is not connected to the Weft controller",
                       f"existing containers reach only the ports they knew of; see `weft status` and the "
                       f"vswitchd log of {remote}")
    if settings["ipam"]:
        delegate("STATUS", settings, env, raw, environ)


def cmd_gc(settings, env, raw, environ):
    """Removes this network's CNI ports plugged on this host whose attachment is not in the valid
    list. Ports plugged on other hosts are theirs to collect (each host's runtime knows only its own
    attachments); a port plugged nowhere is left alone too (another host may be adding it)."""
    from ovsdb import rpc, vswitch
    from weft.attach import AttachError, detach
    from weft.client import ApiError
    remote = ovsdb_remote(settings)
    try:
        plugged = vswitch.plugged_ports(remote)
    except rpc.OvsdbError as err:
        raise CniError(TRY_AGAIN, "cannot read this host's OVSDB", str(err)) from None
    errors = []
    for port in network_ports(settings):
        ids = port["external_ids"]
        if port["name"] in plugged and (ids.get("cni.containerid"), ids.get("cni.ifname")) not in settings["valid"]:
            try:
                detach(port["name"], ovsdb=remote, api=settings["api"])
                print(f"weft-cni: GC removed port {port['name']} ({ids.get('container')})", file=sys.stderr)
            except (ApiError, AttachError) as err:
                if getattr(err, "status", None) != 404:
                    errors.append(f"{port['name']}: {getattr(err, 'message', err)}")
    if settings["ipam"]:
        try:
            delegate("GC", settings, env, raw, environ)
        except CniError as err:
            errors.append(f"{err.msg} {err.details}".strip())
    if errors:
        raise CniError(TRY_AGAIN, f"GC could not remove {len(errors)} stale resource(s)", "; ".join(errors))


COMMANDS = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc}


def run(environ, raw):
    """One plugin call -> (exit status, JSON value to print or None)."""
    version = LATEST
    try:
        try:  # the error's cniVersion is the configuration's, if it has one
            guess = json.loads(raw).get("cniVersion")
            version = guess if guess in SUPPORTED_VERSIONS else version
        except (ValueError, AttributeError):
            pass
        env = parse_env(environ)
        if env["command"] == "VERSION":
            asked = decode_config(raw).get("cniVersion", LATEST) if raw.strip() else LATEST
            return 0, {"cniVersion": asked if isinstance(asked, str) else LATEST,
                       "supportedVersions": list(SUPPORTED_VERSIONS)}
        config = decode_config(raw)
        if "cniVersion" not in config:
            raise CniError(INVALID_CONFIG, "missing cniVersion", "the configuration needs a `cniVersion`")
        check_version(config["cniVersion"], env["command"])
        settings = parse_config(config, env["command"])
        return 0, COMMANDS[env["command"]](settings, env, raw, environ)
    except CniError as err:
        return 1, err.as_json(version)
    except Exception as err:  # noqa: BLE001 - the runtime gets a CNI error, never a traceback
        if environ.get("WEFT_DEBUG"):
            import traceback
            traceback.print_exception(err)
        return 1, CniError(INTERNAL, "internal error in weft-cni", f"{type(err).__name__}: {err}").as_json(version)


def _lean_pyroute2():
    """pyroute2's package __init__ imports all of pyroute2 (conntrack, ipdb, ndb, nftables...), a
    third of an ADD's time; the attach code uses only IPRoute (and pyroute2.netlink). A bare package
    module stands in for that __init__ in this short-lived process and gives IPRoute on first use."""
    if "pyroute2" in sys.modules:
        return
    from importlib.machinery import PathFinder
    spec = PathFinder.find_spec("pyroute2")
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: the commands that need it fail as they would have
    package = type(sys)("pyroute2")
    package.__spec__, package.__file__ = spec, spec.origin
    package.__path__ = list(spec.submodule_search_locations)

    def lazy(name):
        if name == "IPRoute":
            from pyroute2.iproute import IPRoute
            return IPRoute
        raise AttributeError(f"module 'pyroute2' has no attribute {name!r} (weft-cni loads IPRoute only)")
    package.__getattr__ = lazy
    sys.modules["pyroute2"] = package


def main():
    # As in `weft`: the `ovs` library would import eventlet (Ryu's, in this venv) if it could.
    sys.modules.setdefault("eventlet", None)
    _lean_pyroute2()
    try:
        raw = sys.stdin.buffer.read()
    except OSError as err:
        print(json.dumps(CniError(IO_FAILURE, "cannot read the configuration from stdin", str(err))
                         .as_json(LATEST)))
        return 1
    status, out = run(os.environ, raw)
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
