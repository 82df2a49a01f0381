"""EnvoyFilter patches on listeners (pure), in the order of Istio's ``listener_patch.go``.

Per listener: LISTENER merges and removals; LISTENER_FILTER operations; per filter chain (and the
default chain): FILTER_CHAIN merges and removals, NETWORK_FILTER list operations then merges, and in
an HTTP connection manager the HTTP_FILTER list operations then merges; then FILTER_CHAIN and
LISTENER additions. An inbound listener's inline route configuration is patched first, in context
SIDECAR_INBOUND, as Istio patches the inbound route configuration when it builds it.
"""

from __future__ import annotations

import copy

from plait.model.proxy import Proxy
from plait.xds.translate.envoyfilter_objects import (
    MERGES,
    ConfigPatch,
    Patches,
    added_in,
    apply_list_operation,
    merge_named_filter,
    patch_route_config,
)
from plait.xds.translate.protomerge import merge_any, merge_message

HCM = "envoy.filters.network.http_connection_manager"
VIRTUAL_LISTENERS = ("virtualInbound", "virtualOutbound")


def listener_context(proxy: Proxy, listener: dict) -> str:
    if proxy.kind == "router":
        return "GATEWAY"
    return "SIDECAR_INBOUND" if listener.get("traffic_direction") == "INBOUND" else "SIDECAR_OUTBOUND"


def listener_matches(patch: ConfigPatch, listener: dict) -> bool:
    wanted = patch.match.listener
    if wanted is None:
        return True
    if wanted.name and wanted.name != listener.get("name"):
        return False
    if patch.apply_to != "LISTENER" and listener.get("name") in VIRTUAL_LISTENERS:
        return True  # the port is matched on the filter chain's destination_port instead
    port = listener.get("address", {}).get("socket_address", {}).get("port_value")
    return not wanted.port_number or wanted.port_number == port


def chain_matches(patch: ConfigPatch, listener: dict, chain: dict) -> bool:
    wanted = patch.match.listener
    if wanted is None:
        return True
    chain_match = chain.get("filter_chain_match", {})
    if (
        listener.get("name") in VIRTUAL_LISTENERS
        and wanted.port_number
        and chain_match.get("destination_port") != wanted.port_number
    ):
        return False
    fc = wanted.filter_chain
    if fc is None:
        return True
    protocols = [p for p in fc.application_protocols.split(",") if p] if fc.application_protocols else []
    return (
        (not fc.name or fc.name == chain.get("name"))
        and (not fc.sni or fc.sni in chain_match.get("server_names", ()))
        and (not fc.transport_protocol or fc.transport_protocol == chain_match.get("transport_protocol"))
        and all(p in chain_match.get("application_protocols", ()) for p in protocols)
        and (not fc.destination_port or fc.destination_port == chain_match.get("destination_port"))
    )


def _filter_name(patch: ConfigPatch) -> str | None:
    fc = patch.match.listener.filter_chain if patch.match.listener else None
    return fc.filter.name if fc and fc.filter else None


def _sub_filter_name(patch: ConfigPatch) -> str | None:
    fc = patch.match.listener.filter_chain if patch.match.listener else None
    return fc.filter.sub_filter.name if fc and fc.filter and fc.filter.sub_filter else None


def _by_name(name: str | None):
    return None if name is None else (lambda item: item.get("name") == name)


LISTENER_CLASS = ("LISTENER", "LISTENER_FILTER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER")
ROUTE_CLASS = ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE")


def _may_change(patches: Patches, context: str, listener: dict) -> bool:
    """Could any patch change this listener? (Every patch on a listener's parts matches it first.)"""
    kinds = LISTENER_CLASS + (ROUTE_CLASS if context == "SIDECAR_INBOUND" else ())
    return any(
        p.fits(context) and (kind in ROUTE_CLASS or listener_matches(p, listener))
        for kind in kinds
        for p in patches.get(kind, ())
        if not (kind == "LISTENER" and p.operation == "ADD")
    )


def patch_listeners(patches: Patches, proxy: Proxy, listeners: dict[str, dict]) -> dict[str, dict]:
    """The listeners patched (a listener a patch may change is copied first: the dicts given are
    never changed); removed ones dropped; added ones appended."""
    out: dict[str, dict] = {}
    for name, original in listeners.items():
        context = listener_context(proxy, original)
        if not _may_change(patches, context, original):
            out[name] = original
            continue
        listener = copy.deepcopy(original)
        if context == "SIDECAR_INBOUND":
            _patch_inline_routes(patches, listener)
        if _patch_listener(patches, context, listener):
            out[listener.get("name", name)] = listener
    for added in added_in(patches.get("LISTENER", ()), proxy):
        out[added.get("name", "")] = added
    return out


