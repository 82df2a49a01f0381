"""The dashboard's graph builder: Prometheus answers (as Kiali's queries get them) → nodes and edges."""

from __future__ import annotations

import pytest

from plait.dashboard import graph
from plait.dashboard.graph import GraphError, GraphQuery, build, health, queries


def labels(src: str, dst: str, src_ns: str = "default", dst_ns: str = "default", **extra: str) -> dict:
    """The labels of one series from workload `src` (app-version naming: reviews-v2 → app reviews, v2)."""

    def parts(workload: str) -> tuple[str, str]:
        if workload == "unknown":
            return "unknown", "unknown"
        app, _, version = workload.rpartition("-v")
        return (app, f"v{version}") if app else (workload, "latest")

    src_app, src_version = parts(src)
    dst_app, dst_version = parts(dst)
    return {
        "source_workload_namespace": src_ns if src != "unknown" else "unknown",
        "source_workload": src,
        "source_canonical_service": src_app,
        "source_canonical_revision": src_version,
        "destination_service_namespace": dst_ns,
        "destination_service_name": dst_app,
        "destination_service": f"{dst_app}.{dst_ns}.svc.cluster.local",
        "destination_workload_namespace": dst_ns,
        "destination_workload": dst,
        "destination_canonical_service": dst_app,
        "destination_canonical_revision": dst_version,
        "request_protocol": "http",
        "connection_security_policy": "unknown",  # as the client's side reports it
        **extra,
    }


def requests(src: str, dst: str, rps: float, code: str = "200", **extra: str):
    return (labels(src, dst, response_code=code, **extra), rps)


def buckets(src: str, dst: str, counts: dict[str, float], **extra: str):
    return [(labels(src, dst, le=le, **extra), value) for le, value in counts.items()]


GATEWAY = ("istio-system", "istio-ingressgateway")
EXTERNAL = {
    "destination_service": "PassthroughCluster",
    "destination_service_name": "PassthroughCluster",
    "destination_service_namespace": "unknown",
    "destination_canonical_service": "unknown",
    "destination_canonical_revision": "unknown",
    "destination_workload_namespace": "unknown",
}
MTLS = {"connection_security_policy": "mutual_tls"}
FAULTED = {
    "destination_service": "ratings.default.svc.cluster.local",
    "destination_service_name": "ratings",
    "destination_service_namespace": "default",
    "destination_canonical_service": "unknown",
    "destination_canonical_revision": "unknown",
    "destination_workload_namespace": "unknown",
    "response_flags": "FI",
}
ANSWERS = {
    # the clients' reports
    "requests": [
        requests("istio-ingressgateway", "productpage-v1", 2.0, src_ns="istio-system"),
        requests("productpage-v1", "reviews-v1", 1.0),
        requests("productpage-v1", "reviews-v2", 0.5),
        requests("reviews-v2", "ratings-v1", 0.25),
        requests("reviews-v2", "ratings-v1", 0.25, code="503"),  # half failing
        requests("productpage-v1", "details-v1", 0.999),
        requests("productpage-v1", "details-v1", 0.001, code="500"),  # 0.1 %: degraded
        requests("productpage-v1", "reviews-v1", 0.0, code="500"),  # a series without traffic in the window
        requests("productpage-v1", "unknown", 0.2, **EXTERNAL),  # no sidecar answered
        # a fault reviews-v2's sidecar injected: no upstream host, so no destination workload; the service node
        requests("reviews-v2", "unknown", 0.1, code="500", **FAULTED),
    ],
    # the servers' reports of callers without a sidecar
    "unknown_requests": [requests("unknown", "productpage-v1", 0.5, connection_security_policy="none")],
    "latency": buckets("productpage-v1", "reviews-v1", {"10": 0.5, "25": 1.0, "100": 1.0, "+Inf": 1.0})
    + buckets("productpage-v1", "reviews-v2", {"10": 0.0, "25": 0.0, "100": 0.5, "+Inf": 0.5}),
    "tcp_sent": [(labels("reviews-v2", "mongodb-v1", request_protocol="tcp"), 300.0)],
    "tcp_received": [(labels("reviews-v2", "mongodb-v1", request_protocol="tcp"), 100.0)],
    # the servers' view of mTLS (every in-mesh edge but one request in four to details)
    "security": [
        (labels("istio-ingressgateway", "productpage-v1", src_ns="istio-system", **MTLS), 2.0),
        (labels("productpage-v1", "reviews-v1", **MTLS), 1.0),
        (labels("productpage-v1", "reviews-v2", **MTLS), 0.5),
        (labels("reviews-v2", "ratings-v1", **MTLS), 0.5),
        (labels("productpage-v1", "details-v1", **MTLS), 0.75),
        (labels("productpage-v1", "details-v1", connection_security_policy="none"), 0.25),
        (labels("unknown", "productpage-v1", connection_security_policy="none"), 0.5),
    ],
    "tcp_security": [(labels("reviews-v2", "mongodb-v1", **MTLS), 300.0)],
}


