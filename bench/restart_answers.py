"""Honest answers around a restart (issue 11): concurrent creates through the API while the controller
gets SIGTERM and is started again, or its embedded NB server is killed (then the controller restarted).

A real controller on a unix socket in its own directory (weft.testing.Controller), 6 writer threads
creating ports and networks (each name once) as fast as it answers. Per round: how the writes were
answered (2xx, a definite error, unknown outcome), how many answers were wrong against the NB as the
database has it (2xx but absent, or a definite error but present), SIGTERM to exit, and the start of
the new controller to its first loaded answer.

    .venv/bin/python bench/restart_answers.py [--rounds 5] [--fault sigterm|nb-kill]
"""
import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from weft import lab as weftlab  # noqa: E402
from weft.client import ApiClient, ApiError  # noqa: E402
from weft.testing import Controller  # noqa: E402

WRITERS = 6


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def writer(socket_path, i, answers, stop):
    client = ApiClient(f"unix:{socket_path}", timeout=30)
    n = 0
    while not stop.is_set():
        n += 1
        kind, name = ("networks", f"n{i}-{n}") if n % 3 == 0 else ("ports", f"p{i}-{n}")
        body = {"name": name, "cidr": "10.200.0.0/24"} if kind == "networks" else {"name": name, "network": "base"}
        try:
            client.post(f"/v1/{kind}", body)
            answers.append((kind, name, "ok", 201))
        except ApiError as err:
            answers.append((kind, name, "unknown" if err.details.get("outcome") == "unknown" else "definite",
                            err.status))
            time.sleep(0.01)


def first_loaded_answer(socket_path, started, timeout=60):
    client = ApiClient(f"unix:{socket_path}", timeout=5)
    while time.monotonic() - started < timeout:
        try:
            client.get("/v1/status")
            return time.monotonic() - started
        except ApiError:
            time.sleep(0.005)
    return float("nan")


def one_round(fault):
    directory = tempfile.mkdtemp(prefix="weft-bench-honest-", dir="/tmp")
    ctl = None
    try:
        ctl = Controller(directory)
        ctl.api.post("/v1/networks", {"name": "base", "cidr": "10.100.0.0/16"})
        answers, stop = [], threading.Event()
        threads = [threading.Thread(target=writer, args=(ctl.socket, i, answers, stop), daemon=True)
                   for i in range(WRITERS)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        exit_s = float("nan")
        if fault == "nb-kill":
            os.kill(int((ctl.state_dir / "nb.pid").read_text()), signal.SIGKILL)
            time.sleep(7)
        t0 = time.monotonic()
        ctl.proc.send_signal(signal.SIGTERM)
        ctl.proc.wait(30)
        exit_s = time.monotonic() - t0
        # Start the next one without the fixture's wait, to time its first loaded answer ourselves.
        serving, weftlab.wait_until_serving = weftlab.wait_until_serving, lambda *a, **k: None
        try:
            started = time.monotonic()
            ctl = Controller(directory)
        finally:
            weftlab.wait_until_serving = serving
        loaded_s = first_loaded_answer(ctl.socket, started)
        time.sleep(1.5)
        stop.set()
        for thread in threads:
            thread.join(60)
        rows = ctl.nb_rows()
        in_nb = {kind: {json.loads(r)["name"] for r in rows[table]}
                 for table, kind in (("Port", "ports"), ("Network", "networks"))}
        wrong = sum(1 for kind, name, outcome, _ in answers
                    if (outcome == "ok") != (name in in_nb[kind]) and outcome != "unknown")
        count = {o: sum(1 for a in answers if a[2] == o) for o in ("ok", "definite", "unknown")}
        statuses = sorted({str(a[3]) for a in answers if a[2] == "definite"})
        return {**count, "wrong": wrong, "statuses": statuses, "exit_s": exit_s, "loaded_s": loaded_s}
    finally:
        if ctl:
            ctl.stop()
        shutil.rmtree(directory)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fault", choices=("sigterm", "nb-kill"), default="sigterm")
    args = parser.parse_args()
    results = []
    for i in range(args.rounds):
        result = one_round(args.fault)
        results.append(result)
        print(f"round {i + 1}: {result}", flush=True)
    print(f"\n{args.fault}, {args.rounds} rounds: wrong answers {sum(r['wrong'] for r in results)} in total; "
          f"median 2xx {median([r['ok'] for r in results])}, definite {median([r['definite'] for r in results])}, "
          f"unknown {median([r['unknown'] for r in results])}; SIGTERM to exit {median([r['exit_s'] for r in results]):.2f} s; "
          f"start to first loaded answer {median([r['loaded_s'] for r in results]):.2f} s")


if __name__ == "__main__":
    main()
