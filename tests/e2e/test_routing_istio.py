"""Routing behaviours that must be Istio's, through a real Envoy and checked against the simulation:
the default route when a VirtualService has no route for a client, JWT claim routing at a gateway,
retry settings, weights that do not add up to 100."""

from __future__ import annotations

import contextlib
import math
import socket
import threading

import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.testing.backends import service_yaml
from plait.testing.http import Reply, http_request
from plait.xds.simulate import Outcome, Request, simulate_mesh

REVIEWS_SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

CANARY_ONLY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: canary}}]
    route: [{destination: {host: reviews, subset: v2}}]
"""


class LabelledSidecar:
    """A client sidecar (explicit-proxy mode) with labels, and the simulation of the same mesh."""

    def __init__(self, mesh, labels: dict[str, str], *yaml_parts: str):
        self.proxy = Proxy(
            kind="sidecar", ip=mesh.client_ip, name="client", namespace="default", mode="proxy", labels=labels
        )
        self.snapshot = MeshSnapshot(load_text("---\n".join(yaml_parts)).raise_for_errors())
        self.envoy, self.ip = mesh.envoy(self.proxy, *yaml_parts), mesh.client_ip

    def get(self, url: str, headers: dict[str, str] | None = None) -> Reply:
        return http_request(self.ip, EXPLICIT_PROXY_PORT, url, headers)

    def simulate(self, url: str, headers: dict[str, str] | None = None) -> Outcome:
        return simulate_mesh(self.snapshot, self.proxy, Request.from_url(url, headers=(headers or {}).items()))


@pytest.mark.parametrize(
    ("labels", "expected"),
    [({"app": "canary"}, {"reviews-v2"}), ({"app": "client"}, {"reviews-v1", "reviews-v2"})],
    ids=["matching-source", "other-source"],
)
def test_a_virtual_service_with_no_route_for_the_client_leaves_the_default_route(mesh, labels, expected):
    v1, v2 = mesh.http_backend("reviews-v1", 11), mesh.http_backend("reviews-v2", 12)
    sidecar = LabelledSidecar(
        mesh, labels, service_yaml("reviews", 9080, {"v1": v1, "v2": v2}), REVIEWS_SUBSETS, CANARY_ONLY
    )
    answers = {sidecar.get("http://reviews:9080/reviews/1").backend for _ in range(12)}
    assert answers == expected  # 12 round-robin requests reach both versions
    simulated = sidecar.simulate("http://reviews:9080/reviews/1")
    if labels["app"] == "canary":
        assert (simulated.virtual_service, simulated.cluster_names) == (
            "default/reviews",
            ["outbound|9080|v2|reviews.default.svc.cluster.local"],
        )
    else:
        assert (simulated.route, simulated.virtual_service, simulated.cluster_names) == (
            "default",
            None,
            ["outbound|9080||reviews.default.svc.cluster.local"],
        )


UNEVEN_WEIGHTS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 1}
    - {destination: {host: reviews, subset: v2}, weight: 3}
    - {destination: {host: reviews, subset: v2}, weight: 0}
"""


def test_weights_that_do_not_add_up_to_100_are_shares_of_their_sum(mesh):
    v1, v2 = mesh.http_backend("reviews-v1", 11), mesh.http_backend("reviews-v2", 12)
    sidecar = LabelledSidecar(
        mesh, {"app": "client"}, service_yaml("reviews", 9080, {"v1": v1, "v2": v2}), REVIEWS_SUBSETS, UNEVEN_WEIGHTS
    )
    simulated = sidecar.simulate("http://reviews:9080/")
    assert [(c.weight, c.percent) for c in simulated.clusters] == [(1, 25.0), (3, 75.0)]  # weight 0 dropped
    total = 400
    to_v1 = [sidecar.get("http://reviews:9080/").backend for _ in range(total)].count("reviews-v1")
    sigma = math.sqrt(total * 0.25 * 0.75)
    assert abs(to_v1 - 0.25 * total) <= 4.5 * sigma, f"{to_v1}/{total} went to v1"


RETRIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 3, retryOn: "5xx", backoff: 5ms, retryIgnorePreviousHosts: false,
              retryRemoteLocalities: true}
