"""Istio's metrics in a real Prometheus (Debian's, scraping every proxy of the shared Bookinfo demo every
second): counts equal what the apps served, Istio's exact label set, mutual TLS and the caller's identity,
Istio's fault-injection samples seen in PromQL, Kiali's graph query giving Bookinfo's edges, and
`plait stat` / `plait edges` / `plait dashboard prometheus` on the demo, with and without Prometheus.

Config applied here is deleted again at the end of each test: other modules share the mesh."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from plait.client import Http
from plait.runtime.local import State
from plait.testing.live import wait_until
from plait.testing.localmesh import Browser

NETWORKING = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo" / "networking"
# Istio's standard labels of istio_requests_total (istio.io, "Istio Standard Metrics"), less
# grpc_response_status: empty on HTTP, and Prometheus stores no empty label
ISTIO_HTTP_LABELS = {
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
}
# what the scrape adds: Prometheus' own, the target's namespace and pod, the pod's labels
TARGET_LABELS = {"__name__", "job", "instance", "namespace", "pod", "app", "version", "service_istio_io_workload_name"}
# Kiali's namespace-graph query for traffic into a namespace (kiali/kiali graph/telemetry/istio: destination
# telemetry, by these labels, "> 0", rounded; its graph's duration here 60 s)
KIALI_GRAPH = (
    'round(sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="default"} [60s])) by '
    "(source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,"
    "destination_cluster,destination_service_namespace,destination_service,destination_service_name,"
    "destination_workload_namespace,destination_workload,destination_canonical_service,"
    "destination_canonical_revision,request_protocol,response_code,grpc_response_status,response_flags) > 0,0.001)"
)
V2_DESTINATION = 'istio_requests_total{reporter="destination",destination_workload="reviews-v2"}'
V2_SOURCE = 'istio_requests_total{reporter="source",destination_workload="reviews-v2"}'
RATINGS_FROM_V2 = '{reporter="source",source_workload="reviews-v2",destination_service_name="ratings"}'


class Prometheus:
    def __init__(self, url: str):
        self.api = Http(url, what="Prometheus", timeout=10)

    def query(self, promql: str) -> list[dict]:
        answer = self.api.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def total(self, promql: str) -> float:
        """The sum of an instant vector's values (0 when it is empty)."""
        return sum(float(r["value"][1]) for r in self.query(promql))


@pytest.fixture(scope="module")
def prometheus(bookinfo) -> Prometheus:
    state = State.load(bookinfo.state_dir)
    assert state.prometheus == "http://127.0.0.1:9090", "the demo runs Prometheus on 9090 (apt-get install prometheus)"
    return Prometheus(state.prometheus)


def page_loads(browser: Browser, count: int, parallel: int = 4) -> list[int]:
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda _: browser.page(timeout=30).status, range(count)))


def spread_page_loads(browser: Browser, count: int, seconds: float) -> list[int]:
    """Page loads over `seconds`: a rate() needs a series to grow between scrapes, and a series that a
    burst creates within one scrape interval has not grown yet (Prometheus' semantics, Kiali's too)."""
    statuses = []
    for _ in range(count):
        statuses.append(browser.page(timeout=30).status)
        time.sleep(seconds / count)
    return statuses


def served(bookinfo, pod: str, path: str) -> int:
    """How many requests for `path…` the app itself logged (its own access lines, not Envoy's)."""
    log = (bookinfo.state_dir / "logs" / f"{pod}.log").read_text(errors="replace")
    return len(re.findall(rf'"GET {re.escape(path)}[^"]*" \d+ ', log))


