"""`weft pki ...`: the command line of Weft's certificate authority (weft/pki.py does the work).

Kept apart, like `weft lab`, so that other `weft` commands do not import it; it needs no controller.
"""
import json
import os
import sys

ENV_DIR = "WEFT_PKI_DIR"


def _default_dir():
    return os.environ.get(ENV_DIR) or "/var/lib/weft/pki"  # weft.pki.DEFAULT_DIR, without importing it


def _pki():
    from weft import pki
    return pki


def add_pki_commands(subparsers):
    """Register `weft pki ...` on an argparse subparsers object; each command sets func(args) -> int."""
    default_dir = _default_dir()
    parser = subparsers.add_parser("pki", help="certificates for TLS: a CA, the controller, hosts, API clients")
    sub = parser.add_subparsers(dest="pki_command", metavar="COMMAND", required=True)

    def cmd(verb, func, help):
        p = sub.add_parser(verb, help=help)
        p.add_argument("--dir", default=default_dir, help=f"the PKI directory (env {ENV_DIR}; default {default_dir})")
        p.set_defaults(func=func)
        return p

    cmd("init", _cli_init, "create the CA (once; an existing CA is never replaced)")
    p = cmd("controller", _cli_controller, "the controller's certificate: OpenFlow TLS, HTTPS API, OVSDB client")
    p.add_argument("--ip", action="extend", nargs="+", default=[], metavar="IP",
                   help="an address clients use to reach the controller (subjectAltName; repeatable)")
    p.add_argument("--dns", action="extend", nargs="+", default=[], metavar="NAME",
                   help="a DNS name of the controller (subjectAltName; repeatable). "
                        "Without --ip and --dns: 127.0.0.1 and localhost")
    p.add_argument("--force", action="store_true", help="replace an existing certificate and key")
    for kind, help in (("host", "a host's certificate (CN=NAME): its vswitchd and its ovsdb-server"),
                       ("client", "a client certificate for the HTTPS API (CN=NAME)")):
        p = cmd(kind, _cli_leaf, help)
        p.add_argument("name", metavar="NAME")
        p.add_argument("--force", action="store_true", help="replace an existing certificate and key")
    p = cmd("show", _cli_show, "list the CA and the certificates it signed, with their expiry")
    p.add_argument("--json", action="store_true")
    return parser


def _dir_opt(args):
    """`--dir DIR` for the next command, unless it is the default."""
    return "" if os.path.abspath(args.dir) == os.path.abspath(_default_dir()) else f" --dir {os.path.abspath(args.dir)}"


def _until(cert):
    return _pki().read_cert(cert)["not_after"].strftime("%Y-%m-%d")


def _files(creds, ca=True):
    print(f"  private key  {creds.key}")
    print(f"  certificate  {creds.cert}")
    if ca:
        print(f"  CA           {creds.ca_cert}")


def _cli_init(args):
    ca = _pki().init_ca(args.dir)
    print(f"CA created in {os.path.dirname(ca.cert)} (valid until {_until(ca.cert)})")
    print(f"  certificate  {ca.cert}  (every host, the controller and API clients trust it)")
    print(f"  private key  {ca.key}  (stays here: it signs every certificate)")
    print(f"next: weft pki controller{_dir_opt(args)} --ip CONTROLLER_IP, then "
          f"weft pki host NAME{_dir_opt(args)} for each host")
    return 0


def _status(creds):
    return "created" if creds.created else "already exists, unchanged"


def _cli_controller(args):
    pki = _pki()
    creds = pki.issue_controller(args.dir, ips=args.ip, dns=args.dns, force=args.force)
    info = pki.read_cert(creds.cert)
    print(f"controller: certificate CN={info['cn']} for {', '.join(info['sans'])} {_status(creds)} "
          f"(valid until {_until(creds.cert)})")
    _files(creds)
    print("the controller uses them for its OpenFlow TLS listener, its HTTPS API, and as its client "
          "certificate towards the hosts' OVSDB (ssl: remotes)")
    print(f"next: weft pki host NAME{_dir_opt(args)} for each host")
    return 0


def _cli_leaf(args):
    pki = _pki()
    kind = args.pki_command
    issue = pki.issue_host if kind == "host" else pki.issue_client
    creds = issue(args.dir, args.name, force=args.force)
    print(f"{kind} {args.name}: certificate CN={args.name} {_status(creds)} (valid until {_until(creds.cert)})")
    _files(creds)
    if kind == "host":
        print(f"on {args.name} (from another machine: copy the three files there and use their paths there):")
        print(f"  ovs-vsctl set-ssl {creds.key} {creds.cert} {creds.ca_cert}")
        print("  ovs-vsctl set-manager pssl:6640:HOST_IP    # OVSDB over TLS, for the controller")
        print(f"then: weft host join {args.name} --encap-ip VTEP_IP --ovsdb ssl:HOST_IP:6640 "
              "--of-target ssl:CONTROLLER_IP:6653")
    else:
        print(f"use them as the API client's certificate and key, with {creds.ca_cert} to verify the controller")
    return 0


def _cli_show(args):
    rows = _pki().inventory(args.dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from weft.cli import print_table
    print(f"PKI in {os.path.abspath(args.dir)}")
    table = [{"what": r["kind"] if r["kind"] in ("ca", "controller") else f"{r['kind']} {r['name']}",
              "subject": r["subject"], "names": ",".join(r["sans"]) or "-",
              "expires": f"{r['not_after'][:10]} ({r['days_left']} days)",
              "status": r["problem"] or ("expires soon" if r["days_left"] < 30 else "ok"),
              "certificate": os.path.relpath(r["cert"], os.path.abspath(args.dir))} for r in rows]
    print_table(table, ["what", "subject", "names", "expires", "status", "certificate"], out=sys.stdout)
    return 0
