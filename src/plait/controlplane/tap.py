"""The control plane's side of tap: RTDS turns proxies' tap on and off, the AccessLogService takes
their events, and ``GET /api/v1/tap`` streams them to tap clients.

Flows in: RTDS streams (``envoy.service.runtime.v3.RuntimeDiscoveryService/StreamRuntime``, one
per proxy, opened by its bootstrap's ``plait-tap`` runtime layer on the ADS connection), gRPC
access log streams (``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs``, from the tap
loggers of proxies whose ``plait.tap`` key is on) and tap requests over HTTP. Flows out: each
proxy's runtime layer (``plait.tap`` 100 while a session taps it, else 0) and, per session, one
JSON line per event (after a first ``{"type": "tapping", "proxies": […]}`` line once the tapped
proxies acknowledged; an empty line each second keeps the connection checked). A session ends
when its client goes away; its proxies are then turned off again.

State (`TapService`: the sessions, their queues, the RTDS streams) belongs to the event loop that
runs the gRPC servers and the HTTP API. A slow client loses events (its queue is bounded), never
slows a proxy.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from aiohttp import web
from envoy.service.accesslog.v3 import als_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.runtime.v3 import rtds_pb2
from google.protobuf import any_pb2, json_format
from prometheus_client import CollectorRegistry, Counter, Gauge

from plait.telemetry.tap import (
    LOG_NAMES,
    RUNTIME_TYPE,
    TapError,
    TapFilter,
    Target,
    event_from_entry,
    pod_of_node,
    runtime_layer,
)
from plait.telemetry.tapsessions import TapSessions
from plait.xds.server import Authenticate, Inbox, boxed, read_requests

log = logging.getLogger(__name__)

RTDS_SERVICE = "envoy.service.runtime.v3.RuntimeDiscoveryService"
ALS_SERVICE = "envoy.service.accesslog.v3.AccessLogService"
HEARTBEAT = 1.0  # seconds between keep-alive lines: how soon a vanished client's session ends
QUEUE_LIMIT = 10_000  # events waiting for one client; more are dropped
APPLY_TIMEOUT = 2.0  # how long a new session waits for its proxies to acknowledge before it starts
SIDES = {name: side for side, name in LOG_NAMES.items()}
_WAKE, _CLOSED = object(), object()


@dataclass
class RuntimeStream:
    """One proxy's RTDS stream: what it was last sent and whether it acknowledged that."""

    pod: str
    namespace: str
    proxy_id: str
    sent: bool | None = None
    acked: bool = False


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


