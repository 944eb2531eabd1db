"""The Grafana dashboard in docs/grafana/weft.json: valid JSON, and every query names only series the
exporter defines (a renamed metric would otherwise leave an empty panel nobody notices)."""
import json
import pathlib
import re

from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = pathlib.Path(__file__).resolve().parents[2] / "docs" / "grafana" / "weft.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def queries(node):
    """Every PromQL text in the dashboard: panel targets' expr and the variables' queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def exported(core):
    """The series names a scrape can hold, from the families it declares (with no sample yet too)."""
    names = set()
    for family in text_string_to_metric_families(core.metrics.exposition().decode()):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_the_dashboard_is_valid_json_with_unique_panel_ids():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert dashboard["uid"] == "weft" and len({p["id"] for p in panels}) == len(panels)
    assert all(p["targets"] for p in panels if p["type"] != "row")


def test_every_query_names_only_series_the_exporter_defines(core):
    names = exported(core)
    used = {name for q in queries(json.loads(DASHBOARD.read_text()))
            for name in re.findall(r"\b(?:weft|process)_[a-z_]+\b", q)}
    assert used and used - names == set()
    # What the issue asks a dashboard to show is there.
    for wanted in ("weft_host_state", "weft_flows", "weft_flow_mods_total", "weft_flow_batches_total",
                   "weft_resyncs_total", "weft_drift_repairs_total", "weft_port_up_seconds_bucket",
                   "weft_api_request_seconds_bucket", "weft_packet_ins_total", "weft_errors_total",
                   "weft_controller_role", "weft_nb_connected", "weft_nb_leader_info"):
        assert wanted in used, wanted
