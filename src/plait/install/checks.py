"""The verdicts of ``plait check [--pre]`` and ``plait verify-install`` from gathered facts (pure).

In: `Facts` (what `plait.install.facts` read from the cluster: the API's version, what the user may
create, which CRDs, Deployments and webhook configurations exist, how a dry-run of an invalid
VirtualService was answered, the root certificate, the proxies' sync states) and the install's
settings; for verify-install the objects install would make and those found. Out: `Result`s in
linkerd check's groups, each failure with a hint saying how to fix it. No I/O, no clock: `Facts.now`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from plait.inject.settings import NAMESPACE_INJECTION_LABEL, REVISION_LABEL
from plait.install.manifests import manifest
from plait.install.settings import InstallSettings

WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")

MINIMUM_KUBERNETES = (1, 20)
CERT_WARNING_DAYS = 30
WEBHOOK_REFUSAL = "configuration is invalid"  # what plait's validating webhook answers an invalid object
# Kinds install creates, as `kubectl auth can-i create` names them (resource.group).
CREATED_RESOURCES = (
    "namespaces",
    "customresourcedefinitions.apiextensions.k8s.io",
    "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
    "mutatingwebhookconfigurations.admissionregistration.k8s.io",
    "validatingwebhookconfigurations.admissionregistration.k8s.io",
    "serviceaccounts",
    "services",
    "configmaps",
    "deployments.apps",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "poddisruptionbudgets.policy",
    "horizontalpodautoscalers.autoscaling",
)
GROUP_TITLES = {
    "kubernetes-api": "kubernetes-api",
    "kubernetes-version": "kubernetes-version",
    "pre-kubernetes-setup": "pre-kubernetes-setup",
    "plait-existence": "plait-existence",
    "plait-webhooks": "plait-webhooks",
    "plait-identity": "plait-identity",
    "plait-data-plane": "plait-data-plane",
}


@dataclass(frozen=True)
class Facts:
    """What was read from the cluster; None where it could not be read (the reason is in `errors`)."""

    now: datetime.datetime
    api_error: str | None = None
    server_version: tuple[int, int] | None = None
    can_create: Mapping[str, bool] = field(default_factory=dict)
    namespace_exists: bool = False
    crds: frozenset[str] = frozenset()
    deployments: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # "ns/name" → (ready, wanted)
    ca_bundles: Mapping[str, bool] = field(default_factory=dict)  # webhook configuration → every caBundle set
    webhook_answer: str | None = None  # the dry-run's error; "" when it was accepted
    root_cert: str | None = None  # PEM
    proxies: tuple[dict[str, Any], ...] | None = None  # /debug/syncz
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # namespace → labels
    errors: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    group: str
    name: str
    ok: bool
    detail: str = ""
    hint: str = ""
    warning: bool = False  # a failure that does not fail the check (‼)


def _api(facts: Facts) -> list[Result]:
    reached = facts.api_error is None
    results = [
        Result(
            "kubernetes-api",
            "can query the Kubernetes API",
            reached,
            facts.api_error or "",
            "check KUBECONFIG / --kubeconfig and that the API server is up (kubectl version)",
        )
    ]
    if reached:
        version = facts.server_version
        results.append(
            Result(
                "kubernetes-version",
                f"is running the minimum Kubernetes API version ({'.'.join(map(str, MINIMUM_KUBERNETES))})",
                version is not None and version >= MINIMUM_KUBERNETES,
                f"the server is {'.'.join(map(str, version)) if version else 'of unknown version'}",
                "upgrade the cluster to Kubernetes 1.20 or later",
            )
        )
    return results


def pre_check_results(facts: Facts, settings: InstallSettings) -> list[Result]:
    """`plait check --pre`: the API answers, is recent enough, and the user may create what install makes."""
    results = _api(facts)
    if facts.api_error is not None:
        return results
    results.append(
        Result(
            "pre-kubernetes-setup",
            f"control plane namespace {settings.namespace} does not already exist",
            not facts.namespace_exists,
            f"namespace {settings.namespace} exists",
            "fine for a new revision beside an installed one; else plait uninstall --purge first",
            warning=True,
        )
    )
    for resource in CREATED_RESOURCES:
        allowed = facts.can_create.get(resource, False)
        results.append(
            Result(
                "pre-kubernetes-setup",
                f"can create {resource}",
                allowed,
                f"SelfSubjectAccessReview: create {resource} is not allowed",
                "install as a cluster admin (kubectl auth can-i create " + resource + " --all-namespaces)",
            )
        )
    return results


def _certificate(facts: Facts, settings: InstallSettings) -> list[Result]:
    if facts.root_cert is None:
        return [
            Result(
                "plait-identity",
                "root certificate is published (ConfigMap istio-ca-root-cert)",
                False,
                facts.errors.get("root_cert", "not found"),
                f"the control plane's leader writes it: kubectl logs -n {settings.namespace} deploy/{settings.istiod}",
            )
        ]
    try:
        cert = x509.load_pem_x509_certificate(facts.root_cert.encode())
    except ValueError as error:
        return [Result("plait-identity", "root certificate is valid", False, str(error), "restore istio-ca-root-cert")]
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    left = end - facts.now
    return [
        Result(
            "plait-identity",
            "root certificate is within its validity period",
            start <= facts.now <= end,
            f"valid from {start:%Y-%m-%d} to {end:%Y-%m-%d}",
            "rotate the root (plait-ca / cacerts) and restart the control plane",
        ),
        Result(
            "plait-identity",
            f"root certificate is not expiring within {CERT_WARNING_DAYS} days",
            left > datetime.timedelta(days=CERT_WARNING_DAYS),
            f"it expires on {end:%Y-%m-%d} ({left.days} days)",
            "rotate the root before it expires",
            warning=True,
        ),
    ]


def _webhooks(facts: Facts, settings: InstallSettings, configurations: Iterable[str]) -> list[Result]:
    results = [
        Result(
            "plait-webhooks",
            f"{name} has its caBundle",
            facts.ca_bundles.get(name, False),
            "missing" if name not in facts.ca_bundles else "a webhook has no caBundle",
            f"the control plane's leader sets it; kubectl logs -n {settings.namespace} deploy/{settings.istiod}",
        )
        for name in configurations
    ]
    answer = facts.webhook_answer
    refused = answer is not None and WEBHOOK_REFUSAL in answer
    if answer is None:
        detail = facts.errors.get("webhook", "the dry-run could not be made")
    elif answer == "":
        detail = "an invalid VirtualService was accepted: no validating webhook checked it"
    else:
        detail = answer
    results.append(
        Result(
            "plait-webhooks",
            "validating webhook refuses an invalid VirtualService (dry run)",
            refused,
            detail,
            f"check that Service {settings.istiod}.{settings.namespace} has ready endpoints and that the "
            "ValidatingWebhookConfiguration points at it with the mesh root as caBundle; "
            "reinstall with plait install to restore it",
        )
    )
    return results


def _proxies(facts: Facts, settings: InstallSettings) -> list[Result]:
    if facts.proxies is None:
        return [
            Result(
                "plait-data-plane",
                "can read the proxies' sync state",
                False,
                facts.errors.get("proxies", "no answer"),
                f"is the control plane running? kubectl exec -n {settings.namespace} deploy/{settings.istiod} -- plait proxy-status",
            )
        ]
    stale = [
        f"{p['proxy_id']} ({short}: {state.get('state')})"
        for p in facts.proxies
        for short, state in (p.get("types") or {}).items()
        if state.get("state") not in ("SYNCED", "NOT SENT")
    ]
    versions = sorted({p.get("envoy_version") or "unknown" for p in facts.proxies})
    return [
        Result(
            "plait-data-plane",
            f"data plane proxies are SYNCED ({len(facts.proxies)} connected)",
            not stale,
            "not synced: " + ", ".join(stale),
            "plait proxy-status names each proxy's state; a NACK says what Envoy refused",
        ),
        Result(
            "plait-data-plane",
            "data plane proxies run one version (no version skew)",
            len(versions) <= 1,
            "versions: " + ", ".join(versions),
            "restart the workloads on older proxies (kubectl rollout restart) to pick up the injector's image",
            warning=True,
        ),
    ]


def _injection_labels(facts: Facts) -> list[Result]:
    """Istio's IST0123: a namespace with both istio-injection and istio.io/rev is injected by whichever
    webhook matches first; istio-injection wins in Istio's selectors, which is rarely what was meant."""
    both = sorted(
        name
        for name, labels in facts.namespace_labels.items()
        if NAMESPACE_INJECTION_LABEL in labels and REVISION_LABEL in labels
    )
    return [
        Result(
            "plait-data-plane",
            "no namespace has both istio-injection and istio.io/rev labels",
            not both,
            "both labels on: " + ", ".join(both),
            "keep one: kubectl label namespace "
            + (both[0] if both else "NS")
            + f" {NAMESPACE_INJECTION_LABEL}- (to move it to the revision) or {REVISION_LABEL}-",
            warning=True,
        )
    ]