def by_id(items: list[dict]) -> dict[str, dict]:
    return {i["id"]: i for i in items}


def test_versioned_app_graph_nodes_and_edges():
    result = build(GraphQuery("default", "1m", "versionedApp"), ANSWERS, [GATEWAY], source="prometheus")
    nodes, edges = by_id(result["nodes"]), by_id(result["edges"])
    assert set(nodes) == {
        "app:istio-system:istio-ingressgateway:latest",
        "app:default:productpage:v1",
        "app:default:reviews:v1",
        "app:default:reviews:v2",
        "app:default:ratings:v1",
        "app:default:details:v1",
        "app:default:mongodb:v1",
        "service:default:PassthroughCluster",
        "service:default:ratings",
        "unknown",
    }
    assert nodes["app:istio-system:istio-ingressgateway:latest"]["isGateway"] is True
    assert nodes["app:istio-system:istio-ingressgateway:latest"]["name"] == "istio-ingressgateway"
    assert nodes["app:default:reviews:v2"]["name"] == "reviews v2"
    assert nodes["service:default:PassthroughCluster"]["isExternal"] is True
    assert (nodes["service:default:ratings"]["name"], nodes["service:default:ratings"]["isExternal"]) == (
        "ratings",
        False,
    )
    assert nodes["unknown"]["nodeType"] == "unknown"
    faulted = edges["app:default:reviews:v2->service:default:ratings"]
    assert (faulted["rps"], faulted["errorRate"], faulted["health"]) == (0.1, 100.0, "failing")
    assert nodes["app:default:productpage:v1"]["rpsIn"] == 2.5
    assert nodes["app:default:productpage:v1"]["rpsOut"] == 2.7
    assert nodes["app:default:ratings:v1"]["health"] == "failing"
    assert result["source"] == "prometheus" and result["type"] == "versionedApp"

    ratings = edges["app:default:reviews:v2->app:default:ratings:v1"]
    assert (ratings["rps"], ratings["errorRate"], ratings["health"], ratings["mtls"]) == (0.5, 50.0, "failing", True)
    details = edges["app:default:productpage:v1->app:default:details:v1"]
    assert (details["rps"], details["errorRate"], details["health"]) == (1.0, 0.1, "degraded")
    assert (details["mtls"], details["mtlsPercent"]) == (False, 75.0)
    reviews = edges["app:default:productpage:v1->app:default:reviews:v1"]
    assert (reviews["rps"], reviews["errorRate"], reviews["health"]) == (1.0, 0.0, "healthy")
    # rank 0.95 of 1.0 falls in (10, 25] holding 0.5 of it: 10 + 15 * 0.45 / 0.5
    assert reviews["p95"] == 23.5
    assert nodes["app:default:reviews:v1"]["p95"] == 23.5
    assert nodes["app:default:productpage:v1"]["p95"] is None  # no latency reported for its callers
    assert edges["app:default:productpage:v1->app:default:reviews:v2"]["p95"] == 96.25
    assert edges["unknown->app:default:productpage:v1"]["mtls"] is False
    assert edges["unknown->app:default:productpage:v1"]["mtlsPercent"] == 0.0
    outside = edges["app:default:productpage:v1->service:default:PassthroughCluster"]
    assert (outside["rps"], outside["mtls"], outside["mtlsPercent"]) == (0.2, False, None)
    mongo = edges["app:default:reviews:v2->app:default:mongodb:v1"]
    assert (mongo["protocol"], mongo["tcpBytes"], mongo["rps"], mongo["health"], mongo["mtls"]) == (
        "tcp",
        400.0,
        None,
        "na",
        True,
    )
    assert len(edges) == 9


