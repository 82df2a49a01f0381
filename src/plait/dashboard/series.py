"""The side panel's time series: one node's or edge's figures of the graph, step by step over the window.

In: a `SeriesQuery` (the graph's namespace, window and type, and the id of the node or edge as the graph
names it) and the graph's sums (`graph.asks`, without mTLS) at each step: Prometheus' ``query_range`` answers
(`matrix`), or, without Prometheus, the rates between cumulative reads of the proxies' own stats
(`proxy_answers` over a `thin`ned history of reads). Out: the series' JSON (`build`): one point per step
with the element's figures as `graph.build` computes them from that step's sums (an edge: requests/s,
error %, p95 ms, TCP bytes/s; a node: requests/s in and out, error %, p95 ms in), zero requests/s when it had no
traffic. Pure: no I/O, no clock (the caller gives the time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from plait.dashboard import graph
from plait.dashboard.graph import GraphError, GraphQuery, Series
from plait.telemetry.stat import Sample, rates

WINDOW_SECONDS = {"1m": 60, "5m": 300, "1h": 3600}
STEPS = {"1m": 5, "5m": 10, "1h": 120}  # seconds between points: 12 or 30 of them, the proxies' reads are 5 s
MIN_RATE_RANGE = 30  # a rate in Prometheus needs two scrapes in its range (the Kubernetes addon's: every 15 s)
RECENT = 300  # the proxies' reads of the last 5 minutes are all kept; older ones one per STEPS["1h"]
# Reads are the proxies' cumulative samples: (wall-clock time, samples)
Read = tuple[float, Sequence[Sample]]


@dataclass(frozen=True)
class SeriesQuery:
    graph: GraphQuery
    node: str = ""
    edge: str = ""

    def __post_init__(self):
        if bool(self.node) == bool(self.edge):
            raise GraphError("give one of node=ID or edge=ID (the ids /api/graph answers)")

    @property
    def step(self) -> int:
        return STEPS[self.graph.window]


def asks() -> dict[str, graph.Ask]:
    """The graph's sums a point needs: requests, latency buckets and TCP bytes (mTLS is not drawn over time)."""
    return {name: ask for name, ask in graph.asks(GraphQuery()).items() if "security" not in name}


def rate_range(query: SeriesQuery) -> str:
    """The range of each point's rate in PromQL: the step, but at least `MIN_RATE_RANGE`."""
    return f"{max(query.step, MIN_RATE_RANGE)}s"


def range_params(query: SeriesQuery, now: float) -> dict[str, str]:
    """``query_range``'s start, end and step (the end on a multiple of the step, so points stay put between
    refreshes)."""
    end = math.floor(now / query.step) * query.step
    start = end - WINDOW_SECONDS[query.graph.window]
    return {"start": str(start), "end": str(end), "step": str(query.step)}


def matrix(answer: Mapping) -> dict[float, Series]:
    """Prometheus' ``/api/v1/query_range`` answer (a matrix) as (labels, value) rows by timestamp."""
    if answer.get("status") != "success":
        raise GraphError(f"Prometheus answered {answer.get('errorType', '')}: {answer.get('error', answer)}")
    out: dict[float, Series] = {}
    for row in answer["data"]["result"]:
        for t, value in row["values"]:
            out.setdefault(float(t), []).append((row["metric"], float(value)))
    return out


def by_time(answers: Mapping[str, Mapping[float, Series]], times: Iterable[float]) -> dict[float, dict[str, Series]]:
    """Each ask's rows by timestamp → each timestamp's answers by ask (absent: no traffic then)."""
    return {t: {name: rows.get(t, []) for name, rows in answers.items()} for t in times}


def steps(params: Mapping[str, str]) -> list[float]:
    """The timestamps ``query_range`` answers for."""
    start, end, step = (float(params[k]) for k in ("start", "end", "step"))
    return [start + i * step for i in range(int((end - start) // step) + 1)]


def thin(history: Sequence[Read], now: float) -> list[Read]:
    """The reads worth keeping: every one of the last `RECENT` seconds, before that one per `STEPS["1h"]`
    seconds, none older than the longest window and a step."""
    kept: list[Read] = []
    oldest = now - WINDOW_SECONDS["1h"] - STEPS["1h"]
    for read in history:
        t = read[0]
        if t < oldest:
            continue
        if t < now - RECENT and kept and t - kept[-1][0] < STEPS["1h"]:
            continue
        kept.append(read)
    return kept


def proxy_answers(query: SeriesQuery, history: Sequence[Read], now: float) -> dict[float, dict[str, Series]]:
    """Without Prometheus: the graph's sums at each step of the window, over the rates between reads at least
    a step apart (read at the later one's time), as `graph.evaluate` computes them from one pair of reads."""
    since = now - WINDOW_SECONDS[query.graph.window]
    chosen: list[Read] = []
    for read in history:
        if not chosen or read[0] - chosen[-1][0] >= query.step - 0.5:  # reads drift by a little
            chosen.append(read)
    out = {}
    wanted = asks()
    for (before_t, before), (t, after) in zip(chosen, chosen[1:]):
        if t >= since:
            out[t] = graph.evaluate(rates(list(before), list(after), t - before_t), wanted)
    return out


def build(
    query: SeriesQuery,
    answers: Mapping[float, Mapping[str, Series]],
    gateways: Iterable[tuple[str, str]] = (),
    source: str = "",
) -> dict:
    """The series' JSON: at each timestamp (ascending) the element's figures in the graph of that step's
    answers."""
    gateways = list(gateways)
    points = []
    for t in sorted(answers):
        built = graph.build(query.graph, answers[t], gateways)
        if query.edge:
            found = next((e for e in built["edges"] if e["id"] == query.edge), None)
            points.append(_edge_point(t, found))
        else:
            found = next((n for n in built["nodes"] if n["id"] == query.node), None)
            points.append(_node_point(t, found))
    return {
        "namespace": query.graph.namespace,
        "window": query.graph.window,
        "type": query.graph.type,
        "node" if query.node else "edge": query.node or query.edge,
        "step": query.step,
        "source": source,
        "points": points,
    }


def _edge_point(t: float, edge: Mapping | None) -> dict:
    if edge is None:
        return {"t": t, "rps": 0.0, "errorRate": None, "p95": None, "tcpBytes": None}
    return {"t": t} | {k: edge[k] for k in ("rps", "errorRate", "p95", "tcpBytes")}


def _node_point(t: float, node: Mapping | None) -> dict:
    if node is None:
        return {"t": t, "rpsIn": 0.0, "rpsOut": 0.0, "errorRate": None, "p95": None}
    return {"t": t} | {k: node[k] for k in ("rpsIn", "rpsOut", "errorRate", "p95")}
