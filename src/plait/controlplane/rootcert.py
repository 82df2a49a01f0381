"""The mesh's root certificate in every namespace: ConfigMap ``istio-ca-root-cert``, key
``root-cert.pem``, as istiod's namespace controller writes it.

Pods (the sidecar injector mounts it) and anyone who verifies workload certificates read the
trust anchor from there. The leader (`plait.controlplane.kubelease`) runs `publish_root_cert`:

* on start, every namespace gets the ConfigMap (label ``istio.io/config: "true"``);
* a namespace that appears gets it at once (namespaces are watched);
* a ConfigMap a user edits or deletes is put back (ConfigMaps of that name are watched): the
  ``root-cert.pem`` key is restored, other keys a user added are kept, as Istio does;
* skipped: namespaces being deleted (``Terminating``) and those Istio skips (``kube-public``,
  ``kube-node-lease``, ``local-path-storage``; not ``kube-system``).

`reconcile` (pure) decides; `publish_root_cert` is the I/O: a list + watch of Namespaces and of
those ConfigMaps (`plait.controlplane.kubefollow`, which lists again every few minutes and after
any error, repairing anything missed) feeding a queue of namespaces, each brought to the wanted
state by a GET and, when needed, a create or a replace (guarded by the resourceVersion read; a
conflict retries). RBAC: namespaces (list, watch), configmaps (get, list, watch, create, update).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from plait.controlplane.kubefollow import follow

log = logging.getLogger(__name__)

CONFIGMAP = "istio-ca-root-cert"
ROOT_CERT_KEY = "root-cert.pem"
LABELS = {"istio.io/config": "true"}
SKIPPED_NAMESPACES = frozenset({"kube-public", "kube-node-lease", "local-path-storage"})
RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Change:
    """Create the ConfigMap, or replace it (`version`: the resourceVersion it was read at)."""

    namespace: str
    body: dict
    version: str | None = None


def wanted(namespace: str, root_pem: str) -> dict:
    """The ConfigMap a namespace should have."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": namespace, "labels": dict(LABELS)},
        "data": {ROOT_CERT_KEY: root_pem},
    }


def reconcile(namespace: str, root_pem: str, existing: dict | None) -> Change | None:
    """What to write so that `namespace` holds the root (`existing`: its ConfigMap as a dict, or
    None); None when it already does. A user's other keys and labels are kept on a repair."""
    if existing is None:
        return Change(namespace, wanted(namespace, root_pem))
    data = existing.get("data") or {}
    if data.get(ROOT_CERT_KEY) == root_pem:
        return None
    metadata = existing.get("metadata") or {}
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {k: v for k, v in metadata.items() if k in ("name", "namespace", "labels", "annotations")},
        "data": {**data, ROOT_CERT_KEY: root_pem},
    }
    body["metadata"]["resourceVersion"] = metadata.get("resourceVersion")
    return Change(namespace, body, metadata.get("resourceVersion"))


def concerns(namespace: str, phase: str | None = None) -> bool:
    """Whether the namespace gets the ConfigMap."""
    return namespace not in SKIPPED_NAMESPACES and phase != "Terminating"


async def publish_root_cert(api: client.ApiClient, root_pem: str) -> None:
    """Keep the root in every namespace until cancelled (the leader's job)."""
    core = client.CoreV1Api(api)
    queue: asyncio.Queue[str] = asyncio.Queue()
    pending: set[str] = set()

    def enqueue(namespace: str) -> None:
        if namespace not in pending:
            pending.add(namespace)
            queue.put_nowait(namespace)

    def namespace_event(kind: str, ns: client.V1Namespace) -> None:
        if kind != "DELETED" and concerns(ns.metadata.name, ns.status.phase if ns.status else None):
            enqueue(ns.metadata.name)

    def configmap_event(kind: str, cm: client.V1ConfigMap) -> None:
        if concerns(cm.metadata.namespace):
            enqueue(cm.metadata.namespace)

    selector = f"metadata.name={CONFIGMAP}"
    followers = [
        asyncio.create_task(follow(core.list_namespace, namespace_event)),
        asyncio.create_task(follow(core.list_config_map_for_all_namespaces, configmap_event, field_selector=selector)),
    ]
    try:
        while True:
            namespace = await queue.get()
            pending.discard(namespace)
            try:
                await _bring(core, namespace, root_pem)
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                log.warning(
                    "root certificate: namespace %s: the API server is away (%s); trying again",
                    namespace,
                    error or type(error).__name__,
                )
                await asyncio.sleep(RETRY_SECONDS)
                enqueue(namespace)
    finally:
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


async def _bring(core: client.CoreV1Api, namespace: str, root_pem: str) -> bool:
    """Bring one namespace's ConfigMap to the wanted state; True if something was written."""
    for _ in range(5):  # a conflict means someone wrote meanwhile: read again
        try:
            change = reconcile(namespace, root_pem, await _read(core, namespace))
            if change is None:
                return False
            if change.version is None:
                await core.create_namespaced_config_map(namespace, change.body)
                log.info("root certificate: created ConfigMap %s/%s", namespace, CONFIGMAP)
            else:
                await core.replace_namespaced_config_map(CONFIGMAP, namespace, change.body)
                log.info("root certificate: restored %s in ConfigMap %s/%s", ROOT_CERT_KEY, namespace, CONFIGMAP)
            return True
        except ApiException as error:
            if error.status in (404, 403) or _terminating(error):  # namespace gone, or not ours to write
                log.info("root certificate: skipped namespace %s (%s %s)", namespace, error.status, error.reason)
                return False
            if error.status != 409:
                log.warning(
                    "root certificate: ConfigMap %s/%s: %s %s", namespace, CONFIGMAP, error.status, error.reason
                )
                return False
    return False


def _terminating(error: ApiException) -> bool:
    """A create refused because the namespace is being deleted."""
    body = error.body.decode(errors="replace") if isinstance(error.body, bytes) else str(error.body or "")
    return "NamespaceTerminating" in body


async def _read(core: client.CoreV1Api, namespace: str) -> dict | None:
    try:
        cm = await core.read_namespaced_config_map(CONFIGMAP, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return core.api_client.sanitize_for_serialization(cm)
