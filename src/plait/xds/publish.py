"""Publishing: one proxy's ResourceSet (Envoy JSON form) → versioned protobuf resources for ADS.

Flows in: a `ResourceSet` from `plait.xds.generator` and the previous `Published` of
the same proxies. Flows out: a `Published`: per type (cds, eds, lds, rds, sds) a
`ResourceMap` {name: VersionedResource}, plus the errors and inconsistencies found.

* A resource's version is the content hash of its canonical JSON (sorted keys, no
  spaces): an unchanged resource keeps its version, so it is never sent again.
* Conversion (`json_format.ParseDict`, pure Python and slow: ~200 ms for a
  1,000-service sidecar) is cached by content hash: one `VersionedResource` per
  distinct content, shared by every proxy and every push that holds it (the cache
  holds them weakly: one lives as long as some ResourceMap holds it). Route
  configurations are converted virtual host by virtual host (an LRU cache of their
  bytes), so a change to one VirtualService converts one virtual host, not all 1,000.
  `publish_vhosts` goes further for routes-only changes: it splices the changed virtual
  hosts into the published bytes (`RouteParts` records where each one lies), hashing
  and converting nothing else; the result equals publishing the whole configuration.
* Consistency (go-control-plane's `Snapshot.Consistent()`): every cluster a route or
  listener names (route actions, weighted clusters, mirrors, TCP proxies, JWKS fetches,
  gRPC services), every EDS name of a cluster, every RDS name of an HTTP connection
  manager (in any filter chain) and every secret a listener or cluster asks for over ADS
  must be in the set. A dangling reference is an *inconsistency*: the hub refuses to push
  such a set and the proxy keeps its last good config. A resource that fails conversion
  is left out with an error, and its previous version, if any, is kept.
* `change_impact` says which proxies a change of config objects can affect.

State: a `Publisher` owns its conversion caches. Nothing here blocks or does I/O.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import weakref
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2, json_format

from plait.model.hosts import fqdn, matches
from plait.model.snapshot import REGISTRY_KINDS, Key, MeshSnapshot, gateway_ref
from plait.xds.references import listener_references, route_config_clusters
from plait.xds.resources import TYPE_URLS, ResourceSet
from plait.xds.translate.secrets import ads_secret_names, redacted

TYPES = ("cds", "eds", "lds", "rds", "vhds", "sds")  # also the push order: make before break
MESSAGES = {
    "cds": cluster_pb2.Cluster,
    "eds": endpoint_pb2.ClusterLoadAssignment,
    "lds": listener_pb2.Listener,
    "rds": route_pb2.RouteConfiguration,
    "vhds": route_components_pb2.VirtualHost,
    "sds": secret_pb2.Secret,
}
# json_format resolves an "@type" only once its message type is imported: every type translation emits.
TYPED_CONFIG_MODULES = [
    "envoy.config.trace.v3.zipkin_pb2",
    "envoy.extensions.access_loggers.file.v3.file_pb2",
    "envoy.extensions.access_loggers.filters.cel.v3.cel_pb2",
    "envoy.extensions.access_loggers.grpc.v3.als_pb2",
    "envoy.extensions.access_loggers.stats.v3.stats_pb2",
    "envoy.extensions.clusters.dynamic_forward_proxy.v3.cluster_pb2",
    "envoy.extensions.filters.http.cors.v3.cors_pb2",
    "envoy.extensions.filters.http.dynamic_forward_proxy.v3.dynamic_forward_proxy_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.http.grpc_web.v3.grpc_web_pb2",
    "envoy.extensions.filters.http.header_mutation.v3.header_mutation_pb2",
    "envoy.extensions.filters.http.jwt_authn.v3.config_pb2",
    "envoy.extensions.filters.http.on_demand.v3.on_demand_pb2",
    "envoy.extensions.filters.http.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.listener.http_inspector.v3.http_inspector_pb2",
    "envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2",
    "envoy.extensions.retry.priority.previous_priorities.v3.previous_priorities_config_pb2",
    "envoy.extensions.transport_sockets.proxy_protocol.v3.upstream_proxy_protocol_pb2",
    "envoy.extensions.transport_sockets.raw_buffer.v3.raw_buffer_pb2",
    "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
]
for _module in TYPED_CONFIG_MODULES:
    importlib.import_module(_module)

VHOST_CACHE_SIZE = 50_000


# ------------------------------------------------------------------ protobuf wire format


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def wire_field(number: int, payload: bytes | str) -> bytes:
    """One length-delimited field (bytes, string or embedded message) in protobuf's wire format."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def digest_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=10).hexdigest()


