"""Automatic scoping: which of its mesh clusters a sidecar is sent, and why (pure).

Flows in: a generation group's full `Published` (every cluster translation made for its proxies),
the MeshSnapshot, one of its proxies, and the service hosts its workload was seen to call (learned by
the hub from on-demand cluster requests). Flows out: a `Scope` (host → why it is in) and the
`Published` restricted to it (`ClusterIndex`).

What is restricted: only clusters of mesh services (``outbound|port|subset|host``) that nothing but a
route or an on-demand TCP proxy names (a mirror target is kept: Envoy does not fetch those).
Listeners, routes (every virtual host: scoping never hides a route rule), endpoints (Envoy asks for
those of the clusters it holds), secrets and every cluster a listener names otherwise (JWKS fetches,
gRPC services, tracing collectors…) are kept whole. A route to a cluster the proxy does not hold
makes Envoy's on_demand filter (or the TCP proxy's on_demand) ask for it over ADS (ODCDS); the hub
then adds its host to the scope of every proxy of that workload.

A host is in scope when the workload serves it, when it was called, when the proxy's Sidecar resource
lists its egress hosts (declared dependencies: then every host the Sidecar imports), or when an
ALLOW AuthorizationPolicy names the workload's identity or namespace as a source for a workload
behind the service (it is allowed to call it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from plait.api.resources import Resource
from plait.model import MeshSnapshot, Proxy
from plait.xds.publish import Published, ResourceMap
from plait.xds.translate.common import parse_cluster_name

SERVES, CALLED, SIDECAR = "serves it", "called it", "declared by its Sidecar"


@dataclass(frozen=True)
class Scope:
    """The hosts whose clusters a proxy is sent, each with the reason (the first found)."""

    hosts: Mapping[str, str]

    def __contains__(self, host: str) -> bool:
        return host in self.hosts


def scoped_host(cluster: str) -> str | None:
    """The service host of an outbound mesh cluster (subject to scoping), else None."""
    parsed = parse_cluster_name(cluster)
    return parsed[3] if parsed is not None and parsed[0] == "outbound" and parsed[3] else None


# ------------------------------------------------------------------ which clusters may be left out


def _strings(node: object, skip_on_demand: bool) -> Iterator[str]:
    """Every string in a listener's JSON, except inside TCP proxies that fetch their cluster on demand
    and route configurations (the references scoping may leave unresolved)."""
    if isinstance(node, dict):
        if skip_on_demand and "on_demand" in node and ("cluster" in node or "weighted_clusters" in node):
            return
        for key, value in node.items():
            if key != "route_config":
                yield from _strings(value, skip_on_demand)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, skip_on_demand)
    elif isinstance(node, str):
        yield node


def mirror_clusters(routes: Iterable[dict]) -> frozenset[str]:
    """Clusters route configurations mirror to: Envoy skips a mirror whose cluster it does not hold
    (only a route's own cluster is fetched on demand), so these are never scoped out."""
    return frozenset(
        mirror["cluster"]
        for config in routes
        for vhost in config.get("virtual_hosts", ())
        for route in vhost.get("routes", ())
        for mirror in route.get("route", {}).get("request_mirror_policies", ())
        if isinstance(mirror.get("cluster"), str)
    )


def pinned_clusters(listeners: Iterable[dict], routes: Iterable[dict], clusters: Iterable[str]) -> frozenset[str]:
    """Clusters never scoped out: those a listener names other than through routes or on-demand TCP
    proxies, and mirror targets."""
    names = frozenset(clusters)
    named = frozenset(s for listener in listeners for s in _strings(listener, True) if s in names)
    return named | (mirror_clusters(routes) & names)


# ------------------------------------------------------------------ why a host is in scope


def _principal_matches(pattern: str, principal: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return principal.endswith(pattern[1:])
    if pattern.endswith("*"):
        return principal.startswith(pattern[:-1])
    return pattern == principal


def _allows(policy: Resource, proxy: Proxy) -> bool:
    """Does this ALLOW policy name the proxy's identity or namespace as a source?"""
    principal = proxy.spiffe_id.removeprefix("spiffe://")
    for rule in policy.spec.rules:
        for source in (f.source for f in rule.from_):
            if any(_principal_matches(p, principal) for p in source.principals):
                return True
            if any(_principal_matches(n, proxy.namespace) for n in source.namespaces):
                return True
    return False


def allowed_hosts(snapshot: MeshSnapshot, policies: list[Resource], visible: Iterable) -> dict[str, str]:
    """Hosts of visible services whose workloads one of these ALLOW policies (naming the proxy as a
    source) lets it call."""
    out: dict[str, str] = {}
    for service in visible:
        for policy in policies:
            if policy.namespace not in (service.namespace, snapshot.root_namespace):
                continue
            labels = policy.spec.selector.match_labels if policy.spec.selector else {}
            endpoints = (e for eps in service.endpoints.values() for e in eps)
            if not labels or any(e.has_labels(labels) for e in endpoints):
                out[service.hostname] = f"allowed by AuthorizationPolicy {policy.namespace}/{policy.name}"
                break
    return out


def scope_for(snapshot: MeshSnapshot, proxy: Proxy, called: Iterable[str]) -> Scope:
    """The hosts a sidecar is sent clusters of (see the module docstring), with their reasons."""
    hosts: dict[str, str] = {ip.service.hostname: SERVES for ip in snapshot.workload_ports(proxy)}
    sidecar = snapshot.sidecar_for(proxy)
    declared = sidecar is not None and bool(sidecar.spec.egress)
    allowing = [p for p in snapshot.authorization_policies if p.spec.action == "ALLOW" and _allows(p, proxy)]
    visible = snapshot.services_for(proxy) if declared or allowing else []
    if declared:
        why = f"{SIDECAR} {sidecar.namespace}/{sidecar.name}"
        for service in visible:
            hosts.setdefault(service.hostname, why)
    for host in called:
        hosts.setdefault(host, CALLED)
    for host, why in allowed_hosts(snapshot, allowing, visible).items():
        hosts.setdefault(host, why)
    return Scope(hosts)


# ------------------------------------------------------------------ the restricted resources


class ClusterIndex:
    """A group's Published with its clusters split once: those always sent (pinned, and every cluster
    that is not a mesh service's) and the scoped ones by host, so that a view costs what it holds."""

    def __init__(self, published: Published, pinned: frozenset[str]):
        self.published = published
        self.base: dict = {}
        self.by_host: dict[str, dict] = {}
        for name, resource in published.types["cds"].resources.items():
            host = None if name in pinned else scoped_host(name)
            (self.base if host is None else self.by_host.setdefault(host, {}))[name] = resource

    def restrict(self, scope: Scope) -> Published:
        """The Published with only the clusters in scope."""
        published = self.published
        if all(host in scope for host in self.by_host):
            return published
        kept = dict(self.base)
        for host in scope.hosts:
            kept.update(self.by_host.get(host, ()))
        return Published(
            {**published.types, "cds": ResourceMap(published.types["cds"].type_url, kept)},
            published.inconsistencies,
            published.errors,
        )
