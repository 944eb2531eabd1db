"""The Prometheus exporter over a real core (its embedded NB, plain threads) with one host whose switch
is the in-memory FakeSwitch: what a scrape shows, parsed with prometheus_client's own parser."""
import pathlib
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.metrics import COUNTERS, ERROR_KINDS, PACKET_IN_KINDS
from fakeswitch import FakeSwitch  # tests/unit is on sys.path
from flows.plan import table_name

REPO = pathlib.Path(__file__).resolve().parents[2]


def scrape(core):
    """{metric family name: {(sample name, frozenset of labels): value}}."""
    families = {}
    for family in text_string_to_metric_families(core.metrics.exposition().decode()):
        families[family.name] = {(s.name, frozenset(s.labels.items())): s.value for s in family.samples}
    return families


def value(families, family, sample=None, **labels):
    return families[family].get((sample or family, frozenset(labels.items())))


def wait_for(check, timeout=10):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class StubAgent:
    """A host's OVSDB side as the core sees it, ready at once (no ovsdb-server for the host)."""
    ovsdb_connected = ready = True
    error = None
    uplink_plugged = False

    def __init__(self, core, name):
        self.core, self.name = core, name

    @property
    def host(self):
        return self.core.nb_state().hosts[self.name]

    def set_uplink(self, iface):
        pass

    def check_now(self):  # what a takeover asks of every agent: nothing to check here
        pass

    def cannot_unplug(self):  # its OVSDB is always there
        return None

    def settle_controller_settings(self):  # what an admitted switch asks: no vswitchd to reconfigure
        pass

    def stop(self):
        pass


class RoleSwitch(FakeSwitch):
    """The FakeSwitch taking the OpenFlow role (master or slave, with a generation id) it is asked."""
    role = None

    def request_role(self, role, generation, timeout=None):
        self.role = (role, generation)


@pytest.fixture
def joined(core, api):
    """A core with network blue and host h1, whose switch is a FakeSwitch."""
    return join_fake_host(core, api)


def join_fake_host(core, api, agent=StubAgent):
    """Network blue and host h1, its switch a FakeSwitch (returned), its OVSDB side an `agent`."""
    assert api.handle("POST", "/v1/networks", b'{"name": "blue", "cidr": "10.0.0.0/24"}')[0] == 201
    body = b'{"name": "h1", "encap_ip": "192.0.2.1", "ovsdb": "unix:/nonexistent/db.sock"}'
    assert api.handle("POST", "/v1/hosts", body)[0] == 201
    wait_for(lambda: "h1" in core.agents)  # the real one, which cannot reach that OVSDB: replaced
    core.agents["h1"].stop()
    core.agents["h1"] = agent(core, "h1")
    switch = RoleSwitch()
    core.switches["h1"] = switch
    core.host_changed("h1")
    wait_for(lambda: "h1" in core.syncs and core.syncs["h1"].in_sync)
    return switch


def test_a_fresh_core_exports_every_family_with_zeros_and_no_hosts(core):
    families = scrape(core)
    for name, (_, labels) in COUNTERS.items():
        assert f"weft_{name}" in families, name  # the parser names a counter's family without _total
        if not labels:  # shown from the start (failovers: 1 once this lone controller took the lock)
            assert value(families, f"weft_{name}", f"weft_{name}_total") is not None, name
    for kind in ERROR_KINDS:
        assert value(families, "weft_errors", "weft_errors_total", kind=kind) == 0
    assert value(families, "weft_nb_connected") == 1 and value(families, "weft_nb_loaded") == 1
    assert value(families, "weft_ports") == 0 and value(families, "weft_networks") == 0
    assert value(families, "weft_controller_role", role="active") == 1
    assert value(families, "weft_controller_role", role="standby") == 0
    assert value(families, "weft_port_up_seconds", "weft_port_up_seconds_count") == 0
    assert value(families, "weft_flows_frozen") == 0
    assert "process_cpu_seconds" in families  # the process collector: CPU, memory, file descriptors


