"""An in-process ADS client that behaves like Envoy, for tests and benchmarks.

Flows in: an ADS server address and a node (`make_node(proxy)` builds Istio's node id
and metadata, as the agent's bootstrap does). Flows out: what the client holds
(`held[type][name]`, the accepted `versions`, the `nacks` it sent) and waits on it
(`wait_synced`, `wait_for`).

Like Envoy: the node goes on the first request only; CDS and LDS are wildcard; the
EDS names the clusters need and the RDS names the listeners need are requested as
they arrive (before the ACK of the response that made them needed, as Envoy does);
a route configuration with ``vhds`` (a scoped sidecar's, delta only) subscribes to its
virtual hosts (VHDS, wildcard, once);
every response is ACKed with its nonce and version, or NACKed when `reject` returns
a message for one of its resources (then nothing in it is applied). State of the
world or delta (`delta=True`); `reconnect()` opens a new stream and, like Envoy,
sends what it already holds (versions, or delta's initial_resource_versions).

Cheap enough to run a thousand in one event loop: one task per client, no threads;
resources are decoded only to learn names (cached by content, shared by clients),
and `keep_resources=False` keeps names only. A whole response is decoded once per
process: plait sends alike proxies byte-identical responses (nonce included), so the
clients of one process share the decoding (`_decode`, keyed by the response's bytes).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import NamedTuple

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, struct_pb2
from google.rpc import status_pb2

from plait.model import Proxy
from plait.xds.resources import TYPE_URLS

SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SHORT = {url: short for short, url in TYPE_URLS.items()}
MESSAGES = {
    "cds": cluster_pb2.Cluster,
    "eds": endpoint_pb2.ClusterLoadAssignment,
    "lds": listener_pb2.Listener,
    "rds": route_pb2.RouteConfiguration,
    "vhds": route_components_pb2.VirtualHost,
}
HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
DEPENDENT = {"cds": "eds", "lds": "rds"}  # names in the first type's resources are subscribed in the second
# Its own TCP connection per client, as every Envoy has (gRPC otherwise shares one connection between
# the channels of a process that have the same target and options: 1,000 streams on one connection).
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]

Reject = Callable[[str, str, any_pb2.Any], "str | None"]  # (type, name, resource) → NACK message or None


def make_node(proxy: Proxy, *, envoy_version: tuple[int, int, int] = (1, 40, 0)) -> base_pb2.Node:
    """Envoy's node for `proxy`: Istio's id, ``node.cluster`` NAME.NS and the metadata keys of the contract."""
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            "NAMESPACE": proxy.namespace,
            "LABELS": dict(proxy.labels),
            "SERVICE_ACCOUNT": proxy.service_account,
            "WORKLOAD_NAME": proxy.name,
            "INTERCEPTION_MODE": "REDIRECT" if proxy.mode == "capture" else "NONE",
            "PLAIT_MODE": proxy.mode,
            "APP_ADDRESS": proxy.app_address,
        }
    )
    major, minor, patch = envoy_version
    return base_pb2.Node(
        id=proxy.id,
        cluster=f"{proxy.name}.{proxy.namespace}",
        metadata=metadata,
        user_agent_name="envoy",
        user_agent_build_version=base_pb2.BuildVersion(
            version={"major_number": major, "minor_number": minor, "patch": patch}
        ),
    )


def describe(short: str, value: bytes) -> tuple[str, tuple[str, ...]]:
    """(name, names it needs): a cluster's EDS name, a listener's RDS names, ("vhds",) for a route
    configuration whose virtual hosts come apart. Cached by content (route configurations, which can
    be large, in a small cache of their own)."""
    return _route_name(value) if short == "rds" else _describe(short, value)


@functools.lru_cache(maxsize=1 << 14)
def _describe(short: str, value: bytes) -> tuple[str, tuple[str, ...]]:
    message = MESSAGES[short].FromString(value)
    if short == "cds":
        needs = (
            (message.eds_cluster_config.service_name or message.name,)
            if message.type == cluster_pb2.Cluster.EDS
            else ()
        )
        return message.name, needs
    if short == "lds":
        return message.name, tuple(sorted(_route_names(message)))
    if short == "vhds":
        return message.name, ()
    return message.cluster_name, ()


@functools.lru_cache(maxsize=64)
def _route_name(value: bytes) -> tuple[str, tuple[str, ...]]:
    config = route_pb2.RouteConfiguration.FromString(value)
    return config.name, ("vhds",) if config.HasField("vhds") else ()


def _route_names(listener: listener_pb2.Listener) -> set[str]:
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    names = set()
    for chain in chains:
        for f in chain.filters:
            if f.typed_config.type_url == HCM_TYPE:
                hcm = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                if hcm.HasField("rds"):
                    names.add(hcm.rds.route_config_name)
    return names


class _Response(NamedTuple):
    """A decoded DiscoveryResponse (or DeltaDiscoveryResponse): its type (None if not one of ours),
    nonce, version, resources as ((name, names they need), Any, version) and removed names."""

    short: str | None
    nonce: str
    version: str
    described: tuple
    removed: tuple[str, ...]


@functools.lru_cache(maxsize=32)
def _decode(data: bytes, delta: bool) -> _Response:
    if delta:
        message = discovery_pb2.DeltaDiscoveryResponse.FromString(data)
        items = [(r.resource, r.version) for r in message.resources]
        version, removed = message.system_version_info, tuple(message.removed_resources)
    else:
        message = discovery_pb2.DiscoveryResponse.FromString(data)
        items, version, removed = [(a, "") for a in message.resources], message.version_info, ()
    short = SHORT.get(message.type_url)
    described = tuple((describe(short, a.value), a, v) for a, v in items) if short is not None else ()
    return _Response(short, message.nonce, version, described, removed)


class AdsClient:
    """One simulated Envoy on one ADS stream; `await start()` (or ``async with``) then wait on it."""

    def __init__(
        self,
        target: str,
        node: base_pb2.Node,
        *,
        delta: bool = False,
        reject: Reject | None = None,
        keep_resources: bool = True,
        channel: grpc.aio.Channel | None = None,
    ):
        self.target, self.node, self.delta, self.reject = target, node, delta, reject
        self.keep_resources = keep_resources
        self.held: dict[str, dict[str, any_pb2.Any | None]] = {short: {} for short in TYPE_URLS}
        self.versions: dict[str, str] = {}  # accepted version per type
        self.nacks: list[tuple[str, str]] = []  # (type, message) of every NACK sent
        self.responses = 0
        self.error: BaseException | None = None  # why the stream ended, if it failed
        self._resource_versions: dict[str, dict[str, str]] = {short: {} for short in TYPE_URLS}  # delta
        self._needs: dict[str, dict[str, tuple[str, ...]]] = {"cds": {}, "lds": {}}
        self._subscribed: dict[str, frozenset[str]] = {"eds": frozenset(), "rds": frozenset()}
        self._nonces: dict[str, str] = {}
        self._vhds = False  # subscribed to virtual hosts
        self._own_channel = channel is None
        self._channel = channel
        self._call = None
        self._task: asyncio.Task | None = None
        self._progress = asyncio.Event()

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> "AdsClient":
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        method = "DeltaAggregatedResources" if self.delta else "StreamAggregatedResources"
        request = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        self._call = self._channel.stream_stream(SERVICE + method, request_serializer=request.SerializeToString)()
        self._nonces = {}
        first = True
        for short in ("cds", "lds", "eds", "rds", "vhds"):
            if short in ("cds", "lds") or self._subscribed.get(short) or (short == "vhds" and self._vhds):
                await self._call.write(self._initial_request(short, with_node=first))
                first = False
        self._task = asyncio.create_task(self._read(self._call))
        return self

    async def reconnect(self) -> None:
        """A new stream that keeps what is held, as Envoy does after losing the control plane."""
        await self._stop_stream()
        self.error = None
        await self.start()

    async def close(self) -> None:
        await self._stop_stream()
        if self._own_channel and self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> "AdsClient":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _stop_stream(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._call = self._task = None

    # -------------------------------------------------------------- waiting

    @property
    def synced(self) -> bool:
        """CDS and LDS accepted, and every EDS and RDS name they need is held."""
        return (
            "cds" in self.versions
            and "lds" in self.versions
            and all(self._subscribed[s] <= self.held[s].keys() for s in ("eds", "rds"))
            and (not self._vhds or "vhds" in self.versions)
        )

    async def wait_for(self, condition: Callable[["AdsClient"], bool], timeout: float = 10.0) -> None:
        """Wait until `condition(self)` holds (checked after each response); TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while not condition(self):
                if self._task is None or self._task.done():
                    failure = self._task.exception() if self._task and not self._task.cancelled() else None
                    raise ConnectionError(f"ADS stream ended: {self.error or failure!r}") from failure
                await self._progress.wait()

    async def wait_synced(self, timeout: float = 10.0) -> None:
        await self.wait_for(lambda c: c.synced, timeout)

    # -------------------------------------------------------------- requests

    def _initial_request(self, short: str, with_node: bool):
        node = self.node if with_node else None
        if self.delta:
            names = sorted(self._subscribed[short]) if short in self._subscribed else []
            return discovery_pb2.DeltaDiscoveryRequest(
                node=node,
                type_url=TYPE_URLS[short],
                resource_names_subscribe=names,
                initial_resource_versions=self._resource_versions[short],
            )
        return self._sotw_request(short, node=node)

    def _sotw_request(self, short: str, node=None, error: str | None = None):
        names = sorted(self._subscribed[short]) if short in self._subscribed else []
        detail = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error) if error else None
        return discovery_pb2.DiscoveryRequest(
            node=node,
            type_url=TYPE_URLS[short],
            resource_names=names,
            version_info=self.versions.get(short, ""),
            response_nonce=self._nonces.get(short, ""),
            error_detail=detail,
        )

    async def _answer(self, short: str, error: str | None) -> None:
        if self.delta:
            detail = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error) if error else None
            await self._call.write(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=TYPE_URLS[short], response_nonce=self._nonces[short], error_detail=detail
                )
            )
        else:
            await self._call.write(self._sotw_request(short, error=error))

    async def _resubscribe(self, short: str) -> None:
        """After CDS or LDS changed, ask for the EDS or RDS names they now need."""
        dependent = DEPENDENT[short]
        wanted = frozenset(n for needs in self._needs[short].values() for n in needs)
        before = self._subscribed[dependent]
        if wanted == before:
            return
        self._subscribed[dependent] = wanted
        for name in before - wanted:  # Envoy forgets what it no longer watches
            self.held[dependent].pop(name, None)
            self._resource_versions[dependent].pop(name, None)
        if self.delta:
            await self._call.write(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=TYPE_URLS[dependent],
                    resource_names_subscribe=sorted(wanted - before),
                    resource_names_unsubscribe=sorted(before - wanted),
                )
            )
        else:
            await self._call.write(self._sotw_request(dependent))

    # -------------------------------------------------------------- responses

    async def _read(self, call) -> None:
        try:
            while (data := await call.read()) is not grpc.aio.EOF:
                await self._on_response(_decode(data, self.delta))
                self.responses += 1
                self._progress.set()
                self._progress = asyncio.Event()
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as error:
            self.error = error
        finally:
            self._progress.set()

    async def _on_response(self, response: "_Response") -> None:
        short = response.short
        if short is None:
            return
        self._nonces[short] = response.nonce
        described = response.described
        error = self._rejection(short, described)
        if error is None:
            self._apply(short, described, response.removed, full=not self.delta and short in DEPENDENT)
            self.versions[short] = response.version
            if short in DEPENDENT:
                await self._resubscribe(short)
            if short == "rds" and not self._vhds and any(needs for (_, needs), _, _ in described):
                self._vhds = True
                await self._call.write(self._initial_request("vhds", with_node=False))
        else:
            self.nacks.append((short, error))
        await self._answer(short, error)

    def _rejection(self, short: str, described: list) -> str | None:
        if self.reject is None:
            return None
        messages = [f"{name}: {m}" for (name, _), a, _ in described if (m := self.reject(short, name, a))]
        return "; ".join(messages) or None

    def _apply(self, short: str, described: list, removed: list[str], full: bool) -> None:
        held, versions = self.held[short], self._resource_versions[short]
        if full:  # state of the world for a wildcard type: what is not sent is gone
            held.clear()
            self._needs[short].clear()
        for name in removed:
            held.pop(name, None)
            versions.pop(name, None)
            self._needs.get(short, {}).pop(name, None)
        for (name, needs), resource, version in described:
            held[name] = resource if self.keep_resources else None
            if version:
                versions[name] = version
            if short in self._needs:
                self._needs[short][name] = needs

    # -------------------------------------------------------------- reading what is held

    def decoded(self, short: str) -> dict[str, object]:
        """The held resources of one type as protobuf messages (needs keep_resources)."""
        return {name: MESSAGES[short].FromString(a.value) for name, a in self.held[short].items() if a is not None}
