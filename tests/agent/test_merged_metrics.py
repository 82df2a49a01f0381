"""Istio's merged metrics on the agent's status ports (15020/stats/prometheus): the agent's own, a real
Envoy's and a fake application's (a small HTTP server in the test), as pilot-agent merges them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plait.agent.merged_metrics import AppScrape, ScrapeConfigError, parse_prometheus_annotations
from plait.testing.http import http_request
from plait.testing.live import free_port

APP_METRICS = "# HELP bookinfo_hits_total Pages served.\n# TYPE bookinfo_hits_total counter\nbookinfo_hits_total 42\n"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class FakeApp:
    """An application serving its own metrics at /metrics; records the headers of each scrape."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.content_type = "text/plain; version=0.0.4"
        self.body = APP_METRICS
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                app.seen.append({k.lower(): v for k, v in self.headers.items()})
                status, body = (200, app.body.encode()) if self.path == "/metrics" else (404, b"no\n")
                self.send_response(status)
                self.send_header("Content-Type", app.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app() -> Iterator[FakeApp]:
    fake = FakeApp()
    yield fake
    fake.stop()


def annotations(port: int, path: str = "/metrics") -> str:
    return json.dumps({"scrape": "true", "port": str(port), "path": path})


def scrape(port: int, headers: dict | None = None):
    return http_request("127.0.0.1", port, "/stats/prometheus", headers or {}, timeout=10)


def start(start_agent, ads_server, app: FakeApp, probe_port: int):
    agent = start_agent(
        "--probe-port",
        str(probe_port),
        "--prometheus-annotations",
        annotations(app.port),
        control_plane_port=ads_server().port,
    )
    agent.wait_ready()
    return agent


def test_the_agent_merges_its_own_envoys_and_the_apps_metrics(start_agent, ads_server, app: FakeApp) -> None:
    probe_port = free_port()
    start(start_agent, ads_server, app, probe_port)
    reply = scrape(probe_port, {"User-Agent": "Prometheus/2.45.0", "Accept": "text/plain;version=0.0.4"})
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.body.decode()
    names = {family.name for family in text_string_to_metric_families(text)}  # one valid exposition
    assert {"istio_agent_scrapes", "istio_agent_process_cpu_seconds", "bookinfo_hits"} <= names
    assert "envoy_cluster_manager_cds_update_success{} 1" in text  # Envoy's, through the admin API
    assert text.index("istio_agent_scrapes_total") < text.index("envoy_") < text.index(APP_METRICS)  # Istio's order
    assert text.endswith(APP_METRICS)
    assert (app.seen[-1]["user-agent"], app.seen[-1]["accept"]) == ("Prometheus/2.45.0", "text/plain;version=0.0.4")
    assert 'istio_agent_scrape_failures_total{type="application"} 0' in text


def test_an_app_that_does_not_answer_leaves_envoys_metrics_and_is_counted(
    start_agent, ads_server, app: FakeApp
) -> None:
    probe_port = free_port()
    agent = start(start_agent, ads_server, app, probe_port)
    app.stop()
    for port in (probe_port, agent.status_port):  # both status ports serve the merged metrics
        reply = scrape(port)
        assert reply.status == 200
        text = reply.body.decode()
        assert "envoy_cluster_manager_cds_update_success{} 1" in text and "bookinfo_hits_total" not in text
    assert 'istio_agent_scrape_failures_total{type="application"} 2' in text
    assert "istio_agent_scrapes_total 2" in text


def test_an_openmetrics_app_makes_the_answer_openmetrics(start_agent, ads_server, app: FakeApp) -> None:
    app.content_type, app.body = OPENMETRICS, APP_METRICS + "# EOF\n"
    probe_port = free_port()
    start(start_agent, ads_server, app, probe_port)
    reply = scrape(probe_port, {"Accept": "application/openmetrics-text"})
    assert reply.headers["content-type"] == OPENMETRICS
    assert reply.body.decode().endswith("bookinfo_hits_total 42\n# EOF\n")  # the app's part is last


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ('{"scrape": "false", "port": "9080"}', None),
        ('{"scrape": "true", "port": "9080", "path": "/manage/prometheus"}', AppScrape(9080, "/manage/prometheus")),
        ('{"scrape": "true"}', AppScrape(80, "/metrics")),  # Istio's defaults
        ('{"port": "8383", "path": "metrics"}', AppScrape(8383, "/metrics")),
    ],
)
def test_prometheus_annotations_are_read_as_istios_agent_reads_them(text, expected) -> None:
    assert parse_prometheus_annotations(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{port: 80}", "is not JSON"),
        ('{"port": 9080}', "an object of strings"),
        ('{"port": "http"}', "'http' is not a port number"),
        ('{"port": "15020"}', "the agent's own port and would scrape itself"),
    ],
)
def test_bad_prometheus_annotations_say_why(text: str, message: str) -> None:
    with pytest.raises(ScrapeConfigError, match=message):
        parse_prometheus_annotations(text, (15021, 15020))
