"""Should this pod get a sidecar? Istio's decision, as one pure function.

Istio splits it in two: the MutatingWebhookConfiguration's selectors choose which pods reach the
webhook (namespace labels ``istio-injection`` / ``istio.io/rev``, pod labels
``sidecar.istio.io/inject`` / ``istio.io/rev``), then the injector's ``injectRequired`` looks at
hostNetwork, the ignored system namespaces and the pod's ``sidecar.istio.io/inject`` label or
annotation (the label wins when both are set). `should_inject` applies both, in that order, and
says why. `injection_required` is the second half alone: what ``kube-inject`` uses offline, where
namespace labels are unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plait.inject.settings import INJECT, NAMESPACE_INJECTION_LABEL, REVISION_LABEL, STATUS, InjectSettings

# Istio's IgnoredNamespaces: never injected, whatever the labels say.
IGNORED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "local-path-storage")

Decision = tuple[bool, str]


def should_inject(
    pod: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    settings: InjectSettings,
    *,
    namespace: str | None = None,
) -> Decision:
    """(inject?, why) for a pod being created in a namespace with these labels.

    `namespace` defaults to the pod's ``metadata.namespace`` (the webhook passes the request's).
    """
    metadata = pod.get("metadata") or {}
    if STATUS in (metadata.get("annotations") or {}):
        return False, f"already injected ({STATUS} is set)"
    selected, why = webhook_selects(metadata.get("labels") or {}, namespace_labels, settings)
    if not selected:
        return False, why
    required, reason = injection_required(pod, settings, namespace=namespace)
    return required, reason if not required else why


def webhook_selects(
    pod_labels: Mapping[str, str], namespace_labels: Mapping[str, str], settings: InjectSettings
) -> Decision:
    """Whether Istio's webhook selectors for `settings.revision` send this pod to the injector."""
    revision = settings.revision_name
    default_revision = settings.revision == ""
    pod_opt_out = pod_labels.get(INJECT) == "false"
    if NAMESPACE_INJECTION_LABEL in namespace_labels:
        value = namespace_labels[NAMESPACE_INJECTION_LABEL]
        if value != "enabled":
            return False, f"namespace label {NAMESPACE_INJECTION_LABEL}={value}"
        if not default_revision:
            return (
                False,
                f"namespace label {NAMESPACE_INJECTION_LABEL}=enabled selects the default revision, not {revision!r}",
            )
        if pod_opt_out:
            return False, f"pod label {INJECT}=false"
        return True, f"namespace label {NAMESPACE_INJECTION_LABEL}=enabled"
    if REVISION_LABEL in namespace_labels:
        value = namespace_labels[REVISION_LABEL]
        if value != revision:
            return False, f"namespace label {REVISION_LABEL}={value} names another revision than {revision!r}"
        if pod_opt_out:
            return False, f"pod label {INJECT}=false"
        return True, f"namespace label {REVISION_LABEL}={value}"
    return _object_selects(pod_labels, revision, default_revision)


def _object_selects(pod_labels: Mapping[str, str], revision: str, default_revision: bool) -> Decision:
    """No injection label on the namespace: the pod's own labels decide."""
    if REVISION_LABEL in pod_labels:
        value = pod_labels[REVISION_LABEL]
        if value != revision:
            return False, f"pod label {REVISION_LABEL}={value} names another revision than {revision!r}"
        if pod_labels.get(INJECT) == "false":
            return False, f"pod label {INJECT}=false"
        return True, f"pod label {REVISION_LABEL}={value}"
    if default_revision and pod_labels.get(INJECT) == "true":
        return True, f"pod label {INJECT}=true"
    return False, (
        f"namespace has neither {NAMESPACE_INJECTION_LABEL}=enabled nor {REVISION_LABEL}={revision}, "
        f"and the pod has no {INJECT}=true label"
    )


def injection_required(pod: Mapping[str, Any], settings: InjectSettings, *, namespace: str | None = None) -> Decision:
    """Istio's injectRequired: hostNetwork, system namespaces, the pod's opt-in/opt-out, the policy."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return False, "the pod uses the host's network (hostNetwork: true)"
    namespace = namespace or metadata.get("namespace") or ""
    if namespace in IGNORED_NAMESPACES:
        return False, f"namespace {namespace} is never injected"
    labels, annotations = metadata.get("labels") or {}, metadata.get("annotations") or {}
    source, value = (
        (f"label {INJECT}", labels[INJECT])
        if INJECT in labels
        else (f"annotation {INJECT}", annotations.get(INJECT, ""))
    )
    if value == "true":
        return True, f"pod {source}=true"
    if value == "false":
        return False, f"pod {source}=false"
    if settings.injection_policy == "enabled":
        return True, "injection policy enabled"
    return False, "injection policy disabled and the pod does not ask for a sidecar"
