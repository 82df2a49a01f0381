"""Applying the manifests to a cluster with kubectl, waiting until each part is ready, and removing
them again (I/O).

`Kubectl` runs the kubectl binary against one kubeconfig. `install` applies `components` in order
(Istio's CRDs server-side: they exceed kubectl's last-applied annotation), waits for each
Deployment's rollout and the webhooks' caBundle, and reports progress through a callback, as
``istioctl install`` prints it (``✔ Istiod installed``). `uninstall` deletes the objects labelled as
made by plait (one revision's, or with ``purge`` every revision's and the CRDs) and nothing else.
`legacy_apis` asks the server which API versions to write.
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

from plait.install.manifests import MANAGED_BY, REVISION, components
from plait.install.settings import InstallSettings

REQUIRED_CRDS = (
    "virtualservices.networking.istio.io",
    "destinationrules.networking.istio.io",
    "gateways.networking.istio.io",
    "peerauthentications.security.istio.io",
)
# What install makes, by kind (kubectl's resource.group names); uninstall looks only at these.
OWNED_RESOURCES = (
    "deployments.apps",
    "services",
    "serviceaccounts",
    "configmaps",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "poddisruptionbudgets.policy",
    "horizontalpodautoscalers.autoscaling",
    "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
    "mutatingwebhookconfigurations.admissionregistration.k8s.io",
    "validatingwebhookconfigurations.admissionregistration.k8s.io",
)
CRD_RESOURCE = "customresourcedefinitions.apiextensions.k8s.io"
NEWEST_LEGACY_MINOR = 24  # 1.25 removed policy/v1beta1 and understands CEL rules; 1.23 added autoscaling/v2


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

    def apply(self, objects: Iterable[dict[str, Any]], *flags: str) -> str:
        items = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        return self.run("apply", *flags, "-f", "-", stdin=json.dumps(items))

    def get_json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.run("get", *args, "-o", "json"))


def is_legacy_version(version: dict[str, Any]) -> bool:
    """Whether `kubectl version -o json`'s serverVersion is older than 1.25 (then autoscaling/v2beta2,
    policy/v1beta1 and CRDs without CEL rules are written)."""
    server = version.get("serverVersion") or {}
    minor = "".join(c for c in str(server.get("minor", "")) if c.isdigit())
    return str(server.get("major")) == "1" and bool(minor) and int(minor) <= NEWEST_LEGACY_MINOR


def legacy_apis(kubectl: Kubectl) -> bool:
    """Whether the cluster's API server needs the legacy API versions (`is_legacy_version`)."""
    return is_legacy_version(json.loads(kubectl.run("version", "-o", "json")))


def missing_crds(kubectl: Kubectl) -> list[str]:
    """The Istio CRDs plait needs that the cluster does not serve."""
    names = set(kubectl.run("get", "crd", "-o", "name").split())
    return [crd for crd in REQUIRED_CRDS if f"customresourcedefinition.apiextensions.k8s.io/{crd}" not in names]


def why_not_ready(pods: list[dict[str, Any]]) -> list[str]:
    """One line per pod that is not ready, saying why as far as its status tells (unschedulable and the
    scheduler's message, a container waiting with its reason, or its phase)."""
    lines = []
    for pod in pods:
        status = pod.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        if (conditions.get("Ready") or {}).get("status") == "True":
            continue
        scheduled = conditions.get("PodScheduled") or {}
        waiting = [
            f"{c['name']}: {c['state']['waiting'].get('reason', 'waiting')} {c['state']['waiting'].get('message', '')}".strip()
            for c in (*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or []))
            if "waiting" in (c.get("state") or {})
        ]
        if scheduled.get("status") == "False":
            why = f"not scheduled: {scheduled.get('message') or scheduled.get('reason', '')}"
        elif waiting:
            why = "; ".join(waiting)
        else:
            why = f"phase {status.get('phase', 'unknown')}, not ready"
        lines.append(f"pod {pod['metadata']['name']}: {why}")
    return lines


