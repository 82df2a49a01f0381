"""Endpoints (EDS): a ClusterLoadAssignment per EDS cluster; subsets filter by their labels.

As Istio does, an endpoint whose workload has a sidecar with certificates (label
``security.istio.io/tlsMode: istio``) carries metadata
``envoy.transport_socket_match: {tlsMode: istio}``, which auto-mTLS clusters match on. Every
endpoint carries its workload's identity under ``istio`` (`plait.telemetry.metrics.endpoint_metadata`):
the destination labels of the client side's metrics.
"""

from __future__ import annotations

from collections.abc import Iterable

from plait.model.proxy import TLS_MODE_LABEL, Proxy
from plait.model.services import Endpoint, Service
from plait.model.snapshot import MeshSnapshot
from plait.telemetry.metrics import METADATA_KEY, endpoint_metadata
from plait.xds.translate.common import cluster_name, socket_address
from plait.xds.translate.tls import ISTIO_TLS_MODE, TRANSPORT_SOCKET_MATCH_KEY


def _locality(text: str | None) -> dict:
    if not text:
        return {}
    keys = ("region", "zone", "sub_zone")
    return {k: v for k, v in zip(keys, text.split("/")) if v}


def load_assignment(name: str, endpoints: Iterable[Endpoint]) -> dict:
    """Endpoints grouped by locality (``region/zone/subzone``), weights kept."""
    groups: dict[str, list[dict]] = {}
    for ep in sorted((e for e in endpoints if e.ready), key=lambda e: (e.locality or "", e.address, e.port)):
        lb_endpoint: dict = {"endpoint": {"address": socket_address(ep.address, ep.port)}}
        if ep.weight:
            lb_endpoint["load_balancing_weight"] = ep.weight
        metadata = {METADATA_KEY: endpoint_metadata(ep)}
        if ep.labels.get(TLS_MODE_LABEL) == "istio":
            metadata[TRANSPORT_SOCKET_MATCH_KEY] = dict(ISTIO_TLS_MODE)
        lb_endpoint["metadata"] = {"filter_metadata": metadata}
        groups.setdefault(ep.locality or "", []).append(lb_endpoint)
    localities = []
    for locality, lb_endpoints in groups.items():
        group: dict = {"lb_endpoints": lb_endpoints}
        if locality:
            group["locality"] = _locality(locality)
        localities.append(group)
    return {"cluster_name": name, "endpoints": localities}


def service_load_assignments(snapshot: MeshSnapshot, proxy: Proxy, svc: Service) -> list[dict]:
    """One assignment for each port of an EDS service, and one per subset filtered by its labels."""
    if svc.resolution not in ("EDS", "STATIC"):
        return []
    dr = snapshot.destination_rule_for(proxy, svc)
    subsets = dr.spec.subsets if dr else []
    out = []
    for port in svc.ports:
        endpoints = svc.endpoints.get(port.number, ())
        out.append(load_assignment(cluster_name("outbound", port.number, None, svc.hostname), endpoints))
        for subset in subsets:
            out.append(
                load_assignment(
                    cluster_name("outbound", port.number, subset.name, svc.hostname),
                    [ep for ep in endpoints if ep.has_labels(subset.labels)],
                )
            )
    return out
