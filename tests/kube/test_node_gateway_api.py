"""The Gateway API on a real Kubernetes node: its CRDs applied as Istio's docs ask users to, istiod reads
GatewayClass, Gateway, HTTPRoute and ReferenceGrant from the cluster (found when their CRDs appear) and
lowers them as it lowers files. A Gateway of class istio gets its own proxy, deployed by istiod's leader,
as Istio's gateway controller does."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import yaml

from plait.install.crds import for_old_api_server
from plait.testing.kubenode import BOOKINFO_NAMESPACE, MeshNode, eventually

CRDS = Path(__file__).parent / "testdata" / "gateway-api" / "standard-crds.yaml"
NAMESPACE = BOOKINFO_NAMESPACE


def apply_crds(node: MeshNode) -> None:
    """The standard CRDs without their CEL rules, which Kubernetes before 1.25 refuses (as `plait install`
    applies Istio's)."""
    crds = [for_old_api_server(crd) for crd in yaml.safe_load_all(CRDS.read_text()) if crd]
    node.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(crds))
    node.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


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
    apply_crds(bookinfo)
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
