"""The dashboard's service graph (Kiali's graph) from Istio's standard metrics.

In: a `GraphQuery` (namespace, window, graph type), the answers to the sums it needs (`asks`): Prometheus'
answers to their PromQL (`queries`, `series`), or the same sums computed over rates of the proxies' own
series (`evaluate`), as label sets with values (`Series`); and the gateway workloads. Out: the graph as the
dashboard's JSON (`build`): nodes (app, versioned app, workload or service nodes, as Kiali's graph types;
gateways, unknown callers and hosts outside the mesh, e.g. PassthroughCluster, marked as such; a mesh
service whose workload is not known, e.g. for a fault the client injected, as a service node) and edges with
requests/s, error % (5xx), p95 latency, the share of mTLS traffic and TCP bytes/s (a node: requests/s in
and out, error % and p95 of what it received), each with Kiali's default health (5xx ≥ 0.1 %: degraded,
> 10 %: failing). Pure: no I/O, no clock.

Which side reports what, as Kiali: requests, latency and TCP bytes are read from the client's reports
(``reporter="source"``: sidecars and gateways; this also counts what the client's sidecar did itself, e.g. a
fault injected there, and calls to hosts without a sidecar: ServiceEntry hosts, PassthroughCluster), and from
the server's (``reporter="destination"``) only for callers without a sidecar, which it names ``unknown``.
Whether an edge was mutual TLS only the server's side knows: its ``connection_security_policy``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from plait.telemetry import stat
from plait.telemetry.stat import Sample, histogram_quantile, selector

GRAPH_TYPES = ("app", "versionedApp", "workload", "service")
WINDOWS = ("1m", "5m", "1h")
DEGRADED, FAILING = 0.1, 10.0  # Kiali's default thresholds, in % of requests answered 5xx
UNKNOWN = "unknown"
EDGE_LABELS = (
    "source_workload_namespace",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_service_namespace",
    "destination_service_name",
    "destination_service",
    "destination_workload_namespace",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
)
# one answer row: the labels Prometheus returned and the value
Series = list[tuple[Mapping[str, str], float]]


class GraphError(ValueError):
    """A graph request that cannot be answered (an unknown type or window)."""


@dataclass(frozen=True)
class GraphQuery:
    namespace: str = "default"
    window: str = "1m"
    type: str = "versionedApp"

    def __post_init__(self):
        if self.type not in GRAPH_TYPES:
            raise GraphError(f"type={self.type!r}: expected one of {', '.join(GRAPH_TYPES)}")
        if self.window not in WINDOWS:
            raise GraphError(f"window={self.window!r}: expected one of {', '.join(WINDOWS)}")


class Ask(NamedTuple):
    """One sum the dashboard needs: the rate of `metric`'s series matching `matchers`, summed by `by`."""

    metric: str
    matchers: Mapping[str, str]
    by: tuple[str, ...]

    def promql(self, window: str) -> str:
        return f"sum(rate({self.metric}{{{selector(self.matchers)}}}[{window}])) by ({','.join(self.by)})"


def asks(query: GraphQuery) -> dict[str, Ask]:
    """What the graph needs, by name: request rates by response code (both reporters), the duration
    histogram's bucket rates, TCP byte rates, and the servers' view of mTLS."""
    client = {"reporter": "source"}
    unknown = {"reporter": "destination", "source_workload": UNKNOWN}
    server = {"reporter": "destination"}

    def ask(metric: str, matchers: Mapping[str, str], *extra: str) -> Ask:
        return Ask(metric, matchers, (*EDGE_LABELS, *extra))

    return {
        "requests": ask("istio_requests_total", client, "request_protocol", "response_code"),
        "unknown_requests": ask("istio_requests_total", unknown, "request_protocol", "response_code"),
        "latency": ask("istio_request_duration_milliseconds_bucket", client, "le"),
        "unknown_latency": ask("istio_request_duration_milliseconds_bucket", unknown, "le"),
        "tcp_sent": ask("istio_tcp_sent_bytes_total", client, "request_protocol"),
        "tcp_received": ask("istio_tcp_received_bytes_total", client, "request_protocol"),
        "unknown_tcp_sent": ask("istio_tcp_sent_bytes_total", unknown, "request_protocol"),
        "unknown_tcp_received": ask("istio_tcp_received_bytes_total", unknown, "request_protocol"),
        "security": ask("istio_requests_total", server, "connection_security_policy"),
        "tcp_security": ask("istio_tcp_sent_bytes_total", server, "connection_security_policy"),
    }


def queries(query: GraphQuery) -> dict[str, str]:
    """The PromQL of `asks`, over the query's window."""
    return {name: ask.promql(query.window) for name, ask in asks(query).items()}


