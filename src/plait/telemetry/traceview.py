"""Traces for people: a one-line summary per trace, and one trace as a tree with timing bars.

In: traces as Zipkin's read API returns them (lists of spans in Zipkin v2's shape), possibly from
several collectors (istiod replicas each hold the spans their proxies happened to send them).
Out: merged traces, `TraceSummary` rows (id, root service and operation, span count, duration,
start) and the text lines of a tree (``plait traces TRACE_ID``). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

BAR_WIDTH = 40


def merge_traces(*answers: Iterable[list[dict]]) -> list[list[dict]]:
    """Traces from several collectors merged by trace id; a span reported to two (same id, kind and
    service) is kept once."""
    merged: dict[str, dict[tuple, dict]] = {}
    for answer in answers:
        for trace in answer:
            for span in trace:
                key = (span["id"], span.get("kind"), span.get("localEndpoint", {}).get("serviceName"))
                merged.setdefault(span["traceId"], {}).setdefault(key, span)
    return [list(spans.values()) for spans in merged.values()]


def _service(span: dict) -> str:
    return span.get("localEndpoint", {}).get("serviceName") or "?"


def roots(spans: list[dict]) -> list[dict]:
    """Spans whose parent is not in the trace (the root, and any span whose parent was not reported)."""
    ids = {s["id"] for s in spans}
    return sorted((s for s in spans if s.get("parentId") not in ids), key=lambda s: s.get("timestamp", 0))


@dataclass(frozen=True)
class TraceSummary:
    trace_id: str
    root_service: str
    root_operation: str
    spans: int
    duration_us: int
    start_us: int


def summarize(spans: list[dict]) -> TraceSummary:
    """A trace's row: its first root's service and operation, its span count, and the time from its
    first span's start to its last span's end."""
    first = roots(spans)[0] if spans else {}
    starts = [s["timestamp"] for s in spans if "timestamp" in s]
    ends = [s["timestamp"] + s.get("duration", 0) for s in spans if "timestamp" in s]
    return TraceSummary(
        trace_id=spans[0]["traceId"] if spans else "",
        root_service=_service(first) if first else "?",
        root_operation=first.get("name", "") if first else "",
        spans=len(spans),
        duration_us=(max(ends) - min(starts)) if starts else 0,
        start_us=min(starts, default=0),
    )


def format_duration(us: int) -> str:
    """``850µs``, ``12.3ms``, ``1.52s``."""
    if us < 1000:
        return f"{us}µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    return f"{us / 1_000_000:.2f}s"


def bar(start: int, duration: int, trace_start: int, trace_duration: int, width: int = BAR_WIDTH) -> str:
    """A span's place in the trace as a bar of `width` cells: blank before it starts, ``█`` while it runs."""
    total = max(trace_duration, 1)
    begin = min(width - 1, (start - trace_start) * width // total)
    length = max(1, round(duration * width / total))
    length = min(length, width - begin)
    return " " * begin + "█" * length + " " * (width - begin - length)


def tree_lines(spans: list[dict], width: int = BAR_WIDTH) -> list[str]:
    """One trace drawn as a tree: per span its kind, service, operation, start offset and duration,
    children under their parent (by start time), and a bar showing when it ran."""
    summary = summarize(spans)
    children: dict[str, list[dict]] = {}
    for span in spans:
        children.setdefault(span.get("parentId", ""), []).append(span)
    for kids in children.values():
        kids.sort(key=lambda s: s.get("timestamp", 0))
    rows: list[tuple[str, str, str, str]] = []

    def walk(span: dict, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        kind = (span.get("kind") or "").lower()
        label = f"{prefix}{branch}{_service(span)} {span.get('name', '')}" + (f" ({kind})" if kind else "")
        start = span.get("timestamp", summary.start_us)
        timing = f"+{format_duration(start - summary.start_us)}"
        rows.append(
            (
                label,
                timing,
                format_duration(span.get("duration", 0)),
                bar(start, span.get("duration", 0), summary.start_us, summary.duration_us, width),
            )
        )
        kids = children.get(span["id"], [])
        deeper = prefix + ("" if top else ("   " if last else "│  "))
        for i, kid in enumerate(kids):
            walk(kid, deeper, i == len(kids) - 1, False)

    for root in roots(spans):
        walk(root, "", True, True)
    label_width = max((len(r[0]) for r in rows), default=0)
    head = f"trace {summary.trace_id}: {summary.spans} spans, {format_duration(summary.duration_us)}"
    return [head] + [f"{label:<{label_width}}  {start:>9} {took:>9}  |{cells}|" for label, start, took, cells in rows]
