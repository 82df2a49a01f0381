"""HTTP routing through a real Envoy: header and URI matches, weighted splits, and the ingress gateway."""

from __future__ import annotations

import math

import pytest

from plait.testing.backends import service_yaml

REVIEWS_SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"""

HEADER_ROUTING = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
"""

URI_ROUTING = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts:
  - shop
  http:
  - match:
    - uri:
        exact: /login
    route:
    - destination:
        host: shop
        subset: auth
  - match:
    - uri:
        prefix: /api/
    route:
    - destination:
        host: shop
        subset: api
  - match:
    - uri:
        regex: "/items/[0-9]+"
    route:
    - destination:
        host: shop
        subset: items
  - route:
    - destination:
        host: shop
        subset: web
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: shop
spec:
  host: shop
  subsets:
  - name: auth
    labels:
      version: auth
  - name: api
    labels:
      version: api
  - name: items
    labels:
      version: items
  - name: web
    labels:
      version: web
"""

WEIGHTED_SPLIT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 80
    - destination:
        host: reviews
        subset: v2
      weight: 20
"""

INGRESS = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    bind: {gateway_ip}
    hosts:
    - "bookinfo.example.com"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "bookinfo.example.com"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        prefix: /reviews
    route:
    - destination:
        host: reviews
        port:
          number: 9080
        subset: v2
"""

REGISTRY_ONLY = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
spec:
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
"""


def test_header_match_routes_jason_to_v2_and_everyone_else_to_v1(mesh):
    v1, v2 = mesh.http_backend("reviews-v1", 11), mesh.http_backend("reviews-v2", 12)
    sidecar = mesh.sidecar(service_yaml("reviews", 9080, {"v1": v1, "v2": v2}), REVIEWS_SUBSETS, HEADER_ROUTING)

    for _ in range(5):
        assert sidecar.get("http://reviews:9080/reviews/1", {"end-user": "jason"}).backend == "reviews-v2"
        assert sidecar.get("http://reviews:9080/reviews/1", {"end-user": "alice"}).backend == "reviews-v1"
        assert sidecar.get("http://reviews:9080/reviews/1").backend == "reviews-v1"
    assert v2.requests[0].headers["end-user"] == "jason"
    assert v1.requests[0].path == "/reviews/1"


def test_uri_exact_prefix_and_regex_matches(mesh):
    backends = {
        name: mesh.http_backend(f"shop-{name}", host)
        for name, host in (("auth", 11), ("api", 12), ("items", 13), ("web", 14))
    }
    sidecar = mesh.sidecar(service_yaml("shop", 9080, backends), URI_ROUTING)

    expected = {
        "/login": "shop-auth",
        "/login/again": "shop-web",  # exact means exact
        "/api/v1/carts": "shop-api",
        "/api": "shop-web",  # the prefix is "/api/"
        "/items/42": "shop-items",
        "/items/42/reviews": "shop-web",  # a regex must match the whole path
        "/items/abc": "shop-web",
        "/": "shop-web",
    }
    observed = {path: sidecar.get(f"http://shop:9080{path}").backend for path in expected}
    assert observed == expected


def test_weighted_split_80_20_within_binomial_bounds(mesh):
    v1, v2 = mesh.http_backend("reviews-v1", 11), mesh.http_backend("reviews-v2", 12)
    sidecar = mesh.sidecar(service_yaml("reviews", 9080, {"v1": v1, "v2": v2}), REVIEWS_SUBSETS, WEIGHTED_SPLIT)

    total = 400
    answers = [sidecar.get("http://reviews:9080/").backend for _ in range(total)]
    assert set(answers) == {"reviews-v1", "reviews-v2"}
    to_v1 = answers.count("reviews-v1")
    sigma = math.sqrt(total * 0.8 * 0.2)
    assert abs(to_v1 - 0.8 * total) <= 4.5 * sigma, f"{to_v1}/{total} went to v1"
    assert (v1.count, v2.count) == (to_v1, total - to_v1)


def test_ingress_gateway_routes_by_host_and_path(mesh):
    v1, v2 = mesh.http_backend("reviews-v1", 11), mesh.http_backend("reviews-v2", 12)
    gateway = mesh.ingress_gateway(
        service_yaml("reviews", 9080, {"v1": v1, "v2": v2}), REVIEWS_SUBSETS, INGRESS.format(gateway_ip=mesh.client_ip)
    )

    for _ in range(3):
        assert gateway.get(80, "/reviews/7", "bookinfo.example.com").backend == "reviews-v2"
        assert gateway.get(80, "/reviews/7", "bookinfo.example.com:80").backend == "reviews-v2"
    assert gateway.get(80, "/other", "bookinfo.example.com").status == 404  # no route for the path
    assert gateway.get(80, "/reviews/7", "elsewhere.example.com").status == 404  # no virtual host for the name
    assert v1.count == 0
    assert v2.requests[0].headers["host"] == "bookinfo.example.com"


@pytest.mark.parametrize(("policy", "expected"), [("", 200), (REGISTRY_ONLY, 502)], ids=["allow-any", "registry-only"])
def test_explicit_proxy_forwards_unregistered_hosts_unless_registry_only(mesh, policy, expected):
    reviews, outside = mesh.http_backend("reviews-v1", 11), mesh.http_backend("outside", 30)
    sidecar = mesh.sidecar(service_yaml("reviews", 9080, {"v1": reviews}), policy)

    reply = sidecar.get(f"http://{outside.address}:{outside.port}/anything")
    assert reply.status == expected
    assert outside.count == (1 if expected == 200 else 0)
    assert sidecar.get("http://reviews:9080/").backend == "reviews-v1"  # registered services work either way
