"""Automatic scoping: which of its mesh clusters and virtual hosts a sidecar is sent, and why (pure).

Flows in: a generation group's full `Published` (every cluster translation made for its proxies),
the MeshSnapshot, one of its proxies, the service hosts its workload was seen to call and the virtual
hosts it asked for (both learned by the hub from on-demand requests). Flows out: a `Scope` (host →
why it is in) and the `Published` restricted to it (`ScopeIndex`).

What is restricted:
* clusters of mesh services (``outbound|port|subset|host``) that nothing but a route or an on-demand
  TCP proxy names (a mirror target is kept: Envoy does not fetch those). A route to a cluster the
  proxy does not hold makes Envoy's on_demand filter (or the TCP proxy's on_demand) ask for it over
  ADS (ODCDS).
* the virtual hosts of route configurations whose connection managers carry the on_demand filter:
  those are sent one by one over the same ADS stream (Envoy's VHDS, `SplitRoute`), those of hosts in
  scope up front; a request for a host the proxy holds no virtual host for makes Envoy ask for
  ``<route config>/<Host header>``, answered with the virtual host Envoy would have picked in the whole
  configuration (every route rule of it: scoping never hides one).
The hub then adds the asked host to the scope of every proxy of that workload. Listeners, endpoints
(Envoy asks for those of the clusters it holds), secrets and every cluster a listener names otherwise
(JWKS fetches, gRPC services, tracing collectors…) are kept whole.

A host is in scope when the workload serves it, when it was called, when the proxy's Sidecar resource
lists its egress hosts (declared dependencies: then every host the Sidecar imports), or when an
ALLOW AuthorizationPolicy names the workload's identity or namespace as a source for a workload
behind the service (it is allowed to call it).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from envoy.config.core.v3 import config_source_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

from plait.api.resources import Resource
from plait.model import MeshSnapshot, Proxy
from plait.xds.publish import Published, ResourceMap, VersionedResource, digest_bytes
from plait.xds.simulate.routes import DomainIndex
from plait.xds.translate.common import ON_DEMAND_FILTER, VIRTUAL_HOST_TYPE, parse_cluster_name

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


# ------------------------------------------------------------------ virtual hosts, one by one


VHDS_READY = "plait-vhds-ready"  # the virtual host every scoped route configuration has (see `SplitRoute`)
_READY_DOMAIN = "plait-vhds-ready.invalid"  # a reserved name: no request ever matches it


def on_demand_route_configs(listeners: Iterable[dict]) -> frozenset[str]:
    """Route configurations (RDS names) of the HTTP connection managers that carry Envoy's on_demand
    filter: only those can fetch a virtual host they lack, so only those are sent host by host."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            rds, filters = node.get("rds"), node.get("http_filters")
            if isinstance(rds, dict) and isinstance(filters, list):
                if any(isinstance(f, dict) and f.get("name") == ON_DEMAND_FILTER for f in filters):
                    found.add(rds.get("route_config_name", ""))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for listener in listeners:
        walk(listener)
    return frozenset(found)


def _vhost_host(name: str) -> str:
    """The host a generated virtual host serves: its name without the port (``reviews.default.svc…:9080``)."""
    host, _, port = name.rpartition(":")
    return host if host and port.isdigit() else name


def _is_wildcard(domain: str) -> bool:
    return domain != "*" and (domain.startswith("*") or domain.endswith("*"))


def _wildcard_covers(pattern: str, domain: str) -> bool:
    """Would Envoy's wildcard domain `pattern` match a request for `domain` (when nothing exact does)?"""
    if pattern.startswith("*"):
        return len(domain) > len(pattern) - 1 and domain.endswith(pattern[1:])
    return len(domain) > len(pattern) - 1 and domain.startswith(pattern[:-1])


def _versioned(vhost: route_components_pb2.VirtualHost) -> VersionedResource:
    value = vhost.SerializeToString(deterministic=True)
    return VersionedResource(VIRTUAL_HOST_TYPE, vhost.name, digest_bytes(value), value)


ENTRIES_KEPT = 50_000
_entries: OrderedDict[tuple[str, bytes], "VirtualHostEntry"] = OrderedDict()


