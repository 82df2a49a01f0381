"""The xDS hub: the current MeshSnapshot, the connected proxies and what each of them is sent.

Flows in: snapshots (`update`, from the control plane's sources) and ADS streams
(`connect`, from `plait.xds.server`, with the node of the stream's first request).
Flows out: per stream, the responses its protocol state machine (`plait.xds.protocol`)
makes when resources change or requests arrive; `statuses()`, `config_dump()` and
Prometheus metrics (`metrics`).

Sharing: proxies whose translation is identical form a generation group, keyed on
what translation reads from a Proxy: kind, mode, namespace, app address, the labels
that some Sidecar workloadSelector, VirtualService sourceLabels or Gateway selector
names or a security policy or EnvoyFilter selects on, its IP in explicit-proxy mode, and its workload's ports (the inbound side).
Each group is generated (`plait.xds.generator`) and published (`plait.xds.publish`)
once; its members hold references to the same ResourceMaps, so per-proxy memory is
the protocol state only. Explicit-proxy sidecars alike but for their IP (and listen ports)
share more: only their listeners depend on the IP, so everything else is generated once per
update for all of them (`_Shared`), and each group generates its listeners alone
(`plait.xds.generator.explicit_proxy_listeners`) and publishes them over the shared maps; a
change regenerates the shared part once. A `mutate` hook (tests only) edits each group's generated
resources (full, routes-only, or the shared part and the listeners) before publishing; it changes
nothing else on the path.

Automatic scoping (`scoping=True`, the control plane's default): a sidecar on a delta stream is sent
its group's resources restricted to its workload's scope (`plait.xds.scope`: the clusters and
virtual hosts of the services it serves, called, may call or declares); the views of one group's
workloads share everything but the CDS and VHDS maps. When its Envoy asks for a missing cluster by
name (ODCDS) or for the virtual host of a request's host (VHDS), or a new stream says what it holds,
the hosts join that workload's scope (kept per namespace, service account and app label, so replicas
share them) and every proxy of the workload is sent them; the asking proxy gets the host's clusters
before the virtual host, so its waiting request finds them (one round trip).

Updates: `change_impact` says which groups a change can reach; those are regenerated
(only the changed services' virtual hosts, spliced into their route configurations, when only
HTTP routes of VirtualServices changed),
the rest keep theirs. Content hashes turn a no-op regeneration into no push.
Errors in user config never escape: a group whose generation fails keeps its last
good resources and records the error. A generation with dangling references (a route
to a cluster nobody generates, a credentialName no Secret provides…; see
`plait.xds.publish.inconsistencies`) is refused the same way: its proxies keep their
last good config, and the refusal shows in the log, in `statuses()` and in metrics.

Convergence: each `update` is an `UpdateRecord`; it waits for every proxy that was
sent something to have no type left STALE (an ACK, or a NACK, ends the wait). The hub
keeps the newest (`last_update`); an older one lives only while a proxy still owes it an
answer (each holds a time per proxy: keeping the last 32 cost 1–2 KB per proxy).

State is owned by the hub and must be used from one thread: the event loop that runs
the ADS server. `update` and `connect` run translation synchronously (CPU, no I/O).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf import json_format
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plait.model import MeshSnapshot, Proxy
from plait.model.snapshot import Key
from plait.xds.envoyfilter import GATEWAY_NAME_LABEL
from plait.xds.generator import (
    affected_route_names,
    changed_virtual_hosts,
    explicit_proxy_listeners,
    finish,
    generate,
    generate_routes,
    has_unknown_destinations,
    route_names,
    translate,
)
from plait.xds.protocol import STALE, SYNCED, Ack, AdsStream, Nack, Response, TypeStatus
from plait.xds.publish import (
    EVERYTHING,
    SHORT_NAMES,
    TYPES,
    Impact,
    Published,
    Publisher,
    SharedNames,
    change_impact,
    with_own_listeners,
)
from plait.xds.resources import ResourceSet
from plait.xds.scope import (
    VHDS_READY,
    Scope,
    ScopeIndex,
    mirror_clusters,
    on_demand_route_configs,
    pinned_clusters,
    scope_for,
    scoped_host,
)

log = logging.getLogger(__name__)

Mutate = Callable[[Proxy, ResourceSet], ResourceSet]
# Kinds whose change may move a host in or out of a sidecar's scope without changing its resources.
SCOPE_KINDS = frozenset({"AuthorizationPolicy", "Sidecar", "ServiceEntry", "Service", "WorkloadEntry", "Pod"})
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


# ------------------------------------------------------------------ node → Proxy


def proxy_from_node(node) -> Proxy:
    """A Proxy from an Envoy node (envoy.config.core.v3.Node): Istio's node id plus metadata
    NAMESPACE, LABELS, SERVICE_ACCOUNT, PLAIT_MODE / INTERCEPTION_MODE, APP_ADDRESS and PLAIT_IDENTITY."""
    meta = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    parts = node.id.split("~")
    if len(parts) != 4 or parts[0] not in ("sidecar", "router") or "." not in parts[2]:
        raise ValueError(f"node id {node.id!r} is not kind~ip~name.namespace~domain")
    mode = meta.get("PLAIT_MODE")
    if mode not in ("capture", "proxy"):
        mode = "proxy" if meta.get("INTERCEPTION_MODE") == "NONE" else "capture"
    labels = meta.get("LABELS") if isinstance(meta.get("LABELS"), dict) else {}
    return Proxy.from_node_id(
        node.id,
        labels=MappingProxyType({str(k): str(v) for k, v in labels.items()}),
        mode=mode,
        service_account=str(meta.get("SERVICE_ACCOUNT") or "default"),
        app_address=str(meta.get("APP_ADDRESS") or "127.0.0.1"),
        identity=str(meta["PLAIT_IDENTITY"]) if meta.get("PLAIT_IDENTITY") else None,
    )


def admin_address(node) -> str | None:
    """Where the proxy's Envoy admin API listens, as its agent reports it (node metadata ADMIN_ADDRESS)."""
    field = node.metadata.fields.get("ADMIN_ADDRESS") if node.HasField("metadata") else None
    return field.string_value if field is not None and field.string_value else None


