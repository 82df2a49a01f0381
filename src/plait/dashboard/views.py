"""The dashboard's lists (Workloads, Services, Istio config, Traces) from the control plane and Prometheus.

In: the control plane's answers (``/api/v1/workloads``, ``/debug/syncz``, ``/api/v1/config``), rates from
Prometheus or the proxies (`health_asks`, answered as `graph.Series`), analysis messages, and Zipkin v2 spans from the
trace collector. Out: JSON-ready lists, each row with its health (Kiali's thresholds, `graph.health`),
sidecar presence and proxy sync state; traces summarised and as a waterfall. Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from plait.dashboard.graph import Ask, Series, health
from plait.telemetry.metrics import WORKLOAD_NAME_LABEL

GATEWAY_LABELS = {"istio": ("ingressgateway", "egressgateway")}


def health_asks() -> dict[str, Ask]:
    """Requests received per workload (the server's reports) and per service (the clients'), by code."""
    return {
        "workloads": Ask(
            "istio_requests_total",
            {"reporter": "destination"},
            ("destination_workload_namespace", "destination_workload", "response_code"),
        ),
        "services": Ask(
            "istio_requests_total",
            {"reporter": "source"},
            ("destination_service_namespace", "destination_service_name", "response_code"),
        ),
    }


def _rates(rows: Series, namespace_label: str, name_label: str) -> dict[tuple[str, str], dict]:
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for labels, value in rows:
        key = (labels.get(namespace_label, ""), labels.get(name_label, ""))
        totals[key][0] += value
        if labels.get("response_code", "").startswith("5"):
            totals[key][1] += value
    out = {}
    for key, (total, errors) in totals.items():
        error_percent = 100.0 * errors / total if total > 0 else None
        out[key] = {
            "rps": round(total, 4),
            "errorRate": None if error_percent is None else round(error_percent, 3),
            "health": health(error_percent),
        }
    return out


def _quiet() -> dict:
    return {"rps": 0.0, "errorRate": None, "health": "na"}


def sync_state(status: Mapping) -> str:
    """A proxy's sync state as ``plait proxy-status`` reads it: SYNCED when every type sent was acknowledged."""
    states = [t.get("state", "NOT SENT") for t in status.get("types", {}).values()]
    if status.get("errors") or status.get("refused"):
        return "ERROR"
    if states and all(s in ("SYNCED", "NOT SENT") for s in states) and "SYNCED" in states:
        return "SYNCED"
    return "STALE" if states else "NOT SENT"


def workload_name(name: str, labels: Mapping[str, str]) -> str:
    return labels.get(WORKLOAD_NAME_LABEL) or name


def is_gateway(labels: Mapping[str, str]) -> bool:
    return any(labels.get(k) in values for k, values in GATEWAY_LABELS.items())


def gateways(registry: Iterable[Mapping], syncz: Iterable[Mapping]) -> set[tuple[str, str]]:
    """The (namespace, workload) of every gateway the control plane knows of (registered or connected)."""
    out = set()
    for w in registry:
        if is_gateway(w.get("labels", {})):
            out.add((w["namespace"], workload_name(w["name"], w.get("labels", {}))))
    for status in syncz:
        proxy = status.get("proxy", {})
        if proxy.get("kind") == "router" or is_gateway(proxy.get("labels", {})):
            out.add((proxy.get("namespace", ""), workload_name(proxy.get("name", ""), proxy.get("labels", {}))))
    return out


def workloads(registry: list[Mapping], syncz: list[Mapping], rates: Series, namespace: str | None) -> list[dict]:
    """One row per pod the control plane knows (registered, or with a connected proxy), with its workload's
    health, its sidecar and that proxy's sync state; sorted by namespace and name."""
    health_by = _rates(rates, "destination_workload_namespace", "destination_workload")
    proxies = {}
    for status in syncz:
        proxy = status.get("proxy", {})
        proxies[(proxy.get("namespace", ""), proxy.get("name", ""))] = status
        proxies.setdefault((proxy.get("namespace", ""), proxy.get("ip", "")), status)
    rows = {}
    for w in registry:
        status = proxies.get((w["namespace"], w["name"])) or proxies.get((w["namespace"], w.get("address", "")))
        rows[(w["namespace"], w["name"])] = (w.get("labels", {}), w.get("address", ""), w.get("ready"), status)
    for status in syncz:
        proxy = status.get("proxy", {})
        key = (proxy.get("namespace", ""), proxy.get("name", ""))
        if key not in rows and not any(r[3] is status for r in rows.values()):
            rows[key] = (proxy.get("labels", {}), proxy.get("ip", ""), None, status)
    out = []
    for (ns, name), (labels, address, ready, status) in sorted(rows.items()):
        if namespace and ns != namespace:
            continue
        workload = workload_name(name, labels)
        out.append(
            {
                "namespace": ns,
                "name": name,
                "workload": workload,
                "app": labels.get("app", ""),
                "version": labels.get("version", ""),
                "labels": dict(labels),
                "address": address,
                "ready": ready,
                "gateway": is_gateway(labels) or (status or {}).get("proxy", {}).get("kind") == "router",
                "sidecar": status is not None,
                "proxyId": (status or {}).get("proxy_id"),
                "sync": sync_state(status) if status else "-",
                **health_by.get((ns, workload), _quiet()),
            }
        )
    return out


