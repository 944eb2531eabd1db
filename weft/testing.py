"""Mininet-style helpers for integration tests, on top of weft.lab.

    lab = make_lab(hosts=3)                     # pytest fixture factory (tests/integration/conftest.py)
    lab.container("c1", "h1")
    assert lab.ping("c1", "10.0.0.2")
    with lab.tcpdump("fabric", "br0", "udp port 6081", count=1) as cap:
        lab.ping("c1", "10.0.0.3")
    assert "Geneve" in cap.text
"""
import contextlib
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from flows.model import ETH_TYPE_IPV4, ICMP_ECHO_REQUEST, IP_PROTO_ICMP
from weft import lab as weftlab
from weft.client import ApiClient, ApiError, path as api_path

OVS_TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")


def eventually(check, timeout=15, what="the condition"):
    """check()'s first true result, polled every 0.1 s; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.1)


def skip_reason():
    """Why integration tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "integration tests need root (network namespaces, Open vSwitch daemons)"
    missing = [t for t in OVS_TOOLS if not shutil.which(t)]
    if missing:
        return "Open vSwitch binaries missing: " + ", ".join(missing)
    return None


def runtimes_skip_reason():
    """Why labs with container runtimes (dockerd, podman) cannot run here, or None."""
    from weft import labruntimes
    lacking = labruntimes.missing()
    if lacking:
        return f"container runtimes missing: {', '.join(lacking)} (install {labruntimes.PACKAGES})"
    return skip_reason()


