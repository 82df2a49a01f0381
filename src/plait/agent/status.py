"""The agent's status port (Istio's 15021): readiness for probes, Envoy's Prometheus stats.

* ``GET /healthz/ready`` → 200 ``ready`` once the proxy has its first full
  config, else 503 with the reason (also 503 while draining);
* ``GET /stats/prometheus`` → Envoy's admin ``/stats/prometheus`` with Istio's metric names
  (`plait.telemetry.prometheus.istio_exposition`: ``istio_requests_total`` …);
* ``GET /app-health/CONTAINER/KIND`` → the app's original probe, run by the agent
  (`plait.agent.app_probe`; 404 for a path the injector did not hand over).

A minimal HTTP/1.1 server on asyncio: one request per connection, GET/HEAD
only, every read bounded by a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus

from plait.agent.admin import AdminUnavailable, EnvoyAdmin
from plait.agent.app_probe import AppProber, run_prober
from plait.agent.readiness import Readiness
from plait.telemetry.prometheus import istio_exposition

READ_TIMEOUT = 5.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class StatusServer:
    def __init__(
        self,
        readiness: Callable[[], Awaitable[Readiness]],
        admin: EnvoyAdmin,
        *,
        app_probers: Mapping[str, AppProber] | None = None,
        app_address: str = "127.0.0.1",
    ):
        self._readiness = readiness
        self._admin = admin
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
            method, path, *_ = head.split("\r\n", 1)[0].split(" ") + ["", ""]
            status, content_type, body = await self._answer(method, path)
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

    async def _answer(self, method: str, path: str) -> tuple[HTTPStatus, str, bytes]:
        if method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"GET only\n"
        route = path.split("?", 1)[0]
        if route == "/healthz/ready":
            readiness = await self._readiness()
            status = HTTPStatus.OK if readiness.ready else HTTPStatus.SERVICE_UNAVAILABLE
            return status, "text/plain", readiness.reason.encode() + b"\n"
        if route == "/stats/prometheus":
            try:
                status, body = await self._admin.get("/stats/prometheus", timeout=10.0)
            except AdminUnavailable as exc:
                return HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", f"{exc}\n".encode()
            return HTTPStatus(status), PROMETHEUS_TEXT, istio_exposition(body.decode()).encode()
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
