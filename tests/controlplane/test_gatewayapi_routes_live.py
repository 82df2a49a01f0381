"""GRPCRoute, TCPRoute and TLSRoute with real processes: `plait control-plane` reads a Gateway of class
istio with an HTTP, a TCP and a TLS Passthrough listener, a `plait agent` runs its proxy, and loopback
backends answer: real gRPC calls routed by method and header (Envoy speaks HTTP/2 to the backends
because their Service port is named grpc), bytes through a weighted TCPRoute, and TLS connections
routed by SNI to the backend that terminates them. `plait get` shows the routes' status."""

from __future__ import annotations

import collections
import socket
import ssl
from pathlib import Path

import grpc
import pytest
import yaml

from plait.testing.backends import TcpBackend, loopback_subnet
from plait.testing.live import AgentProcess, ControlPlaneProcess, free_port, run_plait, wait_until
from plait.testing.protocol_backends import GrpcBackend, TlsBackend, grpc_call

CONVERGE = 10.0
CERTS = Path(__file__).parents[1] / "xds" / "testdata" / "certs"
CERT, KEY = CERTS / "cert.pem", CERTS / "key.pem"


def config(net: str, http: int, tcp: int, tls: int, tls_terminate: int) -> str:
    backends = {"greeter-v1": 11, "greeter-v2": 12, "db-v1": 21, "db-v2": 22, "secure-a": 31, "secure-b": 32}
    ports = {"greeter": ("grpc", 50051), "db": ("tcp", 5432), "secure": ("tls", 8443)}
    services = "".join(
        f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{selector: {{app: {name}}}, ports: [{{name: {ports[name.split("-")[0]][0]}, port: {ports[name.split("-")[0]][1]}}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}}}
spec: {{address: {net}.{i}, labels: {{app: {name}}}}}
"""
        for name, i in backends.items()
    )
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: http, port: {http}, protocol: HTTP, hostname: "*.example.com"}}
  - {{name: tcp, port: {tcp}, protocol: TCP}}
  - {{name: tls, port: {tls}, protocol: TLS, hostname: "*.example.com", tls: {{mode: Passthrough}}}}
  - name: tls-terminate
    port: {tls_terminate}
    protocol: TLS
    tls: {{mode: Terminate, certificateRefs: [{{name: store-cert}}]}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: db-tls}}
spec:
  parentRefs: [{{name: web, sectionName: tls-terminate}}]
  rules: [{{backendRefs: [{{name: db-v2, port: 5432}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: greeter}}
spec:
  parentRefs: [{{name: web}}]
  hostnames: [grpc.example.com]
  rules:
  - matches:
    - method: {{service: helloworld.Greeter, method: SayHello}}
      headers: [{{name: x-canary, value: "true"}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-route, value: canary}}]}}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{add: [{{name: x-served-by, value: v2}}]}}
    backendRefs: [{{name: greeter-v2, port: 50051}}]
  - matches: [{{method: {{type: RegularExpression, service: "helloworld\\\\..*", method: "Say.*"}}}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: greeter-v2, port: 50051}}}}
    backendRefs: [{{name: greeter-v1, port: 50051}}]
  - matches: [{{method: {{service: grpc.health.v1.Health}}}}]
    backendRefs:
    - {{name: greeter-v1, port: 50051, weight: 80}}
    - {{name: greeter-v2, port: 50051, weight: 20}}
  - matches: [{{method: {{service: split.Half}}}}]
    backendRefs:
    - {{name: greeter-v1, port: 50051, weight: 1}}
    - {{name: greeter-gone, port: 50051, weight: 1}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: db}}
spec:
  parentRefs: [{{name: web, sectionName: tcp}}]
  rules:
  - backendRefs:
    - {{name: db-v1, port: 5432, weight: 50}}
    - {{name: db-v2, port: 5432, weight: 50}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: secure-a}}
spec:
  parentRefs: [{{name: web, sectionName: tls}}]
  hostnames: [a.example.com]
  rules: [{{backendRefs: [{{name: secure-a, port: 8443}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: secure-b}}
spec:
  parentRefs: [{{name: web, sectionName: tls}}]
  hostnames: [b.example.com]
  rules: [{{backendRefs: [{{name: secure-b, port: 8443}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: misplaced}}
spec:
  parentRefs: [{{name: web, sectionName: http}}]
  rules: [{{backendRefs: [{{name: db-v1, port: 5432}}]}}]
{services}"""


def store_secret() -> str:
    """The TLS Terminate listener's certificate (the goldens' test certificate, for store.example.com)."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "store-cert", "namespace": "default"},
            "stringData": {"tls.crt": CERT.read_text(), "tls.key": KEY.read_text()},
        }
    )


class Gateway:
    def __init__(self, net: str, ports: tuple[int, ...], cp: ControlPlaneProcess, backends: dict):
        self.net, (self.http, self.tcp, self.tls, self.tls_terminate), self.cp = net, ports, cp
        self.backends = backends
        self.address = f"{net}.2"

    def call(self, method: str, metadata: dict[str, str] | None = None) -> tuple[dict, dict[str, str]]:
        return grpc_call(self.address, self.http, method, authority="grpc.example.com", metadata=metadata)

    def tcp_exchange(self, payload: bytes) -> tuple[str, bytes]:
        """Connect through the TCP listener: (the backend's banner, what it echoed of `payload`)."""
        with socket.create_connection((self.address, self.tcp), timeout=10) as conn:
            reader = conn.makefile("rb")
            banner = reader.readline().decode().strip()
            conn.sendall(payload)
            return banner, reader.read(len(payload))

    def tls_hello(self, sni: str) -> str:
        """A TLS connection with `sni` through the passthrough listener: the terminating backend's line."""
        context = ssl.create_default_context(cafile=CERT)
        context.check_hostname = False  # the test certificate names store.example.com; routing is by SNI
        with socket.create_connection((self.address, self.tls), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=sni) as conn:
                return conn.makefile("rb").readline().decode().strip()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gatewayapi-routes")
    ports = (free_port(), free_port(), free_port(), free_port())
    with loopback_subnet() as net, ControlPlaneProcess(workdir / "mesh", workdir) as cp:
        cp.apply(config(net, *ports) + "---\n" + store_secret())
        backends = {
            "greeter-v1": GrpcBackend("greeter-v1", f"{net}.11", 50051),
            "greeter-v2": GrpcBackend("greeter-v2", f"{net}.12", 50051),
            "db-v1": TcpBackend("db-v1", f"{net}.21", 5432),
            "db-v2": TcpBackend("db-v2", f"{net}.22", 5432),
            "secure-a": TlsBackend("secure-a", f"{net}.31", 8443, CERT, KEY),
            "secure-b": TlsBackend("secure-b", f"{net}.32", 8443, CERT, KEY),
        }
        for b in backends.values():
            b.__enter__()
        labels = {"gateway.networking.k8s.io/gateway-name": "web"}
        agent = AgentProcess(cp, workdir, mode="gateway", name="web-istio", ip=f"{net}.2", labels=labels, xds="delta")
        try:
            agent.start()
            gw = Gateway(net, ports, cp, backends)
            wait_until(lambda: cp.synced(agent.proxy_id), CONVERGE, "web-istio SYNCED", interval=0.1)
            wait_until(lambda: _served(gw), CONVERGE, "gRPC routes served", interval=0.2)
            yield gw
        finally:
            agent.stop()
            for b in backends.values():
                b.__exit__(None, None, None)


def _served(gw: Gateway) -> bool:
    try:
        return gw.call("/helloworld.Greeter/SayHello")[0]["name"] == "greeter-v1"
    except grpc.RpcError:
        return False


def test_grpc_exact_method_and_header_match_with_header_modifiers(gateway: Gateway) -> None:
    reply, initial = gateway.call("/helloworld.Greeter/SayHello", {"x-canary": "true"})
    assert reply["name"] == "greeter-v2"
    assert reply["metadata"]["x-route"] == "canary"  # RequestHeaderModifier
    assert initial["x-served-by"] == "v2"  # ResponseHeaderModifier


def test_grpc_regular_expression_method_match_and_mirror(gateway: Gateway) -> None:
    mirror = gateway.backends["greeter-v2"]
    mirror.reset()
    reply, _ = gateway.call("/helloworld.Greeter/SayGoodbye")
    assert (reply["name"], reply["method"]) == ("greeter-v1", "/helloworld.Greeter/SayGoodbye")
    wait_until(lambda: any(c.method == "/helloworld.Greeter/SayGoodbye" for c in mirror.calls), 5, "the mirrored call")


def test_grpc_service_match_splits_by_weight(gateway: Gateway) -> None:
    landed = collections.Counter(gateway.call("/grpc.health.v1.Health/Check")[0]["name"] for _ in range(100))
    assert set(landed) == {"greeter-v1", "greeter-v2"}, landed
    assert 60 <= landed["greeter-v1"] <= 97, landed  # 80 expected; bounds ~5 standard deviations


def test_grpc_invalid_backend_fails_its_share_of_calls(gateway: Gateway) -> None:
    """The Gateway API's rule: a missing backend answers 500 (gRPC: UNKNOWN) for its share of the weight."""
    outcomes = collections.Counter()
    for _ in range(100):
        try:
            outcomes[gateway.call("/split.Half/Call")[0]["name"]] += 1
        except grpc.RpcError as failed:
            outcomes[failed.code()] += 1
    assert set(outcomes) == {"greeter-v1", grpc.StatusCode.UNKNOWN}, outcomes
    assert 25 <= outcomes["greeter-v1"] <= 75, outcomes  # 50 expected; bounds 5 standard deviations


def test_grpc_method_without_a_rule_is_not_routed(gateway: Gateway) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        gateway.call("/other.Service/Call")
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED  # Envoy's 404, as gRPC maps it


def test_tcp_route_carries_bytes_and_splits_connections(gateway: Gateway) -> None:
    payload = b"select 1;\n" * 1000
    banners = collections.Counter()
    for _ in range(40):
        banner, echoed = gateway.tcp_exchange(payload)
        assert echoed == payload
        banners[banner] += 1
    assert set(banners) == {"db-v1", "db-v2"}, banners
    assert 8 <= banners["db-v1"] <= 32, banners  # 20 expected; bounds ~4 standard deviations


def test_tls_route_sends_each_sni_to_its_backend(gateway: Gateway) -> None:
    assert gateway.tls_hello("a.example.com") == "secure-a a.example.com"
    assert gateway.tls_hello("b.example.com") == "secure-b b.example.com"
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        gateway.tls_hello("c.example.com")  # no TLSRoute for this name: the gateway closes the connection


def test_tcp_route_behind_a_tls_terminate_listener(gateway: Gateway) -> None:
    """The gateway terminates TLS with the Secret's certificate and proxies the plain bytes."""
    context = ssl.create_default_context(cafile=CERT)  # the test certificate is self-signed
    with socket.create_connection((gateway.address, gateway.tls_terminate), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="store.example.com") as conn:
            reader = conn.makefile("rb")
            assert reader.readline() == b"db-v2\n"
            conn.sendall(b"over tls\n")
            assert reader.readline() == b"over tls\n"


def test_get_shows_the_routes_status(gateway: Gateway) -> None:
    for kind, expected in (
        ("grpcroute", "web: Accepted ResolvedRefs=False(BackendNotFound)"),
        ("tlsroute", "web: Accepted ResolvedRefs"),
        ("tcproute", "web: Accepted=False(NotAllowedByListeners)"),
    ):
        got = run_plait("get", kind, "--control-plane", gateway.cp.api.base, cwd=gateway.cp.workdir)
        assert got.returncode == 0, got.stderr
        assert expected in got.stdout, got.stdout
    gw = run_plait("get", "gtw", "-o", "yaml", "--control-plane", gateway.cp.api.base, cwd=gateway.cp.workdir)
    assert "kind: TLSRoute" in gw.stdout and "attachedRoutes: 2" in gw.stdout, gw.stdout