class Lab:
    """A running lab. Targets are host names (h1...), container names or "fabric"."""

    def __init__(self, name, hosts=2, controller=True, external=False, tls=False, runtimes=False, ha=False,
                 progress=weftlab._stderr):
        self.name = name
        # What the root namespace looked like just before this lab came up (runtimes touch nothing).
        self.root_before = root_state() if runtimes else None
        weftlab.up(name, hosts, controller=controller, external=external, tls=tls, runtimes=runtimes, ha=ha,
                   progress=progress)
        api = self.info["api"]
        self.api = ApiClient(api) if api else None
        self._seq = itertools.count(1)

    @property
    def info(self):
        return weftlab.info(self.name)

    @property
    def dir(self):
        return Path(self.info["dir"])

    def down(self):
        weftlab.down(self.name)

    def host_env(self, host):
        return weftlab.host_env(self.name, host)

    @contextlib.contextmanager
    def controller_stopped(self, sig=signal.SIGTERM, hosts=None):
        """The lab's controller stopped by `sig` for the block (its API refuses connections; the NB
        and the hosts' flows stay), then started again on the same ports and state, and the block's
        end waits until every host (or each of `hosts`) is connected again and its flows are in sync."""
        st = weftlab._require(self.name)
        (entry,) = [e for e in st["pids"] if e["what"] == "controller"]
        weftlab._signal(entry, sig)
        if weftlab._wait_gone([entry], 10):
            raise AssertionError(f"the controller (pid {entry['pid']}) did not stop")
        try:
            yield
        finally:
            st = weftlab._require(self.name)
            st["pids"].remove(entry)
            weftlab.launch_controller(st)
            deadline = time.monotonic() + 30
            # Settled, not just connected: the restarted controller has resynced every switch, so
            # the ports are up again before the next test looks at them.
            while not all(h["status"].get("ready") and h["status"].get("flows_in_sync")
                          for h in self.api.get("/v1/hosts") if hosts is None or h["name"] in hosts):
                if time.monotonic() > deadline:
                    raise AssertionError(f"hosts not ready again after the controller restart: "
                                         f"{self.api.get('/v1/hosts')}")
                time.sleep(0.1)

    # --- an --ha lab: controllers c1, c2 and NB members nb1..nb3 ---------------------------------------
    def controller_api(self, controller):
        """An API client of one controller of an --ha lab (c1, c2) alone: no trying the other one."""
        return ApiClient(self.info["controllers"][controller]["api"])

    def kill_controller(self, controller, sig=signal.SIGKILL):
        """Signals controller c1 or c2 by its recorded pid (kill -9 by default) and waits until it is gone."""
        return weftlab.stop_process(self.name, "controller", controller, sig)

    def start_controller(self, controller):
        weftlab.start_process(self.name, "controller", controller)

    def kill_nb_member(self, member, sig=signal.SIGKILL):
        return weftlab.stop_process(self.name, "nb", member, sig)

    def start_nb_member(self, member):
        weftlab.start_process(self.name, "nb", member)

    def nb_leader(self, timeout=10):
        """The NB member that is the Raft leader (waiting through an election, up to `timeout`)."""
        deadline = time.monotonic() + timeout
        while (leader := weftlab.nb_leader(self.name)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no NB leader within {timeout} s")
            time.sleep(0.05)
        return leader

    def wait_nb_member_caught_up(self, member, timeout=20):
        """Waits until NB member (started again) is back in the cluster: it follows the leader, and its
        log reaches as far as the leader's did a moment before."""
        def status(m):
            text = weftlab.nb_cluster_status(self.name, m)
            return (re.search(r"^Server ID: (\w+)", text, re.M).group(1),
                    re.search(r"^Leader: (\w+)", text, re.M).group(1),
                    int(re.search(r"^Log: \[\d+, (\d+)\]", text, re.M).group(1)))
        deadline = time.monotonic() + timeout
        while True:
            try:
                leader = weftlab.nb_leader(self.name)
                if leader is not None and leader != member:
                    leader_id, _, leader_log = status(leader)
                    _, follows, log = status(member)
                    if follows == leader_id and log >= leader_log:
                        return
            except (weftlab.LabError, AttributeError):  # starting, or mid-election: ask again
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"NB member {member} did not catch up with the cluster within {timeout} s")
            time.sleep(0.1)

    def role(self, controller):
        """The role controller c1 or c2 reports in GET /v1/status (None if it does not answer)."""
        try:
            return self.controller_api(controller).get("/v1/status")["controller"]["role"]
        except ApiError:
            return None

    def roles(self, timeout=10):
        """{"active": name, "standby": name} of an --ha lab, once its two controllers agree on who is
        which (AssertionError if they do not within `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            found = {self.role(c): c for c in self.info["controllers"]}
            if set(found) == {"active", "standby"}:
                return found
            assert time.monotonic() < deadline, f"the controllers did not settle on their roles: {found}"
            time.sleep(0.05)

    @contextlib.contextmanager
    def controller_options(self, **options):
        """The lab's controller restarted with these [weft] options (weft.conf) for the block, then
        restarted as it was."""
        conf = self.dir / "weft.conf"
        original = conf.read_text()
        with self.controller_stopped():
            conf.write_text(original + "".join(f"{key} = {value}\n" for key, value in options.items()))
        try:
            yield
        finally:
            with self.controller_stopped():
                conf.write_text(original)

    def restart(self, host, daemon):
        """Restarts host's "vswitchd" or "ovsdb" as `weft lab restart` does; returns its timings."""
        return weftlab.restart(self.name, host, daemon, progress=weftlab._quiet)

    @contextlib.contextmanager
    def frozen(self, host):
        """host frozen for the block (`weft lab freeze`: SIGSTOP to its ovsdb-server and vswitchd),
        thawed at its end, whatever happens in it. Yields {"frozen": time}, and after the block also
        "thawed" (CLOCK_MONOTONIC)."""
        times = {"frozen": weftlab.freeze(self.name, host, progress=weftlab._quiet)}
        try:
            yield times
        finally:
            times["thawed"] = weftlab.thaw(self.name, host, progress=weftlab._quiet)

    def exec(self, target, *cmd, check=True, timeout=60):
        """Run cmd in target's namespace (hosts: with their own OVS_* set); captured text output."""
        argv, env = weftlab.target_cmd(self.name, target, cmd)
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"[{target}] {' '.join(map(str, cmd))} exited {res.returncode}\n"
                                 f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return res

    def docker(self, host, *args, check=True, timeout=120):
        """The real docker client against host's dockerd (a lab with runtimes); captured text output."""
        from weft import labruntimes
        return self._run(f"docker on {host}", *labruntimes.docker_cmd(self.name, host, args), check, timeout)

    def podman(self, host, *args, check=True, timeout=120):
        """podman on host, as `weft lab podman` runs it; captured text output."""
        from weft import labruntimes
        return self._run(f"podman on {host}", *labruntimes.podman_cmd(self.name, host, args), check, timeout)

    @staticmethod
    def _run(what, argv, env, check, timeout):
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"[{what}] {' '.join(argv)} exited {res.returncode}\n"
                                 f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return res

    def container(self, name, host):
        """Create an empty container namespace on host; returns weft.lab.container_add's dict."""
        return weftlab.container_add(self.name, name, host)

    def attach(self, name, host, network, ip=None, labels=(), named_ports=(), dns=False):
        """A container on host attached to network through `weft attach` run on that host; returns the
        port as the API describes it (up: its flows are acknowledged on every host that needs them).
        `labels`, `named_ports`: "app=web", "http=TCP/80" texts, as weft attach takes them. With
        `dns`, its resolv.conf names Weft's resolver (`weft attach --dns`)."""
        weftlab.container_add(self.name, name, host)
        return weftlab.container_attach(self.name, name, network, ip, labels=labels, named_ports=named_ports,
                                        dns=dns)

    def weft(self, *args, target=None, check=True):
        """Runs the `weft` CLI against this lab's controller (in a host namespace when target is set)."""
        argv = [sys.executable, "-m", "weft.cli", *map(str, args)]
        if target:
            return self.exec(target, *argv, check=check)
        res = subprocess.run(argv, env={**os.environ, "WEFT_API": self.info["api"], "WEFT_LAB": self.name},
                             capture_output=True, text=True, timeout=60)
        if check and res.returncode:
            raise AssertionError(f"weft {' '.join(map(str, args))} exited {res.returncode}: {res.stderr}")
        return res

    def flow_cookies(self, host):
        """Counter of cookies of the flows on host's br-int, as ovs-ofctl sees them."""
        from flows.ofctl import parse_dump_cookies
        return parse_dump_cookies(self.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout)

    def flow_ages(self, host):
        """{flow as ovs-ofctl prints it, counters left out: its age in seconds} for host's br-int."""
        ages = {}
        dump = self.exec(host, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int").stdout
        for line in dump.splitlines()[1:]:
            age = float(re.search(r"duration=([\d.]+)s", line).group(1))
            ages[re.sub(r"(duration|n_packets|n_bytes)=[^,]*, ", "", line.strip())] = age
        return ages

    def wait_flows_in_sync(self, host, timeout=15):
        """Waits until the switch has acknowledged every flow the controller wants on it (changes of
        an earlier step may still be in flight)."""
        deadline = time.monotonic() + timeout
        while not self.api.get(api_path("hosts", host))["status"].get("flows_in_sync"):
            if time.monotonic() > deadline:
                raise AssertionError(f"{host}'s flows did not settle within {timeout} s")
            time.sleep(0.05)

    def reconnect_switch(self, host, timeout=15):
        """Makes host's br-int drop its OpenFlow connection and come back; returns the host's API
        status once the controller has synced it again. (It points br-int elsewhere; the controller
        sees its target changed in the host's OVSDB and puts it back.) Until the switch logs its new
        connection, the status may still be the old connection's."""
        config = self.info["hosts"][host]
        log = Path(config["ovs_rundir"]) / "ovs-vswitchd.log"
        connected = f"br-int<->{config['of_target']}: connected"
        removed = f'removed primary controller "{config["of_target"]}"'
        text = log.read_text()
        connections, removals = text.count(connected), text.count(removed)
        deadline = time.monotonic() + timeout
        # vswitchd may apply our change and the controller's putting-back in one reconfiguration,
        # and then never drops the connection: repeat until it has.
        while log.read_text().count(removed) == removals:
            if time.monotonic() > deadline:
                raise AssertionError(f"{host}'s br-int never dropped its controller connection")
            self.exec(host, "ovs-vsctl", "set-controller", "br-int", "tcp:127.0.0.1:9")
            time.sleep(0.5)
        while True:
            status = self.api.get(api_path("hosts", host))["status"]
            if (log.read_text().count(connected) > connections and status.get("openflow_connected")
                    and status.get("flow_batches", 0) >= 1):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{host} did not reconnect and resync: {status}")
            time.sleep(0.1)

    def ping(self, src, dst_ip, count=1, timeout=2):
        """True when every one of `count` echo requests from src to dst_ip was answered."""
        res = self.exec(src, "ping", "-n", "-q", "-c", count, "-i", "0.2", "-W", timeout, dst_ip,
                        check=False, timeout=count * 0.2 + timeout + 10)
        m = re.search(r"(\d+) received", res.stdout)
        return res.returncode == 0 and m is not None and int(m.group(1)) == count

    @contextlib.contextmanager
    def echoes(self, src, dst_ip, rate=100, ready_timeout=10):
        """A constant-rate echo counter (weft/echo.py) from container `src` to `dst_ip` for the block,
        started once its first reply is in. Yields a dict that holds, after the block, its report:
        sent, received, lost, longest_gap_ms, outages ([first, last lost send time, count])."""
        cmd, env = weftlab.target_cmd(self.name, src, [sys.executable, "-m", "weft.echo", dst_ip,
                                                       "--rate", rate])
        env = {**env, "PYTHONPATH": weftlab.source_pythonpath()}
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        report = {}
        try:
            ready = select.select([proc.stdout], [], [], ready_timeout)[0] and proc.stdout.readline()
            if ready != "READY\n":
                raise AssertionError(f"no echo reply from {dst_ip} to {src} within {ready_timeout} s")
            yield report
        finally:
            try:  # stdin closed: the counter stops, waits a second for late replies, and reports
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        if proc.returncode:
            raise AssertionError(f"the echo counter from {src} failed: {err.strip()}")
        report.update(json.loads(out.strip().splitlines()[-1]))

    def send_frames(self, target, frames, iface="eth0"):
        """Send raw Ethernet frames (bytes), as they are, out of iface in target's namespace."""
        self.exec(target, sys.executable, "-c", _SEND_FRAMES, iface, *(f.hex() for f in frames))

    def first_echo_request(self, src, receiver, frames, timeout=5):
        """Sends frames from src; returns the ICMP echo id of the first echo request to reach
        receiver's eth0, tagged or not (None if none did), and the capture's text."""
        # `vlan` as well: the kernel usually strips a tag before the filter runs, but not always.
        with self.tcpdump(receiver, "eth0", "icmp or vlan", count=1, timeout=timeout) as cap:
            self.send_frames(src, frames)
        found = re.search(r"ICMP echo request, id (\d+)", cap.text)
        return (int(found.group(1)) if found else None), cap.text

    def address(self, target):
        """target's first global IPv4 address (a host's is its VTEP IP)."""
        out = self.exec(target, "ip", "-4", "-j", "addr", "show", "scope", "global").stdout
        for link in json.loads(out or "[]"):
            for a in link.get("addr_info", []):
                return a["local"]
        raise AssertionError(f"{target} has no IPv4 address")

    def iperf(self, src, dst, seconds=3, dst_ip=None, port=5201):
        """TCP throughput from src to dst (iperf3), in bits/s as measured by the receiver."""
        return float(self.iperf_report(src, dst, seconds, dst_ip, port)["sum_received"]["bits_per_second"])

    def iperf_report(self, src, dst, seconds=3, dst_ip=None, port=5201):
        """iperf3 -J's "end" section for a TCP run from src to dst (received rate, retransmits...)."""
        dst_ip = dst_ip or self.address(dst)
        # -I puts a path under the lab dir on the command line so `down` may kill a leftover server.
        pidfile = self.dir / f"iperf3-{dst}-{next(self._seq)}.pid"
        server = weftlab.spawn(self.name, dst, ["iperf3", "-s", "-1", "-p", port, "-I", pidfile],
                               what=f"{dst}: iperf3 server", stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while f":{port} " not in self.exec(dst, "ss", "-Hltn").stdout:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"iperf3 server in {dst} did not start")
                time.sleep(0.05)
            res = self.exec(src, "iperf3", "-c", dst_ip, "-p", port, "-t", seconds, "-J",
                            timeout=seconds + 30)
            return json.loads(res.stdout)["end"]
        finally:
            if server.poll() is None:
                server.terminate()
            server.wait(timeout=10)

    @contextlib.contextmanager
    def tcpdump(self, target, iface, filter="", count=None, timeout=5.0, read_flags=("-nn", "-e")):
        """Capture on iface in target's namespace while the with-block runs.

        With count, waits (up to timeout) after the block for that many packets. The capture's
        text (tcpdump -r with read_flags) is in `cap.text` after the block.
        """
        pcap = self.dir / f"capture-{next(self._seq)}.pcap"
        # --immediate-mode: otherwise a packet may wait in the kernel's capture ring for up to 1 s,
        # and a capture stopped sooner never sees it.
        argv = ["tcpdump", "-i", iface, "--immediate-mode", "-U", "-w", pcap, *(["-c", count] if count else [])]
        if filter:
            argv.append(filter)
        proc = weftlab.spawn(self.name, target, argv, what=f"{target}: tcpdump",
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cap = Capture()
        try:
            # tcpdump says "listening on ..." once the capture is open: start the block only then.
            ready, _, _ = select.select([proc.stderr], [], [], 5)
            first = proc.stderr.readline().decode(errors="replace") if ready else ""
            if "listening on" not in first:
                raise AssertionError(f"tcpdump in {target} on {iface} did not start: {first.strip()}")
            yield cap
            if count:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout)
            else:
                time.sleep(0.2)  # let packets still in flight reach the capture
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=10)
            proc.stderr.close()
        res = subprocess.run(["tcpdump", "-r", str(pcap), *read_flags], capture_output=True, text=True)
        cap.text = res.stdout
        pcap.unlink(missing_ok=True)


