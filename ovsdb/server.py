"""The embedded NB: a standalone ovsdb-server on a db file in the controller's state directory.

Used when no NB remote is configured. It runs as the controller's child; if a previous controller died
without stopping it, the next one adopts the server it finds on the same db file instead of failing.
"""
import os
import signal
import subprocess
import time

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "weft_nb.ovsschema")


class EmbeddedServerError(RuntimeError):
    pass


class EmbeddedNbServer:
    def __init__(self, state_dir, schema_path=SCHEMA_PATH):
        self.state_dir = os.path.abspath(state_dir)
        self.schema_path = schema_path
        self.db_path = os.path.join(self.state_dir, "nb.db")
        self.sock_path = os.path.join(self.state_dir, "nb.sock")
        self.pid_path = os.path.join(self.state_dir, "nb.pid")
        self.ctl_path = os.path.join(self.state_dir, "nb.ctl")
        self.log_path = os.path.join(self.state_dir, "nb.log")
        self.pid = None
        self._proc = None

    @property
    def remote(self):
        return "unix:" + self.sock_path

    def start(self, timeout=10.0):
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)  # the NB socket and the API tokens live here
        self._prepare_db()
        running = self._running_pid()
        if running:
            self.pid = running
            return self.remote
        proc = subprocess.Popen(
            ["ovsdb-server", self.db_path, "--remote=punix:" + self.sock_path, "--pidfile=" + self.pid_path,
             "--unixctl=" + self.ctl_path, "--log-file=" + self.log_path, "--no-chdir", "-vconsole:off"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)  # a Ctrl-C to the controller must not kill the NB under it
        self.pid, self._proc = proc.pid, proc
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock_path):
            if proc.poll() is not None:
                raise EmbeddedServerError(f"ovsdb-server for the NB exited: {proc.stderr.read().decode().strip()}")
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"ovsdb-server did not create {self.sock_path} in {timeout:.0f} s")
            time.sleep(0.02)
        return self.remote

    def stop(self):
        if not self.pid:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        # Poll rather than Popen.wait(): under eventlet's monkey-patching the latter stalled for seconds.
        for _ in range(500):
            if self._proc:
                self._proc.poll()  # reaps our child, so it does not linger as a zombie
            if not _alive(self.pid):
                break
            time.sleep(0.01)
        self.pid = self._proc = None

    def _prepare_db(self):
        if not os.path.exists(self.db_path):
            _run(["ovsdb-tool", "create", self.db_path, self.schema_path])
        elif _run(["ovsdb-tool", "needs-conversion", self.db_path, self.schema_path]).strip() == "yes":
            _run(["ovsdb-tool", "convert", self.db_path, self.schema_path])

    def _running_pid(self):
        """The pid of an ovsdb-server still serving our db file (left by a controller that died)."""
        try:
            pid = int(open(self.pid_path).read().strip())
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if self.db_path.encode() in cmdline and _alive(pid) else None


def _alive(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _run(argv):
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        raise EmbeddedServerError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout
