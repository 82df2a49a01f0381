"""The mesh dashboard (`plait dashboard`) in real headless Chromium (Debian's, driven by Playwright) against the
shared Bookinfo demo under a steady, bounded load (page loads by an anonymous reader and by jason): the graph's
nodes are exactly the workloads that carry traffic as Prometheus reports it, each edge's requests/s is within
20 % of Prometheus' own figure, Istio's ratings abort sample (jason's calls to ratings get a 500 from the
calling sidecar: no ratings workload sees them, so the edge goes to the ratings service node, as in Kiali)
turns a ratings edge red within the page's refresh interval of the JSON API saying so, a selected edge's time series
ends at Prometheus' own rate and its traffic dots move, each page is screenshotted (test artefact and
docs/images/) and not blank, with no console error and no request to any other origin.

Config applied here is deleted again at the end: other modules share the mesh."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plait.client import Http
from plait.runtime.local import State
from plait.testing.chromium import chromium_page, chromium_path
from plait.testing.live import wait_until
from plait.testing.localmesh import Browser

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")

NETWORKING = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo" / "networking"
DOCS_IMAGES = Path(__file__).parents[2] / "docs" / "images"
REFRESH = 5  # seconds: the page's default auto refresh
BOOKINFO = {
    "istio-ingressgateway",
    "productpage-v1",
    "details-v1",
    "reviews-v1",
    "reviews-v2",
    "reviews-v3",
    "ratings-v1",
}
PAGES = ("graph", "workloads", "services", "config", "traces", "live")


class Load:
    """Page loads through the ingress gateway, anonymous and as jason in turn, about `per_second` a second, in
    a background thread for at most `limit` seconds (bounded: the machine is shared)."""

    def __init__(self, port: int, per_second: float = 4.0, limit: float = 420.0):
        self.readers = [Browser(port), Browser(port)]
        self.readers[1].login("jason")
        self.interval, self.limit = 1.0 / per_second, limit
        self.stop = threading.Event()
        self.statuses: dict[int, int] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        i = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                status = self.readers[i % 2].page(timeout=10).status
            except OSError:
                status = 0
            self.statuses[status] = self.statuses.get(status, 0) + 1
            i += 1
            self.stop.wait(self.interval)


@pytest.fixture(scope="module")
def load(bookinfo) -> Iterator[Load]:
    running = Load(bookinfo.ingress_port)
    running.thread.start()
    try:
        time.sleep(20)  # rates over the 1 m window need a few scrapes of growing counters
        yield running
    finally:
        running.stop.set()
        running.thread.join(15)


@pytest.fixture(scope="module")
def urls(bookinfo) -> tuple[str, str]:
    state = State.load(bookinfo.state_dir)
    assert state.dashboard == "http://127.0.0.1:20001", state
    assert state.prometheus, "the demo runs Prometheus (apt-get install prometheus)"
    return state.dashboard, state.prometheus


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dashboard-screenshots")


def prometheus_rates(prometheus: str) -> dict[tuple[str, str], float]:
    """Prometheus' own requests/s per (client workload, server workload) over 1 m: as the clients reported, and
    as the servers reported calls from callers without a sidecar (``unknown``). A call no workload answered (a
    fault the client injected) is named by its service, as the graph's service node."""
    out: dict[tuple[str, str], float] = {}
    for matchers in ('reporter="source"', 'reporter="destination",source_workload="unknown"'):
        query = (
            f"sum(rate(istio_requests_total{{{matchers}}}[1m])) "
            "by (source_workload, destination_workload, destination_service_name)"
        )
        answer = Http(prometheus, what="Prometheus").get("/api/v1/query?" + urllib.parse.urlencode({"query": query}))
        for r in answer["data"]["result"]:
            labels = r["metric"]
            server = labels["destination_workload"]
            pair = (labels["source_workload"], labels["destination_service_name"] if server == "unknown" else server)
            out[pair] = out.get(pair, 0.0) + float(r["value"][1])
    return out


def edge_rows(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#graph-edges tbody tr",
        "rows => rows.map(r => ({source: r.dataset.source, target: r.dataset.target, "
        "rps: r.dataset.rps, health: r.dataset.health}))",
    )


def node_names(page) -> set[str]:
    return set(page.eval_on_selector_all("#graph-nodes tbody tr", "rows => rows.map(r => r.dataset.name)"))