def content_hash(item: object) -> str:
    """The version of a resource: a hash of its canonical JSON."""
    return digest(json.dumps(item, sort_keys=True, separators=(",", ":")))


# ------------------------------------------------------------------ published resources


class VersionedResource:
    """One resource as sent: its type, name, version (content hash) and serialised message.
    Immutable; one object per distinct content, shared by every proxy that holds it."""

    __slots__ = ("type_url", "name", "version", "value", "__weakref__")

    def __init__(self, type_url: str, name: str, version: str, value: bytes):
        self.type_url, self.name, self.version, self.value = type_url, name, version, value

    def any_bytes(self) -> bytes:
        """The serialised google.protobuf.Any that carries it."""
        return wire_field(1, self.type_url) + wire_field(2, self.value)

    def to_any(self) -> any_pb2.Any:
        return any_pb2.Any(type_url=self.type_url, value=self.value)

    def to_dict(self) -> dict:
        """Envoy's JSON form (proto field names), decoded from what is sent; private keys redacted."""
        short = SHORT_NAMES[self.type_url]
        message = MESSAGES[short].FromString(self.value)
        out = json_format.MessageToDict(message, preserving_proto_field_name=True)
        return redacted(out) if short == "sds" else out

    def __repr__(self) -> str:
        return f"VersionedResource({self.name!r}, {self.version})"


SHORT_NAMES = {url: short for short, url in TYPE_URLS.items()}


class ResourceMap:
    """The resources of one type for one proxy (shared by proxies that translate alike), with a
    version for the whole set. `memo` belongs to `plait.xds.protocol` (diffs from other maps)."""

    __slots__ = ("type_url", "resources", "version", "memo", "__weakref__")

    def __init__(self, type_url: str, resources: Mapping[str, VersionedResource]):
        self.type_url = type_url
        self.resources = dict(resources)
        self.version = digest(",".join(f"{n}={r.version}" for n, r in sorted(self.resources.items())))
        self.memo: dict = {}

    def __len__(self) -> int:
        return len(self.resources)

    def __repr__(self) -> str:
        return f"ResourceMap({SHORT_NAMES.get(self.type_url)}, {len(self.resources)} resources, {self.version})"


@dataclass(frozen=True)
class SharedNames:
    """The names of a generated set that listeners may refer to (see `Publisher.publish_listeners`)."""

    clusters: frozenset[str]
    routes: frozenset[str]
    secrets: frozenset[str]

    @classmethod
    def of(cls, resources: ResourceSet) -> "SharedNames":
        return cls(frozenset(resources.clusters), frozenset(resources.routes), frozenset(resources.secrets))


def _of_type(short: str, messages: tuple[str, ...]) -> list[str]:
    return [m for m in messages if m.startswith(f"{short} ")]


def _with_part(short: str, messages: tuple[str, ...], own: list[str], order: tuple[str, ...]) -> tuple[str, ...]:
    """`messages` (each starting with its type's short name) with those of type `short` replaced by
    `own`, in `order` of types."""
    by_type = {t: _of_type(t, messages) for t in order}
    by_type[short] = own
    return tuple(m for t in order for m in by_type[t])


@dataclass(frozen=True)
class Published:
    """Everything one proxy may be sent, per type, in push order; plus what was wrong with it:
    `errors` (resources that failed conversion; their last good versions are kept) and
    `inconsistencies` (dangling references: a set with any must not be pushed). A scoped view also
    has `aliases`: what each virtual host a proxy asked for by ``<route config>/<host>`` resolved to
    (the name of the `vhds` resource it is sent as), absent when none serves that host."""

    types: dict[str, ResourceMap]
    inconsistencies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> "Published":
        return cls({short: ResourceMap(TYPE_URLS[short], {}) for short in TYPES})


