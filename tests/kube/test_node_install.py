"""plait's install commands on a real node (kube-testenv ``start.sh --node``, root), after the Bookinfo
tests of the same session: ``verify-install`` and ``check`` pass on the default install, and Istio's
canary upgrade (revision ``canary`` beside the default one, Bookinfo's namespace moved over and
restarted, the gateways moved, the old revision uninstalled) under a steady request loop through the
ingress gateway fails no request.

Written by the install helper without a node to run it on: the lead runs it. It changes the session's
install (the default revision is gone at the end), so it runs last (file name order).
"""

from __future__ import annotations

import pytest
from test_node_bookinfo import NAMESPACE, RequestLoop, _served, ingress_url

from plait.install.bookinfo import ISTIO_BOOKINFO, deployments
from plait.testing.kubenode import BOOKINFO_HUB, BOOKINFO_TAG, IMAGE, MeshNode, eventually


@pytest.fixture(scope="module")
def bookinfo(mesh_node: MeshNode) -> MeshNode:
    """Bookinfo in its namespace: the one the Bookinfo tests left, else deployed as they deploy it."""
    node = mesh_node
    if NAMESPACE not in node.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}").split():
        node.kubectl("create", "namespace", NAMESPACE)
        eventually(lambda: node.kubectl("get", "serviceaccount", "default", "-n", NAMESPACE), timeout=30)
        demo = node.plait(
            "demo", "bookinfo", "--kube", "--namespace", NAMESPACE, "--image", IMAGE,
            "--bookinfo-hub", BOOKINFO_HUB, "--bookinfo-tag", BOOKINFO_TAG,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout + demo.stderr
    return node


def test_verify_install_and_check_pass_on_the_default_install(bookinfo):
    verified = bookinfo.plait("verify-install")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.splitlines()[-1] == "✔ plait is installed and verified successfully"
    checked = eventually(lambda: _passing(bookinfo.plait("check")), timeout=60)
    assert "√ validating webhook refuses an invalid VirtualService (dry run)" in checked
    assert "√ root certificate is not expiring within 30 days" in checked


def _passing(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _proxies_of(node: MeshNode, istiod: str) -> dict[str, list[str]]:
    text = node.kubectl("exec", "-n", "istio-system", f"deploy/{istiod}", "--", "plait", "proxy-status")
    return {line.split()[0]: line.split()[1:5] for line in text.splitlines()[1:] if line.strip()}


def _served_by_canary(node: MeshNode) -> None:
    pods = node.kubectl("get", "pods", "-n", NAMESPACE, "-o", "jsonpath={.items[*].metadata.name}").split()
    assert len(pods) == len(deployments(ISTIO_BOOKINFO.read_text()))
    rows = _proxies_of(node, "istiod-canary")
    for pod in pods:
        assert rows.get(f"{pod}.{NAMESPACE}", [""])[:2] == ["SYNCED", "SYNCED"], rows


def test_canary_upgrade_fails_no_request(bookinfo):
    node = bookinfo
    loop = RequestLoop(ingress_url(node, "/productpage"))
    loop.start()
    try:
        eventually(lambda: _served(loop, 20), timeout=30, interval=0.2)
        canary = node.plait("install", "--set", "profile=minimal", "--revision", "canary", "-y", "--image", IMAGE)
        assert canary.returncode == 0, canary.stdout + canary.stderr
        assert canary.stdout.splitlines() == ["✔ Istio core installed", "✔ Istiod installed", "✔ Installation complete"]
        verified = node.plait("verify-install", "--set", "profile=minimal", "--revision", "canary")
        assert verified.returncode == 0, verified.stdout

        node.kubectl("label", "namespace", NAMESPACE, "istio-injection-", "istio.io/rev=canary", "--overwrite")
        node.kubectl("rollout", "restart", "deployment", "-n", NAMESPACE)
        for name in deployments(ISTIO_BOOKINFO.read_text()):
            node.kubectl("rollout", "status", f"deployment/{name}", "-n", NAMESPACE, "--timeout=180s")
        eventually(lambda: _served_by_canary(node), timeout=90)
        args = node.kubectl(
            "get", "pods", "-n", NAMESPACE, "-o", "jsonpath={.items[*].spec.containers[?(@.name=='istio-proxy')].args}"
        )
        assert "istiod-canary.istio-system.svc:15012" in args and "istiod.istio-system.svc:15012" not in args

        gateways = node.plait("install", "--revision", "canary", "-y", "--image", IMAGE)  # the gateways move too
        assert gateways.returncode == 0, gateways.stdout + gateways.stderr
        removed = node.plait("uninstall", "-y")  # the default revision
        assert removed.returncode == 0 and removed.stdout.splitlines()[-1] == "✔ Uninstall complete", removed.stdout
        assert node.kubectl("get", "deployments", "-n", "istio-system", "-o", "name").split() == [
            "deployment.apps/istio-ingressgateway",
            "deployment.apps/istiod-canary",
        ]
        served_before = loop.ok
        eventually(lambda: _served(loop, served_before + 20), timeout=60, interval=0.2)
    finally:
        loop.stop()
    assert loop.failures == [], f"{len(loop.failures)} failed of {loop.ok + len(loop.failures)}: {loop.failures[:3]}"
    rows = _proxies_of(node, "istiod-canary")
    assert any(name.startswith("istio-ingressgateway-") for name in rows), rows