@contextmanager
def applied(bookinfo, tmp_path: Path, *docs: tuple[str, dict | None]) -> Iterator[None]:
    """`plait apply` Istio's samples (by file name; with a dict: that sample changed), `plait delete` after."""
    files = []
    for name, doc in docs:
        if doc is None:
            files.append(NETWORKING / name)
        else:
            files.append(tmp_path / name)
            files[-1].write_text(yaml.safe_dump(doc))
    args = [a for f in files for a in ("-f", str(f))]
    result = bookinfo.plait("apply", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield
    finally:
        result = bookinfo.plait("delete", *args)
        assert result.returncode == 0, result.stdout + result.stderr


def ratings_sample(name: str, fault: dict) -> dict:
    """Istio's ratings fault sample (jason's requests to ratings v1 get `fault`) with the fault changed."""
    doc = yaml.safe_load((NETWORKING / name).read_text())
    assert "fault" in doc["spec"]["http"][0], f"{name}: the first route is jason's fault"
    doc["spec"]["http"][0]["fault"] = fault
    return doc


def jason(bookinfo) -> Browser:
    browser = Browser(bookinfo.ingress_port)
    browser.login("jason")
    return browser


JASON_TO_V2 = (("destination-rule-all.yaml", None), ("virtual-service-reviews-jason-v2-v3.yaml", None))


# ------------------------------------------------------------------ Prometheus itself


def test_demo_runs_prometheus_scraping_every_proxy_and_the_control_plane(bookinfo, prometheus) -> None:
    assert "Prometheus: http://127.0.0.1:9090" in bookinfo.demo_output
    assert "Prometheus http://127.0.0.1:9090" in bookinfo.plait("status").stdout
    shown = bookinfo.plait("dashboard", "prometheus", "--no-browser")
    assert shown.returncode == 0 and shown.stdout.strip() == "http://127.0.0.1:9090", shown.stdout + shown.stderr
    state = State.load(bookinfo.state_dir)
    config = yaml.safe_load((bookinfo.state_dir / "prometheus" / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "1s"

    def all_up() -> bool:
        targets = prometheus.api.get("/api/v1/targets")["data"]["activeTargets"]
        by_job = {(t["labels"]["job"], t["labels"].get("pod", "")): t["health"] for t in targets}
        return by_job == {("envoy-stats", p.name): "up" for p in state.pods} | {("pilot", ""): "up"}

    wait_until(all_up, 20, "every proxy (envoy-stats) and the control plane (pilot) scraped", interval=0.5)
    assert prometheus.total('up{job="envoy-stats",namespace="default",app="reviews",version="v2"}') == 1


# ------------------------------------------------------------------ counts and labels


def test_requests_to_reviews_v2_equal_what_the_app_served(bookinfo, prometheus, tmp_path) -> None:
    with applied(bookinfo, tmp_path, *JASON_TO_V2):
        browser = jason(bookinfo)
        wait_until(lambda: browser.stars() == "black", 20, "jason routed to reviews v2", interval=0.2)
        time.sleep(2)  # the routing test's own page loads are scraped
        app_before = served(bookinfo, "reviews-v2-0", "/reviews/")
        destination_before, source_before = prometheus.total(V2_DESTINATION), prometheus.total(V2_SOURCE)
        assert page_loads(browser, 30) == [200] * 30
        app = served(bookinfo, "reviews-v2-0", "/reviews/") - app_before
        assert app >= 30

        def counted() -> float:
            return prometheus.total(V2_DESTINATION) - destination_before

        wait_until(lambda: counted() >= app - 1, 15, f"Prometheus to count the {app} requests reviews-v2 served")
        time.sleep(2)  # nothing more arrives
        assert abs(counted() - app) <= 1
        assert abs((prometheus.total(V2_SOURCE) - source_before) - counted()) <= 1


def test_series_carry_istios_labels_mutual_tls_and_the_callers_identity(bookinfo, prometheus) -> None:
    wait_until(lambda: prometheus.query(V2_DESTINATION), 15, "a reviews-v2 series")
    series = prometheus.query(
        'istio_requests_total{reporter="destination",destination_workload="reviews-v2",'
        'source_workload="productpage-v1",response_code="200"}'
    )
    assert series, "productpage's calls to reviews-v2"
    labels = series[0]["metric"]
    assert set(labels) - TARGET_LABELS == ISTIO_HTTP_LABELS
    assert labels["connection_security_policy"] == "mutual_tls"
    assert labels["source_principal"] == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert labels["destination_principal"] == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    assert (labels["namespace"], labels["pod"], labels["app"]) == ("default", "reviews-v2-0", "reviews")
    assert labels["destination_service"] == "reviews.default.svc.cluster.local"


# ------------------------------------------------------------------ Istio's fault-injection samples


def test_an_abort_at_50_percent_shows_as_half_5xx_with_flag_fi(bookinfo, prometheus, tmp_path) -> None:
    abort = ratings_sample("virtual-service-ratings-test-abort.yaml", {"abort": {"percent": 50, "httpStatus": 500}})
    with applied(bookinfo, tmp_path, *JASON_TO_V2, ("virtual-service-ratings-test-abort.yaml", abort)):
        browser = jason(bookinfo)
        wait_until(lambda: browser.stars() == "ratings-unavailable", 20, "jason's ratings aborted (some)", interval=0.2)
        time.sleep(2)
        by = "sum by (response_code, response_flags) (istio_requests_total" + RATINGS_FROM_V2 + ")"
        before = {
            (r["metric"]["response_code"], r["metric"]["response_flags"]): float(r["value"][1])
            for r in prometheus.query(by)
        }
        loads = 240
        assert page_loads(browser, loads) == [200] * loads  # the page survives: "ratings unavailable"

        def delta() -> dict[tuple[str, str], float]:
            now = {
                (r["metric"]["response_code"], r["metric"]["response_flags"]): float(r["value"][1])
                for r in prometheus.query(by)
            }
            return {k: v - before.get(k, 0.0) for k, v in now.items() if v - before.get(k, 0.0) > 0}

        wait_until(lambda: sum(delta().values()) >= loads, 15, f"{loads} ratings calls counted", interval=0.5)
        counts = delta()
    assert set(counts) == {("200", "-"), ("500", "FI")}, counts
    ratio = counts[("500", "FI")] / sum(counts.values())
    assert 0.4 <= ratio <= 0.6, counts


def test_a_2s_delay_shows_as_p95_between_1_and_2_5_s(bookinfo, prometheus, tmp_path) -> None:
    delay = ratings_sample("virtual-service-ratings-test-delay.yaml", {"delay": {"percent": 100, "fixedDelay": "2s"}})
    with applied(bookinfo, tmp_path, *JASON_TO_V2, ("virtual-service-ratings-test-delay.yaml", delay)):
        browser = jason(bookinfo)

        def slow() -> bool:
            started = time.monotonic()
            browser.page(timeout=30)
            return time.monotonic() - started >= 2

        wait_until(slow, 20, "jason's ratings delayed", interval=0.2)
        time.sleep(6)  # Envoy exports histograms as of its last stats flush (every 5 s)
        start = time.time()
        loads = 12
        assert page_loads(browser, loads, parallel=6) == [200] * loads
        buckets = "istio_request_duration_milliseconds_bucket" + RATINGS_FROM_V2
        since = f"(sum by (le) ({buckets}) - (sum by (le) ({buckets} @ {start:.3f}) or sum by (le) ({buckets}) * 0))"
        calls = buckets[:-1] + ',le="+Inf"}'
        wait_until(
            lambda: prometheus.total(f"sum({calls}) - (sum({calls} @ {start:.3f}) or vector(0))") >= loads,
            20,
            f"the {loads} delayed calls in the histogram",
            interval=0.5,
        )
        [p95] = prometheus.query(f"histogram_quantile(0.95, {since})")
    assert 1000 <= float(p95["value"][1]) <= 2500, p95


# ------------------------------------------------------------------ Kiali's graph


def test_kialis_graph_query_returns_bookinfos_edges(bookinfo, prometheus) -> None:
    browser = Browser(bookinfo.ingress_port)
    assert spread_page_loads(browser, 30, 6) == [200] * 30  # anonymous, no routing rules: every reviews version

    def edges() -> set[tuple[str, str]]:
        return {
            (r["metric"]["source_workload"], r["metric"]["destination_workload"]) for r in prometheus.query(KIALI_GRAPH)
        }

    expected = {
        ("istio-ingressgateway", "productpage-v1"),
        ("productpage-v1", "details-v1"),
        ("productpage-v1", "reviews-v1"),
        ("productpage-v1", "reviews-v2"),
        ("productpage-v1", "reviews-v3"),
        ("reviews-v2", "ratings-v1"),
        ("reviews-v3", "ratings-v1"),
    }
    with contextlib.suppress(TimeoutError):  # then the assertion shows which edges are missing
        wait_until(lambda: edges() >= expected, 15, "Bookinfo's edges in Kiali's query", interval=0.5)
    assert edges() == expected
    services = {r["metric"]["destination_service"] for r in prometheus.query(KIALI_GRAPH)}
    assert services == {f"{s}.default.svc.cluster.local" for s in ("productpage", "details", "reviews", "ratings")}


# ------------------------------------------------------------------ plait stat / edges / dashboard


def _table(text: str) -> dict[str, dict[str, str]]:
    lines = [line.split() for line in text.strip().splitlines()]
    return {row[0]: dict(zip(lines[0], row)) for row in lines[1:]}


def test_stat_and_edges_from_prometheus(bookinfo, prometheus) -> None:
    assert spread_page_loads(Browser(bookinfo.ingress_port), 20, 4) == [200] * 20
    time.sleep(2)
    table = bookinfo.plait("stat", "deploy")
    assert table.returncode == 0, table.stdout + table.stderr
    assert table.stdout.splitlines()[0].split() == [
        "NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN",
    ]  # fmt: skip
    rows = _table(table.stdout)
    assert set(rows) == {"productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"}
    assert rows["productpage-v1"]["MESHED"] == "1/1" and rows["productpage-v1"]["SUCCESS"] == "100.00%"
    assert rows["productpage-v1"]["RPS"].endswith("rps") and rows["productpage-v1"]["LATENCY_P50"].endswith("ms")
    # the same rate as Prometheus computes it, as JSON
    [row] = json.loads(bookinfo.plait("stat", "deploy", "productpage-v1", "-o", "json").stdout)
    promql = 'sum(rate(istio_requests_total{reporter="destination",destination_workload="productpage-v1"}[1m]))'
    assert row["rps"] == pytest.approx(prometheus.total(promql), rel=0.2)
    assert row["success"] == 1.0 and row["latency_ms_p95"] > 0
    from_page = _table(bookinfo.plait("stat", "deploy", "--from", "deploy/productpage-v1").stdout)
    assert from_page["details-v1"]["SUCCESS"] == "100.00%" and from_page["ratings-v1"]["RPS"] == "-"
    assert set(_table(bookinfo.plait("stat", "svc").stdout)) >= {"productpage", "details", "reviews", "ratings"}
    assert _table(bookinfo.plait("stat", "po", "reviews-v2-0").stdout)["reviews-v2-0"]["MESHED"] == "1/1"
    edges = bookinfo.plait("edges", "deploy")
    assert edges.stdout.splitlines()[0].split() == ["SRC", "DST", "SRC_NS", "DST_NS", "SECURED"]
    assert ["productpage-v1", "reviews-v2", "default", "default", "√"] in [
        line.split() for line in edges.stdout.splitlines()
    ]


def test_stat_without_prometheus_reads_the_proxies_twice(bookinfo) -> None:
    browser, stop = Browser(bookinfo.ingress_port), threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            browser.page()
            time.sleep(0.1)

    load = threading.Thread(target=traffic)
    load.start()
    try:
        result = bookinfo.plait("stat", "deploy", "--direct", "-o", "json")
    finally:
        stop.set()
        load.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--direct: rates from two reads of every proxy's /stats/prometheus" in result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["productpage-v1"]["rps"] > 0 and rows["productpage-v1"]["success"] == 1.0
    assert rows["productpage-v1"]["latency_ms_p50"] is not None
    edges = bookinfo.plait("edges", "--direct")
    assert ["productpage-v1", "details-v1", "default", "default", "√"] in [
        line.split() for line in edges.stdout.splitlines()
    ]
