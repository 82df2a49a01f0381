"""EnvoyFilter patches on one object kind at a time: filter lists, route configurations, clusters.

Pure helpers of `plait.xds.envoyfilter` (which chooses the patches and explains the
contexts). Route configurations follow Istio's ``rc_patch.go``, clusters ``cluster_patch.go``.
`patch_route_config` and the filter helpers change the dicts they are given (callers pass copies);
`patch_clusters` copies what it changes. No patch value is ever shared with the output.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from plait.api.extensions import EnvoyConfigObjectMatch
from plait.model.proxy import Proxy
from plait.xds.translate.common import INBOUND_PASSTHROUGH_CLUSTER, parse_cluster_name
from plait.xds.translate.protomerge import merge_any, merge_message, type_name_of

MERGES = ("MERGE", "MERGE_AND_REPLACE_LIST")
SIDECAR_ADD_CONTEXTS = ("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND")
GATEWAY_ADD_CONTEXTS = ("ANY", "GATEWAY")


@dataclass(frozen=True)
class ConfigPatch:
    """One configPatch that applies to the proxy, its value in Envoy's canonical JSON."""

    apply_to: str
    context: str
    match: EnvoyConfigObjectMatch
    operation: str
    value: dict | None

    def fits(self, context: str) -> bool:
        return self.context in (context, "ANY")

    @property
    def replace_lists(self) -> bool:
        return self.operation == "MERGE_AND_REPLACE_LIST"

    def fresh_value(self) -> dict:
        return copy.deepcopy(self.value or {})


Patches = dict[str, list[ConfigPatch]]


# ------------------------------------------------------------------ list operations


def apply_list_operation(items: list, patch: ConfigPatch, matches: Callable[[dict], bool] | None) -> list:
    """ADD / INSERT_* / REPLACE / REMOVE on a list of named filters; `matches` is None when the patch
    names no element (INSERT_BEFORE then goes first, INSERT_AFTER last, REPLACE and REMOVE do nothing)."""
    op = patch.operation
    if op == "ADD" or (op == "INSERT_AFTER" and matches is None):
        return [*items, patch.fresh_value()]
    if op == "INSERT_FIRST" or (op == "INSERT_BEFORE" and matches is None):
        return [patch.fresh_value(), *items]
    if matches is None:
        return items
    index = next((i for i, item in enumerate(items) if matches(item)), None)
    if op == "REMOVE":
        return [item for item in items if not matches(item)]
    if index is None:
        return items
    if op == "INSERT_BEFORE":
        return [*items[:index], patch.fresh_value(), *items[index:]]
    if op == "INSERT_AFTER":
        return [*items[: index + 1], patch.fresh_value(), *items[index + 1 :]]
    if op == "REPLACE":
        return [*items[:index], patch.fresh_value(), *items[index + 1 :]]
    return items


def merge_named_filter(item: dict, patch: ConfigPatch, *, named: bool) -> None:
    """MERGE into a filter: its name may be overridden, its typed_config merged (MergeAnyWithAny).
    A typed_config of another @type replaces the filter's when the patch `named` this filter; a patch
    aimed at every filter leaves filters of other types alone (Istio fails on them)."""
    if "typed_config" not in item:
        return  # Istio skips filters without typed_config
    value = patch.value or {}
    config = value.get("typed_config")
    if config is not None and not named and type_name_of(config) != type_name_of(item["typed_config"]):
        return
    if value.get("name"):
        item["name"] = value["name"]
    if config is not None:
        item["typed_config"] = merge_any(item["typed_config"], config)


# ------------------------------------------------------------------ route configurations


def _port_from_route_name(name: str) -> int:
    if name.startswith("inbound"):
        parsed = parse_cluster_name(name)
        return parsed[1] if parsed else 0
    return int(name) if name.isdigit() else 0


def _gateway_route_name_parts(name: str) -> tuple[int, str, str]:
    """``http.8080`` → (8080, "", ""); ``https.443.https.gw.ns`` → (443, "https", "ns/gw")."""
    parts = name.split(".")
    if name.startswith("http.") and len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1]), "", ""
    if name.startswith("https.") and len(parts) >= 5 and parts[1].isdigit():
        return int(parts[1]), parts[2], f"{parts[4]}/{parts[3]}"
    return 0, "", ""


def route_config_matches(patch: ConfigPatch, context: str, rc: dict, ports: dict[int, set[int]]) -> bool:
    wanted = patch.match.route_configuration
    if wanted is None:
        return True
    if wanted.name and wanted.name != rc.get("name"):
        return False
    if context != "GATEWAY":
        return not wanted.port_number or wanted.port_number == _port_from_route_name(rc.get("name", ""))
    port, port_name, gateway = _gateway_route_name_parts(rc.get("name", ""))
    if (wanted.port_name and wanted.port_name != port_name) or (wanted.gateway and wanted.gateway != gateway):
        return False
    return not wanted.port_number or wanted.port_number in ports.get(port, {port})


def _vhost_matches(patch: ConfigPatch, vhost: dict) -> bool:
    wanted = patch.match.route_configuration.vhost if patch.match.route_configuration else None
    if wanted is None:
        return True
    return (not wanted.name or wanted.name == vhost.get("name")) and (
        not wanted.domain_name or wanted.domain_name in vhost.get("domains", ())
    )


def _route_match_given(patch: ConfigPatch) -> bool:
    rc = patch.match.route_configuration
    return rc is not None and rc.vhost is not None and rc.vhost.route is not None


ACTION_KEYS = {"ROUTE": "route", "REDIRECT": "redirect", "DIRECT_RESPONSE": "direct_response"}


def _route_matches(patch: ConfigPatch, route: dict) -> bool:
    if not _route_match_given(patch):
        return True
    wanted = patch.match.route_configuration.vhost.route
    if wanted.name and wanted.name != route.get("name"):
        return False
    return wanted.action == "ANY" or ACTION_KEYS[wanted.action] in route


def patch_route_config(patches: Patches, context: str, rc: dict, ports: dict[int, set[int]]) -> dict:
    """One route configuration (a copy the caller owns) with its patches applied."""

    def applies(p: ConfigPatch) -> bool:
        return p.fits(context) and route_config_matches(p, context, rc, ports)

    for p in patches.get("ROUTE_CONFIGURATION", ()):
        if p.operation in MERGES and applies(p):
            merge_message(rc, p.value, "envoy.config.route.v3.RouteConfiguration", replace_lists=p.replace_lists)
    vhosts, removed = rc.get("virtual_hosts", []), set()
    for i in range(len(vhosts)):
        for p in patches.get("VIRTUAL_HOST", ()):
            if not (applies(p) and _vhost_matches(p, vhosts[i])):
                continue
            if p.operation == "REMOVE":
                removed.add(vhosts[i].get("name"))
                break
            if p.operation in MERGES:
                merge_message(vhosts[i], p.value, "envoy.config.route.v3.VirtualHost", replace_lists=p.replace_lists)
            elif p.operation == "REPLACE":
                vhosts[i] = p.fresh_value()
        else:
            _patch_routes(patches, applies, vhosts[i])
    vhosts += [p.fresh_value() for p in patches.get("VIRTUAL_HOST", ()) if p.operation == "ADD" and applies(p)]
    if vhosts or "virtual_hosts" in rc:
        rc["virtual_hosts"] = [vh for vh in vhosts if vh.get("name") not in removed]
    return rc


def _patch_routes(patches: Patches, applies: Callable[[ConfigPatch], bool], vhost: dict) -> None:
    route_patches = [p for p in patches.get("HTTP_ROUTE", ()) if applies(p) and _vhost_matches(p, vhost)]
    routes: list = list(vhost.get("routes", []))
    for i, route in enumerate(routes):
        for p in route_patches:
            if not _route_matches(p, route):
                continue
            if p.operation == "REMOVE":
                routes[i] = None
                break
            if p.operation in MERGES:
                merge_message(route, p.value, "envoy.config.route.v3.Route", replace_lists=p.replace_lists)
    routes = [r for r in routes if r is not None]
    for p in route_patches:
        matches = (lambda r, p=p: _route_matches(p, r)) if _route_match_given(p) else None
        if p.operation == "INSERT_FIRST":
            if matches is None or any(matches(r) for r in routes):
                routes.insert(0, p.fresh_value())
        elif p.operation in ("ADD", "INSERT_BEFORE", "INSERT_AFTER"):
            routes = apply_list_operation(routes, p, matches)
    if routes or "routes" in vhost:
        vhost["routes"] = routes