def refreshed(page) -> None:
    """Ask the page to load its data again now (what the timer does) and wait until it has."""
    before = page.evaluate("document.body.dataset.loaded || ''")
    page.dispatch_event("#window", "change")
    page.wait_for_function(f"(document.body.dataset.loaded || '') !== {json.dumps(before)}", timeout=15_000)


def distinct_colours(page, png: bytes) -> int:
    """How many colours a screenshot has (drawn on a canvas in the page itself: no image library needed)."""
    import base64

    return page.evaluate(
        """async (data) => {
            const img = new Image();
            img.src = 'data:image/png;base64,' + data;
            await img.decode();
            const canvas = document.createElement('canvas');
            canvas.width = img.width; canvas.height = img.height;
            const context = canvas.getContext('2d');
            context.drawImage(img, 0, 0);
            const pixels = context.getImageData(0, 0, img.width, img.height).data;
            const seen = new Set();
            for (let i = 0; i < pixels.length; i += 16) seen.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
            return seen.size;
        }""",
        base64.b64encode(png).decode(),
    )


def test_graph_nodes_and_rates_are_prometheus(bookinfo, load, urls):
    dashboard, prometheus = urls
    with chromium_page(dashboard) as browser:
        page = browser.page
        page.goto(f"{dashboard}/?namespace=default&window=1m&type=workload#graph")
        page.wait_for_selector("#graph-edges tbody tr")
        refreshed(page)
        rows, nodes = edge_rows(page), node_names(page)
        truth = prometheus_rates(prometheus)
        carrying = {name for pair, rps in truth.items() if rps > 0 for name in pair}
        assert BOOKINFO <= nodes
        assert nodes == carrying, (nodes, carrying)
        shown = {(r["source"], r["target"]): float(r["rps"]) for r in rows}
        assert set(shown) == {pair for pair, rps in truth.items() if rps > 0}
        for pair, rps in shown.items():
            assert rps == pytest.approx(truth[pair], rel=0.2), (pair, rps, truth[pair])
        assert all(r["health"] == "healthy" for r in rows), rows
    assert browser.problems == []
    assert load.statuses.get(200, 0) > 0 and set(load.statuses) == {200}, load.statuses


GATEWAY_EDGE = "workload:istio-system:istio-ingressgateway->workload:default:productpage-v1"


def test_an_edges_time_series_ends_at_prometheus_rate_and_its_traffic_moves(bookinfo, load, urls):
    dashboard, prometheus = urls
    query = (
        'sum(rate(istio_requests_total{reporter="source",source_workload="istio-ingressgateway",'
        'destination_workload="productpage-v1"}[30s]))'
    )
    with chromium_page(dashboard) as browser:
        page = browser.page
        page.goto(f"{dashboard}/?namespace=default&window=1m&type=workload#graph")
        page.wait_for_selector("#graph-edges tbody tr")
        page.evaluate(f"cy.getElementById({json.dumps(GATEWAY_EDGE)}).emit('tap')")
        page.wait_for_function("document.querySelectorAll('#series-table tbody tr').length === 13")  # 1 m, every 5 s
        answer = Http(prometheus, what="Prometheus").get("/api/v1/query?" + urllib.parse.urlencode({"query": query}))
        truth = float(answer["data"]["result"][0]["value"][1])
        series = page.eval_on_selector_all(
            "#series-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
        )
        assert len(series) == 13  # 1 m, every 5 s
        assert float(series[-1][1]) == pytest.approx(truth, rel=0.2), (series[-1], truth)
        assert page.is_checked("#animate")
        lit = (
            "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
            ".filter((v, i) => i % 4 === 3 && v).length"
        )
        page.wait_for_function(f"({lit})(document.querySelector('#traffic')) > 0")
    assert browser.problems == []


