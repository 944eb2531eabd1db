"""The `weft` command: NB objects through the REST API, and host-local work (lab, attach)."""
import argparse
import json
import os
import sys
import urllib.parse

from controller import validate  # standard library only: weft starts as fast
from weft import labcli, manifestcli, pkicli
from weft.client import DEFAULT_TIMEOUT, MAX_TIMEOUT, ApiClient, ApiError, api_timeout, default_api, path as api_path
from weft.errors import WeftError

COLUMNS = {
    "host": ["name", "key", "encap_ip", "datapath_type", "ovsdb", "status"],
    "network": ["name", "vni", "cidr", "gateway", "mtu", "ports", "labels"],
    "port": ["name", "network", "ip", "mac", "host", "up", "container", "labels"],
}


def _cell(value, column=None):
    if column == "status" and isinstance(value, dict):
        # a host's status: show what is wrong at a glance
        if value.get("state") == "down":
            silent = value.get("last_answer_s")
            return "down: its switch does not answer" + (f" (for {silent} s)" if silent is not None else "")
        if value.get("error"):
            return "error: " + value["error"]
        flags = [k.replace("_connected", "") for k in ("ovsdb_connected", "openflow_connected") if value.get(k)]
        if not (value.get("ready") and len(flags) == 2):
            return "connected: " + (",".join(flags) or "none")
        return "ready" if value.get("flows_in_sync", True) else "ready, flows syncing"
    if isinstance(value, dict):  # external_ids, labels, named_ports
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    return "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def print_table(rows, columns, out=sys.stdout):
    cells = [[c.upper() if c == "labels" else c for c in columns]] + [[_cell(row.get(c), c) for c in columns]
                                                                       for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")


def _show(result, as_json):
    if as_json or not isinstance(result, dict):
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        width = max(len(k) for k in result)
        for key in sorted(result):
            print(f"{key.ljust(width)}  {_cell(result[key], key)}")


def _crud(kind):
    """list/show/delete handlers shared by hosts, networks and ports."""
    def list_(args, api):
        query = {k: v for k, v in (("network", getattr(args, "network", None)),
                                   ("selector", getattr(args, "selector", None))) if v is not None}
        rows = api.get(api_path(kind + "s") + (f"?{urllib.parse.urlencode(query)}" if query else ""))
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True))
            return
        for row in rows:  # who owns a port: the container a runtime or `weft attach` recorded
            row.setdefault("container", (row.get("external_ids") or {}).get("container"))
        print_table(rows, COLUMNS[kind])

    def show(args, api):
        _show(api.get(api_path(kind + "s", args.name)), args.json)

    def delete(args, api):
        api.delete(api_path(kind + "s", args.name) + ("?force=true" if getattr(args, "force", False) else ""))
        print(f"{kind} {args.name} deleted")
    return list_, show, delete


def _add_crud(sub, kind, create, create_args, delete_names=("delete",), delete_args=()):
    parser = sub.add_parser(kind, help=f"{kind}s")
    cmds = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    list_, show, delete = _crud(kind)
    p = cmds.add_parser("list", help=f"list {kind}s")
    p.add_argument("--json", action="store_true")
    if kind == "port":
        p.add_argument("--network", help="only this network's ports")
    if kind in ("port", "network"):
        p.add_argument("--selector", "-l", help="only those whose labels this Kubernetes label selector picks "
                                                "(app=web,tier!=db, env in (a,b), key, !key)")
    p.set_defaults(func=list_)
    p = cmds.add_parser("show", help=f"show one {kind}")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=show)
    for i, create_name in enumerate(create[0]):
        p = cmds.add_parser(create_name, help=f"create a {kind}" if i == 0 else f"same as {create[0][0]}")
        p.add_argument("name")
        for flags, kwargs in create_args:
            p.add_argument(*flags, **kwargs)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=create[1])
    for i, delete_name in enumerate(delete_names):
        p = cmds.add_parser(delete_name, help=f"delete a {kind}" if i == 0 else f"same as {delete_names[0]}")
        p.add_argument("name")
        for flags, kwargs in delete_args:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(func=delete)
    if kind in ("port", "network"):
        _add_map_editor(cmds, kind, "labels", "label", f"set or remove a {kind}'s labels", "KEY=VALUE|KEY-")
    if kind == "port":
        _add_map_editor(cmds, kind, "named_ports", "named port", "set or remove a port's named ports",
                        "NAME=PROTO/PORT|NAME-")


