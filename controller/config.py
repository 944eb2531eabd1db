"""The controller's options, declared once: the [weft] section of ryu-manager's config file is derived
from these fields (controller/app.py), and `check` says what is wrong with a value."""
import dataclasses
import grp
import os
import re
import socket

from controller import validate


def _option(default, help):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class Config:
    state_dir: str = _option("/var/lib/weft", "where the embedded NB and the API tokens live (made 0700)")
    nb_remote: str = _option("", "an existing NB ovsdb-server (tcp:IP:6641, ssl:IP:6641, unix:PATH, or a "
                                 "Raft cluster's remotes separated by commas); empty: the embedded NB")
    underlay_mtu: int = _option(1500, "the smallest MTU of the hosts' underlay links")
    of_target: str = _option("", "OpenFlow target given to joining hosts that name none (ssl:IP:6653; with "
                                 "two controllers, both, separated by commas)")
    api_socket: str = _option("/run/weft/api.sock", "the API's unix socket: who may connect to it "
                                                    "(mode 0660) may drive Weft")
    api_socket_group: str = _option("", "the group that owns the API socket besides root (empty: root's)")
    api_hostnames: str = _option("", "names (comma-separated) clients may use in the Host header of the TCP "
                                     "API, besides literal addresses and localhost")
    api_tls_cert: str = _option("", "a certificate (PEM) for the TCP API: it then serves HTTPS")
    api_tls_key: str = _option("", "the private key of api_tls_cert")
    api_tls_client_ca: str = _option("", "if set, the TCP API also requires client certificates "
                                         "signed by this CA (PEM), besides the bearer token")
    service_cidr: str = _option("10.96.0.0/16", "where Services' cluster IPs (VIPs) come from, as Kubernetes' "
                                                "--service-cluster-ip-range: an IPv4 CIDR no network uses")
    controller_name: str = _option("", "this controller's name in the NB's Controller table, where the "
                                       "controllers sharing an NB see each other (empty: the hostname)")
    api_url: str = _option("", "how clients reach this controller's API, as recorded in the Controller table "
                               "(a standby names the active's): empty, unix:<api_socket>")
    dns_upstream: str = _option("", "where Weft's DNS forwards the names it does not know: IP or IP:PORT; empty: "
                                    "it refuses them (REFUSED), so no query leaves the data path")
    flow_audit_interval: int = _option(1, "seconds between audits of each switch's flows (its flow count per "
                                          "table; all its flows, groups and meters when a count differs), "
                                          "which put back what was changed by hand; 0: no audit")
    flow_full_audit_interval: int = _option(30, "seconds between audits that read all of a switch's flows, "
                                                "groups and meters even when the counts agree (a flow modified "
                                                "in place keeps them equal)")
    host_down_after: int = _option(5, "seconds a host's switch may leave OpenFlow echo requests unanswered "
                                      "before the host is marked down (its ports down, its peers' tunnels "
                                      "to it removed); also the inactivity probe of the hosts' OVSDBs")

    @property
    def tokens_dir(self):
        return os.path.join(self.state_dir, "tokens")

    @property
    def name(self):
        return self.controller_name or socket.gethostname()

    @property
    def advertised_api(self):
        return self.api_url or f"unix:{self.api_socket}"

    @property
    def hostnames(self):
        return [n.strip() for n in self.api_hostnames.split(",") if n.strip()]


def check(config):
    """Raises ValueError naming the first bad option."""
    if not 576 + validate.GENEVE_OVERHEAD <= config.underlay_mtu <= 65535:
        raise ValueError(f"[weft] underlay_mtu: {config.underlay_mtu} is out of range "
                         f"({576 + validate.GENEVE_OVERHEAD}..65535)")
    for remote in filter(None, config.nb_remote.split(",")):
        if not validate.REMOTE_RE.fullmatch(remote):
            raise ValueError(f"[weft] nb_remote: {remote!r} is not an OVSDB remote (unix:/path, tcp:IP:PORT, "
                             "ssl:IP:PORT; several separated by commas)")
    for target in filter(None, config.of_target.split(",")):
        if not validate.REMOTE_RE.fullmatch(target):
            raise ValueError(f"[weft] of_target: {target!r} is not an OpenFlow target (tcp:IP:PORT or "
                             "ssl:IP:PORT; one per controller, separated by commas)")
    for option in ("state_dir", "api_socket"):
        if not os.path.isabs(getattr(config, option)):
            raise ValueError(f"[weft] {option}: {getattr(config, option)!r} must be an absolute path")
    if config.api_socket_group:
        try:
            grp.getgrnam(config.api_socket_group)
        except KeyError:
            raise ValueError(f"[weft] api_socket_group: there is no group {config.api_socket_group!r}") from None
    if bool(config.api_tls_cert) != bool(config.api_tls_key):
        raise ValueError("[weft] api_tls_cert and api_tls_key go together")
    for option in ("api_tls_cert", "api_tls_key", "api_tls_client_ca"):
        path = getattr(config, option)
        if path and not os.path.isfile(path):
            raise ValueError(f"[weft] {option}: no file {path!r}")
    try:
        validate.ipv4_network(config.service_cidr, "[weft] service_cidr", max_prefix=30)
    except validate.ApiError as err:
        raise ValueError(err.message) from None
    if config.dns_upstream:
        from controller.dns import _parse_upstream  # the DNS server's own reading of the option
        try:
            _parse_upstream(config.dns_upstream)
        except ValueError as err:
            raise ValueError(f"[weft] dns_upstream: {err}") from None
    if not 0 <= config.flow_audit_interval <= 3600:
        raise ValueError(f"[weft] flow_audit_interval: {config.flow_audit_interval} is out of range (0..3600 "
                         "seconds; 0: no audit)")
    if not max(config.flow_audit_interval, 1) <= config.flow_full_audit_interval <= 86400:
        raise ValueError(f"[weft] flow_full_audit_interval: {config.flow_full_audit_interval} is out of range "
                         f"({max(config.flow_audit_interval, 1)}..86400 seconds: no shorter than "
                         "flow_audit_interval)")
    if not 1 <= config.host_down_after <= 3600:
        raise ValueError(f"[weft] host_down_after: {config.host_down_after} is out of range (1..3600 seconds)")
    if config.controller_name and not validate.NAME_RE.fullmatch(config.controller_name):
        raise ValueError(f"[weft] controller_name: {config.controller_name!r} is not a name (letters, digits, "
                         "'-', '_', '.'; at most 63)")
    if config.api_url and not re.fullmatch(r"(unix:/\S+|https?://\S+)", config.api_url):
        raise ValueError(f"[weft] api_url: {config.api_url!r} is not an API address (unix:/PATH, "
                         "http://HOST:PORT or https://HOST:PORT)")
    if config.api_tls_client_ca and not config.api_tls_cert:
        raise ValueError("[weft] api_tls_client_ca needs api_tls_cert (client certificates need HTTPS)")