def evaluate(rates: Iterable[Sample], wanted: Mapping[str, Ask]) -> dict[str, Series]:
    """What Prometheus would answer to each ask, computed over per-second rates of the proxies' own series
    (`plait.telemetry.stat.rates` of two reads): the same sums, as (labels, value) rows."""
    rates = list(rates)
    out = {}
    for name, ask in wanted.items():
        sums = stat.evaluate(rates, stat.Series(name, ask.metric), ask.matchers, ask.by)
        out[name] = [(dict(zip(ask.by, key)), value) for key, value in sums.items()]
    return out


def series(answer: Mapping) -> Series:
    """Prometheus' ``/api/v1/query`` answer (a vector) as (labels, value) rows."""
    if answer.get("status") != "success":
        raise GraphError(f"Prometheus answered {answer.get('errorType', '')}: {answer.get('error', answer)}")
    return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]


def health(error_percent: float | None) -> str:
    """Kiali's default request health: failing above 10 % of 5xx, degraded from 0.1 %, else healthy. Judged
    on the percentage as shown (3 decimals), so rates' float noise (1/10 of a rate = 10.000000000000002 %)
    does not tip an edge over a threshold it shows it is on."""
    if error_percent is None:
        return "na"
    error_percent = round(error_percent, 3)
    if error_percent > FAILING:
        return "failing"
    if error_percent >= DEGRADED:
        return "degraded"
    return "healthy"


# ------------------------------------------------------------------ nodes


def _known(value: str | None) -> bool:
    return bool(value) and value != UNKNOWN


def source_node(labels: Mapping[str, str], query: GraphQuery, gateways: set[tuple[str, str]]) -> dict:
    namespace, workload = labels.get("source_workload_namespace", ""), labels.get("source_workload", "")
    if not _known(workload):
        return {"id": UNKNOWN, "nodeType": UNKNOWN, "namespace": UNKNOWN, "name": UNKNOWN}
    app = labels.get("source_canonical_service") or workload
    version = labels.get("source_canonical_revision") or ""
    node = _node(query.type, namespace, workload, app, version, service=app)
    if (namespace, workload) in gateways:
        node["isGateway"] = True
    return node


def destination_node(labels: Mapping[str, str], query: GraphQuery, gateways: set[tuple[str, str]]) -> dict:
    workload = labels.get("destination_workload", "")
    service_namespace = labels.get("destination_service_namespace", "")
    if not _known(workload):  # no sidecar answered: a fault the client injected, a host outside the mesh
        name = labels.get("destination_service_name", "")
        host = labels.get("destination_service") or name or UNKNOWN
        if _known(service_namespace) and _known(name) and ".svc." in host:  # a mesh service: its service node
            return {
                "id": f"service:{service_namespace}:{name}",
                "nodeType": "service",
                "namespace": service_namespace,
                "name": name,
                "service": name,
            }
        namespace = service_namespace if _known(service_namespace) else labels.get("source_workload_namespace", "")
        return {
            "id": f"service:{namespace}:{host}",
            "nodeType": "service",
            "namespace": namespace,
            "name": host,
            "service": host,
            "isExternal": True,
        }
    namespace = labels.get("destination_workload_namespace", "")
    app = labels.get("destination_canonical_service") or workload
    version = labels.get("destination_canonical_revision") or ""
    service = labels.get("destination_service_name") if _known(labels.get("destination_service_name")) else app
    if query.type == "service" and _known(service_namespace):
        namespace = service_namespace
    node = _node(query.type, namespace, workload, app, version, service=service)
    if (labels.get("destination_workload_namespace", ""), workload) in gateways:
        node["isGateway"] = True
    return node


def _node(graph_type: str, namespace: str, workload: str, app: str, version: str, service: str) -> dict:
    """The node a workload stands for in a graph of `graph_type` (Kiali's node types)."""
    if graph_type == "workload":
        node = {"id": f"workload:{namespace}:{workload}", "nodeType": "workload", "name": workload}
        node |= {"workload": workload, "app": app, "version": version}
    elif graph_type == "versionedApp":
        node = {"id": f"app:{namespace}:{app}:{version}", "nodeType": "app", "name": app, "app": app}
        node |= {"version": version, "workload": workload}
        if version and version != "latest":
            node["name"] = f"{app} {version}"
    elif graph_type == "app":
        node = {"id": f"app:{namespace}:{app}", "nodeType": "app", "name": app, "app": app}
    else:
        node = {"id": f"service:{namespace}:{service}", "nodeType": "service", "name": service, "service": service}
    return {**node, "namespace": namespace}


# ------------------------------------------------------------------ edges


