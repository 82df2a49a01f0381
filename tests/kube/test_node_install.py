"""plait's install commands on a real node (kube-testenv ``start.sh --node``, root), after the Bookinfo
tests of the same session: ``verify-install`` and ``check`` pass on the default install, and Istio's
canary upgrade (revision ``canary`` beside the default one, Bookinfo's namespace moved over and
restarted, the gateways moved, the old revision uninstalled) under a steady request loop through the
ingress gateway fails no request.

It changes the session's install (the default revision is gone at the end), so it runs last (file
name order).
"""

from __future__ import annotations

import time

from plait.install.bookinfo import ISTIO_BOOKINFO, deployments
from plait.testing.kubenode import BOOKINFO_NAMESPACE as NAMESPACE
from plait.testing.kubenode import IMAGE, MeshNode, RequestLoop, eventually


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


def _proxies_of(node: MeshNode, revision: str) -> dict[str, list[str]]:
    """``plait proxy-status -r REVISION``: each proxy that revision's control plane serves, its row."""
    done = node.plait("proxy-status", "-r", revision)
    assert done.returncode == 0, done.stdout + done.stderr
    return {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[1:] if line.strip()}


def _served_by_canary(node: MeshNode) -> None:
    pods = node.kubectl("get", "pods", "-n", NAMESPACE, "-o", "jsonpath={.items[*].metadata.name}").split()
    assert len(pods) == len(deployments(ISTIO_BOOKINFO.read_text()))
    rows = _proxies_of(node, "canary")
    for pod in pods:
        assert rows.get(f"{pod}.{NAMESPACE}", [""])[:2] == ["SYNCED", "SYNCED"], rows


def test_canary_upgrade_fails_no_request(bookinfo):
    node = bookinfo
    loop = RequestLoop(node.ingress_url("/productpage"))
    loop.start()
    started, steps = time.monotonic(), []

    def step(name: str) -> None:  # when each step began, to read the failures' times against
        steps.append(f"{time.monotonic() - started:.1f}s {name}")

    try:
        eventually(lambda: loop.served(20), timeout=30, interval=0.2)
        step("install canary")
        canary = node.plait("install", "--set", "profile=minimal", "--revision", "canary", "-y", "--image", IMAGE)
        assert canary.returncode == 0, canary.stdout + canary.stderr
        assert canary.stdout.splitlines() == ["✔ Istio core installed", "✔ Istiod installed", "✔ Installation complete"]
        verified = node.plait("verify-install", "--set", "profile=minimal", "--revision", "canary")
        assert verified.returncode == 0, verified.stdout

        step("relabel and restart bookinfo")
        node.kubectl("label", "namespace", NAMESPACE, "istio-injection-", "istio.io/rev=canary", "--overwrite")
        node.kubectl("rollout", "restart", "deployment", "-n", NAMESPACE)
        for name in deployments(ISTIO_BOOKINFO.read_text()):
            node.kubectl("rollout", "status", f"deployment/{name}", "-n", NAMESPACE, "--timeout=180s")
        eventually(lambda: _served_by_canary(node), timeout=90)
        args = node.kubectl(
            "get", "pods", "-n", NAMESPACE, "-o", "jsonpath={.items[*].spec.containers[?(@.name=='istio-proxy')].args}"
        )
        assert "istiod-canary.istio-system.svc:15012" in args and "istiod.istio-system.svc:15012" not in args

        step("move the gateways")
        gateways = node.plait("install", "--revision", "canary", "-y", "--image", IMAGE)  # the gateways move too
        assert gateways.returncode == 0, gateways.stdout + gateways.stderr
        step("uninstall the default revision")
        removed = node.plait("uninstall", "-y")  # the default revision
        assert removed.returncode == 0 and removed.stdout.splitlines()[-1] == "✔ Uninstall complete", removed.stdout
        assert node.kubectl("get", "deployments", "-n", "istio-system", "-o", "name").split() == [
            "deployment.apps/istio-ingressgateway",
            "deployment.apps/istiod-canary",
        ]
        served_before = loop.ok
        eventually(lambda: loop.served(served_before + 20), timeout=60, interval=0.2)
    finally:
        loop.stop()
    assert loop.failures == [], (
        f"{len(loop.failures)} failed of {loop.ok + len(loop.failures)}: {loop.failures[:5]}; steps: {steps}"
    )
    rows = _proxies_of(node, "canary")
    assert any(name.startswith("istio-ingressgateway-") for name in rows), rows
