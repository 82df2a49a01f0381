"""The Gateway API on a real Kubernetes node: its CRDs applied as Istio's docs ask users to, istiod reads
GatewayClass, Gateway, HTTPRoute, TCPRoute and ReferenceGrant from the cluster (found when their CRDs appear) and
lowers them as it lowers files. A Gateway of class istio gets its own proxy, deployed by istiod's leader,
as Istio's gateway controller does."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import yaml

from plait.install.crds import for_old_api_server
from plait.testing.backends import HttpBackend
from plait.testing.kubenode import BOOKINFO_NAMESPACE, MeshNode, eventually, pod_manifest

TESTDATA = Path(__file__).parent / "testdata" / "gateway-api"
CRDS = (TESTDATA / "standard-crds.yaml", TESTDATA / "experimental-route-crds.yaml")
NAMESPACE = BOOKINFO_NAMESPACE


def apply_crds(node: MeshNode) -> None:
    """The standard CRDs and the experimental channel's TCPRoute, TLSRoute and GRPCRoute, without their CEL
    rules, which Kubernetes before 1.25 refuses (as `plait install` applies Istio's)."""
    crds = [for_old_api_server(crd) for path in CRDS for crd in yaml.safe_load_all(path.read_text()) if crd]
    node.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(crds))
    node.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-web}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo-web}
