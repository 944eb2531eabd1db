#!/bin/bash
# Sets up everything Weft needs on a Debian 12 host, idempotently: system packages and a venv in .venv.
# Sourced by demo.sh and test.sh (the two README commands); safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "weft setup: run as root (OVS, network namespaces and apt need it)" >&2
    exit 1
fi

APT_PACKAGES=(openvswitch-switch openvswitch-common iproute2 iputils-ping ethtool tcpdump iperf3 socat docker-compose procps
              python3 python3-venv python3-dev gcc
              # the container runtimes Weft plugs into, tested for real (weft lab up --runtimes)
              docker.io podman containernetworking-plugins busybox-static mininet)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "weft setup: installing ${missing[*]}" >&2
    apt-get update -qq
    # policy-rc.d 101: don't start the distribution's own OVS or Docker services; the lab runs its own daemons.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "weft setup: Python >= 3.11 is required ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "weft setup: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
# Ryu 4.34 builds only with setuptools<70 and without build isolation; so does Weft, for one toolchain.
echo "weft setup: installing Python packages into .venv" >&2
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt "setuptools<70" wheel
.venv/bin/pip install -q --disable-pip-version-check --no-build-isolation -c constraints.txt ryu==4.34
.venv/bin/pip install -q --disable-pip-version-check --no-build-isolation -c constraints.txt ".[test]"
echo "weft setup: ready (.venv/bin/weft, .venv/bin/ryu-manager)" >&2
