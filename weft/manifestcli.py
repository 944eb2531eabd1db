"""`weft apply`, `weft policy ...` and `weft service ...`: Kubernetes NetworkPolicy and Service
manifests, read here (YAML or JSON) and checked by the controller, which is the authority on them.
What is printed follows kubectl (`service/web created`, `service "web" deleted`)."""
import json
import sys

from weft.client import ApiError, path as api_path
from weft.errors import WeftError

RESOURCES = {"NetworkPolicy": "networkpolicy.networking.k8s.io", "Service": "service"}


def add_manifest_commands(sub, print_table):
    p = sub.add_parser("apply", help="create or replace NetworkPolicies and Services from Kubernetes manifests "
                                     "(all of them or, if one is refused, none)")
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                   help="a YAML or JSON file of manifests (several documents, or a List); - for stdin; repeatable")
    p.add_argument("-n", "--network", help="the Weft network (namespace) of manifests that name none")
    p.add_argument("--plan", action="store_true", help="change nothing: print the flows the manifests would add "
                                                       "and remove on each host, per table")
    p.add_argument("--plan-lines", type=_lines, default=20, metavar="N",
                   help="flows shown per host and kind of change with --plan (default 20, at most 200)")
    p.add_argument("--timeout", type=_wait_seconds, default=10.0,
                   help="seconds to wait for the flows to be in force on every host (0: do not wait)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=apply_cmd)
    for kind, columns in (("policy", ["name", "network", "pod_selector", "policy_types", "selects"]),
                          ("service", ["name", "network", "type", "cluster_ip", "load_balancer_ip", "ports",
                                       "backends"])):
        parser = sub.add_parser(kind, help=f"the {'NetworkPolicies' if kind == 'policy' else 'Services'} applied")
        cmds = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        q = cmds.add_parser("list", help=f"list {kind} objects")
        q.add_argument("-n", "--network", help="only this network's")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=_lister(kind, columns, print_table))
        for action, func in (("show", _show_cmd), ("delete", _delete_cmd)):
            q = cmds.add_parser(action, help=f"{action} one {kind} (NETWORK/NAME, or NAME -n NETWORK)")
            q.add_argument("name", metavar="NETWORK/NAME")
            q.add_argument("-n", "--network")
            if action == "show":
                q.add_argument("--json", action="store_true")
            else:
                q.add_argument("--timeout", type=_wait_seconds, default=10.0,
                               help="seconds to wait for its flows to be gone from every host (0: do not wait)")
            q.set_defaults(func=func, kind=kind)


def _wait_seconds(text):
    from weft.cli import _wait_seconds  # the one reading of a --timeout
    return _wait_seconds(text)


def _lines(text):
    import argparse
    if not (text.isascii() and text.isdigit()) or int(text) > 200:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 200")
    return int(text)


# --- apply --------------------------------------------------------------------------------------------

