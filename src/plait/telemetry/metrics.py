"""Istio's standard metrics, made by Envoy's stats access logger: definitions and label values.

In: for the destination side of a sidecar, whether the chain is mutual TLS; for the agent, its
proxy. Out: Envoy access-log entries (dicts) for an HCM or a
tcp_proxy, the header filter that stamps a client's identity on its requests, and the metadata
that EDS endpoints and clusters carry so that the client side can name its destination.

Where each label comes from (nothing is taken from the request's host or path):

* the reporting proxy's own side: its own identity, the same for every request, is not counted by
  Envoy at all: the exposition adds it (`plait.telemetry.prometheus`, from the agent's values);
* the other side, reporter=source: the endpoint's EDS metadata (``istio`` filter metadata, set by
  `endpoint_metadata`), the cluster's metadata (`cluster_metadata`) and the peer certificate's URI
  SAN (``destination_principal``);
* the other side, reporter=destination: on mutual-TLS chains the peer certificate's URI SAN and
  the ``x-plait-peer`` header (every plait client overwrites it, `peer_identity_filter`, so an
  application cannot choose it), which also names the service the client called
  (``destination_service…``); on plaintext chains and for TCP those are ``unknown``. So nothing
  about a proxy's own services is in its configuration, which stays shared by alike proxies.

Envoy formats every label of every metric on every request, so what it counts is kept small
(Istio's 25 labels as 9): the other side's workload and service labels are one label
(`DESTINATION_GROUP` or `SOURCE_GROUP`, the fields joined by ``;``) and the exposition spells them
out, with the reporting proxy's own labels, into Istio's labels (`expand`). A Telemetry override
of a label held in a group is an Envoy label of its own, which wins; a removed one is named in
`REMOVED_LABEL`.

Values Envoy cannot fill come out empty and are shown as ``unknown`` (`plait.telemetry.prometheus`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from plait.model.proxy import Proxy
from plait.model.services import Endpoint, Service
from plait.telemetry.overrides import DEFAULT, MetricConfig

UNKNOWN = "unknown"
CLUSTER_ID = "Kubernetes"  # Istio's default cluster name (values.global.multiCluster.clusterName)
STAT_PREFIX = "istio"  # Envoy names the stats istio.<metric>; Prometheus shows envoy_istio_<metric>
METADATA_KEY = "istio"  # the filter_metadata namespace of endpoints and clusters
STATS_LOGGER = "envoy.access_loggers.stats"
STATS_CONFIG = "type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config"
HEADER_MUTATION = "envoy.filters.http.header_mutation"

# One side of a request (source_… or destination_…), principal apart: it comes from certificates.
WORKLOAD_FIELDS = ("workload", "workload_namespace", "app", "version", "canonical_service", "canonical_revision")
SERVICE_FIELDS = ("service", "service_name", "service_namespace")

CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.istio.io/canonical-revision"
WORKLOAD_NAME_LABEL = "service.istio.io/workload-name"

HTTP_METRICS = ("requests_total", "request_duration_milliseconds", "request_bytes", "response_bytes")
Overrides = Mapping[str, MetricConfig]  # metric name → its Telemetry overrides (`plait.telemetry.overrides`)
TCP_METRICS = (
    "tcp_sent_bytes_total",
    "tcp_received_bytes_total",
    "tcp_connections_opened_total",
    "tcp_connections_closed_total",
)


def _peer_labels(side: str) -> tuple[str, ...]:
    workload = tuple(f"{side}_{f}" for f in WORKLOAD_FIELDS)
    return (*workload[:2], f"{side}_principal", *workload[2:], f"{side}_cluster")


# Istio's label sets, in Istio's order.
HTTP_LABELS = (
    "reporter",
    *_peer_labels("source"),
    *_peer_labels("destination"),
    *(f"destination_{f}" for f in SERVICE_FIELDS),
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
TCP_LABELS = tuple(label for label in HTTP_LABELS if label not in ("response_code", "grpc_response_status"))


def workload_identity(name: str, namespace: str, labels: Mapping[str, str]) -> dict[str, str]:
    """A workload's labels as Istio derives them: canonical service from the canonical-name label,
    else ``app.kubernetes.io/name``, ``app``, the workload name; canonical revision likewise, else
    ``latest``; app and version from the ``app`` and ``version`` labels (``unknown`` without)."""
    return {
        "workload": labels.get(WORKLOAD_NAME_LABEL) or name or UNKNOWN,
        "workload_namespace": namespace or UNKNOWN,
        "app": labels.get("app") or UNKNOWN,
        "version": labels.get("version") or UNKNOWN,
        "canonical_service": labels.get(CANONICAL_NAME_LABEL)
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or name
        or UNKNOWN,
        "canonical_revision": labels.get(CANONICAL_REVISION_LABEL)
        or labels.get("app.kubernetes.io/version")
        or labels.get("version")
        or "latest",
    }


def proxy_identity(proxy: Proxy) -> dict[str, str]:
    return workload_identity(proxy.name, proxy.namespace, proxy.labels)


def endpoint_metadata(endpoint: Endpoint) -> dict[str, str]:
    """What an EDS endpoint carries under ``istio`` for the client side's destination labels."""
    name = endpoint.workload.rpartition("/")[2] if endpoint.workload else ""
    return workload_identity(name, endpoint.namespace if endpoint.workload else "", endpoint.labels)


