"""The mesh's current state: configuration (a directory, or a Kubernetes cluster) + registered
workloads → MeshSnapshot → hub.

`MeshState` owns the sources and the current snapshot. Every change (an API call,
an edit on disk, a watch event, a workload registering or becoming ready) calls `changed()`;
changes are debounced (coalesced for `debounce` seconds), then one new snapshot
is made with only the changed objects and handed to the hub, which pushes what
changed to the proxies it concerns. Runs on the control plane's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from plait.api.errors import Problem
from plait.api.resources import Resource
from plait.lower import with_gateway_api
from plait.model import MeshSnapshot
from plait.sources.files import Change, FileStore, diff
from plait.sources.workloads import WorkloadRegistry

log = logging.getLogger("plait.controlplane")
Key = tuple[str, str, str]


class ConfigSource(Protocol):
    """Where the mesh's configuration comes from: `FileStore` or `kubernetes.KubernetesSource`."""

    @property
    def resources(self) -> dict[Key, Resource]: ...

    @property
    def problems(self) -> list[Problem]: ...

    def apply(self, resources: list[Resource], *, dry_run: bool = False) -> Change: ...

    def delete(self, keys: list[Key], *, dry_run: bool = False) -> Change: ...


class MeshState:
    def __init__(
        self,
        store: ConfigSource,
        registry: WorkloadRegistry,
        *,
        debounce: float = 0.1,
        on_snapshot: Callable[[MeshSnapshot, set[Key]], None] | None = None,
    ):
        self.store, self.registry, self.debounce = store, registry, debounce
        self.on_snapshot = on_snapshot
        self.merged: dict[Key, Resource] = {}
        self.snapshot = MeshSnapshot([])
        self.rebuilds = 0
        self._pending = asyncio.Event()
        self._task: asyncio.Task | None = None

    def merged_resources(self) -> dict[Key, Resource]:
        """Config from the directory or the cluster, with registered workloads on top, and the Istio
        objects its Gateway API objects lower to."""
        merged = {**self.store.resources, **self.registry.resources()}
        return {r.key: r for r in with_gateway_api(merged.values())}

    def rebuild(self) -> set[Key]:
        """Make the next snapshot from whatever changed since the last one; returns the changed keys."""
        merged = self.merged_resources()
        change = diff(self.merged, merged)
        keys = change.keys
        if not keys and self.rebuilds:
            return keys
        started = time.perf_counter()
        self.snapshot = self.snapshot.with_changes(
            upserts=[merged[k] for k in keys if k in merged], deletes=[k for k in keys if k not in merged]
        )
        self.merged = merged
        self.rebuilds += 1
        log.info(
            "snapshot %d: %d object(s) changed, built in %.1f ms",
            self.rebuilds,
            len(keys),
            (time.perf_counter() - started) * 1000,
        )
        if self.on_snapshot:
            self.on_snapshot(self.snapshot, keys)
        return keys

    def changed(self) -> None:
        """Something changed: rebuild after the debounce interval (changes meanwhile are coalesced)."""
        self._pending.set()

    async def settled(self) -> None:
        """Return once every change received so far is in the snapshot (and handed to the hub), which
        takes at most about one debounce interval; bounded in case changes never stop coming."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5 * self.debounce + 1
        while self._pending.is_set() and loop.time() < deadline:
            await asyncio.sleep(max(self.debounce / 4, 0.005))

    async def run(self) -> None:
        while True:
            await self._pending.wait()
            await asyncio.sleep(self.debounce)
            self._pending.clear()
            try:
                self.rebuild()
            except Exception:  # the control plane never dies on a change; the old snapshot stays
                log.exception("snapshot rebuild failed; keeping the previous one")

    async def watch_directory(self, interval: float = 0.5) -> None:
        """Pick up hand edits in the configuration directory."""
        if not isinstance(self.store, FileStore):
            raise TypeError("watch_directory needs a FileStore")
        while True:
            await asyncio.sleep(interval)
            try:
                change = self.store.poll()
            except OSError as exc:
                log.warning("cannot read %s: %s", self.store.directory, exc)
                continue
            if change is None:
                continue
            if not change.ok:
                for p in change.problems:
                    log.error("%s (previous configuration stays in force)", p)
            elif change.keys:
                log.info("configuration directory changed: %d object(s)", len(change.keys))
                self.changed()