def test_workload_and_app_graphs_aggregate_differently():
    workloads = build(GraphQuery(type="workload"), ANSWERS, [GATEWAY])
    assert "workload:default:reviews-v2" in by_id(workloads["nodes"])
    apps = build(GraphQuery(type="app"), ANSWERS, [GATEWAY])
    edges = by_id(apps["edges"])
    # reviews-v1 and reviews-v2 are one app: their edges add up
    assert edges["app:default:productpage->app:default:reviews"]["rps"] == 1.5
    # histograms add before the quantile: rank 1.425 of 1.5 in (25, 100] holding 0.5 → 25 + 75 * 0.425 / 0.5
    assert edges["app:default:productpage->app:default:reviews"]["p95"] == 88.75
    # a node's p95 is of what it received, over all its callers: the reviews app's, as its one edge's
    assert by_id(apps["nodes"])["app:default:reviews"]["p95"] == 88.75
    services = build(GraphQuery(type="service"), ANSWERS, [GATEWAY])
    assert {n["id"] for n in services["nodes"]} >= {"service:default:reviews", "service:default:ratings"}


def test_namespace_keeps_edges_touching_it():
    other = build(GraphQuery(namespace="istio-system"), ANSWERS, [GATEWAY])
    assert [e["id"] for e in other["edges"]] == [
        "app:istio-system:istio-ingressgateway:latest->app:default:productpage:v1"
    ]
    assert build(GraphQuery(namespace="nothing-here"), ANSWERS) == {
        "namespace": "nothing-here",
        "window": "1m",
        "type": "versionedApp",
        "source": "",
        "nodes": [],
        "edges": [],
    }


def test_no_traffic_no_graph():
    assert build(GraphQuery(), {})["nodes"] == []


@pytest.mark.parametrize(
    ("percent", "expected"),
    [(None, "na"), (0.0, "healthy"), (0.099, "healthy"), (0.1, "degraded"), (10.0, "degraded"), (10.01, "failing")],
)
def test_kiali_thresholds(percent, expected):
    assert health(percent) == expected


def test_queries_are_kialis():
    q = queries(GraphQuery(window="5m"))
    assert q["requests"].endswith(",request_protocol,response_code)")
    assert q["requests"].startswith('sum(rate(istio_requests_total{reporter="source"}[5m])) by (')
    assert 'reporter="destination",source_workload="unknown"' in q["unknown_requests"]
    assert q["security"].endswith(",connection_security_policy)") and 'reporter="destination"' in q["security"]
    assert "istio_request_duration_milliseconds_bucket" in q["latency"] and q["latency"].endswith(",le)")


@pytest.mark.parametrize(("field", "value"), [("type", "graph"), ("window", "2m")])
def test_bad_query_names_field(field, value):
    with pytest.raises(GraphError, match=f"{field}='{value}': expected one of"):
        GraphQuery(**{field: value})


def test_prometheus_error_is_reported():
    with pytest.raises(GraphError, match="bad_data: parse error"):
        graph.series({"status": "error", "errorType": "bad_data", "error": "parse error"})


def test_evaluate_over_the_proxies_rates_answers_as_prometheus_would():
    from plait.telemetry.stat import parse_exposition, rates

    def exposition(ok: int, failed: int) -> str:
        common = ",".join(f'{k}="{v}"' for k, v in labels("productpage-v1", "reviews-v1").items())
        return (
            f'istio_requests_total{{reporter="source",{common},response_code="200"}} {ok}\n'
            f'istio_requests_total{{reporter="source",{common},response_code="503"}} {failed}\n'
            f'istio_requests_total{{reporter="destination",{common.replace("unknown", "mutual_tls")},'
            f'response_code="200"}} {ok}\n'
        )

    before = parse_exposition(exposition(10, 0), {"namespace": "default", "pod": "productpage-v1-0"})
    after = parse_exposition(exposition(40, 10), {"namespace": "default", "pod": "productpage-v1-0"})
    query = GraphQuery(type="workload")
    answers = graph.evaluate(rates(before, after, 5.0), graph.asks(query))
    assert sorted((row["response_code"], value) for row, value in answers["requests"]) == [("200", 6.0), ("503", 2.0)]
    [edge] = build(query, answers)["edges"]
    assert (edge["rps"], edge["errorRate"], edge["health"]) == (8.0, 25.0, "failing")


def test_health_is_judged_on_the_percentage_as_shown():
    assert health(10.000000000000002) == "degraded"  # a rate's float noise: shown as 10.0 %, not above 10 %
    assert health(10.001) == "failing" and health(0.1) == "degraded" and health(0.0994) == "healthy"
