"""Traces as Istio's MeshConfig asks (``enableTracing``, ``defaultConfig.tracing``) and as the
Telemetry API's ``tracing`` refines it.

In: the snapshot (its MeshConfig and Telemetries), a proxy, the side of its connection managers
(client: outbound and gateways; server: inbound) and the services it may reach. Out: the
``tracing`` block of an HTTP connection manager (Envoy's Zipkin tracer, Zipkin v2 JSON, B3 and W3C
``traceparent`` propagation, Istio's sampling and span tags) or None when tracing is off, and the
collector cluster the tracer posts to.

The collector: when ``defaultConfig.tracing.zipkin.address`` names a service the proxy reaches
(``zipkin.istio-system:9411``: on Kubernetes the Service ``zipkin`` in front of istiod, in the local
mesh the one in front of the control plane), its ``outbound|9411||…`` cluster, as Istio's Telemetry
providers do; otherwise a cluster ``zipkin`` of its own to that address, as Istio's bootstrap has.

Span tags: Envoy's own (``node_id``, ``zone``, ``upstream_cluster``, ``http.url``, ``http.method``,
``http.status_code``, ``response_flags``, ``guid:x-request-id``, …) and Istio's service tags
(``istio.canonical_service``, ``istio.canonical_revision``, ``istio.namespace``, ``istio.cluster_id``
from the proxy's environment, so that alike proxies share one configuration; ``istio.mesh_id``),
then the MeshConfig's and the Telemetry's ``customTags``. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from plait.api.mesh import CustomTag, MeshConfig
from plait.api.telemetry import Tracing
from plait.model.proxy import Proxy
from plait.model.services import Service
from plait.model.snapshot import MeshSnapshot
from plait.telemetry.metrics import ENVIRONMENT, UNKNOWN

Side = Literal["CLIENT", "SERVER"]
TRACER = "envoy.tracers.zipkin"
ZIPKIN_CONFIG = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
ZIPKIN_CLUSTER = "zipkin"  # Istio's bootstrap name for a collector that is not a mesh service
SPANS_PATH = "/api/v2/spans"
MAX_PATH_TAG_LENGTH = 256  # Istio's default for http.url
# Istio's service tags (pilot's buildServiceTags), read from the variables the agent gives Envoy.
SERVICE_TAGS = {
    "istio.canonical_revision": (ENVIRONMENT["canonical_revision"], "latest"),
    "istio.canonical_service": (ENVIRONMENT["canonical_service"], UNKNOWN),
    "istio.namespace": (ENVIRONMENT["workload_namespace"], UNKNOWN),
    "istio.cluster_id": (ENVIRONMENT["cluster"], UNKNOWN),
}


@dataclass(frozen=True)
class TraceSettings:
    """What one side of a proxy does: sample this percentage of new traces, report spans or not, tag them."""

    sampling: float
    report: bool = True
    istio_tags: bool = True
    custom_tags: Mapping[str, CustomTag] = field(default_factory=dict)


def _rules(snapshot: MeshSnapshot, proxy: Proxy) -> list[list[Tracing]]:
    """The tracing rules of the Telemetries that apply to a proxy, lowest precedence first: the root
    namespace's, its namespace's, those selecting it."""
    own = [t for t in snapshot.telemetries if t.namespace == proxy.namespace]
    root = [t for t in snapshot.telemetries if t.namespace == snapshot.root_namespace and not t.spec.selector]
    namespace_wide = [] if proxy.namespace == snapshot.root_namespace else [t for t in own if not t.spec.selector]
    selecting = [
        t
        for t in own
        if t.spec.selector and all(proxy.labels.get(k) == v for k, v in t.spec.selector.match_labels.items())
    ]
    return [[rule for t in level for rule in t.spec.tracing] for level in (root, namespace_wide, selecting)]


def trace_settings(snapshot: MeshSnapshot, proxy: Proxy, side: Side) -> TraceSettings | None:
    """The MeshConfig's tracing (None when ``enableTracing`` is false), refined field by field by the
    Telemetries as Istio does: each more specific level's first rule for the side overrides what it
    sets; custom tags merge name by name."""
    mesh = snapshot.mesh_config
    if not mesh.enable_tracing:
        return None
    tracing = mesh.default_config.tracing
    sampling, report, istio_tags, tags = tracing.sampling, True, True, dict(tracing.custom_tags)
    for level in _rules(snapshot, proxy):
        rule = next((r for r in level if r.applies_to(side)), None)
        if rule is None:
            continue
        if rule.random_sampling_percentage is not None:
            sampling = rule.random_sampling_percentage
        if rule.disable_span_reporting is not None:
            report = not rule.disable_span_reporting
        if rule.enable_istio_tags is not None:
            istio_tags = rule.enable_istio_tags
        tags.update(rule.custom_tags)
    return TraceSettings(sampling=sampling, report=report, istio_tags=istio_tags, custom_tags=tags)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _hostnames(host: str) -> list[str]:
    """The service names an address may mean: itself, ``name.ns`` and ``name.ns.svc`` completed."""
    names = [host]
    if host.count(".") == 1:
        names.append(f"{host}.svc.cluster.local")
    elif host.endswith(".svc"):
        names.append(f"{host}.cluster.local")
    return names


@dataclass(frozen=True)
class Collector:
    """Where a proxy's tracer posts spans: a cluster name, the Host header, and the cluster itself
    when the proxy does not already have it."""

    cluster_name: str
    hostname: str
    cluster: dict | None = None


def collector(mesh: MeshConfig, services: Mapping[str, Service], clusters: Mapping[str, dict]) -> Collector:
    """The collector for ``defaultConfig.tracing.zipkin.address``: a reachable mesh service's outbound
    cluster, else a cluster ``zipkin`` of its own (STATIC for an IP, STRICT_DNS for a name, which does
    not hold the proxy's start while it does not resolve)."""
    host, port = _split(mesh.default_config.tracing.zipkin.address)
    for name in _hostnames(host):
        service = services.get(name)
        cluster_name = f"outbound|{port}||{name}"
        if service is not None and any(p.number == port for p in service.ports) and cluster_name in clusters:
            return Collector(cluster_name, name)
    address = {"socket_address": {"address": host, "port_value": port}}
    cluster = {
        "name": ZIPKIN_CLUSTER,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ZIPKIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
    if not _is_ip(host):
        cluster.update(dns_lookup_family="V4_PREFERRED", wait_for_warm_on_init=False)
    return Collector(ZIPKIN_CLUSTER, host, cluster)


def envoy_tag(name: str, tag: CustomTag) -> dict:
    """An Istio custom tag as Envoy's ``type.tracing.v3.CustomTag``."""
    if tag.literal is not None:
        return {"tag": name, "literal": {"value": tag.literal.value}}
    if tag.environment is not None:
        return {
            "tag": name,
            "environment": {"name": tag.environment.name, "default_value": tag.environment.default_value},
        }
    assert tag.header is not None  # CustomTag holds exactly one
    return {"tag": name, "request_header": {"name": tag.header.name, "default_value": tag.header.default_value}}


def span_tags(mesh: MeshConfig, custom: Mapping[str, CustomTag], istio_tags: bool = True) -> list[dict]:
    """Istio's service tags (unless turned off), then the custom ones (a custom tag of the same name
    wins), by name."""
    tags: dict[str, dict] = {}
    if istio_tags:
        for name, (variable, default) in SERVICE_TAGS.items():
            tags[name] = {"tag": name, "environment": {"name": variable, "default_value": default}}
        tags["istio.mesh_id"] = {"tag": "istio.mesh_id", "literal": {"value": mesh.trust_domain}}
    tags.update({name: envoy_tag(name, tag) for name, tag in custom.items()})
    return [tags[name] for name in sorted(tags)]


def zipkin_provider(target: Collector) -> dict:
    """Envoy's Zipkin tracer posting Zipkin v2 JSON, 128-bit trace ids, a span per hop (no shared span
    context), B3 headers and W3C ``traceparent`` both read and written."""
    return {
        "name": TRACER,
        "typed_config": {
            "@type": ZIPKIN_CONFIG,
            "collector_cluster": target.cluster_name,
            "collector_endpoint": SPANS_PATH,
            "collector_endpoint_version": "HTTP_JSON",
            "collector_hostname": target.hostname,
            "trace_id_128bit": True,
            "shared_span_context": False,
            "trace_context_option": "USE_B3_WITH_W3C_PROPAGATION",
        },
    }


def hcm_tracing(mesh: MeshConfig, settings: TraceSettings, target: Collector) -> dict:
    """The ``tracing`` of an HTTP connection manager: Istio's sampling (``random_sampling`` the
    percentage; a caller's ``x-client-trace-id`` and sampled B3/traceparent always honoured), its
    tags, and the tracer unless span reporting is disabled (then no spans, and no trace headers of
    Envoy's own: those an application forwards pass unchanged)."""
    config = {
        "client_sampling": {"value": 100.0},
        "random_sampling": {"value": settings.sampling},
        "overall_sampling": {"value": 100.0},
        "custom_tags": span_tags(mesh, settings.custom_tags, settings.istio_tags),
        "max_path_tag_length": MAX_PATH_TAG_LENGTH,
    }
    if settings.report:
        config["provider"] = zipkin_provider(target)
    return config
