"""End-to-end harness: Istio YAML → plait's translation → a real Envoy → real loopback backends.

Each test gets a `mesh`: a ``127.0.N`` subnet of its own (see
`plait.testing.backends.loopback_subnet`), backends on it, and Envoys started
from `static_bootstrap` of what plait generates for a proxy. The client
sidecar is in explicit-proxy mode at ``127.0.N.1``: requests go to its HTTP
proxy listener (port 15001) with an absolute URL, as HTTP_PROXY clients send
them. Everything started is stopped when the test ends.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.testing.backends import HttpBackend, TcpBackend, loopback_subnet
from plait.testing.envoy import EnvoyProcess, run_envoy
from plait.testing.http import REQUEST_TIMEOUT, Reply, http_request  # noqa: F401 (tests import them from here)
from plait.xds.generator import generate
from plait.xds.static import static_bootstrap

BACKEND_PORT = 8080
CLIENT_HOST = 1  # the client sidecar (and gateway) is 127.0.N.1


class Sidecar:
    """A running client sidecar in explicit-proxy mode."""

    def __init__(self, envoy: EnvoyProcess, ip: str):
        self.envoy, self.ip = envoy, ip

    def get(self, url: str, headers: dict[str, str] | None = None, timeout: float = REQUEST_TIMEOUT) -> Reply:
        """GET `url` (``http://reviews:9080/``) through the sidecar's HTTP proxy listener."""
        return http_request(self.ip, EXPLICIT_PROXY_PORT, url, headers, timeout=timeout)


class Gateway:
    """A running ingress gateway whose servers bind ``ip``."""

    def __init__(self, envoy: EnvoyProcess, ip: str):
        self.envoy, self.ip = envoy, ip

    def get(self, port: int, path: str, host: str, timeout: float = REQUEST_TIMEOUT) -> Reply:
        """GET `path` from the gateway's `port` with ``Host: <host>``, as a browser would."""
        return http_request(self.ip, port, path, {"Host": host}, timeout=timeout)

    def connect(self, port: int, timeout: float = REQUEST_TIMEOUT) -> socket.socket:
        """A TCP connection to the gateway's `port`."""
        return socket.create_connection((self.ip, port), timeout=timeout)


class Mesh:
    """Backends and Envoys for one test, all on the subnet ``net`` (``127.0.N``)."""

    def __init__(self, stack: contextlib.ExitStack, net: str, workdir: Path):
        self.stack, self.net, self.workdir = stack, net, workdir
        self.client_ip = f"{net}.{CLIENT_HOST}"

    def http_backend(self, name: str, host: int, **behaviour) -> HttpBackend:
        """An HTTP backend at ``127.0.N.<host>:8080``; `behaviour` as `HttpBackend` takes it."""
        return self.stack.enter_context(HttpBackend(name, f"{self.net}.{host}", BACKEND_PORT, **behaviour))

    def tcp_backend(self, name: str, host: int, port: int) -> TcpBackend:
        return self.stack.enter_context(TcpBackend(name, f"{self.net}.{host}", port))

    def direct(self, backend: HttpBackend, path: str, headers: dict[str, str] | None = None) -> Reply:
        """A request straight to a backend, bypassing Envoy."""
        return http_request(backend.address, backend.port, path, headers)

    def envoy(self, proxy: Proxy, *yaml_parts: str) -> EnvoyProcess:
        """Load the YAML, translate it for `proxy`, and run Envoy on the static bootstrap."""
        resources = load_text("---\n".join(yaml_parts)).raise_for_errors()
        bootstrap = static_bootstrap(generate(MeshSnapshot(resources), proxy))
        return self.stack.enter_context(run_envoy(bootstrap, workdir=self.workdir / proxy.name))

    def sidecar(self, *yaml_parts: str) -> Sidecar:
        """The client's sidecar (explicit-proxy mode) at ``127.0.N.1``."""
        proxy = Proxy(kind="sidecar", ip=self.client_ip, name="client", namespace="default", mode="proxy")
        return Sidecar(self.envoy(proxy, *yaml_parts), self.client_ip)

    def ingress_gateway(self, *yaml_parts: str) -> Gateway:
        """An ingress gateway (labels ``istio: ingressgateway``); its servers should ``bind: 127.0.N.1``."""
        proxy = Proxy(
            kind="router",
            ip=self.client_ip,
            name="istio-ingressgateway",
            namespace="istio-system",
            labels={"istio": "ingressgateway"},
        )
        return Gateway(self.envoy(proxy, *yaml_parts), self.client_ip)


@pytest.fixture
def mesh(tmp_path: Path):
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        yield Mesh(stack, net, tmp_path)