class TapService:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.sessions = TapSessions()
        self.queues: dict[int, asyncio.Queue] = {}
        self.streams: dict[int, RuntimeStream] = {}
        self._wakers: dict[int, Inbox] = {}
        self._ids = itertools.count(1)
        registry = registry or CollectorRegistry()
        self.events = Counter("plait_tap_events", "Access log entries received from tapped proxies", registry=registry)
        sessions = Gauge("plait_tap_sessions", "Open tap sessions", registry=registry)
        sessions.set_function(lambda: len(self.sessions))
        tapped = Gauge("plait_tap_proxies", "Connected proxies whose tap is on", registry=registry)
        tapped.set_function(lambda: sum(bool(s.sent) for s in self.streams.values()))

    # ---------------------------------------------------------------- gRPC

    def handlers(self, authenticate: Authenticate | None = None) -> tuple[grpc.GenericRpcHandler, ...]:
        """RTDS and the AccessLogService; RTDS streams admitted as ADS ones (`authenticate`)."""
        runtime = grpc.stream_stream_rpc_method_handler(
            functools.partial(self._runtime, authenticate),
            request_deserializer=boxed(discovery_pb2.DiscoveryRequest.FromString),
            response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString,
        )
        access_logs = grpc.stream_unary_rpc_method_handler(
            self._access_logs,
            request_deserializer=als_pb2.StreamAccessLogsMessage.FromString,
            response_serializer=als_pb2.StreamAccessLogsResponse.SerializeToString,
        )
        return (
            grpc.method_handlers_generic_handler(RTDS_SERVICE, {"StreamRuntime": runtime}),
            grpc.method_handlers_generic_handler(ALS_SERVICE, {"StreamAccessLogs": access_logs}),
        )

    def _changed(self) -> None:
        for inbox in self._wakers.values():
            inbox.put(_WAKE)

    async def _runtime(
        self, authenticate: Authenticate | None, requests: AsyncIterator, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        inbox = Inbox()
        reader = asyncio.create_task(read_requests(requests, inbox, _CLOSED))
        key = next(self._ids)
        stream: RuntimeStream | None = None
        versions = itertools.count(1)
        try:
            while (item := await inbox.get()) is not _CLOSED:
                if stream is None:
                    if item is _WAKE:
                        continue
                    stream = await self._admit(authenticate, item, context)
                    self.streams[key], self._wakers[key] = stream, inbox
                if item is not _WAKE and item.response_nonce:  # an ACK or a NACK of what was sent
                    stream.acked = not item.HasField("error_detail")
                    if not stream.acked:
                        log.warning("%s refused its tap runtime: %s", stream.proxy_id, item.error_detail.message)
                    continue
                tapped = self.sessions.tapped(stream.pod, stream.namespace)
                if tapped == stream.sent and item is _WAKE:
                    continue
                stream.sent, stream.acked = tapped, False
                yield _runtime_response(tapped, str(next(versions)))
        finally:
            reader.cancel()
            self.streams.pop(key, None)
            self._wakers.pop(key, None)

    async def _admit(self, authenticate: Authenticate | None, request, context) -> RuntimeStream:
        if not request.HasField("node"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry the node")
        if authenticate is not None:
            refusal = await authenticate(_metadata(context), request.node)
            if refusal is not None:
                log.warning("RTDS stream for node %s refused: %s", request.node.id, refusal.reason)
                await context.abort(refusal.code, refusal.reason)
        try:
            pod, namespace = pod_of_node(request.node.id)
        except TapError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return RuntimeStream(pod, namespace, request.node.id)

    async def _access_logs(self, messages: AsyncIterator, _context) -> als_pb2.StreamAccessLogsResponse:
        pod = namespace = side = None
        async for message in messages:
            if message.HasField("identifier"):
                try:
                    pod, namespace = pod_of_node(message.identifier.node.id)
                except TapError as error:
                    log.warning("access logs refused: %s", error)
                    break
                side = SIDES.get(message.identifier.log_name)
            if pod is None or side is None or not self.sessions.tapped(pod, namespace):
                continue  # a proxy tapped a moment ago: its last events have nobody to go to
            for entry in message.http_logs.log_entry:
                self.events.inc()
                self._deliver(event_from_entry(entry, side, pod, namespace))
        return als_pb2.StreamAccessLogsResponse()

    def _deliver(self, event: dict) -> None:
        for session_id in self.sessions.recipients(event):
            queue = self.queues.get(session_id)
            if queue is not None and queue.qsize() < QUEUE_LIMIT:
                queue.put_nowait(event)

    # ---------------------------------------------------------------- HTTP

    def add_routes(self, app: web.Application) -> None:
        app.add_routes([web.get("/api/v1/tap", self.tap)])

    async def tap(self, request: web.Request) -> web.StreamResponse:
        """GET /api/v1/tap?target=deploy/NAME&namespace=NS[&path=P][&method=M][&to=deploy/X|svc/X]"""
        query = request.query
        namespace = query.get("namespace") or "default"
        try:
            target = Target.parse(query.get("target", ""), namespace)
            to = Target.parse(query["to"], namespace, services=True) if query.get("to") else None
        except TapError as error:
            return web.json_response({"error": str(error)}, status=400)
        session = self.sessions.open(target, TapFilter(query.get("path", ""), query.get("method", ""), to))
        queue: asyncio.Queue = asyncio.Queue()
        self.queues[session.id] = queue
        log.info("tap session %d opened: %s in %s", session.id, target, target.namespace)
        self._changed()
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
            proxies = await self._applied(target)
            await response.write(_line({"type": "tapping", "target": str(target), "proxies": proxies}))
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT)
                except TimeoutError:
                    await response.write(b"\n")
                    continue
                await response.write(_line(event))
        except ConnectionError:
            pass  # the client went away: the session ends
        finally:
            self.sessions.close(session.id)
            self.queues.pop(session.id, None)
            self._changed()
            log.info("tap session %d closed", session.id)
        return response

    async def _applied(self, target: Target) -> list[str]:
        """Wait (a while) until every connected proxy of `target` acknowledged its tap runtime; their ids."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPLY_TIMEOUT
        while True:
            mine = [s for s in self.streams.values() if target.matches(s.pod, s.namespace)]
            if all(s.sent and s.acked for s in mine) or loop.time() > deadline:
                return sorted(s.proxy_id for s in mine)
            await asyncio.sleep(0.02)


def _runtime_response(tapped: bool, version: str) -> discovery_pb2.DiscoveryResponse:
    runtime = json_format.ParseDict(runtime_layer(tapped), rtds_pb2.Runtime())
    packed = any_pb2.Any()
    packed.Pack(runtime)
    return discovery_pb2.DiscoveryResponse(
        version_info=version, resources=[packed], type_url=RUNTIME_TYPE, nonce=version
    )


def _line(item: dict) -> bytes:
    return json.dumps(item, separators=(",", ":")).encode() + b"\n"