def why_no_pod(events: list[dict[str, Any]]) -> str:
    """What the cluster's events say about a Deployment without pods: the newest warnings of it and its
    ReplicaSets (a refused pod, a quota), else that nothing reported (is the controller-manager running?)."""
    warnings = [e for e in events if e.get("type") == "Warning"]
    warnings.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    said = [
        f"{e['involvedObject'].get('name', '')}: {e.get('reason', '')} {e.get('message', '')}".strip() for e in warnings
    ]
    return "; ".join(dict.fromkeys(said[-3:])) or "no event says why (is the cluster's controller-manager running?)"


def _why_no_pod(kubectl: Kubectl, namespace: str, name: str) -> str:
    try:
        events = kubectl.get_json("events", "-n", namespace).get("items", [])
    except InstallError as failed:
        return f"cannot read the events: {failed}"
    mine = [e for e in events if (e.get("involvedObject") or {}).get("name", "").startswith(name)]
    return why_no_pod(mine)


def wait_for_rollout(kubectl: Kubectl, deployment: dict[str, Any], timeout: float) -> None:
    """Wait until the Deployment's rollout is complete; else an InstallError saying which pods are not ready and why."""
    namespace, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
    try:
        kubectl.run(
            "rollout", "status", f"deployment/{name}", "-n", namespace, f"--timeout={timeout:g}s", timeout=timeout + 10
        )
    except InstallError as failed:
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        try:
            pods = kubectl.get_json("pods", "-n", namespace, "-l", selector).get("items", [])
        except InstallError:
            pods = []
        reasons = "\n  ".join(why_not_ready(pods)) or "no pod was created: " + _why_no_pod(kubectl, namespace, name)
        raise InstallError(
            f"Deployment {namespace}/{name} is not ready: {failed}\n  {reasons}\n"
            f"  see kubectl describe pods -n {namespace} -l {selector}"
        ) from None


WEBHOOK_KINDS = {
    "MutatingWebhookConfiguration": "mutatingwebhookconfiguration",
    "ValidatingWebhookConfiguration": "validatingwebhookconfiguration",
}


def wait_for_ca_bundles(kubectl: Kubectl, settings: InstallSettings, objects: list[dict[str, Any]], timeout: float):
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
                    f"{obj['kind']} {name} has no caBundle after {timeout:g}s: is {settings.istiod} leading? "
                    f"see kubectl logs -n {settings.namespace} deploy/{settings.istiod}"
                )
            time.sleep(0.5)


WEBHOOK_PROBE = "plait-webhook-probe"


def wait_for_webhooks(kubectl: Kubectl, namespace: str, timeout: float) -> None:
    """Wait until the API server reaches the control plane's webhooks through their Service: a
    server-side dry run of a VirtualService in `namespace` goes through the validation webhook. Ready
    pods and caBundles are not enough: until the node's kube-proxy routes the Service to the pods, every
    apply of Istio config (failurePolicy Fail) times out in the API server."""
    probe = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": WEBHOOK_PROBE, "namespace": namespace},
        "spec": {"hosts": [WEBHOOK_PROBE], "http": [{"route": [{"destination": {"host": WEBHOOK_PROBE}}]}]},
    }
    deadline = time.monotonic() + timeout
    while True:
        try:
            kubectl.run("create", "--dry-run=server", "-f", "-", stdin=json.dumps(probe))
            return
        except InstallError as error:
            if "AlreadyExists" in str(error):  # admission ran before the store said so
                return
            if "failed calling webhook" not in str(error) or time.monotonic() > deadline:
                raise InstallError(
                    f"the API server does not take Istio config yet ({error}); is the control plane's "
                    f"webhook reachable? see kubectl get endpoints -n {namespace} and "
                    f"kubectl logs -n {namespace} -l app=istiod"
                ) from None
        time.sleep(1)


def apply_crds(kubectl: Kubectl, crds: list[dict[str, Any]], timeout: float) -> None:
    """Server-side apply (a CRD can exceed the last-applied annotation), then wait until each is Established."""
    kubectl.apply(crds, "--server-side", "--force-conflicts", "--validate=false")
    names = [f"crd/{crd['metadata']['name']}" for crd in crds]
    kubectl.run("wait", "--for", "condition=established", f"--timeout={timeout:g}s", *names, timeout=timeout + 10)


