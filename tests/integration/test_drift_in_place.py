"""A flow changed in place by hand on br-int (ovs-ofctl mod-flows: same match, other actions), at the
controller's defaults. Every flow count stays the same, so the count audit (every second) cannot see
it: the next full audit (flow_full_audit_interval, 30 s by default) finds it and puts it back, and
until then flows_in_sync is true only as of the full comparison flows_checked_s_ago names, which is
older than the change."""
import re
import time

from controller.config import Config
from weft.testing import api_path

SLACK = 5.0  # seconds beyond the full-audit interval: the audit's own read and repair, a loaded machine


def test_a_flow_changed_in_place_is_put_back_by_the_next_full_audit_at_the_defaults(make_lab):
    lab = make_lab(hosts=1, shared=False)
    try:
        lab.weft("network", "create", "inplace", "--cidr", "10.62.0.0/24")
        a, b = lab.attach("a", "h1", "inplace"), lab.attach("b", "h1", "inplace")
        lab.wait_flows_in_sync("h1")
        dump = lambda: lab.exec("h1", "ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows",  # noqa: E731
                                "br-int").stdout
        # b's delivery flow in the L2 lookup stage (table 90), and its match as --strict mod-flows takes it.
        line = next(ln.strip() for ln in dump().splitlines() if "table=90" in ln and f"dl_dst={b['mac']}" in ln)
        match = ",".join(f for f in line.split(" actions=")[0].replace(", ", ",").split(",")
                         if not f.startswith("cookie="))
        status = lambda: lab.api.get(api_path("hosts", "h1"))["status"]  # noqa: E731
        repairs = status()["flow_drift_repairs"]
        lab.exec("h1", "ovs-ofctl", "-O", "OpenFlow13", "--strict", "mod-flows", "br-int", f"{match},actions=drop")
        changed = time.monotonic()
        assert line not in dump() and not lab.ping("a", b["ip"])  # changed, and it shows
        # Still said in sync (the counts agree), but only as of a full comparison made before the change.
        said = status()
        if line not in dump() and said["flows_in_sync"]:
            assert said["flows_checked_s_ago"] >= time.monotonic() - changed - 0.2, said
        limit = Config().flow_full_audit_interval + SLACK
        while line not in dump():
            assert time.monotonic() - changed < limit, f"the changed flow was not put back within {limit} s"
            time.sleep(0.1)
        deadline = time.monotonic() + 5
        while not (now := status())["flows_in_sync"]:
            assert time.monotonic() < deadline, now
            time.sleep(0.05)
        assert now["flow_drift_repairs"] == repairs + 1 and now["flows_checked_s_ago"] < limit, now
        log = (lab.dir / "controller.log").read_text(errors="replace")
        assert re.search(rf"host h1: changed, wanted: table=90, .*dl_dst={b['mac']}", log), log[-3000:]
        assert lab.ping("a", b["ip"])
    finally:
        lab.down()