def test_a_host_shows_its_connection_flows_per_table_and_zeroed_counters(core, joined):
    families = scrape(core)
    for flag in ("ovsdb_connected", "openflow_connected", "ready", "flows_in_sync"):
        assert value(families, f"weft_host_{flag}", host="h1") == 1, flag
    compiled = {}
    for flows in core.compiler.flows["h1"].values():
        for flow in flows:
            if hasattr(flow, "table"):
                compiled.setdefault(table_name(flow), set()).add(flow.key)
    shown = {dict(labels)["table"]: v for (_, labels), v in families["weft_flows"].items()}
    assert shown == {table: len(keys) for table, keys in compiled.items()} and shown
    # What the switch acknowledged is what it holds: the FakeSwitch's own flows, by table.
    on_switch = {}
    for flow in joined.flows.values():
        on_switch[table_name(flow)] = on_switch.get(table_name(flow), 0) + 1
    acked = {dict(labels)["table"]: v for (_, labels), v in families["weft_switch_flows"].items()}
    assert acked == on_switch
    for name, (_, labels) in COUNTERS.items():  # every one shown for the host, at 0 if nothing was counted
        if list(labels) == ["host"]:
            shown = value(families, f"weft_{name}", f"weft_{name}_total", host="h1")
            assert shown is not None and shown <= core.counters.get(name, host="h1"), name  # (audits go on)
    assert value(families, "weft_host_down", "weft_host_down_total", host="h1") == 0
    for kind in PACKET_IN_KINDS:
        assert value(families, "weft_packet_ins", "weft_packet_ins_total", host="h1", kind=kind) == 0


def test_a_new_port_raises_flows_ports_up_and_the_port_up_histogram(core, api, joined):
    before = scrape(core)
    assert api.handle("POST", "/v1/ports", b'{"name": "p1", "network": "blue"}')[0] == 201
    wait_for(lambda: "p1" in core.compiler.topo.ports)
    time.sleep(0.05)  # so that the latency measured is not 0 whatever the clock's resolution
    core.port_plugged("h1", "p1", 5)
    assert core.wait_port_up("p1", 10)
    wait_for(lambda: scrape(core)["weft_port_up_seconds"][("weft_port_up_seconds_count", frozenset())] == 1)
    after = scrape(core)
    assert value(after, "weft_ports") == 1 and value(after, "weft_ports_up") == 1
    assert value(after, "weft_port_up_seconds", "weft_port_up_seconds_sum") >= 0.05
    assert sum(after["weft_flows"].values()) > sum(before["weft_flows"].values())
    assert value(after, "weft_port_up_seconds", "weft_port_up_seconds_bucket", le="+Inf") == 1
    # Up once is counted once: later batches (another port) do not count p1 again.
    assert api.handle("POST", "/v1/ports", b'{"name": "p2", "network": "blue"}')[0] == 201
    core.port_plugged("h1", "p2", 6)
    assert core.wait_port_up("p2", 10)
    wait_for(lambda: scrape(core)["weft_port_up_seconds"][("weft_port_up_seconds_count", frozenset())] == 2)
    assert not core._attaching


def test_a_port_deleted_before_it_came_up_is_not_watched_any_more(core, api, joined):
    assert api.handle("POST", "/v1/ports", b'{"name": "p9", "network": "blue"}')[0] == 201
    wait_for(lambda: "p9" in core._attaching)
    assert api.handle("DELETE", "/v1/ports/p9")[0] == 200
    wait_for(lambda: "p9" not in core._attaching)
    assert value(scrape(core), "weft_port_up_seconds", "weft_port_up_seconds_count") == 0


