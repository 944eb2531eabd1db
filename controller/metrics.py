"""Prometheus metrics of one controller (GET /metrics, controller/http.py): what the core knows, read
from it at scrape time, and the two histograms the core and the API feed as things happen.

Framework-free, like the core. Each core has its own CollectorRegistry (tests make several cores in
one process; the global default registry would mix them). Names follow Prometheus' conventions:
`weft_` first, base units in the name (`_seconds`), `_total` for counters. COUNTERS below is the
one place the lifetime counters of core.counters (controller/counters.py) are described; each is
exported even at 0 (for every known host, where it has a host label), so dashboards show no gaps.
"""
import prometheus_client
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from flows.model import Flow
from flows.plan import table_name

prometheus_client.disable_created_metrics()  # a *_created series beside every histogram: noise here

HOSTS = "every host in the NB"  # the values of a host label
PACKET_IN_KINDS = ("dns", "service_reject", "other")
ERROR_KINDS = ("flow_sync", "nb_write", "ovsdb_host", "api_5xx", "reconcile")
# core.counters name -> (help, {label: the values it is shown with at 0}). Exported as weft_<name>_total.
COUNTERS = {
    "flow_mods": ("Flow, group and meter modifications sent to a host's switch.", {"host": HOSTS}),
    "flow_batches": ("Batches of modifications sent to a host's switch, each ended by a barrier.", {"host": HOSTS}),
    "resyncs": ("Full reads of a host's switch, with the difference sent.", {"host": HOSTS}),
    "bundles": ("Atomic bundles sent to a host's switch (the full desired set, after a (re)connect).",
                {"host": HOSTS}),
    "drift_repairs": ("Entries an audit found different from the desired set on a host's switch and put back.",
                      {"host": HOSTS}),
    "audits": ("Audits of a host's switch against the desired set.", {"host": HOSTS}),
    "packet_ins": ("Packets a host's switch sent up to the controller, by kind (dns, service_reject; other: "
                   "anything else, which proactive forwarding never sends).",
                   {"host": HOSTS, "kind": PACKET_IN_KINDS}),
    "errors": ("Errors by kind (flow_sync, nb_write, ovsdb_host, api_5xx, reconcile, ...).", {"kind": ERROR_KINDS}),
    "failovers": ("Times this controller became the active one.", {}),
    "host_down": ("Times a host was marked down (its switch unanswered past the grace period).", {"host": HOSTS}),
}
ROLES = ("active", "standby")
HOST_STATES = ("connecting", "up", "down")
API_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")

