"""Applying the manifests to a cluster with kubectl and waiting until each part is ready (I/O).

`Kubectl` runs the kubectl binary against one kubeconfig; `install` applies `components` in order,
waits for each Deployment's rollout, and reports progress through a callback, as ``istioctl
install`` prints it (``✔ Istiod installed``). Istio's CRDs must be in the cluster already (plait
reads them; it does not ship them): `missing_crds` names the ones that are not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from plait.install.manifests import InstallSettings, components

REQUIRED_CRDS = (
    "virtualservices.networking.istio.io",
    "destinationrules.networking.istio.io",
    "gateways.networking.istio.io",
    "peerauthentications.security.istio.io",
)


class InstallError(RuntimeError):
    """kubectl failed, or a part did not become ready in time; the message says which and why."""


@dataclass(frozen=True)
class Kubectl:
    """kubectl (``$KUBECTL``, else the one on PATH) against `kubeconfig` (None: kubectl's own default)."""

    binary: str = ""
    kubeconfig: str | None = None

    def run(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        binary = self.binary or os.environ.get("KUBECTL") or shutil.which("kubectl") or "kubectl"
        command = [binary, *(["--kubeconfig", self.kubeconfig] if self.kubeconfig else []), *args]
        try:
            done = subprocess.run(command, input=stdin, text=True, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise InstallError(f"kubectl not found ({binary}); put it on PATH or set $KUBECTL") from None
        except subprocess.TimeoutExpired:
            raise InstallError(f"kubectl {' '.join(args)}: no answer in {timeout:g} s") from None
        if done.returncode:
            raise InstallError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def apply(self, objects: Iterable[dict[str, Any]]) -> str:
        items = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        return self.run("apply", "-f", "-", stdin=json.dumps(items))


def missing_crds(kubectl: Kubectl) -> list[str]:
    """The Istio CRDs plait needs that the cluster does not serve."""
    names = set(kubectl.run("get", "crd", "-o", "name").split())
    return [crd for crd in REQUIRED_CRDS if f"customresourcedefinition.apiextensions.k8s.io/{crd}" not in names]


def _deployments(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "Deployment"]


WEBHOOK_KINDS = {
    "MutatingWebhookConfiguration": "mutatingwebhookconfiguration",
    "ValidatingWebhookConfiguration": "validatingwebhookconfiguration",
}


def wait_for_ca_bundles(kubectl: Kubectl, objects: list[dict[str, Any]], timeout: float) -> None:
    """Wait until the control plane's leader has given each webhook configuration the mesh root as its
    caBundle: before that the API server cannot call the webhooks, and with failurePolicy Fail it
    refuses every pod a namespace's injection selects."""
    deadline = time.monotonic() + timeout
    for obj in (o for o in objects if o["kind"] in WEBHOOK_KINDS):
        name = obj["metadata"]["name"]
        jsonpath = 'jsonpath={range .webhooks[*]}{.clientConfig.caBundle}{"\\n"}{end}'
        while not all(kubectl.run("get", WEBHOOK_KINDS[obj["kind"]], name, "-o", jsonpath).splitlines() or [""]):
            if time.monotonic() > deadline:
                raise InstallError(
                    f"{obj['kind']} {name} has no caBundle after {timeout:g}s: is istiod leading? "
                    f"see kubectl logs -n istio-system deploy/istiod"
                )
            time.sleep(0.5)


def install(
    kubectl: Kubectl,
    settings: InstallSettings,
    report: Callable[[str], None],
    *,
    timeout: float = 300,
) -> None:
    """Apply each part in order and wait for its Deployments; `report` gets "<part> installed" after each."""
    missing = missing_crds(kubectl)
    if missing:
        raise InstallError(f"the cluster lacks Istio's CRDs ({', '.join(missing)}); apply Istio's base CRDs first")
    for name, objects in components(settings):
        kubectl.apply(objects)
        for namespace, deployment in _deployments(objects):
            kubectl.run(
                "rollout",
                "status",
                f"deployment/{deployment}",
                "-n",
                namespace,
                f"--timeout={timeout:g}s",
                timeout=timeout + 10,
            )
        wait_for_ca_bundles(kubectl, objects, timeout)
        report(f"{name} installed")


def is_installed(kubectl: Kubectl, settings: InstallSettings) -> bool:
    """Whether the control plane's Deployment exists (what `plait demo bookinfo --kube` checks)."""
    try:
        kubectl.run("get", "deployment", "istiod", "-n", settings.namespace, "-o", "name")
    except InstallError:
        return False
    return True
