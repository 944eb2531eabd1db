"""`weft apply`, `weft policy` and `weft service` against a real controller, as a user types them:
what each prints, and what the controller then holds."""
import os
import subprocess
import sys

import pytest

from running_controller import running_controller  # tests/integration is on sys.path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFESTS = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
spec:
  podSelector: {}
  policyTypes:
  - Ingress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-web
spec:
  podSelector:
    matchLabels:
      app: web
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: client
    ports:
    - port: http
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: http
"""


@pytest.fixture(scope="module")
def ctl():
    with running_controller("weft-cli-manifests-") as ctl:
        ctl.api.post("/v1/networks", {"name": "blue", "cidr": "10.7.0.0/24"})
        for name, app in (("web1", "web"), ("web2", "web"), ("cli", "client")):
            ctl.api.post("/v1/ports", {"name": name, "network": "blue", "labels": {"app": app},
                                       "named_ports": {"http": "TCP/8080"}})
        yield ctl


def weft(ctl, *argv, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    env.update(PYTHONPATH=REPO, WEFT_CONFIG=os.devnull)
    result = subprocess.run([sys.executable, "-m", "weft.cli", "--api", f"unix:{ctl.socket}", *argv], env=env,
                            input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result
    return result.stdout


def test_apply_prints_what_kubectl_prints_and_a_second_apply_changes_nothing(ctl, tmp_path):
    path = tmp_path / "web.yaml"
    path.write_text(MANIFESTS)
    assert weft(ctl, "apply", "-f", str(path), "-n", "blue") == (
        "networkpolicy.networking.k8s.io/default-deny-ingress created\n"
        "networkpolicy.networking.k8s.io/allow-web created\n"
        "service/web created\n")
    rows = ctl.nb_rows()
    assert weft(ctl, "apply", "-f", "-", "--network", "blue", stdin=MANIFESTS).splitlines() == [
        "networkpolicy.networking.k8s.io/default-deny-ingress unchanged",
        "networkpolicy.networking.k8s.io/allow-web unchanged", "service/web unchanged"]
    assert ctl.nb_rows() == rows
    changed = MANIFESTS.replace("port: 80", "port: 8080")
    assert weft(ctl, "apply", "-f", "-", "-n", "blue", "--plan", stdin=changed).splitlines() == [
        "networkpolicy.networking.k8s.io/default-deny-ingress unchanged (plan)",
        "networkpolicy.networking.k8s.io/allow-web unchanged (plan)", "service/web configured (plan)", "",
        "no flow changes on any host"]  # no host is joined: no switch to change
    assert ctl.nb_rows() == rows  # a plan changes nothing
    assert weft(ctl, "apply", "-f", "-", "-n", "blue", stdin=changed).splitlines()[2] == "service/web configured"


def test_list_show_and_delete(ctl):
    weft(ctl, "apply", "-f", "-", "-n", "blue", stdin=MANIFESTS)
    assert weft(ctl, "policy", "list", "-n", "blue").splitlines() == [
        "name                  network  pod_selector  policy_types  selects",
        "allow-web             blue     app=web       Ingress       2",
        "default-deny-ingress  blue     <none>        Ingress       3"]
    shown = weft(ctl, "policy", "show", "blue/allow-web")
    assert "  selects       web1, web2\n" in shown and "      - port: http\n" in shown  # the manifest, as YAML
    listed = weft(ctl, "service", "list").splitlines()
    assert listed[0].split() == ["name", "network", "type", "cluster_ip", "load_balancer_ip", "ports", "backends"]
    assert listed[1].split() == ["web", "blue", "ClusterIP", "10.96.0.1", "-", "80/TCP", "0/2", "ready"]
    shown = weft(ctl, "service", "show", "web", "-n", "blue")
    assert "  cluster IP     10.96.0.1\n" in shown and "  web1  10.7.0.2  -     no     8080" in shown
    assert weft(ctl, "policy", "delete", "blue/allow-web") == \
        'networkpolicy.networking.k8s.io "allow-web" deleted (network blue)\n'
    assert weft(ctl, "service", "delete", "web", "-n", "blue") == 'service "web" deleted (network blue)\n'
    assert [r.split()[0] for r in weft(ctl, "policy", "list").splitlines()[1:]] == ["default-deny-ingress"]
    assert weft(ctl, "service", "list").splitlines()[1:] == []
