"""`weft lab ...`: the command line of the lab (weft/lab.py does the work).

Kept apart so that every other `weft` command starts without importing the lab.
"""
import argparse
import json
import os


def _lab():
    from weft import lab
    return lab



def add_lab_commands(subparsers):
    """Register `weft lab ...` on an argparse subparsers object; each command sets func(args) -> int."""
    lab_parser = subparsers.add_parser("lab", help="a multi-host Open vSwitch lab on this machine")
    sub = lab_parser.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)

    def cmd(parser_sub, verb, func, help):
        p = parser_sub.add_parser(verb, help=help)
        p.add_argument("--name", default=os.environ.get("WEFT_LAB", "weft"),
                       help="lab name (default: $WEFT_LAB or weft)")
        p.set_defaults(func=func)
        return p

    p = cmd(sub, "up", _cli_up, "build hosts h1..hN, start a controller, join the hosts")
    p.add_argument("--hosts", type=int, default=2, help="number of hosts (default 2)")
    p.add_argument("--no-controller", action="store_true", help="build the hosts only")
    p.add_argument("--external", action="store_true",
                   help="add an `outside` namespace linked to an uplink of h1 (for router gateways)")
    p.add_argument("--tls", action="store_true",
                   help="OpenFlow over TLS, with a CA and per-host certificates made in the lab dir")
    p.add_argument("--runtimes", action="store_true",
                   help="also run a dockerd and podman on every host, with the image weft/busybox")
    p.add_argument("--ha", action="store_true",
                   help="a 3-member Raft NB cluster (nb1..nb3) and two controllers, c1 (active) and c2 (standby)")
    cmd(sub, "down", _cli_down, "stop and remove everything the lab made")
    for kind, members, what in (("controller", "c1 or c2", "a controller"), ("nb", "nb1, nb2 or nb3", "an NB member")):
        group = sub.add_parser(kind, help=f"stop, kill or start {what} of an --ha lab")
        gsub = group.add_subparsers(dest=f"{kind}_command", metavar="COMMAND", required=True)
        for verb, help in (("stop", "SIGTERM"), ("kill", "SIGKILL (kill -9)"), ("start", "start it again")):
            p = cmd(gsub, verb, _cli_process, f"{help}: {what}")
            p.add_argument("which", metavar=kind.upper(), help=members)
            p.set_defaults(kind=kind, verb=verb)
        if kind == "nb":
            cmd(gsub, "leader", _cli_nb_leader, "print the NB member that is the Raft leader now")
    cmd(sub, "info", _cli_info, "print the lab as JSON")
    cmd(sub, "env", _cli_env, "print shell exports (eval \"$(weft lab env)\")")

    container = sub.add_parser("container", help="add or delete container namespaces")
    csub = container.add_subparsers(dest="container_command", metavar="COMMAND", required=True)
    p = cmd(csub, "add", _cli_container_add, "create a container namespace on a host, and attach it")
    p.add_argument("container")
    p.add_argument("--host", required=True, help="host the container lives on (h1, h2, ...)")
    p.add_argument("--network", help="attach it to this network (weft attach, run on the host)")
    p.add_argument("--ip", help="with --network: its address (default: the next free one)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="with --network: a label of its port (repeatable), as weft attach --label")
    p.add_argument("--named-port", action="append", default=[], metavar="NAME=PROTO/PORT",
                   help="with --network: a named port of its port (repeatable), as weft attach --named-port")
    p.add_argument("--dns", action="store_true", help="with --network: resolve names through Weft's resolver "
                   "(weft attach --dns), in what `weft lab exec` runs there")
    p = cmd(csub, "del", _cli_container_del, "detach and delete a container namespace")
    p.add_argument("container")

    p = cmd(sub, "exec", _cli_exec, "run a command in a host (its own OVS), container or fabric")
    p.add_argument("target", help="h1..hN, a container name, or fabric")
    p.add_argument("--background", action="store_true",
                   help="leave CMD running (a server), its output in the lab dir; weft lab down stops it")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")

    p = cmd(sub, "restart", _cli_restart, "restart a host's ovs-vswitchd or ovsdb-server, as a service "
            "manager would; prints its timings (CLOCK_MONOTONIC seconds) as JSON")
    p.add_argument("host", help="h1..hN")
    p.add_argument("daemon", choices=("vswitchd", "ovsdb"), help="which daemon")
    p = cmd(sub, "freeze", _cli_freeze, "freeze a host: SIGSTOP to its ovsdb-server and ovs-vswitchd")
    p.add_argument("host", help="h1..hN")
    p = cmd(sub, "thaw", _cli_thaw, "thaw a frozen host: SIGCONT to its ovsdb-server and ovs-vswitchd")
    p.add_argument("host", help="h1..hN")

    for client, func in (("docker", _cli_docker), ("podman", _cli_podman)):
        p = cmd(sub, client, func, f"run the real {client} client against a host's {client} (lab up --runtimes)")
        p.add_argument("host", help="h1..hN")
        p.add_argument("argv", nargs=argparse.REMAINDER, metavar=f"-- {client.upper()}-ARGS ...")
    return lab_parser


def _cli_up(args):
    lab = _lab()
    result = lab.up(args.name, args.hosts, controller=not args.no_controller, external=args.external,
                    tls=args.tls, runtimes=args.runtimes, ha=args.ha)
    if result["api"]:
        print(result["api"])
        lab._stderr(f"use it with: eval \"$(weft lab env --name {args.name})\"")
    return 0


def _cli_process(args):
    import signal
    lab = _lab()
    if args.verb == "start":
        lab.start_process(args.name, args.kind, args.which)
    else:
        pid = lab.stop_process(args.name, args.kind, args.which,
                               signal.SIGKILL if args.verb == "kill" else signal.SIGTERM)
        what = "controller" if args.kind == "controller" else "NB member"
        lab._stderr(f"lab {args.name}: {what} {args.which} (pid {pid}) stopped")
    return 0


def _cli_nb_leader(args):
    leader = _lab().nb_leader(args.name)
    if leader is None:
        raise _lab().LabError(f"lab {args.name}: no NB member is the leader right now (an election?)")
    print(leader)
    return 0


def _cli_down(args):
    lab = _lab()
    lab.down(args.name)
    return 0


def _cli_info(args):
    lab = _lab()
    print(json.dumps(lab.info(args.name), indent=2))
    return 0


def _cli_env(args):
    lab = _lab()
    print(lab.env(args.name), end="")
    return 0


def _cli_container_add(args):
    lab = _lab()
    for option, given in (("--ip", args.ip), ("--label", args.label), ("--named-port", args.named_port),
                          ("--dns", args.dns)):
        if given and not args.network:
            raise lab.LabError(f"{option} needs --network")
    created = lab.container_add(args.name, args.container, args.host)
    if args.network:
        try:
            port = lab.container_attach(args.name, args.container, args.network, args.ip,
                                        labels=args.label, named_ports=args.named_port, dns=args.dns)
        except lab.LabError:
            lab.container_del(args.name, args.container)
            raise
        print(f"{created['netns']} {port['ip']} {port['mac']}")
    else:
        print(created["netns"])
    return 0


def _cli_container_del(args):
    lab = _lab()
    lab.container_del(args.name, args.container)
    return 0


def _args_after_dashes(args):
    return args.argv[1:] if args.argv[:1] == ["--"] else args.argv


def _cli_exec(args):
    lab = _lab()
    if args.background:
        log = lab.background(args.name, args.target, _args_after_dashes(args))
        print(f"running in {args.target}, output in {log}")
        return 0
    return lab.exec(args.name, args.target, _args_after_dashes(args))


def _cli_docker(args):
    from weft import labruntimes
    return labruntimes.exec_docker(args.name, args.host, _args_after_dashes(args))


def _cli_podman(args):
    from weft import labruntimes
    return labruntimes.exec_podman(args.name, args.host, _args_after_dashes(args))


def _cli_restart(args):
    print(json.dumps(_lab().restart(args.name, args.host, args.daemon), indent=2))
    return 0


def _cli_freeze(args):
    _lab().freeze(args.name, args.host)
    return 0


def _cli_thaw(args):
    _lab().thaw(args.name, args.host)
    return 0
