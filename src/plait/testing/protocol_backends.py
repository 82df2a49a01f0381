"""Loopback backends for the other protocols, telling who answered: a gRPC server and a TLS server.

Flows in: a name, a 127.x.y.z address and a port (and, for TLS, a certificate and key). Flows out:
answers that name the backend, and a record of what it received, for tests to assert on.

`GrpcBackend` serves every method (a generic handler, no generated code): the reply to a unary call
is JSON ``{"name", "method", "metadata"}`` (the call's method path and its request metadata), and
the calls are kept in `calls`. `TlsBackend` terminates TLS and sends ``<name> <sni>\\n`` (the server
name the client asked for), then echoes. Both are context managers, like `plait.testing.backends`.

Tests using these start agents (fork, then exec) while gRPC threads serve; importing `plait` turns
gRPC's fork handlers off, which would otherwise run in the forked child and may abort it.
"""

from __future__ import annotations

import json
import socketserver
import ssl
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from plait.testing.backends import CONNECTION_TIMEOUT, _Backend, _ThreadingTCPServer


@dataclass(frozen=True)
class GrpcCall:
    method: str  # /<service>/<method>
    metadata: dict[str, str]


class GrpcBackend:
    """A gRPC server (HTTP/2 without TLS) at ``address:port`` answering every method with its name."""

    def __init__(self, name: str, address: str, port: int):
        self.name, self.address, self.port = name, address, port
        self.calls: list[GrpcCall] = []
        self.lock = threading.Lock()
        self._server: grpc.Server | None = None

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()

    def _answer(self, request: bytes, context: grpc.ServicerContext, method: str) -> bytes:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self.lock:
            self.calls.append(GrpcCall(method, metadata))
        return json.dumps({"name": self.name, "method": method, "metadata": metadata}).encode()

    def __enter__(self) -> GrpcBackend:
        backend = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                method = details.method
                return grpc.unary_unary_rpc_method_handler(lambda req, ctx: backend._answer(req, ctx, method))

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[Handler()])
        if not self._server.add_insecure_port(f"{self.address}:{self.port}"):
            raise OSError(f"gRPC backend {self.name} cannot listen on {self.address}:{self.port}")
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server:
            self._server.stop(grace=None)
            self._server = None


def grpc_call(
    address: str, port: int, method: str, *, authority: str, metadata: dict[str, str] | None = None, timeout: float = 10
) -> tuple[dict, dict[str, str]]:
    """One unary call over plaintext HTTP/2 → (the backend's JSON reply, the response's initial metadata).
    Raises grpc.RpcError when the call fails (e.g. no route: UNIMPLEMENTED)."""
    options = [("grpc.default_authority", authority), ("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"{address}:{port}", options=options) as channel:
        call = channel.unary_unary(method)
        reply, outcome = call.with_call(b"", metadata=list((metadata or {}).items()), timeout=timeout)
        return json.loads(reply), {k: v for k, v in outcome.initial_metadata() if isinstance(v, str)}


class TlsBackend(_Backend):
    """A TLS server at ``address:port`` (`cert`/`key` PEM files) that sends ``<name> <sni>\\n``, then echoes."""

    server_class = _ThreadingTCPServer

    def __init__(self, name: str, address: str, port: int, cert: Path, key: Path):
        self.name, self.address, self.port = name, address, port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.sni_callback = lambda sock, server_name, _ctx: setattr(sock, "sni", server_name)
        self.connections = 0
        self.lock = threading.Lock()

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        backend = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(CONNECTION_TIMEOUT)
                try:
                    with backend.context.wrap_socket(self.request, server_side=True) as tls:
                        with backend.lock:
                            backend.connections += 1
                        sni = getattr(tls, "sni", None) or "-"
                        tls.sendall(f"{backend.name} {sni}\n".encode())
                        while data := tls.recv(65536):
                            tls.sendall(data)
                except (TimeoutError, ConnectionError, ssl.SSLError):
                    pass

        return Handler
