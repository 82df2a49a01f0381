"""Typed configuration objects: metadata + spec of each supported kind."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from plait.api import extensions as ext
from plait.api import gatewayapi as gw
from plait.api import mesh, secrets
from plait.api import networking as net
from plait.api import rules_networking as net_rules
from plait.api import rules_security as sec_rules
from plait.api import security as sec
from plait.api import telemetry as tel
from plait.api.common import Labels

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ObjectMeta(BaseModel):
    """Kubernetes metadata; of the fields the API server adds, only creationTimestamp is kept (uid,
    managedFields… are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    name: str
    namespace: str = "default"
    labels: Labels = {}
    annotations: dict[str, str] = {}
    # RFC 3339 in UTC as the API server writes it (so it sorts as text); "" when unknown
    creation_timestamp: str = Field(default="", alias="creationTimestamp")

    @field_validator("creation_timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: object) -> object:
        """`kubectl create --dry-run=client -o yaml` writes ``creationTimestamp: null``."""
        return "" if value is None else value

    @field_validator("name")
    @classmethod
    def _dns_name(cls, name: str) -> str:
        if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            raise ValueError(f"{name!r} is not a valid name: use lower-case letters, digits, '-' and '.'")
        return name

    @field_validator("namespace")
    @classmethod
    def _dns_label(cls, namespace: str) -> str:
        if len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
            raise ValueError(f"{namespace!r} is not a valid namespace: use lower-case letters, digits and '-'")
        return namespace


class K8sServicePort(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    name: str = ""
    port: int = Field(ge=1, le=65535)
    target_port: int | str | None = Field(default=None, alias="targetPort")
    protocol: str = "TCP"
    app_protocol: str | None = Field(default=None, alias="appProtocol")


class K8sServiceSpec(BaseModel):
    """The parts of a core/v1 Service the mesh uses; the rest is the API server's business."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    selector: Labels = {}
    ports: list[K8sServicePort] = []
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    type: str = "ClusterIP"


@dataclass(frozen=True)
class Source:
    """Where an object came from, so problems can point at it."""

    file: str = "<input>"
    document: int | None = None


@dataclass(frozen=True)
class Resource:
    """One configuration object of a supported kind."""

    kind: str
    api_version: str
    meta: ObjectMeta
    spec: Any
    source: Source = field(default=Source(), compare=False)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.meta.namespace, self.meta.name)

    def to_dict(self) -> dict:
        """The object as a user would write it: only the fields that were set, Istio's field names."""
        meta: dict = {"name": self.meta.name, "namespace": self.meta.namespace}
        if self.meta.labels:
            meta["labels"] = dict(self.meta.labels)
        if self.meta.annotations:
            meta["annotations"] = dict(self.meta.annotations)
        if self.kind in FLAT_KINDS:
            return {
                "apiVersion": self.api_version,
                "kind": api_kind(self.kind),
                "metadata": meta,
                **self.spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
            }
        return {
            "apiVersion": self.api_version,
            "kind": api_kind(self.kind),
            "metadata": meta,
            "spec": self.spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
        }

    def config_path(self) -> str:
        """Istio's config reference, as it appears in route metadata: /apis/GROUP/VERSION/namespaces/NS/KIND/NAME."""
        group_version = self.api_version if "/" in self.api_version else f"core/{self.api_version}"
        kind = re.sub(r"(?<!^)(?=[A-Z])", "-", api_kind(self.kind)).lower()
        return f"/apis/{group_version}/namespaces/{self.namespace}/{kind}/{self.name}"


# The Gateway API's Gateway shares its kind name with Istio's: inside plait it is a KubernetesGateway
# (Istio's internal name for it too); users read and write ``kind: Gateway``.
KUBERNETES_GATEWAY = "KubernetesGateway"


def internal_kind(kind: str, api_version: str) -> str:
    """``Gateway`` of gateway.networking.k8s.io → ``KubernetesGateway``; every other kind as written."""
    return KUBERNETES_GATEWAY if kind == "Gateway" and api_version.startswith(gw.GROUP + "/") else kind


def api_kind(kind: str) -> str:
    """The kind as users write it (the inverse of `internal_kind`)."""
    return "Gateway" if kind == KUBERNETES_GATEWAY else kind


NETWORKING_VERSIONS = ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3")
SECURITY_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")
TELEMETRY_VERSIONS = ("telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1")

# kind → (accepted apiVersions, spec model)
SPEC_MODELS: dict[str, tuple[tuple[str, ...], type[BaseModel]]] = {
    "VirtualService": (NETWORKING_VERSIONS, net.VirtualServiceSpec),
    "DestinationRule": (NETWORKING_VERSIONS, net.DestinationRuleSpec),
    "ServiceEntry": (NETWORKING_VERSIONS, net.ServiceEntrySpec),
    "Gateway": (NETWORKING_VERSIONS, net.GatewaySpec),
    "Sidecar": (NETWORKING_VERSIONS, net.SidecarSpec),
    "WorkloadEntry": (NETWORKING_VERSIONS, net.WorkloadEntrySpec),
    "PeerAuthentication": (SECURITY_VERSIONS, sec.PeerAuthenticationSpec),
    "AuthorizationPolicy": (SECURITY_VERSIONS, sec.AuthorizationPolicySpec),
    "RequestAuthentication": (SECURITY_VERSIONS, sec.RequestAuthenticationSpec),
    "EnvoyFilter": (("networking.istio.io/v1alpha3",), ext.EnvoyFilterSpec),
    "ProxyConfig": (("networking.istio.io/v1beta1",), ext.ProxyConfigSpec),
    "Service": (("v1",), K8sServiceSpec),
    "Secret": (("v1",), secrets.SecretSpec),
    "ConfigMap": (("v1",), mesh.ConfigMapSpec),
    "Telemetry": (TELEMETRY_VERSIONS, tel.TelemetrySpec),
    "GatewayClass": (gw.VERSIONS, gw.GatewayClassSpec),
    KUBERNETES_GATEWAY: (gw.VERSIONS, gw.GatewaySpec),
    "HTTPRoute": (gw.VERSIONS, gw.HTTPRouteSpec),
    "GRPCRoute": (gw.GRPC_VERSIONS, gw.GRPCRouteSpec),
    "TCPRoute": (gw.TCP_VERSIONS, gw.TCPRouteSpec),
    "TLSRoute": (gw.TLS_VERSIONS, gw.TLSRouteSpec),
    "ReferenceGrant": ((f"{gw.GROUP}/v1beta1", f"{gw.GROUP}/v1alpha2"), gw.ReferenceGrantSpec),
}

# kind → Istio's cross-field rules (rules_networking, rules_security): spec → (path in spec, message)
SPEC_RULES: dict[str, Callable[[Any], Iterable[tuple[str, str]]]] = {
    "VirtualService": net_rules.virtual_service,
    "DestinationRule": net_rules.destination_rule,
    "ServiceEntry": net_rules.service_entry,
    "Gateway": net_rules.gateway,
    "Sidecar": net_rules.sidecar,
    "WorkloadEntry": net_rules.workload_entry,
    "PeerAuthentication": sec_rules.peer_authentication,
    "AuthorizationPolicy": sec_rules.authorization_policy,
    "RequestAuthentication": sec_rules.request_authentication,
    "ConfigMap": mesh.mesh_config_problems,
}

# Kinds whose fields sit at the top level of the document (no ``spec``); the loader reads them as the spec.
FLAT_KINDS = frozenset({"Secret", "ConfigMap"})
