"""Labels and named ports through the real `weft` CLI against a lab's controller: given at create and
at attach (a real container on a lab host), edited kubectl-style, and listed by selector, checked
in the CLI's own output."""
import json
import secrets

import pytest

from weft import lab as weftlab
from weft.client import path as api_path


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab()


@pytest.fixture
def network(lab):
    """A fresh network (its ports and containers removed afterwards)."""
    name = f"lbl{secrets.token_hex(3)}"
    lab.weft("network", "create", name, "--cidr", "10.61.0.0/24", "--label", "env=prod", "--label", "team=a",
             "--label", f"run={name}")  # run: only this test's network has it
    made = []
    yield name, made
    for container in made:
        weftlab.container_del(lab.name, container)
    for port in lab.api.get(api_path("ports") + f"?network={name}"):
        lab.api.delete(api_path("ports", port["name"]) + "?force=true")
    lab.api.delete(api_path("networks", name))


def table(text):
    """The CLI's table -> [{column: cell}]."""
    header, *rows = text.splitlines()
    columns = header.split()
    return [dict(zip(columns, row.split())) for row in rows]


def test_create_label_and_list_by_selector(lab, network):
    net, _ = network
    lab.weft("port", "create", "web", "--network", net, "--label", "app=web", "--label", "tier=front",
             "--named-port", "http=tcp/8080")
    lab.weft("port", "create", "db", "--network", net, "--label", "app=db", "--label", "tier=db")
    shown = lab.weft("port", "show", "web").stdout
    assert "app=web,tier=front" in shown and "http=TCP/8080" in shown
    rows = table(lab.weft("port", "list", "--network", net).stdout)
    assert {r["name"]: r["LABELS"] for r in rows} == {"db": "app=db,tier=db", "web": "app=web,tier=front"}
    assert [r["name"] for r in table(lab.weft("port", "list", "--network", net, "--selector", "app in (web,db),tier!=db").stdout)] \
        == ["web"]
    # kubectl's rules: a key's value changes only with --overwrite; KEY- removes; a missing key is said.
    refused = lab.weft("port", "label", "web", "tier=back", check=False)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr
    done = lab.weft("port", "label", "web", "tier=back", "canary=", "--overwrite")
    assert done.stdout.strip() == "port web labels: app=web,canary=,tier=back"
    done = lab.weft("port", "label", "web", "canary-", "ghost-")
    assert done.stdout.strip() == "port web labels: app=web,tier=back" and "'ghost' not found" in done.stderr
    lab.weft("port", "named-port", "web", "metrics=TCP/9090", "http-")
    assert json.loads(lab.weft("port", "show", "web", "--json").stdout)["named_ports"] == {"metrics": "TCP/9090"}
    assert [r["name"] for r in table(lab.weft("port", "list", "--network", net, "-l", "tier=back").stdout)] == ["web"]
    # Networks: labels at create, edited, selected (as a policy's namespaceSelector would).
    lab.weft("network", "label", net, "team-", "tier=gold")
    rows = table(lab.weft("network", "list", "--selector", f"run={net},env=prod,tier").stdout)
    assert [(r["name"], r["LABELS"]) for r in rows] == [(net, f"env=prod,run={net},tier=gold")]


def test_attach_with_labels_and_named_ports(lab, network):
    """The port exists with its labels from the start: no policy ever sees the container without them."""
    net, made = network
    lab.container("lblc1", "h1")
    made.append("lblc1")
    netns = lab.info["containers"]["lblc1"]["netns"]
    out = lab.weft("attach", netns, "--network", net, "--name", "lblc1", "--label", "app=web",
                   "--named-port", "http=TCP/80", "--json", target="h1").stdout
    port = json.loads(out)
    assert port["up"] and port["labels"] == {"app": "web"} and port["named_ports"] == {"http": "TCP/80"}
    rows = table(lab.weft("port", "list", "--network", net, "--selector", "app=web").stdout)
    assert [(r["name"], r["host"], r["LABELS"]) for r in rows] == [("lblc1", "h1", "app=web")]
