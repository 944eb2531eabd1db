"""An upgraded controller keeps its NB: a db file written with an older schema (1.2.0, before labels
and named ports; 1.3.0, before policies and services) is converted at start with its rows, also when a
server left running by the old controller still holds it; a db file of a newer schema is refused
rather than cut down."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from controller.api import NorthboundApi
from controller.config import Config
from controller.core import WeftCore
from ovsdb import server
from ovsdb.idl import ThreadHub
from test_api import call  # tests/unit is on sys.path

# What each schema version added: (columns by table, tables)
ADDED = {"1.3.0": ({"Network": ("labels",), "Port": ("labels", "named_ports")}, ()),
         "1.4.0": ({}, ("Policy", "Service")),
         "1.5.0": ({}, ("Controller", "MAC_Binding"))}
with open(server.SCHEMA_PATH) as f:
    CURRENT = json.load(f)["version"]

pytestmark = pytest.mark.skipif(not shutil.which("ovsdb-server"),
                                reason="ovsdb-server is not installed (scripts/setup.sh installs it)")


def old_schema(path, version):
    """This schema as it was at `version`: without what the versions after it added."""
    with open(server.SCHEMA_PATH) as f:
        schema = json.load(f)
    schema["version"] = version
    for later, (columns, tables) in ADDED.items():
        if _version(later) > _version(version):
            for table, names in columns.items():
                for column in names:
                    del schema["tables"][table]["columns"][column]
            for table in tables:
                del schema["tables"][table]
    path.write_text(json.dumps(schema))
    return str(path)


def _version(text):
    return tuple(map(int, text.split(".")))


def old_nb(tmp_path, version="1.2.0"):
    """A state directory whose nb.db was made with an old schema and holds a network and a port."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    db = str(state / "nb.db")
    subprocess.run(["ovsdb-tool", "create", db, old_schema(tmp_path / "old.ovsschema", version)], check=True)
    subprocess.run(["ovsdb-tool", "transact", db, json.dumps([
        "Weft_NB",
        {"op": "insert", "table": "Network", "uuid-name": "n",
         "row": {"name": "blue", "vni": 100, "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1", "mtu": 1450}},
        {"op": "insert", "table": "Port",
         "row": {"name": "p1", "key": 1, "network": ["named-uuid", "n"], "mac": "02:00:00:00:00:05",
                 "ip": "10.0.0.5"}}])], check=True, capture_output=True)
    return state


def db_version(state):
    return subprocess.run(["ovsdb-tool", "db-version", str(state / "nb.db")], check=True, capture_output=True,
                          text=True).stdout.strip()


def start_core(state):
    core = WeftCore(ThreadHub, Config(state_dir=str(state), underlay_mtu=1600))
    core.start()
    core.nb.conn.wait_synced(10)
    core.wait_active(10)
    return core


def test_the_schema_history_ends_at_this_schema():
    assert max(ADDED, key=_version) == CURRENT


@pytest.mark.parametrize("version", ["1.2.0", "1.3.0"])
def test_an_old_nb_file_is_converted_with_its_rows(tmp_path, version):
    state = old_nb(tmp_path, version)
    core = start_core(state)
    try:
        assert db_version(state) == CURRENT
        nb = core.nb_state()
        assert (nb.networks["blue"].cidr, nb.networks["blue"].labels) == ("10.0.0.0/24", {})
        assert (nb.ports["p1"].ip, nb.ports["p1"].labels, nb.ports["p1"].named_ports) == ("10.0.0.5", {}, {})
        api = NorthboundApi(core)
        status, port = call(api, "PUT", "/v1/ports/p1/labels", {"labels": {"app": "web"}})
        assert status == 200 and port["labels"] == {"app": "web"}
        core.nb.apply(lambda taken: [("Policy", "blue", "deny", {"manifest": "{}"})])  # the new tables work
        assert list(core.nb_state().policies) == ["blue/deny"]
    finally:
        core.stop()


def test_a_server_left_running_on_an_old_file_is_converted_online(tmp_path):
    """The old controller died and left its ovsdb-server: `ovsdb-tool convert` cannot take the file's
    lock then, so the new one converts through the running server and adopts it."""
    state = old_nb(tmp_path)
    nb = server.EmbeddedNbServer(str(state))
    proc = subprocess.Popen(["ovsdb-server", nb.db_path, "--remote=punix:" + nb.sock_path,
                             "--pidfile=" + nb.pid_path, "--unixctl=" + nb.ctl_path, "--no-chdir",
                             "-vconsole:off", "--log-file=" + nb.log_path], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (os.path.exists(nb.sock_path) and os.path.exists(nb.pid_path)):
            assert proc.poll() is None and time.monotonic() < deadline, "ovsdb-server did not start"
            time.sleep(0.02)
        core = start_core(state)
        try:
            assert core.embedded.pid == proc.pid  # adopted, not started anew
            assert core.nb_state().ports["p1"].labels == {}
            answer = subprocess.run(["ovsdb-client", "get-schema-version", nb.remote, "Weft_NB"],
                                    capture_output=True, text=True, check=True)
            assert answer.stdout.strip() == CURRENT
        finally:
            core.stop()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_a_newer_nb_file_is_refused_not_cut_down(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with open(server.SCHEMA_PATH) as f:
        schema = json.load(f)
    schema["version"] = "9.0.0"
    (tmp_path / "new.ovsschema").write_text(json.dumps(schema))
    subprocess.run(["ovsdb-tool", "create", str(state / "nb.db"), str(tmp_path / "new.ovsschema")], check=True)
    with pytest.raises(server.EmbeddedServerError, match=f"NB schema 9.0.0, newer than this controller's {CURRENT}"):
        server.EmbeddedNbServer(str(state)).start()
    assert db_version(state) == "9.0.0"