def install(
    kubectl: Kubectl,
    settings: InstallSettings,
    report: Callable[[str], None],
    *,
    timeout: float = 300,
    wait: bool = True,
) -> None:
    """Apply each part in order and (unless not `wait`) wait for its Deployments and webhooks; `report` gets
    "<part> installed" after each."""
    if not settings.base:
        missing = missing_crds(kubectl)
        if missing:
            raise InstallError(
                f"the cluster lacks Istio's CRDs ({', '.join(missing)}); install a profile with the base "
                "component first (plait install --set profile=minimal)"
            )
    for name, objects in components(settings):
        crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
        if crds:
            apply_crds(kubectl, crds, timeout)
        before = _mesh_configs(kubectl, objects)
        kubectl.apply(o for o in objects if o["kind"] != "CustomResourceDefinition")
        if any(before.get(_key(o)) not in (None, o.get("data")) for o in objects if o["kind"] == "ConfigMap"):
            for deployment in (o for o in objects if o["kind"] == "Deployment"):  # istiod reads it at start
                meta = deployment["metadata"]
                kubectl.run("rollout", "restart", f"deployment/{meta['name']}", "-n", meta["namespace"])
        if wait:
            for deployment in (o for o in objects if o["kind"] == "Deployment"):
                wait_for_rollout(kubectl, deployment, timeout)
            wait_for_ca_bundles(kubectl, settings, objects, timeout)
            if any(o["kind"] == "ValidatingWebhookConfiguration" for o in objects):
                wait_for_webhooks(kubectl, settings.namespace, timeout)
        report(f"{name} installed")


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _mesh_configs(kubectl: Kubectl, objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict | None]:
    """The data of the ConfigMaps among `objects` (the mesh config) as the cluster holds them now: a
    control plane reads its mesh config when it starts, so a changed one restarts istiod (a rolling
    restart: proxies keep their configuration meanwhile)."""
    found: dict[tuple[str, str], dict | None] = {}
    for config_map in (o for o in objects if o["kind"] == "ConfigMap"):
        namespace, name = _key(config_map)
        try:
            found[(namespace, name)] = kubectl.get_json("configmap", name, "-n", namespace).get("data")
        except InstallError:  # not there yet
            found[(namespace, name)] = None
    return found


def is_installed(kubectl: Kubectl, settings: InstallSettings) -> bool:
    """Whether the control plane's Deployment exists (what `plait demo bookinfo --kube` checks)."""
    try:
        kubectl.run("get", "deployment", settings.istiod, "-n", settings.namespace, "-o", "name")
    except InstallError:
        return False
    return True


def owned_selector(revision: str | None) -> str:
    """The label selector of what plait installed: one revision's objects ("" is the default revision),
    or (None) every revision's."""
    selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
    return selector if revision is None else f"{selector},{REVISION}={revision or 'default'}"


def owned_resources(purge: bool) -> str:
    return ",".join((*OWNED_RESOURCES, *((CRD_RESOURCE,) if purge else ())))


def installed_objects(kubectl: Kubectl, revision: str | None, purge: bool = False) -> list[dict[str, Any]]:
    """What plait installed in the cluster (see `owned_selector`), CRDs only with `purge`."""
    listed = kubectl.get_json(owned_resources(purge), "--all-namespaces", "-l", owned_selector(revision))
    return listed.get("items", [])


def describe(obj: dict[str, Any]) -> str:
    """``Kind:namespace:name`` (``Kind::name`` when cluster-scoped), as istioctl uninstall names objects."""
    meta = obj["metadata"]
    return f"{obj['kind']}:{meta.get('namespace', '')}:{meta['name']}"


def uninstall(kubectl: Kubectl, revision: str | None, purge: bool, report: Callable[[str], None]) -> int:
    """Delete what install made: `revision`'s objects ("" the default revision), or with `purge` every
    revision's and Istio's CRDs. Namespaces stay (plait may not have made them). Returns how many."""
    found = installed_objects(kubectl, None if purge else revision, purge)
    if found:
        selector = owned_selector(None if purge else revision)
        kubectl.run("delete", owned_resources(purge), "--all-namespaces", "-l", selector, "--ignore-not-found")
    for obj in found:
        report(f"Removed {describe(obj)}.")
    return len(found)
