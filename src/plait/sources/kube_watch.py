"""The cluster as last seen, from list results and watch events: a reducer without I/O.

`ClusterView` takes what the API server sends — a full list (`on_list`), then watch events
(`on_event`: ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) — for each watched type, and answers
with a `Delta` (which objects changed, which problems appeared) or a `Restart` (the watch must
start over: relist after ``410 Gone``, otherwise resume from the last resourceVersion). Each
collection keeps the resourceVersion to resume from, bookmarks included.

Istio objects and Services are parsed when they arrive. An invalid one is left out of the mesh
(its last good version, if any, stays in force, as a bad edit in the configuration directory
leaves the previous configuration in force), and its problems are kept until the object is fixed
or deleted. `resources()` gives what the snapshot is made of; it is recomputed only after a change.
Everything here runs on the control plane's event loop and never blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from plait.api.errors import Problem
from plait.api.resources import Resource
from plait.sources.kube_objects import (
    CONFIG_TYPES,
    ENDPOINT_SLICES,
    NAMESPACES,
    NODE_LOCALITY_LABELS,
    NODES,
    PODS,
    SERVICES,
    WATCHED_TYPES,
    Key,
    ObjectKey,
    SliceEndpoint,
    WatchedType,
    object_key,
    parse_object,
    pod_workload,
    registry_resources,
    resource_version,
    slice_endpoints,
)

GONE = 410
REGISTRY_SOURCES = frozenset({SERVICES.kind, PODS.kind, ENDPOINT_SLICES.kind, NODES.kind})


@dataclass
class Delta:
    """What one list or event changed: the objects (kind, namespace, name) and any new problems."""

    changed: set[Key] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Restart:
    """The watch cannot go on: start it again, with a fresh list when `relist`."""

    relist: bool
    reason: str


def slim(obj: Mapping) -> dict:
    """The object without what only the API server needs (``metadata.managedFields``, often the
    largest part of it), to keep thousands of pods small in memory."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return dict(obj)
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


