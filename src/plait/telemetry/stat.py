"""`plait stat` and `plait edges`: linkerd viz's golden-metrics tables from Istio's standard metrics.

In: what to show (`StatQuery`, `EdgesQuery`), then the numbers, either Prometheus' answers to the PromQL
built here (`promql`, `vector`) or two reads of the proxies' own ``/stats/prometheus`` a few seconds apart
(`parse_exposition`, `rates`, `evaluate`: the same sums and rates computed here), and the inventory of
workloads/pods/services (`Inventory`). Out: rows (`StatRow`, `Edge`) and their rendering as linkerd
prints them (`stat_table`, `edges_table`) or as JSON-ready dicts. Pure: no I/O; the CLI does the reads.

The metrics: HTTP/gRPC requests and their latency from ``istio_requests_total`` and
``istio_request_duration_milliseconds``, reported by the server's sidecar (``reporter="destination"``)
for deployments and pods, by the client's (``reporter="source"``) for services and for ``--from``;
success is the share of responses that are not 5xx; latency percentiles interpolate the histogram as
PromQL's ``histogram_quantile``; TCP_CONN is connections opened minus closed.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

KINDS = {
    "deploy": "deploy",
    "deployment": "deploy",
    "deployments": "deploy",
    "svc": "svc",
    "service": "svc",
    "services": "svc",
    "po": "po",
    "pod": "po",
    "pods": "po",
}
STAT_COLUMNS = ("NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN")
WIDE_COLUMNS = ("READ_BYTES/SEC", "WRITE_BYTES/SEC")
EDGE_COLUMNS = ("SRC", "DST", "SRC_NS", "DST_NS", "SECURED")
QUANTILES = (0.5, 0.95, 0.99)
Key = tuple[str, ...]


class QueryError(ValueError):
    """A stat/edges request that cannot be answered (unknown kind, a flag that does not apply)."""


def resource_kind(text: str) -> str:
    """``deploy``, ``svc`` or ``po`` from any of kubectl's spellings of them."""
    kind = KINDS.get(text.lower())
    if kind is None:
        raise QueryError(f"unknown resource type {text!r}: expected deploy, svc or po")
    return kind


@dataclass(frozen=True)
class Series:
    """One sum a table needs: `metric`'s rate over the window (or its current value), by the row's labels
    and `extra` ones."""

    key: str
    metric: str
    rate: bool = True
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatQuery:
    kind: str  # deploy | svc | po
    namespace: str = "default"
    name: str | None = None
    from_workload: str | None = None  # --from deploy/NAME: what that workload's sidecar saw as a client
    window: str = "1m"

    def __post_init__(self):
        if self.kind == "po" and self.from_workload:
            raise QueryError("--from works with deploy and svc (pods are named by the server's metrics only)")

    @property
    def reporter(self) -> str:
        return "source" if self.kind == "svc" or self.from_workload else "destination"

    @property
    def row_labels(self) -> tuple[str, str]:
        """The labels naming a row: its namespace and its name."""
        if self.kind == "svc":
            return ("destination_service_namespace", "destination_service_name")
        if self.kind == "po":  # the scrape target's labels: the pod whose sidecar reported as the server
            return ("namespace", "pod")
        return ("destination_workload_namespace", "destination_workload")

    def matchers(self) -> dict[str, str]:
        namespace_label, name_label = self.row_labels
        out = {"reporter": self.reporter, namespace_label: self.namespace}
        if self.name:
            out[name_label] = self.name
        if self.from_workload:
            out |= {"source_workload": self.from_workload, "source_workload_namespace": self.namespace}
        return out

    def plan(self, wide: bool = False) -> list[Ask]:
        return [Ask(series, self.matchers(), self.row_labels) for series in self.series(wide)]

    def series(self, wide: bool = False) -> list[Series]:
        out = [
            Series("requests", "istio_requests_total", extra=("response_code",)),
            Series("latency", "istio_request_duration_milliseconds_bucket", extra=("le",)),
            Series("tcp_opened", "istio_tcp_connections_opened_total", rate=False),
            Series("tcp_closed", "istio_tcp_connections_closed_total", rate=False),
        ]
        if wide:
            out += [
                Series("read_bytes", "istio_tcp_received_bytes_total"),
                Series("write_bytes", "istio_tcp_sent_bytes_total"),
            ]
        return out