def service_identity(service: Service | None, name: str = UNKNOWN) -> dict[str, str]:
    """destination_service, _name, _namespace; without a service (`name`: PassthroughCluster …) only a name."""
    if service is None:
        return {"service": UNKNOWN, "service_name": name, "service_namespace": UNKNOWN}
    return {"service": service.hostname, "service_name": service.name, "service_namespace": service.namespace}


def cluster_metadata(service: Service | None, name: str = UNKNOWN) -> dict:
    return {"filter_metadata": {METADATA_KEY: service_identity(service, name)}}


# The proxy's own identity is in Envoy's environment: the agent gives each Envoy its values
# (`proxy_environment`), its client filter stamps them (``%ENVIRONMENT(…)%``, read once when the
# configuration loads, so the configuration stays the same for every proxy of a generation group), and
# the exposition adds them to its series (`own_values`). Istio's variable names where Istio's injector
# sets one (a pod's own values are kept), plait's for app and version.
ENVIRONMENT = {
    "workload": "ISTIO_META_WORKLOAD_NAME",
    "workload_namespace": "POD_NAMESPACE",
    "app": "PLAIT_APP",
    "version": "PLAIT_VERSION",
    "canonical_service": "CANONICAL_SERVICE",
    "canonical_revision": "CANONICAL_REVISION",
    "cluster": "ISTIO_META_CLUSTER_ID",
}


def proxy_environment(proxy: Proxy) -> dict[str, str]:
    """The environment variables an agent gives its Envoy for its own labels."""
    values = {**proxy_identity(proxy), "cluster": CLUSTER_ID}
    return {variable: values[field] for field, variable in ENVIRONMENT.items()}