def _create(path, fields):
    def run(args, api):
        body = {field: getattr(args, attr) for field, attr in fields.items() if getattr(args, attr) is not None}
        body.update(_maps(args))
        body["name"] = args.name
        _show(api.post(path, body), args.json)
    return run


# --- labels and named ports ------------------------------------------------------------------------
def _pair(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _edit(text):
    """One edit of `weft port label` and the like: KEY=VALUE sets, KEY- removes (as kubectl label)."""
    if "=" not in text and text.endswith("-") and len(text) > 1:
        return text[:-1], None
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is neither KEY=VALUE (set) nor KEY- (remove)")
    return _pair(text)


LABEL_OPTION = (("--label",), {"dest": "labels", "action": "append", "type": _pair,
                               "metavar": "KEY=VALUE", "help": "a label (repeatable): what policies select by"})
NAMED_PORT_OPTION = (("--named-port",), {
    "dest": "named_ports", "action": "append", "type": _pair,
    "metavar": "NAME=PROTO/PORT", "help": "a named port (repeatable), like http=TCP/8080: what policies and "
                                          "services may name instead of a number"})
EDIT_HELP = ("kubectl's rules: KEY=VALUE sets, KEY- removes; a key that has another value changes only with "
             "--overwrite")


def _maps(args):
    """The --label and --named-port options given, as the API's maps; a key given twice is refused."""
    maps = {}
    for field, option in (("labels", "--label"), ("named_ports", "--named-port")):
        pairs = getattr(args, field, None)
        if pairs:
            keys = [k for k, _ in pairs]
            twice = next((k for k in keys if keys.count(k) > 1), None)
            if twice:
                raise WeftError(f"{option} {twice} is given more than once")
            maps[field] = dict(pairs)
    return maps


def edit_map(current, edits, overwrite, what):
    """`current` after `edits` ([(key, value or None to remove)]), with kubectl label's rules: changing
    a key's value needs `overwrite`; removing a key that is not there only says so."""
    keys = [k for k, _ in edits]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice:
        raise WeftError(f"{what} {twice!r} is changed more than once in one command")
    new = dict(current)
    for key, value in edits:
        if value is None:
            if key not in new:
                print(f"weft: {what} {key!r} not found", file=sys.stderr)
            new.pop(key, None)
        elif new.get(key, value) != value and not overwrite:
            raise WeftError(f"{what} {key!r} already has a value ({new[key]}), and --overwrite is not given")
        else:
            new[key] = value
    return new


def _map_editor(kind, column, what):
    """`weft port label PORT k=v k-` and the like: read the map, edit it, PUT it back whole."""
    def run(args, api):
        path = api_path(kind + "s", args.name)
        new = edit_map(api.get(path)[column], args.edits, args.overwrite, what)
        result = api.put(api_path(kind + "s", args.name, column), {column: new})
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            print(f"{kind} {args.name} {column.replace('_', ' ')}: {_cell(result[column])}")
    return run


def _add_map_editor(cmds, kind, column, what, help, metavar):
    p = cmds.add_parser(what.replace(" ", "-"), help=help, description=f"{help}. {EDIT_HELP}.")
    p.add_argument("name", help=f"the {kind}")
    p.add_argument("edits", nargs="+", type=_edit, metavar=metavar)
    p.add_argument("--overwrite", action="store_true", help="let KEY=VALUE change a key that has another value")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_map_editor(kind, column, what))


