"""The Gateway API on a real Kubernetes node: its CRDs applied as Istio's docs ask users to, istiod reads
GatewayClass, Gateway, HTTPRoute and ReferenceGrant from the cluster (found when their CRDs appear) and
lowers them as it lowers files. GAMMA: an HTTPRoute whose parent is Bookinfo's ``reviews`` Service sends
every call from productpage's sidecar to a ``reviews-v1`` Service (Istio's bookinfo-versions habit). A
Gateway of class istio gets its own proxy, deployed by istiod's leader, as Istio's gateway controller does."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from plait.testing.kubenode import BOOKINFO_NAMESPACE, MeshNode, eventually

CRDS = Path(__file__).parent / "testdata" / "gateway-api" / "standard-crds.yaml"
NAMESPACE = BOOKINFO_NAMESPACE
REVIEWS_V1 = """
apiVersion: v1
kind: Service
metadata: {name: reviews-v1}
spec:
  selector: {app: reviews, version: v1}
  ports: [{name: http, port: 9080}]
"""
ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs:
  - {group: "", kind: Service, name: reviews, port: 9080}
  rules:
  - backendRefs:
    - {name: reviews-v1, port: 9080}
"""


def _reviews_versions(node: MeshNode) -> set[str | None]:
    return {node.product_page().reviews_version for _ in range(8)}


def _round_robin(node: MeshNode) -> None:
    assert len(_reviews_versions(node) - {None}) > 1


def test_a_gamma_httproute_on_the_reviews_service_sends_every_call_to_v1(bookinfo):
    bookinfo.kubectl("apply", "--server-side", "-f", str(CRDS))
    bookinfo.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    bookinfo.apply(REVIEWS_V1, NAMESPACE)
    try:
        _round_robin(bookinfo)  # before: round robin over v1, v2, v3
        bookinfo.apply(ROUTE, NAMESPACE)

        def only_v1() -> None:
            assert _reviews_versions(bookinfo) == {"v1"}

        eventually(only_v1, timeout=90, interval=2)  # istiod looks for newly served kinds every 10 s
        bookinfo.kubectl("delete", "httproute", "reviews", "-n", NAMESPACE)
        eventually(lambda: _round_robin(bookinfo), timeout=60, interval=2)
    finally:
        bookinfo.kubectl("delete", "httproute", "--all", "-n", NAMESPACE, "--ignore-not-found")
        bookinfo.kubectl("delete", "service", "reviews-v1", "-n", NAMESPACE, "--ignore-not-found")


GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-web}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo-web}
spec:
  parentRefs: [{name: bookinfo-web}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /productpage}}]
    backendRefs: [{name: productpage, port: 9080}]
"""


def test_a_gateway_of_class_istio_gets_its_own_proxy_that_serves_the_product_page_and_goes_with_it(bookinfo):
    """Istio's automated deployment: istiod's leader deploys ``bookinfo-web-istio`` (Deployment and Service)
    for a Gateway of class istio; the HTTPRoute's product page answers through that Service; deleting the
    Gateway removes them."""
    bookinfo.kubectl("apply", "--server-side", "-f", str(CRDS))
    bookinfo.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    bookinfo.apply(GATEWAY, NAMESPACE)
    try:
        eventually(
            lambda: bookinfo.kubectl("get", "deployment", "bookinfo-web-istio", "-n", NAMESPACE), timeout=60, interval=2
        )
        bookinfo.kubectl("rollout", "status", "deployment/bookinfo-web-istio", "-n", NAMESPACE, "--timeout=120s")
        address = bookinfo.kubectl(
            "get", "service", "bookinfo-web-istio", "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}"
        )

        def page() -> None:
            with urllib.request.urlopen(f"http://{address}:80/productpage", timeout=10) as response:
                assert response.status == 200 and "Book Details" in response.read().decode()

        eventually(page, timeout=60, interval=2)
        bookinfo.kubectl("delete", "gateway.gateway.networking.k8s.io", "bookinfo-web", "-n", NAMESPACE)

        def removed() -> None:
            names = bookinfo.kubectl("get", "deployments,services", "-n", NAMESPACE, "-o", "name").split()
            assert not [n for n in names if n.endswith("/bookinfo-web-istio")], names

        eventually(removed, timeout=60, interval=2)
    finally:
        bookinfo.kubectl("delete", "-f", "-", "-n", NAMESPACE, "--ignore-not-found", stdin=GATEWAY)