class Controller:
    """A real `ryu-manager controller.app` with its embedded NB, for tests of the controller itself:
    its API on a unix socket in `directory`, with `tcp` also on 127.0.0.1 (bearer tokens), and its
    OpenFlow listener on loopback. `installed`: run the copy installed in the venv (the standard
    launch), not this source tree. Stop it with stop()."""

    def __init__(self, directory, tcp=False, installed=False, conf_extra="", args=()):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ofp_port, self.api_port = weftlab._free_ports(2)
        self.socket = self.dir / "api.sock"
        self.state_dir = self.dir / "state"
        conf = self.dir / "weft.conf"
        conf.write_text(f"[weft]\nstate_dir = {self.state_dir}\napi_socket = {self.socket}\n{conf_extra}")
        argv = [str(Path(sys.executable).parent / "ryu-manager"), "--ofp-tcp-listen-port", str(self.ofp_port),
                *(["--wsapi-port", str(self.api_port)] if tcp else []), *args,
                "--config-file", str(conf), "controller.app"]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if not installed:
            env["PYTHONPATH"] = str(weftlab.REPO_ROOT)
        self.log_path = self.dir / "controller.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.api = ApiClient(f"unix:{self.socket}", timeout=10)
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.token_file = self.state_dir / "tokens" / "admin"
        try:
            weftlab.wait_until_serving(self.proc, f"unix:{self.socket}", self.log_path)
        except BaseException:
            self.stop()  # it started, so it stops here: the caller gets no object to stop
            raise

    def log(self, tail=3000):
        return self.log_path.read_text(errors="replace")[-tail:]

    def nb_rows(self):
        """Every NB row as the database itself has it (Host.status left out: the controller's own
        reporting), read over OVSDB, not through the API."""
        from ovsdb import nb, rpc
        tables = [t for t in nb.TABLES]
        results = rpc.transact(f"unix:{self.state_dir}/nb.sock", nb.DATABASE,
                               [{"op": "select", "table": t, "where": []} for t in tables])
        rows = {}
        for table, result in zip(tables, results):
            rows[table] = sorted(json.dumps({k: v for k, v in r.items() if k not in ("status", "_version")},
                                            sort_keys=True) for r in result["rows"])
        return rows

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FakeSwitch:
    """A socket-level OpenFlow 1.3 peer claiming a datapath id, as an impostor on the same machine
    would: it says HELLO, answers FEATURES_REQUEST with `dpid`, and ECHO, BARRIER and port-description
    requests, and records the type of every message it receives (`received`). `closed` is set once
    the controller hangs up. `tls`: (certificate, key, CA certificate) files, to speak TLS with them,
    as a switch with a certificate of its own would."""
    FLOW_MOD, PACKET_OUT, GROUP_MOD, FEATURES_REQUEST = 14, 13, 15, 5

    def __init__(self, port, dpid, host="127.0.0.1", tls=None):
        import threading
        self.dpid = dpid
        self.received = []
        self.closed = threading.Event()
        self.sock = socket.create_connection((host, port), timeout=5)
        if tls:
            import ssl
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_cert_chain(tls[0], tls[1])
            context.load_verify_locations(tls[2])
            self.sock = context.wrap_socket(self.sock, server_hostname=host)  # the controller's: IP:127.0.0.1
        self._send(0, 0)  # HELLO
        threading.Thread(target=self._read, daemon=True).start()

    def _send(self, kind, xid, body=b""):
        self.sock.sendall(struct.pack("!BBHI", 4, kind, 8 + len(body), xid) + body)

    def _read(self):
        buffer = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buffer += data
                while len(buffer) >= 8:
                    _, kind, length, xid = struct.unpack("!BBHI", buffer[:8])
                    if len(buffer) < length:
                        break
                    message, buffer = buffer[:length], buffer[length:]
                    self.received.append(kind)
                    self._answer(kind, xid, message)
        except OSError:
            pass
        finally:
            self.closed.set()

    def _answer(self, kind, xid, message):
        if kind == 5:    # FEATURES_REQUEST -> FEATURES_REPLY
            self._send(6, xid, struct.pack("!QIBBxxII", self.dpid, 0, 254, 0, 0x4f, 0))
        elif kind == 2:  # ECHO_REQUEST -> ECHO_REPLY
            self._send(3, xid, message[8:])
        elif kind == 20:  # BARRIER_REQUEST -> BARRIER_REPLY
            self._send(21, xid)
        elif kind == 18:  # MULTIPART_REQUEST (port description...) -> an empty reply of its type
            self._send(19, xid, message[8:10] + b"\0\0\0\0\0\0")

    def close(self):
        self.sock.close()


