"""The Gateway API's status, written back to the objects on Kubernetes as Istio's controller does: every
GatewayClass, Gateway and route plait lowers gets its conditions (Accepted, Programmed, ResolvedRefs with
Istio's reasons), a Gateway its listeners and addresses, a route one ``parents`` entry per parentRef.

In: the cluster's resources and `plait.lower`'s status for them. Out: merge-patches of the ``status``
subresource, only when what plait says of an object changed (or a minute passed, to repair edits).
`stamped` is pure: it adds what Kubernetes wants on each condition (``observedGeneration``,
``lastTransitionTime`` kept while the condition's status holds, a ``message``) and keeps other controllers'
entries of a route's ``parents``. `keep_status_written` is the leader's job (one replica writes).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from plait.api.resources import KUBERNETES_GATEWAY, Resource
from plait.controlplane.gatewaydeploy import api_call
from plait.lower import lower
from plait.lower.gatewayapi import CONTROLLER

log = logging.getLogger("plait.controlplane.gatewaystatus")
Key = tuple[str, str, str]
STATUS_RULES = (  # what istiod's ClusterRole needs for it (Istio's istiod-clusterrole has the same)
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["*/status"], "verbs": ["get", "update", "patch"]},
)
_PLURAL = {KUBERNETES_GATEWAY: "gateways"}
# Istio's messages for conditions that carry none (Kubernetes wants a message; some API servers refuse "").
_MESSAGES = {
    "Accepted": "Resource accepted",
    "Programmed": "Resource programmed",
    "ResolvedRefs": "All references resolved",
}
_CLUSTER_SCOPED = {"GatewayClass"}


def status_path(resource: Resource) -> str:
    """The object's ``status`` subresource, e.g. /apis/gateway.networking.k8s.io/v1/namespaces/ns/httproutes/r/status."""
    plural = _PLURAL.get(resource.kind) or resource.kind.lower() + ("es" if resource.kind.endswith("s") else "s")
    where = "" if resource.kind in _CLUSTER_SCOPED else f"/namespaces/{resource.namespace}"
    return f"/apis/{resource.api_version}{where}/{plural}/{resource.name}/status"


def _stamp(conditions: list[dict], before: list[dict], generation: int, now: str) -> list[dict]:
    earlier = {c.get("type"): c for c in before}
    out = []
    for condition in conditions:
        was = earlier.get(condition["type"], {})
        since = was.get("lastTransitionTime") if was.get("status") == condition["status"] else None
        message = condition.get("message") or _MESSAGES.get(condition["reason"], condition["reason"])
        out.append(
            {**condition, "message": message, "observedGeneration": generation, "lastTransitionTime": since or now}
        )
    return out


def stamped(ours: Mapping[str, Any], current: Mapping[str, Any], generation: int, now: str) -> dict[str, Any]:
    """The status to write: plait's `ours` with Kubernetes' condition fields, `current` (what the object
    holds) giving the times of conditions that did not change and the route parents of other controllers."""
    out: dict[str, Any] = {k: v for k, v in ours.items() if k not in ("conditions", "listeners", "parents")}
    if "conditions" in ours:
        out["conditions"] = _stamp(ours["conditions"], current.get("conditions") or [], generation, now)
    if "listeners" in ours:
        before = {listener.get("name"): listener.get("conditions") or [] for listener in current.get("listeners") or []}
        out["listeners"] = [
            {
                **listener,
                "conditions": _stamp(listener["conditions"], before.get(listener["name"], []), generation, now),
            }
            for listener in ours["listeners"]
        ]
    if "parents" in ours:
        previous = current.get("parents") or []
        ours_before = {_ref_key(p["parentRef"]): p for p in previous if p.get("controllerName") == CONTROLLER}
        others = [p for p in previous if p.get("controllerName") != CONTROLLER]
        out["parents"] = others + [
            {
                **parent,
                "conditions": _stamp(
                    parent["conditions"],
                    ours_before.get(_ref_key(parent["parentRef"]), {}).get("conditions") or [],
                    generation,
                    now,
                ),
            }
            for parent in ours["parents"]
        ]
    return out


def _ref_key(ref: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in ref.items() if k not in ("group", "kind") or v))


def wanted(resources: Mapping[Key, Resource]) -> dict[Key, dict[str, Any]]:
    """What plait says of each Gateway API object it acts on (nothing when there are none)."""
    gateway_api = [r for r in resources.values() if r.api_version.startswith("gateway.networking.k8s.io/")]
    return lower(resources.values()).status if gateway_api else {}


async def write(api: client.ApiClient, resource: Resource, ours: Mapping[str, Any]) -> None:
    """Read the object (its generation, its status), write the stamped status if it differs."""
    path = status_path(resource)
    current = await api_call(api, path, "GET")
    status = stamped(ours, current.get("status") or {}, current["metadata"].get("generation", 0), _now())
    if status != current.get("status"):
        await api_call(
            api,
            path,
            "PATCH",
            headers={"Content-Type": "application/merge-patch+json"},
            body={"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "status": status},
        )


def _reason(error: ApiException) -> str:
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{error.status} {error.reason}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def keep_status_written(
    api: client.ApiClient, resources: Callable[[], Mapping[Key, Resource]], every: float = 2.0
) -> None:
    """Write each object's status whenever what plait says of it changes (and every minute) until cancelled."""
    written: dict[Key, tuple[Resource, dict[str, Any]]] = {}  # (the object as read, its status) written
    since = 0.0
    while True:
        if since >= 60:
            written, since = {}, 0.0
        current = resources()
        written = {key: done for key, done in written.items() if key in current}  # a recreated object is new
        for key, ours in wanted(current).items():
            if key not in current or written.get(key) == (current[key], ours):
                continue
            try:
                await write(api, current[key], ours)
                written[key] = (current[key], ours)
            except ApiException as error:
                if error.status not in (404, 409):  # gone, or changed meanwhile: the change brings another round
                    log.warning("gateway status: %s %s/%s: %s", key[0], key[1], key[2], _reason(error))
                    written[key] = (current[key], ours)  # refused: try again when it changes, or in a minute
            except (TimeoutError, OSError, aiohttp.ClientError) as error:
                log.warning("gateway status: %s; trying again", error)
        await asyncio.sleep(every)
        since += every
