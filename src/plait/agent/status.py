"""The agent's status port (Istio's 15021): readiness for probes, Envoy's Prometheus stats.

* ``GET /healthz/ready`` → 200 ``ready`` once the proxy has its first full
  config, else 503 with the reason (also 503 while draining);
* ``GET /stats/prometheus`` → Envoy's admin ``/stats/prometheus``, passed through.

A minimal HTTP/1.1 server on asyncio: one request per connection, GET/HEAD
only, every read bounded by a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from plait.agent.admin import AdminUnavailable, EnvoyAdmin
from plait.agent.readiness import Readiness

READ_TIMEOUT = 5.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class StatusServer:
    def __init__(self, readiness: Callable[[], Awaitable[Readiness]], admin: EnvoyAdmin):
        self._readiness = readiness
        self._admin = admin
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, path, *_ = head.split("\r\n", 1)[0].split(" ") + ["", ""]
            status, content_type, body = await self._answer(method, path)
            writer.write(f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: {content_type}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
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
            return HTTPStatus(status), PROMETHEUS_TEXT, body
        return HTTPStatus.NOT_FOUND, "text/plain", b"not found: try /healthz/ready or /stats/prometheus\n"