def _entry(config: str, vhost: route_components_pb2.VirtualHost) -> "VirtualHostEntry":
    """The VHDS resource of one virtual host of a route configuration, made once per content (a route
    change makes only the changed virtual hosts again; the cache keeps the newest `ENTRIES_KEPT`)."""
    key = (config, vhost.SerializeToString(deterministic=True))
    found = _entries.get(key)
    if found is not None:
        _entries.move_to_end(key)
        return found
    host = _vhost_host(vhost.name)
    vhost.name = f"{config}/{vhost.name}"
    found = _entries[key] = VirtualHostEntry(_versioned(vhost), host, tuple(vhost.domains))
    if len(_entries) > ENTRIES_KEPT:
        _entries.popitem(last=False)
    return found


@dataclass(frozen=True)
class VirtualHostEntry:
    """One virtual host as a VHDS resource; `host` is the service host whose scope brings it."""

    resource: VersionedResource
    host: str | None
    domains: tuple[str, ...]


class SplitRoute:
    """A route configuration as a scoped sidecar is sent it (Envoy's VHDS, over the same ADS stream):
    the `shell` (its fields and ``vhds``, no virtual hosts) and each virtual host as a resource named
    ``<config>/<virtual host>`` (the virtual host renamed so: Envoy keys and removes them by their own
    name). Envoy asks for ``<config>/<Host header>`` when no virtual host it holds matches a request;
    `resolve` answers with the virtual host Envoy's domain search picks in the whole configuration.
    The catch-all (``*``: Istio's allow_any or block_all) is never sent whole, or it would match every
    host and nothing would be fetched: a host only it serves gets a copy of it for that host alone.
    Every shell has the `VHDS_READY` virtual host: Envoy's listener warms until each of its route
    configurations got a first VHDS update, and an update with nothing for it does not count."""

    def __init__(self, resource: VersionedResource):
        config = route_pb2.RouteConfiguration.FromString(resource.value)
        self.name = config.name
        self.entries: dict[str, VirtualHostEntry] = {}
        self.catch_all: route_components_pb2.VirtualHost | None = None
        for vhost in config.virtual_hosts:
            if "*" in vhost.domains:
                self.catch_all = vhost
            else:
                entry = _entry(self.name, vhost)
                self.entries[entry.resource.name] = entry
        ready = route_components_pb2.VirtualHost(name=f"{self.name}/{VHDS_READY}", domains=[_READY_DOMAIN])
        self.ready = _versioned(ready)
        self.by_host: dict[str, list[VirtualHostEntry]] = {}
        for entry in self.entries.values():
            self.by_host.setdefault(entry.host, []).append(entry)
        self._ignore_port = config.ignore_port_in_host_matching
        self._domains: DomainIndex | None = None  # built on the first ask
        del config.virtual_hosts[:]
        config.vhds.config_source.ads.SetInParent()  # VHDS over the ADS stream (delta only)
        config.vhds.config_source.resource_api_version = config_source_pb2.ApiVersion.V3
        value = config.SerializeToString(deterministic=True)
        self.shell = VersionedResource(resource.type_url, self.name, digest_bytes(value), value)
        self._copies: dict[str, VirtualHostEntry] = {}

    def resolve(self, host: str) -> VirtualHostEntry | None:
        """The virtual host Envoy would route `host` (a Host header, or a name sent before) by."""
        found = self.entries.get(f"{self.name}/{host}")
        if found is not None or host == VHDS_READY:
            return found
        vhost, _ = self.domains().find(host)
        if vhost is None:
            return None
        if vhost["name"] is not None:
            return self.entries[vhost["name"]]
        return self._catch_all_for(host)

    def layout(self) -> tuple:
        """What Envoy's domain search depends on: the virtual hosts' names and domains, in order."""
        return (self._ignore_port, self.catch_all is not None, [(n, e.domains) for n, e in self.entries.items()])

    def domains(self) -> DomainIndex:
        if self._domains is None:
            ignore_port, catch_all, vhosts = self.layout()
            self._domains = DomainIndex(
                {
                    "ignore_port_in_host_matching": ignore_port,
                    "virtual_hosts": [{"name": n, "domains": d} for n, d in vhosts]
                    + ([{"name": None, "domains": ["*"]}] if catch_all else []),
                }
            )
        return self._domains

    def keep_domains_of(self, previous: "SplitRoute") -> None:
        """Reuse `previous`'s domain search when the layout is the same (a route change keeps it)."""
        if self._domains is None and previous._domains is not None and self.layout() == previous.layout():
            self._domains = previous._domains

    def _catch_all_for(self, host: str) -> VirtualHostEntry | None:
        name = f"{self.name}/{host}"
        if name in self.entries or "/" in host:
            return None
        copy = self._copies.get(host)
        if copy is None:
            vhost = route_components_pb2.VirtualHost()
            vhost.CopyFrom(self.catch_all)
            vhost.name = name
            vhost.domains[:] = [host]
            copy = self._copies[host] = VirtualHostEntry(_versioned(vhost), None, (host,))
        return copy

    def held(self, hosts: Iterable[str]) -> dict[str, VersionedResource]:
        """The virtual hosts of these service hosts, with those a held wildcard domain would shadow
        (Envoy picks an exact domain before a wildcard one: a wildcard alone would take their requests)."""
        out = {self.ready.name: self.ready}
        wildcards: list[str] = []
        for host in hosts:
            for entry in self.by_host.get(host, ()):
                out[entry.resource.name] = entry.resource
                wildcards += [d for d in entry.domains if _is_wildcard(d)]
        for pattern in wildcards:
            for entry in self.entries.values():
                if any(_wildcard_covers(pattern, d) for d in entry.domains if not _is_wildcard(d)):
                    out[entry.resource.name] = entry.resource
        return out


