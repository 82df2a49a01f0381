"""Specs of Istio's networking kinds (networking.istio.io v1, v1beta1, v1alpha3).

Field names and value sets follow Istio's API reference; every model forbids
unknown fields so that a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, Field, field_validator, model_validator

from plait.api.common import Duration, IstioModel, Labels, Percent, PortSelector, Regex, StringMatch
from plait.api.hosts import Cidr, Host, check_host

# ---------------------------------------------------------------- VirtualService


def check_weights(destinations: list) -> list:
    """With several destinations, some weight must be above 0 (Istio's rule; weights are relative:
    Envoy sends each destination its weight over their sum)."""
    if len(destinations) > 1 and sum(d.weight or 0 for d in destinations) == 0:
        raise ValueError("route weights add up to 0; with several destinations at least one needs a weight")
    return destinations


Weighted = AfterValidator(check_weights)


class Destination(IstioModel):
    host: str
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(IstioModel):
    set: dict[str, str] = {}
    add: dict[str, str] = {}
    remove: list[str] = []


class Headers(IstioModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRouteDestination(IstioModel):
    destination: Destination
    weight: int | None = Field(default=None, ge=0, le=2**31 - 1)
    headers: Headers | None = None


class RouteDestination(IstioModel):
    destination: Destination
    weight: int | None = Field(default=None, ge=0, le=2**31 - 1)


JWT_CLAIM_PREFIX = "@request.auth.claims"
_HEADER_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def check_header_name(name: str) -> str:
    """An HTTP header name (RFC 7230 token), or a JWT claim route key such as ``@request.auth.claims.groups``."""
    if not (name.startswith(JWT_CLAIM_PREFIX) or _HEADER_TOKEN.match(name)):
        raise ValueError(f"{name!r} is not a valid HTTP header name")
    return name


class HTTPMatchRequest(IstioModel):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = {}
    port: int | None = Field(default=None, ge=1, le=65535)
    source_labels: Labels = {}
    gateways: list[str] = []
    query_params: dict[str, StringMatch] = {}
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = {}
    source_namespace: str | None = None
    stat_prefix: str | None = None

    @field_validator("without_headers", mode="before")
    @classmethod
    def _regex_star_is_presence(cls, headers: object) -> object:
        """``withoutHeaders: {x: {regex: "*"}}`` means "x is absent" in Istio ("*" is not read as RE2)."""
        if isinstance(headers, dict):
            return {name: {} if match == {"regex": "*"} else match for name, match in headers.items()}
        return headers

    @field_validator("headers", "without_headers")
    @classmethod
    def _lowercase_header_names(cls, headers: dict[str, StringMatch]) -> dict[str, StringMatch]:
        """HTTP header names are case-insensitive: lower-case them as Istio does (JWT claim names keep their case)."""
        for name in headers:
            check_header_name(name)
        return {name if name.startswith(JWT_CLAIM_PREFIX) else name.lower(): match for name, match in headers.items()}


class HTTPRedirect(IstioModel):
    uri: str | None = None
    authority: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: int = 301
    prefix_rewrite: str | None = None

    @model_validator(mode="after")
    def _one_path(self) -> "HTTPRedirect":
        if self.uri and self.prefix_rewrite:
            raise ValueError("set only one of uri and prefixRewrite")
        return self

    @field_validator("redirect_code")
    @classmethod
    def _known_code(cls, code: int) -> int:
        if code not in (301, 302, 303, 307, 308):
            raise ValueError(f"redirectCode {code} is not one of 301, 302, 303, 307, 308")
        return code


class HTTPBody(IstioModel):
    string: str | None = None
    bytes: str | None = None  # base64, as in Istio


class HTTPDirectResponse(IstioModel):
    status: int = Field(ge=200, le=599)
    body: HTTPBody | None = None


class RegexRewrite(IstioModel):
    match: Regex
    rewrite: str


class HTTPRewrite(IstioModel):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> "HTTPRewrite":
        if self.uri is not None and self.uri_regex_rewrite is not None:
            raise ValueError("set only one of uri and uriRegexRewrite")
        return self


class HTTPRetry(IstioModel):
    attempts: int = Field(default=0, ge=0)
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: Duration | None = None


class FaultDelay(IstioModel):
    fixed_delay: Duration
    percentage: Percent | None = None
    percent: int | None = Field(default=None, ge=0, le=100)  # deprecated integer form


class FaultAbort(IstioModel):
    http_status: int | None = Field(default=None, ge=200, le=599)
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None
    percent: int | None = Field(default=None, ge=0, le=100)  # deprecated integer form

    @model_validator(mode="after")
    def _one_error(self) -> "FaultAbort":
        if (self.http_status is None) == (self.grpc_status is None):
            raise ValueError("set exactly one of httpStatus and grpcStatus")
        return self


class HTTPFaultInjection(IstioModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _something(self) -> "HTTPFaultInjection":
        if self.delay is None and self.abort is None:
            raise ValueError("a fault needs a delay or an abort")
        return self


class HTTPMirrorPolicy(IstioModel):
    destination: Destination
    percentage: Percent | None = None


class CorsPolicy(IstioModel):
    allow_origins: list[StringMatch] = []
    allow_origin: list[str] = []  # deprecated exact origins
    allow_methods: list[str] = []
    allow_headers: list[str] = []
    expose_headers: list[str] = []
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None


class Delegate(IstioModel):
    """A VirtualService (without hosts) whose http routes are merged under this route's matches."""

    name: str = Field(min_length=1)
    namespace: str | None = None


