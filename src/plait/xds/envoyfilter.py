"""EnvoyFilter patches applied to one proxy's generated resources (pure: no I/O, no clock).

Which EnvoyFilters apply (Istio's ``PushContext.EnvoyFilters``): those of the root namespace and
of the proxy's namespace whose ``workloadSelector`` (if any) matches its labels; one with
``targetRefs`` applies only to a Gateway API gateway (label ``gateway.networking.k8s.io/gateway-name``)
that it names, in its own namespace. They run in order of ``priority``, root namespace first, then
name; their patches in the order written, each only if its ``match.proxy`` fits the proxy (plait's
agents report ``ISTIO_VERSION`` = plait's version).

How plait's resources map to Istio's patch contexts: a gateway's everything is GATEWAY; a sidecar's
listeners with ``traffic_direction: INBOUND`` (``virtualInbound``, explicit-proxy inbound listeners),
their inline route configurations and ``inbound|…`` / ``InboundPassthroughCluster`` clusters are
SIDECAR_INBOUND; everything else of a sidecar is SIDECAR_OUTBOUND.

Listener-side patches follow Istio's ``listener_patch.go`` (listener → listener filters → filter
chains → network filters → HTTP filters, removals and merges before additions); route
configurations follow ``rc_patch.go``; clusters ``cluster_patch.go``. EXTENSION_CONFIG, BOOTSTRAP and
WAYPOINT patches are not applied (reported by `plait.api.extensions.extension_warnings`).
"""

from __future__ import annotations

import copy
import functools
import json

import re2

from plait import __version__
from plait.api.extensions import MAX_PROXY_VERSION_LENGTH, EnvoyConfigObjectMatch, envoy_value
from plait.api.resources import Resource
from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot
from plait.xds.resources import ResourceSet
from plait.xds.translate.envoyfilter_listeners import patch_listeners
from plait.xds.translate.envoyfilter_objects import ConfigPatch, Patches, patch_clusters, patch_route_config
from plait.xds.translate.listeners import gateway_servers

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
# Istio turns INSERT_* into ADD except where order means something (wrapper conversion).
ORDERED = ("HTTP_FILTER", "NETWORK_FILTER", "HTTP_ROUTE", "LISTENER_FILTER")
APPLIED = (
    "LISTENER",
    "LISTENER_FILTER",
    "FILTER_CHAIN",
    "NETWORK_FILTER",
    "HTTP_FILTER",
    "ROUTE_CONFIGURATION",
    "VIRTUAL_HOST",
    "HTTP_ROUTE",
    "CLUSTER",
)


# ------------------------------------------------------------------ which patches apply


def _selects(ef: Resource, proxy: Proxy, root: str) -> bool:
    """Istio's policy attachment for EnvoyFilter (PolicyMatcherForProxy.ShouldAttachPolicy)."""
    if ef.namespace not in (root, proxy.namespace):
        return False
    selector = ef.spec.workload_selector.labels if ef.spec.workload_selector else {}
    selected = all(proxy.labels.get(k) == v for k, v in selector.items())
    gateway = proxy.labels.get(GATEWAY_NAME_LABEL)
    if not ef.spec.target_refs:
        return selected
    return (
        gateway is not None
        and ef.namespace == proxy.namespace
        and any(
            ref.kind == "Gateway"
            and ref.group == "gateway.networking.k8s.io"
            and ref.name == gateway
            and ref.namespace in ("", proxy.namespace)
            for ref in ef.spec.target_refs
        )
    )


def envoy_filters_for(snapshot: MeshSnapshot, proxy: Proxy) -> list[Resource]:
    """The EnvoyFilters that apply to a proxy, in the order their patches run."""
    root = snapshot.root_namespace
    chosen = [ef for ef in snapshot.envoy_filters if _selects(ef, proxy, root)]
    return sorted(chosen, key=lambda ef: (ef.spec.priority, ef.namespace != root, f"{ef.name}.{ef.namespace}"))


def proxy_metadata(proxy: Proxy) -> dict[str, str]:
    """The string-valued node metadata a plait agent reports (see `plait.agent.bootstrap`)."""
    metadata = {
        "NAMESPACE": proxy.namespace,
        "INTERCEPTION_MODE": "REDIRECT" if proxy.mode == "capture" else "NONE",
        "PLAIT_MODE": proxy.mode,
        "ISTIO_VERSION": __version__,
        "APP_ADDRESS": proxy.app_address,
    }
    if proxy.identity:
        metadata["PLAIT_IDENTITY"] = proxy.identity
    return metadata


