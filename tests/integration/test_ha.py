"""Active/standby controllers on a 3-member Raft NB (`weft lab up --ha`): the faults an operator
meets, with 100 echoes/s between containers on different hosts running through each of them."""
import json
import threading
import time

import pytest

from weft.client import ApiClient, ApiError
from weft.lab import LabError

FAILOVER_LIMIT = 3.0  # seconds from kill -9 of the active until the standby reports itself active


@pytest.fixture(scope="module")
def ha_lab(make_lab):
    lab = make_lab(ha=True)
    lab.weft("network", "create", "blue", "--cidr", "10.7.0.0/24")
    a = lab.attach("a", "h1", "blue")
    b = lab.attach("b", "h2", "blue")
    lab.peer_ips = {"a": a["ip"], "b": b["ip"]}
    return lab


def settled(lab, controller, timeout=15):
    """The hosts as `controller` reports them once every switch is connected and in sync."""
    api, deadline = lab.controller_api(controller), time.monotonic() + timeout
    while True:
        hosts = {h["name"]: h["status"] for h in api.get("/v1/hosts")}
        if all(s.get("openflow_connected") and s.get("flows_in_sync") for s in hosts.values()):
            return hosts
        assert time.monotonic() < deadline, f"{controller}: hosts not in sync: {hosts}"
        time.sleep(0.05)


def no_flow_replaced(before, after):
    """The flows of `before` ({flow: age}) still there and older: none deleted and added again."""
    return [flow for flow, age in before.items() if flow not in after or after[flow] < age]


def wait_active(lab, controller, since, limit):
    while lab.role(controller) != "active":
        assert time.monotonic() - since < limit, f"{controller} was not active within {limit} s"
        time.sleep(0.02)
    return time.monotonic() - since


def switch_roles(lab, host):
    """{controller: the role br-int gives it ("master", "slave")}, from the host's own OVSDB."""
    out = lab.exec(host, "ovs-vsctl", "--format=csv", "--no-headings", "--columns=target,role",
                   "list", "Controller").stdout
    roles = {}
    for line in out.splitlines():
        target, role = line.split(",")
        roles["c1" if "ctl-c1" in target else "c2"] = role
    return roles


def wait_switch_roles(lab, host, expected, timeout=10):
    """vswitchd writes a controller's role to its OVSDB a little after the change: wait for it."""
    deadline = time.monotonic() + timeout
    while (now := switch_roles(lab, host)) != expected:
        assert time.monotonic() < deadline, f"{host}: roles {now}, not {expected}"
        time.sleep(0.1)


def test_roles_are_reported_and_the_standby_refuses_writes_naming_the_active(ha_lab):
    lab = ha_lab
    found = lab.roles()
    active, standby = found["active"], found["standby"]
    for controller in (active, standby):
        status = lab.controller_api(controller).get("/v1/status")
        assert status["controller"]["name"] == controller
        assert status["controller"]["role"] == ("active" if controller == active else "standby")
        assert status["controllers"][active]["role"] == "active"
        assert status["controllers"][standby]["role"] == "standby"
        assert status["nb"]["clustered"] is True and len(status["nb"]["remotes"]) == 3
        assert status["nb"]["leader"] in status["nb"]["remotes"]
    for host in ("h1", "h2"):
        wait_switch_roles(lab, host, {active: "master", standby: "slave"})

    # Reads are answered from the standby's replica; writes and waits for flows are refused.
    assert lab.controller_api(standby).get("/v1/networks") == lab.controller_api(active).get("/v1/networks")
    active_api = lab.info["controllers"][active]["api"]
    with pytest.raises(ApiError) as refused:
        lab.controller_api(standby).post("/v1/networks", {"name": "red", "cidr": "10.8.0.0/24"})
    assert refused.value.status == 503
    assert refused.value.message == (f"this controller ({standby}) is the standby; send writes to the active one, "
                                     f"{active} at {active_api}")
    assert refused.value.details["active"]["name"] == active
    with pytest.raises(ApiError) as wait:
        lab.controller_api(standby).get("/v1/ports/a?wait_up=1")
    assert wait.value.status == 503 and "standby" in wait.value.message
    assert "red" not in {n["name"] for n in lab.controller_api(active).get("/v1/networks")}

    # The CLI given both endpoints, the standby's first, goes on to the active.
    standby_first = f"{lab.info['controllers'][standby]['api']},{active_api}"
    out = lab.weft("--api", standby_first, "network", "create", "red", "--cidr", "10.8.0.0/24")
    assert out.returncode == 0
    assert "red" in {n["name"] for n in lab.controller_api(standby).get("/v1/networks")}
    lab.weft("--api", standby_first, "network", "delete", "red")
    status = lab.weft("--api", standby_first, "status").stdout
    assert f"controller: {standby}, standby" in status and f"{active}: active at {active_api}" in status