_SEND_FRAMES = """
import socket, sys
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
    s.bind((sys.argv[1], 0))
    for frame in sys.argv[2:]:
        s.send(bytes.fromhex(frame))
"""

TPID_8021Q = 0x8100
TPID_8021AD = 0x88a8


def _checksum(data):
    """The Internet checksum (RFC 1071) of data."""
    total = sum(struct.unpack(f"!{len(data) // 2}H", data + b"\0" * (len(data) % 2)))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo_frame(src_mac, dst_mac, src_ip, dst_ip, ident, tags=(), ttl=64):
    """An Ethernet frame carrying an ICMP echo request (seq 1) with correct checksums; tags are
    VLAN tags (tpid, vid), outermost first, inserted after the MAC addresses."""
    icmp = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, 1) + b"weft"
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0, ttl, IP_PROTO_ICMP, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    vlan = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags)
    return (bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
            + vlan + struct.pack("!H", ETH_TYPE_IPV4) + ip + icmp)


VLAN_TAGS = (  # (tpid, vid) tags, outermost first, a container could put on its frames
    ((TPID_8021Q, 10),),
    ((TPID_8021Q, 0),),  # a priority tag: tagged too, only its VID is 0
    ((TPID_8021AD, 10),),
    # QinQ: OVS parses one tag (vlan-limit=1), so eth_type is the inner TPID and PORT_SECURITY
    # alone already dropped it.
    ((TPID_8021AD, 20), (TPID_8021Q, 10)),
)
UNTAGGED_ECHO_ID = 1000


