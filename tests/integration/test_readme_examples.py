"""The README's NetworkPolicy and Service example (the block a user copies first) and its runtimes
walkthrough, run as written.

Each command of the block runs in one bash session, in order, with the lab named by WEFT_LAB so it
never meets another; its output is checked against what the README's comments say it does.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from weft.testing import runtimes_skip_reason, skip_reason

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(bool(skip_reason()), reason=skip_reason() or "")


def readme_block(after):
    """The first ```sh block of README.md after the line containing `after`, as commands (a
    heredoc stays with the command that opens it)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text[text.index(after):], re.S).group(1)
    commands, heredoc = [], None
    for line in block.splitlines():
        if heredoc is not None:
            commands[-1] += "\n" + line
            if line.strip() == heredoc:
                heredoc = None
            continue
        if not line.strip():
            continue
        commands.append(line)
        opened = re.search(r"<<'?(\w+)'?", line)
        heredoc = opened.group(1) if opened else None
    return commands


def run_block(commands, env, cwd):
    """[(command, its output, its exit status)] of the commands run in order in one bash."""
    marks = "\n".join(f"echo '=== {i}'; {cmd}\necho \"=== rc $?\"" for i, cmd in enumerate(commands))
    out = subprocess.run(["bash", "-c", marks], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=600).stdout
    results = []
    for i, cmd in enumerate(commands):
        text, rest = out.split(f"=== {i}\n", 1)[1].split("=== rc ", 1)
        results.append((cmd.split(" #")[0].strip(), text, int(rest.split("\n", 1)[0])))
    return results


def lab_env(name):
    """The environment of a user's shell with the tree's weft, its lab named `name` (WEFT_LAB)."""
    env = {**os.environ, "WEFT_LAB": name, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("WEFT_API", None)
    return env


def test_the_network_policy_and_service_example(tmp_path):
    name = f"rd{os.getpid() % 100000}"
    env = lab_env(name)
    try:
        results = run_block(readme_block("A first example, in a lab"), env, tmp_path)
    finally:  # the block ends with `weft lab down`; if it stopped before, the lab goes here
        subprocess.run([sys.executable, "-m", "weft.cli", "lab", "down", "--name", name],
                       env=env, capture_output=True, timeout=120)

    def outputs(command):
        found = [(text, code) for cmd, text, code in results if cmd == command]
        assert found, f"the README no longer runs {command!r}"
        return found
    assert all(code == 0 for cmd, _, code in results if not cmd.startswith("weft lab exec other")), \
        [(cmd, text) for cmd, text, code in results if code]
    [(plan, _)] = outputs("weft apply -f web.yaml -n blue --plan")
    assert "nothing was changed" in plan and "ACL_INGRESS_EVAL" in plan, plan
    first, again = outputs("weft apply -f web.yaml -n blue")
    assert "service/web created" in first[0] and "networkpolicy.networking.k8s.io/default-deny-ingress created" in first[0]
    assert "service/web unchanged" in again[0], again
    [(served, _)] = outputs("weft lab exec client -- socat -T2 - TCP:10.96.0.1:80,connect-timeout=2")
    assert served.strip() in ("web1", "web2"), served
    for command in ("weft lab exec other  -- socat -T2 - TCP:10.96.0.1:80,connect-timeout=2",
                    "weft lab exec other  -- socat -T2 - TCP:10.1.0.2:80,connect-timeout=2"):
        [(text, code)] = outputs(command)
        assert code != 0 and not text.strip(), (command, text)


def test_the_runtimes_walkthrough(tmp_path):
    """The README's `weft lab up --runtimes` block, as written: Docker networks on two hosts, a web
    server found by name on its host and by address across hosts, podman through weft-cni."""
    reason = runtimes_skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"rr{os.getpid() % 100000}"
    env = lab_env(name)
    try:
        results = run_block(readme_block("`weft lab up --runtimes` also runs the real container runtimes"), env,
                            tmp_path)
    finally:  # the block leaves the lab up, as a user would to go on
        subprocess.run([sys.executable, "-m", "weft.cli", "lab", "down", "--name", name],
                       env=env, capture_output=True, timeout=120)
    assert all(code == 0 for _, _, code in results), [(cmd, text) for cmd, text, code in results if code]
    said = {cmd: text for cmd, text, _ in results}
    fetched = [text for cmd, text in said.items() if "wget -qO-" in cmd]
    assert fetched == ["hello from weft/busybox\n"] * 2, fetched  # by name on h1, by address from h2
    (pinged,) = [text for cmd, text in said.items() if "podman h2 -- run" in cmd]
    assert "1 packets received" in pinged, pinged
    (networks,) = [text for cmd, text in said.items() if cmd.startswith("weft network list")]
    assert re.search(r"^blue\s", networks, re.M), networks
    (ports,) = [text for cmd, text in said.items() if cmd.startswith("weft port list")]
    assert re.search(r"^docker-\S+\s+blue\s+10\.50\.0\.\d+\s.*\sweb\s", ports, re.M), ports