"""


def test_retries_with_backoff_same_host_and_remote_localities_hide_failures(mesh):
    reviews = mesh.http_backend("reviews-v1", 11, fail_first=2, fail_status=500)
    sidecar = LabelledSidecar(mesh, {"app": "client"}, service_yaml("reviews", 9080, {"v1": reviews}), RETRIES)
    reply = sidecar.get("http://reviews:9080/")
    assert (reply.status, reply.backend) == (200, "reviews-v1")
    # one host and retries allowed back on it: the third try succeeds there
    assert [r.headers["x-envoy-attempt-count"] for r in reviews.requests] == ["1", "2", "3"]
    retries = sidecar.simulate("http://reviews:9080/").policies.retries
    assert (retries.attempts, retries.retry_on) == (3, "5xx")
    assert retries.how == ["possibly on the same host", "each in the next locality priority", "backoff from 0.005s"]


DELEGATION = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-root}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /reviews}}]
    delegate: {name: reviews-routes}
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /reviews/moved, authority: reviews.default, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /legacy/}}]
    redirect: {prefixRewrite: /reviews/, redirectCode: 308}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-routes}
spec:
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /elsewhere}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""


def test_a_delegate_virtual_services_routes_serve_under_the_roots_match(mesh):
    v1, v2 = mesh.http_backend("reviews-v1", 11), mesh.http_backend("reviews-v2", 12)
    sidecar = LabelledSidecar(
        mesh, {"app": "client"}, service_yaml("reviews", 9080, {"v1": v1, "v2": v2}), REVIEWS_SUBSETS, DELEGATION
    )
    cases = [
        ("/reviews/1", {"end-user": "jason"}, "reviews-v2", "http[0].delegate[default/reviews-routes].http[0]"),
        ("/reviews/1", {}, "reviews-v1", "http[0].delegate[default/reviews-routes].http[2]"),
        ("/elsewhere", {}, None, None),
    ]  # outside the root's /reviews: the delegate's route was dropped
    for path, headers, backend, rule in cases:
        reply, simulated = (
            sidecar.get(f"http://reviews:9080{path}", headers),
            sidecar.simulate(f"http://reviews:9080{path}", headers),
        )
        assert (reply.backend, simulated.vs_route and simulated.vs_route.rsplit(".match", 1)[0]) == (backend, rule)
        if backend is None:
            assert (reply.status, simulated.status) == (404, 404)
    moved = sidecar.get("http://reviews:9080/old")
    # a new authority drops the request's port; derivePort FROM_REQUEST_PORT puts the listener's back
    assert (moved.status, moved.headers["location"]) == (301, "http://reviews.default:9080/reviews/moved")
    assert sidecar.simulate("http://reviews:9080/old").location == "http://reviews.default:9080/reviews/moved"
    renamed = sidecar.get("http://reviews:9080/legacy/7?x=1")
    assert (renamed.status, renamed.headers["location"]) == (308, "http://reviews:9080/reviews/7?x=1")
    assert sidecar.simulate("http://reviews:9080/legacy/7?x=1").location == "http://reviews:9080/reviews/7?x=1"


class FirstLineServer:
    """An HTTP/1.1 server on one address that records the first line of each connection (a PROXY
    protocol v1 header when the client sends one) and answers 200."""

    def __init__(self, address: str, port: int):
        self.address, self.port, self.lines = address, port, []  # lines: list[str]
        self.listener = socket.create_server((address, port))
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                        data += chunk
                    self.lines.append(data.split(b"\r\n", 1)[0].decode())
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    def __enter__(self) -> "FirstLineServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.listener.close()
        self.thread.join(timeout=5)


PROXY_PROTOCOL = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy}
spec:
  host: legacy
  trafficPolicy: {proxyProtocol: {version: V1}}
"""


