"""Writes while the leader of a 3-member Raft NB is killed (issue 11): each is answered committed,
refused (nothing written; an election's writes wait for the new leader, then commit, or fail as
Unavailable), or of unknown outcome with its name, never half-applied, and no answer is wrong against
the database afterwards. A real cluster of ovsdb-servers (Raft over loopback TCP)."""
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from ovsdb import rpc, server
from ovsdb.idl import OutcomeUnknown, ThreadHub, TransactionError
from ovsdb.nb import DATABASE, Nb

pytestmark = pytest.mark.skipif(not shutil.which("ovsdb-server"),
                                reason="ovsdb-server is not installed (scripts/setup.sh installs it)")
MEMBERS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    members = []
    for i in range(MEMBERS):
        d = tmp_path / f"nb{i}"
        d.mkdir()
        m = {"db": str(d / "nb.db"), "sock": str(d / "nb.sock"), "ctl": str(d / "nb.ctl"),
             "pid": str(d / "nb.pid"), "raft": f"tcp:127.0.0.1:{free_port()}"}
        if i == 0:
            subprocess.run(["ovsdb-tool", "create-cluster", m["db"], server.SCHEMA_PATH, m["raft"]], check=True)
        else:
            subprocess.run(["ovsdb-tool", "join-cluster", m["db"], DATABASE, m["raft"], members[0]["raft"]],
                           check=True)
        subprocess.run(["ovsdb-server", m["db"], f"--remote=punix:{m['sock']}", f"--unixctl={m['ctl']}",
                        f"--pidfile={m['pid']}", f"--log-file={d}/nb.log", "--detach", "--no-chdir",
                        "-vconsole:off"], check=True)
        members.append(m)
    deadline = time.monotonic() + 30
    while leader(members) is None or not all("Status: cluster member" in status(m) for m in members):
        assert time.monotonic() < deadline, "the cluster elected no leader"
        time.sleep(0.1)
    yield members
    for m in members:
        try:
            os.kill(int(open(m["pid"]).read()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def status(member):
    result = subprocess.run(["ovs-appctl", "-t", member["ctl"], "cluster/status", DATABASE],
                            capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def leader(members):
    return next((m for m in members if "\nRole: leader\n" in status(m)), None)


def test_writes_while_the_leader_is_killed_are_answered_honestly(cluster, caplog):
    nb = Nb(ThreadHub, ",".join("unix:" + m["sock"] for m in cluster)).start()
    nb.conn.wait_synced(10)
    answers, stop = [], threading.Event()

    def write(i):
        n = 0
        while not stop.is_set():
            n += 1
            name = f"r{i}-{n}"
            try:
                nb.create_router(name, lambda taken, in_use: next(k for k in range(100, 10**6) if k not in taken))
                answers.append((name, "ok", time.monotonic()))
            except OutcomeUnknown:
                answers.append((name, "unknown", time.monotonic()))
            except TransactionError as err:  # refused, or Unavailable: nothing written
                answers.append((name, f"definite: {err}", time.monotonic()))
                time.sleep(0.05)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    killed = leader(cluster)
    killed_at = time.monotonic()
    os.kill(int(open(killed["pid"]).read()), signal.SIGKILL)
    time.sleep(6)
    stop.set()
    for thread in threads:
        thread.join(30)
    nb.stop()
    survivor = leader([m for m in cluster if m is not killed])
    rows = rpc.transact("unix:" + survivor["sock"], DATABASE, [{"op": "select", "table": "Router", "where": []}])
    in_nb = {r["name"] for r in rows[0]["rows"]}
    ok = [n for n, a, _ in answers if a == "ok"]
    definite = [(n, a) for n, a, _ in answers if a.startswith("definite")]
    assert len(ok) > 20 and not [n for n in ok if n not in in_nb], "an acknowledged write is missing"
    assert not [(n, a) for n, a in definite if n in in_nb], "a refused write is in the NB"
    assert len(in_nb) <= len(answers)  # nothing written twice or behind an answer's back
    assert any(a == "ok" and t > killed_at + 1 for _, a, t in answers)  # the new leader takes writes
    lost = sum("with a transaction in flight" in r.message for r in caplog.records)
    print(f"\nleader kill: {len(ok)} committed, {len(definite)} refused, "
          f"{sum(1 for _, a, _ in answers if a == 'unknown')} unknown, {lost} answer(s) lost and checked; "
          f"{definite[:2]}")