def test_counters_are_exported_with_their_labels_and_unknown_names_too(core, joined):
    sent = core.counters.get("flow_mods", host="h1")  # by the switch's first sync
    failovers = core.counters.get("failovers")
    core.counters.inc("flow_mods", 7, host="h1")
    core.counters.inc("errors", kind="ovsdb_host")
    core.counters.inc("errors", kind="something_new")
    core.counters.inc("failovers")
    core.counters.inc("invented_later", host="h1")
    families = scrape(core)
    assert value(families, "weft_flow_mods", "weft_flow_mods_total", host="h1") == sent + 7
    assert value(families, "weft_errors", "weft_errors_total", kind="ovsdb_host") == 1
    assert value(families, "weft_errors", "weft_errors_total", kind="something_new") == 1
    assert value(families, "weft_errors", "weft_errors_total", kind="api_5xx") == 0
    assert value(families, "weft_failovers", "weft_failovers_total") == failovers + 1
    assert value(families, "weft_invented_later", "weft_invented_later_total", host="h1") == 1


def test_status_keys_other_parts_add_are_exported_when_present(core, joined, monkeypatch):
    real_host_status, real_nb_status = core.host_status, core.nb_status
    monkeypatch.setattr(core, "host_status", lambda name: {**real_host_status(name), "state": "down",
                                                           "last_answer_s": 12.5})
    monkeypatch.setattr(core, "nb_status", lambda: {**real_nb_status(), "clustered": True,
                                                    "leader": "tcp:127.0.0.1:6641"})
    monkeypatch.setattr(core, "role", "standby")
    monkeypatch.setattr(core, "epoch", 3, raising=False)
    families = scrape(core)
    assert value(families, "weft_host_state", host="h1", state="down") == 1
    assert value(families, "weft_host_state", host="h1", state="up") == 0
    assert value(families, "weft_host_last_answer_seconds", host="h1") == 12.5
    assert value(families, "weft_nb_clustered") == 1
    assert value(families, "weft_nb_leader_info", remote="tcp:127.0.0.1:6641") == 1
    assert value(families, "weft_controller_role", role="standby") == 1
    assert value(families, "weft_controller_role", role="active") == 0
    assert value(families, "weft_controller_epoch") == 3


def test_packet_ins_are_counted_by_host_and_kind(core, joined):
    core.packet_in(joined, table_id=0, in_port=1, frame=b"")
    core.packet_in(object(), table_id=0, in_port=1, frame=b"")  # not an admitted switch: not ours
    assert value(scrape(core), "weft_packet_ins", "weft_packet_ins_total", host="h1", kind="other") == 1


def test_every_counter_the_code_increments_is_described():
    """COUNTERS is where each lifetime counter is described: a new one must be added there."""
    used = set()
    for path in [*REPO.glob("controller/*.py"), *REPO.glob("ovsdb/*.py"), *REPO.glob("flows/*.py")]:
        used.update(re.findall(r"counters\.inc\(\s*[\"'](\w+)[\"']", path.read_text()))
    assert used - COUNTERS.keys() == set()
    assert {"packet_ins", "errors"} <= used


def test_a_scrape_before_the_core_has_started_says_the_nb_is_not_there(tmp_path):
    from controller.config import Config
    from controller.core import WeftCore
    from ovsdb.idl import ThreadHub
    families = scrape(WeftCore(ThreadHub, Config(state_dir=str(tmp_path / "state"))))
    assert value(families, "weft_nb_connected") == 0 and value(families, "weft_nb_loaded") == 0
    assert families["weft_ports"] == {} and families["weft_flows"] == {}


class AsActive:
    """The core as the active controller's API would see it: the write another controller makes."""
    role = "active"

    def __init__(self, core):
        self._core = core

    def __getattr__(self, name):
        return getattr(self._core, name)


def test_a_standby_does_not_time_ports_the_active_brings_up(core, joined, monkeypatch):
    from controller.api import NorthboundApi
    monkeypatch.setattr(core, "role", "standby")
    assert NorthboundApi(AsActive(core)).handle("POST", "/v1/ports", b'{"name": "p5", "network": "blue"}')[0] == 201
    wait_for(lambda: "p5" in core.compiler.topo.ports)
    monkeypatch.setattr(core, "role", "active")  # a takeover: p5 was not created on this one's watch
    core.port_plugged("h1", "p5", 7)
    assert core.wait_port_up("p5", 10)
    assert value(scrape(core), "weft_port_up_seconds", "weft_port_up_seconds_count") == 0