def test_proxy_protocol_sends_the_clients_address_first(mesh):
    address = f"{mesh.net}.20"
    with FirstLineServer(address, 8080) as server:
        sidecar = LabelledSidecar(mesh, {"app": "client"}, service_yaml("legacy", 9080, {"v1": server}), PROXY_PROTOCOL)
        reply = sidecar.get("http://legacy:9080/")
        assert (reply.status, reply.body) == (200, b"ok")
        # the downstream connection's addresses: the test client, and the sidecar's proxy listener
        proxy, tcp4, source, destination, _, port = server.lines[0].split(" ")
        assert (proxy, tcp4, source, destination, port) == ("PROXY", "TCP4", "127.0.0.1", mesh.client_ip, "15001")


def test_a_grpc_timeout_header_times_the_request_out_as_istio_lets_it(mesh):
    slow = mesh.http_backend("reviews-v1", 11, delay=3.0)
    sidecar = LabelledSidecar(mesh, {"app": "client"}, service_yaml("reviews", 9080, {"v1": slow}))
    deadline = {"grpc-timeout": "200m", "content-type": "application/grpc"}
    reply = sidecar.get("http://reviews:9080/", deadline)  # no route timeout: the client's deadline holds
    assert (reply.backend, reply.headers.get("grpc-message")) == (None, "upstream request timeout")
    assert sidecar.simulate("http://reviews:9080/", deadline).policies.timeout == "0.2s (the grpc-timeout header 200m)"
    not_grpc = {"grpc-timeout": "200m"}  # Envoy reads the header on gRPC requests only
    assert sidecar.simulate("http://reviews:9080/", not_grpc).policies.timeout == "none (0s disables it)"


HOST_HEADER = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - headers: {request: {set: {host: reviews.internal, x-from: mesh}}}
    route: [{destination: {host: reviews}}]
"""


def test_setting_the_host_header_rewrites_the_host_as_istio_does(mesh):
    reviews = mesh.http_backend("reviews-v1", 11)
    sidecar = LabelledSidecar(mesh, {"app": "client"}, service_yaml("reviews", 9080, {"v1": reviews}), HOST_HEADER)
    assert sidecar.get("http://reviews:9080/reviews/1").backend == "reviews-v1"
    received = reviews.requests[0]
    assert (received.headers["host"], received.headers["x-from"], received.path) == (
        "reviews.internal",
        "mesh",
        "/reviews/1",
    )
    assert sidecar.simulate("http://reviews:9080/reviews/1").upstream_host == "reviews.internal"


TWO_VIRTUAL_SERVICES_ON_A_GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: public}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    bind: {gateway_ip}
    hosts: [shop.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a-site}}
spec:
  hosts: [shop.example.com]
  gateways: [public]
  http:
  - route: [{{destination: {{host: reviews, subset: v1, port: {{number: 9080}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b-api}}
spec:
  hosts: [shop.example.com]
  gateways: [public]
  http:
  - match: [{{uri: {{prefix: /api}}}}]
    route: [{{destination: {{host: reviews, subset: v2, port: {{number: 9080}}}}}}]
"""


def test_a_catch_all_of_one_virtual_service_does_not_hide_anothers_routes_on_a_gateway(mesh):
    v1, v2 = mesh.http_backend("reviews-v1", 11), mesh.http_backend("reviews-v2", 12)
    parts = (
        service_yaml("reviews", 9080, {"v1": v1, "v2": v2}),
        REVIEWS_SUBSETS,
        TWO_VIRTUAL_SERVICES_ON_A_GATEWAY.format(gateway_ip=mesh.client_ip),
    )
    gateway = mesh.ingress_gateway(*parts)
    snapshot = MeshSnapshot(load_text("---\n".join(parts)).raise_for_errors())
    proxy = Proxy(
        kind="router",
        ip=mesh.client_ip,
        name="istio-ingressgateway",
        namespace="istio-system",
        labels={"istio": "ingressgateway"},
    )
    for path, backend, vs in (("/api/items", "reviews-v2", "default/b-api"), ("/", "reviews-v1", "default/a-site")):
        assert gateway.get(80, path, "shop.example.com").backend == backend
        simulated = simulate_mesh(snapshot, proxy, Request.from_url(f"http://shop.example.com{path}"))
        assert (simulated.virtual_service, simulated.clusters[0].name.split("|")[2]) == (vs, backend[-2:])
