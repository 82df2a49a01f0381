"""Istio's egress gateway task on a real node: ``plait install --set profile=demo`` adds the
istio-egressgateway Deployment (``plait agent`` in gateway mode), and a mesh pod's request to an
external host goes sidecar → egress gateway → the host, as Istio's "Egress Gateways" task routes it.

The external host is a plain HTTP server in a namespace outside the mesh, known to the mesh only
through a ServiceEntry (``web.external.test``, resolved in the client pod by its agent's DNS proxy).
The server's own access log shows who called it: the egress gateway's pod, not the client.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from plait.testing.kubenode import BOOKINFO_NAMESPACE, DNS_CAPTURE, IMAGE, MeshNode, eventually, pod_manifest

EXTERNAL = "external"
# Istio's task (samples of istio.io "Egress Gateways"), for an HTTP host of ours.
EGRESS_CONFIG = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: web
spec:
  hosts: [web.external.test]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: WEB_POD_IP
    ports: {http: 8000}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [web.external.test]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-web
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: web
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-web-through-egress-gateway
spec:
  hosts: [web.external.test]
  gateways: [istio-egressgateway, mesh]
  http:
  - match:
    - gateways: [mesh]
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: web
        port: {number: 80}
  - match:
    - gateways: [istio-egressgateway]
      port: 80
    route:
    - destination:
        host: web.external.test
        port: {number: 80}
"""
FETCH = "import urllib.request; print(urllib.request.urlopen('http://web.external.test/', timeout=5).status)"


@pytest.fixture(scope="module")
def egress(bookinfo: MeshNode):
    node = bookinfo
    demo = node.plait("install", "--set", "profile=demo", "-y", "--image", IMAGE, "--timeout", "180")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    node.demo_install_output = demo.stdout
    node.kubectl("create", "namespace", EXTERNAL)
    eventually(lambda: node.kubectl("get", "serviceaccount", "default", "-n", EXTERNAL), timeout=30)
    node.apply(pod_manifest("web", EXTERNAL, ["python3", "-m", "http.server", "8000"]))
    node.apply(
        pod_manifest("egress-client", BOOKINFO_NAMESPACE, ["sleep", "1d"], {"proxy.istio.io/config": DNS_CAPTURE})
    )
    try:
        node.kubectl("wait", "--for=condition=Ready", "pod/web", "-n", EXTERNAL, "--timeout=120s")
        node.kubectl("wait", "--for=condition=Ready", "pod/egress-client", "-n", BOOKINFO_NAMESPACE, "--timeout=120s")
        web = node.kubectl("get", "pod", "web", "-n", EXTERNAL, "-o", "jsonpath={.status.podIP}")
        node.apply(EGRESS_CONFIG.replace("WEB_POD_IP", web), BOOKINFO_NAMESPACE)
        yield node
    finally:
        node.kubectl("delete", "-n", BOOKINFO_NAMESPACE, "-f", "-", stdin=EGRESS_CONFIG)
        node.kubectl("delete", "pod", "egress-client", "-n", BOOKINFO_NAMESPACE, "--wait=false")
        node.kubectl("delete", "namespace", EXTERNAL, "--wait=false")


def test_the_demo_profile_installs_the_egress_gateway_as_istioctl_says(egress):
    assert egress.demo_install_output.splitlines() == [
        "✔ Istio core installed",
        "✔ Istiod installed",
        "✔ Ingress gateways installed",
        "✔ Egress gateways installed",
        "✔ Installation complete",
    ]
    [gateway] = json.loads(
        egress.kubectl("get", "pods", "-n", "istio-system", "-l", "istio=egressgateway", "-o", "json")
    )["items"]
    [proxy] = gateway["spec"]["containers"]
    assert proxy["args"][:3] == ["agent", "--mode", "gateway"]
    assert all(c["ready"] for c in gateway["status"]["containerStatuses"])


def test_a_mesh_pods_request_to_an_external_host_leaves_through_the_egress_gateway(egress):
    status = eventually(
        lambda: egress.kubectl(
            "exec", "-n", BOOKINFO_NAMESPACE, "egress-client", "-c", "egress-client", "--", "python3", "-c", FETCH
        ),
        timeout=60,
    )
    assert status.strip() == "200"
    gateway_ip = egress.kubectl(
        "get", "pods", "-n", "istio-system", "-l", "istio=egressgateway", "-o", "jsonpath={.items[0].status.podIP}"
    )
    client_ip = egress.kubectl(
        "get", "pod", "egress-client", "-n", BOOKINFO_NAMESPACE, "-o", "jsonpath={.status.podIP}"
    )
    callers = {
        line.split()[0] for line in egress.kubectl("logs", "web", "-n", EXTERNAL).splitlines() if '"GET /' in line
    }
    assert callers == {gateway_ip}, (
        f"the server was called by {callers}; egress gateway {gateway_ip}, client {client_ip}"
    )


def test_proxy_status_lists_the_egress_gateway(egress):
    done = egress.plait("proxy-status")
    assert done.returncode == 0, done.stderr
    [row] = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("istio-egressgateway-")]
    assert row[1:3] == ["SYNCED", "SYNCED"], done.stdout


def test_without_the_prometheus_addon_the_dashboards_graph_reads_the_proxies_own_stats(egress):
    """The demo profile installs no addon: istiod's dashboard reads the pods it serves as Prometheus service
    discovery and their merged :15020 stats itself (every 5 s), so ``plait dashboard``'s graph still has
    productpage's calls."""
    with egress.dashboard() as url:

        def graph() -> None:
            egress.product_page()
            with urllib.request.urlopen(f"{url}/api/graph?namespace={BOOKINFO_NAMESPACE}&window=1m&type=workload") as r:
                found = json.loads(r.read())
            assert found["source"] == "proxies", found
            names = {n["id"]: n["name"] for n in found["nodes"]}
            pairs = {(names[e["source"]], names[e["target"]]) for e in found["edges"]}
            assert ("productpage-v1", "details-v1") in pairs, pairs

        eventually(graph, timeout=90, interval=5)
