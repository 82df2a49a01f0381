"""The Kubernetes API as the mesh's source: list and watch every type plait reads (I/O shell).

`KubernetesSource` runs one task per watched type (`kube_objects.WATCHED_TYPES`): it finds the
version the cluster serves (EndpointSlices in discovery.k8s.io v1, else v1beta1; Istio's kinds in
v1, else v1beta1, else v1alpha3; a kind whose CRD is missing is looked for again every
`rediscover` seconds), lists it (in pages), then watches from the list's resourceVersion with
bookmarks. Everything received goes to the pure `kube_watch.ClusterView`; this module only moves
bytes and decides when to reconnect:

* a watch that ends (the server's timeout) resumes from the last resourceVersion;
* ``410 Gone`` (the resourceVersion was compacted) → a fresh list;
* the API server unreachable → retry with exponential backoff (`backoff`), the last state seen
  stays in force (the control plane keeps serving it) and the watch resumes when it returns.

After each change `on_change()` is called (the control plane debounces it into a snapshot).
The source has the file store's reading interface (`resources`, `problems`); `apply`/`delete`
refuse, since the cluster's configuration is changed with kubectl.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from plait.api.errors import Problem
from plait.api.resources import Resource
from plait.sources.files import Change, Key
from plait.sources.kube_objects import WATCHED_TYPES, KubeConfigError, WatchedType
from plait.sources.kube_watch import GONE, ClusterView, Delta, Restart

log = logging.getLogger("plait.sources.kubernetes")
PAGE_SIZE = 500
FORBIDDEN = 403
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
READ_ONLY = (
    "the mesh's configuration comes from the Kubernetes API: change it with kubectl "
    "(kubectl apply -f FILE / kubectl delete -f FILE)"
)
# The RBAC the control plane needs to read the mesh (the install's ClusterRole starts here).
READER_RULES = (
    {"apiGroups": [""], "resources": ["namespaces", "nodes", "services", "pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["networking.istio.io", "security.istio.io", "telemetry.istio.io", "gateway.networking.k8s.io"],
        "resources": ["*"],
        "verbs": ["get", "list", "watch"],
    },
)
UNREACHABLE = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


async def load_configuration(kubeconfig: str | None = None) -> Configuration:
    """The API server's address and credentials: `kubeconfig`, else $KUBECONFIG, else the pod's own
    service account (in a cluster), else ~/.kube/config."""
    configuration = Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    try:
        if path:
            await kube_config.load_kube_config(config_file=path, client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_TOKEN.exists():
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            await kube_config.load_kube_config(client_configuration=configuration)
    except (kube_config.ConfigException, OSError, ValueError) as exc:
        where = path or "the in-cluster service account or ~/.kube/config"
        raise KubeConfigError(f"cannot use {where}: {exc}") from None
    return configuration


async def connect(kubeconfig: str | None = None) -> ApiClient:
    """An API client for the cluster `load_configuration` finds (close it when done)."""
    return ApiClient(await load_configuration(kubeconfig))


def _status_of(body: bytes | str) -> dict:
    try:
        status = json.loads(body)
    except ValueError:
        return {"message": str(body)[:200]}
    return status if isinstance(status, dict) else {}


class KubernetesSource:
    def __init__(
        self,
        api: ApiClient,
        *,
        on_change: Callable[[], None] = lambda: None,
        view: ClusterView | None = None,
        types: tuple[WatchedType, ...] = WATCHED_TYPES,
        watch_timeout: int = 300,
        backoff: tuple[float, float] = (0.2, 5.0),
        rediscover: float = 10.0,
    ):
        self.api, self.on_change = api, on_change
        self.view = view or ClusterView(types)
        self.types = types
        self.watch_timeout, self.backoff, self.rediscover = watch_timeout, backoff, rediscover
        self.server = api.configuration.host
        self.extra: dict[Key, Resource] = {}  # not from the cluster: the mesh config file istiod was given
        self.reachable = True
        self.relists = 0  # lists made after the first one of each type (410 Gone, a CRD coming back)
        self._synced = asyncio.Event()
        self._missing: set[str] = set()  # kinds found not served once, while holding objects

    # ------------------------------------------------------------ what the control plane reads

    @property
    def resources(self) -> dict[Key, Resource]:
        return {**self.view.resources(), **self.extra} if self.extra else self.view.resources()

    def set_extra(self, resources: Iterable[Resource]) -> None:
        """Objects served beside the cluster's (the MeshConfig from istiod's --meshConfig file)."""
        self.extra = {r.key: r for r in resources}

    @property
    def problems(self) -> list[Problem]:
        return self.view.problems

    def apply(self, resources: list[Resource], *, dry_run: bool = False) -> Change:
        return Change(problems=[Problem(message=READ_ONLY, file="apply request")])

    def delete(self, keys: list[Key], *, dry_run: bool = False) -> Change:
        return Change(problems=[Problem(message=READ_ONLY, file="delete request")])

    async def wait_synced(self) -> None:
        """Return once every type has been listed (or found missing) once."""
        await self._synced.wait()

    # ------------------------------------------------------------ the watch loops

    async def run(self) -> None:
        """Follow every watched type until cancelled."""
        await asyncio.gather(*(self._follow(t) for t in self.types))

    async def _follow(self, watched: WatchedType) -> None:
        delay, version, listed = self.backoff[0], None, False
        while True:
            try:
                if version is None:
                    version = await self._discover(watched)
                    if version is None:
                        await asyncio.sleep(self.rediscover)
                        continue
                    listed = await self._list(watched, version, listed)
                restart = await self._watch(watched, version)
                delay = self.backoff[0]
                if restart is not None:
                    log.info("watch of %s restarts: %s", watched.plural, restart.reason)
                    version = None if restart.relist else version
            except ApiException as exc:
                pause, relist = self._refused(watched, exc)
                version = None if relist else version
                await asyncio.sleep(pause if pause is not None else delay)
                delay = delay if pause is not None else min(delay * 2, self.backoff[1])
            except UNREACHABLE as exc:
                self._down(exc)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.backoff[1])
            except Exception:  # anything unforeseen (a malformed answer): never stop following the cluster
                log.exception("watching %s failed; listing it again", watched.plural)
                version = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])

    def _refused(self, watched: WatchedType, exc: ApiException) -> tuple[float | None, bool]:
        """What to do when the API server answers with an error: (how long to wait, None for the
        growing backoff; whether to discover and list again)."""
        if exc.status == GONE:  # the resourceVersion was compacted
            log.info("%s: %s %s; listing again", watched.plural, exc.status, exc.reason)
            return 0.0, True
        if exc.status == 404:  # no longer served (a CRD deleted): discovery decides
            log.info("%s: %s %s; looking for it again", watched.plural, exc.status, exc.reason)
            return None, True
        if exc.status == FORBIDDEN:  # no RBAC for it: go on without it (it may be granted later)
            log.warning(
                "%s may not list %s (%s); going on without them, asking again in %.0f s",
                self.server,
                watched.plural,
                exc.reason,
                self.rediscover,
            )
            if not self.view.collections[watched.kind].synced:
                self._report(self.view.forget(watched.kind))
                self._check_synced()
            return self.rediscover, True
        if exc.status == 0:  # the client's own network error
            self._down(exc.reason)
        elif exc.status >= 500:  # there but not ready (503 while it starts): retry quietly
            log.debug("%s %s: %s %s", self.server, watched.plural, exc.status, exc.reason)
        else:
            log.warning("%s %s: %s %s", self.server, watched.plural, exc.status, exc.reason)
        return None, False

    def _up(self) -> None:
        if not self.reachable:
            self.reachable = True
            log.warning("Kubernetes API %s is back; catching up", self.server)

    def _down(self, why: BaseException | str) -> None:
        if self.reachable:
            self.reachable = False
            log.warning(
                "Kubernetes API %s unreachable (%s): proxies keep the last configuration; retrying",
                self.server,
                why or type(why).__name__,
            )

    async def _get(self, path: str, query: list[tuple[str, str]]) -> dict:
        return await self.api.call_api(
            path,
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            response_types_map={200: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=30,
        )

    async def _discover(self, watched: WatchedType) -> str | None:
        """The newest version of `watched` the API serves; None (and its objects forgotten) when none is."""
        for version in watched.versions:
            root = f"/api/{version}" if not watched.group else f"/apis/{watched.group}/{version}"
            try:
                listing = await self._get(root, [])
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            if any(r.get("name") == watched.plural for r in listing.get("resources") or ()):
                self.view.versions[watched.kind] = version
                self._missing.discard(watched.kind)
                return version
        if self.view.collections[watched.kind].objects and watched.kind not in self._missing:
            # an API server that is starting may not serve a CRD's group yet: forget its objects only
            # when it is still missing at the next look
            self._missing.add(watched.kind)
            log.warning("%s not served by %s; looking again in %.0f s", watched.plural, self.server, self.rediscover)
            return None
        self._report(self.view.forget(watched.kind))
        self._check_synced()
        return None

    async def _list(self, watched: WatchedType, version: str, listed_before: bool) -> bool:
        items, query = [], [("limit", str(PAGE_SIZE))]
        while True:
            page = await self._get(watched.path(version), query)
            items += page.get("items") or ()
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            query = [("limit", str(PAGE_SIZE)), ("continue", meta["continue"])]
        self._up()
        self.relists += listed_before
        self._report(self.view.on_list(watched.kind, items, meta.get("resourceVersion")))
        self._check_synced()
        return True

    async def _watch(self, watched: WatchedType, version: str) -> Restart | None:
        """Watch from the collection's resourceVersion until the server ends the watch (None) or asks
        for a restart."""
        timeout = int(self.watch_timeout * random.uniform(1.0, 1.2))
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
            ("resourceVersion", self.view.collections[watched.kind].resource_version or ""),
        ]
        response = await self.api.call_api(
            watched.path(version),
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(connect=10, sock_read=timeout + 30),
        )
        try:
            if response.status != 200:
                status = _status_of(await response.read())
                raise ApiException(status=response.status, reason=status.get("message", response.reason))
            self._up()
            while line := await response.content.readline():
                if not line.strip():
                    continue
                outcome = self.view.on_event(watched.kind, json.loads(line))
                if isinstance(outcome, Restart):
                    return outcome
                self._report(outcome)
            return None
        finally:
            response.close()

    def _check_synced(self) -> None:
        if self.view.synced:
            self._synced.set()

    def _report(self, delta: Delta) -> None:
        for problem in delta.problems:
            log.error("%s (left out of the mesh; its last good version, if any, stays in force)", problem)
        if delta.changed:
            self.on_change()