def proxy_version(node) -> str:
    """The version of the agent that started the proxy (node metadata ``ISTIO_VERSION``, as Istio's
    pilot-agent sets it); empty when not given."""
    field = node.metadata.fields.get("ISTIO_VERSION") if node.HasField("metadata") else None
    return field.string_value if field is not None else ""


def envoy_version(node) -> str:
    if node.HasField("user_agent_build_version"):
        v = node.user_agent_build_version.version
        return f"{v.major_number}.{v.minor_number}.{v.patch}"
    return node.user_agent_version


def selector_label_keys(snapshot: MeshSnapshot) -> tuple[str, ...]:
    """Label keys translation may compare with a proxy's labels."""
    keys: set[str] = set()
    for sidecar in snapshot.sidecars:
        if sidecar.spec.workload_selector:
            keys.update(sidecar.spec.workload_selector.labels)
    for gateway in snapshot.gateways:
        keys.update(gateway.spec.selector)
    for rule in snapshot.destination_rules:
        if rule.spec.workload_selector:
            keys.update(rule.spec.workload_selector.match_labels)
    for vs in snapshot.virtual_services:
        for route in (*vs.spec.http, *vs.spec.tcp, *vs.spec.tls):
            for match in route.match:
                keys.update(match.source_labels)
    for ef in snapshot.envoy_filters:
        keys.update(ef.spec.workload_selector.labels if ef.spec.workload_selector else ())
        if ef.spec.target_refs:
            keys.add(GATEWAY_NAME_LABEL)
    for policy in (
        *snapshot.peer_authentications,
        *snapshot.authorization_policies,
        *snapshot.request_authentications,
        *snapshot.telemetries,
    ):
        if policy.spec.selector:
            keys.update(policy.spec.selector.match_labels)
    return tuple(sorted(keys))


# ------------------------------------------------------------------ records and statuses


@dataclass
class UpdateRecord:
    """One `update`: when it started, how many groups it regenerated, and per proxy it reached,
    seconds until that proxy had acknowledged (or rejected) everything sent."""

    started: float
    regenerated: int = 0
    waiting: set[int] = field(default_factory=set)  # connection ids still to answer
    acked: dict[str, float] = field(default_factory=dict)
    finished: float | None = None  # when the last proxy it reached answered (clock of the hub)


@dataclass
class ProxyStatus:
    proxy_id: str
    proxy: Proxy
    envoy_version: str
    connected_at: float  # seconds since the epoch
    stream: str  # "sotw" | "delta"
    types: dict[str, TypeStatus]
    errors: tuple[str, ...] = ()  # generation and conversion errors (its last good resources are kept)
    refused: tuple[str, ...] = ()  # dangling references that made the newest config unpushable
    admin_address: str | None = None  # the proxy's Envoy admin API, for proxy-config
    proxy_version: str = ""  # its agent's (ISTIO_VERSION)

    def to_dict(self) -> dict:
        p = self.proxy
        return {
            "proxy_id": self.proxy_id,
            "envoy_version": self.envoy_version,
            "proxy_version": self.proxy_version,
            "connected_at": self.connected_at,
            "admin_address": self.admin_address,
            "stream": self.stream,
            "types": {short: s.to_dict() for short, s in self.types.items()},
            "errors": list(self.errors),
            "refused": list(self.refused),
            "proxy": {
                "kind": p.kind,
                "ip": p.ip,
                "name": p.name,
                "namespace": p.namespace,
                "labels": dict(p.labels),
                "mode": p.mode,
                "service_account": p.service_account,
                "app_address": p.app_address,
            },
        }


