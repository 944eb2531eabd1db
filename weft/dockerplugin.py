"""`weft docker-plugin`: a libnetwork remote network driver and IPAM driver backed by Weft.

dockerd calls it over a unix socket in /run/docker/plugins with POSTs of JSON; each answer is JSON,
and a failure is {"Err": "message"} ({"Error": ...} from the IPAM driver), which Docker shows its user. The order dockerd 20.10 calls
in (seen on the wire; the README's Docker section says more):

  network create:  [IPAM RequestPool, RequestAddress(gateway)], CreateNetwork
  docker run:      [IPAM RequestAddress], CreateEndpoint, Join, ProgramExternalConnectivity,
                   EndpointOperInfo
  removal:         RevokeExternalConnectivity, Leave, DeleteEndpoint, [IPAM ReleaseAddress]
  network rm:      [IPAM ReleaseAddress(gateway), ReleasePool], DeleteNetwork

Every Docker endpoint is a Weft port, named from the endpoint id (with the weft IPAM driver, a
random name: that port is made at RequestAddress, before the endpoint has an id), with Weft's MAC,
and marked with external_ids: owner=docker, docker.network, docker.endpoint, docker.host (the
plugin's own id, kept in its state: the ports it answers for) and container (once Docker names it).

Why an IPAM driver: Docker's default IPAM allocates per daemon, so two hosts' dockerds both hand out
10.50.0.2 on one Weft network. With `--ipam-driver weft`, RequestAddress creates the Weft port at
once (the NB's port create is the atomic step across hosts) and CreateEndpoint takes that port over.

What is kept on disk (--state-dir): the IPAM pools, the networks this dockerd made through the
plugin, and the `docker network rm`s not yet told to Weft (the controller was down). A Weft network
the plugin made records each Docker network using it, on every host (external_ids
docker.network.<id>), and goes with the last. Docker never tells an IPAM driver which network a pool
is for, nor a network driver its network's name; both are learnt later and must survive a plugin
restart.
"""
import errno
import http.client
import http.server
import ipaddress
import json
import os
import secrets
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
import traceback
import urllib.parse

from controller import validate
from controller.validate import NAME_RE, NAME_RULE
from weft.client import ApiError, UnixHTTPConnection, path as api_path
from weft.errors import WeftError

DEFAULT_SOCKET = "/run/docker/plugins/weft.sock"
DEFAULT_DOCKER = "unix:///run/docker.sock"
DEFAULT_STATE_DIR = "/var/lib/weft/docker-plugin"
CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
ADDRESS_SPACE = "weft"          # what GetDefaultAddressSpaces answers: marks a network on weft IPAM
GATEWAY_REQUEST = "com.docker.network.gateway"
GENERIC = "com.docker.network.generic"
MTU_OPTION = "com.docker.network.driver.mtu"
OPTIONS = ("weft.network", "weft.vni", MTU_OPTION)
LABEL_PREFIX = "weft.label."            # -o / driver-opt weft.label.KEY=VALUE: a label
NAMED_PORT_PREFIX = "weft.named-port."  # driver-opt weft.named-port.NAME=PROTO/PORT: a named port
PORT_PREFIX = "docker-"
USER_PREFIX = "docker.network."   # a Weft network's external_ids key for each Docker network using it
UP_TIMEOUT = 10.0               # seconds Join waits for the port's flows
NAME_WAIT = 10.0                # seconds to wait for dockerd to store a network it just created
MISSING = object()


class PluginError(Exception):
    """A call refused with a message for the Docker user."""


def log(message):
    print(f"weft docker-plugin: {message}", file=sys.stderr, flush=True)


def port_name(endpoint_id):
    """The Weft port of a Docker endpoint: 48 bits of its id, as Docker's short ids."""
    return PORT_PREFIX + endpoint_id[:12]


def peer_device(name):
    """The container end of the port's veth until Docker moves it (and renames it eth0)."""
    from weft.attach import host_device
    return "wt" + host_device(name)[2:]


