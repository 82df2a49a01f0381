"""``plait top``: tap events folded into linkerd top's table of the busiest paths.

In: tap events (`plait.telemetry.tap`'s dicts), one at a time (`TopTable.add`). Out: rows keyed by
source, destination, method and path (the query string dropped, so rows stay few), with the count,
the best, worst and last response latency and the success rate (a response below 500, as linkerd
counts), busiest first (`TopTable.rows`). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

COLUMNS = ("Source", "Destination", "Method", "Path", "Count", "Best", "Worst", "Last", "Success Rate")


@dataclass
class TopRow:
    source: str
    destination: str
    method: str
    path: str
    count: int = 0
    successes: int = 0
    best: int | None = None  # µs
    worst: int | None = None
    last: int | None = None

    @property
    def success_rate(self) -> float:
        return self.successes / self.count if self.count else 0.0

    def cells(self) -> tuple[str, ...]:
        return (
            self.source,
            self.destination,
            self.method,
            self.path,
            str(self.count),
            latency(self.best),
            latency(self.worst),
            latency(self.last),
            f"{self.success_rate:.2%}",
        )

    def as_dict(self) -> dict:
        return dict(zip(COLUMNS, self.cells(), strict=True))


def latency(micros: int | None) -> str:
    """linkerd's latency cells: µs below 1 ms, ms below 1 s, else s."""
    if micros is None:
        return "-"
    if micros < 1000:
        return f"{micros}µs"
    if micros < 1_000_000:
        return f"{micros / 1000:.0f}ms"
    return f"{micros / 1_000_000:.1f}s"


def _end(event: Mapping, workload: str, address: str) -> str:
    return str(event.get(workload) or event.get(address) or "-")


class TopTable:
    """The rows seen so far, by (source, destination, method, path)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str, str], TopRow] = {}

    def add(self, event: Mapping) -> None:
        key = (
            _end(event, "src_workload", "src"),
            _end(event, "dst_workload", "dst"),
            str(event.get("method", "")),
            str(event.get("path", "")).partition("?")[0],
        )
        row = self._rows.get(key) or self._rows.setdefault(key, TopRow(*key))
        row.count += 1
        status = int(event.get("status") or 0)
        row.successes += 0 < status < 500
        took = event.get("latency_us")
        if took is not None:
            row.last = took
            row.best = took if row.best is None else min(row.best, took)
            row.worst = took if row.worst is None else max(row.worst, took)

    def rows(self, limit: int | None = None) -> list[TopRow]:
        ordered = sorted(self._rows.values(), key=lambda r: (-r.count, r.source, r.destination, r.path, r.method))
        return ordered[:limit] if limit else ordered