def vlan_probe_frames(src_mac, dst_mac, src_ip, dst_ip):
    """An echo request for each of VLAN_TAGS (ids after UNTAGGED_ECHO_ID), then the same request
    untagged (UNTAGGED_ECHO_ID). Frames on one path arrive in order, so when the untagged one is the
    first to arrive, none of the tagged ones got through."""
    tagged = [icmp_echo_frame(src_mac, dst_mac, src_ip, dst_ip, UNTAGGED_ECHO_ID + i, tags)
              for i, tags in enumerate(VLAN_TAGS, 1)]
    return [*tagged, icmp_echo_frame(src_mac, dst_mac, src_ip, dst_ip, UNTAGGED_ECHO_ID)]


def root_state():
    """The root namespace as its tools show it: links, routes, forwarding and, where the tools exist,
    the packet filter; and the directories of the root mount namespace that dockerd, containerd and
    podman write to whatever their flags say. Equal before and after a lab's bring-up when the lab
    left them alone."""
    def out(*argv):
        if not shutil.which(argv[0]):
            return None
        res = subprocess.run(argv, capture_output=True, text=True)
        # iptables-save stamps its output with the time ("# Generated by ... on <date>").
        return res.returncode, [l for l in (res.stdout + res.stderr).splitlines() if not l.startswith("#")]
    def listing(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else None
    runtime_dirs = ("/run/docker/plugins", "/run/containerd", "/etc/docker", "/opt/containerd",
                    "/var/lib/cni", "/var/lib/containers", "/var/cache/containers")
    return {
        "ip link": out("ip", "link", "show"), "ip addr": out("ip", "addr", "show"),
        "ip route": out("ip", "route", "show", "table", "all"), "ip -6 route": out("ip", "-6", "route", "show", "table", "all"),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "iptables-save": out("iptables-save"), "ip6tables-save": out("ip6tables-save"),
        "nft": out("nft", "list", "ruleset"),
        **{path: listing(path) for path in runtime_dirs},
        # Other labs come and go; a runtime's own namespaces (podman's netns-<uuid>) must not appear.
        "/run/netns": sorted(n for n in listing("/run/netns") or [] if n.startswith("netns-")),
    }


class Capture:
    text = ""

    @property
    def lines(self):
        return self.text.splitlines()


class LabFactory:
    """Creates labs with unique names (t<pid>x<n>) and takes them all down at close().

    make(hosts, controller, shared=True) returns the same lab for the same arguments within a
    session; shared=False always builds a fresh one (for tests that change or take down the lab).
    """

    def __init__(self, progress=weftlab._stderr):
        self.progress = progress
        self._seq = itertools.count(1)
        self._shared = {}
        self._all = []

    def make(self, hosts=2, controller=True, shared=True, external=False, tls=False, runtimes=False, ha=False):
        key = (hosts, controller, external, tls, runtimes, ha)
        if shared and key in self._shared:
            return self._shared[key]
        lab = Lab(f"t{os.getpid()}x{next(self._seq)}", hosts, controller=controller, external=external,
                  tls=tls, runtimes=runtimes, ha=ha, progress=self.progress)
        self._all.append(lab)
        if shared:
            self._shared[key] = lab
        return lab

    def close(self):
        errors = []
        for lab in self._all:
            try:
                lab.down()  # a no-op for labs a test already took down
            except weftlab.LabError as err:
                errors.append(f"{lab.name}: {err}")
        if errors:
            raise weftlab.LabError("lab teardown failed: " + "; ".join(errors))
