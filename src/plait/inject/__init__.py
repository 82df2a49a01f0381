"""Sidecar injection (Istio's sidecar injector): which pods get a sidecar, and the injected pod.

Flows in: a Pod, or a workload's pod template, as a dict in Kubernetes' JSON shape (what the
API server sends in an AdmissionReview, or what ``kube-inject`` reads from YAML); the labels of
its namespace (webhook only); the mesh-wide `InjectSettings` (images, control-plane address,
revision, trust domain, proxy resources and log level). The pod's Istio annotations
(``traffic.sidecar.istio.io/*``, ``sidecar.istio.io/*``, ``proxy.istio.io/config``,
``status.sidecar.istio.io/port``) adjust its own sidecar.

Flows out: `should_inject` → (bool, reason), Istio's decision (`policy`); `inject` → the injected
pod (`sidecar`: ``istio-init`` running ``plait iptables``, ``istio-proxy`` running ``plait agent``,
volumes, probes rewritten through the agent by `probes`, labels, ``sidecar.istio.io/status``);
`json_patch` → the RFC 6902 operations for the webhook's AdmissionResponse (`patch`);
`kube_inject` → whole manifests injected offline (`manifests`); `review_response` → the webhook's
AdmissionReview answer (`admission`).

State: none. Everything here is pure (no I/O, no clock): the webhook's HTTP shell and the
``plait kube-inject`` command are thin layers above. Nothing blocks. Bad input (an annotation
that is not what Istio accepts) raises `InjectError` naming the annotation and what was expected.
"""

from plait.inject.admission import review_response
from plait.inject.manifests import KubeInjectResult, kube_inject
from plait.inject.patch import json_patch
from plait.inject.policy import injection_required, should_inject
from plait.inject.settings import InjectError, InjectSettings
from plait.inject.sidecar import inject
from plait.inject.workload import Workload

__all__ = [
    "InjectError",
    "InjectSettings",
    "KubeInjectResult",
    "Workload",
    "inject",
    "injection_required",
    "json_patch",
    "kube_inject",
    "review_response",
    "should_inject",
]
