# One image for every Weft role (NB server, controller, OVS host); docker-compose.yml picks the command.
FROM debian:12
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openvswitch-switch openvswitch-common iproute2 iputils-ping ethtool tcpdump iperf3 socat procps \
        python3 python3-venv python3-dev gcc && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/weft
COPY . /opt/weft
# The same install steps as scripts/setup.sh (without apt, done above).
RUN python3 -m venv .venv \
 && .venv/bin/pip install -q -c constraints.txt "setuptools<70" wheel \
 && .venv/bin/pip install -q --no-build-isolation -c constraints.txt ryu==4.34 \
 && .venv/bin/pip install -q --no-build-isolation -c constraints.txt .
ENV PATH=/opt/weft/.venv/bin:$PATH
