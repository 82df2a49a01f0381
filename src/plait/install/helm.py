"""The Helm charts' values for an install (pure): what makes charts/base, charts/istiod and
charts/gateway render the objects `plait manifest generate` prints for the same settings.

In: `InstallSettings`. Out: (chart, release namespace, values) per Helm release, in install order:
base (when the Base component is on), istiod (when Pilot is), one gateway release per gateway.
Namespaces are Helm's to make (``helm install --create-namespace``), so the charts do not render them.
"""

from __future__ import annotations

import copy
from typing import Any

from plait.install.settings import GatewaySettings, InstallSettings, K8sSettings


def _k8s(k8s: K8sSettings) -> dict[str, Any]:
    values: dict[str, Any] = {
        "resources": copy.deepcopy(k8s.resources),
        "env": [copy.deepcopy(e) for e in k8s.env],
        "nodeSelector": dict(k8s.node_selector),
        "replicaCount": k8s.replicas,
        "hpaSpec": copy.deepcopy(k8s.hpa),
    }
    return values


def _common(settings: InstallSettings) -> dict[str, Any]:
    return {
        "revision": settings.revision,
        "owner": settings.owner,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "legacyApis": settings.legacy_apis,
    }


def _gateway(settings: InstallSettings, gateway: GatewaySettings) -> dict[str, Any]:
    k8s = _k8s(gateway.k8s)
    k8s["service"] = {
        "type": gateway.k8s.service_type or "",
        "ports": [copy.deepcopy(p) for p in gateway.k8s.service_ports or ()],
    }
    return {
        **_common(settings),
        "name": gateway.name,
        "labels": dict(gateway.labels),
        "egress": gateway.egress,
        "istioNamespace": settings.namespace,
        "controlPlane": settings.control_plane,
        "k8s": k8s,
    }


def chart_values(settings: InstallSettings) -> list[tuple[str, str, dict[str, Any]]]:
    """(chart, namespace, values) of each Helm release that together make `settings`' install."""
    releases: list[tuple[str, str, dict[str, Any]]] = []
    if settings.base:
        releases.append(("base", settings.namespace, {"owner": settings.owner}))
    if settings.pilot is not None:
        istiod = {
            **_common(settings),
            "logLevel": settings.log_level,
            "sidecarInjector": settings.sidecar_injector,
            "meshConfig": copy.deepcopy(settings.mesh_config),
            "k8s": _k8s(settings.pilot),
        }
        releases.append(("istiod", settings.namespace, istiod))
    releases += [("gateway", g.namespace, _gateway(settings, g)) for g in settings.gateways]
    return releases
