"""Lab helpers shared by the benchmarks that need a running lab (weft.lab / weft.testing)."""
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import _common  # also puts the repo on sys.path
from weft import lab as weftlab
from weft.testing import Lab

PY = sys.executable
BENCH = Path(__file__).resolve().parent


def quiet(msg):
    pass


def new_lab(tag, hosts=2):
    """A lab with a unique name (b<pid><tag>, at most 12 characters); the caller takes it down."""
    name = f"b{os.getpid() % 1000000}{tag}"[:12]
    return Lab(name, hosts, progress=quiet)


def api_unix(lab):
    """The lab's API on a unix socket (unix:...), reachable from inside host namespaces: the relay's
    (api_unix), or the API itself once the controller serves it there (api = unix:...)."""
    info = lab.info
    if info.get("api_unix"):
        return info["api_unix"]
    if str(info.get("api", "")).startswith("unix:"):
        return info["api"]
    raise RuntimeError(f"lab {lab.name} has no API on a unix socket (api = {info.get('api')!r})")


class LineProc:
    """A spawned lab process spoken to by lines on stdin/stdout; stdout lines land in a queue."""

    def __init__(self, lab, target, argv, what):
        self.proc = weftlab.spawn(lab.name, target, argv, what=what, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def get(self, timeout):
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise RuntimeError(f"process {self.proc.args} exited (status {self.proc.poll()})")
        return line

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=5)


def tcp_server(lab, container, port):
    """bench/_tcpserver.py (accept, one byte, close) listening on `port` in `container`; the
    caller terminates it (lab.down does too)."""
    server = weftlab.spawn(lab.name, container, [PY, BENCH / "_tcpserver.py", port, lab.dir / f"{container}.tcp"],
                           what=f"{container}: tcp server {port}", stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while f":{port} " not in lab.exec(container, "ss", "-Hltn").stdout:
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no server on port {port} in {container}")
        time.sleep(0.05)
    return server


# ---------------------------------------------------------------- the lab's processes, from /proc

CLK_TCK = os.sysconf("SC_CLK_TCK")


def lab_pid(lab, what):
    """The pid the lab recorded for `what` ("controller", "h1 ovs-vswitchd", ...)."""
    pids = [e["pid"] for e in lab.info["pids"] if e["what"] == what]
    if len(pids) != 1:
        raise RuntimeError(f"lab {lab.name} records {len(pids)} processes named {what!r}")
    return pids[0]


def nb_server_pid(lab):
    """The controller's embedded NB ovsdb-server (it writes its pidfile in the lab's controller dir)."""
    return int((lab.dir / "controller" / "nb.pid").read_text().strip())


def cpu_seconds(pid):
    """utime + stime of a process, all its threads, in seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def control_plane_pids(lab):
    """{label: pid} of the processes whose CPU a control-plane benchmark reports: the controller,
    its NB server and every host's ovs-vswitchd."""
    pids = {"controller": lab_pid(lab, "controller"), "NB ovsdb-server": nb_server_pid(lab)}
    for host in lab.info["hosts"]:
        pids[f"{host} ovs-vswitchd"] = lab_pid(lab, f"{host} ovs-vswitchd")
    return pids


def check_controller_tree(lab):
    """Fails unless the lab's controller imports Weft from this source tree: PYTHONPATH starts with
    it (weft.lab puts its own tree there, and this process imported weft.lab from the tree)."""
    if Path(weftlab.__file__).resolve().parent.parent != _common.REPO:
        raise RuntimeError(f"weft.lab was imported from {weftlab.__file__}, not from {_common.REPO}")
    env = Path(f"/proc/{lab_pid(lab, 'controller')}/environ").read_bytes().split(b"\0")
    path = next((e[len(b"PYTHONPATH="):].decode() for e in env if e.startswith(b"PYTHONPATH=")), "")
    if path.split(os.pathsep)[0] != str(_common.REPO):
        raise RuntimeError(f"the controller runs with PYTHONPATH={path!r}, not this tree ({_common.REPO}) first")


def wait_idle(pid, busy=0.1, interval=0.5, timeout=60.0):
    """Waits until the process used less than `busy` of a CPU over `interval` (work queued behind the
    last requests is done); returns the seconds waited (or timeout, if it never went quiet)."""
    t0 = time.monotonic()
    while True:
        c0 = cpu_seconds(pid)
        time.sleep(interval)
        if cpu_seconds(pid) - c0 < busy * interval or time.monotonic() - t0 >= timeout:
            return time.monotonic() - t0