def test_killing_the_active_controller_loses_no_echo_and_the_standby_takes_over_with_no_flow_mod(ha_lab):
    lab = ha_lab
    found = lab.roles()
    active, standby = found["active"], found["standby"]
    settled(lab, active)
    before = {host: lab.flow_ages(host) for host in ("h1", "h2")}
    with lab.echoes("a", lab.peer_ips["b"]) as report:
        time.sleep(0.3)
        killed_at = time.monotonic()
        lab.kill_controller(active)
        took = wait_active(lab, standby, killed_at, FAILOVER_LIMIT)
        hosts = settled(lab, standby)
        time.sleep(0.5)
    print(f"failover: {standby} active {took * 1000:.0f} ms after kill -9 of {active}; echoes {report}")
    assert report["lost"] == 0, report
    # The new active read each switch and found nothing to change: 0 flow-mods, no flow replaced.
    assert {h: s["flow_mods"] for h, s in hosts.items()} == {"h1": 0, "h2": 0}
    for host in ("h1", "h2"):
        assert no_flow_replaced(before[host], lab.flow_ages(host)) == []
    status = lab.controller_api(standby).get("/v1/status")
    assert status["controllers"][active]["role"] == "gone"
    assert status["controller"]["epoch"] > status["controllers"][active]["epoch"]

    # The killed one, started again, is the standby: the lock stays where it is.
    lab.start_controller(active)
    assert lab.roles() == {"active": standby, "standby": active}
    for host in ("h1", "h2"):
        wait_switch_roles(lab, host, {standby: "master", active: "slave"})


def addressed(lab, container):
    """Whether the container exists and its eth0 has an IPv4 address."""
    try:
        return "inet " in lab.exec(container, "ip", "-4", "-o", "addr", "show", "dev", "eth0", check=False).stdout
    except LabError:  # not created yet
        return False


def test_a_port_attached_during_a_failover_comes_up_once_the_new_active_has_taken_over(ha_lab):
    """`weft attach` (WEFT_API naming both controllers, as the lab's) creates its port through the
    active, which is killed as soon as the attach has addressed the container's interface (so the
    create was answered: killed sooner, the create's outcome would be unknown to the attach, and it
    would say so): the attach's wait for it to be up is then in flight, or not yet sent. It is asked
    again of the other controller, which takes over, programs the new port's flows (the only
    flow-mods it sends) and answers that it is up."""
    lab = ha_lab
    found = lab.roles()
    active, standby = found["active"], found["standby"]
    settled(lab, active)
    result = {}

    def attach():
        try:
            result["port"] = lab.attach("late", "h1", "blue")
        except Exception as err:  # reported below
            result["error"] = err
    worker = threading.Thread(target=attach)
    with lab.echoes("a", lab.peer_ips["b"]) as report:
        worker.start()
        deadline = time.monotonic() + 20
        # The attach plugs the port while the create's answer is still on its way; it addresses
        # the container's interface only once it has read that answer.
        while not addressed(lab, "late"):
            assert time.monotonic() < deadline, "the attach did not address its container within 20 s"
            time.sleep(0.005)
        killed_at = time.monotonic()
        lab.kill_controller(active)
        try:
            wait_active(lab, standby, killed_at, FAILOVER_LIMIT)
            worker.join(30)
        except BaseException:
            lab.start_controller(active)  # the lab's next tests need both, whatever failed here
            raise
    try:
        assert "error" not in result, result.get("error")
        assert result["port"]["up"] is True
        assert lab.ping("late", lab.peer_ips["b"])
        assert report["lost"] == 0, report
    finally:
        lab.start_controller(active)
        lab.roles()


