"""Which workload a pod belongs to, and where a workload object keeps its pod template.

`workload_of_pod` is Istio's GetDeployMetaFromPod: a pod made by a ReplicaSet whose name ends in
the pod's ``pod-template-hash`` belongs to the Deployment; a Job named ``NAME-<8-10 digits>`` to
the CronJob. `pod_template` finds ``spec.template`` (``spec.jobTemplate.spec.template`` for a
CronJob) in the kinds kube-inject handles. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# kind → path to its pod template
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
_CRONJOB_JOB_NAME = re.compile(r"^(.+)-\d{8,10}$")


@dataclass(frozen=True)
class Workload:
    """The object a pod comes from (Istio's DeploymentMeta + TypeMeta)."""

    kind: str
    api_version: str
    name: str
    namespace: str

    @property
    def owner_uri(self) -> str:
        """Istio's ISTIO_META_OWNER."""
        return (
            f"kubernetes://apis/{self.api_version}/namespaces/{self.namespace or 'default'}/"
            f"{self.kind.lower()}s/{self.name}"
        )


def workload_of_pod(pod: Mapping[str, Any]) -> Workload:
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    name, namespace = metadata.get("name") or "", metadata.get("namespace") or ""
    kind, api_version = "Pod", "v1"
    controller = next((ref for ref in metadata.get("ownerReferences") or () if ref.get("controller")), None)
    if metadata.get("generateName") and controller:
        kind, api_version, name = controller.get("kind", ""), controller.get("apiVersion", ""), controller["name"]
        template_hash = labels.get("pod-template-hash", "")
        cron = _CRONJOB_JOB_NAME.match(name)
        if kind == "ReplicaSet" and template_hash and name.endswith(template_hash):
            kind, name = "Deployment", name.removesuffix(f"-{template_hash}")
        elif kind == "Job" and cron:
            kind, api_version, name = "CronJob", "batch/v1", cron.group(1)
    return Workload(kind=kind, api_version=api_version, name=name or metadata.get("name") or "", namespace=namespace)


def workload_of_object(obj: Mapping[str, Any]) -> Workload:
    metadata = obj.get("metadata") or {}
    return Workload(
        kind=obj.get("kind", ""),
        api_version=obj.get("apiVersion", ""),
        name=metadata.get("name", ""),
        namespace=metadata.get("namespace", ""),
    )


def pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object's pod template (a dict inside `obj`), or None for kinds without one."""
    path = TEMPLATE_PATHS.get(obj.get("kind", ""))
    if path is None:
        return None
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None
