"""The ADS gRPC server: a thin grpc.aio shell that moves messages between Envoy and the hub.

Flows in: ADS streams (`StreamAggregatedResources`, state of the world, and
`DeltaAggregatedResources`, delta) of service envoy.service.discovery.v3.AggregatedDiscoveryService.
Flows out: the responses `plait.xds.hub.ProxyConnection` makes; gRPC serialises each
with `Response.encode` as it writes it (a body shared by alike proxies plus the
nonce), so no stream keeps a serialised copy of its own.

Per stream: the node of the first request identifies the proxy (Envoy may send it
only there), a reader task queues incoming requests, and the hub's wake-up queues a
push; one loop takes both in order, so the protocol state is touched by one task.
When the stream ends, for any reason, the connection leaves the hub.
Runs on the event loop that owns the hub; nothing blocks apart from translation,
which the hub runs synchronously on a new proxy's first request or on an update.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

import grpc
from envoy.service.discovery.v3 import ads_pb2, discovery_pb2

from plait.xds.hub import XdsHub
from plait.xds.protocol import Response

log = logging.getLogger(__name__)

SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
ADS_PORT = 15010
_WAKE, _CLOSED = object(), object()


async def _read(requests: AsyncIterator, queue: asyncio.Queue) -> None:
    try:
        async for request in requests:
            queue.put_nowait(request)
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass
    finally:
        queue.put_nowait(_CLOSED)


async def _serve_stream(hub: XdsHub, delta: bool, requests: AsyncIterator,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[Response]:
    queue: asyncio.Queue = asyncio.Queue()
    reader = asyncio.create_task(_read(requests, queue))
    conn = None
    try:
        while (item := await queue.get()) is not _CLOSED:
            if item is _WAKE:
                responses = conn.take_pushes()
            else:
                if conn is None:
                    if not item.HasField("node"):
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry the node")
                    try:
                        conn = hub.connect(item.node, delta=delta, wake=lambda: queue.put_nowait(_WAKE))
                    except ValueError as error:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
                    log.info("%s connected (%s)", conn.proxy_id, conn.stream.kind)
                responses = conn.receive(item)
            for response in responses:
                yield response
    finally:
        reader.cancel()
        if conn is not None:
            hub.disconnect(conn)
            log.info("%s disconnected", conn.proxy_id)


def ads_handler(hub: XdsHub) -> grpc.GenericRpcHandler:
    """The AggregatedDiscoveryService, both methods, for `hub`."""
    def method(delta: bool, request_type):
        return grpc.stream_stream_rpc_method_handler(functools.partial(_serve_stream, hub, delta),
                                                     request_deserializer=request_type.FromString,
                                                     response_serializer=Response.encode)
    return grpc.method_handlers_generic_handler(SERVICE, {
        "StreamAggregatedResources": method(False, discovery_pb2.DiscoveryRequest),
        "DeltaAggregatedResources": method(True, discovery_pb2.DeltaDiscoveryRequest),
    })


async def serve_ads(hub: XdsHub, host: str = "0.0.0.0", port: int = ADS_PORT) -> grpc.aio.Server:
    """Start serving ADS; with port 0 the port chosen is in `server.bound_port`.
    Stop it with ``await server.stop(grace)``: streams get `grace` seconds, then are cancelled."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((ads_handler(hub),))
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        raise OSError(f"ADS cannot listen on {host}:{port}: {error}") from None
    await server.start()
    server.bound_port = bound
    return server
