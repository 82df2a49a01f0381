"""Istio's installation profiles as data: the IstioOperator spec each one starts from (pure).

In: a profile name. Out: its spec (a fresh dict; callers may change it). What each enables follows
istioctl's profiles: ``default`` (base, istiod, the ingress gateway), ``demo`` (default plus the
egress gateway, access logs to ``/dev/stdout``, small requests, no autoscaling), ``minimal``
(base and istiod), ``remote`` (the base only: Istio's CRDs and the namespace, for a cluster whose
proxies use a control plane elsewhere), ``empty`` (nothing: a file adds what it wants, e.g. one
more gateway).
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_INGRESS = "istio-ingressgateway"
DEFAULT_EGRESS = "istio-egressgateway"

_AUTOSCALE = {"minReplicas": 1, "maxReplicas": 5}  # Istio's autoscaleMin / autoscaleMax
_SMALL = {"requests": {"cpu": "10m", "memory": "40Mi"}}


def _components(*, base: bool, pilot: bool, ingress: bool, egress: bool) -> dict[str, Any]:
    return {
        "base": {"enabled": base},
        "pilot": {"enabled": pilot, "k8s": {"hpaSpec": dict(_AUTOSCALE)}},
        "ingressGateways": [{"name": DEFAULT_INGRESS, "enabled": ingress, "k8s": {"hpaSpec": dict(_AUTOSCALE)}}],
        "egressGateways": [{"name": DEFAULT_EGRESS, "enabled": egress, "k8s": {"hpaSpec": dict(_AUTOSCALE)}}],
    }


def _demo() -> dict[str, Any]:
    components = _components(base=True, pilot=True, ingress=True, egress=True)
    components["pilot"]["k8s"] = {"resources": {"requests": {"cpu": "10m", "memory": "100Mi"}}}
    for gateway in (*components["ingressGateways"], *components["egressGateways"]):
        gateway["k8s"] = {"resources": copy.deepcopy(_SMALL)}
    # Istio's demo profile: access logs on, every request traced (its values.pilot.traceSampling: 100)
    mesh = {"accessLogFile": "/dev/stdout", "defaultConfig": {"tracing": {"sampling": 100.0}}}
    return {"meshConfig": mesh, "components": components}


_PROFILES = {
    "default": lambda: {"components": _components(base=True, pilot=True, ingress=True, egress=False)},
    "demo": _demo,
    "minimal": lambda: {"components": _components(base=True, pilot=True, ingress=False, egress=False)},
    "remote": lambda: {"components": _components(base=True, pilot=False, ingress=False, egress=False)},
    "empty": lambda: {"components": _components(base=False, pilot=False, ingress=False, egress=False)},
}
PROFILES = tuple(_PROFILES)


def profile_spec(name: str) -> dict[str, Any]:
    """The IstioOperator spec of profile `name` (``profile`` included); KeyError for an unknown name."""
    return {"profile": name, **_PROFILES[name]()}