def services(config_items: list[Mapping], rates: Series, namespace: str | None) -> list[dict]:
    """One row per Service and ServiceEntry in the configuration, with the health of the requests its clients
    sent it; sorted by namespace and name."""
    health_by = _rates(rates, "destination_service_namespace", "destination_service_name")
    out = []
    for item in config_items:
        kind, meta = item.get("kind"), item.get("metadata", {})
        if kind not in ("Service", "ServiceEntry"):
            continue
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        if namespace and ns != namespace:
            continue
        spec = item.get("spec", {})
        ports = [p.get("port") or p.get("number") for p in spec.get("ports", [])]
        hosts = spec.get("hosts", [])
        row = {"namespace": ns, "name": name, "kind": kind, "ports": ports, "hosts": hosts}
        row |= health_by.get((ns, name), _quiet())
        if kind == "ServiceEntry" and row["health"] == "na":
            for host in hosts:
                row |= health_by.get((ns, host), {})
        out.append(row)
    return sorted(out, key=lambda r: (r["namespace"], r["name"], r["kind"]))


def config(config_items: list[Mapping], problems: list[Mapping], messages: list[Mapping]) -> list[dict]:
    """One row per Istio object (Services and WorkloadEntries of pods are listed elsewhere), with the problems
    that keep it out and the analysis messages naming it; sorted by kind, namespace, name."""

    def key_of(kind: str, namespace: str, name: str) -> tuple[str, str, str]:
        return (kind or "", namespace or "", name or "")

    notes: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for p in problems:
        notes[key_of(p.get("kind"), p.get("namespace"), p.get("name"))].append(
            {"level": p.get("severity", "error").capitalize(), "code": "", "message": p.get("message", "")}
        )
    for m in messages:
        notes[key_of(m.get("kind"), m.get("namespace"), m.get("name"))].append(
            {"level": m.get("level", ""), "code": m.get("code", ""), "message": m.get("message", "")}
        )
    rows = {}
    for item in config_items:
        meta = item.get("metadata", {})
        if item.get("kind") in ("Service", "WorkloadEntry") and not item.get("apiVersion", "").startswith("network"):
            continue
        k = key_of(item.get("kind"), meta.get("namespace"), meta.get("name"))
        rows[k] = {"kind": k[0], "namespace": k[1], "name": k[2], "apiVersion": item.get("apiVersion", "")}
    for k in notes:
        rows.setdefault(k, {"kind": k[0], "namespace": k[1], "name": k[2], "apiVersion": ""})
    out = []
    for k, row in sorted(rows.items()):
        found = notes.get(k, [])
        valid = not any(n["level"] == "Error" for n in found)
        out.append({**row, "valid": valid, "messages": found})
    return out


def _ms(micros: float | None) -> float:
    return round((micros or 0) / 1000.0, 3)


def trace_summaries(traces: list[list[Mapping]]) -> list[dict]:
    """Zipkin's ``/api/v2/traces`` answer (a list of traces, each a list of spans) as one row per trace: its
    root span (the one without a parent, else the earliest), start, duration, span count, errors; newest first."""
    out = []
    for spans in traces:
        if not spans:
            continue
        root = min(spans, key=lambda s: (s.get("parentId") is not None, s.get("timestamp", 0)))
        start = min(s.get("timestamp", 0) for s in spans)
        end = max(s.get("timestamp", 0) + s.get("duration", 0) for s in spans)
        out.append(
            {
                "traceId": root.get("traceId", ""),
                "service": (root.get("localEndpoint") or {}).get("serviceName", ""),
                "name": root.get("name", ""),
                "start": start,
                "durationMs": _ms(end - start),
                "spans": len(spans),
                "errors": sum(1 for s in spans if "error" in (s.get("tags") or {})),
            }
        )
    return sorted(out, key=lambda t: -t["start"])


def waterfall(spans: list[Mapping]) -> dict:
    """One trace's spans in tree order (parents before children, siblings by start), each with its depth and
    its offset from the trace's start, in ms: what the waterfall view draws."""
    if not spans:
        return {"traceId": "", "durationMs": 0.0, "spans": []}
    start = min(s.get("timestamp", 0) for s in spans)
    end = max(s.get("timestamp", 0) + s.get("duration", 0) for s in spans)
    ids = {s.get("id") for s in spans}
    children: dict[str | None, list[Mapping]] = defaultdict(list)
    for s in spans:
        parent = s.get("parentId")
        children[parent if parent in ids and parent != s.get("id") else None].append(s)
    rows: list[dict] = []
    seen: set[int] = set()

    def visit(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda s: (s.get("timestamp", 0), s.get("kind", ""))):
            if id(s) in seen:
                continue
            seen.add(id(s))
            tags = s.get("tags") or {}
            rows.append(
                {
                    "id": s.get("id", ""),
                    "parentId": s.get("parentId"),
                    "depth": depth,
                    "service": (s.get("localEndpoint") or {}).get("serviceName", ""),
                    "name": s.get("name", ""),
                    "kind": s.get("kind", ""),
                    "offsetMs": _ms(s.get("timestamp", 0) - start),
                    "durationMs": _ms(s.get("duration", 0)),
                    "status": tags.get("http.status_code", ""),
                    "error": "error" in tags,
                }
            )
            visit(s.get("id"), depth + 1)

    visit(None, 0)
    return {"traceId": spans[0].get("traceId", ""), "durationMs": _ms(end - start), "spans": rows}
