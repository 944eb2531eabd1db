"""The embedded NB: a standalone ovsdb-server on a db file in the controller's state directory.

Used when no NB remote is configured. It runs as the controller's child; if a previous controller died
without stopping it, the next one adopts the server it finds on the same db file instead of failing.
A db file made with an older schema is converted to this one at start, its rows kept: offline
(`ovsdb-tool convert`), or online (`ovsdb-client convert`) when an adopted server holds the file,
whose lock `ovsdb-tool` cannot take. A db file of a newer schema is refused: converting it down
would drop the columns this Weft does not know.
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
        running = self._running_pid()
        if running:
            self._upgrade(["ovsdb-client", "convert", self.remote, self.schema_path])
            self.pid = running
            return self.remote
        if not os.path.exists(self.db_path):
            _run(["ovsdb-tool", "create", self.db_path, self.schema_path])
        self._upgrade(["ovsdb-tool", "convert", self.db_path, self.schema_path])
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

    def _upgrade(self, convert):
        """Runs `convert` if the db file's schema is not this one; refuses a newer one."""
        have = _version(_run(["ovsdb-tool", "db-version", self.db_path]))
        want = _version(_run(["ovsdb-tool", "schema-version", self.schema_path]))
        if have > want:
            raise EmbeddedServerError(
                f"{self.db_path} has NB schema {'.'.join(map(str, have))}, newer than this controller's "
                f"{'.'.join(map(str, want))}: run the Weft that wrote it (converting down would lose data)")
        if _run(["ovsdb-tool", "needs-conversion", self.db_path, self.schema_path]).strip() == "yes":
            _run(convert)

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


def _version(text):
    return tuple(int(part) for part in text.strip().split("."))


def _run(argv):
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        raise EmbeddedServerError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout
