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
gRPC's receiver keeps the last object it handed over until the next request arrives: requests
come boxed (`Received`) and the reader takes each out, so a stream holds no request while it waits
(a SotW EDS request names every cluster the proxy holds: ~75 KB in a 1,000-service mesh).
Storms are paced (`Pacer`): at most `WARMING_STREAMS` new streams are served at once until
their proxy has acknowledged its first config; the others wait their turn in arrival order
(before they reach the hub), so a storm of 2,000 reconnecting proxies is served proxy after
proxy instead of all of them sharing the loop and the network until all finish together.
With `authenticate` (the control plane's ``--xds-auth strict``), the first request's node and
the stream's gRPC metadata are checked before the proxy reaches the hub; a refused stream is
aborted (UNAUTHENTICATED or PERMISSION_DENIED, with the reason) and logged.
Runs on the event loop that owns the hub; nothing blocks apart from translation,
which the hub runs synchronously on a new proxy's first request or on an update.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

import grpc
from envoy.service.discovery.v3 import ads_pb2, discovery_pb2

from plait.xds.hub import ProxyConnection, XdsHub
from plait.xds.protocol import NOT_SENT, STALE, Response

log = logging.getLogger(__name__)

SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
ADS_PORT = 15010
WARMING_STREAMS = 64
WARMING_TIMEOUT = 10.0  # seconds a new stream may hold its turn without acknowledging its first config
# New streams gRPC holds until the event loop takes them: beyond 1,000 (its default) it refuses a
# random share of them (CANCELLED at the client), which a storm of 2,000 reconnecting proxies reaches
# while the loop is busy answering the first ones.
MAX_PENDING_STREAMS = 20_000
PENDING_STREAMS = [  # gRPC server options; also those of the CA's port, which serves ADS over TLS
    ("grpc.server.max_pending_requests", MAX_PENDING_STREAMS),
    ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_STREAMS),
]
_WAKE, _CLOSED = object(), object()


class Refusal(NamedTuple):
    """Why a stream may not be served: UNAUTHENTICATED (who is calling is unknown),
    PERMISSION_DENIED (known, but not entitled to this node) or UNAVAILABLE (cannot tell now)."""

    code: grpc.StatusCode
    reason: str


# (gRPC metadata, node) → refusal or None; a coroutine, as it may ask the API server (TokenReview)
Authenticate = Callable[[dict[str, str], object], Awaitable["Refusal | None"]]


class Pacer:
    """At most `limit` streams warming at once: from their first request until `warmed` (or
    `timeout` seconds); the others wait in arrival order (asyncio's semaphore is first come, first served)."""

    def __init__(self, limit: int = WARMING_STREAMS, timeout: float = WARMING_TIMEOUT):
        self._slots = asyncio.Semaphore(limit)
        self.timeout = timeout

    async def turn(self) -> Callable[[], None]:
        """Wait for a turn; returns what ends it (idempotent; the timeout ends it too)."""
        await self._slots.acquire()
        done = False

        def end() -> None:
            nonlocal done
            if not done:
                done = True
                timer.cancel()
                self._slots.release()

        timer = asyncio.get_running_loop().call_later(self.timeout, end)
        return end


class Received:
    """One request as gRPC hands it over; `take` empties the box (see the module's docstring)."""

    __slots__ = ("message",)

    def __init__(self, message) -> None:
        self.message = message

    def take(self):
        message, self.message = self.message, None
        return message


def boxed(parse: Callable[[bytes], object]) -> Callable[[bytes], Received]:
    """A request deserializer for gRPC that boxes what `parse` makes."""
    return lambda data: Received(parse(data))