class HTTPRoute(IstioModel):
    name: str | None = None
    delegate: Delegate | None = None
    match: list[HTTPMatchRequest] = []
    route: Annotated[list[HTTPRouteDestination], Weighted] = []
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = []
    mirror_percentage: Percent | None = None
    mirror_percent: int | None = Field(
        default=None,
        ge=0,
        le=100,  # the CRD also lists the legacy spelling
        validation_alias=AliasChoices("mirrorPercent", "mirror_percent"),
    )
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None

    @model_validator(mode="after")
    def _action(self) -> "HTTPRoute":
        actions = [
            a
            for a, v in (("route", self.route), ("redirect", self.redirect), ("directResponse", self.direct_response))
            if v
        ]
        if self.delegate is not None:
            if self.route or self.redirect:
                raise ValueError("a root HTTP route with a delegate must not specify route or redirect")
            return self
        if not actions:
            raise ValueError("an HTTP route needs one of route, redirect, directResponse or delegate")
        if len(actions) > 1:
            raise ValueError(f"set only one of route, redirect, directResponse (got {', '.join(actions)})")
        if self.mirror and self.mirrors:
            raise ValueError("set only one of mirror and mirrors")
        return self


class L4MatchAttributes(IstioModel):
    destination_subnets: list[Cidr] = []
    port: int | None = Field(default=None, ge=1, le=65535)
    source_labels: Labels = {}
    gateways: list[str] = []
    source_namespace: str | None = None
    source_subnet: str | None = None  # accepted without effect, as Istio (hidden from its docs, unused)


class TLSMatchAttributes(L4MatchAttributes):
    sni_hosts: list[Host] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_source_subnet(self) -> "TLSMatchAttributes":
        if self.source_subnet is not None:
            raise ValueError(
                "sourceSubnet is not a field of a TLS match (Istio removed it); it exists only in tcp matches"
            )
        return self


class TCPRoute(IstioModel):
    match: list[L4MatchAttributes] = []
    route: Annotated[list[RouteDestination], Field(min_length=1), Weighted]


class TLSRoute(IstioModel):
    match: list[TLSMatchAttributes] = Field(min_length=1)
    route: Annotated[list[RouteDestination], Field(min_length=1), Weighted]


