"""Lab helpers shared by the benchmarks that need a running lab (weft.lab / weft.testing)."""
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)
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
    """The lab's API relay socket (unix:...), reachable from inside host namespaces."""
    return lab.info["api_unix"]


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