class _Group:
    """Proxies that translate identically: one generation, one Published, shared."""

    __slots__ = (
        "key",
        "proxy",
        "published",
        "route_names",
        "hosts",
        "error",
        "refused",
        "route_bound",
        "pinned",
        "vhds_routes",
        "index",
        "views",
    )

    def __init__(self, key: tuple, proxy: Proxy):
        self.key, self.proxy = key, proxy
        self.published: Published | None = None
        self.route_names: frozenset[str] = frozenset()  # of its last full generation
        self.hosts: frozenset[str] = frozenset()  # services its proxies see or serve
        self.error = ""
        self.refused: tuple[str, ...] = ()  # inconsistencies of the newest generation, which was not pushed
        self.route_bound = False  # some clusters exist only because routes name them: routes alone can change CDS
        self.pinned: frozenset[str] = frozenset()  # clusters its listeners name: never scoped out
        self.vhds_routes: frozenset[str] = frozenset()  # route configurations its listeners may fetch hosts of
        self.index: ScopeIndex | None = None  # of `published`, for scoped views
        # per workload (`XdsHub._scope_key`): (scope epoch, the `published` it restricts, scope, view)
        self.views: dict[tuple, tuple[int, Published, Scope, Published]] = {}


class _Shared:
    """What explicit-proxy sidecars alike but for their IP and listen ports share: everything but
    their listeners, generated once per `XdsHub.update` (`epoch`; `published`'s listeners are those
    of the proxy it was generated for, and go unused)."""

    __slots__ = ("epoch", "published", "names", "translated_clusters", "full", "mirrors", "routes_kind")

    def __init__(self, epoch: int, published: Published, names: SharedNames, translated_clusters, full, mirrors):
        self.epoch, self.published, self.names = epoch, published, names
        self.routes_kind = "shared"  # how its routes were last made: whole ("shared"), "virtual_hosts" or "routes"
        self.translated_clusters: frozenset[str] = translated_clusters  # before `finish` (tracing reads them)
        self.full: tuple[frozenset[str], bool] = full  # route names, route_bound (see `_Group`)
        self.mirrors: frozenset[str] = mirrors  # clusters its routes mirror to (never scoped out)


def _explicit(proxy: Proxy) -> bool:
    return proxy.kind == "sidecar" and proxy.mode == "proxy"


class ProxyConnection:
    """One ADS stream of one proxy, as the server sees it: hand it requests, take its pushes."""

    def __init__(self, hub: "XdsHub", conn_id: int, node, proxy: Proxy, *, delta: bool, wake: Callable[[], None]):
        self.hub, self.id, self.proxy = hub, conn_id, proxy
        self.proxy_id = node.id
        self.envoy_version = envoy_version(node)
        self.proxy_version = proxy_version(node)
        self.admin_address = admin_address(node)
        self.connected_at = time.time()
        self.stream = AdsStream(delta=delta)
        self.group: _Group | None = None
        self._wake = wake
        self._next: Published | None = None
        self._dirty = False
        self._new_records: list[UpdateRecord] = []
        self._pending: list[UpdateRecord] = []

    def receive(self, request) -> list[Response]:
        asked = self.stream.on_demand(request)
        pushed: list[Response] = []
        short = SHORT_NAMES.get(request.type_url, "")
        if asked and self.hub._learn(self, short, asked) and short == "vhds":
            # A virtual host fetched on demand brings its service's clusters: they go first, so
            # that the request Envoy holds finds them (one round trip, not a second one for ODCDS).
            pushed = self.stream.update(self._next)
        return self.hub._after(self, pushed + self.stream.receive(request))

    def take_pushes(self) -> list[Response]:
        """Responses for resources that changed since the last call (after a wake-up)."""
        self._dirty = False
        responses = self.hub._after(self, self.stream.update(self._next))
        records, self._new_records = self._new_records, []
        if responses:
            self._pending += records
        else:  # nothing new for this proxy after all: those updates did not reach it
            for record in records:
                self.hub._stop_waiting(record, self)
        self.hub._settle(self)
        return responses

    def _assign(self, published: Published | None, record: UpdateRecord) -> None:
        self._next = published
        record.waiting.add(self.id)
        self._new_records.append(record)
        if not self._dirty:
            self._dirty = True
            self._wake()