def status(args, api):
    result = api.get("/v1/status")
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    nb = result["nb"]
    print(f"weft {result['version']} at {api.base}")
    print(f"NB: {nb['remote']} ({'embedded' if nb['embedded'] else 'external'}, "
          f"{'connected' if nb['connected'] else 'NOT connected'})")
    if nb.get("error"):
        print(f"NB error: {nb['error']}")
    if nb.get("clustered"):
        print(f"NB cluster: {len(nb['remotes'])} remotes, connected to the leader at {nb.get('leader') or '?'}")
    me = result.get("controller")
    if me:
        print(f"controller: {me['name']}, {me['role']} (epoch {me['epoch']})  " + "  ".join(
            f"{name}: {c['role']} at {c['api']}" for name, c in (result.get("controllers") or {}).items()
            if name != me["name"]))
    up = "?" if result["ports_up"] is None else result["ports_up"]  # a standby does not know
    print(f"networks: {result['networks']}  ports: {result['ports']} ({up} up)")
    dns, rejects = result.get("dns") or {}, result.get("service_rejects") or {}
    if dns:  # what left the data path on purpose; packet_ins counts anything else (it stays 0)
        print(f"DNS: {dns['queries']} queries ({dns['answered']} answered, {dns['nxdomain']} NXDOMAIN, "
              f"{dns['refused']} refused, {dns['forwarded']} forwarded, {dns['dropped_rate']} over the rate "
              f"limit)  service rejects: {rejects.get('sent', 0)}  other packet-ins: {result['packet_ins']}")
    rows = [{"name": name, "status": s} for name, s in result["hosts"].items()]
    if rows:
        print_table(rows, ["name", "status"])
    else:
        print("no hosts joined (weft host join NAME --encap-ip IP --ovsdb REMOTE)")