# ------------------------------------------------------------------ clusters


def cluster_context(proxy: Proxy, name: str) -> str:
    if proxy.kind == "router":
        return "GATEWAY"
    inbound = name.startswith("inbound|") or name == INBOUND_PASSTHROUGH_CLUSTER
    return "SIDECAR_INBOUND" if inbound else "SIDECAR_OUTBOUND"


def cluster_matches(patch: ConfigPatch, cluster: dict, inbound_hosts: dict[int, list[str]]) -> bool:
    wanted = patch.match.cluster
    if wanted is None:
        return True
    if wanted.name:
        return wanted.name == cluster.get("name")
    direction, port, subset, host = parse_cluster_name(cluster.get("name", "")) or ("", 0, "", "")
    hosts = inbound_hosts.get(port, []) if direction == "inbound" else [host]
    return (
        (not wanted.subset or wanted.subset == subset)
        and (not wanted.service or wanted.service in hosts)
        and (not wanted.port_number or wanted.port_number == port)
    )


def _merge_cluster(cluster: dict, patch: ConfigPatch) -> None:
    """Istio's cluster MERGE: a transport_socket in the patch merges into the cluster's socket of
    the same name (or replaces a socket of another name) and nothing else of the patch is merged."""
    socket = (patch.value or {}).get("transport_socket")
    if socket is None:
        merge_message(cluster, patch.value, "envoy.config.cluster.v3.Cluster", replace_lists=patch.replace_lists)
        return
    matches = cluster.get("transport_socket_matches")
    if matches:
        target = next(
            (m["transport_socket"] for m in matches if m.get("transport_socket", {}).get("name") == socket.get("name")),
            None,
        )
        if target is None:
            return  # merging would leave both transport_socket and transport_socket_matches
    else:
        current = cluster.get("transport_socket")
        target = current if current and current.get("name") == socket.get("name") else None
    if target is None:
        cluster["transport_socket"] = copy.deepcopy(socket)
    elif "typed_config" in target and "typed_config" in socket:
        target["typed_config"] = merge_any(target["typed_config"], socket["typed_config"])


def patch_clusters(
    patches: Patches, proxy: Proxy, clusters: dict[str, dict], inbound_hosts: dict[int, list[str]]
) -> dict[str, dict]:
    """The clusters with CLUSTER patches applied; a cluster a patch changes is copied first (the
    dicts given are never changed), removed ones are dropped, added ones appended."""
    cluster_patches = patches.get("CLUSTER", ())
    out: dict[str, dict] = {}
    for name, original in clusters.items():
        cluster, context, removed = original, cluster_context(proxy, name), False
        for p in cluster_patches:
            if not (p.fits(context) and cluster_matches(p, cluster, inbound_hosts)):
                continue
            if p.operation == "REMOVE":
                removed = True
                break
            if p.operation in MERGES:
                cluster = copy.deepcopy(original) if cluster is original else cluster
                _merge_cluster(cluster, p)
        if not removed:
            out[cluster.get("name", name)] = cluster
    add_contexts = GATEWAY_ADD_CONTEXTS if proxy.kind == "router" else SIDECAR_ADD_CONTEXTS
    for p in cluster_patches:
        if p.operation == "ADD" and p.context in add_contexts:
            added = p.fresh_value()
            out[added.get("name", "")] = added
    return out


def added_in(patches: Iterable[ConfigPatch], proxy: Proxy) -> list[dict]:
    """Values of ADD patches for listeners of this kind of proxy (ANY: outbound and gateways, once)."""
    contexts = GATEWAY_ADD_CONTEXTS if proxy.kind == "router" else SIDECAR_ADD_CONTEXTS
    return [p.fresh_value() for p in patches if p.operation == "ADD" and p.context in contexts]