@dataclass
class _Edge:
    source: str
    target: str
    protocol: str = ""
    requests: float = 0.0
    errors: float = 0.0
    mtls: float = 0.0  # requests (or bytes) over mutual TLS
    counted: float = 0.0  # requests (or bytes) whose security policy is known
    tcp_bytes: float = 0.0
    buckets: dict[float, float] | None = None

    def add_buckets(self, le: str, value: float) -> None:
        self.buckets = self.buckets or defaultdict(float)
        self.buckets[math.inf if le == "+Inf" else float(le)] += value

    def to_dict(self) -> dict:
        error_percent = 100.0 * self.errors / self.requests if self.requests > 0 else None
        p95 = histogram_quantile(0.95, self.buckets) if self.buckets else None
        tcp = self.protocol == "tcp"
        return {
            "id": f"{self.source}->{self.target}",
            "source": self.source,
            "target": self.target,
            "protocol": self.protocol or "http",
            "rps": None if tcp else round(self.requests, 4),
            "errorRate": None if tcp or error_percent is None else round(error_percent, 3),
            "p95": None if p95 is None else round(p95, 2),
            "mtls": self.counted > 0 and self.mtls >= self.counted,
            "mtlsPercent": round(100.0 * self.mtls / self.counted, 1) if self.counted > 0 else None,
            "tcpBytes": round(self.tcp_bytes, 2) if tcp else None,
            "health": "na" if tcp else health(error_percent),
        }


def build(
    query: GraphQuery, answers: Mapping[str, Series], gateways: Iterable[tuple[str, str]] = (), source: str = ""
) -> dict:
    """The graph's JSON from the answers to `queries(query)` (an absent answer counts as no traffic).

    Only edges that carried traffic in the window and touch `query.namespace` (at either end) are kept,
    with their nodes; a node's health is that of the requests it received."""
    gateways = set(gateways)
    nodes: dict[str, dict] = {}
    edges: dict[tuple[str, str], _Edge] = {}

    def edge(labels: Mapping[str, str]) -> _Edge | None:
        src, dst = source_node(labels, query, gateways), destination_node(labels, query, gateways)
        if query.namespace not in (src["namespace"], dst["namespace"]):
            return None
        if src["id"] == dst["id"] and query.type in ("app", "service"):
            return None  # calls within one app or service are not drawn, as Kiali without its self-loops
        nodes.setdefault(src["id"], src)
        nodes.setdefault(dst["id"], dst)
        return edges.setdefault((src["id"], dst["id"]), _Edge(src["id"], dst["id"]))

    for key in ("requests", "unknown_requests"):
        for labels, value in answers.get(key, []):
            if value <= 0 or (e := edge(labels)) is None:
                continue
            e.protocol = labels.get("request_protocol") or e.protocol or "http"
            e.requests += value
            if labels.get("response_code", "").startswith("5"):
                e.errors += value
    for key in ("latency", "unknown_latency"):
        for labels, value in answers.get(key, []):
            e = edges.get(_pair(labels, query, gateways))
            if e is not None:
                e.add_buckets(labels.get("le", "+Inf"), value)
    for key in ("tcp_sent", "tcp_received", "unknown_tcp_sent", "unknown_tcp_received"):
        for labels, value in answers.get(key, []):
            if value <= 0 or (e := edge(labels)) is None:
                continue
            if not e.protocol:
                e.protocol = "tcp"
            if e.protocol == "tcp":
                e.tcp_bytes += value
    for key, protocol in (("security", None), ("tcp_security", "tcp")):
        for labels, value in answers.get(key, []):
            e = edges.get(_pair(labels, query, gateways))
            if e is not None and value > 0 and (protocol is None) == (e.protocol != "tcp"):
                _security(e, labels, value)
    edge_list = [e.to_dict() for _, e in sorted(edges.items())]
    received: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    sent: dict[str, float] = defaultdict(float)
    durations: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))  # inbound buckets
    for e in edges.values():
        received[e.target][0] += e.requests
        received[e.target][1] += e.errors
        sent[e.source] += e.requests
        for le, count in (e.buckets or {}).items():
            durations[e.target][le] += count
    for node_id, node in nodes.items():
        total, errors = received.get(node_id, (0.0, 0.0))
        error_percent = 100.0 * errors / total if total > 0 else None
        p95 = histogram_quantile(0.95, durations[node_id]) if node_id in durations else None
        node["rpsIn"], node["rpsOut"] = round(total, 4), round(sent.get(node_id, 0.0), 4)
        node["errorRate"] = None if error_percent is None else round(error_percent, 3)
        node["p95"] = None if p95 is None else round(p95, 2)  # of the requests it received, as Kiali's
        node["health"] = health(error_percent)
        node.setdefault("isGateway", False)
        node.setdefault("isExternal", False)
    return {
        "namespace": query.namespace,
        "window": query.window,
        "type": query.type,
        "source": source,
        "nodes": [nodes[k] for k in sorted(nodes)],
        "edges": edge_list,
    }


def _pair(labels: Mapping[str, str], query: GraphQuery, gateways: set[tuple[str, str]]) -> tuple[str, str]:
    return source_node(labels, query, gateways)["id"], destination_node(labels, query, gateways)["id"]


def _security(e: _Edge, labels: Mapping[str, str], value: float) -> None:
    policy = labels.get("connection_security_policy", UNKNOWN)
    if policy in ("mutual_tls", "none"):
        e.counted += value
        if policy == "mutual_tls":
            e.mtls += value