def read_documents(files):
    """[(file, its documents)] of each -f FILE, read as text_to_documents reads them; WeftError
    naming the file otherwise."""
    from controller.manifests import ManifestError, text_to_documents
    read = []
    for name in files:
        shown = "stdin" if name == "-" else name
        try:
            if name == "-":
                raw = sys.stdin.buffer.read()
            else:
                with open(name, "rb") as f:
                    raw = f.read()
        except OSError as err:
            raise WeftError(f"{shown}: cannot read it: {err.strerror or err}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise WeftError(f"{shown}: not UTF-8 text (byte {err.start} is {raw[err.start]:#04x})") from None
        try:
            read.append((shown, text_to_documents(text)))
        except ManifestError as err:
            raise WeftError(f"{shown}: {err}") from None
    return read


def apply_cmd(args, api):
    files = read_documents(args.filename)
    documents = [doc for _, docs in files for doc in docs]
    body = {"documents": documents, "plan": args.plan}
    if args.plan:
        body["plan_lines"] = args.plan_lines
    if args.network:
        body["network"] = args.network
    waits = not args.plan and args.timeout
    try:
        answer = api.post("/v1/apply" + (f"?wait_up={args.timeout:g}" if waits else ""), body)
    except ApiError as err:
        raise _in_file(err, files) from None
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        for obj in answer["objects"] if args.plan or waits else answer:
            for warning in obj.get("warnings", ()):
                print(f"Warning: {obj['kind']} {obj['name']}: {warning}", file=sys.stderr)
            print(f"{RESOURCES[obj['kind']]}/{obj['name']} {obj['action']}" + (" (plan)" if args.plan else ""))
        if args.plan:
            print_plan(answer)
    if waits:
        _check_in_force("applied", answer["lagging"], args.timeout)


def _check_in_force(done, lagging, timeout):
    if lagging:
        raise ApiError(None, f"{done}, but not yet in force on {', '.join(lagging)} after {timeout:g} s: "
                             "their switches have not acknowledged the flows (weft status)")


def _in_file(err, files):
    """An error about the nth document of the request, told as the file and document it came from."""
    index = err.details.get("document")
    prefix = f"document {index}"
    if not isinstance(index, int) or not err.message.startswith(prefix):
        return err
    for name, docs in files:
        if index < len(docs):
            return ApiError(err.status, f"{name}: document {index}{err.message[len(prefix):]}")
        index -= len(docs)
    return err


def print_plan(plan, out=sys.stdout):
    hosts = plan["hosts"]
    if not hosts:
        out.write("\nno flow changes on any host\n")
        return
    rows = []
    for host, planned in hosts.items():
        for table, counts in planned["tables"].items():
            rows.append([host, table, *_counts(counts)])
        rows.append([host, "total", *_counts(planned["total"])])
    rows.append(["all hosts", "total", *_counts(plan["total"])])
    out.write("\n")
    _table(rows, ["HOST", "TABLE", "ADDED", "REMOVED", "MODIFIED"], out)
    for host, planned in hosts.items():
        out.write(f"\n{host}:\n")
        for change, mark in (("added", "+"), ("removed", "-"), ("modified", "~")):
            for line in planned[change]:
                out.write(f"  {mark} {line}\n")
            more = planned["total"][change] - len(planned[change])
            if more > 0:
                out.write(f"  {mark} ... and {more} more {change}\n")
    out.write("\nnothing was changed (a plan); apply without --plan to make these changes\n")


def _counts(counts):
    return [f"+{counts['added']}", f"-{counts['removed']}", f"~{counts['modified']}"]


def _table(rows, header, out):
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")


# --- policy and service -------------------------------------------------------------------------------

def _qualified(args):
    """(network, name) from NETWORK/NAME, or NAME with -n NETWORK."""
    network, slash, name = args.name.rpartition("/")
    if slash and args.network and network != args.network:
        raise WeftError(f"{args.name!r} names network {network!r}, and -n says {args.network!r}: give one")
    network = network or args.network
    if not network or not name:
        raise WeftError(f"{args.name!r}: name the {args.kind} as NETWORK/NAME, or as NAME -n NETWORK")
    return network, name


def _collection(kind):
    return "policies" if kind == "policy" else "services"


def _lister(kind, columns, print_table):
    def run(args, api):
        query = f"?network={_quote(args.network)}" if args.network else ""
        rows = api.get(api_path(_collection(kind)) + query)
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True))
            return
        for row in rows:
            if kind == "policy":
                row["policy_types"] = ",".join(row["policy_types"])
            else:
                row["ports"] = ",".join(f"{p['port']}/{p['protocol']}" for p in row["ports"])
                row["backends"] = f"{row['ready']}/{row['backends']} ready"
        print_table(rows, columns)
    return run


def _quote(text):
    import urllib.parse
    return urllib.parse.quote(text, safe="")


def _show_cmd(args, api):
    network, name = _qualified(args)
    shown = api.get(api_path(_collection(args.kind), network, name))
    if args.json:
        print(json.dumps(shown, indent=2, sort_keys=True))
        return
    if args.kind == "policy":
        print(f"networkpolicy {shown['network']}/{shown['name']}")
        print(f"  pod selector  {shown['pod_selector']}")
        print(f"  types         {', '.join(shown['policy_types']) or '-'}")
        print(f"  selects       {', '.join(shown['selects']) or 'no port'}")
    else:
        print(f"service {shown['network']}/{shown['name']} ({shown['type']}, key {shown['key']})")
        print(f"  cluster IP     {shown['cluster_ip']}")
        if shown["load_balancer_ip"]:
            print(f"  load balancer  {shown['load_balancer_ip']}")
        print(f"  selector       {','.join(f'{k}={v}' for k, v in sorted(shown['selector'].items())) or 'none'}")
        print(f"  affinity       {shown['session_affinity']}")
        for port in shown["ports"]:
            print(f"  port           {port['name'] + ' ' if port['name'] else ''}{port['port']}/{port['protocol']}"
                  f" -> {port['target_port']}")
        if shown["backends"]:
            rows = [[b["port"], b["ip"], b["host"] or "-", "yes" if b["ready"] else "no",
                     ",".join(f"{k + '=' if k else ''}{'-' if v is None else v}" for k, v in b["targets"].items())]
                    for b in shown["backends"]]
            print("  backends:")
            _table([["  " + r[0], *r[1:]] for r in rows], ["  PORT", "IP", "HOST", "READY", "TARGET"], sys.stdout)
        else:
            print("  backends       none (no port of the network has the selector's labels)")
    if shown.get("error"):
        print(f"  error          {shown['error']}")
    print("manifest, as applied:")
    import yaml  # a dependency of `weft apply` already; here only, so the other commands start without it
    print("  " + yaml.safe_dump(shown["manifest"], default_flow_style=False).rstrip().replace("\n", "\n  "))


def _delete_cmd(args, api):
    """Deletes the object and, as apply does, waits until its flows are gone from every host."""
    network, name = _qualified(args)
    answer = api.delete(api_path(_collection(args.kind), network, name)
                        + (f"?wait_up={args.timeout:g}" if args.timeout else ""))
    kind = "NetworkPolicy" if args.kind == "policy" else "Service"
    print(f"{RESOURCES[kind]} \"{name}\" deleted (network {network})")
    if args.timeout:
        _check_in_force("deleted", answer["lagging"], args.timeout)
