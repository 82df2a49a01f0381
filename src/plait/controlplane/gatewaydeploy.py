"""Istio's gateway deployment controller, on Kubernetes: every Gateway API Gateway of class ``istio``
gets its own gateway proxy ``<gateway>-istio`` (ServiceAccount, Role, RoleBinding, Deployment, Service),
and loses it when the Gateway goes.

In: the Gateways the cluster source holds, and `build` (a Gateway → its objects; the CLI passes
`plait.install.gatewayapi.gateway_manifests` with the control plane's image, namespace and revision, so
this layer needs nothing from the installer). Out: server-side applies of what is missing or changed,
and deletes of what a Gateway no longer wants, found by the label ``gateway.networking.k8s.io/gateway-name``
and plait's ``app.kubernetes.io/managed-by``. `desired` and `stale` are pure; `keep_gateways_deployed`
is the leader's job (one replica deploys, as Istio's leader does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from plait.api.resources import KUBERNETES_GATEWAY, Resource

log = logging.getLogger("plait.controlplane.gatewaydeploy")
GATEWAY_CLASS = "istio"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
MANAGED_BY = "app.kubernetes.io/managed-by=plait"
FIELD_MANAGER = "plait-gateway-controller"
KINDS = (  # what `build` makes, in apply order: (apiVersion, kind)
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
)
ObjectKey = tuple[str, str, str]  # (kind, namespace, name)
# What istiod's ClusterRole needs for it (Istio's istiod-gateway-controller): write the five kinds, and hold
# the Secrets read it grants the gateway's Role (Kubernetes lets one grant only what one holds).
GATEWAY_CONTROLLER_RULES = (
    {
        "apiGroups": ["", "apps", "rbac.authorization.k8s.io"],
        "resources": ["serviceaccounts", "services", "deployments", "roles", "rolebindings"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
)

Build = Callable[[Resource], list[dict[str, Any]]]


def desired(resources: Mapping[tuple, Resource], build: Build) -> dict[ObjectKey, dict[str, Any]]:
    """The objects the Gateways of class istio want, by kind, namespace and name."""
    wanted: dict[ObjectKey, dict[str, Any]] = {}
    for resource in resources.values():
        if resource.kind == KUBERNETES_GATEWAY and resource.spec.gateway_class_name == GATEWAY_CLASS:
            for obj in build(resource):
                if (obj["apiVersion"], obj["kind"]) in KINDS:
                    wanted[(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
    return wanted


def stale(found: Iterable[ObjectKey], wanted: Mapping[ObjectKey, Any]) -> list[ObjectKey]:
    """What was deployed for a Gateway and is wanted no more."""
    return sorted(key for key in found if key not in wanted)


def api_path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{where}/{kind.lower()}s" + (f"/{name}" if name else "")


async def api_call(api: client.ApiClient, path: str, method: str, **kwargs: Any) -> Any:
    return await api.call_api(
        path,
        method,
        header_params={"Accept": "application/json", **kwargs.pop("headers", {})},
        response_types_map={200: "object", 201: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _request_timeout=30,
        **kwargs,
    )


async def _found(api: client.ApiClient) -> dict[ObjectKey, str]:
    """What plait deployed for Gateways, cluster-wide: key → apiVersion."""
    found: dict[ObjectKey, str] = {}
    for api_version, kind in KINDS:
        listed = await api_call(
            api,
            api_path(api_version, kind),
            "GET",
            query_params=[("labelSelector", f"{GATEWAY_NAME_LABEL},{MANAGED_BY}")],
        )
        for item in listed.get("items") or []:
            meta = item["metadata"]
            found[(kind, meta["namespace"], meta["name"])] = api_version
    return found


async def reconcile(api: client.ApiClient, resources: Mapping[tuple, Resource], build: Build) -> None:
    """Apply what the Gateways want, delete what they no longer want."""
    wanted = desired(resources, build)
    for (kind, namespace, name), obj in wanted.items():
        await api_call(
            api,
            api_path(obj["apiVersion"], kind, namespace, name),
            "PATCH",
            headers={"Content-Type": "application/apply-patch+yaml"},
            query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=obj,
        )
    found = await _found(api)
    for kind, namespace, name in stale(found, wanted):
        log.info("gateway controller: deleting %s %s/%s (its Gateway is gone)", kind, namespace, name)
        try:
            await api_call(api, api_path(found[(kind, namespace, name)], kind, namespace, name), "DELETE")
        except ApiException as error:
            if error.status != 404:
                raise


async def keep_gateways_deployed(
    api: client.ApiClient, resources: Callable[[], Mapping[tuple, Resource]], build: Build, every: float = 2.0
) -> None:
    """Reconcile whenever the wanted objects change (and every minute, to repair drift) until cancelled."""
    last: dict[ObjectKey, dict[str, Any]] | None = None
    since = 0.0
    while True:
        try:
            wanted = desired(resources(), build)
            if wanted != last or since >= 60:
                await reconcile(api, resources(), build)
                last, since = wanted, 0.0
        except (TimeoutError, ApiException, OSError, aiohttp.ClientError) as error:
            log.warning("gateway controller: %s; trying again", error)
            last = None
        await asyncio.sleep(every)
        since += every
