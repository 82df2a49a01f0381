"""Gateway servers by protocol in a real Envoy (beside golden 34): a GRPC-WEB server converts a browser's
gRPC-Web call into gRPC to a real gRPC server (grpcio) and back; a MONGO server carries bytes with
the VirtualService's tcp route.

The gateway runs on a static bootstrap, its listeners moved to a loopback address of its own.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.testing.backends import TcpBackend, loopback_subnet
from plait.testing.envoy import run_envoy
from plait.xds.generator import generate
from plait.xds.static import static_bootstrap

GRPC_WEB_PORT, HTTP2_PORT, MONGO_PORT = 8081, 8082, 27017
MESH = """
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  selector: {{app: echo}}
  ports: [{{name: grpc, port: 9000}}, {{name: mongo, port: 7000}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo}}
spec: {{address: {net}.20, labels: {{app: echo}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingress, namespace: istio-system}}
spec: {{address: {net}.10, labels: {{istio: ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: web}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - {{port: {{number: {grpc_web}, name: grpc-web, protocol: GRPC-WEB}}, hosts: ["*"]}}
  - {{port: {{number: {http2}, name: http2, protocol: HTTP2}}, hosts: ["*"]}}
  - {{port: {{number: {mongo}, name: mongo, protocol: MONGO}}, hosts: ["*"]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: ["*"]
  gateways: [web]
  http: [{{route: [{{destination: {{host: echo, port: {{number: 9000}}}}}}]}}]
  tcp: [{{route: [{{destination: {{host: echo, port: {{number: 7000}}}}}}]}}]
"""


def echo_server(address: str) -> grpc.Server:
    """A gRPC server whose method /test.Echo/Say answers ``echo:`` + the request (raw bytes, no protobuf)."""

    def say(request: bytes, context) -> bytes:
        return b"echo:" + request

    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {"Say": grpc.unary_unary_rpc_method_handler(say, request_deserializer=None, response_serializer=None)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    server.add_insecure_port(f"{address}:9000")
    return server


@dataclass
class Gateway:
    address: str


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        server = echo_server(f"{net}.20")
        server.start()
        stack.callback(server.stop, None)
        stack.enter_context(TcpBackend("mongo", f"{net}.20", 7000))
        snapshot = MeshSnapshot(
            load_text(
                MESH.format(net=net, grpc_web=GRPC_WEB_PORT, http2=HTTP2_PORT, mongo=MONGO_PORT)
            ).raise_for_errors()
        )
        bootstrap = static_bootstrap(
            generate(snapshot, Proxy.from_workload_entry(snapshot.workload("istio-system/ingress")))
        )
        for listener in bootstrap["static_resources"]["listeners"]:
            listener["address"]["socket_address"]["address"] = f"{net}.10"
        stack.enter_context(run_envoy(bootstrap, workdir=tmp_path_factory.mktemp("gateway")))
        yield Gateway(f"{net}.10")


def grpc_web_frames(body: bytes) -> list[tuple[int, bytes]]:
    """(flags, payload) of each gRPC-Web frame: 0x00 data, 0x80 trailers."""
    frames = []
    while body:
        flags, length = struct.unpack(">BI", body[:5])
        frames.append((flags, body[5 : 5 + length]))
        body = body[5 + length :]
    return frames


def grpc_web_call(address: str, port: int) -> tuple[int, str | None, bytes]:
    """POST a gRPC-Web request for /test.Echo/Say with payload ``hello``: (status, content-type, body)."""
    connection = http.client.HTTPConnection(address, port, timeout=10)
    try:
        connection.request(
            "POST",
            "/test.Echo/Say",
            body=struct.pack(">BI", 0, 5) + b"hello",
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
        response = connection.getresponse()
        return response.status, response.getheader("content-type"), response.read()
    finally:
        connection.close()


def test_a_grpc_web_call_reaches_the_grpc_server_and_comes_back_as_grpc_web(gateway: Gateway) -> None:
    status, content_type, body = grpc_web_call(gateway.address, GRPC_WEB_PORT)
    assert (status, content_type) == (200, "application/grpc-web+proto")
    frames = grpc_web_frames(body)
    assert frames[0] == (0x00, b"echo:hello")
    assert frames[-1][0] == 0x80 and b"grpc-status:0" in frames[-1][1]


def test_without_the_grpc_web_filter_the_call_is_not_converted(gateway: Gateway) -> None:
    """The same call to the HTTP2 server: the gRPC server gets gRPC-Web as it is and does not answer it."""
    status, content_type, body = grpc_web_call(gateway.address, HTTP2_PORT)
    converted = (200, "application/grpc-web+proto", [(0, b"echo:hello")])
    assert (status, content_type, grpc_web_frames(body)[:1]) != converted


def test_a_mongo_server_carries_bytes_over_its_tcp_route(gateway: Gateway) -> None:
    with socket.create_connection((gateway.address, MONGO_PORT), timeout=5) as conn:
        conn.sendall(b"ping\n")
        conn.settimeout(5)
        received = b""
        while b"ping" not in received and (chunk := conn.recv(4096)):
            received += chunk
        assert received.startswith(b"mongo\n") and b"ping" in received
