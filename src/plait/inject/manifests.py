"""kube-inject: sidecars into every workload of a set of manifests, offline (istioctl kube-inject).

In: parsed YAML documents (dicts; ``kind: List`` and ``*List`` items are walked). Out: the same
documents, each Pod and each pod template of a Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job or CronJob injected by `plait.inject.sidecar.inject`, plus warnings for
the workloads left alone. Namespace labels are unknown offline, so every workload is injected
unless it opts out (``sidecar.istio.io/inject: "false"``), uses the host's network, or sits in a
system namespace — Istio's injectRequired with the policy "enabled". Other kinds pass through.
Pure; a bad annotation raises `InjectError` naming the document and the object.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from plait.inject.policy import injection_required
from plait.inject.settings import InjectError, InjectSettings
from plait.inject.sidecar import inject
from plait.inject.workload import pod_template, workload_of_object, workload_of_pod


@dataclass
class KubeInjectResult:
    documents: list[Any]
    warnings: list[str] = field(default_factory=list)


def kube_inject(documents: Iterable[Any], settings: InjectSettings) -> KubeInjectResult:
    """Inject every workload in `documents` (None documents, i.e. empty ones, are kept as they are)."""
    result = KubeInjectResult(documents=[])
    for index, document in enumerate(documents, start=1):
        result.documents.append(_inject_object(document, settings, f"document {index}", result.warnings))
    return result


def _describe(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or metadata.get("generateName") or "(unnamed)"
    namespace = metadata.get("namespace")
    return f"{obj.get('kind')} {namespace + '/' if namespace else ''}{name}"


def _inject_object(obj: Any, settings: InjectSettings, where: str, warnings: list[str]) -> Any:
    if not isinstance(obj, dict):
        return obj
    if obj.get("kind") == "List" or (str(obj.get("kind", "")).endswith("List") and isinstance(obj.get("items"), list)):
        out = dict(obj)
        out["items"] = [
            _inject_object(item, settings, f"{where}, item {i}", warnings)
            for i, item in enumerate(obj.get("items") or (), start=1)
        ]
        return out
    if obj.get("kind") == "Pod":
        return _inject_pod_like(obj, obj, settings, where, warnings)
    out = copy.deepcopy(obj)
    template = pod_template(out)
    if template is None:
        return obj
    injected = _inject_pod_like(out, template, settings, where, warnings)
    if injected is not template:
        template.clear()
        template.update(injected)
    return out


def _inject_pod_like(
    obj: dict[str, Any], pod: dict[str, Any], settings: InjectSettings, where: str, warnings: list[str]
) -> dict[str, Any]:
    namespace = (obj.get("metadata") or {}).get("namespace") or (pod.get("metadata") or {}).get("namespace")
    required, reason = injection_required(pod, settings, namespace=namespace)
    if not required:
        warnings.append(f"{_describe(obj)} ({where}): {reason}")
        return pod
    workload = workload_of_pod(pod) if pod is obj else workload_of_object(obj)
    try:
        return inject(pod, settings, workload=workload)
    except InjectError as exc:
        raise InjectError(f"{where}: {_describe(obj)}: {exc}") from None
