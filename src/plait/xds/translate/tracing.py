"""Traces in a proxy's resources: a pass over the listeners and clusters built by the other
translators (`plait.telemetry.tracing` holds what is traced and where spans go).

Every HTTP connection manager gets the ``tracing`` of its side (server: a sidecar's inbound
listeners; client: its outbound ones and every gateway listener), and the proxy gets the collector's
cluster when it lacks it. Nothing changes when ``enableTracing`` is false.

Pure: (snapshot, proxy, listeners, clusters) in, the same listeners and clusters with these additions out.
"""

from __future__ import annotations

import copy

from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot
from plait.telemetry import tracing
from plait.xds.translate.telemetry import HCM


def add_tracing(snapshot: MeshSnapshot, proxy: Proxy, listeners: dict[str, dict], clusters: dict[str, dict]) -> None:
    """Add each HCM's ``tracing`` and the collector cluster, in place, to a proxy's `listeners` and
    `clusters` (by name)."""
    sides = {side: tracing.trace_settings(snapshot, proxy, side) for side in ("CLIENT", "SERVER")}
    if not any(sides.values()):
        return
    services = {s.hostname: s for s in snapshot.services_for(proxy)}
    target = tracing.collector(snapshot.mesh_config, services, clusters)
    configs = {
        side: tracing.hcm_tracing(snapshot.mesh_config, settings, target) if settings else None
        for side, settings in sides.items()
    }
    used = False
    for listener in listeners.values():
        inbound = proxy.kind != "router" and listener.get("traffic_direction") == "INBOUND"
        config = configs["SERVER" if inbound else "CLIENT"]
        if config is None:
            continue
        chains = [*listener.get("filter_chains", []), *filter(None, [listener.get("default_filter_chain")])]
        for chain in chains:
            for network_filter in chain.get("filters", []):
                if network_filter.get("name") == HCM:
                    network_filter["typed_config"]["tracing"] = copy.deepcopy(config)
                    used = used or "provider" in config
    if used and target.cluster is not None:
        clusters[target.cluster["name"]] = target.cluster
