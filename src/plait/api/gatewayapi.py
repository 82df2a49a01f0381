"""Specs of the Kubernetes Gateway API kinds (gateway.networking.k8s.io v1, v1beta1, v1alpha2).

GatewayClass, Gateway, HTTPRoute, GRPCRoute, TCPRoute, TLSRoute and ReferenceGrant, with the field
names and value sets of the Gateway API's standard and experimental channels. Every model forbids
unknown fields, so a typo is an error; fields of the API that plait does not act on yet are named as
such (see unsupported.py). In: parsed YAML. Out: frozen models; `plait.lower.gatewayapi` turns them
into Istio's Gateway and VirtualService.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from plait.api.common import Duration, IstioModel, Labels, check_re2
from plait.api.networking import check_header_name

GROUP = "gateway.networking.k8s.io"
VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1beta1")
GRPC_VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1alpha2")
TCP_VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1alpha2")
TLS_VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1alpha3", f"{GROUP}/v1alpha2")
ISTIO_CONTROLLER = "istio.io/gateway-controller"


# ---------------------------------------------------------------- shared references


class ParentReference(IstioModel):
    group: str = GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    name: str = Field(min_length=1)
    section_name: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class BackendRef(IstioModel):
    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1)
    namespace: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    weight: int = Field(default=1, ge=0, le=1_000_000)


class SecretObjectReference(IstioModel):
    group: str = ""
    kind: str = "Secret"
    name: str = Field(min_length=1)
    namespace: str | None = None


class LabelSelector(IstioModel):
    match_labels: Labels = {}


# ---------------------------------------------------------------- GatewayClass


class GatewayClassSpec(IstioModel):
    controller_name: str = Field(min_length=1)
    description: str | None = None


# ---------------------------------------------------------------- Gateway


class RouteNamespaces(IstioModel):
    from_: Literal["All", "Same", "Selector"] = Field(default="Same", alias="from")
    selector: LabelSelector | None = None

    @model_validator(mode="after")
    def _selector_with_selector(self) -> "RouteNamespaces":
        if self.from_ == "Selector" and self.selector is None:
            raise ValueError("from: Selector needs a selector")
        return self


class RouteGroupKind(IstioModel):
    group: str = GROUP
    kind: str = Field(min_length=1)


class AllowedRoutes(IstioModel):
    namespaces: RouteNamespaces = RouteNamespaces()
    kinds: list[RouteGroupKind] = []


class GatewayTLSConfig(IstioModel):
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificate_refs: list[SecretObjectReference] = []


class Listener(IstioModel):
    name: str = Field(min_length=1)
    hostname: str | None = None
    port: int = Field(ge=1, le=65535)
    protocol: Literal["HTTP", "HTTPS", "TLS", "TCP"]
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes = AllowedRoutes()

    @model_validator(mode="after")
    def _tls_where_needed(self) -> "Listener":
        if self.protocol == "HTTPS" and (self.tls is None or self.tls.mode != "Terminate"):
            raise ValueError("an HTTPS listener needs tls with mode Terminate and certificateRefs")
        if self.tls and self.tls.mode == "Terminate" and not self.tls.certificate_refs:
            raise ValueError("tls mode Terminate needs at least one certificateRefs entry")
        if self.protocol == "TLS" and self.tls is None:
            raise ValueError("a TLS listener needs tls (mode Passthrough, or Terminate with certificateRefs)")
        if self.protocol in ("HTTP", "TCP") and self.tls is not None:
            raise ValueError(f"a {self.protocol} listener takes no tls")
        return self


class GatewayAddress(IstioModel):
    type: Literal["IPAddress", "Hostname"] = "IPAddress"
    value: str = Field(min_length=1)


class GatewayInfrastructure(IstioModel):
    labels: Labels = {}
    annotations: dict[str, str] = {}


class GatewaySpec(IstioModel):
    gateway_class_name: str = Field(min_length=1)
    listeners: list[Listener] = Field(min_length=1, max_length=64)
    addresses: list[GatewayAddress] = []
    infrastructure: GatewayInfrastructure | None = None

    @field_validator("listeners")
    @classmethod
    def _unique_names(cls, listeners: list[Listener]) -> list[Listener]:
        names = [listener.name for listener in listeners]
        if len(set(names)) != len(names):
            raise ValueError("listener names must be unique")
        return listeners


# ---------------------------------------------------------------- HTTPRoute


class HTTPPathMatch(IstioModel):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"

    @model_validator(mode="after")
    def _valid_value(self) -> "HTTPPathMatch":
        if self.type == "RegularExpression":
            check_re2(self.value)
        elif not self.value.startswith("/"):
            raise ValueError(f"path {self.value!r} must start with '/'")
        return self


class HTTPHeaderMatch(IstioModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str = Field(min_length=1)
    value: str

    @field_validator("name")
    @classmethod
    def _header_name(cls, name: str) -> str:
        return check_header_name(name)

    @model_validator(mode="after")
    def _valid_regex(self) -> "HTTPHeaderMatch":
        if self.type == "RegularExpression":
            check_re2(self.value)
        return self


class HTTPQueryParamMatch(IstioModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str = Field(min_length=1)
    value: str

    @model_validator(mode="after")
    def _valid_regex(self) -> "HTTPQueryParamMatch":
        if self.type == "RegularExpression":
            check_re2(self.value)
        return self


HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


class HTTPRouteMatch(IstioModel):
    path: HTTPPathMatch | None = None
    headers: list[HTTPHeaderMatch] = []
    query_params: list[HTTPQueryParamMatch] = []
    method: HTTPMethod | None = None


class HTTPHeader(IstioModel):
    name: str = Field(min_length=1)
    value: str


class HTTPHeaderFilter(IstioModel):
    set: list[HTTPHeader] = []
    add: list[HTTPHeader] = []
    remove: list[str] = []


class HTTPPathModifier(IstioModel):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None

    @model_validator(mode="after")
    def _value_for_type(self) -> "HTTPPathModifier":
        wanted = "replaceFullPath" if self.type == "ReplaceFullPath" else "replacePrefixMatch"
        value = self.replace_full_path if self.type == "ReplaceFullPath" else self.replace_prefix_match
        if value is None:
            raise ValueError(f"type {self.type} needs {wanted}")
        return self


class HTTPRequestRedirectFilter(IstioModel):
    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    status_code: Literal[301, 302] = 302


class HTTPURLRewriteFilter(IstioModel):
    hostname: str | None = None
    path: HTTPPathModifier | None = None


class Fraction(IstioModel):
    numerator: int = Field(ge=0)
    denominator: int = Field(default=100, ge=1)


class HTTPRequestMirrorFilter(IstioModel):
    backend_ref: BackendRef
    percent: int | None = Field(default=None, ge=0, le=100)
    fraction: Fraction | None = None


FILTER_FIELDS = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestRedirect": "request_redirect",
    "URLRewrite": "url_rewrite",
    "RequestMirror": "request_mirror",
}


def _check_filter_config(f: IstioModel, fields: dict[str, str]) -> IstioModel:
    """A filter carries the config field of its type and no other (the CRDs' CEL rules)."""
    wanted = fields[f.type]
    for field_name in fields.values():
        present = getattr(f, field_name) is not None
        alias = type(f).model_fields[field_name].alias
        if field_name == wanted and not present:
            raise ValueError(f"filter type {f.type} needs its {alias} field")
        if field_name != wanted and present:
            raise ValueError(f"filter type {f.type} takes no {alias} field")
    return f


class HTTPRouteFilter(IstioModel):
    type: Literal["RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "RequestMirror"]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None

    @model_validator(mode="after")
    def _config_matches_type(self) -> "HTTPRouteFilter":
        return _check_filter_config(self, FILTER_FIELDS)

    @property
    def config(self) -> IstioModel:
        return getattr(self, FILTER_FIELDS[self.type])


class HTTPRouteTimeouts(IstioModel):
    request: Duration | None = None
    backend_request: Duration | None = None


class HTTPRouteRule(IstioModel):
    name: str | None = None
    matches: list[HTTPRouteMatch] = Field(default=[HTTPRouteMatch(path=HTTPPathMatch())], max_length=64)
    filters: list[HTTPRouteFilter] = []
    backend_refs: list[BackendRef] = []
    timeouts: HTTPRouteTimeouts | None = None

    @model_validator(mode="after")
    def _one_redirect_or_rewrite(self) -> "HTTPRouteRule":
        types = [f.type for f in self.filters]
        if "RequestRedirect" in types and "URLRewrite" in types:
            raise ValueError("a rule may not have both RequestRedirect and URLRewrite filters")
        if "RequestRedirect" in types and self.backend_refs:
            raise ValueError("a rule with a RequestRedirect filter takes no backendRefs")
        for t in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"):
            if types.count(t) > 1:
                raise ValueError(f"filter {t} may appear only once in a rule")
        return self


class HTTPRouteSpec(IstioModel):
    parent_refs: list[ParentReference] = Field(default=[], max_length=32)
    hostnames: list[str] = []
    rules: list[HTTPRouteRule] = Field(default=[HTTPRouteRule()], max_length=16)


# ---------------------------------------------------------------- GRPCRoute

_GRPC_SERVICE = re.compile(r"^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$", re.IGNORECASE)
_GRPC_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")


class GRPCMethodMatch(IstioModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    service: str | None = None
    method: str | None = None

    @model_validator(mode="after")
    def _valid_names(self) -> "GRPCMethodMatch":
        if self.service is None and self.method is None:
            raise ValueError("one or both of service and method must be given")
        for value, pattern, what in ((self.service, _GRPC_SERVICE, "service"), (self.method, _GRPC_METHOD, "method")):
            if value is None:
                continue
            if self.type == "RegularExpression":
                check_re2(value)
            elif not pattern.match(value):
                raise ValueError(f"{what} {value!r} must match {pattern.pattern}")
        return self


class GRPCRouteMatch(IstioModel):
    method: GRPCMethodMatch | None = None
    headers: list[HTTPHeaderMatch] = Field(default=[], max_length=16)


GRPC_FILTER_FIELDS = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestMirror": "request_mirror",
}


class GRPCRouteFilter(IstioModel):
    type: Literal["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror"]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None

    @model_validator(mode="after")
    def _config_matches_type(self) -> "GRPCRouteFilter":
        return _check_filter_config(self, GRPC_FILTER_FIELDS)

    @property
    def config(self) -> IstioModel:
        return getattr(self, GRPC_FILTER_FIELDS[self.type])


class GRPCRouteRule(IstioModel):
    name: str | None = None
    matches: list[GRPCRouteMatch] = Field(default=[], max_length=64)
    filters: list[GRPCRouteFilter] = Field(default=[], max_length=16)
    backend_refs: list[BackendRef] = Field(default=[], max_length=16)

    @model_validator(mode="after")
    def _filters_once(self) -> "GRPCRouteRule":
        types = [f.type for f in self.filters]
        for t in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            if types.count(t) > 1:
                raise ValueError(f"filter {t} may appear only once in a rule")
        return self


class GRPCRouteSpec(IstioModel):
    parent_refs: list[ParentReference] = Field(default=[], max_length=32)
    hostnames: list[str] = Field(default=[], max_length=16)
    rules: list[GRPCRouteRule] = Field(default=[], max_length=16)


# ---------------------------------------------------------------- TCPRoute, TLSRoute


class L4RouteRule(IstioModel):
    name: str | None = None
    backend_refs: list[BackendRef] = Field(min_length=1, max_length=16)


class TCPRouteSpec(IstioModel):
    parent_refs: list[ParentReference] = Field(default=[], max_length=32)
    rules: list[L4RouteRule] = Field(min_length=1, max_length=16)


class TLSRouteSpec(IstioModel):
    parent_refs: list[ParentReference] = Field(default=[], max_length=32)
    hostnames: list[str] = Field(default=[], max_length=16)
    rules: list[L4RouteRule] = Field(min_length=1, max_length=16)


# ---------------------------------------------------------------- ReferenceGrant


class ReferenceGrantFrom(IstioModel):
    group: str
    kind: str = Field(min_length=1)
    namespace: str = Field(min_length=1)


class ReferenceGrantTo(IstioModel):
    group: str
    kind: str = Field(min_length=1)
    name: str | None = None


class ReferenceGrantSpec(IstioModel):
    from_: list[ReferenceGrantFrom] = Field(alias="from", min_length=1)
    to: list[ReferenceGrantTo] = Field(min_length=1)