class OneLineParser(argparse.ArgumentParser):
    """A command line argparse refuses is one line too, like every other failure (argparse would
    print the usage first): the problem, and where the help is. Exit status 2, as argparse's."""

    def error(self, message):
        self.exit(2, f"weft: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser():
    parser = OneLineParser(prog="weft", description="Weft: container networks on Open vSwitch.")
    parser.add_argument("--api", default=None, help=f"the controller's API: unix:/PATH, http(s)://HOST:PORT; "
                                                    "an active/standby pair's two, comma-separated "
                                                    f"(env WEFT_API; default {default_api()})")
    parser.add_argument("--token-file", default=None, help="a file holding the API's bearer token, for "
                                                           "TCP (env WEFT_TOKEN_FILE)")
    parser.add_argument("--api-timeout", type=_api_timeout, default=None, metavar="SECONDS",
                        help=f"how long the API may take to answer, beyond a wait asked of it (env "
                             f"WEFT_API_TIMEOUT; default {DEFAULT_TIMEOUT:g}, at most {MAX_TIMEOUT:g})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("status", help="controller, NB and host status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=status)

    _add_crud(sub, "host",
              (("join", "create"), _create("/v1/hosts", {"encap_ip": "encap_ip", "ovsdb": "ovsdb",
                                                         "datapath_type": "datapath", "of_target": "of_target"})),
              [(("--encap-ip",), {"required": True, "help": "the host's tunnel endpoint (VTEP) address"}),
               (("--ovsdb",), {"required": True, "help": "the host's OVSDB remote (tcp:IP:6640, unix:PATH)"}),
               (("--datapath",), {"choices": ["netdev", "system"], "help": "br-int datapath (default system)"}),
               (("--of-target",), {"help": "OpenFlow target the host's br-int connects to; with two "
                                           "controllers both, comma-separated (default: the controller's "
                                           "configured of_target)"})],
              delete_names=("leave", "delete"),
              delete_args=[(("--force",), {"action": "store_true",
                                           "help": "forget the host even if its OVSDB is unreachable"})])
    _add_crud(sub, "network",
              (("create",), _create("/v1/networks", {"cidr": "cidr", "vni": "vni", "mtu": "mtu",
                                                     "gateway": "gateway"})),
              [(("--cidr",), {"required": True, "help": "IPv4 subnet, e.g. 10.1.0.0/24"}),
               (("--vni",), {"type": _number, "help": "Geneve VNI (default: the lowest free one from 100)"}),
               (("--mtu",), {"type": _number, "help": "container MTU (default: underlay MTU - 50)"}),
               (("--gateway",), {"help": "reserved gateway address (default: the subnet's first)"}),
               LABEL_OPTION])
    _add_crud(sub, "port",
              (("create",), _create("/v1/ports", {"network": "network", "ip": "ip", "mac": "mac"})),
              [(("--network",), {"required": True}), (("--ip",), {}), (("--mac",), {}), LABEL_OPTION,
               NAMED_PORT_OPTION])

    _add_router_commands(sub)
    p = sub.add_parser("floating-ip", help="1:1 NAT of an external address to a port")
    fcmds = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = fcmds.add_parser("list")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=lambda args, api: _print_rows(api.get("/v1/floating-ips"), ["ip", "port", "router"],
                                                      args.json))
    q = fcmds.add_parser("create", help="give a port a floating IP (its router needs a gateway)")
    q.add_argument("--port", required=True)
    q.add_argument("--ip", required=True, help="an address of the gateway's external subnet")
    q.set_defaults(func=lambda args, api: _show(api.post("/v1/floating-ips", {"port": args.port, "ip": args.ip}),
                                                False))
    q = fcmds.add_parser("delete")
    q.add_argument("ip")
    q.set_defaults(func=lambda args, api: api.delete(api_path("floating-ips", args.ip)) and None)

    p = sub.add_parser("trace", help="follow a packet through the compiled pipeline, offline")
    p.add_argument("--from", dest="src", required=True, metavar="PORT")
    p.add_argument("--to", dest="dst", required=True, metavar="IP")
    p.add_argument("--proto", choices=["icmp", "tcp", "udp", "sctp"], default="icmp")
    p.add_argument("--dport", type=_number)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=trace_cmd)

    p = sub.add_parser("attach", help="attach a container to a network (run on its host)")
    p.add_argument("container", help="the container: a netns name, a netns path, or a PID")
    p.add_argument("--network", required=True)
    p.add_argument("--ip", help="its address (default: the next free one in the subnet)")
    p.add_argument("--mac", help="its MAC (default: generated)")
    p.add_argument("--name", help="port name (default: the netns name)")
    p.add_argument("--ifname", default="eth0", help="interface name in the container (default eth0)")
    p.add_argument("--ovsdb", help="this host's OVSDB (default unix:$OVS_RUNDIR/db.sock)")
    p.add_argument("--timeout", type=_wait_seconds, default=10.0, help="seconds to wait for the port to be up")
    p.add_argument("--dns", action="store_true", help="point the container's resolv.conf at Weft's resolver "
                   "(a named netns: /etc/netns/NAME/resolv.conf, which `ip netns exec` uses); detach removes it")
    for flags, kwargs in (LABEL_OPTION, NAMED_PORT_OPTION):
        p.add_argument(*flags, **kwargs)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=attach_cmd)
    p = sub.add_parser("detach", help="remove a container's port: veth, OVS port, NB port, flows")
    p.add_argument("name", help="the port name")
    p.add_argument("--ovsdb", help="this host's OVSDB (default unix:$OVS_RUNDIR/db.sock)")
    p.set_defaults(func=detach_cmd)

    p = sub.add_parser("cni-config", help="print a CNI network configuration list for a Weft network "
                                          "(for /etc/cni/net.d/NETWORK.conflist)")
    p.add_argument("network", help="the Weft network (it must exist)")
    p.add_argument("--api", default=argparse.SUPPRESS, help="the API the plugin uses (default: this weft's)")
    p.add_argument("--token-file", default=argparse.SUPPRESS, help="the token file the plugin uses (TCP API)")
    p.add_argument("--ca-file", help="the CA the plugin checks an https API with")
    p.add_argument("--name", help="the CNI network's name (default: the Weft network's)")
    p.add_argument("--ovsdb", help="this host's OVSDB, if not the default unix:/var/run/openvswitch/db.sock")
    p.add_argument("--cni-version", choices=["0.4.0", "1.0.0", "1.1.0"], default="1.0.0",
                   help="the CNI spec version (default 1.0.0; 1.1.0 adds STATUS and GC)")
    p.set_defaults(func=cni_config_cmd)

    p = sub.add_parser("docker-plugin", help="serve Docker's remote network and IPAM driver protocol (run on "
                                             "each host, beside its dockerd)")
    p.add_argument("--socket", default="/run/docker/plugins/weft.sock",
                   help="where dockerd finds the plugin (default /run/docker/plugins/weft.sock)")
    p.add_argument("--docker", default="unix:///run/docker.sock",
                   help="dockerd's API, to learn network and container names (default unix:///run/docker.sock)")
    p.add_argument("--ovsdb", help="this host's OVSDB (default unix:$OVS_RUNDIR/db.sock)")
    p.add_argument("--state-dir", default="/var/lib/weft/docker-plugin",
                   help="where the plugin keeps its IPAM pools and networks (default /var/lib/weft/docker-plugin)")
    p.set_defaults(func=docker_plugin_cmd)

    manifestcli.add_manifest_commands(sub, print_table)
    labcli.add_lab_commands(sub)
    pkicli.add_pki_commands(sub)
    return parser