# What Envoy holds of the other side: one label of ``;``-joined fields, Istio's labels in this order.
GROUP_SEPARATOR = ";"
SOURCE_GROUP = "source_peer"  # reporter=destination: the caller (its peer header) and the service it called
SOURCE_GROUP_LABELS = (*(f"source_{f}" for f in ENVIRONMENT), *(f"destination_{f}" for f in SERVICE_FIELDS))
DESTINATION_GROUP = "destination_peer"  # reporter=source: the endpoint's workload and the service called
DESTINATION_GROUP_LABELS = tuple(f"destination_{f}" for f in (*WORKLOAD_FIELDS, *SERVICE_FIELDS))
GROUPS = {SOURCE_GROUP: SOURCE_GROUP_LABELS, DESTINATION_GROUP: DESTINATION_GROUP_LABELS}
REMOVED_LABEL = "removed_labels"  # the group's or own labels a Telemetry override removed, comma-separated
PEER_HEADER = "x-plait-peer"  # the caller's SOURCE_GROUP fields, stamped by its sidecar
PEER_HEADER_MAX = 1024  # a header value longer than this is cut: bounded cardinality
# Envoy's labels of a series, the group's after reporter.
ENVOY_HTTP_LABELS = (
    "reporter",
    "source_principal",
    "destination_principal",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
ENVOY_TCP_LABELS = tuple(label for label in ENVOY_HTTP_LABELS if label not in ("response_code", "grpc_response_status"))


def own_labels(group: str, own: Mapping[str, str]) -> dict[str, str]:
    """The reporting proxy's own labels in a series holding `group`, from its values (`own`: field of
    `ENVIRONMENT` → value): source_… and destination_cluster for reporter=source (one cluster: plait
    does not span several yet), destination_… for reporter=destination."""
    side = "destination" if group == SOURCE_GROUP else "source"
    labels = {f"{side}_{field}": own.get(field, "") for field in ENVIRONMENT}
    if group == DESTINATION_GROUP:
        labels["destination_cluster"] = own.get("cluster", "")
    return labels


def own_values(environment: Mapping[str, str]) -> dict[str, str]:
    """The proxy's own values (field → value) from the environment its Envoy runs with."""
    return {field: environment.get(variable, "") for field, variable in ENVIRONMENT.items()}


def expand(labels: list[tuple[str, str]], own: Mapping[str, str]) -> list[tuple[str, str]]:
    """Istio's labels of a series from Envoy's, in order: a group label is spelled out in its place
    (the proxy's own labels, then the group's fields; a missing field is empty), labels named in
    `REMOVED_LABEL` are left out, and a label Envoy holds itself (a Telemetry override) wins over a
    spelled-out one. The exposition's rule (`plait.telemetry.prometheus`, in Python and in Lua)."""
    held = {name for name, _ in labels}
    removed = set(dict(labels).get(REMOVED_LABEL, "").split(","))
    out: list[tuple[str, str]] = []
    for name, value in labels:
        if name in GROUPS:
            fields = value.split(GROUP_SEPARATOR)
            spelled = [*own_labels(name, own).items(), *zip(GROUPS[name], [*fields, *[""] * len(GROUPS[name])])]
            out += [(label, v) for label, v in spelled if label not in held and label not in removed]
        elif name != REMOVED_LABEL:
            out.append((name, value))
    return out


def source_tags() -> dict[str, str]:
    """reporter=source (a client sidecar or a gateway): the destination from the endpoint's and
    cluster's metadata and the server certificate; itself added by the exposition."""
    fields = [
        *(f"%UPSTREAM_METADATA({METADATA_KEY}:{f})%" for f in WORKLOAD_FIELDS),
        *(f"%CLUSTER_METADATA({METADATA_KEY}:{f})%" for f in SERVICE_FIELDS),
    ]
    return {
        "reporter": "source",
        DESTINATION_GROUP: GROUP_SEPARATOR.join(fields),
        "source_principal": "%UPSTREAM_LOCAL_URI_SAN%",
        "destination_principal": "%UPSTREAM_PEER_URI_SAN%",
        "connection_security_policy": UNKNOWN,  # as Istio: the client side does not report it
    }


def destination_tags(*, mtls: bool, http: bool = True) -> dict[str, str]:
    """reporter=destination (a server sidecar's inbound chain): the caller from its certificate and,
    on HTTP, from the peer header its sidecar set (who it is, which service it called), only on a
    mutual-TLS chain (``unknown`` on a plaintext one); itself added by the exposition."""
    trusted = mtls and http
    unknown = GROUP_SEPARATOR.join([UNKNOWN] * len(SOURCE_GROUP_LABELS))
    return {
        "reporter": "destination",
        SOURCE_GROUP: f"%REQ({PEER_HEADER}):{PEER_HEADER_MAX}%" if trusted else unknown,
        "source_principal": "%DOWNSTREAM_PEER_URI_SAN%" if mtls else UNKNOWN,
        "destination_principal": "%DOWNSTREAM_LOCAL_URI_SAN%" if mtls else UNKNOWN,
        "connection_security_policy": "mutual_tls" if mtls else "none",
    }


def _tags(tags: Mapping[str, str], labels: tuple[str, ...]) -> list[dict]:
    """Envoy's tags in `labels`' order, the group's after the first (reporter)."""
    [group] = [name for name in tags if name in GROUPS]
    return [{"name": label, "value_format": tags[label]} for label in (labels[0], group, *labels[1:])]


def _stats_logger(config: dict, log_filter: dict | None = None) -> dict:
    logger: dict = {"name": STATS_LOGGER, "typed_config": {"@type": STATS_CONFIG, "stat_prefix": STAT_PREFIX, **config}}
    if log_filter:
        logger["filter"] = log_filter
    return logger


# A request without content-type counts as not gRPC: without treat_missing_header_as_empty, an absent
# header matches neither the matcher nor its inversion.
GRPC_CONTENT_TYPE = {
    "name": "content-type",
    "string_match": {"prefix": "application/grpc"},
    "treat_missing_header_as_empty": True,
}


def _stat(name: str, tags: Mapping[str, str], labels: tuple[str, ...], overrides: Overrides) -> dict:
    """One metric's Envoy tags with its overrides: a removed label Envoy does not hold (one the
    exposition spells out) is named in `REMOVED_LABEL`."""
    config = overrides.get(name, DEFAULT)
    made = config.labels(_tags(tags, labels))
    held = {t["name"] for t in made}
    removed = sorted(label for label, value in config.tags.items() if value is None and label not in held)
    if removed:
        made.append({"name": REMOVED_LABEL, "value_format": ",".join(removed)})
    return {"name": name, "tags": made}


def _enabled(names: tuple[str, ...], overrides: Overrides) -> tuple[str, ...]:
    return tuple(name for name in names if not overrides.get(name, DEFAULT).disabled)


def http_access_logs(tags: Mapping[str, str], overrides: Overrides = MappingProxyType({})) -> list[dict]:
    """The four HTTP metrics (less those `overrides` disable, with its label changes), one logger for
    gRPC requests (content-type application/grpc…) and one for the others: request_protocol is
    ``grpc`` or ``http`` as Istio's. No logger when every HTTP metric is disabled."""
    histograms = {
        "request_duration_milliseconds": ("Milliseconds", "%DURATION%"),
        "request_bytes": ("Bytes", "%BYTES_RECEIVED%"),
        "response_bytes": ("Bytes", "%BYTES_SENT%"),
    }
    enabled = _enabled(HTTP_METRICS, overrides)
    if not enabled:
        return []
    out = []
    for protocol, invert in (("http", True), ("grpc", False)):
        full = {
            **tags,
            "request_protocol": protocol,
            "response_code": "%RESPONSE_CODE%",
            "grpc_response_status": "%GRPC_STATUS_NUMBER%",
            "response_flags": "%RESPONSE_FLAGS%",
        }
        config: dict = {}
        if "requests_total" in enabled:
            config["counters"] = [
                {"stat": _stat("requests_total", full, ENVOY_HTTP_LABELS, overrides), "value_fixed": 1}
            ]
        if measured := [name for name in histograms if name in enabled]:
            config["histograms"] = [
                {
                    "stat": _stat(name, full, ENVOY_HTTP_LABELS, overrides),
                    "unit": histograms[name][0],
                    "value_format": histograms[name][1],
                }
                for name in measured
            ]
        header = {**GRPC_CONTENT_TYPE, "invert_match": True} if invert else GRPC_CONTENT_TYPE
        out.append(_stats_logger(config, {"header_filter": {"header": header}}))
    return out


def tcp_access_logs(tags: Mapping[str, str], overrides: Overrides = MappingProxyType({})) -> list[dict]:
    """The four TCP metrics (less those `overrides` disable, with its label changes): opened when the
    upstream connection is made (tcp_proxy must flush its access log then: `tcp_access_log_options`),
    bytes and closed at the end of the connection. A logger left without a metric is left out."""
    full = {**tags, "request_protocol": "tcp", "response_flags": "%RESPONSE_FLAGS%"}
    enabled = _enabled(TCP_METRICS, overrides)

    def counters(*named: tuple[str, dict]) -> list[dict]:
        return [
            {"stat": _stat(name, full, ENVOY_TCP_LABELS, overrides), **value}
            for name, value in named
            if name in enabled
        ]

    opened = counters(("tcp_connections_opened_total", {"value_fixed": 1}))
    closed = counters(
        ("tcp_sent_bytes_total", {"value_format": "%BYTES_SENT%"}),
        ("tcp_received_bytes_total", {"value_format": "%BYTES_RECEIVED%"}),
        ("tcp_connections_closed_total", {"value_fixed": 1}),
    )
    loggers = ((opened, "TcpUpstreamConnected"), (closed, "TcpConnectionEnd"))
    return [
        _stats_logger({"counters": made}, {"log_type_filter": {"types": [log_type]}})
        for made, log_type in loggers
        if made
    ]


def tcp_access_log_options() -> dict:
    return {"flush_access_log_on_connected": True}


def peer_value() -> str:
    """What a client stamps in `PEER_HEADER`, `SOURCE_GROUP`'s fields: who it is (its environment)
    and which service it called (the cluster's metadata; the route is chosen before this filter runs)."""
    own = [f"%ENVIRONMENT({variable})%" for variable in ENVIRONMENT.values()]
    called = [f"%CLUSTER_METADATA({METADATA_KEY}:{f})%" for f in SERVICE_FIELDS]
    return GROUP_SEPARATOR.join([*own, *called])


def peer_identity_filter() -> dict:
    """An HTTP filter for a client's HCM: sets the ``x-plait-peer`` header on every request,
    replacing whatever the application sent."""
    mutation = {
        "append": {
            "header": {"key": PEER_HEADER, "value": peer_value()},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            "keep_empty_value": True,
        }
    }
    return {
        "name": HEADER_MUTATION,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [mutation]},
        },
    }


def is_peer_identity_filter(http_filter: dict) -> bool:
    """Is this HTTP filter `peer_identity_filter`'s (it only sets the ``x-plait-peer`` header)?"""
    mutations = http_filter.get("typed_config", {}).get("mutations", {})
    request = mutations.get("request_mutations", [])
    return (
        http_filter.get("name") == HEADER_MUTATION
        and set(mutations) == {"request_mutations"}
        and bool(request)
        and all(m.get("append", {}).get("header", {}).get("key", "") == PEER_HEADER for m in request)
    )
