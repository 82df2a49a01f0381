"""Reading what ``plait check`` and ``plait verify-install`` judge from the cluster, with kubectl (I/O).

In: a `Kubectl` and the install's settings. Out: `checks.Facts` (the API's version, SelfSubjectAccess
reviews through ``kubectl auth can-i``, CRDs, Deployments, webhook caBundles, the answer to a
server-side dry run of an invalid VirtualService, the namespaces' labels, the root certificate ConfigMap, the control
plane's /debug/syncz read inside its pod with kubectl exec), or for verify-install the objects
found by kind, namespace and name. Every failure to read becomes a fact, never an exception.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from plait.install.apply import CRD_RESOURCE, OWNED_RESOURCES, InstallError, Kubectl, owned_selector
from plait.install.checks import CREATED_RESOURCES, WEBHOOK_KINDS, Facts
from plait.install.manifests import ROOT_CERT_CONFIGMAP, manifest
from plait.install.settings import InstallSettings

INVALID_VIRTUAL_SERVICE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "plait-check-invalid"},
    "spec": {"hosts": ["plait-check"], "http": [{"timeout": "5 seconds", "route": [{"destination": {"host": "x"}}]}]},
}


def _version(kubectl: Kubectl) -> tuple[int, int]:
    server = json.loads(kubectl.run("version", "-o", "json", timeout=20)).get("serverVersion") or {}
    return int(server["major"]), int("".join(c for c in server["minor"] if c.isdigit()))


def _allowed(kubectl: Kubectl, resource: str) -> bool:
    try:
        return kubectl.run("auth", "can-i", "create", resource, "--all-namespaces").strip() == "yes"
    except InstallError:  # kubectl says "no" with exit status 1
        return False


def _exists(kubectl: Kubectl, *args: str) -> bool:
    try:
        kubectl.run("get", *args, "-o", "name")
    except InstallError:
        return False
    return True


def _ready(kubectl: Kubectl, namespace: str, name: str) -> tuple[int, int]:
    try:
        deployment = kubectl.get_json("deployment", name, "-n", namespace)
    except InstallError:
        return 0, 0
    return (deployment.get("status") or {}).get("readyReplicas", 0), deployment["spec"].get("replicas", 1)


def _ca_bundled(kubectl: Kubectl, kind: str, name: str) -> bool | None:
    try:
        config = kubectl.get_json(kind.lower(), name)
    except InstallError:
        return None
    return all(hook.get("clientConfig", {}).get("caBundle") for hook in config.get("webhooks") or [])


def _dry_run_answer(kubectl: Kubectl, namespace: str) -> str:
    try:
        kubectl.run("create", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(INVALID_VIRTUAL_SERVICE))
    except InstallError as refused:
        return str(refused)
    return ""


def _root_cert(kubectl: Kubectl, namespace: str) -> str | None:
    try:
        return (kubectl.get_json("configmap", ROOT_CERT_CONFIGMAP, "-n", namespace).get("data") or {}).get(
            "root-cert.pem"
        )
    except InstallError:
        return None


SYNCZ = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:15014/debug/syncz').read().decode())"


def _proxies(kubectl: Kubectl, settings: InstallSettings) -> tuple[dict[str, Any], ...]:
    """/debug/syncz, read inside the control plane's pod: its HTTP API answers only there without a token."""
    deployment = f"deploy/{settings.istiod}"
    return tuple(
        json.loads(kubectl.run("exec", "-n", settings.namespace, deployment, "--", "python3", "-c", SYNCZ, timeout=30))
    )


def gather_facts(
    kubectl: Kubectl, settings: InstallSettings, *, pre: bool, now: datetime.datetime | None = None
) -> Facts:
    """What `plait check` (`pre`: `plait check --pre`) judges."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        version = _version(kubectl)
    except (InstallError, KeyError, ValueError) as error:
        return Facts(now=now, api_error=str(error))
    if pre:
        return Facts(
            now=now,
            server_version=version,
            namespace_exists=_exists(kubectl, "namespace", settings.namespace),
            can_create={resource: _allowed(kubectl, resource) for resource in CREATED_RESOURCES},
        )
    objects = manifest(settings)
    errors: dict[str, str] = {}
    crds = frozenset(line.split("/", 1)[-1] for line in kubectl.run("get", "crd", "-o", "name").split())
    deployments = {
        f"{o['metadata']['namespace']}/{o['metadata']['name']}": _ready(
            kubectl, o["metadata"]["namespace"], o["metadata"]["name"]
        )
        for o in objects
        if o["kind"] == "Deployment"
    }
    bundles = {
        o["metadata"]["name"]: _ca_bundled(kubectl, o["kind"], o["metadata"]["name"])
        for o in objects
        if o["kind"] in WEBHOOK_KINDS
    }
    root_cert = _root_cert(kubectl, settings.namespace)
    if root_cert is None:
        errors["root_cert"] = f"no ConfigMap {ROOT_CERT_CONFIGMAP} with root-cert.pem in namespace {settings.namespace}"
    proxies: tuple[dict[str, Any], ...] | None = None
    if deployments.get(f"{settings.namespace}/{settings.istiod}", (0, 0))[0] == 0:
        errors["proxies"] = f"no ready pod of {settings.istiod} to ask"  # kubectl exec would wait for one
    else:
        try:
            proxies = _proxies(kubectl, settings)
        except (InstallError, ValueError) as error:
            errors["proxies"] = str(error)
    try:
        namespaces = kubectl.get_json("namespaces").get("items") or []
        labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in namespaces}
    except (InstallError, KeyError, ValueError) as error:
        labels, errors["namespaces"] = {}, str(error)
    return Facts(
        now=now,
        server_version=version,
        crds=crds,
        namespace_labels=labels,
        deployments=deployments,
        ca_bundles={name: ok for name, ok in bundles.items() if ok is not None},
        webhook_answer=_dry_run_answer(kubectl, settings.namespace),
        root_cert=root_cert,
        proxies=proxies,
        errors=errors,
    )


def gather_verify_facts(kubectl: Kubectl, settings: InstallSettings) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The objects plait installed (any revision, CRDs included) and the namespaces install would make,
    by (kind, namespace, name)."""
    listed = kubectl.get_json(
        ",".join((*OWNED_RESOURCES, CRD_RESOURCE)), "--all-namespaces", "-l", owned_selector(None)
    )
    found = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in listed.get("items", [])}
    for obj in manifest(settings):
        if obj["kind"] == "Namespace" and _exists(kubectl, "namespace", obj["metadata"]["name"]):
            found[("Namespace", "", obj["metadata"]["name"])] = obj
    return found