spec:
  parentRefs: [{name: bookinfo-web, sectionName: http}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /productpage}}]
    backendRefs: [{name: productpage, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo-nowhere}
spec:
  parentRefs: [{name: bookinfo-web, sectionName: http}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /nowhere}}]
    backendRefs: [{name: no-such-service, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: bookinfo-details-tcp}
spec:
  parentRefs: [{name: bookinfo-web, sectionName: tcp}]
  rules:
  - backendRefs: [{name: details, port: 9080}]
"""


def _conditions(conditions: list[dict]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conditions}


def _status(node: MeshNode, kind: str, name: str) -> dict:
    return json.loads(node.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json")).get("status") or {}


def status_written(node: MeshNode) -> None:
    """istiod's leader writes what `plait get` shows locally to the objects, as Istio's controller does."""
    gateway = _status(node, "gateway.gateway.networking.k8s.io", "bookinfo-web")
    assert _conditions(gateway.get("conditions", [])) == {
        "Accepted": ("True", "Accepted"),
        "Programmed": ("True", "Programmed"),
    }, gateway
    assert gateway["addresses"] == [{"type": "Hostname", "value": f"bookinfo-web-istio.{NAMESPACE}.svc.cluster.local"}]
    listeners = {listener["name"]: listener for listener in gateway["listeners"]}
    assert (listeners["http"]["attachedRoutes"], listeners["tcp"]["attachedRoutes"]) == (2, 1), listeners
    assert listeners["tcp"]["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "TCPRoute"}]
    [parent] = _status(node, "httproute", "bookinfo-web")["parents"]
    assert parent["controllerName"] == "istio.io/gateway-controller"
    assert _conditions(parent["conditions"]) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    [parent] = _status(node, "tcproute", "bookinfo-details-tcp")["parents"]
    assert _conditions(parent["conditions"]) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    [parent] = _status(node, "httproute", "bookinfo-nowhere")["parents"]
    assert _conditions(parent["conditions"])["ResolvedRefs"] == ("False", "BackendNotFound"), parent


def test_a_gateway_of_class_istio_gets_its_own_proxy_that_serves_the_product_page_and_goes_with_it(bookinfo):
    """Istio's automated deployment: istiod's leader deploys ``bookinfo-web-istio`` (Deployment and Service)
    for a Gateway of class istio; the HTTPRoute's product page answers through that Service, a TCPRoute on its
    TCP listener passes a call to details; the Gateway and
    routes carry their status (a route to a missing Service says BackendNotFound); deleting the Gateway
    removes the deployment."""
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

        def details_over_tcp() -> None:  # the TCP listener passes the bytes of an HTTP call to details
            with urllib.request.urlopen(f"http://{address}:9000/details/0", timeout=10) as response:
                assert response.status == 200 and json.loads(response.read())["id"] == 0

        eventually(details_over_tcp, timeout=30, interval=2)
        eventually(lambda: status_written(bookinfo), timeout=30, interval=2)
        bookinfo.kubectl("delete", "gateway.gateway.networking.k8s.io", "bookinfo-web", "-n", NAMESPACE)

        def removed() -> None:
            names = bookinfo.kubectl("get", "deployments,services", "-n", NAMESPACE, "-o", "name").split()
            assert not [n for n in names if n.endswith("/bookinfo-web-istio")], names

        eventually(removed, timeout=60, interval=2)
    finally:
        bookinfo.kubectl("delete", "-f", "-", "-n", NAMESPACE, "--ignore-not-found", stdin=GATEWAY)


EGRESS_EXAMPLE = Path(__file__).parents[3] / "shared" / "examples" / "gateway-api-egress" / "egress.yaml"
EXTERNAL = "ifconfig.me"


def _with_host_alias(pod: dict, address: str) -> dict:
    """What the cluster's DNS would answer for ifconfig.me with internet (the test cluster's says NXDOMAIN)."""
    pod["spec"]["hostAliases"] = [{"ip": address, "hostnames": [EXTERNAL]}]
    return pod


def _stat(node: MeshNode, namespace: str, pod: str, container: str, name: str) -> int:
    code = (
        "import urllib.request\n"
        "for line in urllib.request.urlopen('http://127.0.0.1:15000/stats').read().decode().splitlines():\n"
        f"    if line.startswith({name + ': '!r}): print(line.split(': ')[1])"
    )
    out = node.kubectl("exec", "-n", namespace, pod, "-c", container, "--", "python3", "-c", code).strip()
    return int(out or 0)


def test_istios_egress_pattern_sends_a_pods_plain_call_through_the_deployed_egress_gateway(bookinfo):
    """Istio's egress gateway with the Gateway API (../shared/examples/gateway-api-egress, applied unchanged):
    a pod's plain GET http://ifconfig.me/ goes to the auto-deployed ``egress-gateway-istio`` (its sidecar's
    counters), which calls the external server (its counters) — a server on the host, outside the cluster,
    that ifconfig.me names here (a host alias, as DNS would with internet)."""
    apply_crds(bookinfo)
    address = bookinfo.cluster.env["KUBE_TESTENV_NODE_IP"]
    example = EGRESS_EXAMPLE.read_text()
    with HttpBackend(EXTERNAL, address, 80) as external:
        bookinfo.apply(example)
        client = _with_host_alias(json.loads(pod_manifest("egress-client", NAMESPACE, ["sleep", "1d"])), address)
        bookinfo.apply(json.dumps(client))
        try:
            eventually(
                lambda: bookinfo.kubectl("get", "deployment", "egress-gateway-istio", "-n", "istio-system"),
                timeout=60,
                interval=2,
            )
            patch = {"spec": {"template": {"spec": _with_host_alias({"spec": {}}, address)["spec"]}}}
            bookinfo.kubectl(
                "patch",
                "deployment",
                "egress-gateway-istio",
                "-n",
                "istio-system",
                "--type=merge",
                "-p",
                json.dumps(patch),
            )
            bookinfo.kubectl(
                "rollout", "status", "deployment/egress-gateway-istio", "-n", "istio-system", "--timeout=120s"
            )
            bookinfo.kubectl("wait", "--for=condition=Ready", "pod/egress-client", "-n", NAMESPACE, "--timeout=120s")
            pods = json.loads(
                bookinfo.kubectl(
                    "get",
                    "pods",
                    "-n",
                    "istio-system",
                    "-l",
                    "gateway.networking.k8s.io/gateway-name=egress-gateway",
                    "-o",
                    "json",
                )
            )["items"]
            [gateway] = [p["metadata"]["name"] for p in pods if "deletionTimestamp" not in p["metadata"]]
            get = "import urllib.request; r = urllib.request.urlopen('http://ifconfig.me/', timeout=10); print(r.status, r.read().decode())"

            def answered() -> None:
                out = bookinfo.kubectl(
                    "exec", "-n", NAMESPACE, "egress-client", "-c", "egress-client", "--", "python3", "-c", get
                )
                assert out.strip().startswith("200 ") and EXTERNAL in out, out

            eventually(answered, timeout=90, interval=2)
            to_gateway = "cluster.outbound|80||egress-gateway-istio.istio-system.svc.cluster.local.upstream_rq_200"
            assert _stat(bookinfo, NAMESPACE, "egress-client", "istio-proxy", to_gateway) >= 1
            assert (
                _stat(
                    bookinfo, "istio-system", gateway, "istio-proxy", "cluster.outbound|80||ifconfig.me.upstream_rq_200"
                )
                >= 1
            )
            assert external.count >= 1
        finally:
            bookinfo.kubectl(
                "delete", "pod", "egress-client", "-n", NAMESPACE, "--grace-period=1", "--ignore-not-found"
            )
            bookinfo.kubectl("delete", "-f", "-", "--ignore-not-found", stdin=example)