class Docker:
    """dockerd's own API, for what the driver protocol leaves out (network and container names)."""

    def __init__(self, url):
        if not url.startswith("unix://") or len(url) <= len("unix://"):
            raise PluginError(f"--docker {url!r}: only unix:///PATH is supported (dockerd's socket)")
        self.url, self.path = url, url[len("unix://"):]

    def get(self, path, timeout=10.0):
        conn = UnixHTTPConnection(self.path, timeout)
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as err:
            raise PluginError(f"cannot reach dockerd at {self.url}: {err.strerror or err}") from None
        finally:
            conn.close()
        if resp.status == 404:
            return None
        if resp.status >= 400:
            raise PluginError(f"dockerd at {self.url} answered {resp.status} to GET {path}: {raw[:200]!r}")
        return json.loads(raw)

    def network(self, network_id):
        return self.get("/networks/" + urllib.parse.quote(network_id, safe=""))

    def networks_of(self, driver):
        query = urllib.parse.quote(json.dumps({"driver": [driver]}))
        return self.get(f"/networks?filters={query}") or []

    def serving(self, on_up):
        """Calls on_up() once dockerd answers, then blocks until dockerd stops: a stream of its daemon
        events (rare ones), which dockerd ends when it stops."""
        query = urllib.parse.quote(json.dumps({"type": ["daemon"]}))
        conn = UnixHTTPConnection(self.path, 10.0)
        try:
            conn.request("GET", f"/events?filters={query}", headers={"Accept": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise PluginError(f"dockerd at {self.url} answered {resp.status} to GET /events")
            conn.sock.settimeout(None)
            on_up()
            while resp.read(4096):
                pass
        except http.client.IncompleteRead:
            pass  # dockerd stopped mid-stream: what is awaited
        except (OSError, http.client.HTTPException) as err:
            raise PluginError(f"cannot reach dockerd at {self.url}: {getattr(err, 'strerror', None) or err}") from None
        finally:
            conn.close()


class State:
    """The pools and networks, in one JSON file written whole (write-then-rename) on each change."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "state.json") if directory else None
        self.pools, self.networks, self.host_id = {}, {}, None
        self.released = {}  # Docker network id -> its Weft network: left, not yet told to Weft
        if self.path:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            try:
                with open(self.path) as f:
                    saved = json.load(f)
                self.pools, self.networks = saved.get("pools", {}), saved.get("networks", {})
                self.released = saved.get("released", {})
                self.host_id = saved.get("host_id")
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as err:
                raise PluginError(f"cannot read the plugin's state {self.path}: {err}; move it away to "
                                  "start afresh (then recreate the Docker networks on weft)") from None
        if not self.host_id:
            # Marks the ports this plugin answers for. Not dockerd's ID: every dockerd on a machine
            # shares it (from /etc/docker/key.json), and not the hostname: network namespaces share it.
            self.host_id = f"{socket.gethostname()}-{secrets.token_hex(6)}"
            self.save()

    def save(self):
        if self.path:
            tmp = self.path + ".tmp"
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                json.dump({"host_id": self.host_id, "pools": self.pools, "networks": self.networks,
                           "released": self.released}, f,
                          indent=1, sort_keys=True)
            os.replace(tmp, self.path)


class Plugin:
    """The driver's calls, by their protocol name, each taking the decoded body."""

    def __init__(self, api, docker=DEFAULT_DOCKER, ovsdb=None, state_dir=DEFAULT_STATE_DIR, driver="weft"):
        from ovsdb import rpc
        self.api, self.docker, self.ovsdb = api, Docker(docker), ovsdb or rpc.default_remote()
        self.driver = driver                    # the name Docker knows it by: its socket's
        self.state = State(state_dir)
        self.lock = threading.RLock()           # guards the state and the maps below
        self.pool_free = threading.Condition(self.lock)
        self.endpoints = {}                     # endpoint id -> port name (this process's cache)
        self.addresses = {}                     # (pool id, ip) -> port name, or None once deleted
        # Ports this process is making -> None, or when dockerd was first seen to show their endpoint:
        # reconcile leaves them alone until a view of dockerd taken after that time says they are gone.
        self.making = {}
        self._network_locks = {}
        self._reconcile_wanted = threading.Event()

    def call(self, name, body):
        handler = self.HANDLERS.get(name)
        if handler is None:
            raise PluginError(f"weft does not implement {name}")
        return handler(self, body if isinstance(body, dict) else {})

    # --- plugin and capabilities -----------------------------------------------------------------------
    def activate(self, body):
        # dockerd activates its plugins when it (re)starts: the moment to reconcile with what it knows.
        self.reconcile_soon()
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    def capabilities(self, body):
        # local: each dockerd keeps its own view of the network; Weft is what joins them.
        return {"Scope": "local", "ConnectivityScope": "global"}

    def ipam_capabilities(self, body):
        # No MAC at RequestAddress: Docker's would be random, Weft's is the same for the same address
        # (peers' ARP caches stay right when an address is handed out again); CreateEndpoint answers it.
        # No replay: pools and addresses are kept by the plugin and by Weft across dockerd restarts.
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    def address_spaces(self, body):
        return {"LocalDefaultAddressSpace": ADDRESS_SPACE, "GlobalDefaultAddressSpace": ADDRESS_SPACE}

    # --- IPAM ---------------------------------------------------------------------------------------------
    def request_pool(self, body):
        if body.get("V6"):
            raise PluginError("Weft networks are IPv4 only: create the network without --ipv6")
        pool = body.get("Pool") or ""
        if not pool:
            raise PluginError("--ipam-driver weft needs --subnet: the Weft network's CIDR (e.g. --subnet "
                              "10.50.0.0/24, the same on every host)")
        if body.get("SubPool"):
            raise PluginError("--ip-range does not apply with --ipam-driver weft: Weft hands out addresses "
                              "from the whole subnet, across hosts (leave --ip-range out, or use Docker's "
                              "default IPAM)")
        try:
            net = ipaddress.IPv4Network(pool)
        except ValueError:
            raise PluginError(f"--subnet {pool} is not an IPv4 network in CIDR form (like 10.50.0.0/24)") from None
        if body.get("Options"):
            raise PluginError(f"the weft IPAM driver takes no --ipam-opt (given: {', '.join(sorted(body['Options']))})")
        with self.lock:
            # Docker tells the IPAM driver neither the network nor its options: a pool is matched to
            # its network at CreateNetwork by subnet and gateway. One unmatched pool per subnet at a
            # time keeps two concurrent `docker network create`s from being matched crosswise.
            deadline = time.monotonic() + NAME_WAIT
            while any(p["pool"] == str(net) and p.get("network") is None for p in self.state.pools.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break  # an abandoned one (its network went to another driver): no longer waited for
                self.pool_free.wait(left)
            pool_id = f"weft-{net}-{secrets.token_hex(6)}"
            self.state.pools[pool_id] = {"pool": str(net), "gateway": None, "network": None}
            self.state.save()
        return {"PoolID": pool_id, "Pool": str(net), "Data": {}}

    def release_pool(self, body):
        with self.lock:
            if self.state.pools.pop(body.get("PoolID"), None) is not None:
                self.state.save()
                self.pool_free.notify_all()
        return {}

    def request_address(self, body):
        pool_id = body.get("PoolID")
        options = body.get("Options") or {}
        with self.lock:
            pool = self.state.pools.get(pool_id)
            if pool is None:
                raise PluginError(f"the weft IPAM driver has no pool {pool_id} (was its state lost? recreate "
                                  "the Docker network)")
            net = ipaddress.IPv4Network(pool["pool"])
            if options.get("RequestAddressType") == GATEWAY_REQUEST:
                gateway = _address_in(body.get("Address") or str(net.network_address + 1), net, "--gateway")
                pool["gateway"] = gateway
                self.state.save()
                return {"Address": f"{gateway}/{net.prefixlen}", "Data": {}}
            network_id = pool.get("network")
        if network_id is None:
            raise PluginError("the weft IPAM driver hands out addresses on weft networks only (-d weft), "
                              "and takes no --aux-address")
        record = self._network(network_id)
        ip = _address_in(body["Address"], net, "--ip") if body.get("Address") else None
        name = PORT_PREFIX + secrets.token_hex(6)  # the endpoint has no id yet
        ids = {"owner": "docker", "docker.network": network_id, "docker.host": self.state.host_id,
               "docker.pool": pool_id}
        port = self._create_port(network_id, record, name, ip, None, ids)
        with self.lock:
            self.addresses[(pool_id, port["ip"])] = name
        return {"Address": f"{port['ip']}/{net.prefixlen}", "Data": {}}

    def release_address(self, body):
        pool_id, ip = body.get("PoolID"), body.get("Address")
        with self.lock:
            pool = self.state.pools.get(pool_id)
            name = self.addresses.pop((pool_id, ip), MISSING)
        if name is None or pool is None or ip == pool.get("gateway"):
            return {}  # deleted with its endpoint already, or the gateway (not a port)
        if name is MISSING:  # reserved before this plugin started: find it
            record = self.state.networks.get(pool.get("network") or "", {})
            name = next((p["name"] for p in self._ports(record.get("weft"))
                         if p["ip"] == ip and p["external_ids"].get("docker.pool") == pool_id), None)
        if name:
            self._remove_port(name)
        return {}

    # --- networks --------------------------------------------------------------------------------------
    def create_network(self, body):
        network_id = body.get("NetworkID") or ""
        options = body.get("Options") or {}
        generic = options.get(GENERIC) or {}
        unknown = sorted(k for k in generic if k not in OPTIONS and not k.startswith(LABEL_PREFIX))
        if unknown:
            raise PluginError(f"the weft driver has no option {', '.join(unknown)}: it takes -o weft.network=NAME "
                              f"(the Weft network, default the Docker network's name), -o weft.vni=N, -o "
                              f"{MTU_OPTION}=N and -o {LABEL_PREFIX}KEY=VALUE (a label of the Weft network)")
        labels, _ = _maps(generic, "-o")
        if options.get("com.docker.network.enable_ipv6") or body.get("IPv6Data"):
            raise PluginError("Weft networks are IPv4 only: create the network without --ipv6")
        ipv4 = body.get("IPv4Data") or []
        if len(ipv4) != 1:
            raise PluginError(f"a Weft network has one subnet; {len(ipv4)} were given (one --subnet)")
        pool, gateway = ipv4[0].get("Pool", ""), (ipv4[0].get("Gateway") or "").split("/")[0]
        net = ipaddress.IPv4Network(pool)
        if net.prefixlen > 29:
            raise PluginError(f"--subnet {pool} leaves too few addresses: Weft takes /29 or larger")
        if not gateway:
            raise PluginError("the network has no gateway; give --gateway")
        record = {"pool": str(net), "gateway": gateway, "weft": None, "explicit": False, "created": time.time(),
                  "ipam": ipv4[0].get("AddressSpace") == ADDRESS_SPACE,
                  "internal": bool(options.get("com.docker.network.internal")), "labels": labels}
        if "weft.network" in generic:
            record["weft"], record["explicit"] = _weft_name(generic["weft.network"], "-o weft.network"), True
        if "weft.vni" in generic:
            record["vni"] = _number(generic["weft.vni"], "-o weft.vni", 1, 2**24 - 1)
        if MTU_OPTION in generic:
            record["mtu"] = _number(generic[MTU_OPTION], f"-o {MTU_OPTION}", 576, 65535)
        pool_id = None
        if record["ipam"]:
            with self.lock:
                pool_id = next((i for i, p in sorted(self.state.pools.items()) if p["pool"] == str(net)
                                and p.get("network") is None and p.get("gateway") == gateway), None)
            if pool_id is None:
                raise PluginError(f"the weft IPAM driver has no pool for {net} (was the plugin restarted "
                                  "during `docker network create`? try again)")
        if record["explicit"]:
            self._ensure_weft_network(network_id, record)  # errors go to `docker network create`
            record["ready"] = True
        with self.lock:
            if pool_id:
                self.state.pools[pool_id]["network"] = network_id
                self.pool_free.notify_all()
            self.state.networks[network_id] = record
            self.state.save()
        if not record["explicit"]:
            # dockerd stores the network, and so its name, only once this call has answered.
            threading.Thread(target=self._name_later, args=(network_id,), daemon=True).start()
        return {}

    def delete_network(self, body):
        network_id = body.get("NetworkID") or ""
        with self.lock:
            record = self.state.networks.pop(network_id, None)
            if record and record.get("weft"):
                self.state.released[network_id] = record["weft"]
            self.state.save()
        if record and record.get("weft"):
            try:
                self._release(network_id, record["weft"])
            except ApiError as err:
                # dockerd only logs a driver's error here: the Docker network is gone either way.
                log(f"Weft network {record['weft']}: not told that Docker network {network_id[:12]} left it "
                    f"({err.message}); told at the next reconcile")
                self.reconcile_soon(delay=5.0)
        return {}

    def _release(self, network_id, name):
        """Docker network `network_id` no longer uses Weft network `name`. A Weft network the plugin
        made goes with the last Docker network, on any host, that used it (each one is a key of its
        external_ids), if nothing else holds it (ports of `weft attach`, a router); one made otherwise
        is never deleted. Raises ApiError if Weft cannot be told (the release stays pending)."""
        try:
            net = self.api.get(api_path("networks", name))
            ids = net.get("external_ids") or {}
            if ids.get("owner") == "docker":
                if _user_key(network_id) in ids:
                    ids = self.api.delete(api_path("networks", name, "external_ids", _user_key(network_id)))[
                        "external_ids"]
                if not any(k.startswith(USER_PREFIX) for k in ids):
                    self.api.delete(api_path("networks", name))
        except ApiError as err:
            if err.status == 409:
                log(f"Weft network {name} is kept: {err.message}")
            elif err.status != 404:
                raise
        with self.lock:
            self.state.released.pop(network_id, None)
            self.state.save()

    def _name_later(self, network_id):
        try:
            self._network(network_id, wait=NAME_WAIT)
        except PluginError as err:
            log(f"network {network_id[:12]}: {err} (retried at its first endpoint)")

    def _network(self, network_id, wait=0.0):
        """The network's record, its Weft network named and made (or joined)."""
        with self.lock:
            record = self.state.networks.get(network_id)
            lock = self._network_locks.setdefault(network_id, threading.Lock())
        if record is None:
            raise PluginError(f"network {network_id[:12]} is unknown to the weft plugin (was its state lost? "
                              "recreate the Docker network)")
        with lock:
            if record.get("ready"):
                return record
            if not record.get("weft"):
                deadline = time.monotonic() + wait
                info = self.docker.network(network_id)
                while info is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                    info = self.docker.network(network_id)
                if info is None:
                    raise PluginError(f"dockerd does not know network {network_id[:12]}")
                record["weft"] = _weft_name(info["Name"], f"the Docker network's name {info['Name']!r} (use "
                                                          "-o weft.network=NAME)")
            self._ensure_weft_network(network_id, record)
            with self.lock:
                record["ready"] = True
                self.state.save()
        return record

    def _ensure_weft_network(self, network_id, record):
        """Creates the Weft network, or joins the one of that name if it has the same addressing."""
        name = record["weft"]
        for _ in range(2):
            try:
                existing = self.api.get(api_path("networks", name))
            except ApiError as err:
                if err.status != 404:
                    raise _unreachable(err, "create the network") from None
                existing = None
            if existing is None:
                body = {"name": name, "cidr": record["pool"], "gateway": record["gateway"],
                        "external_ids": {"owner": "docker", "docker.network": network_id,
                                         _user_key(network_id): self.state.host_id},
                        "labels": record.get("labels") or {}}
                body.update({k: record[k] for k in ("vni", "mtu") if k in record})
                try:
                    self.api.post("/v1/networks", body)
                    return
                except ApiError as err:
                    if err.status == 409 and "already exists" in err.message:
                        continue  # another host made it just now: join it
                    raise _unreachable(err, f"create Weft network {name}") from None
            differs = [f"{what} {mine} (Weft has {existing[key]})" for what, key, mine in (
                ("subnet", "cidr", record["pool"]), ("gateway", "gateway", record["gateway"]),
                ("weft.vni", "vni", record.get("vni")), ("mtu", "mtu", record.get("mtu")))
                if mine is not None and existing.get(key) != mine]
            # Labels given must be the network's; joining never changes them (weft network label does).
            have = existing.get("labels") or {}
            differs += [f"label {k}={v} (Weft has {f'{k}={have[k]}' if k in have else f'no {k}'})"
                        for k, v in sorted((record.get("labels") or {}).items()) if have.get(k) != v]
            if differs:
                raise PluginError(
                    f"Weft network {name} exists with subnet {existing['cidr']}, gateway {existing['gateway']}, "
                    f"vni {existing['vni']}, mtu {existing['mtu']}; this Docker network has {', '.join(differs)}. "
                    f"Create it with --subnet {existing['cidr']} --gateway {existing['gateway']} to join it, or "
                    f"give another Weft network with -o weft.network=NAME")
            if (existing.get("external_ids") or {}).get("owner") == "docker":  # used by one more Docker network
                try:
                    self.api.post(api_path("networks", name, "external_ids"),
                                  {"external_ids": {_user_key(network_id): self.state.host_id}})
                except ApiError as err:
                    if err.status == 404:
                        continue  # deleted just now (its last Docker network went): made again
                    raise _unreachable(err, f"join Weft network {name}") from None
            return

    # --- endpoints ---------------------------------------------------------------------------------------
    def create_endpoint(self, body):
        network_id, endpoint_id = body.get("NetworkID") or "", body.get("EndpointID") or ""
        iface = body.get("Interface") or {}
        if iface.get("AddressIPv6"):
            raise PluginError("Weft networks are IPv4 only: run the container without --ip6")
        if not iface.get("Address"):
            raise PluginError("the endpoint has no IPv4 address")
        # `docker run --network name=NET,driver-opt=weft.label.app=web` and `docker network connect
        # --driver-opt ...` put their options here (container labels never reach a driver).
        options = body.get("Options") or {}
        unknown = sorted(k for k in options if k.startswith("weft.")
                         and not k.startswith((LABEL_PREFIX, NAMED_PORT_PREFIX)))
        if unknown:
            raise PluginError(f"the weft driver has no endpoint option {', '.join(unknown)}: it takes driver-opt "
                              f"{LABEL_PREFIX}KEY=VALUE and {NAMED_PORT_PREFIX}NAME=PROTO/PORT")
        labels, named_ports = _maps(options, "driver-opt")
        record = self._network(network_id)
        ip = iface["Address"].split("/")[0]
        mac = (iface.get("MacAddress") or "").lower() or None
        ids = {"owner": "docker", "docker.network": network_id, "docker.endpoint": endpoint_id,
               "docker.host": self.state.host_id}
        if record["ipam"]:
            # The port was made at RequestAddress; it becomes this endpoint's.
            port = self._reserved(network_id, record, ip, endpoint_id)
            name = port["name"]
            ids = {**port["external_ids"], **ids}
            if mac and mac != port["mac"]:  # --mac-address: the port is made again, with it
                self._remove_port(name)
                port = self._create_port(network_id, record, name, ip, mac, ids, labels, named_ports)
            else:  # set before Join plugs it: it carries no packet without its labels
                self._set_ids(name, ids)
                for column, value in (("labels", labels), ("named_ports", named_ports)):
                    if value:
                        self._put(name, column, value)
            answer = {} if mac else {"Interface": {"MacAddress": port["mac"]}}
        else:
            name = port_name(endpoint_id)
            port = self._create_port(network_id, record, name, ip, mac, ids, labels, named_ports)
            answer = {} if mac else {"Interface": {"MacAddress": port["mac"]}}
        with self.lock:
            self.endpoints[endpoint_id] = name
        return answer

    def _reserved(self, network_id, record, ip, endpoint_id):
        """The port RequestAddress made for `ip` on this network (or this endpoint's, on a retry)."""
        with self.lock:
            name = next((n for (pool_id, address), n in self.addresses.items() if address == ip and n
                         and self.state.pools.get(pool_id, {}).get("network") == network_id), None)
        port = self._get_port(name) if name else None
        if port is None or port["ip"] != ip:  # reserved before this plugin started
            port = next((p for p in self._ports(record["weft"]) if p["ip"] == ip
                         and p["external_ids"].get("docker.host") == self.state.host_id
                         and p["external_ids"].get("docker.endpoint") in (None, endpoint_id)), None)
        if port is None:
            raise PluginError(f"no Weft port holds {ip} for this endpoint (was the address released?)")
        return port

    def delete_endpoint(self, body):
        endpoint_id = body.get("EndpointID") or ""
        name = self._port_of(endpoint_id)
        with self.lock:
            self.endpoints.pop(endpoint_id, None)
            for key, value in list(self.addresses.items()):
                if value == name:
                    self.addresses[key] = None
        if name:
            self._remove_port(name)
        return {}

    def endpoint_oper_info(self, body):
        return {"Value": {}}

    def join(self, body):
        from weft import attach
        network_id, endpoint_id = body.get("NetworkID") or "", body.get("EndpointID") or ""
        record = self._network(network_id)
        name = self._port_of(endpoint_id)
        if name is None:
            raise PluginError(f"endpoint {endpoint_id[:12]} has no Weft port (was it deleted?)")
        peer = peer_device(name)
        if not _link_exists(peer):  # not a retry
            try:
                attach.plug(name, peer, ovsdb=self.ovsdb, api=self.api, timeout=UP_TIMEOUT)
            except ApiError as err:
                raise _unreachable(err, "plug the container") from None
            except WeftError as err:
                raise PluginError(str(err)) from None
        threading.Thread(target=self._name_container, args=(network_id, endpoint_id, name), daemon=True).start()
        # Without a gateway dockerd would give the container a second interface, on a bridge of its
        # own (docker_gwbridge); DisableGatewayService says never to. An --internal network gets no
        # default route, as with Docker's own drivers.
        return {"InterfaceName": {"SrcName": peer, "DstPrefix": "eth"},
                "Gateway": "" if record.get("internal") else record["gateway"],
                "StaticRoutes": [], "DisableGatewayService": True}

    def leave(self, body):
        from weft import attach
        name = self._port_of(body.get("EndpointID") or "")
        if name:
            attach.remove_local(name, self.ovsdb)
        return {}

    def program_external_connectivity(self, body):
        if (body.get("Options") or {}).get("com.docker.network.portmap"):
            raise PluginError("Weft networks do not publish container ports (-p/--publish): reach the "
                              "container at its address, or through a Weft router and floating IP")
        return {}

    def ok(self, body):
        return {}

    def global_only(self, body):
        raise PluginError("the weft driver is local-scope: it does not take part in swarm networks")

    # --- helpers ---------------------------------------------------------------------------------------
    def _create_port(self, network_id, record, name, ip, mac, ids, labels=None, named_ports=None):
        """Creates the port; a retry of the same call (dockerd's, or after a plugin restart) gets the
        port made the first time."""
        body = {"name": name, "network": record["weft"], "external_ids": ids, "labels": labels or {},
                "named_ports": named_ports or {}}
        body.update({k: v for k, v in (("ip", ip), ("mac", mac)) if v})
        with self.lock:
            self.making[name] = None  # before it exists: reconcile never takes it for a stale one
        try:
            return self._post_port(network_id, record, name, ip, ids, body)
        except BaseException:
            with self.lock:
                self.making.pop(name, None)
            raise

    def _post_port(self, network_id, record, name, ip, ids, body):
        for attempt in range(2):
            try:
                port = self.api.post("/v1/ports", body)
                break
            except ApiError as err:
                if err.status == 404 and "network" in err.message and attempt == 0:
                    self._ensure_weft_network(network_id, record)  # deleted behind Docker's back
                    continue
                if err.status == 409 and "name:" in err.message:
                    port = self._get_port(name)
                    if port and all(port["external_ids"].get(k) == v for k, v in ids.items()) \
                            and (ip is None or port["ip"] == ip):
                        break
                if err.status == 409 and "ip:" in err.message:
                    raise PluginError(self._address_taken(record, ip)) from None
                raise _unreachable(err, "create the container's port") from None
        return port

    def _address_taken(self, record, ip):
        holder = next((p for p in self._ports(record["weft"]) if p["ip"] == ip), None)
        who = ""
        if holder:
            container = holder["external_ids"].get("container")
            about = ([f"container {container}"] if container else []) + [
                f"on host {holder['host']}" if holder["host"] else "not plugged in yet"]
            who = f" by port {holder['name']} ({', '.join(about)})"
        hint = "pick a free --ip" if record["ipam"] else (
            "Docker's default IPAM allocates on each host alone: give --ip, a disjoint --ip-range per host, or "
            "create the network with --ipam-driver weft on every host")
        return f"{ip} is already used{who} in Weft network {record['weft']}: {hint}"

    def _get_port(self, name):
        try:
            return self.api.get(api_path("ports", name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise _unreachable(err, "find the container's port") from None

    def _ports(self, network):
        if not network:
            return []
        try:
            return self.api.get(api_path("ports") + "?network=" + urllib.parse.quote(network, safe=""))
        except ApiError as err:
            if err.status == 404:
                return []
            raise _unreachable(err, "list the network's ports") from None

    def _set_ids(self, name, ids):
        self._put(name, "external_ids", ids)

    def _put(self, name, column, value):
        try:
            self.api.put(api_path("ports", name, column), {column: value})
        except ApiError as err:
            raise _unreachable(err, f"set the {column.replace('_', ' ')} of the container's port") from None

    def _port_of(self, endpoint_id):
        """The Weft port of an endpoint: known to this process, or found by its external_ids."""
        with self.lock:
            name = self.endpoints.get(endpoint_id)
        if name:
            return name
        candidate = self._get_port(port_name(endpoint_id))
        if candidate and candidate["external_ids"].get("docker.endpoint") == endpoint_id:
            return candidate["name"]
        try:
            ports = self.api.get("/v1/ports")
        except ApiError as err:
            raise _unreachable(err, "find the container's port") from None
        return next((p["name"] for p in ports if p["external_ids"].get("docker.endpoint") == endpoint_id), None)

    def _remove_port(self, name):
        """The port's veth, OVS port and NB port; what is already gone is skipped."""
        from weft import attach
        try:
            attach.remove_local(name, self.ovsdb)
        except WeftError as err:
            log(f"port {name}: {err}")
        try:
            self.api.delete(api_path("ports", name) + "?force=true")
        except ApiError as err:
            if err.status != 404:
                log(f"port {name} is left in Weft ({err.message}); removed at the next reconcile")
                self.reconcile_soon(delay=5.0)
        with self.lock:
            self.making.pop(name, None)

    def _name_container(self, network_id, endpoint_id, name):
        """Records the container's name on its port once dockerd shows the endpoint joined (asking
        while Join is pending would wait on the container's lock). From then on dockerd's view decides
        whether the port is stale, not its being in `making`."""
        try:
            self._wait_to_name_container(network_id, endpoint_id, name)
        finally:
            with self.lock:
                if name in self.making:
                    self.making[name] = time.monotonic()

    def _wait_to_name_container(self, network_id, endpoint_id, name):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                info = self.docker.network(network_id) or {}
                container = next((c["Name"] for c in (info.get("Containers") or {}).values()
                                  if c.get("EndpointID") == endpoint_id), None)
                if container:
                    port = self._get_port(name)
                    if port is None:
                        return
                    if port["external_ids"].get("container") != container:
                        self._set_ids(name, {**port["external_ids"], "container": container})
                    return
            except PluginError as err:
                log(f"port {name}: cannot record its container yet: {err}")
            time.sleep(0.2)

    # --- reconcile ---------------------------------------------------------------------------------------
    def reconcile_soon(self, delay=0.0):
        if delay:
            threading.Timer(delay, self._reconcile_wanted.set).start()
        else:
            self._reconcile_wanted.set()

    def reconcile_forever(self):
        """Runs reconcile whenever asked (at start, at each Activate, each time dockerd comes up, after a
        failed removal)."""
        last = None
        while True:
            self._reconcile_wanted.wait()
            self._reconcile_wanted.clear()
            try:
                self.reconcile()
                last = None
            except (PluginError, ApiError, WeftError, OSError) as err:
                message = f"reconcile deferred: {getattr(err, 'message', None) or err}"
                if message != last:  # dockerd may take a while to come up: say so once
                    log(message)
                last = message
                self.reconcile_soon(delay=2.0)
            except Exception:  # noqa: BLE001 - the thread must live on
                traceback.print_exc()
                self.reconcile_soon(delay=30.0)

    def watch_docker_forever(self):
        """Reconciles each time dockerd (again) serves its API. A dockerd restarted need not activate
        the plugin again, and it drops the endpoints of containers that died while it was down
        without a call to the driver (it removes their sandboxes as stale when it loads its
        containers, before it serves)."""
        while True:
            try:
                self.docker.serving(on_up=self.reconcile_soon)
            except PluginError:
                pass  # not up (yet): the reconcile thread says so if it needs dockerd
            time.sleep(1.0)

    def reconcile(self):
        """Removes the Weft ports of this dockerd that Docker no longer knows (an endpoint removed while
        the plugin was down, a dockerd that lost a container), with their veth and OVS port. Ports of
        endpoints Docker knows are not touched; nor are ports this process is making (`making`)."""
        from ovsdb import vswitch
        from weft import attach
        asked = time.monotonic()  # dockerd's view below is of this time or later
        with self.lock:  # taken first: a network created while Docker is asked is not taken for gone
            recorded = set(self.state.networks)
        # Nor is one created just before: dockerd stores a network only once CreateNetwork has answered.
        settled = time.time() - NAME_WAIT
        networks = {n["Id"]: self.docker.network(n["Id"]) for n in self.docker.networks_of(self.driver)}
        known = {c.get("EndpointID") for info in networks.values() if info
                 for c in (info.get("Containers") or {}).values()}
        ports = self.api.get("/v1/ports")
        with self.lock:
            gone = [i for i in recorded if i not in networks and i in self.state.networks
                    and self.state.networks[i].get("created", 0) < settled]
            for network_id in gone:  # removed while the plugin was down
                record = self.state.networks.pop(network_id)
                if record.get("weft"):
                    self.state.released[network_id] = record["weft"]
            for pool_id, pool in list(self.state.pools.items()):
                if pool.get("network") in gone:
                    del self.state.pools[pool_id]
            self.state.save()
            # After listing the ports: each one this process is making is in `making`. One dockerd
            # showed before it was asked is in its view, if still there.
            for name, shown in list(self.making.items()):
                if shown is not None and shown < asked:
                    del self.making[name]
            live = set(self.making)
        for port in ports:
            ids = port["external_ids"]
            if ids.get("owner") != "docker" or ids.get("docker.host") != self.state.host_id or port["name"] in live:
                continue
            if ids.get("docker.endpoint") in known:
                continue
            log(f"removing port {port['name']} ({port['ip']}): its Docker endpoint is gone")
            self._remove_port(port["name"])
        names = {p["name"] for p in ports}
        for iface_id, (device, _) in vswitch.plugged_ports(self.ovsdb).items():
            if iface_id.startswith(PORT_PREFIX) and iface_id not in names and iface_id not in live:
                log(f"removing {device} from br-int: its Weft port {iface_id} is gone")
                attach.remove_local(iface_id, self.ovsdb)
        with self.lock:
            released = dict(self.state.released)
        for network_id, name in released.items():  # after the ports: the last of them may hold it
            log(f"Weft network {name}: telling it that Docker network {network_id[:12]} left it")
            self._release(network_id, name)

    HANDLERS = {
        "/Plugin.Activate": activate,
        "/NetworkDriver.GetCapabilities": capabilities,
        "/NetworkDriver.CreateNetwork": create_network,
        "/NetworkDriver.DeleteNetwork": delete_network,
        "/NetworkDriver.CreateEndpoint": create_endpoint,
        "/NetworkDriver.DeleteEndpoint": delete_endpoint,
        "/NetworkDriver.EndpointOperInfo": endpoint_oper_info,
        "/NetworkDriver.Join": join,
        "/NetworkDriver.Leave": leave,
        "/NetworkDriver.ProgramExternalConnectivity": program_external_connectivity,
        "/NetworkDriver.RevokeExternalConnectivity": ok,
        "/NetworkDriver.DiscoverNew": ok,
        "/NetworkDriver.DiscoverDelete": ok,
        "/NetworkDriver.AllocateNetwork": global_only,
        "/NetworkDriver.FreeNetwork": ok,
        "/IpamDriver.GetCapabilities": ipam_capabilities,
        "/IpamDriver.GetDefaultAddressSpaces": address_spaces,
        "/IpamDriver.RequestPool": request_pool,
        "/IpamDriver.ReleasePool": release_pool,
        "/IpamDriver.RequestAddress": request_address,
        "/IpamDriver.ReleaseAddress": release_address,
    }


def _user_key(network_id):
    return USER_PREFIX + network_id[:12]


def _weft_name(value, what):
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise PluginError(f"{what} is not a Weft network name ({NAME_RULE})")
    return value


def _maps(options, how):
    """The weft.label.* and weft.named-port.* options (`how`: "-o" or "driver-opt") -> (labels,
    named ports), checked as the API checks them."""
    labels = {k[len(LABEL_PREFIX):]: v for k, v in options.items() if k.startswith(LABEL_PREFIX)}
    named = {k[len(NAMED_PORT_PREFIX):]: v for k, v in options.items() if k.startswith(NAMED_PORT_PREFIX)}
    try:
        return (validate.labels(labels, f"{how} {LABEL_PREFIX.rstrip('.')}"),
                validate.named_ports(named, f"{how} {NAMED_PORT_PREFIX.rstrip('.')}"))
    except validate.ApiError as err:
        raise PluginError(err.message) from None


def _number(value, what, low, high):
    if not (isinstance(value, str) and value.isascii() and value.isdigit() and low <= int(value) <= high):
        raise PluginError(f"{what}={value} is not a number from {low} to {high}")
    return int(value)


def _address_in(value, net, what):
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise PluginError(f"{what} {value} is not an IPv4 address") from None
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise PluginError(f"{what} {value} is not a host address of {net}")
    return str(addr)


def _unreachable(err, doing):
    """An API error as Docker's user should read it: unreachable is the usual one."""
    if err.status is None:
        return PluginError(f"the Weft controller is not reachable, so weft cannot {doing}: {err.message}")
    return PluginError(f"Weft refused to {doing}: {err.message}")


def _link_exists(name):
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def _error(call, message):
    """The error answer: libnetwork reads a network driver's as "Err", an IPAM driver's as "Error"
    (another key is ignored: dockerd then reports "No address returned")."""
    log(f"{call}: {message}")
    return {"Error" if call.startswith("/IpamDriver.") else "Err": message}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's naming
        plugin = self.server.plugin
        started = time.monotonic()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                raise PluginError(f"the request to {self.path} is not JSON") from None
            answer = plugin.call(self.path, body)
        except PluginError as err:
            answer = _error(self.path, str(err))
        except Exception as err:  # noqa: BLE001 - Docker shows the user one line, the log gets the rest
            traceback.print_exc()
            answer = _error(self.path, f"internal error in weft docker-plugin ({type(err).__name__}: {err})")
        if os.environ.get("WEFT_DEBUG"):  # every call, with its time (bench/docker_run.py reads these)
            log(f"{self.path} answered in {1000 * (time.monotonic() - started):.1f} ms: {json.dumps(answer)}")
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):  # quiet: errors are logged above
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _claim(path):
    """Removes a stale socket at `path`; refuses if another process still serves on it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise PluginError(f"{path} exists and is not a socket; remove it or give another --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as err:
        if err.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        os.unlink(path)  # nobody listens: a plugin that died left it
        return
    finally:
        probe.close()
    raise PluginError(f"another plugin is serving on {path}; stop it first, or give another --socket")


def serve(plugin, path=DEFAULT_SOCKET, ready=None):
    """Serves `plugin` on the unix socket `path` (mode 0660) until SIGTERM or SIGINT."""
    stopping, servers = threading.Event(), []

    def on_signal(signum, frame):  # installed before the socket exists: a SIGTERM never leaves it
        stopping.set()
        for server in servers:
            threading.Thread(target=server.shutdown, daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    _claim(path)
    old_umask = os.umask(0o117)  # the socket is born 0660: no window where anyone may connect
    try:
        server = _Server(path, _Handler)
    finally:
        os.umask(old_umask)
    server.plugin = plugin
    servers.append(server)
    try:
        if ready:
            ready()
        if not stopping.is_set():
            server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def main(args, api):
    """The CLI verb: `weft docker-plugin [--socket PATH] [--docker URL] [--state-dir DIR]`."""
    import pyroute2  # noqa: F401 - imported now, not at the first Join: it costs ~100 ms
    try:
        driver = os.path.basename(args.socket).removesuffix(".sock")
        plugin = Plugin(api, docker=args.docker, ovsdb=args.ovsdb, state_dir=args.state_dir, driver=driver)
        def ready():
            # Only once the socket is ours: a plugin refused because another one serves it must not
            # reconcile (remove ports) behind the live one's back.
            log(f"serving on {args.socket} (Weft API {api.base}, dockerd {args.docker})")
            threading.Thread(target=plugin.reconcile_forever, daemon=True).start()
            threading.Thread(target=plugin.watch_docker_forever, daemon=True).start()
            plugin.reconcile_soon()
        serve(plugin, args.socket, ready=ready)
    except PluginError as err:
        raise WeftError(str(err)) from None
