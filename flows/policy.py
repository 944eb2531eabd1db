"""NetworkPolicy and Service as the compiler sees them: frozen, hashable, already validated.

Kubernetes semantics (networking.k8s.io/v1 NetworkPolicy, v1 Service), with a Weft network in the
role of a namespace. controller/manifests.py turns manifests into these; nothing here parses.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]  # sorted (key, value) pairs

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One matchExpressions entry."""
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":  # as Kubernetes: a missing key is "not in"
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True, slots=True)
class Selector:
    """A label selector; the empty selector selects everything."""
    match_labels: Labels = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return (all(labels.get(k) == v for k, v in self.match_labels)
                and all(r.matches(labels) for r in self.match_expressions))


@dataclass(frozen=True, slots=True)
class IpBlock:
    cidr: str  # normalised, e.g. "10.0.0.0/8"
    excepts: tuple[str, ...] = ()  # each inside cidr


@dataclass(frozen=True, slots=True)
class Peer:
    """One entry of from/to. Exactly one of ip_block or (pod_selector and/or namespace_selector).
    pod_selector alone: ports of the policy's own network; namespace_selector alone: every port
    of the selected networks; both: the selected ports of the selected networks (AND)."""
    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IpBlock | None = None


@dataclass(frozen=True, slots=True)
class PolicyPort:
    protocol: str = "TCP"  # one of PROTOCOLS
    port: int | str | None = None  # None: every port of the protocol; str: a named port
    end_port: int | None = None  # with a numeric port: the range port..end_port


@dataclass(frozen=True, slots=True)
class PolicyRule:
    peers: tuple[Peer, ...] = ()  # empty: every peer (and every address)
    ports: tuple[PolicyPort, ...] = ()  # empty: every protocol and port


@dataclass(frozen=True, slots=True)
class PolicyState:
    name: str
    network: str  # the namespace it lives in; it selects ports of this network only
    pod_selector: Selector
    ingress: tuple[PolicyRule, ...] | None  # None: not an Ingress policy; (): deny all ingress
    egress: tuple[PolicyRule, ...] | None  # None: not an Egress policy; (): deny all egress

    @property
    def key(self) -> str:
        return f"{self.network}/{self.name}"


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" when the service has one unnamed port
    protocol: str  # one of PROTOCOLS
    port: int
    target_port: int | str  # a number, or a named port of the backends


@dataclass(frozen=True, slots=True)
class ServiceState:
    name: str
    network: str  # the namespace; its selector picks ports of this network
    key: int  # 1 .. 2**24-1, unique among services: its OpenFlow group ids and cookies
    selector: Labels  # Services select by matchLabels only; () selects no backends
    ports: tuple[ServicePort, ...]
    cluster_ip: str  # the VIP, from the controller's service CIDR
    load_balancer_ip: str | None = None  # type LoadBalancer: an address of the gateway's range
    session_affinity: bool = False  # sessionAffinity: ClientIP
    affinity_timeout: int = 10800  # seconds, sessionAffinityConfig.clientIP.timeoutSeconds

    @property
    def qualified(self) -> str:
        return f"{self.network}/{self.name}"