@dataclass(frozen=True)
class EdgesQuery:
    """linkerd viz edges: who called whom (HTTP or TCP) into `namespace`, secured as the servers' sidecars
    saw it. Pods: Istio's metrics name workloads, not pods, so a client pod's edge to a server pod is
    where the client pod's sidecar reported calls to the server's workload and the server pod's sidecar
    reported calls from the client's workload."""

    kind: str = "deploy"
    namespace: str = "default"

    def __post_init__(self):
        if self.kind not in ("deploy", "po"):
            raise QueryError("plait edges lists deploy or po edges")

    def plan(self) -> list[Ask]:
        server = {"reporter": "destination", "destination_workload_namespace": self.namespace}
        requests = Series("requests", "istio_requests_total", rate=False)
        tcp = Series("tcp", "istio_tcp_connections_opened_total", rate=False)
        if self.kind == "deploy":
            by = (*WORKLOAD_EDGE, "destination_workload_namespace", "connection_security_policy")
            return [Ask(requests, server, by), Ask(tcp, server, by)]
        by = (*WORKLOAD_EDGE, "namespace", "pod", "connection_security_policy")
        client = {"reporter": "source", "destination_workload_namespace": self.namespace}
        client_by = (*WORKLOAD_EDGE, "namespace", "pod")
        return [
            Ask(requests, server, by),
            Ask(tcp, server, by),
            Ask(Series("client_requests", requests.metric, rate=False), client, client_by),
            Ask(Series("client_tcp", tcp.metric, rate=False), client, client_by),
        ]


WORKLOAD_EDGE = ("source_workload", "source_workload_namespace", "destination_workload")


class Ask(NamedTuple):
    """One sum to ask for: a series, its label matchers, the labels it is summed by."""

    series: Series
    matchers: Mapping[str, str]
    by: tuple[str, ...]


# ------------------------------------------------------------------ PromQL


