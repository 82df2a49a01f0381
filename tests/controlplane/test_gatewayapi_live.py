"""The Gateway API with real processes: `plait control-plane` reads a Gateway of class istio and
HTTPRoutes, a `plait agent` runs the Gateway's proxy (labelled gateway.networking.k8s.io/gateway-name,
as Istio's deployed gateways are), loopback backends answer. Matches, filters and weights are checked
on real traffic; `plait get` shows the routes' status; deleting a ReferenceGrant turns a cross-namespace
backend into 500."""

from __future__ import annotations

import collections
import ssl
from pathlib import Path

import pytest
import yaml
from test_live import https_get  # same directory

from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.http import http_request
from plait.testing.live import AgentProcess, ControlPlaneProcess, free_port, run_plait, wait_until

CONVERGE = 10.0
CERTS = Path(__file__).parents[1] / "xds" / "testdata" / "certs"
CERT, KEY = CERTS / "cert.pem", CERTS / "key.pem"


def config(net: str, port: int, tls_port: int) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: http, port: {port}, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {{namespaces: {{from: All}}}}}}
  - name: https
    port: {tls_port}
    protocol: HTTPS
    hostname: store.example.com
    tls: {{certificateRefs: [{{name: store-cert}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: store}}
spec:
  parentRefs: [{{name: web}}]
  hostnames: [store.example.com]
  rules:
  - matches: [{{path: {{type: Exact, value: /login}}, method: POST}}]
    backendRefs: [{{name: store-v1, port: 8080}}]
  - matches:
    - path: {{type: PathPrefix, value: /v2}}
      headers: [{{name: x-canary, value: "true"}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-route, value: canary}}], remove: [x-remove-me]}}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{add: [{{name: x-served-by, value: v2}}]}}
    - type: URLRewrite
      urlRewrite: {{hostname: store.internal, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}
    backendRefs: [{{name: store-v2, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{scheme: https, hostname: shop.example.com, statusCode: 301}}
  - matches: [{{path: {{type: PathPrefix, value: /mirror}}}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: store-v2, port: 8080}}}}
    backendRefs: [{{name: store-v1, port: 8080}}]
  - backendRefs:
    - {{name: store-v1, port: 8080, weight: 80}}
    - {{name: store-v2, port: 8080, weight: 20}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: other, namespace: other}}