_splits: weakref.WeakKeyDictionary[VersionedResource, SplitRoute] = weakref.WeakKeyDictionary()


def split_route(resource: VersionedResource) -> SplitRoute:
    """The route configuration split (once per distinct configuration: alike sidecars share it)."""
    found = _splits.get(resource)
    if found is None:
        found = _splits[resource] = SplitRoute(resource)
    return found


# ------------------------------------------------------------------ the restricted resources


class ScopeIndex:
    """A group's Published with its clusters split once, those always sent (pinned, and every cluster
    that is not a mesh service's) and the scoped ones by host, and its on-demand route configurations
    split into virtual hosts (`SplitRoute`), so that a view costs what it holds."""

    def __init__(
        self,
        published: Published,
        pinned: frozenset[str],
        vhds_routes: frozenset[str] = frozenset(),
        previous: "ScopeIndex | None" = None,
    ):
        self.published = published
        self.base: dict = {}
        self.by_host: dict[str, dict] = {}
        for name, resource in published.types["cds"].resources.items():
            host = None if name in pinned else scoped_host(name)
            (self.base if host is None else self.by_host.setdefault(host, {}))[name] = resource
        rds = published.types["rds"]
        self.routes = {name: split_route(rds.resources[name]) for name in sorted(vhds_routes) if name in rds.resources}
        for name, split in self.routes.items():
            if previous is not None and name in previous.routes:
                split.keep_domains_of(previous.routes[name])
        self.shells = (
            ResourceMap(
                rds.type_url, {n: self.routes[n].shell if n in self.routes else r for n, r in rds.resources.items()}
            )
            if self.routes
            else rds
        )

    def resolve(self, asked: str) -> VirtualHostEntry | None:
        """What Envoy's ask for ``<route config>/<host>`` resolves to (None: nothing serves it)."""
        config, _, host = asked.rpartition("/")
        split = self.routes.get(config)
        return split.resolve(host) if split is not None else None

    def restrict(self, scope: Scope, asked: Iterable[str] = ()) -> Published:
        """The Published with only the clusters in scope and, route configuration by route
        configuration, the virtual hosts of those hosts and of those asked for (`aliases` says which
        resource answers each ask)."""
        published = self.published
        cds = published.types["cds"]
        if not all(host in scope for host in self.by_host):
            kept = dict(self.base)
            for host in scope.hosts:
                kept.update(self.by_host.get(host, ()))
            cds = ResourceMap(cds.type_url, kept)
        if not self.routes:
            if cds is published.types["cds"]:
                return published
            return Published({**published.types, "cds": cds}, published.inconsistencies, published.errors)
        vhosts: dict[str, VersionedResource] = {}
        for split in self.routes.values():
            vhosts.update(split.held(scope.hosts))
        aliases: dict[str, str] = {}
        for name in asked:
            entry = self.resolve(name)
            if entry is not None:
                vhosts[entry.resource.name] = entry.resource
                aliases[name] = entry.resource.name
        types = {**published.types, "cds": cds, "rds": self.shells, "vhds": ResourceMap(VIRTUAL_HOST_TYPE, vhosts)}
        return Published(types, published.inconsistencies, published.errors, aliases)