def with_own_listeners(shared: Published, own: Published) -> Published:
    """`shared` with `own`'s listeners and what was wrong with them (errors and inconsistencies in the
    order `Publisher.publish` gives them), for proxies that share everything but their listeners."""
    return Published(
        {**shared.types, "lds": own.types["lds"]},
        _with_part("lds", shared.inconsistencies, _of_type("lds", own.inconsistencies), ("rds", "lds", "cds")),
        _with_part("lds", shared.errors, _of_type("lds", own.errors), TYPES),
    )


@dataclass(frozen=True)
class RouteParts:
    """How a published route configuration's bytes divide: its fields but its virtual hosts (their
    hash, the first `head_length` bytes), then each virtual host as (name, content hash, end offset)."""

    head_hash: str
    head_length: int
    vhosts: tuple[tuple[str, str, int], ...]

    def version(self) -> str:
        return digest(self.head_hash + "".join(h for _, h, _ in self.vhosts))


# ------------------------------------------------------------------ converting, with caches


class Publisher:
    """Converts ResourceSets, caching conversions by content hash across proxies and pushes."""

    def __init__(self, *, vhost_cache_size: int = VHOST_CACHE_SIZE):
        self._converted: weakref.WeakValueDictionary[tuple[str, str], VersionedResource] = weakref.WeakValueDictionary()
        self._vhosts: OrderedDict[str, bytes] = OrderedDict()
        self._vhost_cache_size = vhost_cache_size
        self._route_parts: weakref.WeakKeyDictionary[VersionedResource, RouteParts] = weakref.WeakKeyDictionary()
        self.conversions = 0  # resources actually converted (for tests and benchmarks)
        self.vhost_conversions = 0  # virtual hosts actually run through ParseDict

    def publish(self, resources: ResourceSet, previous: Published | None = None) -> Published:
        """Every type converted; `previous` supplies last good versions of resources that fail."""
        errors: list[str] = []
        maps = {}
        for short in TYPES:
            last = previous.types[short] if previous is not None else None
            maps[short] = self._publish_type(short, resources.of_type(short), last, errors)
        return Published(maps, tuple(inconsistencies(resources)), tuple(errors))

    def publish_routes(self, routes: list[dict], previous: Published) -> Published:
        """`previous` with some route configurations replaced (the rest of it is known unchanged)."""
        errors: list[str] = []
        last = previous.types["rds"]
        changed = self._publish_type("rds", {r["name"]: r for r in routes}, None, errors, last.resources)
        merged = {**last.resources, **changed.resources}
        fresh = ResourceMap(last.type_url, merged)
        clusters = previous.types["cds"].resources
        prefixes = tuple(f"rds {r['name']}" for r in routes)
        problems = [p for p in previous.inconsistencies if not p.startswith(prefixes)]
        problems += [p for r in routes for p in _route_problems(r["name"], r, clusters)]
        stale = tuple(e for e in previous.errors if not e.startswith(prefixes))
        return Published(
            {**previous.types, "rds": last if fresh.version == last.version else fresh},
            tuple(problems),
            stale + tuple(errors),
        )

    def publish_listeners(
        self, listeners: Mapping[str, dict], shared: Published, names: SharedNames, previous: Published | None
    ) -> Published:
        """`shared` (published for proxies alike but for their listeners) with these listeners instead of
        its own: as `publish` would make the whole set (errors and inconsistencies in the same order).
        `names`: what the shared set generated; `previous` supplies last good listeners."""
        errors: list[str] = []
        last = previous.types["lds"] if previous is not None else None
        lds = self._publish_type("lds", listeners, last, errors)
        problems = listener_inconsistencies(listeners, names.clusters, names.routes, names.secrets)
        return with_own_listeners(shared, Published({"lds": lds}, tuple(problems), tuple(errors)))

    def _publish_type(
        self,
        short: str,
        items: Mapping[str, dict],
        last: ResourceMap | None,
        errors: list[str],
        fallback: Mapping[str, VersionedResource] | None = None,
    ) -> ResourceMap:
        """The new map of one type; `last` itself when nothing in it changed (so it is not re-sent)."""
        out = {}
        fallback = fallback if fallback is not None else (last.resources if last is not None else {})
        for name, item in items.items():
            try:
                out[name] = self.convert(short, name, item)
            except Exception as error:  # anything ParseDict raises on a bad resource: keep the last good one
                kept = fallback.get(name)
                errors.append(f"{short} {name}: {error}" + ("" if kept is None else " (kept the previous version)"))
                if kept is not None:
                    out[name] = kept
        fresh = ResourceMap(TYPE_URLS[short], out)
        return last if last is not None and last.version == fresh.version else fresh

    def convert(self, short: str, name: str, item: dict) -> VersionedResource:
        if short == "rds":
            return self._convert_route(name, item)
        version = content_hash(item)
        found = self._converted.get((short, version))
        if found is not None:
            return found
        value = json_format.ParseDict(item, MESSAGES[short]()).SerializeToString()
        return self._remember(short, VersionedResource(TYPE_URLS[short], name, version, value))

    def _remember(self, short: str, resource: VersionedResource) -> VersionedResource:
        self.conversions += 1
        self._converted[(short, resource.version)] = resource
        return resource

    def _convert_route(self, name: str, item: dict) -> VersionedResource:
        """A RouteConfiguration as its fields without virtual hosts, then each virtual host
        appended as field 2 (protobuf concatenates repeated fields), each cached apart."""
        head = {k: v for k, v in item.items() if k != "virtual_hosts"}
        vhosts = [(content_hash(vh), vh) for vh in item.get("virtual_hosts", ())]
        head_hash = content_hash(head)
        version = digest(head_hash + "".join(h for h, _ in vhosts))
        found = self._converted.get(("rds", version))
        if found is not None:
            return found
        parts = [json_format.ParseDict(head, route_pb2.RouteConfiguration()).SerializeToString()]
        layout, end = [], len(parts[0])
        for h, vh in vhosts:
            parts.append(wire_field(2, self._vhost_bytes(h, vh)))
            end += len(parts[-1])
            layout.append((vh.get("name", ""), h, end))
        return self._route(name, version, RouteParts(head_hash, len(parts[0]), tuple(layout)), b"".join(parts))

    def _route(self, name: str, version: str, parts: RouteParts, value: bytes) -> VersionedResource:
        resource = self._remember("rds", VersionedResource(TYPE_URLS["rds"], name, version, value))
        self._route_parts[resource] = parts
        return resource

    def publish_vhosts(self, changed: Mapping[str, Mapping[str, dict]], previous: Published) -> Published | None:
        """`previous` with these virtual hosts (by route configuration and name) replaced in place, the
        others known unchanged: what `publish_routes` makes of the whole configurations, at the cost of
        the changed virtual hosts. None when a configuration was not published here or lacks one of
        them, one fails conversion, or these configurations had errors or inconsistencies: then
        publish the whole configurations."""
        prefixes = tuple(f"rds {name}" for name in changed)
        if any(m.startswith(prefixes) for m in previous.errors + previous.inconsistencies):
            return None
        last = previous.types["rds"]
        out = dict(last.resources)
        problems: list[str] = []
        for name, vhosts in changed.items():
            resource = last.resources.get(name)
            parts = self._route_parts.get(resource) if resource is not None else None
            if parts is None or not vhosts.keys() <= {n for n, _, _ in parts.vhosts}:
                return None
            try:
                out[name] = self._splice(resource, parts, vhosts)
            except Exception:  # anything ParseDict raises: `publish_routes` reports it and keeps the last good one
                return None
            problems += _route_problems(name, {"virtual_hosts": list(vhosts.values())}, previous.types["cds"].resources)
        fresh = ResourceMap(last.type_url, out)
        return Published(
            {**previous.types, "rds": last if fresh.version == last.version else fresh},
            previous.inconsistencies + tuple(problems),
            previous.errors,
        )

    def _splice(self, resource: VersionedResource, parts: RouteParts, vhosts: Mapping[str, dict]) -> VersionedResource:
        """`resource` with `vhosts` in place of its virtual hosts of the same names."""
        pieces, layout = [resource.value[: parts.head_length]], []
        start = end = parts.head_length
        for name, old_hash, old_end in parts.vhosts:
            vhost = vhosts.get(name)
            if vhost is None:
                h, piece = old_hash, resource.value[start:old_end]
            else:
                h = content_hash(vhost)
                piece = wire_field(2, self._vhost_bytes(h, vhost))
            pieces.append(piece)
            end += len(piece)
            layout.append((name, h, end))
            start = old_end
        spliced = RouteParts(parts.head_hash, parts.head_length, tuple(layout))
        version = spliced.version()
        if version == resource.version:
            return resource
        found = self._converted.get(("rds", version))
        return found if found is not None else self._route(resource.name, version, spliced, b"".join(pieces))

    def _vhost_bytes(self, key: str, vhost: dict) -> bytes:
        data = self._vhosts.get(key)
        if data is not None:
            self._vhosts.move_to_end(key)
            return data
        data = json_format.ParseDict(vhost, route_components_pb2.VirtualHost()).SerializeToString()
        self.vhost_conversions += 1
        self._vhosts[key] = data
        if len(self._vhosts) > self._vhost_cache_size:
            self._vhosts.popitem(last=False)
        return data