class VirtualServiceSpec(IstioModel):
    hosts: list[Host] = []
    gateways: list[str] = []
    http: list[HTTPRoute] = []
    tls: list[TLSRoute] = []
    tcp: list[TCPRoute] = []
    export_to: list[str] = []

    @model_validator(mode="after")
    def _has_hosts(self) -> "VirtualServiceSpec":
        if not self.hosts:  # a delegate: its http routes are merged into a root VirtualService's
            wrong = [f for f in ("gateways", "tls", "tcp") if getattr(self, f)]
            if wrong:
                raise ValueError(f"a delegate VirtualService (no hosts) must have no {' or '.join(wrong)}")
            if not self.http:
                raise ValueError("a VirtualService needs hosts, or http routes when it is a delegate (no hosts)")
            if any(h.delegate for h in self.http):
                raise ValueError("a delegate VirtualService (no hosts) cannot delegate again")
        if not (self.http or self.tls or self.tcp):
            raise ValueError("a VirtualService needs at least one of http, tls or tcp routes")
        return self

    @model_validator(mode="after")
    def _claims_only_on_gateways(self) -> "VirtualServiceSpec":
        """Istio: ``@request.auth.claims`` matches need a VirtualService bound to gateways only."""
        if self.gateways and "mesh" not in self.gateways:
            return self
        for route in self.http:
            for match in route.match:
                for name in (*match.headers, *match.without_headers):
                    if name.lower().startswith("@request.auth.claims"):
                        raise ValueError(
                            f"JWT claim based routing ({name}) is only supported for gateways: "
                            "list gateways (and not mesh) in spec.gateways"
                        )
        return self


# ---------------------------------------------------------------- DestinationRule

LbSimple = Literal["UNSPECIFIED", "ROUND_ROBIN", "LEAST_CONN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH"]


class CookieAttribute(IstioModel):
    name: str = Field(min_length=1)
    value: str | None = None


class HTTPCookie(IstioModel):
    name: str
    path: str | None = None
    ttl: Duration | None = None
    attributes: list[CookieAttribute] = []


class RingHash(IstioModel):
    minimum_ring_size: int | None = None


class Maglev(IstioModel):
    table_size: int | None = None


class ConsistentHashLB(IstioModel):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: Maglev | None = None
    minimum_ring_size: int | None = None  # deprecated

    @model_validator(mode="after")
    def _one_key(self) -> "ConsistentHashLB":
        keys = [
            k
            for k in ("http_header_name", "http_cookie", "use_source_ip", "http_query_parameter_name")
            if getattr(self, k)
        ]
        if len(keys) != 1:
            raise ValueError("set exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName")
        return self


class WarmupConfiguration(IstioModel):
    duration: Duration
    minimum_percent: float | None = Field(default=None, ge=0, le=100)
    aggression: float | None = Field(default=None, ge=1)


class LocalityDistribute(IstioModel):
    from_: str = Field(alias="from")
    to: dict[str, int] = {}


class LocalityFailover(IstioModel):
    from_: str = Field(alias="from")
    to: str


class LocalityLoadBalancerSetting(IstioModel):
    distribute: list[LocalityDistribute] = []
    failover: list[LocalityFailover] = []
    failover_priority: list[str] = []
    enabled: bool | None = None


class LoadBalancerSettings(IstioModel):
    simple: LbSimple | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    warmup_duration_secs: Duration | None = None
    warmup: WarmupConfiguration | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "LoadBalancerSettings":
        if self.simple and self.consistent_hash:
            raise ValueError("set only one of simple and consistentHash")
        return self


class TcpKeepalive(IstioModel):
    probes: int | None = None
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(IstioModel):
    max_connections: int | None = Field(default=None, ge=0)
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: Duration | None = None


class ConnectionKeepalive(IstioModel):
    interval: Duration | None = None
    timeout: Duration | None = None


class HTTPSettings(IstioModel):
    http1_max_pending_requests: int | None = Field(default=None, ge=0)
    http2_max_requests: int | None = Field(default=None, ge=0)
    max_requests_per_connection: int | None = Field(default=None, ge=0)
    max_retries: int | None = Field(default=None, ge=0)
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: int | None = Field(default=None, ge=0)
    http2_keep_alive: ConnectionKeepalive | None = None