class Collection:
    """The objects of one watched type as last seen, and the resourceVersion to resume watching from."""

    def __init__(self, watched: WatchedType):
        self.watched = watched
        self.objects: dict[ObjectKey, dict] = {}
        self.resource_version: str | None = None
        self.synced = False

    def replace(self, items: Iterable[dict], list_version: str | None) -> tuple[set[ObjectKey], set[ObjectKey]]:
        """A fresh list: (keys stored or changed, keys gone)."""
        new = {object_key(obj): slim(obj) for obj in items}
        stored = {
            k
            for k, obj in new.items()
            if k not in self.objects or resource_version(self.objects[k]) != resource_version(obj)
        }
        gone = set(self.objects) - set(new)
        self.objects, self.resource_version, self.synced = new, list_version, True
        return stored, gone

    def apply(self, event: Mapping) -> tuple[set[ObjectKey], set[ObjectKey]] | Restart:
        """One watch event: (keys stored or changed, keys gone), or Restart."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            reason = f"{obj.get('reason') or 'error'} ({code}): {obj.get('message') or ''}".strip()
            return Restart(relist=code == GONE, reason=reason)
        version = resource_version(obj)
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return set(), set()
        key = object_key(obj)
        self.resource_version = version or self.resource_version
        if kind == "DELETED":
            return (set(), {key}) if self.objects.pop(key, None) is not None else (set(), set())
        if kind in ("ADDED", "MODIFIED"):
            if key in self.objects and resource_version(self.objects[key]) == version:
                return set(), set()
            self.objects[key] = slim(obj)
            return {key}, set()
        return Restart(relist=True, reason=f"unexpected watch event type {kind!r}")


class ClusterView:
    def __init__(self, types: Iterable[WatchedType] = WATCHED_TYPES):
        self.collections = {t.kind: Collection(t) for t in types}
        self.versions: dict[str, str] = {c.watched.kind: c.watched.versions[0] for c in self.collections.values()}
        self.config: dict[Key, Resource] = {}  # Istio objects in force (the last good version of each)
        self.services: dict[ObjectKey, Resource] = {}
        self.invalid: dict[Key, list[Problem]] = {}
        self._config_kinds = {t.kind for t in CONFIG_TYPES} & set(self.collections)
        self._pod_memo: dict[ObjectKey, tuple[tuple, Resource | None]] = {}
        self._slice_memo: dict[ObjectKey, tuple[str | None, tuple[SliceEndpoint, ...]]] = {}
        self._registry: dict[Key, Resource] | None = None  # made from Services, Pods, EndpointSlices, Nodes
        self._node_topology: dict[str, tuple[tuple[str, str], ...]] = {}  # node name → its topology labels
        self._resources: dict[Key, Resource] | None = None

    # ------------------------------------------------------------ input

    def on_list(self, kind: str, items: Iterable[dict], list_version: str | None) -> Delta:
        stored, gone = self.collections[kind].replace(items, list_version)
        return self._absorb(kind, stored, gone)

    def on_event(self, kind: str, event: Mapping) -> Delta | Restart:
        outcome = self.collections[kind].apply(event)
        if isinstance(outcome, Restart):
            return outcome
        return self._absorb(kind, *outcome)

    def forget(self, kind: str) -> Delta:
        """The type is not served (its CRD is missing or was deleted): nothing of it exists, which
        counts as having listed it."""
        collection = self.collections[kind]
        gone = set(collection.objects)
        collection.objects, collection.resource_version, collection.synced = {}, None, True
        return self._absorb(kind, set(), gone)

    def _absorb(self, kind: str, stored: set[ObjectKey], gone: set[ObjectKey]) -> Delta:
        delta = Delta(changed={(kind, *k) for k in stored | gone})
        if kind == NODES.kind:
            # nodes change every few seconds (their status); only their topology labels matter here
            delta.changed = {(kind, *k) for k in stored | gone if self._node_topology_changed(k)}
        if delta.changed and kind != NAMESPACES.kind:
            self._resources = None
            if kind in REGISTRY_SOURCES:
                self._registry = None
        if kind == SERVICES.kind or kind in self._config_kinds:
            objects = self.collections[kind].objects
            for key in gone:
                self._drop(kind, key)
            for key in stored:
                delta.problems += self._parse(kind, key, objects[key])
        return delta

    def _api_version(self, kind: str) -> str:
        group, version = self.collections[kind].watched.group, self.versions[kind]
        return f"{group}/{version}" if group else version

    def _parse(self, kind: str, key: ObjectKey, obj: dict) -> list[Problem]:
        resource, problems = parse_object(obj, kind, self._api_version(kind))
        mesh_key = (kind, *key)
        if resource is None:
            self.invalid[mesh_key] = problems
            return problems
        self.invalid.pop(mesh_key, None)
        if kind == SERVICES.kind:
            self.services[key] = resource
        else:
            self.config[mesh_key] = resource
        return []

    def _drop(self, kind: str, key: ObjectKey) -> None:
        self.invalid.pop((kind, *key), None)
        if kind == SERVICES.kind:
            self.services.pop(key, None)
        else:
            self.config.pop((kind, *key), None)

    # ------------------------------------------------------------ output

    @property
    def synced(self) -> bool:
        """Has every watched type been listed at least once?"""
        return all(c.synced for c in self.collections.values())

    @property
    def problems(self) -> list[Problem]:
        """Why some objects of the cluster are not in force, sorted by object."""
        return [p for key in sorted(self.invalid) for p in self.invalid[key]]

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        return self.known_namespace_labels(namespace) or {}

    def known_namespace_labels(self, namespace: str) -> dict[str, str] | None:
        """The labels of `namespace`; None when the watch has not seen it (yet)."""
        namespaces = self.collections.get(NAMESPACES.kind)
        obj = namespaces.objects.get(("", namespace)) if namespaces else None
        return None if obj is None else dict((obj.get("metadata") or {}).get("labels") or {})

    def resources(self) -> dict[Key, Resource]:
        """The cluster's configuration and registry, as the mesh snapshot reads them."""
        if self._registry is None:
            pods = self._objects(PODS.kind)
            self._registry = registry_resources(
                self.services, pods, self._slice_endpoints(), workload_of=self._workload
            )
            live = {object_key(p) for p in pods}
            self._pod_memo = {k: v for k, v in self._pod_memo.items() if k in live}
        if self._resources is None:
            self._resources = {**self.config, **self._registry}
        return self._resources

    def _slice_endpoints(self) -> list[SliceEndpoint]:
        """Every EndpointSlice's endpoints; a slice is read again only when its resourceVersion changed."""
        memo, out = {}, []
        for key, obj in (
            self.collections[ENDPOINT_SLICES.kind].objects.items() if ENDPOINT_SLICES.kind in self.collections else ()
        ):
            version = resource_version(obj)
            seen = self._slice_memo.get(key)
            endpoints = seen[1] if seen and seen[0] == version and version else slice_endpoints(obj)
            memo[key] = (version, endpoints)
            out += endpoints
        self._slice_memo = memo
        return out

    def pods(self) -> list[dict]:
        """The pods as last seen (Prometheus' service discovery reads their annotations)."""
        return self._objects("Pod")

    def _objects(self, kind: str) -> list[dict]:
        return list(self.collections[kind].objects.values()) if kind in self.collections else []

    def _node_topology_changed(self, key: ObjectKey) -> bool:
        node = self.collections[NODES.kind].objects.get(key)
        labels = ((node or {}).get("metadata") or {}).get("labels") or {}
        topology = tuple((k, labels[k]) for k in NODE_LOCALITY_LABELS if k in labels) if node else None
        if self._node_topology.get(key[1]) == topology:
            return False
        if topology is None:
            self._node_topology.pop(key[1], None)
        else:
            self._node_topology[key[1]] = topology
        return True

    def _node_labels(self, pod: Mapping) -> dict[str, str]:
        """The topology labels of the pod's node."""
        return dict(self._node_topology.get((pod.get("spec") or {}).get("nodeName") or "", ()))

    def _workload(self, pod: Mapping, endpoints: tuple[SliceEndpoint, ...]) -> Resource | None:
        """`pod_workload`, remembered while the pod, its endpoints and its node's labels stay the same."""
        node_labels = self._node_labels(pod)
        key, inputs = object_key(pod), (resource_version(pod), endpoints, tuple(sorted(node_labels.items())))
        memo = self._pod_memo.get(key)
        if memo is None or memo[0] != inputs or inputs[0] is None:
            try:
                workload = pod_workload(pod, endpoints, node_labels)
            except ValueError:  # a pod plait's model cannot hold (the API server validates pods; never seen)
                workload = None
            memo = (inputs, workload)
            self._pod_memo[key] = memo
        return memo[1]
