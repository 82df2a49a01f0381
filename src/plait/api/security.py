"""Specs of Istio's security kinds (security.istio.io v1 and v1beta1): PeerAuthentication,
AuthorizationPolicy and RequestAuthentication.

Field names and value sets follow Istio's API reference; unknown fields are errors.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, Field, field_validator, model_validator

from plait.api.common import Duration, IstioModel, Labels
from plait.api.hosts import Cidr
from plait.api.unsupported import NOT_SUPPORTED_CONDITION_KEYS

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class WorkloadSelector(IstioModel):
    match_labels: Labels = {}


IpBlock = Cidr  # an IP address or a CIDR block


# ---------------------------------------------------------------- PeerAuthentication


class PeerMtls(IstioModel):
    mode: MtlsMode = "UNSET"


class PeerAuthenticationSpec(IstioModel):
    selector: WorkloadSelector | None = None
    mtls: PeerMtls | None = None
    port_level_mtls: dict[int, PeerMtls] = {}

    @field_validator("port_level_mtls")
    @classmethod
    def _ports(cls, value: dict[int, PeerMtls]) -> dict[int, PeerMtls]:
        bad = [p for p in value if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"port {bad[0]} is not a port number (1-65535)")
        return value

    @model_validator(mode="after")
    def _port_level_needs_selector(self) -> "PeerAuthenticationSpec":
        if self.port_level_mtls and not (self.selector and self.selector.match_labels):
            raise ValueError("portLevelMtls needs a workload selector (Istio applies it only to selected workloads)")
        return self


# ---------------------------------------------------------------- AuthorizationPolicy


def check_port(text: str) -> str:
    if not (isinstance(text, str) and text.isdigit() and 1 <= int(text) <= 65535):
        raise ValueError(f'{text!r} is not a port; expected a port number as a string, such as "8080"')
    return text


PortString = Annotated[str, AfterValidator(check_port)]

# Istio's documented `when` keys; ``[...]`` keys take a name inside the brackets.
CONDITION_KEYS = (
    "request.headers",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "source.trustDomain",
)
EXPERIMENTAL_PREFIX = "experimental.envoy.filters."  # experimental.envoy.filters.<filter>[<key>]
BRACKETED_KEYS = ("request.headers", "request.auth.claims")


def check_condition_key(key: str) -> str:
    base, bracket, rest = key.partition("[")
    if base in BRACKETED_KEYS or base.startswith(EXPERIMENTAL_PREFIX):
        if not bracket or not rest.endswith("]") or len(rest) < 2:
            raise ValueError(f"{key!r}: {base} needs a name in brackets, e.g. {base}[x-token]")
        return key
    if not bracket and base not in CONDITION_KEYS and base in NOT_SUPPORTED_CONDITION_KEYS:
        raise ValueError(f"condition key {key!r} is valid in Istio but not supported by plait yet")
    if bracket or base not in CONDITION_KEYS:
        raise ValueError(
            f"unknown condition key {key!r}; expected one of "
            + ", ".join(k + ("[...]" if k in BRACKETED_KEYS else "") for k in CONDITION_KEYS)
        )
    return key


class Source(IstioModel):
    principals: list[str] = []
    not_principals: list[str] = []
    request_principals: list[str] = []
    not_request_principals: list[str] = []
    namespaces: list[str] = []
    not_namespaces: list[str] = []
    service_accounts: list[str] = []
    not_service_accounts: list[str] = []
    ip_blocks: list[IpBlock] = []
    not_ip_blocks: list[IpBlock] = []
    remote_ip_blocks: list[IpBlock] = []
    not_remote_ip_blocks: list[IpBlock] = []
    trust_domains: list[str] = []
    not_trust_domains: list[str] = []


class Operation(IstioModel):
    hosts: list[str] = []
    not_hosts: list[str] = []
    ports: list[PortString] = []
    not_ports: list[PortString] = []
    methods: list[str] = []
    not_methods: list[str] = []
    paths: list[str] = []
    not_paths: list[str] = []


class RuleFrom(IstioModel):
    source: Source


class RuleTo(IstioModel):
    operation: Operation


class Condition(IstioModel):
    key: Annotated[str, AfterValidator(check_condition_key)]
    values: list[str] = []
    not_values: list[str] = []

    @model_validator(mode="after")
    def _some_values(self) -> "Condition":
        if not self.values and not self.not_values:
            raise ValueError(f"condition {self.key!r} needs values or notValues")
        return self


class Rule(IstioModel):
    from_: list[RuleFrom] = Field(default=[], alias="from")
    to: list[RuleTo] = []
    when: list[Condition] = []


class ExtensionProvider(IstioModel):
    name: str


class AuthorizationPolicySpec(IstioModel):
    selector: WorkloadSelector | None = None
    rules: list[Rule] = []
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    provider: ExtensionProvider | None = None

    @model_validator(mode="after")
    def _custom_needs_provider(self) -> "AuthorizationPolicySpec":
        if self.action == "CUSTOM":
            raise ValueError(
                "action CUSTOM (external authorization) is valid in Istio but not supported by plait yet; "
                "use ALLOW, DENY or AUDIT"
            )
        if self.provider is not None:
            raise ValueError("provider is only used with action CUSTOM, which is not supported by plait yet")
        return self


# ---------------------------------------------------------------- RequestAuthentication


class JwtHeader(IstioModel):
    name: str = Field(min_length=1)
    prefix: str = ""


class ClaimToHeader(IstioModel):
    header: str = Field(min_length=1)
    claim: str = Field(min_length=1)


class JwtRule(IstioModel):
    issuer: str = Field(min_length=1)
    audiences: list[str] = []
    jwks_uri: str | None = Field(default=None, validation_alias=AliasChoices("jwksUri", "jwks_uri"))  # both in the CRD
    jwks: str | None = None
    from_headers: list[JwtHeader] = []
    from_params: list[str] = []
    from_cookies: list[str] = []
    output_payload_to_header: str | None = None
    output_claim_to_headers: list[ClaimToHeader] = []
    forward_original_token: bool = False
    timeout: Duration | None = None
    space_delimited_claims: list[str] | None = None

    @field_validator("jwks_uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> "JwtRule":
        if self.jwks and self.jwks_uri:
            raise ValueError("set only one of jwks and jwksUri")
        if not self.jwks and not self.jwks_uri:
            raise ValueError(
                "a jwtRule without jwks or jwksUri has its keys discovered through OpenID Connect "
                "(<issuer>/.well-known/openid-configuration), which plait does not support yet: "
                "set jwksUri to the issuer's jwks_uri, or jwks to the keys"
            )
        return self


class RequestAuthenticationSpec(IstioModel):
    selector: WorkloadSelector | None = None
    jwt_rules: list[JwtRule] = []
