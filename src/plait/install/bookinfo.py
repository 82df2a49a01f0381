"""Istio's getting-started on a cluster: Bookinfo with sidecars behind the ingress gateway (`plait demo
bookinfo --kube`).

`with_plait_images` renames Istio's Bookinfo images to plait's (pure). `deploy_bookinfo` installs
plait if the cluster has no control plane (else waits until its webhooks answer), labels the namespace ``istio-injection=enabled``,
applies Istio's bookinfo.yaml and bookinfo-gateway.yaml and waits for every Deployment: the control
plane's injection webhook adds the sidecars. Installed without it (``--no-sidecar-injector``), the
sidecars are added before applying by the same pure builder (`plait.inject.kube_inject`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import yaml

from plait.inject import InjectSettings, kube_inject
from plait.install.apply import Kubectl, install, is_installed, wait_for_webhooks
from plait.install.settings import InstallSettings

BOOKINFO = Path(__file__).resolve().parents[1] / "demo" / "bookinfo"
ISTIO_BOOKINFO = BOOKINFO / "platform" / "kube" / "bookinfo.yaml"
BOOKINFO_GATEWAY = BOOKINFO / "networking" / "bookinfo-gateway.yaml"
_ISTIO_IMAGE = re.compile(r"docker\.io/istio/examples-bookinfo-([a-z0-9-]+):[0-9.]+")


def with_plait_images(manifest: str, hub: str, tag: str) -> str:
    """Istio's Bookinfo manifest with ``docker.io/istio/examples-bookinfo-X:V`` renamed ``HUB/examples-bookinfo-X:TAG``."""
    return _ISTIO_IMAGE.sub(lambda m: f"{hub}/examples-bookinfo-{m.group(1)}:{tag}", manifest)


def deployments(manifest: str) -> list[str]:
    """The names of the Deployments in a manifest."""
    return [d["metadata"]["name"] for d in yaml.safe_load_all(manifest) if d and d.get("kind") == "Deployment"]


def deploy_bookinfo(
    kubectl: Kubectl,
    settings: InstallSettings,
    report: Callable[[str], None],
    *,
    namespace: str = "default",
    hub: str,
    tag: str,
    timeout: float = 300,
) -> None:
    """Install plait if absent, then Bookinfo and its gateway in `namespace`; `report` gets each step."""
    if is_installed(kubectl, settings):
        report(f"plait is installed (namespace {settings.namespace})")
        wait_for_webhooks(kubectl, settings.namespace, timeout)
    else:
        install(kubectl, settings, lambda line: report(f"✔ {line}"), timeout=timeout)
    kubectl.run("label", "namespace", namespace, "istio-injection=enabled", "--overwrite")
    manifest = with_plait_images(ISTIO_BOOKINFO.read_text(), hub, tag)
    documents = [d for d in yaml.safe_load_all(manifest) if d]
    if not settings.sidecar_injector:
        documents = kube_inject(documents, InjectSettings(proxy_image=settings.image)).documents
    kubectl.run(
        "apply", "-n", namespace, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    )
    kubectl.run("apply", "-n", namespace, "-f", "-", stdin=BOOKINFO_GATEWAY.read_text())
    report(f"✔ Bookinfo and its gateway applied in namespace {namespace}")
    for name in deployments(manifest):
        kubectl.run(
            "rollout", "status", f"deployment/{name}", "-n", namespace, f"--timeout={timeout:g}s", timeout=timeout + 10
        )
    report("✔ every Bookinfo pod is ready")


def how_to_open(settings: InstallSettings, local_port: int = 8080) -> str:
    """How to reach the product page where the cluster has no load balancer: a port-forward of the gateway."""
    return (
        f"kubectl port-forward -n {settings.namespace} svc/istio-ingressgateway {local_port}:80\n"
        f"then open http://localhost:{local_port}/productpage"
    )
