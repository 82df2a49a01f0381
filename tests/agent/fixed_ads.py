"""A minimal ADS server for the agent's tests: one fixed cluster and one listener, SotW or delta.

Each stream answers the first request of each type it has (CDS, LDS) once and
ignores the rest (ACKs, NACKs, stale nonces): enough for an Envoy to reach its
first full config. It records the node of every stream. It runs in a thread of
its own with its own event loop; `FixedAdsServer.stop()` ends it. The real
control plane has its own server and tests; this one only stands in for it.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers the @type)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
HELLO = "hello from the test control plane"


def fixed_resources(listener_port: int) -> dict[str, dict[str, any_pb2.Any]]:
    """type URL → {name: resource}: a static cluster and a listener on 127.0.0.1:`listener_port` that
    answers HELLO."""
    cluster = {
        "name": "backend",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "backend",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}
                    ]
                }
            ],
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "hello",
        "route_config": {
            "name": "hello",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": HELLO}}}
                    ],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    listener = {
        "name": "hello",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    return {
        CLUSTER_TYPE: {"backend": _pack(json_format.ParseDict(cluster, cluster_pb2.Cluster()))},
        LISTENER_TYPE: {"hello": _pack(json_format.ParseDict(listener, listener_pb2.Listener()))},
    }


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class FixedAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, resources: dict[str, dict[str, any_pb2.Any]]):
        self.resources = resources
        self.nodes: list[base_pb2.Node] = []

    async def _answer_once_per_type(self, requests, response):
        """Record nodes; answer each resource type's first request with `response(type_url)`."""
        answered: set[str] = set()
        async for request in requests:
            if request.HasField("node"):
                self.nodes.append(request.node)
            if request.type_url in self.resources and request.type_url not in answered:
                answered.add(request.type_url)
                yield response(request.type_url)

    async def StreamAggregatedResources(self, requests, context):
        async for response in self._answer_once_per_type(
            requests,
            lambda type_url: discovery_pb2.DiscoveryResponse(
                version_info="1",
                type_url=type_url,
                nonce=f"{type_url}/1",
                resources=list(self.resources[type_url].values()),
            ),
        ):
            yield response

    async def DeltaAggregatedResources(self, requests, context):
        async for response in self._answer_once_per_type(
            requests,
            lambda type_url: discovery_pb2.DeltaDiscoveryResponse(
                system_version_info="1",
                type_url=type_url,
                nonce=f"{type_url}/1",
                resources=[
                    discovery_pb2.Resource(name=name, version="1", resource=resource)
                    for name, resource in self.resources[type_url].items()
                ],
            ),
        ):
            yield response


class FixedAdsServer:
    """`FixedAds` served on 127.0.0.1:`port` from a background thread."""

    def __init__(self, port: int, listener_port: int):
        self.port = port
        self.listener_port = listener_port
        self.servicer = FixedAds(fixed_resources(listener_port))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fixed-ads", daemon=True)
        self._server: grpc.aio.Server | None = None

    def start(self) -> FixedAdsServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(grace=None), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        self._server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.servicer, self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self._server.start()
