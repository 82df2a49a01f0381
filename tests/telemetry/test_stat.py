"""The pure parts of `plait stat` / `plait edges`: the PromQL they ask Prometheus, the same sums computed
over the proxies' own exposition, PromQL's histogram_quantile, and linkerd's rows and columns."""

from __future__ import annotations

import math

import pytest

from plait.telemetry import stat

EXPOSITION = """\
# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",destination_workload="reviews-v2",ns="default",response_code="200",path="a\\"b"} 10
istio_requests_total{reporter="destination",destination_workload="reviews-v2",ns="default",response_code="503"} 2
istio_requests_total{reporter="source",destination_workload="reviews-v2",ns="default",response_code="200"} 7
istio_requests_total{reporter="destination",destination_workload="ratings-v1",ns="default",response_code="200"} 4
not a sample line
"""


def test_deploy_query_reads_the_servers_side() -> None:
    query = stat.StatQuery("deploy", "default", "reviews-v2")
    [requests, latency, *_] = query.series()
    assert stat.promql(requests, query.matchers(), query.row_labels, "1m") == (
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="default",'
        'destination_workload="reviews-v2"}[1m])) by (destination_workload_namespace,destination_workload,response_code)'
    )
    assert stat.promql(latency, query.matchers(), query.row_labels, "30s").endswith(
        "[30s])) by (destination_workload_namespace,destination_workload,le)"
    )


def test_services_and_from_read_the_clients_side() -> None:
    assert stat.StatQuery("svc").matchers() == {"reporter": "source", "destination_service_namespace": "default"}
    assert stat.StatQuery("deploy", "shop", from_workload="web").matchers() == {
        "reporter": "source",
        "destination_workload_namespace": "shop",
        "source_workload": "web",
        "source_workload_namespace": "shop",
    }
    assert stat.StatQuery("po").row_labels == ("namespace", "pod")


def test_open_connections_are_current_values_not_rates() -> None:
    query = stat.StatQuery("deploy")
    opened = next(s for s in query.series() if s.key == "tcp_opened")
    assert stat.promql(opened, {"reporter": "destination"}, ("a",)) == (
        'sum(istio_tcp_connections_opened_total{reporter="destination"}) by (a)'
    )


def test_label_values_are_escaped_in_promql() -> None:
    assert stat.selector({"x": 'a"b\\c'}) == 'x="a\\"b\\\\c"'


@pytest.mark.parametrize(
    ("args", "message"),
    [(("po", "default", None, "web"), "--from works with deploy and svc")],
)
def test_bad_requests_are_refused_clearly(args, message) -> None:
    with pytest.raises(stat.QueryError, match=message):
        stat.StatQuery(*args)


def test_unknown_kinds_name_the_expected_ones() -> None:
    assert stat.resource_kind("Deployments") == "deploy"
    with pytest.raises(stat.QueryError, match="unknown resource type 'cronjob': expected deploy, svc or po"):
        stat.resource_kind("cronjob")
    with pytest.raises(stat.QueryError, match="plait edges lists deploy or po edges"):
        stat.EdgesQuery("svc")


def test_exposition_is_parsed_with_the_targets_labels() -> None:
    samples = stat.parse_exposition(EXPOSITION, {"namespace": "default", "pod": "reviews-v2-0"})
    assert len(samples) == 4
    assert samples[0].labels["path"] == 'a"b'
    assert samples[0].labels["pod"] == "reviews-v2-0" and samples[0].value == 10


def _exposition(text: str) -> list[stat.Sample]:
    return stat.parse_exposition(text.replace("ns=", "destination_workload_namespace="))


def test_direct_reads_compute_what_promql_would() -> None:
    before = _exposition(EXPOSITION)
    after = _exposition(EXPOSITION.replace("} 10", "} 40").replace("} 2\n", "} 1\n"))
    per_second = stat.rates(before, after, 10.0)
    query = stat.StatQuery("deploy")
    [requests, *_] = query.series()
    assert stat.evaluate(per_second, requests, query.matchers(), query.row_labels) == {
        ("default", "reviews-v2", "200"): 3.0,  # +30 in 10 s
        ("default", "reviews-v2", "503"): 0.1,  # a reset: 1 since
        ("default", "ratings-v1", "200"): 0.0,
    }


