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
from plait.dashboard import graph
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


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers the graph's request query (exactly as `graph.queries` builds it) with two series (200s and 503s)
    and its security query with mutual TLS, every other query with nothing: the graph in test_api shows the
    edge only if the PromQL matched."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
        result = []
        if query == QUERIES["requests"]:
            result = [
                {"metric": {**SERIES, "response_code": "200"}, "value": [0, "3"]},
                {"metric": {**SERIES, "response_code": "503"}, "value": [0, "1"]},
            ]
        elif query == QUERIES["security"]:
            result = [{"metric": {**SERIES, "connection_security_policy": "mutual_tls"}, "value": [0, "4"]}]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
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