def test_killing_an_nb_member_leader_or_follower_loses_no_acknowledged_write_and_no_echo(ha_lab):
    lab = ha_lab
    client = ApiClient(lab.info["api"], timeout=30)  # both controllers, as the lab's WEFT_API
    acknowledged, refused, reads = [], [], []
    stop = threading.Event()

    def write():
        n = 0
        while not stop.is_set():
            n += 1
            name = f"w{n}"
            try:
                client.post("/v1/networks", {"name": name, "cidr": f"10.{100 + n // 250}.{n % 250}.0/24"})
                acknowledged.append(name)
            except ApiError as err:
                refused.append((name, err.status, err.message, err.details))
            time.sleep(0.02)

    before = {n["name"] for n in client.get("/v1/networks")}

    def read():  # the replica stays loaded through a leader change: never an empty or shorter list
        while not stop.is_set():
            try:
                names = {n["name"] for n in client.get("/v1/networks")}
                reads.append(True if names >= before else f"missing {sorted(before - names)}")
            except ApiError as err:
                reads.append(err.message)
            time.sleep(0.05)
    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    try:
        with lab.echoes("a", lab.peer_ips["b"]) as report:
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            leader = lab.nb_leader()
            lab.kill_nb_member(leader)
            new_leader = lab.nb_leader(timeout=10)
            assert new_leader != leader
            time.sleep(1.5)
            lab.start_nb_member(leader)
            lab.wait_nb_member_caught_up(leader)  # 3 of 3 again: the next loss is one of a healthy cluster
            follower = next(m for m in ("nb1", "nb2", "nb3") if m != lab.nb_leader())
            lab.kill_nb_member(follower)
            time.sleep(1.5)
            lab.start_nb_member(follower)
            lab.wait_nb_member_caught_up(follower)
            time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    print(f"NB member loss: {len(acknowledged)} writes acknowledged, {len(refused)} refused; echoes {report}")
    assert report["lost"] == 0, report
    assert acknowledged
    # A write during the election either succeeded, or was refused as retryable with nothing
    # written, or (its answer lost with a connection) was reported unknown-outcome by name.
    unknown = [name for name, _, _, details in refused if details.get("outcome") == "unknown"]
    nothing_written = [name for name, _, _, details in refused if details.get("outcome") != "unknown"]
    for name, status, message, details in refused:
        if details.get("outcome") == "unknown":
            assert details.get("name") == name, (name, status, message)
        else:
            assert status == 503 and details.get("retry") is True, (name, status, message)
    assert all(r is True for r in reads), [r for r in reads if r is not True][:3]

    def networks(controller):
        return {n["name"] for n in lab.controller_api(controller).get("/v1/networks")}
    deadline = time.monotonic() + 10
    # Every acknowledged write on both controllers, and the unknown-outcome ones committed or not,
    # the same on both: what a client checking before its retry would find.
    while True:
        seen = {controller: networks(controller) for controller in ("c1", "c2")}
        missing = {c: sorted(set(acknowledged) - names)[:5] for c, names in seen.items() if set(acknowledged) - names}
        if not missing and seen["c1"] & set(unknown) == seen["c2"] & set(unknown):
            break
        assert time.monotonic() < deadline, f"acknowledged writes missing {missing}, or unknown-outcome ones " \
            f"{sorted(unknown)} not the same on both: {sorted(seen['c1'] & set(unknown))} {sorted(seen['c2'] & set(unknown))}"
        time.sleep(0.1)
    for controller, names in seen.items():  # refused with nothing written: nothing was
        assert not names & set(nothing_written), (controller, sorted(names & set(nothing_written)))
    for name in acknowledged + sorted(seen["c1"] & set(unknown)):
        client.delete(f"/v1/networks/{name}")


def test_a_takeover_after_the_epochs_went_back_takes_one_above_what_the_switches_saw(ha_lab):
    """The NB's epochs below what the switches have seen (an NB made anew under running switches):
    the new active's MASTER request is refused as stale, so it asks a switch for its generation and
    takes an epoch above it, instead of never programming."""
    lab = ha_lab
    found = lab.roles()
    active, standby = found["active"], found["standby"]
    seen = lab.controller_api(active).get("/v1/status")["controller"]["epoch"]
    member = lab.info["nb_members"][lab.nb_leader()]
    lab.exec("fabric", "ovsdb-client", "transact", member["remote"], json.dumps(
        ["Weft_NB", {"op": "update", "table": "Controller", "where": [], "row": {"epoch": 0}}]))
    with lab.echoes("a", lab.peer_ips["b"]) as report:
        lab.kill_controller(active)
        wait_active(lab, standby, time.monotonic(), FAILOVER_LIMIT * 2)
        hosts = settled(lab, standby)
    assert lab.controller_api(standby).get("/v1/status")["controller"]["epoch"] > seen
    assert {h: s["flow_mods"] for h, s in hosts.items()} == {"h1": 0, "h2": 0}
    assert report["lost"] == 0, report
    lab.start_controller(active)
    lab.roles()
