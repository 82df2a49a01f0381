"""The trace collector the control plane runs (Zipkin's port, 9411): spans in, Zipkin's read API out.

    POST /api/v2/spans                   Zipkin v2 JSON (what every plait proxy sends)   → 202
    POST /v1/traces                      OTLP/HTTP, protobuf or JSON                     → 200
    GET  /api/v2/services                service names
    GET  /api/v2/spans?serviceName=S     span names of a service
    GET  /api/v2/remoteServices?serviceName=S
    GET  /api/v2/traces?serviceName=&spanName=&minDuration=&maxDuration=&endTs=&lookback=&limit=
    GET  /api/v2/trace/{traceId}         one trace's spans, 404 when unknown
    GET  /health

A thin aiohttp shell over `plait.telemetry.spans` (parsing) and `plait.telemetry.tracestore` (the
bounded store and its queries); it holds the store, in memory. Open to every peer, as a Zipkin
server is: proxies post without credentials, and spans carry no secrets the mesh's name table does not.
A bad body is answered 400 with what was wrong.
"""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web

from plait.telemetry.spans import SpanError, parse_otlp, parse_zipkin
from plait.telemetry.tracestore import TraceStore, trace_query

log = logging.getLogger("plait.controlplane")
ZIPKIN_PORT = 9411
MAX_BODY = 16 * 1024 * 1024


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(value).encode(), status=status, content_type="application/json")


class Collector:
    def __init__(self, store: TraceStore | None = None):
        self.store = store or TraceStore()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.add_routes(
            [
                web.post("/api/v2/spans", self.post_zipkin),
                web.post("/v1/traces", self.post_otlp),
                web.get("/api/v2/services", self.services),
                web.get("/api/v2/spans", self.span_names),
                web.get("/api/v2/remoteServices", self.remote_services),
                web.get("/api/v2/traces", self.traces),
                web.get("/api/v2/trace/{trace_id}", self.trace),
                web.get("/health", self.health),
            ]
        )
        return app

    async def post_zipkin(self, request: web.Request) -> web.Response:
        try:
            spans = parse_zipkin(await request.read())
        except SpanError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        self.store.add(spans)
        return web.Response(status=202)

    async def post_otlp(self, request: web.Request) -> web.Response:
        try:
            spans = parse_otlp(await request.read(), request.content_type)
        except SpanError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        self.store.add(spans)
        if request.content_type == "application/json":
            return _json({})
        return web.Response(body=b"", content_type="application/x-protobuf")  # an empty ExportTraceServiceResponse

    @staticmethod
    def _service(request: web.Request) -> str:
        service = request.query.get("serviceName")
        if not service:
            raise web.HTTPBadRequest(text="serviceName: required, e.g. ?serviceName=productpage.default")
        return service

    async def services(self, _: web.Request) -> web.Response:
        return _json(self.store.services())

    async def span_names(self, request: web.Request) -> web.Response:
        return _json(self.store.span_names(self._service(request)))

    async def remote_services(self, request: web.Request) -> web.Response:
        return _json(self.store.remote_services(self._service(request)))

    async def traces(self, request: web.Request) -> web.Response:
        try:
            query = trace_query(dict(request.query))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return _json(self.store.traces(query, now_ms=int(time.time() * 1000)))

    async def trace(self, request: web.Request) -> web.Response:
        spans = self.store.trace(request.match_info["trace_id"])
        if spans is None:
            raise web.HTTPNotFound(text=f"trace {request.match_info['trace_id']} not found")
        return _json(spans)

    async def health(self, _: web.Request) -> web.Response:
        store = self.store
        return _json(
            {"status": "UP", "traces": store.trace_count, "spans": store.span_count, "maxSpans": store.max_spans}
        )


async def serve_collector(collector: Collector, host: str, port: int) -> web.AppRunner | None:
    """Serve the collector on host:port; None (and a warning) when the port is taken, e.g. by a Zipkin of one's own."""
    runner = web.AppRunner(collector.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        log.warning(
            "trace collector off: cannot listen on %s:%d (%s); spans sent there go elsewhere or nowhere",
            host,
            port,
            exc,
        )
        return None
    log.info("trace collector (Zipkin v2 and OTLP/HTTP, Zipkin read API) on %s:%d", host, port)
    return runner
