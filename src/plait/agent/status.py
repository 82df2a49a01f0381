"""The agent's status port (Istio's 15021, and 15020 with the probes): readiness for probes, the merged metrics.

* ``GET /healthz/ready`` → 200 ``ready`` once the proxy has its first full
  config, else 503 with the reason (also 503 while draining);
* ``GET /stats/prometheus`` (and ``/metrics``, as Istio's agent) → Istio's merged metrics
  (`plait.agent.merged_metrics`): the agent's own, Envoy's with Istio's names
  (``istio_requests_total`` …) and, when the pod names them, the application's;
* ``GET /app-health/CONTAINER/KIND`` → the app's original probe, run by the agent
  (`plait.agent.app_probe`; 404 for a path the injector did not hand over).

A minimal HTTP/1.1 server on asyncio: one request per connection, GET/HEAD
only, every read bounded by a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus

from plait.agent.admin import EnvoyAdmin
from plait.agent.app_probe import AppProber, run_prober
from plait.agent.merged_metrics import AppScrape, MergedMetrics
from plait.agent.readiness import Readiness

READ_TIMEOUT = 5.0
METRICS_ROUTES = ("/stats/prometheus", "/metrics")


class StatusServer:
    def __init__(
        self,
        readiness: Callable[[], Awaitable[Readiness]],
        admin: EnvoyAdmin,
        *,
        app_probers: Mapping[str, AppProber] | None = None,
        app_address: str = "127.0.0.1",
        app_metrics: AppScrape | None = None,
        own_values: Mapping[str, str] | None = None,
    ):
        self._readiness = readiness
        self._metrics = MergedMetrics(admin, app_metrics, app_address, own_values or {})
        self._app_probers = dict(app_probers or {})
        self._app_address = app_address
        self._servers: list[asyncio.Server] = []

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port; call again to serve the same routes on another port too."""
        self._servers.append(await asyncio.start_server(self._serve, host, port, reuse_address=True))

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            method, path, *_ = request_line.split(" ") + ["", ""]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
            status, content_type, body = await self._answer(method, path, headers)
            writer.write(
                f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or sent garbage; nothing to answer
        finally:
            writer.close()

    async def _answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[HTTPStatus, str, bytes]:
        if method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"GET only\n"
        route = path.split("?", 1)[0]
        if route == "/healthz/ready":
            readiness = await self._readiness()
            status = HTTPStatus.OK if readiness.ready else HTTPStatus.SERVICE_UNAVAILABLE
            return status, "text/plain", readiness.reason.encode() + b"\n"
        if route in METRICS_ROUTES:
            content_type, body = await self._metrics.answer(headers)
            return HTTPStatus.OK, content_type, body
        if route.startswith("/app-health/"):
            return await self._app_health(route)
        return HTTPStatus.NOT_FOUND, "text/plain", b"not found: try /healthz/ready or /stats/prometheus\n"

    async def _app_health(self, route: str) -> tuple[HTTPStatus, str, bytes]:
        prober = self._app_probers.get(route)
        if prober is None:
            return HTTPStatus.NOT_FOUND, "text/plain", f"no app probe {route} (ISTIO_KUBE_APP_PROBERS)\n".encode()
        result = await run_prober(prober, self._app_address)
        try:
            status = HTTPStatus(result.status)
        except ValueError:
            status = HTTPStatus.SERVICE_UNAVAILABLE
        return status, "text/plain", result.detail.encode() + b"\n"
