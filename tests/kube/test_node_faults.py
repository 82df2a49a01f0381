"""Faults on a real Kubernetes node under a steady request loop through the ingress gateway.

Kubernetes' own control plane away for 30 s: the proxies keep their configuration and serve, the
control plane says it cannot reach the API server, and catches up when it returns (a change made then
takes effect, without a restart). An endpoint scaled down under load: its pod drains, no request fails.
Two control plane replicas: both serve, one leads, the other takes over when the leader's pod goes.
(The istiod pod killed under load is in test_node_bookinfo.py.)
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from plait.controlplane.kubelease import DEFAULT_LEASE_NAME as LEASE
from plait.testing.kubenode import BOOKINFO_NAMESPACE, MeshNode, RequestLoop, eventually

SAMPLES = Path(__file__).resolve().parents[2] / "src/plait/demo/bookinfo/networking"
OUTAGE_SECONDS = 30


def istiod_address(node: MeshNode) -> str:
    """The IP of the one ready istiod pod (not one on its way out after a restart)."""
    (pod,) = eventually(lambda: _istiod_pods(node, 1), timeout=60)
    return node.kubectl("get", "pod", pod, "-n", "istio-system", "-o", "jsonpath={.status.podIP}")


def control_plane_metric(address: str, name: str) -> float:
    """A metric of the istiod pod at `address`, read from its monitoring port (15014): no API server
    is needed for it."""
    with urllib.request.urlopen(f"http://{address}:15014/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return float(next(line.split()[1] for line in lines if line.startswith(name + " ")))


def test_traffic_continues_while_the_api_server_is_away_and_changes_after_it_returns_take_effect(bookinfo):
    istiod = istiod_address(bookinfo)
    loop = RequestLoop(bookinfo.ingress_url("/productpage"))
    loop.start()
    try:
        eventually(lambda: loop.served(20), timeout=30, interval=0.2)
        stopped_at = time.monotonic()
        with bookinfo.control_plane_stopped():
            before = loop.ok
            eventually(lambda: _api_reachable(istiod, False), timeout=OUTAGE_SECONDS)
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
            assert loop.ok > before + 20, f"only {loop.ok - before} requests served while the API server was away"
        eventually(lambda: _api_reachable(istiod, True), timeout=60)
        served_after = loop.ok
        eventually(lambda: loop.served(served_after + 20), timeout=30, interval=0.2)
    finally:
        loop.stop()
    loop.assert_none_failed()

    routing = [(SAMPLES / name).read_text() for name in ("destination-rule-all.yaml", "virtual-service-all-v1.yaml")]
    for text in routing:
        bookinfo.apply(text, BOOKINFO_NAMESPACE)
    try:
        eventually(lambda: _reviews_versions(bookinfo, {"v1"}), timeout=60)
    finally:
        for text in reversed(routing):
            bookinfo.kubectl("delete", "-n", BOOKINFO_NAMESPACE, "-f", "-", stdin=text)


def _api_reachable(istiod: str, expected: bool) -> None:
    reachable = control_plane_metric(istiod, "plait_kubernetes_api_reachable")
    assert reachable == float(expected), f"plait_kubernetes_api_reachable {reachable}"


def _reviews_versions(node: MeshNode, expected: set[str]) -> None:
    seen = {node.product_page().reviews_version for _ in range(10)}
    assert seen == expected, f"reviews {seen}, expected {expected}"


def test_an_endpoint_scaled_down_under_load_drains_and_no_request_fails(bookinfo):
    deployment = ("deployment/productpage-v1", "-n", BOOKINFO_NAMESPACE)
    bookinfo.kubectl("scale", *deployment, "--replicas=2")
    bookinfo.kubectl("rollout", "status", *deployment, "--timeout=120s")
    pods = ("get", "pods", "-n", BOOKINFO_NAMESPACE, "-l", "app=productpage", "-o", "name")
    eventually(lambda: _endpoints(bookinfo, 2), timeout=60)
    loop = RequestLoop(bookinfo.ingress_url("/productpage"))
    loop.start()
    try:
        eventually(lambda: loop.served(20), timeout=30, interval=0.2)
        bookinfo.kubectl("scale", *deployment, "--replicas=1")
        eventually(lambda: _count(bookinfo.kubectl(*pods).split(), 1), timeout=90, interval=0.5)
        served_after = loop.ok
        eventually(lambda: loop.served(served_after + 20), timeout=30, interval=0.2)
    finally:
        loop.stop()
    loop.assert_none_failed()


def _endpoints(node: MeshNode, count: int) -> None:
    """`count` ready productpage endpoints in the gateway's Envoy (as its admin's clusters list them)."""
    text = node.kubectl(
        "exec", "-n", "istio-system", "deploy/istio-ingressgateway", "--",
        "python3", "-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:15000/clusters').read().decode())",
    )  # fmt: skip
    healthy = [
        line
        for line in text.splitlines()
        if line.startswith("outbound|9080||productpage.") and "::health_flags::healthy" in line
    ]
    _count(healthy, count)


def _count(items: list, count: int) -> None:
    assert len(items) == count, items


def test_two_control_plane_replicas_each_serve_xds_one_leads_and_another_takes_over(bookinfo):
    """istiod scaled to 2: ``plait proxy-status`` merges what both serve (its ISTIOD column names the
    replica of each proxy), one replica holds the Lease; its pod deleted under a request loop, no request
    fails and another replica leads."""
    deployment = ("deployment/istiod", "-n", "istio-system")
    bookinfo.kubectl("scale", *deployment, "--replicas=2")
    try:
        bookinfo.kubectl("rollout", "status", *deployment, "--timeout=120s")
        pods = eventually(lambda: _istiod_pods(bookinfo, 2), timeout=60)
        rows = _proxy_rows(bookinfo)
        assert {row[5] for row in rows} <= pods and len(rows) >= 7, rows  # 6 Bookinfo sidecars, the gateway
        leader = eventually(lambda: _leader(bookinfo, pods), timeout=30)
        loop = RequestLoop(bookinfo.ingress_url("/productpage"))
        loop.start()
        try:
            eventually(lambda: loop.served(20), timeout=30, interval=0.2)
            bookinfo.kubectl("delete", "pod", leader, "-n", "istio-system", "--wait=true")
            # handed over on the way out: the other replica (or the one replacing the deleted pod) leads
            new_leader = eventually(lambda: _leader(bookinfo, _istiod_pods(bookinfo, 2)), timeout=90)
            assert new_leader != leader
            served_after = loop.ok
            eventually(lambda: loop.served(served_after + 20), timeout=30, interval=0.2)
        finally:
            loop.stop()
        loop.assert_none_failed()
    finally:
        bookinfo.kubectl("scale", *deployment, "--replicas=1")
        bookinfo.kubectl("rollout", "status", *deployment, "--timeout=120s")


def _istiod_pods(node: MeshNode, count: int) -> set[str]:
    """The names of the `count` ready istiod pods (none on its way out), for `eventually`."""
    pods = json.loads(node.kubectl("get", "pods", "-n", "istio-system", "-l", "app=istiod", "-o", "json"))["items"]
    ready = {
        pod["metadata"]["name"]
        for pod in pods
        if "deletionTimestamp" not in pod["metadata"]
        and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    }
    assert len(ready) == count, ready
    return ready


def _proxy_rows(node: MeshNode) -> list[list[str]]:
    def synced() -> list[list[str]]:
        done = node.plait("proxy-status")
        assert done.returncode == 0, done.stdout + done.stderr
        rows = [line.split() for line in done.stdout.splitlines()[1:] if line.strip()]
        assert rows and all(row[1:3] == ["SYNCED", "SYNCED"] for row in rows), done.stdout
        return rows

    return eventually(synced, timeout=60)


def _leader(node: MeshNode, pods: set[str]) -> str:
    holder = node.kubectl("get", "lease", LEASE, "-n", "istio-system", "-o", "jsonpath={.spec.holderIdentity}").strip()
    assert holder in pods, f"Lease held by {holder!r}, not one of {pods}"
    return holder