def _print_rows(rows, columns, as_json):
    if as_json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        print_table(rows, columns)


def _show_router(router, as_json):
    if as_json:
        print(json.dumps(router, indent=2, sort_keys=True))
        return
    print(f"router {router['name']} (key {router['key']})")
    for port in router["ports"]:
        print(f"  port   {port['network']}: {port['ip']} ({port['cidr']}) mac {port['mac']}")
    for route in router["routes"]:
        print(f"  route  {route['cidr']} via {route['via']}")
    gw = router["gateway"]
    if gw:
        print(f"  gateway on {gw['host']} uplink {gw['uplink']}: {gw['ip']}/{gw['prefixlen']} next hop "
              f"{gw['next_hop']} ({gw['next_hop_mac'] or 'MAC not resolved yet'})")


def _add_router_commands(sub):
    p = sub.add_parser("router", help="distributed routers between networks, and their gateway")
    cmds = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def command(name, func, help, *arguments, as_json=True):
        q = cmds.add_parser(name, help=help)
        for flags, kwargs in arguments:
            q.add_argument(*flags, **kwargs)
        if as_json:
            q.add_argument("--json", action="store_true")
        q.set_defaults(func=func)

    router = (("router",), {})
    command("list", lambda a, api: _print_rows(
        [{**r, "networks": ",".join(p["network"] for p in r["ports"]) or "-",
          "gateway": (r["gateway"] or {}).get("ip")} for r in api.get("/v1/routers")],
        ["name", "key", "networks", "gateway"], a.json), "list routers")
    command("show", lambda a, api: _show_router(api.get(api_path("routers", a.router)), a.json), "show a router",
            router)
    command("create", lambda a, api: _show_router(api.post("/v1/routers", {"name": a.router}), a.json),
            "create a router", router)
    command("delete", lambda a, api: print(f"router {a.router} deleted") if api.delete(api_path("routers", a.router))
            else None, "delete a router", router, as_json=False)
    command("attach", lambda a, api: _show_router(api.post(api_path("routers", a.router, "ports"), {"network": a.network}),
                                                  a.json),
            "attach a network (the router takes its gateway address)", router, (("network",), {}))
    command("detach", lambda a, api: _show_router(api.delete(api_path("routers", a.router, "ports", a.network)), a.json),
            "detach a network", router, (("network",), {}))
    route = cmds.add_parser("route", help="static routes")
    rcmds = route.add_subparsers(dest="route_action", required=True, metavar="ACTION")
    q = rcmds.add_parser("add", help="add a static route")
    q.add_argument("router")
    q.add_argument("cidr")
    q.add_argument("--via", required=True, help="next hop, on a subnet attached to the router")
    q.set_defaults(func=lambda a, api: _show_router(
        api.post(api_path("routers", a.router, "routes"), {"cidr": a.cidr, "via": a.via}), False))
    q = rcmds.add_parser("delete", help="delete a static route")
    q.add_argument("router")
    q.add_argument("cidr")
    q.set_defaults(func=lambda a, api: _show_router(
        api.delete(api_path("routers", a.router, "routes") + f"?cidr={urllib.parse.quote(a.cidr, safe='')}"), False))
    command("set-gateway", set_gateway_cmd,
            "give the router a way out: SNAT through an uplink on one host (waits until it forwards)", router,
            (("--host",), {"required": True, "help": "the gateway host"}),
            (("--uplink",), {"required": True, "help": "its interface to the outside"}),
            (("--ip",), {"required": True, "help": "external address/prefix, e.g. 192.0.2.10/24"}),
            (("--next-hop",), {"required": True, "help": "the outside router's address"}),
            (("--timeout",), {"type": _wait_seconds, "default": 10.0,
                              "help": "seconds to wait for the gateway to forward (0: do not wait)"}))
    command("clear-gateway", lambda a, api: _show_router(api.delete(api_path("routers", a.router, "gateway")), a.json),
            "remove the router's gateway", router)


