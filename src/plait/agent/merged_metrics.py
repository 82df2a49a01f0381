"""Istio's merged metrics (pilot-agent's ``:15020/stats/prometheus``, meshConfig.enablePrometheusMerge):
the agent's own metrics, Envoy's with Istio's names, and the application's, in one Prometheus answer.

In: the scrape request's headers, Envoy's admin API, and where the application serves its metrics
(`AppScrape`, from ``ISTIO_PROMETHEUS_ANNOTATIONS``: the pod's ``prometheus.io/port`` and ``path``
the injector moved there). Out: (content type, body). As Istio's agent: the parts are concatenated,
the agent's first, the application's last (an OpenMetrics answer ends with ``# EOF``, and then the
whole answer is OpenMetrics); Prometheus' ``Accept``, ``User-Agent`` and
``X-Prometheus-Scrape-Timeout-Seconds`` are passed on; a part that fails is left out, logged and
counted (``istio_agent_scrape_failures_total{type="envoy"|"application"}``), never an error for the
whole scrape.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from plait.agent.admin import AdminUnavailable, EnvoyAdmin, exchange
from plait.telemetry.prometheus import PROMETHEUS_PATH, istio_exposition

log = logging.getLogger("plait.agent")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text"
FORWARDED_HEADERS = ("accept", "user-agent", "x-prometheus-scrape-timeout-seconds")
DEFAULT_TIMEOUT = 10.0  # seconds for each part when Prometheus does not say
ANNOTATIONS_ENV = "ISTIO_PROMETHEUS_ANNOTATIONS"
SCRAPE_TYPES = ("envoy", "application")


class ScrapeConfigError(ValueError):
    """ISTIO_PROMETHEUS_ANNOTATIONS cannot be used; the message says why."""


@dataclass(frozen=True)
class AppScrape:
    """Where the application serves its metrics (on the agent's app address)."""

    port: int
    path: str = "/metrics"


def parse_prometheus_annotations(text: str | None, status_ports: tuple[int, ...] = ()) -> AppScrape | None:
    """``{"scrape": "true", "port": "9080", "path": "/metrics"}`` → `AppScrape`, as Istio's agent reads
    it: no text or ``scrape: "false"`` → None; path ``/metrics`` and port 80 by default. A port that
    is one of the agent's own (`status_ports`) would scrape itself: refused."""
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError as exc:
        raise ScrapeConfigError(f"{ANNOTATIONS_ENV} is not JSON: {exc}") from None
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise ScrapeConfigError(f'{ANNOTATIONS_ENV}: expected an object of strings, {{"port": "9080", …}}')
    if found.get("scrape") == "false":
        return None
    port_text = found.get("port") or "80"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ScrapeConfigError(f"{ANNOTATIONS_ENV}: port {port_text!r} is not a port number")
    if int(port_text) in status_ports:
        raise ScrapeConfigError(
            f"{ANNOTATIONS_ENV}: port {port_text} is the agent's own port and would scrape itself; "
            "the pod's prometheus.io/port must name the application's"
        )
    path = found.get("path") or "/metrics"
    return AppScrape(int(port_text), path if path.startswith("/") else "/" + path)


class AgentMetrics:
    """The agent's own metrics, with Istio's names (``istio_agent_…``): its process (prometheus_client's
    process collector) and its scrapes (counters, without the ``_created`` series Istio does not have)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(namespace="istio_agent", registry=self.registry)
        self.scrapes = 0
        self.failures = dict.fromkeys(SCRAPE_TYPES, 0)

    def exposition(self) -> bytes:
        failures = "".join(f'istio_agent_scrape_failures_total{{type="{t}"}} {n}\n' for t, n in self.failures.items())
        return (
            generate_latest(self.registry)
            + (
                "# HELP istio_agent_scrapes_total The total number of scrapes.\n"
                "# TYPE istio_agent_scrapes_total counter\n"
                f"istio_agent_scrapes_total {self.scrapes}\n"
                "# HELP istio_agent_scrape_failures_total The total number of failed scrapes.\n"
                "# TYPE istio_agent_scrape_failures_total counter\n"
                f"{failures}"
            ).encode()
        )


def _timeout(headers: Mapping[str, str]) -> float:
    try:
        return float(headers["x-prometheus-scrape-timeout-seconds"])
    except (KeyError, ValueError):
        return DEFAULT_TIMEOUT


class MergedMetrics:
    def __init__(self, admin: EnvoyAdmin, app: AppScrape | None, app_address: str, own: Mapping[str, str]):
        self.admin, self.app, self.app_address, self.own = admin, app, app_address, own
        self.agent = AgentMetrics()

    async def answer(self, request_headers: Mapping[str, str]) -> tuple[str, bytes]:
        """(content type, body) of one scrape; `request_headers` in lower case."""
        self.agent.scrapes += 1
        forwarded = {k: v for k, v in request_headers.items() if k in FORWARDED_HEADERS}
        envoy, app = await asyncio.gather(self._envoy(_timeout(request_headers)), self._app(forwarded))
        content_type = PROMETHEUS_TEXT
        parts = [self.agent.exposition(), envoy]
        if app is not None:
            app_type, app_body = app
            if app_type.split(";", 1)[0].strip().lower() == OPENMETRICS:
                content_type = app_type
            parts.append(app_body if app_body.endswith(b"\n") or not app_body else app_body + b"\n")
        return content_type, b"".join(parts)

    async def _envoy(self, timeout: float) -> bytes:
        try:
            status, body = await self.admin.get(PROMETHEUS_PATH, timeout=timeout)
            if status != 200:
                raise AdminUnavailable(f"Envoy admin {PROMETHEUS_PATH} answered {status}")
        except AdminUnavailable as exc:
            log.warning("failed scraping Envoy's metrics: %s", exc)
            self.agent.failures["envoy"] += 1
            return b""
        return istio_exposition(body.decode(), self.own).encode()

    async def _app(self, headers: Mapping[str, str]) -> tuple[str, bytes] | None:
        if self.app is None:
            return None
        where = f"{self.app_address}:{self.app.port}{self.app.path}"
        try:
            async with asyncio.timeout(_timeout(headers)):
                status, found, body = await exchange(self.app_address, self.app.port, "GET", self.app.path, headers)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            log.warning("failed scraping the application's metrics at %s: %s", where, exc or type(exc).__name__)
            self.agent.failures["application"] += 1
            return None
        if status != 200:
            log.warning("failed scraping the application's metrics at %s: status %d", where, status)
            self.agent.failures["application"] += 1
            return None
        return found.get("content-type", PROMETHEUS_TEXT), body