def selector(matchers: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in matchers.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def promql(series: Series, matchers: Mapping[str, str], by: Iterable[str], window: str = "1m") -> str:
    """``sum(rate(METRIC{…}[WINDOW])) by (…)``, or ``sum(METRIC{…}) by (…)`` for a current value."""
    inner = f"{series.metric}{{{selector(matchers)}}}"
    if series.rate:
        inner = f"rate({inner}[{window}])"
    return f"sum({inner}) by ({','.join([*by, *series.extra])})"


def vector(answer: Mapping, by: Iterable[str]) -> dict[Key, float]:
    """Prometheus' ``/api/v1/query`` answer (a vector) as {label values in `by`'s order: value}."""
    if answer.get("status") != "success":
        raise QueryError(f"Prometheus answered {answer.get('errorType', '')}: {answer.get('error', answer)}")
    labels = list(by)
    return {
        tuple(r["metric"].get(label, "") for label in labels): float(r["value"][1]) for r in answer["data"]["result"]
    }


# ------------------------------------------------------------------ the proxies' own exposition

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float

    @property
    def identity(self) -> tuple:
        return (self.name, tuple(sorted(self.labels.items())))


def parse_exposition(text: str, target: Mapping[str, str] = {}) -> list[Sample]:  # noqa: B006 (never mutated)
    """Prometheus text format → samples, each with `target`'s labels added (as a scrape adds ``namespace``,
    ``pod``); comments and malformed lines are skipped, as Prometheus would not store them either."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(match.group(2) or "")}
        out.append(Sample(match.group(1), {**labels, **target}, value))
    return out


def rates(before: list[Sample], after: list[Sample], seconds: float) -> list[Sample]:
    """Per-second increase of each series between two reads (a reset counts from zero, as PromQL's rate)."""
    old = {s.identity: s.value for s in before}
    out = []
    for sample in after:
        previous = old.get(sample.identity, 0.0)
        increase = sample.value - previous if sample.value >= previous else sample.value
        out.append(Sample(sample.name, sample.labels, increase / seconds))
    return out


def evaluate(samples: list[Sample], series: Series, matchers: Mapping[str, str], by: Iterable[str]) -> dict[Key, float]:
    """What `promql` asks Prometheus, computed over samples (already rates when `series.rate`)."""
    labels = [*by, *series.extra]
    out: dict[Key, float] = defaultdict(float)
    for sample in samples:
        if sample.name == series.metric and all(sample.labels.get(k) == v for k, v in matchers.items()):
            out[tuple(sample.labels.get(label, "") for label in labels)] += sample.value
    return dict(out)


# ------------------------------------------------------------------ rows


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """PromQL's ``histogram_quantile``: the bucket holding rank q·count, linearly interpolated within it;
    the highest finite bound when the rank falls in ``+Inf``; None without observations."""
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        return None
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = max(buckets[bound], previous_count)  # cumulative counts never decrease
        if count >= rank:
            if bound == math.inf:
                return previous_bound if len(bounds) > 1 else None
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return previous_bound


@dataclass(frozen=True)
class Inventory:
    """What exists, traffic or not: rows for each (namespace, name) and how many of its pods are meshed."""

    rows: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # → (meshed, total); (0, 0): n/a


@dataclass(frozen=True)
class StatRow:
    namespace: str
    name: str
    meshed: str
    success: float | None
    rps: float | None
    latency: tuple[float | None, ...]
    tcp_conn: int | None
    read_bytes: float | None = None
    write_bytes: float | None = None


def stat_rows(query: StatQuery, results: Mapping[str, Mapping[Key, float]], inventory: Inventory) -> list[StatRow]:
    """One row per resource of the inventory (and per one seen only in the metrics), sorted by name."""
    requests: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for (namespace, name, code), value in results.get("requests", {}).items():
        requests[(namespace, name)][code] = requests[(namespace, name)].get(code, 0.0) + value
    buckets: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    for (namespace, name, le), value in results.get("latency", {}).items():
        buckets[(namespace, name)][float(le)] = value
    opened, closed = results.get("tcp_opened", {}), results.get("tcp_closed", {})
    keys = set(inventory.rows) | set(requests) | {k[:2] for k in opened}
    keys = {k for k in keys if k[0] == query.namespace and (not query.name or k[1] == query.name)}
    rows = []
    for key in sorted(keys, key=lambda k: k[1]):
        meshed, total = inventory.rows.get(key, (0, 0))
        codes = requests.get(key, {})
        count = sum(codes.values())
        errors = sum(v for code, v in codes.items() if code.startswith("5"))
        tcp = opened.get(key) if key in opened else None
        rows.append(
            StatRow(
                namespace=key[0],
                name=key[1],
                meshed=f"{meshed}/{total}" if total else "-",
                success=(count - errors) / count if count > 0 else None,
                rps=count if codes else None,
                latency=tuple(histogram_quantile(q, buckets.get(key, {})) for q in QUANTILES),
                tcp_conn=None if tcp is None else max(0, round(tcp - closed.get(key, 0.0))),
                read_bytes=results["read_bytes"].get(key, 0.0) if "read_bytes" in results else None,
                write_bytes=results["write_bytes"].get(key, 0.0) if "write_bytes" in results else None,
            )
        )
    return rows


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    src_ns: str
    dst_ns: str
    secured: bool


def edges(query: EdgesQuery, results: Mapping[str, Mapping[Key, float]]) -> list[Edge]:
    """Each (source, destination) pair with requests or connections; secured when every one was mTLS."""
    seen: dict[tuple[str, str, str, str], bool] = {}

    def add(pair: tuple[str, str, str, str], policy: str) -> None:
        seen[pair] = seen.get(pair, True) and policy == "mutual_tls"

    clients: dict[tuple[str, str, str], set[tuple[str, str]]] = defaultdict(set)
    for key in ("client_requests", "client_tcp"):
        for (src, src_ns, dst, pod_ns, pod), value in results.get(key, {}).items():
            if value > 0:
                clients[(src, src_ns, dst)].add((pod, pod_ns))
    for key in ("requests", "tcp"):
        for (src, src_ns, dst, dst_ns, *pod, policy), value in results.get(key, {}).items():
            if value <= 0:
                continue
            if query.kind == "deploy":
                add((src, dst, src_ns, dst_ns), policy)
                continue
            for client, client_ns in clients.get((src, src_ns, dst), ()):
                add((client, pod[0], client_ns, dst_ns), policy)
    return [Edge(*pair, secured) for pair, secured in sorted(seen.items())]


# ------------------------------------------------------------------ rendering


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}rps"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def _bytes(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}B/s"


def stat_table(rows: list[StatRow], wide: bool = False) -> list[tuple[str, ...]]:
    """linkerd viz stat's table (header first): SUCCESS as a percentage, RPS and latencies rounded as linkerd."""
    header = STAT_COLUMNS + (WIDE_COLUMNS if wide else ())
    out = [header]
    for row in rows:
        cells = (
            row.name,
            row.meshed,
            _percent(row.success),
            _rps(row.rps),
            *(_ms(v) for v in row.latency),
            "-" if row.tcp_conn is None else str(row.tcp_conn),
        )
        out.append(cells + ((_bytes(row.read_bytes), _bytes(row.write_bytes)) if wide else ()))
    return out


def stat_json(rows: list[StatRow]) -> list[dict]:
    """The rows as linkerd's ``-o json`` names its fields."""
    return [
        {
            "name": row.name,
            "namespace": row.namespace,
            "meshed": row.meshed,
            "success": row.success,
            "rps": row.rps,
            "latency_ms_p50": row.latency[0],
            "latency_ms_p95": row.latency[1],
            "latency_ms_p99": row.latency[2],
            "tcp_open_connections": row.tcp_conn,
            **({"tcp_read_bytes_rate": row.read_bytes} if row.read_bytes is not None else {}),
            **({"tcp_write_bytes_rate": row.write_bytes} if row.write_bytes is not None else {}),
        }
        for row in rows
    ]


def edges_table(rows: list[Edge]) -> list[tuple[str, ...]]:
    """linkerd viz edges' table (header first): SECURED √ for mutual TLS, × otherwise."""
    return [EDGE_COLUMNS] + [(e.src, e.dst, e.src_ns, e.dst_ns, "√" if e.secured else "×") for e in rows]


def edges_json(rows: list[Edge]) -> list[dict]:
    return [
        {"src": e.src, "dst": e.dst, "src_namespace": e.src_ns, "dst_namespace": e.dst_ns, "secured": e.secured}
        for e in rows
    ]