# ------------------------------------------------------------------ consistency checks


def _route_problems(name: str, config: dict, clusters: Collection[str]) -> list[str]:
    missing = sorted({c for c in route_config_clusters(config) if c not in clusters})
    return [f"rds {name} routes to cluster {c}, which is not generated" for c in missing]


def _secret_problems(short: str, name: str, resource: dict, secrets: Collection[str]) -> list[str]:
    missing = sorted({s for s in ads_secret_names(resource) if s not in secrets})
    return [
        f"{short} {name} refers to secret {s}, which nothing serves (credentialName {s.removesuffix('-cacert')}: "
        f"no Secret with that name in the proxy's namespace holds it)"
        for s in missing
    ]


def listener_inconsistencies(
    listeners: Mapping[str, dict], clusters: Collection[str], routes: Collection[str], secrets: Collection[str]
) -> list[str]:
    """The listeners' part of `inconsistencies`: clusters, route configurations and secrets they name
    that are not among the given names."""
    problems: list[str] = []
    for name, listener in sorted(listeners.items()):
        refs = sorted(set(listener_references(listener)))
        problems += [
            f"lds {name} refers to {kind} {ref}, which is not generated"
            for kind, ref in refs
            if ref not in (clusters if kind == "cluster" else routes)
        ]
        problems += _secret_problems("lds", name, listener, secrets)
    return problems