def test_histogram_quantile_interpolates_as_promql() -> None:
    buckets = {1.0: 10.0, 2.0: 20.0, 5.0: 20.0, math.inf: 20.0}
    assert stat.histogram_quantile(0.5, buckets) == 1.0
    assert stat.histogram_quantile(0.75, buckets) == 1.5
    assert stat.histogram_quantile(0.99, {1.0: 10.0, math.inf: 20.0}) == 1.0  # in +Inf: the highest bound
    assert stat.histogram_quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None
    assert stat.histogram_quantile(0.5, {}) is None


def test_rows_show_success_rps_latency_and_resources_without_traffic() -> None:
    query = stat.StatQuery("deploy")
    results = {
        "requests": {("default", "reviews-v2", "200"): 3.0, ("default", "reviews-v2", "503"): 1.0},
        "latency": {
            ("default", "reviews-v2", "10"): 2.0,
            ("default", "reviews-v2", "100"): 4.0,
            ("default", "reviews-v2", "+Inf"): 4.0,
        },
        "tcp_opened": {("default", "reviews-v2"): 5.0},
        "tcp_closed": {("default", "reviews-v2"): 3.0},
    }
    inventory = stat.Inventory({("default", "reviews-v2"): (1, 1), ("default", "details-v1"): (1, 2)})
    rows = stat.stat_rows(query, results, inventory)
    assert [r.name for r in rows] == ["details-v1", "reviews-v2"]
    assert rows[1].success == 0.75 and rows[1].rps == 4.0 and rows[1].tcp_conn == 2
    assert rows[1].latency == pytest.approx((10.0, 91.0, 98.2))
    assert stat.stat_table(rows) == [
        stat.STAT_COLUMNS,
        ("details-v1", "1/2", "-", "-", "-", "-", "-", "-"),
        ("reviews-v2", "1/1", "75.00%", "4.0rps", "10ms", "91ms", "98ms", "2"),
    ]
    assert stat.stat_json(rows)[1]["latency_ms_p50"] == 10.0


def test_a_name_keeps_only_its_row() -> None:
    results = {"requests": {("default", "a", "200"): 1.0, ("default", "b", "200"): 1.0, ("other", "a", "200"): 1.0}}
    rows = stat.stat_rows(stat.StatQuery("deploy", "default", "a"), results, stat.Inventory())
    assert [(r.namespace, r.name) for r in rows] == [("default", "a")]


def test_edges_are_secured_only_when_all_their_traffic_is_mutual_tls() -> None:
    results = {
        "requests": {
            ("productpage-v1", "default", "reviews-v2", "default", "mutual_tls"): 4.0,
            ("reviews-v2", "default", "ratings-v1", "default", "mutual_tls"): 2.0,
            ("reviews-v2", "default", "ratings-v1", "default", "none"): 1.0,
            ("gone", "default", "ratings-v1", "default", "none"): 0.0,
        },
        "tcp": {("mongo-client", "default", "mongodb-v1", "default", "none"): 1.0},
    }
    assert stat.edges_table(stat.edges(stat.EdgesQuery(), results)) == [
        stat.EDGE_COLUMNS,
        ("mongo-client", "mongodb-v1", "default", "default", "×"),
        ("productpage-v1", "reviews-v2", "default", "default", "√"),
        ("reviews-v2", "ratings-v1", "default", "default", "×"),
    ]


def test_pod_edges_join_what_the_client_pod_and_the_server_pod_reported() -> None:
    [server, server_tcp, client, client_tcp] = stat.EdgesQuery("po").plan()
    assert (server.matchers["reporter"], client.matchers["reporter"]) == ("destination", "source")
    assert server.by[-3:] == ("namespace", "pod", "connection_security_policy") and client.by[-2:] == (
        "namespace",
        "pod",
    )
    results = {
        "requests": {
            ("productpage-v1", "default", "reviews-v2", "default", "reviews-v2-0", "mutual_tls"): 4.0,
            ("productpage-v1", "default", "reviews-v2", "default", "reviews-v2-1", "mutual_tls"): 3.0,
            ("unknown", "unknown", "reviews-v2", "default", "reviews-v2-1", "none"): 1.0,  # no sidecar: no pod
        },
        "client_requests": {("productpage-v1", "default", "reviews-v2", "default", "productpage-v1-0"): 7.0},
    }
    assert stat.edges_table(stat.edges(stat.EdgesQuery("po"), results)) == [
        stat.EDGE_COLUMNS,
        ("productpage-v1-0", "reviews-v2-0", "default", "default", "√"),
        ("productpage-v1-0", "reviews-v2-1", "default", "default", "√"),
    ]
