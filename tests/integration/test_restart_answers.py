"""Honest answers around restarts (issue 11): many concurrent creates through the API of a real
controller while it gets SIGTERM and is started again (or its NB server is killed): every write
answered 2xx is in the NB, every one answered with a definite error is not, and those whose outcome is
unknown say so with their name. Reads polled from the first moment the new controller answers never
see less than was there before (503 until the NB is loaded, never an empty list)."""
import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time

import pytest

from weft.client import ApiClient, ApiError
from weft.testing import Controller, skip_reason

WRITERS = 6


@contextlib.contextmanager
def controller_dir():
    """A directory for one controller after another; the last one running is stopped at the end."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    directory = tempfile.mkdtemp(prefix="weft-honest-", dir="/tmp")
    held = {}
    try:
        yield directory, held
    finally:
        if held.get("ctl"):
            held["ctl"].stop()
        shutil.rmtree(directory)


class Writers:
    """WRITERS threads creating ports (and every third a network), each name once, until stopped;
    every answer recorded as (kind, name, "ok" | "definite" | "unknown", status, message)."""

    def __init__(self, socket_path):
        self.answers, self._stop = [], threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(socket_path, i), daemon=True)
                        for i in range(WRITERS)]
        for thread in self.threads:
            thread.start()

    def _write(self, socket_path, i):
        client = ApiClient(f"unix:{socket_path}", timeout=30)
        n = 0
        while not self._stop.is_set():
            n += 1
            kind, name = ("networks", f"n{i}-{n}") if n % 3 == 0 else ("ports", f"p{i}-{n}")
            body = {"name": name, "cidr": "10.200.0.0/24"} if kind == "networks" else {"name": name, "network": "base"}
            try:
                client.post(f"/v1/{kind}", body)
                self.answers.append((kind, name, "ok", 201, ""))
            except ApiError as err:
                unknown = err.details.get("outcome") == "unknown"
                self.answers.append((kind, name, "unknown" if unknown else "definite", err.status, err.message))
                if unknown:
                    assert err.details.get("name") == name, err.message
                else:
                    time.sleep(0.01)  # the controller is away: do not spin

    def stop(self):
        self._stop.set()
        for thread in self.threads:
            thread.join(60)


class Reader:
    """Polls GET /v1/ports as fast as it can; records every answer that holds fewer ports than `floor`."""

    def __init__(self, socket_path, floor):
        self.floor, self.short, self.counts = set(floor), [], {"ok": 0, "503": 0, "away": 0}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(socket_path,), daemon=True)
        self.thread.start()

    def _read(self, socket_path):
        client = ApiClient(f"unix:{socket_path}", timeout=10)
        while not self._stop.is_set():
            try:
                names = {p["name"] for p in client.get("/v1/ports")}
                self.counts["ok"] += 1
                if not self.floor <= names:
                    self.short.append(len(names))
            except ApiError as err:
                self.counts["503" if err.status == 503 else "away"] += 1
                time.sleep(0.005)
                if err.status not in (None, 503):
                    self.short.append(err.message)

    def stop(self):
        self._stop.set()
        self.thread.join(30)


def nb_names(ctl):
    rows = ctl.nb_rows()
    return {kind: {json.loads(r)["name"] for r in rows[table]} for table, kind in (("Port", "ports"),
                                                                                   ("Network", "networks"))}


def check(writers, ctl):
    """What the issue asks of the answers, against the NB as the database itself has it."""
    in_nb = nb_names(ctl)
    by = {"ok": [], "definite": [], "unknown": []}
    for kind, name, outcome, status, message in writers.answers:
        by[outcome].append((kind, name, status, message))
    lost = [(k, n) for k, n, _, _ in by["ok"] if n not in in_nb[k]]
    wrongly_refused = [(k, n, s, m) for k, n, s, m in by["definite"] if n in in_nb[k]]
    assert not lost, f"acknowledged but not in the NB: {lost[:5]}"
    assert not wrongly_refused, f"answered with an error, yet committed: {wrongly_refused[:5]}"
    # Names are unique and the network exists: a 409 or a 500 would be a write mistaken for another.
    statuses = {s for _, _, s, _ in by["definite"]}
    assert statuses <= {None, 503}, [d for d in by["definite"] if d[2] not in (None, 503)][:5]
    assert len(by["ok"]) > 20
    return {k: len(v) for k, v in by.items()}


def test_creates_around_a_sigterm_and_restart_are_answered_honestly(capsys):
    with controller_dir() as (directory, held):
        ctl = held["ctl"] = Controller(directory)
        ctl.api.post("/v1/networks", {"name": "base", "cidr": "10.100.0.0/16"})
        writers = Writers(ctl.socket)
        time.sleep(1.5)
        before = {p["name"] for p in ctl.api.get("/v1/ports")}
        reader = Reader(ctl.socket, before)
        assert "p0-1" in before
        waited = {}  # a wait in flight at SIGTERM is answered at once, with the port as it is

        def wait():
            try:
                waited.update(ctl.api.get("/v1/ports/p0-1?wait_up=30"))
            except ApiError as err:  # reported below
                waited["error"] = err
        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(1.5)  # for the wait to reach the controller, busy with the writers
        signalled = time.monotonic()
        ctl.proc.send_signal(signal.SIGTERM)
        assert ctl.proc.wait(15) == 0
        waiter.join(5)
        assert waited.get("name") == "p0-1" and waited["up"] is False, waited
        assert time.monotonic() - signalled < 8
        ctl = held["ctl"] = Controller(directory)
        time.sleep(1.5)
        writers.stop()
        reader.stop()
        counts = check(writers, ctl)
        assert not reader.short, f"reads that held less than before the restart: {reader.short[:5]}"
        assert reader.counts["ok"] > 0
        with capsys.disabled():
            print(f"\nSIGTERM and restart: answers {counts}, reads {reader.counts}")


def test_creates_around_a_kill_of_the_nb_server_are_answered_honestly(capsys):
    """kill -9 of the (embedded) NB server under the writes: they fail as Unavailable or unknown
    within the IDL's patience (5 s); the controller is then restarted, which starts the NB again."""
    with controller_dir() as (directory, held):
        ctl = held["ctl"] = Controller(directory)
        ctl.api.post("/v1/networks", {"name": "base", "cidr": "10.100.0.0/16"})
        writers = Writers(ctl.socket)
        time.sleep(1.5)
        nb_pid = int((ctl.state_dir / "nb.pid").read_text())
        os.kill(nb_pid, signal.SIGKILL)
        time.sleep(7)  # past the patience: writes queued or in flight meanwhile have answered
        ctl.stop()
        ctl = held["ctl"] = Controller(directory)
        time.sleep(1.5)
        writers.stop()
        counts = check(writers, ctl)
        with capsys.disabled():
            print(f"\nNB kill -9, then controller restart: answers {counts}")