def inconsistencies(resources: ResourceSet) -> list[str]:
    """Names that point nowhere (go-control-plane's `Snapshot.Consistent()`): route and listener
    clusters, RDS names, EDS names and ADS secrets. Each names the referring resource and the missing name."""
    problems: list[str] = []
    for name, config in sorted(resources.routes.items()):
        problems += _route_problems(name, config, resources.clusters)
    problems += listener_inconsistencies(resources.listeners, resources.clusters, resources.routes, resources.secrets)
    for name, cluster in sorted(resources.clusters.items()):
        if cluster.get("type") == "EDS":
            eds_name = cluster.get("eds_cluster_config", {}).get("service_name") or name
            if eds_name not in resources.endpoints:
                problems.append(f"cds {name} asks for endpoints {eds_name}, which are not generated")
        problems += _secret_problems("cds", name, cluster, resources.secrets)
    return problems


# ------------------------------------------------------------------ which proxies a change can affect


@dataclass(frozen=True)
class Impact:
    """Which proxies a change can affect. `hosts` are FQDNs or wildcard patterns; a proxy that sees
    one of them is affected. `routes_only`: only the HTTP routes of mesh VirtualServices changed,
    for registered HTTP-only services, so a sidecar's clusters and listeners stay as they are."""

    everything: bool = False
    hosts: frozenset[str] = frozenset()
    namespaces: frozenset[str] = frozenset()  # Sidecar and Secret changes: every proxy in these namespaces
    routers: bool = False  # Gateway changes and gateway-bound VirtualServices: every gateway
    routes_only: bool = False

    def affects(self, kind: str, namespace: str, visible_hosts: Collection[str]) -> bool:
        if self.everything or namespace in self.namespaces or (self.routers and kind == "router"):
            return True
        return any(
            h in visible_hosts if not h.startswith("*") else any(matches(h, v) for v in visible_hosts)
            for h in self.hosts
        )