class Inbox:
    """A stream's requests and wake-ups in arrival order, for its one loop: a list and a future
    (asyncio.Queue holds four deques, ~3 KB a stream)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list = []
        self._waiter: asyncio.Future | None = None

    def put(self, item) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self):
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


def warmed(conn: ProxyConnection) -> bool:
    """Has the proxy acknowledged (or rejected) its clusters and listeners, with nothing else in flight?"""
    states = {short: status.state for short, status in conn.stream.statuses().items()}
    return all(states[short] not in (NOT_SENT, STALE) for short in ("cds", "lds")) and STALE not in states.values()


async def read_requests(requests: AsyncIterator[Received], inbox: Inbox, closed: object) -> None:
    """Put each request gRPC hands over into `inbox`, taken out of its box; `closed` when the stream ends."""
    try:
        async for received in requests:
            inbox.put(received.take())
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass
    finally:
        inbox.put(closed)


async def _admit(authenticate: Authenticate | None, node, context: grpc.aio.ServicerContext) -> None:
    """Abort the stream unless `authenticate` accepts the caller for `node`."""
    if authenticate is None:
        return
    refusal = await authenticate({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}, node)
    if refusal is not None:
        log.warning("ADS stream from %s for node %s refused: %s", context.peer(), node.id, refusal.reason)
        await context.abort(refusal.code, refusal.reason)


async def _serve_stream(
    hub: XdsHub,
    authenticate: Authenticate | None,
    pacer: Pacer,
    delta: bool,
    requests: AsyncIterator,
    context: grpc.aio.ServicerContext,
) -> AsyncIterator[Response]:
    inbox = Inbox()
    reader = asyncio.create_task(read_requests(requests, inbox, _CLOSED))
    conn = None
    end_turn = None
    try:
        while (item := await inbox.get()) is not _CLOSED:
            if item is _WAKE:
                responses = conn.take_pushes()
            else:
                if conn is None:
                    if not item.HasField("node"):
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry the node")
                    await _admit(authenticate, item.node, context)
                    end_turn = await pacer.turn()
                    try:
                        conn = hub.connect(item.node, delta=delta, wake=lambda: inbox.put(_WAKE))
                    except ValueError as error:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
                    log.info("%s connected (%s)", conn.proxy_id, conn.stream.kind)
                responses = conn.receive(item)
            del item  # not held while the stream waits for the next one
            for response in responses:
                yield response
            if end_turn is not None and warmed(conn):
                end_turn()
                end_turn = None
    finally:
        if end_turn is not None:
            end_turn()
        reader.cancel()
        if conn is not None:
            hub.disconnect(conn)
            log.info("%s disconnected", conn.proxy_id)


def ads_handler(
    hub: XdsHub, authenticate: Authenticate | None = None, pacer: Pacer | None = None
) -> grpc.GenericRpcHandler:
    """The AggregatedDiscoveryService, both methods, for `hub`; new streams paced by `pacer`."""
    pacer = pacer or Pacer()

    def method(delta: bool, request_type):
        return grpc.stream_stream_rpc_method_handler(
            functools.partial(_serve_stream, hub, authenticate, pacer, delta),
            request_deserializer=boxed(request_type.FromString),
            response_serializer=Response.encode,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "StreamAggregatedResources": method(False, discovery_pb2.DiscoveryRequest),
            "DeltaAggregatedResources": method(True, discovery_pb2.DeltaDiscoveryRequest),
        },
    )


async def serve_ads(
    hub: XdsHub,
    host: str = "0.0.0.0",
    port: int = ADS_PORT,
    *,
    authenticate: Authenticate | None = None,
    also: tuple[grpc.GenericRpcHandler, ...] = (),
    pacer: Pacer | None = None,
) -> grpc.aio.Server:
    """Start serving ADS (and the services in `also`); with port 0 the port chosen is in
    `server.bound_port`. With `authenticate`, each stream is admitted only if it returns None for
    the stream's metadata and first node; new streams are paced by `pacer` (a `Pacer()` of its own
    when not given). Stop it with ``await server.stop(grace)``: streams get
    `grace` seconds, then are cancelled."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 64 << 20),
            *PENDING_STREAMS,
        ]
    )
    server.add_generic_rpc_handlers((ads_handler(hub, authenticate, pacer), *also))
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        raise OSError(f"ADS cannot listen on {host}:{port}: {error}") from None
    await server.start()
    server.bound_port = bound
    return server