def _number(text):
    """An integer option in ASCII digits, as the API takes numbers (int() also takes '٣' and '1_000')."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (ASCII digits)")
    return int(text)


def _api_timeout(text):
    try:
        return api_timeout(text, "--api-timeout")
    except ApiError as err:
        raise argparse.ArgumentTypeError(err.message.removeprefix("--api-timeout: ")) from None


def _wait_seconds(text):
    """A --timeout, checked as the API checks its waits."""
    try:
        return validate.seconds(text, "--timeout", validate.MAX_WAIT)
    except validate.ApiError as err:
        raise argparse.ArgumentTypeError(err.message.removeprefix("--timeout: ")) from None


def set_gateway_cmd(args, api):
    router = api.put(api_path("routers", args.router, "gateway"), {
        "host": args.host, "uplink": args.uplink, "ip": args.ip, "next_hop": args.next_hop})
    if args.timeout:
        router = api.get(api_path("routers", args.router) + f"?wait_up={args.timeout:g}")
        if not router["up"]:
            raise ApiError(None, f"router {args.router}'s gateway is set but does not forward after "
                                 f"{args.timeout:g} s: {router.get('waiting_for', 'unknown why')}")
    _show_router(router, args.json)


def trace_cmd(args, api):
    query = {"from": args.src, "to": args.dst, "proto": args.proto}
    if args.dport is not None:
        query["dport"] = args.dport
    result = api.get(api_path("trace") + "?" + urllib.parse.urlencode(query))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=2, sort_keys=True))
    else:
        print(result["text"])


def attach_cmd(args, api):
    from weft.attach import attach
    port = attach(args.container, args.network, ip=args.ip, name=args.name, ifname=args.ifname,
                  ovsdb=args.ovsdb, api=api, timeout=args.timeout, mac=args.mac,
                  external_ids={"container": args.container}, dns=args.dns, **_maps(args))
    if args.json:
        print(json.dumps(port, sort_keys=True))
    else:
        print(f"{port['name']}: {port['ip']} {port['mac']} on network {port['network']}, host {port['host']}: up")


def cni_config_cmd(args, api):
    from weft.cni import conflist
    network = api.get(api_path("networks", args.network))  # a clear error now, not at the first ADD
    print(json.dumps(conflist(network["name"], args.name, api.base, args.cni_version, args.ovsdb,
                              args.token_file, args.ca_file), indent=2))


def detach_cmd(args, api):
    from weft.attach import detach
    detach(args.name, ovsdb=args.ovsdb, api=api)
    print(f"port {args.name} detached")


def docker_plugin_cmd(args, api):
    from weft import dockerplugin
    dockerplugin.main(args, api)


def main(argv=None):
    # The `ovs` library uses eventlet if it can import it (Ryu needs it in this venv); the CLI never
    # runs green threads, and the import alone costs ~125 ms of every attach. Keep it out.
    sys.modules.setdefault("eventlet", None)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in LOCAL_COMMANDS:
            return args.func(args) or 0
        return args.func(args, ApiClient(args.api, timeout=args.api_timeout, token_file=args.token_file)) or 0
    except ApiError as err:
        if err.details.get("outcome") == "unknown":  # not a failure: maybe done, maybe not; the message says how to tell
            print(f"weft: outcome unknown: {' '.join(err.message.split())}", file=sys.stderr)
            return OUTCOME_UNKNOWN
        return _fail(err.message)
    except KeyboardInterrupt:
        return 130
    except (WeftError, OSError) as err:
        return _fail(str(err))
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        # The API answered, but not in the shape this weft expects (another version?), or a bug.
        return _fail(f"unexpected answer from the API, or a bug in weft ({type(err).__name__}: {err})", err)
    except Exception as err:  # noqa: BLE001 - the user gets one line; WEFT_DEBUG=1 the traceback
        return _fail(f"internal error in weft ({type(err).__name__}: {err})", err)


OUTCOME_UNKNOWN = 3  # the exit status of a write that may or may not have happened
LOCAL_COMMANDS = ("lab", "pki")  # commands that do not talk to the API


def _fail(message, err=None):
    """One line on stderr (whatever the message holds), and exit status 1."""
    if err is not None and not os.environ.get("WEFT_DEBUG"):
        message += " (WEFT_DEBUG=1 shows the details)"
    print(f"weft: error: {' '.join(message.split())}", file=sys.stderr)
    if err is not None and os.environ.get("WEFT_DEBUG"):
        import traceback
        traceback.print_exception(err)
    return 1


if __name__ == "__main__":
    sys.exit(main())
