"""The dashboard's JSON API, served by a real control plane (`plait control-plane --dashboard-port`), reading
its config, registry and proxy status, and a stand-in Prometheus that answers the graph's PromQL with canned
series (the real Prometheus is in tests/observe/test_dashboard.py). Access: from another address than the
host's, only with the admin token."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from plait.client import ClientError
from plait.dashboard import Backends, Dashboard


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


def test_series_from_prometheus(control_plane):
    _, dashboard = control_plane
    edge = "workload:default:productpage-v1->workload:default:reviews-v1"
    before = time.time()
    answer = dashboard.get(f"/api/graph/series?namespace=default&window=1m&type=workload&edge={edge}")
    assert (answer["edge"], answer["step"], answer["source"]) == (edge, 5, "prometheus")
    points = answer["points"]
    assert len(points) == 13 and all(b["t"] - a["t"] == 5 for a, b in zip(points, points[1:]))
    assert before - 65 <= points[0]["t"] <= before - 55
    assert points[0] == {"t": points[0]["t"], "rps": 0.0, "errorRate": None, "p95": None, "tcpBytes": None}
    assert {(p["rps"], p["errorRate"]) for p in points[1:]} == {(4.0, 25.0)}
    node = dashboard.get("/api/graph/series?window=1m&type=workload&node=workload:default:reviews-v1")
    assert {(p["rpsIn"], p["rpsOut"], p["errorRate"]) for p in node["points"][1:]} == {(4.0, 0.0, 25.0)}
    with pytest.raises(ClientError, match="give one of node=ID or edge=ID"):
        dashboard.get("/api/graph/series?window=1m")


def test_graph_rejects_a_bad_window(control_plane):
    _, dashboard = control_plane
    with pytest.raises(ClientError, match="window='2h': expected one of 1m, 5m, 1h"):
        dashboard.get("/api/graph?window=2h")


def test_workloads_services_config_namespaces(control_plane):
    _, dashboard = control_plane
    workloads = {w["name"]: w for w in dashboard.get("/api/workloads")["workloads"]}
    assert set(workloads) == {"reviews-v1-0", "ingress-0"}
    assert (workloads["reviews-v1-0"]["address"], workloads["reviews-v1-0"]["workload"]) == ("127.0.0.9", "reviews-v1")
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
    # nothing is fetched from elsewhere: the only URL is SVG's namespace, a name (the page tests catch requests)
    assert re.findall(r"https?://[^\"'\s]*", dashboard.get("/static/app.js")) == ["http://www.w3.org/2000/svg"]


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


NOW_US = int(time.time() * 1_000_000) - 1_000_000  # a second ago: inside the collector's lookback
SPANS = [
    {
        "traceId": "a" * 16,
        "id": "1" * 16,
        "kind": "SERVER",
        "name": "productpage.default.svc.cluster.local:9080/productpage",
        "timestamp": NOW_US,
        "duration": 30_000,
        "localEndpoint": {"serviceName": "productpage.default"},
        "tags": {"http.status_code": "200"},
    },
    {
        "traceId": "a" * 16,
        "id": "2" * 16,
        "parentId": "1" * 16,
        "kind": "CLIENT",
        "name": "reviews.default.svc.cluster.local:9080/*",
        "timestamp": NOW_US + 5_000,
        "duration": 20_000,
        "localEndpoint": {"serviceName": "productpage.default"},
        "tags": {"http.status_code": "503", "error": "true"},
    },
]


def test_traces_from_the_collector(control_plane):
    plane, dashboard = control_plane
    plane.zipkin.request("POST", "/api/v2/spans", json.dumps(SPANS).encode(), "application/json")
    assert dashboard.get("/api/traces/services") == {"services": ["productpage.default"]}
    [trace] = dashboard.get("/api/traces?service=productpage.default&minDuration=10")["traces"]
    assert (trace["traceId"], trace["name"], trace["durationMs"], trace["spans"], trace["errors"]) == (
        "a" * 16,
        "productpage.default.svc.cluster.local:9080/productpage",
        30.0,
        2,
        1,
    )
    assert dashboard.get("/api/traces?service=productpage.default&minDuration=31")["traces"] == []
    waterfall = dashboard.get(f"/api/traces/{'a' * 16}")
    assert [(s["depth"], s["offsetMs"], s["durationMs"], s["status"], s["error"]) for s in waterfall["spans"]] == [
        (0, 0.0, 30.0, "200", False),
        (1, 5.0, 20.0, "503", True),
    ]
    with pytest.raises(ClientError, match="404"):
        dashboard.get(f"/api/traces/{'b' * 16}")


@pytest.mark.parametrize("discovery", ["file_sd", "http_sd"])
def test_without_prometheus_rates_come_from_the_proxies_own_stats(control_plane, edge_labels, tmp_path, discovery):
    """A stand-in proxy whose /stats/prometheus (Envoy's text format) grows by 10 requests (one 503) per read;
    the dashboard, given instead of Prometheus the proxies to read as the local mesh names them (a file_sd
    file) or as istiod on Kubernetes does (http_sd at /api/v1/prometheus/targets), reads it every 0.5 s."""
    plane, _ = control_plane
    common = ",".join(f'{k}="{v}"' for k, v in edge_labels.items())
    reads = []
    groups = []

    async def stats(_: web.Request) -> web.Response:
        reads.append(1)
        n = len(reads)
        text = (
            "# TYPE istio_requests_total counter\n"
            f'istio_requests_total{{reporter="source",{common},response_code="200"}} {9 * n}\n'
            f'istio_requests_total{{reporter="source",{common},response_code="503"}} {n}\n'
            "# TYPE envoy_server_uptime gauge\n"
            "envoy_server_uptime{} 12\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def http_sd(_: web.Request) -> web.Response:
        return web.json_response(groups)

    async def main() -> tuple[dict, dict, int]:
        proxy = web.Application()
        proxy.add_routes([web.get("/stats/prometheus", stats), web.get("/api/v1/prometheus/targets", http_sd)])
        proxy_runner = web.AppRunner(proxy, access_log=None)
        await proxy_runner.setup()
        await web.TCPSite(proxy_runner, "127.0.0.1", 0).start()
        address = "{}:{}".format(*proxy_runner.addresses[0])
        labels = {"namespace": "default", "pod": "productpage-v1-0", "__metrics_path__": "/stats/prometheus"}
        groups.append({"targets": [address], "labels": labels})
        targets = tmp_path / "envoy-stats.json"
        targets.write_text(json.dumps(groups))
        where = str(targets) if discovery == "file_sd" else f"http://{address}/api/v1/prometheus/targets"
        board = Dashboard(Backends(api=f"http://127.0.0.1:{plane.http_port}", targets=where), read_interval=0.5)
        runner = web.AppRunner(board.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = "http://{}:{}/api/graph".format(*runner.addresses[0])
        edge = "workload:default:productpage-v1->workload:default:reviews-v1"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(url, params={"type": "workload"}) as response:  # before two reads: not yet
                    assert (
                        response.status == 503
                        and "first rates come after two reads" in (await response.json())["error"]
                    )
                await asyncio.sleep(5.6)  # 11 reads: over 5 s, one step of the 1m series
                async with session.get(url, params={"type": "workload"}) as response:
                    assert response.status == 200
                    graph = await response.json()
                series_params = {"type": "workload", "window": "1m", "edge": edge}
                async with session.get(url + "/series", params=series_params) as response:
                    assert response.status == 200
                    return graph, await response.json(), len(board.proxies.history)
        finally:
            await runner.cleanup()
            await proxy_runner.cleanup()

    answer, over_time, kept = asyncio.run(main())
    assert answer["source"] == "proxies"
    [edge] = answer["edges"]
    assert (edge["source"], edge["target"], edge["errorRate"], edge["health"]) == (
        "workload:default:productpage-v1",
        "workload:default:reviews-v1",
        10.0,
        "degraded",
    )
    assert edge["rps"] == pytest.approx(20.0, rel=0.3)  # 10 requests per 0.5 s, as timed by the event loop
    # over time: the 1m series' points are 5 s apart, the rates between the first read and one 5 s later
    assert over_time["source"] == "proxies" and kept >= 11
    [point] = over_time["points"]
    assert point["errorRate"] == 10.0 and point["rps"] == pytest.approx(20.0, rel=0.3)


TESTDATA = Path(__file__).parent / "testdata"


def grown(text: str, n: int) -> str:
    """Envoy's text with every Istio sample's value times `n`: the counters of the n-th read."""
    return re.sub(r"^(istio_.*) (\S+)$", lambda m: f"{m[1]} {float(m[2]) * n:g}", text, flags=re.MULTILINE)


def test_without_the_addon_the_proxies_envoy_text_is_read_through_http_sd(control_plane):
    """As istiod on Kubernetes without the Prometheus addon: the targets come from an http_sd URL (as istiod's
    /api/v1/prometheus/targets lists annotated pods: POD_IP:PORT, the path in __metrics_path__), and each proxy
    answers real Envoy text (testdata: a client and a server sidecar), its counters growing read by read."""
    plane, _ = control_plane
    reads = {"client": 0, "server": 0}

    async def stats(request: web.Request) -> web.Response:
        proxy = request.match_info["proxy"]
        reads[proxy] += 1
        text = grown((TESTDATA / f"{proxy}-stats.prom").read_text(), reads[proxy])
        return web.Response(text=text, content_type="text/plain")

    groups: list[dict] = []

    async def http_sd(_: web.Request) -> web.Response:
        return web.json_response(groups)

    async def main() -> tuple[dict, dict]:
        proxies = web.Application()
        proxies.add_routes(
            [
                web.get("/{proxy}/stats/prometheus", stats),
                web.get("/api/v1/prometheus/targets", http_sd),
            ]
        )
        proxies_runner = web.AppRunner(proxies, access_log=None)
        await proxies_runner.setup()
        await web.TCPSite(proxies_runner, "127.0.0.1", 0).start()
        address = "{}:{}".format(*proxies_runner.addresses[0])
        for proxy in ("client", "server"):
            labels = {"app": proxy, "namespace": "default", "pod": f"{proxy}-v1-0"}
            groups.append(
                {"targets": [address], "labels": {**labels, "__metrics_path__": f"/{proxy}/stats/prometheus"}}
            )
        backends = Backends(
            api=f"http://127.0.0.1:{plane.http_port}", targets=f"http://{address}/api/v1/prometheus/targets"
        )
        runner = web.AppRunner(Dashboard(backends, read_interval=0.5).app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = "http://{}:{}/api/graph".format(*runner.addresses[0])
        try:
            await asyncio.sleep(1.5)
            async with aiohttp.ClientSession() as session:
                async with session.get(url, params={"type": "workload"}) as response:
                    assert response.status == 200
                    graph = await response.json()
                async with session.get(url, params={"type": "versionedApp"}) as response:
                    assert response.status == 200
                    return graph, await response.json()
        finally:
            await runner.cleanup()
            await proxies_runner.cleanup()

    workloads, apps = asyncio.run(main())
    assert workloads["source"] == "proxies"
    [edge] = workloads["edges"]
    assert (edge["id"], edge["protocol"], edge["errorRate"], edge["health"], edge["mtls"]) == (
        "workload:default:client-v1->workload:default:server-v1",
        "http",
        0.0,
        "healthy",
        True,  # the server's report: mutual_tls
    )
    assert edge["rps"] == pytest.approx(8.0, rel=0.3)  # 4 more requests per 0.5 s
    assert [n["name"] for n in apps["nodes"]] == ["client v1", "server v1"]