def _patch_inline_routes(patches: Patches, listener: dict) -> None:
    for chain in [*listener.get("filter_chains", ()), listener.get("default_filter_chain") or {}]:
        for item in chain.get("filters", ()):
            config = item.get("typed_config", {})
            if item.get("name") == HCM and isinstance(config.get("route_config"), dict):
                config["route_config"] = patch_route_config(patches, "SIDECAR_INBOUND", config["route_config"], {})


def _patch_listener(patches: Patches, context: str, listener: dict) -> bool:
    """Patch one listener in place; False when a patch removes it."""
    for p in patches.get("LISTENER", ()):
        if not (p.fits(context) and listener_matches(p, listener)):
            continue
        if p.operation == "REMOVE":
            return False
        if p.operation in MERGES:
            merge_message(listener, p.value, "envoy.config.listener.v3.Listener", replace_lists=p.replace_lists)
    _patch_listener_filters(patches, context, listener)
    _patch_chains(patches, context, listener)
    return True


def _patch_listener_filters(patches: Patches, context: str, listener: dict) -> None:
    for p in patches.get("LISTENER_FILTER", ()):
        if not (p.fits(context) and listener_matches(p, listener)):
            continue
        matches = _by_name(p.match.listener.listener_filter or None if p.match.listener else None)
        filters = listener.get("listener_filters", [])
        if p.operation in MERGES:
            for item in filters if matches else ():
                if matches(item):
                    merge_named_filter(item, p, named=True)
        else:
            filters = apply_list_operation(filters, p, matches)
        if filters or "listener_filters" in listener:
            listener["listener_filters"] = filters


def _patch_chains(patches: Patches, context: str, listener: dict) -> None:
    chains = [
        c for c in listener.get("filter_chains", ()) if c.get("filters") and _patch_chain(patches, context, listener, c)
    ]
    default = listener.get("default_filter_chain")
    if default and default.get("filters") and not _patch_chain(patches, context, listener, default):
        del listener["default_filter_chain"]
    chains += [
        p.fresh_value()
        for p in patches.get("FILTER_CHAIN", ())
        if p.operation == "ADD" and p.fits(context) and listener_matches(p, listener)
    ]
    listener["filter_chains"] = chains


def _merge_chain(chain: dict, patch: ConfigPatch) -> None:
    """Istio's filter chain MERGE: a transport_socket of the chain's socket name merges into it alone."""
    socket = (patch.value or {}).get("transport_socket")
    current = chain.get("transport_socket")
    if socket is not None and current and current.get("name") == socket.get("name"):
        if "typed_config" in current and "typed_config" in socket:
            current["typed_config"] = merge_any(current["typed_config"], socket["typed_config"])
        return
    merge_message(chain, patch.value, "envoy.config.listener.v3.FilterChain", replace_lists=patch.replace_lists)


def _patch_chain(patches: Patches, context: str, listener: dict, chain: dict) -> bool:
    """Patch one filter chain in place; False when a patch removes it."""
    for p in patches.get("FILTER_CHAIN", ()):
        if not (p.fits(context) and listener_matches(p, listener) and chain_matches(p, listener, chain)):
            continue
        if p.operation == "REMOVE":
            return False
        if p.operation in MERGES:
            _merge_chain(chain, p)
    network = [
        p
        for p in patches.get("NETWORK_FILTER", ())
        if p.fits(context) and listener_matches(p, listener) and chain_matches(p, listener, chain)
    ]
    filters = chain["filters"]
    for p in network:
        if p.operation not in MERGES:
            filters = apply_list_operation(filters, p, _by_name(_filter_name(p)))
    chain["filters"] = filters
    http = [
        p
        for p in patches.get("HTTP_FILTER", ())
        if p.fits(context) and listener_matches(p, listener) and chain_matches(p, listener, chain)
    ]
    for item in filters:
        for p in network:
            if p.operation == "MERGE" and _filter_name(p) in (None, item.get("name")):
                merge_named_filter(item, p, named=_filter_name(p) is not None)
        if item.get("name") == HCM:
            _patch_http_filters(http, item)
    return True


def _patch_http_filters(patches: list[ConfigPatch], hcm: dict) -> None:
    config = hcm.get("typed_config")
    if not isinstance(config, dict) or not config.get("@type", "").endswith(".HttpConnectionManager"):
        return
    mine = [p for p in patches if _filter_name(p) in (None, HCM)]
    filters = config.get("http_filters", [])
    for p in mine:
        if p.operation not in MERGES:
            filters = apply_list_operation(filters, p, _by_name(_sub_filter_name(p)))
    for item in filters:
        for p in mine:
            if p.operation == "MERGE" and _sub_filter_name(p) in (None, item.get("name")):
                merge_named_filter(item, p, named=_sub_filter_name(p) is not None)
    config["http_filters"] = filters
