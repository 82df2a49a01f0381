"""A bounded store of spans and the queries of Zipkin's v2 read API over it (sans-I/O).

In: spans in Zipkin v2's shape (`plait.telemetry.spans`), and queries as Zipkin's read API takes
them (``serviceName``, ``spanName``, ``minDuration``/``maxDuration`` in microseconds, ``endTs`` and
``lookback`` in milliseconds, ``limit``) with the current time passed in. Out: service and span
names, traces (lists of spans), newest first. Memory is bounded by ``max_spans``: when a new span
would pass it, the traces that arrived first are dropped whole (the newest trace alone may lose its
own first spans). Not thread-safe; the HTTP shell calls it from one event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from plait.telemetry.spans import SpanError, normalize_id

DEFAULT_MAX_SPANS = 50_000
DEFAULT_LOOKBACK_MS = 24 * 3600 * 1000  # Zipkin's default: a day
DEFAULT_LIMIT = 10


@dataclass(frozen=True)
class TraceQuery:
    """Zipkin's ``GET /api/v2/traces`` parameters."""

    service_name: str | None = None
    span_name: str | None = None
    remote_service_name: str | None = None
    min_duration: int | None = None  # µs
    max_duration: int | None = None  # µs
    end_ts: int | None = None  # ms since the epoch; None: now
    lookback: int = DEFAULT_LOOKBACK_MS  # ms
    limit: int = DEFAULT_LIMIT

    def matches_span(self, span: dict) -> bool:
        """Whether one span meets every span-level condition (Zipkin: all on the same span)."""
        if self.service_name and span.get("localEndpoint", {}).get("serviceName") != self.service_name.lower():
            return False
        if self.span_name and span.get("name") != self.span_name.lower():
            return False
        if self.remote_service_name and (
            span.get("remoteEndpoint", {}).get("serviceName") != self.remote_service_name.lower()
        ):
            return False
        duration = span.get("duration")
        if self.min_duration is not None and (duration is None or duration < self.min_duration):
            return False
        return self.max_duration is None or (duration is not None and duration <= self.max_duration)


def trace_start(spans: Iterable[dict]) -> int:
    """The first timestamp (µs) of a trace, 0 when no span has one."""
    return min((s["timestamp"] for s in spans if "timestamp" in s), default=0)


class TraceStore:
    def __init__(self, max_spans: int = DEFAULT_MAX_SPANS):
        if max_spans < 1:
            raise ValueError(f"max_spans must be at least 1, got {max_spans}")
        self.max_spans = max_spans
        self._traces: OrderedDict[str, list[dict]] = OrderedDict()  # oldest arrival first
        self.span_count = 0
        self.dropped_spans = 0

    def add(self, spans: Iterable[dict]) -> int:
        """Store spans (already parsed); returns how many were added."""
        added = 0
        for span in spans:
            self._traces.setdefault(span["traceId"], []).append(span)
            self.span_count += 1
            added += 1
            self._bound(span["traceId"])
        return added

    def _bound(self, newest: str) -> None:
        while self.span_count > self.max_spans:
            oldest = next(iter(self._traces))
            if oldest == newest:  # the newest trace alone is too big: it loses its first spans
                self._traces[oldest].pop(0)
                self.span_count -= 1
                self.dropped_spans += 1
                continue
            dropped = self._traces.pop(oldest)
            self.span_count -= len(dropped)
            self.dropped_spans += len(dropped)

    @property
    def trace_count(self) -> int:
        return len(self._traces)

    def services(self) -> list[str]:
        return sorted(
            {s["localEndpoint"]["serviceName"] for s in self._spans() if "serviceName" in s.get("localEndpoint", {})}
        )

    def span_names(self, service: str) -> list[str]:
        service = service.lower()
        return sorted(
            {
                s["name"]
                for s in self._spans()
                if s.get("localEndpoint", {}).get("serviceName") == service and s.get("name")
            }
        )

    def remote_services(self, service: str) -> list[str]:
        service = service.lower()
        return sorted(
            {
                s["remoteEndpoint"]["serviceName"]
                for s in self._spans()
                if s.get("localEndpoint", {}).get("serviceName") == service
                and "serviceName" in s.get("remoteEndpoint", {})
            }
        )

    def _spans(self) -> Iterable[dict]:
        for spans in self._traces.values():
            yield from spans

    def trace(self, trace_id: str) -> list[dict] | None:
        """The spans of one trace (a 16-hex id also finds the 128-bit trace ending in it), or None."""
        try:
            wanted = normalize_id(trace_id, 32, "trace id")
        except SpanError:
            return None
        spans = self._traces.get(wanted)
        if spans is None and len(wanted) == 16:
            spans = next((v for k, v in self._traces.items() if k.endswith(wanted)), None)
        return list(spans) if spans is not None else None

    def traces(self, query: TraceQuery, now_ms: int) -> list[list[dict]]:
        """The traces with a span that meets the query and that started in [endTs - lookback, endTs],
        newest first, at most ``limit``."""
        end = (query.end_ts if query.end_ts is not None else now_ms) * 1000
        start = end - query.lookback * 1000
        found = []
        for spans in self._traces.values():
            first = trace_start(spans)
            if start <= first <= end and any(query.matches_span(s) for s in spans):
                found.append((first, spans))
        found.sort(key=lambda item: item[0], reverse=True)
        return [list(spans) for _, spans in found[: query.limit]]


def _non_negative(params: dict[str, str], name: str) -> int | None:
    text = params.get(name)
    if text in (None, ""):
        return None
    if not text.isdigit():
        raise ValueError(f"{name}: expected a non-negative whole number, got {text!r}")
    return int(text)


def trace_query(params: dict[str, str]) -> TraceQuery:
    """A `TraceQuery` from the query string of ``GET /api/v2/traces``; ValueError names a bad parameter."""
    limit = _non_negative(params, "limit")
    lookback = _non_negative(params, "lookback")
    return TraceQuery(
        service_name=params.get("serviceName") or None,
        span_name=(params.get("spanName") or None) if params.get("spanName") != "all" else None,
        remote_service_name=params.get("remoteServiceName") or None,
        min_duration=_non_negative(params, "minDuration"),
        max_duration=_non_negative(params, "maxDuration"),
        end_ts=_non_negative(params, "endTs"),
        lookback=DEFAULT_LOOKBACK_MS if lookback is None else lookback,
        limit=DEFAULT_LIMIT if limit is None else max(limit, 1),
    )