EVERYTHING = Impact(everything=True)


def _versions(old: MeshSnapshot, new: MeshSnapshot, key: Key) -> list:
    return [r for r in (old.resources.get(key), new.resources.get(key)) if r is not None]


def _registry_hosts(old: MeshSnapshot, new: MeshSnapshot) -> set[str] | None:
    """Hostnames whose service changed; None when a service appeared, vanished or changed
    visibility (who sees it then is not known without asking every proxy)."""
    if old.registry is new.registry:
        return set()
    changed = set()
    for host in old.services.keys() | new.services.keys():
        before, after = old.services.get(host), new.services.get(host)
        if before == after:
            continue
        if before is None or after is None or before.export_to != after.export_to:
            return None
        changed.add(host)
    return changed


def _http_only(snapshot: MeshSnapshot, host: str) -> bool:
    service = snapshot.services.get(host)
    return service is not None and all(p.protocol.is_http for p in service.ports)


def _virtual_service_impact(old: MeshSnapshot, new: MeshSnapshot, versions: list) -> tuple[set[str], bool, bool]:
    """(hosts, gateway-bound?, could this change touch more than HTTP routes?)"""
    hosts, routers, more = set(), False, False
    for vs in versions:
        vs_hosts = {fqdn(h, vs.namespace) for h in vs.spec.hosts}
        hosts |= vs_hosts
        bound = [gateway_ref(g, vs.namespace) for g in vs.spec.gateways] or ["mesh"]
        routers = routers or any(g != "mesh" for g in bound)
        more = (
            more
            or bool(vs.spec.tcp or vs.spec.tls)
            or not all(_http_only(old, h) and _http_only(new, h) for h in vs_hosts)
        )
    return hosts, routers, more


def change_impact(old: MeshSnapshot, new: MeshSnapshot, changed: Iterable[Key] | None) -> Impact:
    """Which proxies changed config objects (kind, namespace, name) can affect; when unsure, all."""
    if changed is None:
        return EVERYTHING
    changed = list(changed)
    hosts: set[str] = set()
    namespaces: set[str] = set()
    routers, routes_only = False, True
    for key in changed:
        kind, namespace, _ = key
        if kind == "VirtualService":
            if any(not vs.spec.hosts for vs in _versions(old, new, key)):
                return EVERYTHING  # a delegate: which roots bring it in is not indexed
            vs_hosts, vs_routers, more = _virtual_service_impact(old, new, _versions(old, new, key))
            hosts |= vs_hosts
            routers, routes_only = routers or vs_routers, routes_only and not more
            continue
        routes_only = False
        if kind == "DestinationRule":
            hosts |= {fqdn(dr.spec.host, dr.namespace) for dr in _versions(old, new, key)}
        elif kind == "Sidecar":
            if namespace == new.root_namespace:  # the mesh-wide default Sidecar
                return EVERYTHING
            namespaces.add(namespace)
        elif kind == "Secret":  # read by the proxies of its own namespace only
            namespaces.add(namespace)
        elif kind == "Gateway":
            routers = True
        elif kind not in REGISTRY_KINDS:
            return EVERYTHING
    registry = _registry_hosts(old, new)
    unregistered = any(not h.startswith("*") and h not in old.services and h not in new.services for h in hosts)
    if registry is None or unregistered:
        return EVERYTHING
    return Impact(
        hosts=frozenset(hosts | registry),
        namespaces=frozenset(namespaces),
        routers=routers,
        routes_only=routes_only and bool(changed) and not registry,
    )