def check_results(facts: Facts, settings: InstallSettings) -> list[Result]:
    """`plait check`: the API, the CRDs, the control plane and gateways ready, webhooks, certificate, proxies."""
    results = _api(facts)
    if facts.api_error is not None:
        return results
    objects = manifest(settings)
    crds = [o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"]
    webhook_configurations = [o["metadata"]["name"] for o in objects if o["kind"] in WEBHOOK_KINDS]
    missing = sorted(set(crds) - facts.crds)
    results.append(
        Result(
            "plait-existence",
            "Istio's CRDs are installed",
            not missing,
            "missing: " + ", ".join(missing),
            "plait install (the base component) applies them",
        )
    )
    for deployment, (ready, wanted) in sorted(facts.deployments.items()):
        results.append(
            Result(
                "plait-existence",
                f"Deployment {deployment} is ready",
                wanted > 0 and ready >= wanted,
                f"{ready}/{wanted} replicas ready",
                f"kubectl describe deployment -n {deployment.replace('/', ' ')}; kubectl logs -n "
                f"{deployment.split('/')[0]} deploy/{deployment.split('/')[1]}",
            )
        )
    return (
        results
        + _webhooks(facts, settings, webhook_configurations)
        + _certificate(facts, settings)
        + _proxies(facts, settings)
        + _injection_labels(facts)
    )


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def verify_results(expected: Iterable[Mapping[str, Any]], found: Mapping[tuple[str, str, str], Mapping[str, Any]]):
    """One `Result` per object install would make: found, and for a Deployment ready, as istioctl verify-install."""
    results = []
    for obj in expected:
        kind, namespace, name = _key(obj)
        where = f"{kind}: {name}.{namespace}" if namespace else f"{kind}: {name}"
        live = found.get((kind, namespace, name))
        if live is None:
            results.append(Result("verify", where, False, "not found"))
            continue
        if kind == "Deployment":
            status, wanted = live.get("status") or {}, (live.get("spec") or {}).get("replicas", 1)
            ready = status.get("readyReplicas", 0)
            ok = ready >= wanted
            results.append(
                Result("verify", where, ok, f"{ready}/{wanted} replicas ready" if not ok else "checked successfully")
            )
        else:
            results.append(Result("verify", where, True, "checked successfully"))
    return results
