"""Istio API that is real but that plait does not implement yet, so it is named as such.

A field, value or kind listed here is valid Istio configuration: loading it
fails with "not supported by plait yet", never with "unknown field, check its
spelling". The lists are consulted only when a model refuses something, so a
field that a model implements always wins over an entry here (an entry that a
model has grown is merely unused).

Field entries are dotted paths inside ``spec`` with list indices left out,
matched as a suffix on a ``.`` boundary: ``loadBalancer.warmup`` covers
``trafficPolicy.loadBalancer.warmup``, ``subsets[0].trafficPolicy.loadBalancer.warmup``
and ``trafficPolicy.portLevelSettings[1].loadBalancer.warmup``. The field
lists were derived from Istio's CRD schemas (istio/api
kubernetes/customresourcedefinitions.gen.yaml) against plait's models.
"""

from __future__ import annotations

NOT_SUPPORTED_FIELDS: dict[str, tuple[str, ...]] = {
    "VirtualService": ("http.fault.delay.exponentialDelay",),
    "DestinationRule": (
        "loadBalancer.zoneAwareLbSetting",
        "outlierDetection.outlierDetectionHttpErrorCodes",
        "trafficPolicy.tunnel",
    ),
    "AuthorizationPolicy": ("targetRef", "targetRefs"),
    "RequestAuthentication": ("jwtRules.presence", "targetRef", "targetRefs"),
    "Telemetry": (
        "metrics.reportingInterval",
        "targetRef",
        "targetRefs",
        "tracing.useRequestIdForTraceSampling",
        "tracing.disableContextPropagation",
    ),
    # Gateway API (standard channel) fields plait does not act on yet
    "HTTPRoute": (
        "rules.retry",
        "rules.sessionPersistence",
        "backendRefs.filters",
        "filters.extensionRef",
        "filters.cors",
    ),
    "GRPCRoute": ("rules.sessionPersistence", "backendRefs.filters", "filters.extensionRef"),
    "Gateway": ("listeners.tls.options", "listeners.tls.frontendValidation", "infrastructure.parametersRef"),
    "GatewayClass": ("parametersRef",),
}

# (kind, field path as above) → values Istio accepts there that plait does not act on yet.
NOT_SUPPORTED_VALUES: dict[tuple[str, str], frozenset[object]] = {
    ("ServiceEntry", "resolution"): frozenset({"DYNAMIC_DNS"}),
}

# AuthorizationPolicy `when` keys Istio reads that plait's RBAC translation does not yet.
NOT_SUPPORTED_CONDITION_KEYS: tuple[str, ...] = ()  # every key Istio documents is translated today

# Istio kinds without a model in plait, with their API group.
NOT_SUPPORTED_KINDS: dict[str, str] = {
    "WorkloadGroup": "networking.istio.io",
    "WasmPlugin": "extensions.istio.io",
    "TrafficExtension": "extensions.istio.io",
    "IstioOperator": "install.istio.io",
}

# API groups none of whose kinds plait reads yet.
NOT_SUPPORTED_GROUPS = ("gateway.networking.k8s.io",)


def _covers(entry: str, path: str) -> bool:
    return path == entry or path.endswith("." + entry)


def field_not_supported(kind: str, path: str) -> bool:
    """Is `path` (dotted, inside spec, without indices) an Istio field of `kind` that plait lacks?"""
    return any(_covers(entry, path) for entry in NOT_SUPPORTED_FIELDS.get(kind, ()))


def value_not_supported(kind: str, path: str, value: object) -> bool:
    """Is `value` valid Istio at `path` of `kind`, but not acted on by plait yet?"""
    return any(
        _covers(entry, path) and value in values for (k, entry), values in NOT_SUPPORTED_VALUES.items() if k == kind
    )


def kind_not_supported(kind: str, api_version: str) -> str | None:
    """The message for an Istio or Gateway API kind that plait has no model for, or None."""
    group = api_version.rpartition("/")[0]
    if group in NOT_SUPPORTED_GROUPS or NOT_SUPPORTED_KINDS.get(kind) == group:
        return f"kind {kind} ({api_version}) is not supported by plait yet"
    return None