class ConnectionPoolSettings(IstioModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(IstioModel):
    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: int | None = Field(default=None, ge=0)
    consecutive_gateway_errors: int | None = Field(default=None, ge=0)
    consecutive_5xx_errors: int | None = Field(default=None, ge=0, alias="consecutive5xxErrors")
    consecutive_errors: int | None = Field(default=None, ge=0)  # deprecated
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    min_health_percent: int | None = Field(default=None, ge=0, le=100)


TlsClientMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


class ClientTLSSettings(IstioModel):
    mode: TlsClientMode = "DISABLE"
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = []
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None

    @model_validator(mode="after")
    def _mutual_needs_certs(self) -> "ClientTLSSettings":
        if self.mode == "MUTUAL" and not self.credential_name and not (self.client_certificate and self.private_key):
            raise ValueError("tls mode MUTUAL needs clientCertificate and privateKey, or credentialName")
        return self


class PortTrafficPolicy(IstioModel):
    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class ProxyProtocol(IstioModel):
    version: Literal["V1", "V2"] = "V1"


class RetryBudget(IstioModel):
    percent: float | None = Field(default=None, ge=0, le=100)
    min_retry_concurrency: int | None = Field(default=None, ge=0)
    budget_interval: Duration | None = None


class TrafficPolicy(IstioModel):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = []
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None

    def for_port(self, port: int) -> "TrafficPolicy":
        """The policy in force on one port: port-level settings override the top level."""
        for level in self.port_level_settings:
            if level.port.number == port:
                merged = self.model_dump(exclude={"port_level_settings"})
                merged.update({k: v for k, v in level.model_dump(exclude={"port"}).items() if v is not None})
                return TrafficPolicy.model_validate(merged)
        return self


class Subset(IstioModel):
    name: str = Field(min_length=1)
    labels: Labels = {}
    traffic_policy: TrafficPolicy | None = None


class WorkloadSelector(IstioModel):
    match_labels: Labels = {}


class DestinationRuleSpec(IstioModel):
    host: Host
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = []
    export_to: list[str] = []
    workload_selector: WorkloadSelector | None = None

    @model_validator(mode="after")
    def _unique_subsets(self) -> "DestinationRuleSpec":
        names = [s.name for s in self.subsets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"subset names must be unique; repeated: {', '.join(dupes)}")
        return self


# ---------------------------------------------------------------- ServiceEntry, WorkloadEntry

PortProtocol = str  # checked in plait.model.protocol; Istio accepts any case


class ServicePort(IstioModel):
    number: int = Field(ge=1, le=65535)
    protocol: PortProtocol | None = None
    name: str = ""
    target_port: int | None = Field(default=None, ge=1, le=65535)


class WorkloadEntrySpec(IstioModel):
    address: str = ""
    ports: dict[str, int] = {}
    labels: Labels = {}
    network: str | None = None
    locality: str | None = None
    weight: int | None = Field(default=None, ge=0)
    service_account: str | None = None


class WorkloadSelectorLabels(IstioModel):
    labels: Labels = {}


class ServiceEntrySpec(IstioModel):
    hosts: list[Host] = Field(min_length=1)
    addresses: list[Cidr] = []
    ports: list[ServicePort] = []
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] = "NONE"
    endpoints: list[WorkloadEntrySpec] = []
    workload_selector: WorkloadSelectorLabels | None = None
    export_to: list[str] = []
    subject_alt_names: list[str] = []

    @model_validator(mode="after")
    def _resolution_rules(self) -> "ServiceEntrySpec":
        if self.endpoints and self.workload_selector:
            raise ValueError("set only one of endpoints and workloadSelector")
        if self.resolution in ("DNS", "DNS_ROUND_ROBIN") and not self.endpoints:
            wild = [h for h in self.hosts if h.startswith("*")]
            if wild:
                raise ValueError(
                    f"resolution {self.resolution} cannot resolve wildcard hosts ({', '.join(wild)}); "
                    "use resolution NONE or list endpoints"
                )
        return self


# ---------------------------------------------------------------- Gateway


class GatewayPort(IstioModel):
    number: int = Field(ge=1, le=65535)
    protocol: str
    name: str = ""
    target_port: int | None = Field(default=None, ge=1, le=65535)


TlsProtocolVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]
TlsServerMode = Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"]