def test_ratings_abort_turns_the_ratings_edges_red(bookinfo, load, urls, tmp_path):
    dashboard, _ = urls
    api = Http(dashboard, what="the dashboard")
    files = [NETWORKING / "destination-rule-all.yaml", NETWORKING / "virtual-service-ratings-test-abort.yaml"]
    args = [a for f in files for a in ("-f", str(f))]

    def ratings_edges(graph: dict) -> list[dict]:
        names = {n["id"]: n["name"] for n in graph["nodes"]}
        return [e for e in graph["edges"] if names[e["target"]].startswith("ratings")]

    def api_says_failing() -> bool:
        edges = ratings_edges(api.get("/api/graph?namespace=default&window=1m&type=workload"))
        return any(e["health"] == "failing" for e in edges)

    with chromium_page(dashboard) as browser:
        page = browser.page
        page.goto(f"{dashboard}/?namespace=default&window=1m&type=workload#graph")
        page.wait_for_selector("#graph-edges tbody tr")
        applied = bookinfo.plait("apply", *args)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        try:
            wait_until(api_says_failing, 90, "the JSON API to show the ratings edges failing", interval=0.5)
            said = time.monotonic()
            page.wait_for_function(
                "[...document.querySelectorAll('#graph-edges tbody tr')].some("
                "r => r.dataset.target.startsWith('ratings') && r.dataset.health === 'failing')",
                timeout=(REFRESH + 2) * 1000,
            )
            assert time.monotonic() - said <= REFRESH + 2
            drawn = page.evaluate(
                "cy.edges().filter(e => e.target().data('name').startsWith('ratings'))"
                ".map(e => [e.data('id'), e.data('health'), e.style('line-color').replace(/ /g, '')])"
            )
            red = [edge for edge, health, colour in drawn if colour == "rgb(211,47,47)"]  # #d32f2f
            assert red and red == [edge for edge, health, _ in drawn if health == "failing"], drawn
            page.screenshot(path=str(tmp_path / "graph-ratings-abort.png"))
        finally:
            deleted = bookinfo.plait("delete", *args)
            assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert browser.problems == []


def test_every_page_screenshot(bookinfo, load, urls, artefacts):
    dashboard, _ = urls
    DOCS_IMAGES.mkdir(exist_ok=True)
    with chromium_page(dashboard) as browser:
        page = browser.page
        for name in PAGES:
            page.goto(f"{dashboard}/?namespace=default&window=1m#{name}")
            page.wait_for_function(f"document.body.dataset.loaded && location.hash === '#{name}'")
            if name == "traces":
                page.wait_for_selector("#traces tbody tr")
                page.click("#traces tbody tr")
                page.wait_for_selector("#waterfall tbody tr")
            elif name == "live":
                page.select_option("#tap-target", "deploy/productpage-v1")
                page.click("#tap-start")
                page.wait_for_selector("#tap tbody tr", timeout=30_000)
            elif name == "graph":  # with an edge selected: its figures and time series beside the graph
                page.wait_for_selector("#graph-edges tbody tr")
                page.evaluate("cy.edges().filter(e => e.source().data('isGateway'))[0].emit('tap')")
                page.wait_for_function(
                    "document.querySelectorAll('#series-table tbody tr').length === 13"
                )  # 1 m, every 5 s
            else:
                page.wait_for_selector(f"#{name} tbody tr")
            png = page.screenshot(full_page=False)
            (artefacts / f"dashboard-{name}.png").write_bytes(png)
            (DOCS_IMAGES / f"dashboard-{name}.png").write_bytes(png)
            assert distinct_colours(page, png) > 8, f"the {name} page looks blank"
            assert page.inner_text("#status") == "", (name, page.inner_text("#status"))
        page.click("#tap-stop")
        rows = page.eval_on_selector_all("#tap tbody tr", "rows => rows.map(r => r.cells[3].textContent)")
        assert rows and all(r for r in rows), rows
    assert browser.problems == []


def test_plait_dashboard_prints_the_url(bookinfo):
    shown = bookinfo.plait("dashboard", "--no-browser")
    assert shown.returncode == 0 and shown.stdout.strip() == "http://127.0.0.1:20001", shown.stdout + shown.stderr
    kiali = bookinfo.plait("dashboard", "kiali", "--browser=false")
    assert kiali.returncode == 0 and kiali.stdout.strip() == "http://127.0.0.1:20001", kiali.stdout + kiali.stderr


def test_config_page_lists_bookinfos_objects(bookinfo, urls):
    objects = Http(urls[0]).get("/api/config")["objects"]
    names = {(o["kind"], o["name"]) for o in objects}
    expected = {
        (d["kind"], d["metadata"]["name"])
        for d in yaml.safe_load_all((NETWORKING / "bookinfo-gateway.yaml").read_text())
    }
    assert expected <= names, (expected, names)
