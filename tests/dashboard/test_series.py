"""The side panel's time series: Prometheus' query_range answers, or the rates between the proxies' reads,
→ one node's or edge's figures per step, as the graph computes them."""

from __future__ import annotations

import pytest
from tests.dashboard.test_graph import buckets, labels, requests

from plait.dashboard import series
from plait.dashboard.graph import GraphError, GraphQuery
from plait.dashboard.series import SeriesQuery
from plait.telemetry.stat import Sample

EDGE = "app:default:productpage:v1->app:default:reviews:v2"


def edge_query(window: str = "1m") -> SeriesQuery:
    return SeriesQuery(GraphQuery(window=window), edge=EDGE)


def test_one_element_is_asked_for():
    with pytest.raises(GraphError, match="give one of node=ID or edge=ID"):
        SeriesQuery(GraphQuery())
    with pytest.raises(GraphError, match="give one of node=ID or edge=ID"):
        SeriesQuery(GraphQuery(), node="a", edge="b")


@pytest.mark.parametrize(("window", "step", "rate_range"), [("1m", 5, "30s"), ("5m", 10, "30s"), ("1h", 120, "120s")])
def test_steps_end_on_a_multiple_of_the_step(window: str, step: int, rate_range: str):
    query = edge_query(window)
    params = series.range_params(query, now=7201.5)
    end = 7200  # a multiple of 5, 10 and 120
    assert params == {"start": str(end - series.WINDOW_SECONDS[window]), "end": str(end), "step": str(step)}
    times = series.steps(params)
    assert times[0] == end - series.WINDOW_SECONDS[window] and times[-1] == end
    assert all(b - a == step for a, b in zip(times, times[1:]))
    assert series.rate_range(query) == rate_range


def test_the_requests_promql_is_the_graphs_over_the_rate_range():
    ask = series.asks()["requests"]
    assert ask.promql("30s").startswith('sum(rate(istio_requests_total{reporter="source"}[30s])) by (')
    assert "security" not in series.asks()


def test_matrix_rows_by_timestamp_and_errors():
    answer = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": {"response_code": "200"}, "values": [[100, "3"], [105, "2.5"]]},
                {"metric": {"response_code": "503"}, "values": [[105, "1"]]},
            ],
        },
    }
    assert series.matrix(answer) == {
        100.0: [({"response_code": "200"}, 3.0)],
        105.0: [({"response_code": "200"}, 2.5), ({"response_code": "503"}, 1.0)],
    }
    with pytest.raises(GraphError, match="Prometheus answered bad_data: parse error"):
        series.matrix({"status": "error", "errorType": "bad_data", "error": "parse error"})


def test_an_edges_points_are_its_graph_figures_at_each_step():
    at_100 = {
        "requests": [
            requests("productpage-v1", "reviews-v2", 3.0),
            requests("productpage-v1", "reviews-v2", 1.0, "503"),
        ],
        "latency": buckets("productpage-v1", "reviews-v2", {"10": 2.0, "100": 4.0, "+Inf": 4.0}),
    }
    answers = series.by_time(
        {"requests": {100.0: at_100["requests"]}, "latency": {100.0: at_100["latency"]}}, [95.0, 100.0]
    )
    assert answers[95.0] == {"requests": [], "latency": []}
    built = series.build(edge_query(), answers, source="prometheus")
    assert built == {
        "namespace": "default",
        "window": "1m",
        "type": "versionedApp",
        "edge": EDGE,
        "step": 5,
        "source": "prometheus",
        "points": [
            {"t": 95.0, "rps": 0.0, "errorRate": None, "p95": None, "tcpBytes": None},  # no traffic then
            {"t": 100.0, "rps": 4.0, "errorRate": 25.0, "p95": 91.0, "tcpBytes": None},  # 10 + 90 * (3.8 - 2) / 2
        ],
    }


def test_a_nodes_points_are_its_rates_in_and_out():
    answers = {
        10.0: {
            "requests": [
                requests("productpage-v1", "reviews-v2", 2.0),
                requests("reviews-v2", "ratings-v1", 1.0, "500"),
            ]
        },
        20.0: {"requests": [requests("reviews-v2", "ratings-v1", 1.0)]},
    }
    query = SeriesQuery(GraphQuery(), node="app:default:reviews:v2")
    assert series.build(query, answers)["points"] == [
        {"t": 10.0, "rpsIn": 2.0, "rpsOut": 1.0, "errorRate": 0.0, "p95": None},
        {"t": 20.0, "rpsIn": 0.0, "rpsOut": 1.0, "errorRate": None, "p95": None},
    ]
    gone = SeriesQuery(GraphQuery(), node="app:default:details:v1")
    assert series.build(gone, answers)["points"][0] == {
        "t": 10.0,
        "rpsIn": 0.0,
        "rpsOut": 0.0,
        "errorRate": None,
        "p95": None,
    }


def reads(until: int, every: int = 5) -> list[series.Read]:
    """A proxy's cumulative counters read every `every` s from t=0: 10 requests per 5 s, one in ten a 503."""
    out = []
    for t in range(0, until + 1, every):
        n = t // 5
        ok = Sample(
            "istio_requests_total",
            {"reporter": "source", **labels("productpage-v1", "reviews-v2", response_code="200")},
            9.0 * n,
        )
        failed = Sample(
            "istio_requests_total",
            {"reporter": "source", **labels("productpage-v1", "reviews-v2", response_code="503")},
            1.0 * n,
        )
        out.append((float(t), [ok, failed]))
    return out


def test_thin_keeps_the_last_five_minutes_and_one_read_per_two_minutes_of_the_hour_before():
    kept = series.thin(reads(7200), now=7200.0)
    times = [t for t, _ in kept]
    assert times == [3480.0 + 120 * k for k in range(29)] + [6900.0 + 5 * k for k in range(61)]


@pytest.mark.parametrize(
    ("window", "expected"), [("1m", [5.0 * k for k in range(1, 13)]), ("5m", [10.0 * k for k in range(1, 7)])]
)
def test_without_prometheus_points_are_rates_between_reads_a_step_apart(window: str, expected: list[float]):
    answers = series.proxy_answers(edge_query(window), reads(60), now=60.0)
    points = series.build(edge_query(window), answers)["points"]
    assert [p["t"] for p in points] == expected
    assert {(p["rps"], p["errorRate"]) for p in points} == {(2.0, 10.0)}


def test_without_prometheus_only_the_window_is_drawn():
    answers = series.proxy_answers(edge_query("1m"), reads(600), now=600.0)
    assert min(answers) == 540.0 and max(answers) == 600.0