def _proxy_matches(match: EnvoyConfigObjectMatch, proxy: Proxy) -> bool:
    wanted = match.proxy
    if wanted is None:
        return True
    if len(wanted.proxy_version) > MAX_PROXY_VERSION_LENGTH:
        return False
    if wanted.proxy_version and not re2.search(wanted.proxy_version, __version__):
        return False
    known = proxy_metadata(proxy)
    return all(known.get(k) == v for k, v in wanted.metadata.items())


@functools.lru_cache(maxsize=1024)
def _canonical(apply_to: str, value_json: str) -> dict:
    return envoy_value(apply_to, json.loads(value_json))


def patches_for(snapshot: MeshSnapshot, proxy: Proxy) -> Patches:
    """The proxy's patches by applyTo, in application order (empty when no EnvoyFilter applies)."""
    out: Patches = {}
    for ef in envoy_filters_for(snapshot, proxy):
        for cp in ef.spec.config_patches:
            match = cp.match or EnvoyConfigObjectMatch()
            if cp.apply_to not in APPLIED or match.context == "WAYPOINT" or not _proxy_matches(match, proxy):
                continue
            operation = cp.patch.operation
            if operation in ("INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST") and cp.apply_to not in ORDERED:
                operation = "ADD"
            value = cp.patch.value and _canonical(cp.apply_to, json.dumps(cp.patch.value, sort_keys=True))
            out.setdefault(cp.apply_to, []).append(ConfigPatch(cp.apply_to, match.context, match, operation, value))
    return out


# ------------------------------------------------------------------ entry points


def patch_resources(snapshot: MeshSnapshot, proxy: Proxy, resources: ResourceSet) -> ResourceSet:
    """`resources` with the proxy's listener and cluster patches applied (route configurations sent
    over RDS are patched by `patch_route_configs` as they are generated)."""
    patches = patches_for(snapshot, proxy)
    if not patches:
        return resources
    listeners = patch_listeners(patches, proxy, resources.listeners)
    clusters = patch_clusters(patches, proxy, resources.clusters, _inbound_hosts(snapshot, proxy))
    out = ResourceSet(clusters=clusters, listeners=listeners, routes=resources.routes, secrets=resources.secrets)
    kept = {c.get("eds_cluster_config", {}).get("service_name") or name for name, c in clusters.items()}
    out.endpoints = {
        name: e for name, e in resources.endpoints.items() if name in kept or name not in resources.clusters
    }  # a removed cluster's endpoints go too
    return out


def patch_listeners_only(snapshot: MeshSnapshot, proxy: Proxy, listeners: dict[str, dict]) -> dict[str, dict]:
    """Listeners with the proxy's listener patches: what `patch_resources` makes of them."""
    patches = patches_for(snapshot, proxy)
    return patch_listeners(patches, proxy, listeners) if patches else listeners


ROUTE_PATCHES = ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE")


def patches_routes(snapshot: MeshSnapshot, proxy: Proxy) -> bool:
    """Does an EnvoyFilter patch this proxy's route configurations?"""
    return any(k in patches_for(snapshot, proxy) for k in ROUTE_PATCHES)


def patch_route_configs(snapshot: MeshSnapshot, proxy: Proxy, configs: list[dict]) -> list[dict]:
    """RDS route configurations with the proxy's ROUTE_CONFIGURATION, VIRTUAL_HOST and HTTP_ROUTE patches."""
    patches = patches_for(snapshot, proxy)
    if not any(k in patches for k in ROUTE_PATCHES):
        return configs
    context = "GATEWAY" if proxy.kind == "router" else "SIDECAR_OUTBOUND"
    ports = gateway_port_map(snapshot, proxy) if proxy.kind == "router" else {}
    return [patch_route_config(patches, context, copy.deepcopy(rc), ports) for rc in configs]


def gateway_port_map(snapshot: MeshSnapshot, proxy: Proxy) -> dict[int, set[int]]:
    """Port a gateway listens on → the Gateway server ports served there (Istio's GatewayPortMap)."""
    return {
        port: {server.port.number for _, server in servers}
        for port, servers in gateway_servers(snapshot, proxy).items()
    }


def _inbound_hosts(snapshot: MeshSnapshot, proxy: Proxy) -> dict[int, list[str]]:
    hosts: dict[int, list[str]] = {}
    for ip in snapshot.workload_ports(proxy):
        hosts.setdefault(ip.endpoint.port, []).append(ip.service.hostname)
    return hosts
