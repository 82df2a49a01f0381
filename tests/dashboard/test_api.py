"""The dashboard's JSON API, served by a real control plane (`plait control-plane --dashboard-port`), reading
its config, registry and proxy status, and a stand-in Prometheus that answers the graph's PromQL with canned
series (the real Prometheus is in tests/observe/test_dashboard.py). Access: from another address than the
host's, only with the admin token."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import pytest
from aiohttp import web

from plait.client import ClientError, Http
from plait.dashboard import Backends, Dashboard, graph
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
    "connection_security_policy": "mutual_tls",
}
REQUESTS = graph.queries(graph.GraphQuery(window="5m"))["requests"]


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers the graph's request query with two series (200s and 503s), every other query with nothing."""

    asked: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
        self.asked.append(query)
        result = []
        if query == REQUESTS:
            result = [
                {"metric": {**SERIES, "response_code": "200"}, "value": [0, "3"]},
                {"metric": {**SERIES, "response_code": "503"}, "value": [0, "1"]},
            ]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory, prometheus) -> Iterator[tuple[ControlPlaneProcess, Http]]:
    workdir = tmp_path_factory.mktemp("dashboard")
    (workdir / "mesh").mkdir()
    (workdir / "mesh" / "bookinfo.yaml").write_text(CONFIG)
    port = free_port()
    plane = ControlPlaneProcess(
        workdir / "mesh", workdir, extra_args=["--dashboard-port", str(port), "--dashboard-prometheus", prometheus]
    )
    plane.start()
    try:
        plane.register("reviews-v1-0", "127.0.0.9", {"app": "reviews", "version": "v1"}, {"http": 9080})
        plane.register("ingress-0", "127.0.0.10", {"istio": "ingressgateway"}, namespace="istio-system")
        yield plane, Http(f"http://127.0.0.1:{port}")
    finally:
        plane.stop()


def test_graph_from_prometheus(control_plane):
    _, dashboard = control_plane
    answer = dashboard.get("/api/graph?namespace=default&window=5m&type=workload")
    assert [n["id"] for n in answer["nodes"]] == ["workload:default:productpage-v1", "workload:default:reviews-v1"]
    [edge] = answer["edges"]
    assert (edge["source"], edge["target"], edge["rps"], edge["errorRate"], edge["health"], edge["mtls"]) == (
        "workload:default:productpage-v1",
        "workload:default:reviews-v1",
        4.0,
        25.0,
        "failing",
        True,
    )
    assert REQUESTS in FakePrometheus.asked


def test_graph_rejects_a_bad_window(control_plane):
    _, dashboard = control_plane
    with pytest.raises(ClientError, match="window='2h': expected one of 1m, 5m, 1h"):
        dashboard.get("/api/graph?window=2h")


def test_workloads_services_config_namespaces(control_plane):
    _, dashboard = control_plane
    workloads = {w["name"]: w for w in dashboard.get("/api/workloads")["workloads"]}
    assert set(workloads) == {"reviews-v1-0", "ingress-0"}
    assert workloads["reviews-v1-0"]["address"] == "127.0.0.9"
    assert (workloads["reviews-v1-0"]["sidecar"], workloads["reviews-v1-0"]["sync"]) == (False, "-")
    assert workloads["ingress-0"]["gateway"] is True
    assert [w["name"] for w in dashboard.get("/api/workloads?namespace=istio-system")["workloads"]] == ["ingress-0"]
    [service] = dashboard.get("/api/services?namespace=default")["services"]
    assert (service["name"], service["kind"], service["ports"]) == ("reviews", "Service", [9080])
    objects = {(o["kind"], o["name"]): o for o in dashboard.get("/api/config")["objects"]}
    vs = objects[("VirtualService", "reviews")]
    # the subset v9 of reviews exists nowhere: the store's warning, and analysis' IST0101 (an error: invalid)
    assert vs["valid"] is False
    assert [(m["level"], m["code"]) for m in vs["messages"]] == [("Warning", ""), ("Error", "IST0101")]
    assert all("v9" in m["message"] for m in vs["messages"])
    assert ("Service", "reviews") not in objects  # Services are on the Services page, as Kiali
    assert dashboard.get("/api/namespaces") == {"namespaces": ["default", "istio-system"]}


def test_page_and_assets_are_served(control_plane):
    _, dashboard = control_plane
    page = dashboard.get("/")
    assert "static/vendor/cytoscape.min.js" in page and 'id="graph-edges"' in page
    for asset in ("app.js", "style.css", "vendor/cytoscape.min.js", "vendor/dagre.min.js", "vendor/cytoscape-dagre.js"):
        assert len(dashboard.get(f"/static/{asset}")) > 1000, asset
    assert "http://" not in dashboard.get("/static/app.js")  # nothing is fetched from elsewhere


def test_tap_errors_pass_through(control_plane):
    _, dashboard = control_plane
    with pytest.raises(ClientError, match="cannot tap 'nonsense': expected one of deploy/NAME"):
        dashboard.get("/api/tap?target=nonsense")


def test_without_prometheus_metrics_answer_503_and_lists_still_work(tmp_path):
    async def main() -> None:
        app = Dashboard(Backends(api="http://127.0.0.1:1", prometheus=None)).app()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = "http://{}:{}".format(*runner.addresses[0])
        try:
            async with aiohttp.ClientSession() as session, session.get(url + "/api/graph") as response:
                body = await response.json()
                assert response.status in (502, 503), body  # the control plane or Prometheus, both absent
                assert "did not answer" in body["error"] or "no Prometheus" in body["error"]
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_other_hosts_need_the_admin_token(tmp_path):
    token_file = tmp_path / "api-token"
    token_file.write_text("admin-0123456789\n")

    async def main() -> None:
        app = Dashboard(Backends(api="http://127.0.0.1:1", token_file=token_file)).app()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.2", 0).start()
        url = "http://{}:{}/".format(*runner.addresses[0])

        async def status(source: str, token: str | None) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            async with aiohttp.ClientSession(connector=connector) as session, session.get(url, headers=headers) as r:
                return r.status

        try:
            assert await status("127.0.0.3", None) == 401
            assert await status("127.0.0.3", "admin-012345678") == 401
            assert await status("127.0.0.3", "admin-0123456789") == 200
            assert await status("127.0.0.1", None) == 200
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_tap_streams_through(control_plane):
    _, dashboard = control_plane

    async def first_line() -> dict:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
            session.get(dashboard.base + "/api/tap", params={"target": "deploy/reviews-v1"}) as response,
        ):
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/x-ndjson"
            return json.loads(await response.content.readline())

    line = asyncio.run(first_line())
    assert (line["type"], line["target"], line["proxies"]) == ("tapping", "deploy/reviews-v1", [])
