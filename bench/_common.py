"""Shared helpers for Weft's benchmarks (bench/*.py): machine description, statistics, tables."""
import datetime
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# Subprocesses (the lab's controller, `python -m weft.cli`) use this tree too, not the copy installed
# in the venv's site-packages.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


def machine():
    """One line naming the machine: nproc, CPU model, kernel, OVS and Python versions."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ovs = subprocess.run(["ovs-vsctl", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        ovs = ovs.split()[-1]
    except OSError:
        ovs = "not installed"
    return (f"{os.cpu_count()} vCPU ({model}), kernel {platform.release()}, OVS {ovs}, "
            f"Python {platform.python_version()}, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-len(s) * p // 100) - 1))
    return s[int(k)]


def median(values):
    return statistics.median(values)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


def header(title, argv):
    print(f"## {title}\n")
    print(f"Machine: {machine()}  ")
    print(f"Command: `.venv/bin/python {' '.join(argv)}`\n")