class TLSCertificate(IstioModel):
    """One of a Gateway server's ``tls.tlsCertificates`` (e.g. an RSA and an ECDSA pair)."""

    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None


class ServerTLSSettings(IstioModel):
    https_redirect: bool = False
    mode: TlsServerMode | None = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: list[str] = []
    ca_cert_credential_name: str | None = None
    tls_certificates: list[TLSCertificate] = []
    subject_alt_names: list[str] = []
    verify_certificate_spki: list[str] = []
    verify_certificate_hash: list[str] = []
    insecure_skip_verify: bool | None = None
    min_protocol_version: TlsProtocolVersion | None = None
    max_protocol_version: TlsProtocolVersion | None = None
    cipher_suites: list[str] = []


class Server(IstioModel):
    port: GatewayPort
    bind: str | None = None
    hosts: list[str] = Field(min_length=1)
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None

    @field_validator("hosts")
    @classmethod
    def _namespaced_hosts(cls, hosts: list[str]) -> list[str]:
        for entry in hosts:
            check_host(entry.split("/", 1)[1] if "/" in entry else entry)
        return hosts

    @model_validator(mode="after")
    def _tls_for_https(self) -> "Server":
        proto = self.port.protocol.upper()
        if proto in ("HTTPS", "TLS") and (self.tls is None or self.tls.mode is None):
            raise ValueError(f"a {proto} server needs tls.mode (SIMPLE, MUTUAL, PASSTHROUGH, ...)")
        tls = self.tls
        if (
            tls
            and tls.mode in ("SIMPLE", "MUTUAL")
            and not tls.credential_name
            and not tls.credential_names
            and not tls.tls_certificates
            and not (tls.server_certificate and tls.private_key)
        ):
            raise ValueError(
                f"tls mode {tls.mode} needs credentialName, tlsCertificates, or serverCertificate and privateKey"
            )
        return self


class GatewaySpec(IstioModel):
    selector: Labels = {}
    servers: list[Server] = Field(min_length=1)


# ---------------------------------------------------------------- Sidecar


class IstioEgressListener(IstioModel):
    port: GatewayPort | None = None
    bind: str | None = None
    capture_mode: Literal["DEFAULT", "IPTABLES", "NONE"] | None = None
    hosts: list[str] = Field(min_length=1)

    @field_validator("hosts")
    @classmethod
    def _ns_host_form(cls, hosts: list[str]) -> list[str]:
        for entry in hosts:
            if "/" not in entry:
                raise ValueError(
                    f"egress host {entry!r} must have the form 'namespace/host', e.g. './*' or 'istio-system/*'"
                )
            ns, host = entry.split("/", 1)
            if not ns:
                raise ValueError(f"egress host {entry!r} has an empty namespace; use '.', '*', '~' or a name")
            check_host(host)
        return hosts


class IstioIngressListener(IstioModel):
    """A Sidecar ``ingress`` listener: the workload's inbound ports, instead of its services' ports."""

    port: GatewayPort
    bind: str | None = None  # accepted; capture mode matches on the port only
    capture_mode: Literal["DEFAULT", "IPTABLES", "NONE"] | None = None
    default_endpoint: str | None = None
    tls: ServerTLSSettings | None = None  # accepted without effect, as Istio (ENABLE_TLS_ON_SIDECAR_INGRESS off)
    connection_pool: ConnectionPoolSettings | None = None

    @field_validator("default_endpoint")
    @classmethod
    def _endpoint_form(cls, value: str | None) -> str | None:
        if not value or value.startswith("unix://"):
            return value
        host, _, port = value.rpartition(":")
        if host not in ("127.0.0.1", "0.0.0.0", "[::1]", "[::]") or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"defaultEndpoint {value!r} must be 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path"
            )
        return value


class OutboundTrafficPolicy(IstioModel):
    mode: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"
    egress_proxy: Destination | None = None


class SidecarSpec(IstioModel):
    workload_selector: WorkloadSelectorLabels | None = None
    ingress: list[IstioIngressListener] = []
    egress: list[IstioEgressListener] = []
    inbound_connection_pool: ConnectionPoolSettings | None = None
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
