"""Which names one generated resource refers to: the clusters, route configurations and ADS
secrets that must exist beside it (read by the publisher's consistency check and by the generator)."""

from __future__ import annotations

from collections.abc import Iterator

from plait.xds.static import XDS_CLUSTER
from plait.xds.translate.common import SDS_CLUSTER

BOOTSTRAP_CLUSTERS = frozenset({XDS_CLUSTER, SDS_CLUSTER})  # defined in every proxy's bootstrap, not over CDS


def action_clusters(action: dict) -> Iterator[str]:
    """Clusters a route action or TCP proxy names: its cluster, weighted clusters, mirrors."""
    if isinstance(action.get("cluster"), str):
        yield action["cluster"]
    weighted = action.get("weighted_clusters")
    for item in weighted.get("clusters", ()) if isinstance(weighted, dict) else ():
        yield item["name"]
    for mirror in action.get("request_mirror_policies", ()):
        if isinstance(mirror.get("cluster"), str):
            yield mirror["cluster"]


def route_config_clusters(config: dict) -> Iterator[str]:
    for vhost in config.get("virtual_hosts", ()):
        for route in vhost.get("routes", ()):
            yield from action_clusters(route.get("route", {}))


def listener_references(node: object) -> Iterator[tuple[str, str]]:
    """("cluster", name) and ("route configuration", name) pairs a listener refers to, at any depth:
    every filter chain's HTTP connection managers (inline routes or RDS), TCP proxies, JWKS fetches
    (``http_uri.cluster``) and gRPC services (``envoy_grpc.cluster_name``)."""
    if isinstance(node, list):
        for item in node:
            yield from listener_references(item)
    elif isinstance(node, dict):
        if isinstance(node.get("route_config"), dict):
            yield from (("cluster", c) for c in route_config_clusters(node["route_config"]))
        elif isinstance(node.get("rds"), dict):
            yield "route configuration", node["rds"].get("route_config_name", "")
        grpc = node.get("envoy_grpc")
        if isinstance(grpc, dict) and grpc.get("cluster_name") not in BOOTSTRAP_CLUSTERS:
            yield "cluster", grpc.get("cluster_name", "")
        yield from (("cluster", c) for c in action_clusters(node))
        for key, value in node.items():
            if key not in ("route_config", "rds") and isinstance(value, (dict, list)):
                yield from listener_references(value)
