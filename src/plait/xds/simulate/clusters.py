"""The clusters a route or TCP proxy names, with the endpoints Envoy would pick from.

`cluster_target` reads one cluster by its discovery type (EDS endpoints, ORIGINAL_DST, the
dynamic forward proxy, static and DNS load assignments); `cluster_targets` gives each its share
of weighted traffic; `settle` says what Envoy does when none of them can take the request
(503 NC for a missing cluster, UH for no endpoints; a TCP connection is closed).
"""

from __future__ import annotations

from plait.xds.resources import ResourceSet
from plait.xds.simulate.outcome import ClusterTarget, Endpoint, Outcome
from plait.xds.simulate.request import Connection, Request


def _endpoints(assignment: dict | None) -> list[Endpoint]:
    out = []
    for group in (assignment or {}).get("endpoints", []):
        locality = group.get("locality", {})
        where = "/".join(v for v in (locality.get(k) for k in ("region", "zone", "sub_zone")) if v) or None
        for lb in group.get("lb_endpoints", []):
            sock = lb.get("endpoint", {}).get("address", {}).get("socket_address", {})
            out.append(
                Endpoint(
                    f"{sock.get('address')}:{sock.get('port_value')}",
                    lb.get("load_balancing_weight"),
                    where,
                    lb.get("metadata", {}),
                )
            )
    return out


def _cluster_kind(cluster: dict) -> str:
    if "cluster_type" in cluster:
        return cluster["cluster_type"].get("name", "custom")
    return cluster.get("type", "STATIC")


def cluster_target(name: str, resources: ResourceSet, conn: Connection, request: Request) -> ClusterTarget:
    """A cluster and the endpoints Envoy would pick from."""
    cluster = resources.clusters.get(name)
    if cluster is None:
        return ClusterTarget(name, exists=False, note="no such cluster: Envoy answers 503 (NC, no cluster)")
    target = ClusterTarget(name, kind=_cluster_kind(cluster))
    if target.kind == "EDS":
        service = cluster.get("eds_cluster_config", {}).get("service_name") or name
        target.endpoints = _endpoints(resources.endpoints.get(service))
    elif target.kind == "ORIGINAL_DST":
        where = f"{conn.dest_ip}:{conn.dest_port}" if conn.dest_ip else "the address the application dialled"
        target.endpoints = [Endpoint(where)]
        target.note = "ORIGINAL_DST: the connection goes where the application sent it"
    elif target.kind == "envoy.clusters.dynamic_forward_proxy":
        target.endpoints = [Endpoint(f"{request.host}:{request.port}")]
        target.note = "dynamic forward proxy: the Host is resolved by DNS when the request arrives"
    else:
        target.endpoints = _endpoints(cluster.get("load_assignment"))
        if target.kind in ("STRICT_DNS", "LOGICAL_DNS"):
            target.note = f"{target.kind}: these names are resolved by DNS"
    if not target.endpoints:
        target.note = "no endpoints: Envoy answers 503 (UH, no healthy upstream)"
    return target


def cluster_targets(
    entries: list[tuple[str, int | None, list[str]]], resources: ResourceSet, conn: Connection, request: Request
) -> list[ClusterTarget]:
    total = sum(w for _, w, _ in entries if w is not None)
    out = []
    for name, weight, headers in entries:
        target = cluster_target(name, resources, conn, request)
        target.weight, target.header_changes = weight, headers
        target.percent = 100.0 if weight is None else (100.0 * weight / total if total else 0.0)
        out.append(target)
    return out


def settle(out: Outcome, http: bool) -> Outcome:
    """When no cluster can take the request, say what Envoy does instead."""
    live = [c for c in out.clusters if c.percent > 0]
    if live and all(not c.exists or not c.endpoints for c in live):
        missing = all(not c.exists for c in live)
        what = "no such cluster" if missing else "no endpoints"
        names = ", ".join(c.name for c in live)
        end = "" if http else ": Envoy closes the connection"
        return out.fail(503 if http else None, "NC" if missing else "UH", f"{names}: {what}{end}")
    return out
