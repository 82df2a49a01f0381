"""The identity of one Envoy: what the control plane knows about the proxy it programs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from plait.api.resources import Resource
from plait.model.hosts import DOMAIN_SUFFIX

ProxyKind = Literal["sidecar", "router"]
ProxyMode = Literal["capture", "proxy"]

GATEWAY_LABEL_VALUES = {"ingressgateway", "egressgateway"}
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"  # a deployed Gateway API gateway

# Istio's well-known proxy ports.
ADMIN_PORT = 15000
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
HEALTH_PORT = 15021
PROMETHEUS_PORT = 15090
EXPLICIT_PROXY_PORT = 15001  # in proxy mode nothing is captured, so the outbound port serves HTTP_PROXY


TRUST_DOMAIN = "cluster.local"
TLS_MODE_LABEL = "security.istio.io/tlsMode"  # "istio" on workloads with a sidecar that has certificates


def spiffe_id(namespace: str, service_account: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class Proxy:
    """A sidecar or a gateway (router), as named in its xDS node id."""

    kind: ProxyKind
    ip: str
    name: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    mode: ProxyMode = "capture"
    service_account: str = "default"
    app_address: str = "127.0.0.1"  # where the sidecar reaches its own application
    # Gateway server port → port the gateway actually listens on (e.g. 80 → 8080 locally).
    listen_ports: Mapping[int, int] = field(default_factory=dict)
    # Its SPIFFE identity when its agent serves it certificates over SDS (`default`, `ROOTCA`);
    # None: no certificates, so no mutual TLS to or from this proxy.
    identity: str | None = None

    @property
    def spiffe_id(self) -> str:
        """The identity the mesh gives its service account: ``spiffe://cluster.local/ns/NS/sa/SA``."""
        return spiffe_id(self.namespace, self.service_account)

    @property
    def id(self) -> str:
        """Istio's node id: ``sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local``."""
        return f"{self.kind}~{self.ip}~{self.name}.{self.namespace}~{self.namespace}.{DOMAIN_SUFFIX}"

    @property
    def workload(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_node_id(cls, node_id: str, **kw) -> "Proxy":
        kind, ip, pod, _ = node_id.split("~", 3)
        name, _, namespace = pod.rpartition(".")
        return cls(kind=kind, ip=ip, name=name, namespace=namespace, **kw)  # type: ignore[arg-type]

    @classmethod
    def from_workload_entry(
        cls, we: Resource, *, mode: ProxyMode = "capture", kind: ProxyKind | None = None
    ) -> "Proxy":
        """A proxy for a WorkloadEntry; labels ``istio: ingressgateway|egressgateway`` make it a gateway."""
        labels = dict(we.spec.labels)
        if kind is None:
            gateway = labels.get("istio") in GATEWAY_LABEL_VALUES or GATEWAY_NAME_LABEL in labels
            kind = "router" if gateway else "sidecar"
        return cls(
            kind=kind,
            ip=we.spec.address,
            name=we.name,
            namespace=we.namespace,
            labels=MappingProxyType(labels),
            mode=mode,
            service_account=we.spec.service_account or "default",
        )
