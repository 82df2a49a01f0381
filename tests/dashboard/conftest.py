"""A real control plane serving the dashboard (`plait control-plane --dashboard-port`) with Bookinfo-like config,
two registered pods, a trace collector on a free port, and a stand-in Prometheus answering the graph's request
query with canned series (the real Prometheus is in tests/observe/test_dashboard.py)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from plait.client import Http
from plait.dashboard import graph, series
from plait.testing.live import ControlPlaneProcess, free_port

CONFIG = """apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v9}}]}]}
"""
SERIES = {
    "source_workload_namespace": "default",
    "source_workload": "productpage-v1",
    "source_canonical_service": "productpage",
    "source_canonical_revision": "v1",
    "destination_service_namespace": "default",
    "destination_service_name": "reviews",
    "destination_service": "reviews.default.svc.cluster.local",
    "destination_workload_namespace": "default",
    "destination_workload": "reviews-v1",
    "destination_canonical_service": "reviews",
    "destination_canonical_revision": "v1",
    "request_protocol": "http",
}
QUERIES = graph.queries(graph.GraphQuery(window="5m"))
RANGE_REQUESTS = series.asks()["requests"].promql("30s")  # the 1m series' request sums


def _answer(result_type: str, result: list) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}}).encode()


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers the graph's request query (exactly as `graph.queries` builds it) with two series (200s and 503s)
    and its security query with mutual TLS, and the same request query over 30 s in ``query_range`` (the 1m
    series) at every step but the first; every other query with nothing: the graph and series in test_api
    show the edge only if the PromQL matched."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urllib.parse.urlparse(self.path)
        params = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        query, result = params["query"], []
        if url.path == "/api/v1/query_range":  # the series: the same two series, at every step but the first
            times = series.steps(params)[1:]
            if query == RANGE_REQUESTS:
                result = [
                    {"metric": {**SERIES, "response_code": code}, "values": [[t, value] for t in times]}
                    for code, value in (("200", "3"), ("503", "1"))
                ]
            body = _answer("matrix", result)
        else:
            if query == QUERIES["requests"]:
                result = [
                    {"metric": {**SERIES, "response_code": "200"}, "value": [0, "3"]},
                    {"metric": {**SERIES, "response_code": "503"}, "value": [0, "1"]},
                ]
            elif query == QUERIES["security"]:
                result = [{"metric": {**SERIES, "connection_security_policy": "mutual_tls"}, "value": [0, "4"]}]
            body = _answer("vector", result)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


@pytest.fixture
def edge_labels() -> dict[str, str]:
    """The labels of productpage-v1's calls to reviews-v1 (what the stand-ins report)."""
    return dict(SERIES)


@pytest.fixture(scope="package")
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="package")
def control_plane(tmp_path_factory, prometheus) -> Iterator[tuple[ControlPlaneProcess, Http]]:
    workdir = tmp_path_factory.mktemp("dashboard")
    (workdir / "mesh").mkdir()
    (workdir / "mesh" / "bookinfo.yaml").write_text(CONFIG)
    port, zipkin = free_port(), free_port()
    args = ["--dashboard-port", str(port), "--dashboard-prometheus", prometheus, "--zipkin-port", str(zipkin)]
    plane = ControlPlaneProcess(workdir / "mesh", workdir, extra_args=args)
    plane.zipkin = Http(f"http://127.0.0.1:{zipkin}", what="the collector")
    plane.start()
    try:
        # labelled as the local mesh labels its pods: the workload (Deployment) name beside app and version
        reviews = {"app": "reviews", "version": "v1", "service.istio.io/workload-name": "reviews-v1"}
        plane.register("reviews-v1-0", "127.0.0.9", reviews, {"http": 9080})
        plane.register("ingress-0", "127.0.0.10", {"istio": "ingressgateway"}, namespace="istio-system")
        yield plane, Http(f"http://127.0.0.1:{port}")
    finally:
        plane.stop()