# ------------------------------------------------------------------ the hub


class XdsHub:
    """The snapshot, the connected proxies and their resources; see the module docstring."""

    def __init__(
        self,
        snapshot: MeshSnapshot,
        *,
        mutate: Mutate | None = None,
        clock: Callable[[], float] = time.monotonic,
        scoping: bool = False,
    ):
        self.snapshot = snapshot
        self.scoping = scoping
        self._called: dict[tuple, set[str]] = {}  # per workload (`_scope_key`): hosts it asked for on demand
        self._asked: dict[tuple, set[str]] = {}  # per workload: virtual hosts (``<route config>/<host>``) asked for
        self._scope_epoch = 0  # bumped when a change may move what is in some scope (views are then redone)
        self._mutate = mutate
        self._clock = clock
        self._publisher = Publisher()
        self._label_keys = selector_label_keys(snapshot)
        self._groups: dict[tuple, _Group] = {}
        self._shared: dict[tuple, _Shared] = {}  # by `_shared_key`
        self._epoch = 0  # counts `update`s: a shared part is valid for the epoch it was made in
        self._connections: dict[int, ProxyConnection] = {}
        self._ids = itertools.count(1)
        # the newest update; older ones live only while some proxy still owes them an answer (`_pending`)
        self.last_update: UpdateRecord | None = None
        self.metrics = CollectorRegistry()
        self._pushes = Counter("plait_xds_pushes", "xDS responses sent, by type", ["type"], registry=self.metrics)
        self._push_seconds = Histogram(
            "plait_xds_push_seconds",
            "Time to regenerate and publish after a change",
            buckets=SECONDS_BUCKETS,
            registry=self.metrics,
        )
        self._connected = Gauge("plait_xds_connected_proxies", "Connected ADS streams", registry=self.metrics)
        self._nacks = Counter(
            "plait_xds_nacks", "xDS responses rejected by proxies, by type", ["type"], registry=self.metrics
        )
        self._convergence = Histogram(
            "plait_xds_convergence_seconds",
            "Config change until every affected proxy acknowledged it",
            buckets=SECONDS_BUCKETS,
            registry=self.metrics,
        )
        self._generations = Counter(
            "plait_xds_generations",
            "Group generations, by kind (full; routes-only: virtual_hosts spliced in, or routes made whole; "
            "shared: the part explicit-proxy sidecars share)",
            ["kind"],
            registry=self.metrics,
        )
        self._refusals = Counter(
            "plait_xds_refused_generations",
            "Generations not pushed because they referred to missing resources",
            registry=self.metrics,
        )
        Gauge(
            "plait_xds_refused_proxies",
            "Connected proxies whose newest config was refused (they keep their last good one)",
            registry=self.metrics,
        ).set_function(self._refused_count)

    # -------------------------------------------------------------- streams

    def connect(self, node, *, delta: bool, wake: Callable[[], None]) -> ProxyConnection:
        """A new stream from the node of its first request; `wake` is called (once until the
        next `take_pushes`) when it has something to push. Raises ValueError on a bad node id."""
        proxy = proxy_from_node(node)
        conn = ProxyConnection(self, next(self._ids), node, proxy, delta=delta, wake=wake)
        group = self._group_for(proxy)
        if group.published is None and not group.error:
            self._generate(group, None, EVERYTHING)
        conn.group = group
        conn.stream.published = conn._next = self._served(conn)
        self._connections[conn.id] = conn
        self._connected.set(len(self._connections))
        return conn

    def disconnect(self, conn: ProxyConnection) -> None:
        if self._connections.pop(conn.id, None) is None:
            return
        for record in conn._pending + conn._new_records:
            self._stop_waiting(record, conn)
        self._connected.set(len(self._connections))

    def _after(self, conn: ProxyConnection, outputs: list) -> list[Response]:
        responses = []
        for item in outputs:
            if isinstance(item, Response):
                responses.append(item)
                self._pushes.labels(item.type).inc()
            elif isinstance(item, Nack):
                self._nacks.labels(item.type).inc()
                log.warning("%s rejected %s (nonce %s): %s", conn.proxy_id, item.type, item.nonce, item.message)
            elif isinstance(item, Ack):
                log.debug("%s acknowledged %s version %s", conn.proxy_id, item.type, item.version)
        if outputs:
            self._settle(conn)
        return responses

    def _settle(self, conn: ProxyConnection) -> None:
        if not conn._pending or any(s.state == STALE for s in conn.stream.statuses().values()):
            return
        now = self._clock()
        for record in conn._pending:
            record.acked[conn.proxy_id] = now - record.started
            self._stop_waiting(record, conn)
        conn._pending = []

    def _stop_waiting(self, record: UpdateRecord, conn: ProxyConnection) -> None:
        record.waiting.discard(conn.id)
        if not record.waiting and record.finished is None:
            record.finished = self._clock()
            if record.acked:
                self._convergence.observe(max(record.acked.values()))

    # -------------------------------------------------------------- updates

    def update(self, snapshot: MeshSnapshot, changed: Iterable[Key] | None = None) -> None:
        """A new snapshot; `changed` = (kind, namespace, name) of the objects that changed (None: unknown)."""
        record = UpdateRecord(started=self._clock())
        old, self.snapshot = self.snapshot, snapshot
        self._epoch += 1
        try:
            impact = change_impact(old, snapshot, changed)
        except Exception:  # a change we cannot analyse: assume it reaches everyone
            log.exception("change analysis failed; regenerating every proxy")
            impact = EVERYTHING
        self._label_keys = selector_label_keys(snapshot)
        previous = self._regroup()
        for group in self._groups.values():
            if group.key in previous or group.published is None or group.error or group.refused:
                self._generate(group, previous.get(group.key, group.published), EVERYTHING)
                record.regenerated += 1
            elif impact.affects(group.proxy.kind, group.proxy.namespace, group.hosts):
                self._generate(group, group.published, impact)
                record.regenerated += 1
        if changed is None or any(key[0] in SCOPE_KINDS for key in changed):
            self._scope_epoch += 1
        for conn in self._connections.values():
            served = self._served(conn)
            if served is not conn._next:
                conn._assign(served, record)
        self._push_seconds.observe(self._clock() - record.started)
        self.last_update = record
        if not record.waiting:
            record.finished = self._clock()

    def _regroup(self) -> dict[tuple, Published | None]:
        """Recompute every connection's group; returns new groups' keys → a last good Published."""
        groups: dict[tuple, _Group] = {}
        fresh: dict[tuple, Published | None] = {}
        for conn in self._connections.values():
            key = self._group_key(conn.proxy)
            if key not in groups:  # its first live member represents it
                group = self._groups.get(key)
                if group is None:
                    group = _Group(key, conn.proxy)
                    fresh[key] = conn.group.published if conn.group else None
                group.proxy = conn.proxy
                groups[key] = group
            conn.group = groups[key]
        self._groups = groups
        live = {self._shared_key(g.proxy) for g in groups.values() if _explicit(g.proxy)}
        self._shared = {k: v for k, v in self._shared.items() if k in live}
        return fresh

    def _group_key(self, proxy: Proxy) -> tuple:
        return (
            *self._shared_key(proxy),
            proxy.ip if proxy.mode == "proxy" else "",
            tuple(sorted(proxy.listen_ports.items())),
        )

    def _shared_key(self, proxy: Proxy) -> tuple:
        """What translation reads from a Proxy, but for its IP and listen ports."""
        workload = tuple((p.port.number, p.port.protocol, p.endpoint.port) for p in self.snapshot.workload_ports(proxy))
        return (
            proxy.kind,
            proxy.mode,
            proxy.namespace,
            proxy.identity,
            proxy.app_address,
            tuple((k, proxy.labels.get(k)) for k in self._label_keys),
            workload,
        )

    def _scope_key(self, proxy: Proxy) -> tuple | None:
        """The workload whose calls widen a sidecar's scope (its replicas share what one learns)."""
        if not self.scoping or proxy.kind != "sidecar":
            return None
        return (proxy.namespace, proxy.service_account, proxy.labels.get("app", ""))

    def _group_for(self, proxy: Proxy) -> _Group:
        key = self._group_key(proxy)
        if key not in self._groups:
            self._groups[key] = _Group(key, proxy)
        return self._groups[key]

    def _generate(self, group: _Group, previous: Published | None, impact: Impact) -> None:
        """Regenerate and publish one group; on any error or inconsistency keep its last good resources."""
        proxy = group.proxy
        try:
            update, full = self._routes_update(group, impact), None
            if update is None:
                (published, full), kind = self._full_generation(proxy, previous), "full"
            else:
                published, kind = update
            self._generations.labels(kind).inc()
            # The services it sees, and those it serves (their DestinationRules shape its inbound clusters).
            group.hosts = frozenset(s.hostname for s in self.snapshot.services_for(proxy)) | {
                ip.service.hostname for ip in self.snapshot.workload_ports(proxy)
            }
        except Exception as error:  # user config must never take the control plane down
            group.error = f"generation failed: {type(error).__name__}: {error}"
            log.exception("generating resources for %s failed; keeping its last good ones", proxy.id)
            if group.published is None:  # a new group: its proxies keep what they had
                group.published = previous
            return
        group.error = ""
        for message in published.errors:
            log.warning("%s: %s", proxy.id, message)
        group.refused = published.inconsistencies
        if group.refused:
            self._refuse(group, previous)
            return
        if full is not None:
            group.route_names, group.route_bound, group.pinned, group.vhds_routes = full
        if not _same(group.published, published):
            group.published = published

    def _full_generation(
        self, proxy: Proxy, previous: Published | None
    ) -> tuple[Published, tuple[frozenset, bool, frozenset, frozenset]]:
        """Everything generated and published; with the route names, whether some clusters exist only
        because routes name them, the clusters never scoped out and the route configurations whose
        virtual hosts may be fetched on demand (see `_Group`)."""
        if _explicit(proxy):
            return self._explicit_generation(proxy, previous)
        resources = generate(self.snapshot, proxy)
        if self._mutate:
            resources = self._mutate(proxy, resources)
        published = self._publisher.publish(resources, previous)
        listeners = resources.listeners.values()
        pinned = pinned_clusters(listeners, resources.routes.values(), resources.clusters)
        fetched = on_demand_route_configs(listeners)
        return published, (frozenset(resources.routes), has_unknown_destinations(resources), pinned, fetched)

    # -------------------------------------------------------------- automatic scoping

    def _served(self, conn: ProxyConnection) -> Published | None:
        """What a stream is sent: on delta streams of sidecars (Envoy asks for a missing cluster over
        delta only), its group's resources restricted to its workload's scope; else all of them."""
        group = conn.group
        key = self._scope_key(conn.proxy)
        if group is None or group.published is None or key is None or not conn.stream.delta:
            return group.published if group is not None else None
        if group.index is None or group.index.published is not group.published:
            group.index = ScopeIndex(group.published, group.pinned, group.vhds_routes, previous=group.index)
        cached = group.views.get(key)
        if cached is not None and cached[0] == self._scope_epoch and cached[1] is group.published:
            return cached[3]
        scope = scope_for(self.snapshot, conn.proxy, self._called.get(key, ()))
        view = group.index.restrict(scope, self._asked.get(key, ()))
        if cached is not None and _same(cached[3], view):
            view = cached[3]
        group.views[key] = (self._scope_epoch, group.published, scope, view)
        return view

    def _learn(self, conn: ProxyConnection, short: str, names: frozenset[str]) -> bool:
        """A proxy asked for clusters or virtual hosts (``<route config>/<host>``) by name (a first
        call, or what it held before it reconnected): their hosts join its workload's scope, every
        proxy of that workload is sent them; True when that changed what the proxy is sent."""
        group, key = conn.group, self._scope_key(conn.proxy)
        if key is None or group is None or group.published is None or not conn.stream.delta:
            return False
        scope = group.views[key][2] if key in group.views else Scope({})
        asked: set[str] = set()
        if short == "vhds":
            self._served(conn)  # the group's index is current
            resolved = {name: group.index.resolve(name) for name in names}
            asked = {n for n, entry in resolved.items() if entry is not None} - self._asked.get(key, set())
            hosts = {e.host for e in resolved.values() if e is not None and e.host and e.host not in scope}
        else:
            known = group.published.types["cds"].resources
            hosts = {h for name in names if name in known and (h := scoped_host(name)) and h not in scope}
        if not hosts and not asked:
            return False
        self._called.setdefault(key, set()).update(hosts)
        self._asked.setdefault(key, set()).update(asked)
        for other in self._groups.values():
            other.views.pop(key, None)
        record = UpdateRecord(started=self._clock())
        for member in self._connections.values():
            if self._scope_key(member.proxy) != key:
                continue
            served = self._served(member)
            if member is conn:  # its request is answered from the new view right away
                member.stream.published = member._next = served
            elif served is not member._next:
                member._assign(served, record)
        if not record.waiting:
            record.finished = self._clock()
        return True

    def scope_of(self, proxy_id: str) -> dict | None:
        """What the newest stream of that proxy is sent of its mesh clusters and virtual hosts, and why:
        {"scoped", "stream", "hosts": {host: reason}, "clusters": {"sent", "generated"}, "virtual_hosts":
        {"sent", "generated"} (empty when not scoped)}; None if not connected."""
        streams = [c for c in self._connections.values() if c.proxy_id == proxy_id]
        if not streams:
            return None
        conn = max(streams, key=lambda c: c.id)
        group, key = conn.group, self._scope_key(conn.proxy)
        served, full = self._served(conn), group.published if group else None
        scope = group.views[key][2] if group is not None and key in group.views and conn.stream.delta else None
        return {
            "scoped": scope is not None,
            "scoping": self.scoping,
            "stream": conn.stream.kind,
            "hosts": dict(sorted(scope.hosts.items())) if scope is not None else {},
            "clusters": {
                "sent": len(served.types["cds"]) if served else 0,
                "generated": len(full.types["cds"]) if full else 0,
            },
            "virtual_hosts": _virtual_hosts_sent(served, group) if scope is not None else {},
        }

    def _explicit_generation(
        self, proxy: Proxy, previous: Published | None
    ) -> tuple[Published, tuple[frozenset, bool, frozenset, frozenset]]:
        """An explicit-proxy sidecar: its own listeners published over the part it shares."""
        shared = self._shared_part(proxy, previous)
        listeners = explicit_proxy_listeners(self.snapshot, proxy, shared.translated_clusters)
        if self._mutate:
            listeners = self._mutate(proxy, ResourceSet(listeners=listeners)).listeners
        pinned = pinned_clusters(listeners.values(), (), shared.names.clusters) | shared.mirrors
        published = self._publisher.publish_listeners(listeners, shared.published, shared.names, previous)
        return published, (*shared.full, pinned, on_demand_route_configs(listeners.values()))

    def _shared_part(self, proxy: Proxy, previous: Published | None) -> _Shared:
        """The shared part for this update: generated by the first explicit-proxy sidecar of its kind
        that needs it after a change, reused by the others."""
        key = self._shared_key(proxy)
        shared = self._shared.get(key)
        if shared is not None and shared.epoch == self._epoch:
            return shared
        translated = translate(self.snapshot, proxy)
        clusters = frozenset(translated.clusters)
        resources = finish(self.snapshot, proxy, translated)
        if self._mutate:
            resources = self._mutate(proxy, resources)
        published = self._publisher.publish(resources, shared.published if shared is not None else previous)
        full = (frozenset(resources.routes), has_unknown_destinations(resources))
        mirrors = mirror_clusters(resources.routes.values()) & frozenset(resources.clusters)
        self._shared[key] = shared = _Shared(self._epoch, published, SharedNames.of(resources), clusters, full, mirrors)
        self._generations.labels("shared").inc()
        return shared

    def _vhosts_update(
        self, proxy: Proxy, names: list[str], hosts: Collection[str], previous: Published
    ) -> tuple[Published, frozenset[str]] | None:
        """The cheapest routes-only path: only the virtual hosts of the changed hosts are generated and
        spliced into `previous`'s route configurations; with the clusters they mirror to. None when
        that cannot be done (the test hook mutates resources, EnvoyFilters patch routes, the splice
        fails, a route names a cluster not generated): then whole route configurations are."""
        if self._mutate:
            return None
        vhosts = changed_virtual_hosts(self.snapshot, proxy, names, hosts)
        if vhosts is None:
            return None
        published = self._publisher.publish_vhosts(vhosts, previous)
        if published is None or published.inconsistencies != previous.inconsistencies:
            return None
        return published, mirror_clusters({"virtual_hosts": list(v.values())} for v in vhosts.values())

    def _explicit_routes_update(
        self, group: _Group, names: list[str], hosts: Collection[str]
    ) -> tuple[Published, str] | None:
        """The routes-only path of an explicit-proxy sidecar: the shared part's route configurations,
        updated once per update, under the group's own listeners. None when the shared part
        changed more than its routes (then the group takes the full path)."""
        key = self._shared_key(group.proxy)
        shared = self._shared.get(key)
        if shared is None:
            return None
        if shared.epoch != self._epoch:
            update = self._updated_routes(group.proxy, names, hosts, shared.published)
            if update is None:
                return None
            shared.published, mirrors, shared.routes_kind = update
            shared.mirrors |= mirrors & shared.names.clusters
            shared.epoch = self._epoch
        group.pinned |= shared.mirrors
        if any(shared.published.types[t] is not group.published.types[t] for t in TYPES if t not in ("lds", "rds")):
            return None
        return with_own_listeners(shared.published, group.published), shared.routes_kind

    def _updated_routes(
        self, proxy: Proxy, names: list[str], hosts: Collection[str], previous: Published
    ) -> tuple[Published, frozenset[str], str] | None:
        """`previous` with its route configurations updated for a routes-only change to `hosts`, the
        clusters they mirror to, and how: the changed virtual hosts spliced in (``virtual_hosts``),
        else the named configurations made whole (``routes``). None when a route names a cluster not
        generated (e.g. a new route to an unknown destination: then everything is regenerated)."""
        spliced = self._vhosts_update(proxy, names, hosts, previous)
        if spliced is not None:
            return *spliced, "virtual_hosts"
        routes = generate_routes(self.snapshot, proxy, only=names)
        if self._mutate:
            routes = list(self._mutate(proxy, ResourceSet(routes={r["name"]: r for r in routes})).routes.values())
        published = self._publisher.publish_routes(routes, previous)
        if published.inconsistencies != previous.inconsistencies:
            return None
        return published, mirror_clusters(routes), "routes"

    def _refuse(self, group: _Group, previous: Published | None) -> None:
        """Keep the group's last good resources: its newest generation refers to what does not exist."""
        self._refusals.inc()
        members = sorted(c.proxy_id for c in self._connections.values() if c.group is group) or [group.proxy.id]
        shown = ", ".join(members[:3]) + (f" and {len(members) - 3} more" if len(members) > 3 else "")
        log.error(
            "refusing to push inconsistent config to %s (the last good config stays): %s",
            shown,
            "; ".join(group.refused),
        )
        if group.published is None:
            group.published = previous

    def _refused_count(self) -> int:
        return sum(1 for c in self._connections.values() if c.group is not None and c.group.refused)

    def _routes_update(self, group: _Group, impact: Impact) -> tuple[Published, str] | None:
        """When only HTTP routes changed: the changed virtual hosts spliced into the group's route
        configurations (kind ``virtual_hosts``), else the route configurations they reach made whole
        (``routes``), over the group's current resources. None when more may change (then
        everything is regenerated)."""
        proxy = group.proxy
        if (
            not impact.routes_only
            or proxy.kind != "sidecar"
            or group.published is None
            or group.refused
            or group.route_bound
            or frozenset(route_names(self.snapshot, proxy)) != group.route_names
        ):
            return None
        names = affected_route_names(self.snapshot, proxy, impact.hosts)
        if _explicit(proxy):
            return self._explicit_routes_update(group, names, impact.hosts)
        update = self._updated_routes(proxy, names, impact.hosts, group.published)
        if update is None:
            return None
        published, mirrors, kind = update
        group.pinned |= mirrors  # a new mirror to a cluster the group already has
        return published, kind

    # -------------------------------------------------------------- reporting

    def statuses(self) -> list[ProxyStatus]:
        out = []
        for conn in sorted(self._connections.values(), key=lambda c: (c.proxy_id, c.id)):
            group = conn.group
            published = group.published if group else None
            errors = (published.errors if published else ()) + ((group.error,) if group and group.error else ())
            refused = group.refused if group else ()
            types = {s: dataclasses.replace(t) for s, t in conn.stream.statuses().items()}
            if conn._dirty:  # an update is assigned but not yet sent: what it holds is not the latest
                for t in types.values():
                    t.state = STALE if t.state == SYNCED else t.state
            out.append(
                ProxyStatus(
                    conn.proxy_id,
                    conn.proxy,
                    conn.envoy_version,
                    conn.connected_at,
                    conn.stream.kind,
                    types,
                    errors,
                    refused,
                    conn.admin_address,
                    conn.proxy_version,
                )
            )
        return out

    def proxy(self, proxy_id: str) -> Proxy | None:
        """The connected proxy with that node id (its labels and metadata as it sent them), or None."""
        streams = [c for c in self._connections.values() if c.proxy_id == proxy_id]
        return max(streams, key=lambda c: c.id).proxy if streams else None

    def config_dump(self, proxy_id: str) -> dict | None:
        """What the newest stream of that proxy was last sent: {type: [resources in Envoy's JSON form]}."""
        streams = [c for c in self._connections.values() if c.proxy_id == proxy_id]
        if not streams:
            return None
        stream = max(streams, key=lambda c: c.id).stream
        return {short: [r.to_dict() for _, r in sorted(stream.held(short).items())] for short in TYPES}


def _virtual_hosts_sent(served: Published, group: _Group) -> dict[str, int]:
    """Of the virtual hosts of the route configurations sent one by one (VHDS), how many a scoped view
    holds (its `VHDS_READY` markers aside) and how many there are (catch-alls aside: never sent whole)."""
    routes = group.index.routes.values() if group.index is not None else ()
    return {
        "sent": sum(1 for name in served.types["vhds"].resources if not name.endswith(f"/{VHDS_READY}")),
        "generated": sum(len(split.entries) for split in routes),
    }


def _same(a: Published | None, b: Published) -> bool:
    """Would `b` send nothing new compared with `a`?"""
    return (
        a is not None
        and a.inconsistencies == b.inconsistencies
        and a.errors == b.errors
        and a.aliases == b.aliases
        and all(a.types[s] is b.types[s] or a.types[s].version == b.types[s].version for s in TYPES)
    )