PORT_UP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The registry of one core: `port_up_seconds` and `api_request()` are fed as things happen,
    everything else is read from `core` when scraped (`exposition()`)."""

    # What prometheus_client's own exporter answers a scraper that asks for nothing newer: every
    # Prometheus reads it, and Weft's names need none of the newer format's escaping.
    content_type = CONTENT_TYPE_PLAIN_0_0_4

    def __init__(self, core):
        self.registry = CollectorRegistry()
        self.registry.register(CoreCollector(core))
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, resident memory, fds
        self._counters = core.counters
        self.port_up_seconds = Histogram(
            "weft_port_up_seconds", "From the first reconcile pass that saw the port's NB row (once the write "
            "creating it committed and reached this controller; not the attach's start, before that write) to "
            "the barrier reply that made it up on every host that needs it.", buckets=PORT_UP_BUCKETS,
            registry=self.registry)
        self._api_seconds = Histogram(
            "weft_api_request_seconds", "API requests, from their arrival to their answer, by method and status "
            "class (requests with wait_up include the wait).", ("method", "code"), buckets=API_BUCKETS,
            registry=self.registry)

    def api_request(self, method, status, seconds):
        """An API request answered with `status` after `seconds`."""
        self._api_seconds.labels(method if method in API_METHODS else "other", f"{status // 100}xx").observe(seconds)
        if status >= 500:
            self._counters.inc("errors", kind="api_5xx")

    def exposition(self):
        """The Prometheus text format of everything, as bytes."""
        return prometheus_client.generate_latest(self.registry)


class CoreCollector:
    """Reads the core at scrape time. Keys that other parts of the core add to host_status and
    nb_status (`state`, `leader`, `clustered`) are read when present."""

    def __init__(self, core):
        self.core = core

    def collect(self):
        core = self.core
        loaded = core.nb_loaded()
        state = core.nb_state() if loaded else None
        hosts = sorted(state.hosts) if state else []
        yield from self._hosts(hosts)
        yield from self._flows(hosts)
        yield from self._nb(state)
        yield from _counters(core.counters.samples(), hosts)
        ports = list(state.ports.values()) if state else []  # (declared without a value until loaded)
        yield _gauge("weft_ports", "Ports in the NB.", len(ports) if state else None)
        yield _gauge("weft_ports_up", "Ports up: bound, plugged, and their flows acknowledged by every host that "
                                      "needs them.", sum(1 for p in ports if core.port_up(p.name)) if state else None)
        yield _gauge("weft_networks", "Networks in the NB.", len(state.networks) if state else None)

    def _hosts(self, hosts):
        flags = {key: GaugeMetricFamily(f"weft_host_{key}", doc, labels=["host"]) for key, doc in (
            ("ovsdb_connected", "Whether the controller is connected to the host's OVSDB (1) or not (0)."),
            ("openflow_connected", "Whether the host's switch (br-int) is connected over OpenFlow."),
            ("ready", "Whether the host's br-int is configured as Weft needs it."),
            ("flows_in_sync", "Whether the host's switch held the flows compiled for it at the last full "
                              "comparison, every batch since acknowledged, its flow counts unchanged since."))}
        ages = {key: GaugeMetricFamily(f"weft_host_{name}_seconds", doc, labels=["host"]) for key, name, doc in (
            ("last_answer_s", "last_answer", "Seconds since the host's switch last answered a probe."),
            ("flows_checked_s_ago", "flows_checked", "Seconds since the host's flows were last read in full and "
                                                     "compared with the desired set (differences put back)."))}
        states = GaugeMetricFamily("weft_host_state", "The host's state: 1 for the one it is in (connecting, "
                                   "up, down), 0 for the others.", labels=["host", "state"])
        for host in hosts:
            status = self.core.host_status(host)
            for key, family in flags.items():
                family.add_metric([host], float(bool(status.get(key))))
            for key, family in ages.items():
                if status.get(key) is not None:
                    family.add_metric([host], float(status[key]))
            if "state" in status:
                for name in HOST_STATES:
                    states.add_metric([host, name], float(status["state"] == name))
        yield from flags.values()
        yield from ages.values()
        yield states

    def _flows(self, hosts):
        """Flows per host and table: what the controller compiled for the host and what its switch
        acknowledged (read at connect, then each batch's barrier), each entry counted once however
        many objects want it, as the switch holds it."""
        compiled = GaugeMetricFamily("weft_flows", "Flows the controller compiled for the host, by table.",
                                     labels=["host", "table"])
        acked = GaugeMetricFamily("weft_switch_flows", "Flows the host's switch holds, as the controller last "
                                  "read or had them acknowledged, by table.", labels=["host", "table"])
        for host in hosts:
            for family, owners in ((compiled, self.core.compiler.flows.get(host)), (acked, self._acked(host))):
                if owners is not None:
                    for table, count in sorted(flows_per_table(owners).items()):
                        family.add_metric([host, table], count)
        yield compiled
        yield acked

    def _acked(self, host):
        sync = self.core.syncs.get(host)
        installed = getattr(sync, "installed", None)
        return getattr(installed, "owners", None)

    def _nb(self, state):
        core = self.core
        status = core.nb_status() if core.nb is not None else {}
        yield _gauge("weft_nb_connected", "Whether the controller is connected to the NB (1) or not (0).",
                     status.get("connected", False))
        yield _gauge("weft_nb_loaded", "Whether the controller holds the NB database in its replica.",
                     state is not None)
        clustered = GaugeMetricFamily("weft_nb_clustered", "Whether the NB is a Raft cluster (1) or a single "
                                      "ovsdb-server (0).", labels=[])
        if "clustered" in status:
            clustered.add_metric([], float(bool(status["clustered"])))
        yield clustered
        leader = GaugeMetricFamily("weft_nb_leader_info", "The NB remote the controller is connected to when it is "
                                   "the cluster's leader (1).", labels=["remote"])
        if status.get("leader"):
            leader.add_metric([str(status["leader"])], 1)
        yield leader
        yield _gauge("weft_flows_frozen", "Whether the NB's contents cannot be compiled, so every switch keeps "
                                          "its last consistent flows (1).", core.topology_error is not None)
        role = GaugeMetricFamily("weft_controller_role", "This controller's role: 1 for the one it has (active "
                                 "programs the switches, standby waits), 0 for the other.", labels=["role"])
        for name in sorted({*ROLES, core.role}):
            role.add_metric([name], float(core.role == name))
        yield role
        yield _gauge("weft_controller_epoch", "The epoch this controller took the active role in (its OpenFlow "
                                              "role generation id; 0: never active).", getattr(core, "epoch", None))


def flows_per_table(owners):
    """{table name: distinct flows} over {owner: its entries} (groups and meters left out)."""
    keys, first = {}, {}
    for entries in list(owners.values()):
        for entry in entries:
            if type(entry) is Flow:
                if entry.table not in keys:
                    keys[entry.table], first[entry.table] = set(), entry
                keys[entry.table].add(entry.key)
    return {table_name(first[table]): len(k) for table, k in keys.items()}


def _counters(samples, hosts):
    """weft_<name>_total for every counter in COUNTERS (at 0 where nothing was counted yet) and any
    other name the core counted."""
    by_name = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append((labels, value))
    for name in [*COUNTERS, *sorted(by_name.keys() - COUNTERS.keys())]:
        doc, known = COUNTERS.get(name, ("(not described in controller/metrics.py COUNTERS)", {}))
        seen = by_name.get(name, [])
        label_names = [*known, *sorted({k for labels, _ in seen for k in labels} - known.keys())]
        values = {tuple(labels.get(k, "") for k in label_names): value for labels, value in seen}
        if len(known) == len(label_names):  # labels whose values are not known in advance show no 0s
            zeros = [()]
            for choices in known.values():
                zeros = [(*z, v) for z in zeros for v in (hosts if choices is HOSTS else choices)]
            for zero in zeros:
                values.setdefault(zero, 0)
        family = CounterMetricFamily(f"weft_{name}", doc, labels=label_names)
        for label_values, value in sorted(values.items()):
            family.add_metric(list(label_values), value)
        yield family


def _gauge(name, doc, value):
    """A gauge without labels; None: declared, with no value."""
    family = GaugeMetricFamily(name, doc, labels=[])
    if value is not None:
        family.add_metric([], float(value))
    return family