spec:
  parentRefs: [{{name: web, namespace: default}}]
  hostnames: [other.example.com]
  rules:
  - backendRefs: [{{name: store-v1, namespace: default, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: store-v1}}
spec: {{selector: {{app: store, version: v1}}, ports: [{{name: http, port: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: store-v2}}
spec: {{selector: {{app: store, version: v2}}, ports: [{{name: http, port: 8080}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: store-v1}}
spec: {{address: {net}.11, labels: {{app: store, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: store-v2}}
spec: {{address: {net}.12, labels: {{app: store, version: v2}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews}}
spec: {{selector: {{app: reviews}}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews-v1}}
spec: {{selector: {{app: reviews, version: v1}}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews-v2}}
spec: {{selector: {{app: reviews, version: v2}}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v1}}
spec: {{address: {net}.21, labels: {{app: reviews, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v2}}
spec: {{address: {net}.22, labels: {{app: reviews, version: v2}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reviews}}
spec:
  parentRefs: [{{group: "", kind: Service, name: reviews, port: 9080}}]
  rules:
  - backendRefs:
    - {{name: reviews-v1, port: 9080, weight: 80}}
    - {{name: reviews-v2, port: 9080, weight: 20}}
"""


def store_secret() -> str:
    """The HTTPS listener's certificate (the goldens' test certificate, for store.example.com)."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "store-cert", "namespace": "default"},
            "stringData": {"tls.crt": CERT.read_text(), "tls.key": KEY.read_text()},
        }
    )


GRANT = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: other-routes, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: other}]
  to: [{group: "", kind: Service}]
"""


class Gateway:
    def __init__(self, net: str, ports: tuple[int, int], cp: ControlPlaneProcess, backends: dict[str, HttpBackend]):
        self.net, (self.port, self.tls_port), self.cp, self.backends = net, ports, cp, backends

    def from_client(self, url: str):
        """A request from the client workload, through its sidecar (explicit-proxy mode)."""
        return http_request(f"{self.net}.1", EXPLICIT_PROXY_PORT, url, timeout=15)

    def request(self, path: str, host: str = "store.example.com", method: str = "GET", headers: dict | None = None):
        return http_request(f"{self.net}.2", self.port, path, {"host": host, **(headers or {})}, method, timeout=15)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gatewayapi")
    ports = (free_port(), free_port())
    with loopback_subnet() as net, ControlPlaneProcess(workdir / "mesh", workdir) as cp:
        cp.apply(config(net, *ports) + "---\n" + GRANT + "---\n" + store_secret())
        addresses = {"store-v1": (11, 8080), "store-v2": (12, 8080), "reviews-v1": (21, 9080), "reviews-v2": (22, 9080)}
        backends = {name: HttpBackend(name, f"{net}.{i}", port) for name, (i, port) in addresses.items()}
        for b in backends.values():
            b.__enter__()
        labels = {"gateway.networking.k8s.io/gateway-name": "web"}
        agents = [
            AgentProcess(cp, workdir, mode="gateway", name="web-istio", ip=f"{net}.2", labels=labels, xds="delta"),
            AgentProcess(cp, workdir, mode="proxy", name="client", ip=f"{net}.1", labels={"app": "client"}),
        ]
        try:
            for agent in agents:
                agent.start()
            gw = Gateway(net, ports, cp, backends)
            for agent in agents:
                wait_until(lambda a=agent: cp.synced(a.proxy_id), CONVERGE, f"{agent.name} SYNCED", interval=0.1)
            wait_until(lambda: _status(gw, "/login", method="POST") == 200, CONVERGE, "routes served", interval=0.1)
            yield gw
        finally:
            for agent in agents:
                agent.stop()
            for b in backends.values():
                b.__exit__(None, None, None)


def _status(gw: Gateway, path: str, **kw) -> int:
    try:
        return gw.request(path, **kw).status
    except OSError:
        return 0


def test_exact_path_and_method(gateway: Gateway) -> None:
    assert gateway.request("/login", method="POST").backend == "store-v1"
    # GET /login falls to the weighted rule; both backends are possible there
    assert gateway.request("/login").backend in ("store-v1", "store-v2")


def test_prefix_header_match_with_header_modifiers_and_rewrite(gateway: Gateway) -> None:
    backend = gateway.backends["store-v2"]
    backend.reset()
    reply = gateway.request("/v2/items", headers={"x-canary": "true", "x-remove-me": "1"})
    assert (reply.status, reply.backend, reply.headers.get("x-served-by")) == (200, "store-v2", "v2")
    seen = backend.requests[-1]
    assert (seen.path, seen.headers["host"], seen.headers["x-route"]) == ("/items", "store.internal", "canary")
    assert "x-remove-me" not in seen.headers
    # PathPrefix is by whole segment: /v2x is not below /v2
    backend.reset()
    gateway.request("/v2x", headers={"x-canary": "true"})
    assert not backend.requests or backend.requests[-1].path == "/v2x"


def test_redirect(gateway: Gateway) -> None:
    reply = gateway.request("/old/page")
    assert (reply.status, reply.headers["location"]) == (301, "https://shop.example.com/old/page")


def test_mirror(gateway: Gateway) -> None:
    mirror = gateway.backends["store-v2"]
    mirror.reset()
    assert gateway.request("/mirror/x").backend == "store-v1"
    wait_until(lambda: any(r.path == "/mirror/x" for r in mirror.requests), 5, "the mirrored request")


def test_weights_split_about_80_20(gateway: Gateway) -> None:
    landed = collections.Counter(gateway.request(f"/split/{i}").backend for i in range(200))
    assert set(landed) == {"store-v1", "store-v2"}
    assert 120 <= landed["store-v1"] <= 190, landed  # 160 expected; bounds ~5 standard deviations


def test_cross_namespace_backend_follows_the_reference_grant(gateway: Gateway) -> None:
    assert gateway.request("/", host="other.example.com").backend == "store-v1"
    gateway.cp.delete(GRANT)
    try:
        wait_until(lambda: _status(gateway, "/", host="other.example.com") == 500, CONVERGE, "500 without the grant")
        got = run_plait(
            "get", "httproute", "-n", "other", "--control-plane", gateway.cp.api.base, cwd=gateway.cp.workdir
        )
        assert got.returncode == 0, got.stderr
        assert "ResolvedRefs=False(RefNotPermitted)" in got.stdout, got.stdout
    finally:
        gateway.cp.apply(GRANT)
    wait_until(lambda: _status(gateway, "/", host="other.example.com") == 200, CONVERGE, "200 with the grant again")


def test_get_shows_gateway_and_route_status(gateway: Gateway) -> None:
    got = run_plait("get", "gtw", "-o", "yaml", "--control-plane", gateway.cp.api.base, cwd=gateway.cp.workdir)
    assert got.returncode == 0, got.stderr
    assert "kind: Gateway" in got.stdout and "attachedRoutes: 2" in got.stdout, got.stdout
    table = run_plait("get", "httproute", "--control-plane", gateway.cp.api.base, cwd=gateway.cp.workdir)
    assert "web: Accepted ResolvedRefs" in table.stdout, table.stdout


def test_https_listener_serves_the_secret_certificate(gateway: Gateway) -> None:
    cert = CERT.read_text()
    status, body, served = https_get(f"{gateway.net}.2", gateway.tls_port, "store.example.com", cert)
    assert status == 200 and b"store-v" in body
    assert served == ssl.PEM_cert_to_DER_cert(cert)


def test_gamma_route_splits_a_service_80_20_for_sidecars(gateway: Gateway) -> None:
    landed = collections.Counter(gateway.from_client(f"http://reviews:9080/{i}").backend for i in range(200))
    assert set(landed) == {"reviews-v1", "reviews-v2"}, landed
    assert 120 <= landed["reviews-v1"] <= 190, landed  # 160 expected; bounds ~5 standard deviations
