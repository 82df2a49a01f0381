"""Istio's standard metrics in a proxy's resources: a pass over the listeners and clusters built by the
other translators (`plait.telemetry.metrics` holds what is measured and its labels).

* every HCM and tcp_proxy gets the stats access loggers of its side: reporter=source on a gateway
  and on a sidecar's outbound listeners, reporter=destination on a sidecar's inbound ones (mutual TLS
  or not by its chain's transport socket); an inbound mutual-TLS
  tcp_proxy connects to the app once the caller's handshake is done, so that the connection it
  counts as opened already names the caller;
* every client HCM (reporter=source) stamps the proxy's identity and the service it calls on
  requests (``x-plait-peer``) before its router;
* a Telemetry's ``metrics`` overrides leave out the metrics it disables and change their labels
  (`plait.telemetry.overrides`), per side;
* with ``meshConfig.accessLogFile`` or a Telemetry's ``accessLogging``, every HCM and tcp_proxy
  of that side also writes Istio's access log (`plait.telemetry.logs`);
* every HCM has the tap logger of its side (`plait.telemetry.tap`): off (a runtime key at 0 %)
  until the control plane turns it on for a tapped proxy;
* every ``outbound|…`` cluster names its service in its metadata, the special clusters their own
  name (``destination_service_name="PassthroughCluster"``, as Istio's).

Pure: (snapshot, proxy, listeners, clusters) in, the same listeners and clusters with these additions out.
"""

from __future__ import annotations

import copy

from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot
from plait.telemetry import logs, metrics, overrides, tap
from plait.xds.translate.common import (
    BLACKHOLE_CLUSTER,
    INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER,
    ROUTER_FILTER,
    XDS_CLUSTER,
    parse_cluster_name,
)

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
EARLY_DATA = 65536  # what an inbound mutual-TLS tcp_proxy may buffer from the caller before it connects on
SPECIAL_CLUSTERS = (PASSTHROUGH_CLUSTER, BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER)


class _Loggers:
    """The access logs of one proxy, built once per kind; each filter gets its own copy."""

    def __init__(self, snapshot: MeshSnapshot, proxy: Proxy):
        self.source_tags = metrics.source_tags()
        self.peer_filter = metrics.peer_identity_filter()
        self.file_logs = {side: logs.proxy_access_log(snapshot, proxy, side) for side in ("CLIENT", "SERVER")}
        self.overrides = {side: overrides.metric_overrides(snapshot, proxy, side) for side in ("CLIENT", "SERVER")}
        self._cache: dict[tuple, list[dict]] = {}

    def logs(self, *, inbound: bool, mtls: bool, http: bool) -> list[dict]:
        key = (inbound, mtls, http)
        if key not in self._cache:
            tags = metrics.destination_tags(mtls=mtls, http=http) if inbound else self.source_tags
            side = "SERVER" if inbound else "CLIENT"
            made = (metrics.http_access_logs if http else metrics.tcp_access_logs)(tags, self.overrides[side])
            file_log = self.file_logs[side]
            tap_log = tap.tap_access_log("in" if inbound else "out", XDS_CLUSTER) if http else None
            self._cache[key] = [*made, *filter(None, [file_log, tap_log])]
        return copy.deepcopy(self._cache[key])


def _add_to_chain(loggers: _Loggers, chain: dict, inbound: bool) -> None:
    mtls = "transport_socket" in chain and inbound
    for network_filter in chain.get("filters", []):
        config = network_filter.get("typed_config", {})
        if network_filter.get("name") == HCM:
            config["access_log"] = loggers.logs(inbound=inbound, mtls=mtls, http=True)
            if not inbound:
                filters = config["http_filters"]
                at = next(i for i, f in enumerate(filters) if f["name"] == ROUTER_FILTER)
                config["http_filters"] = [*filters[:at], copy.deepcopy(loggers.peer_filter), *filters[at:]]
        elif network_filter.get("name") == TCP_PROXY:
            config["access_log"] = loggers.logs(inbound=inbound, mtls=mtls, http=False)
            config["access_log_options"] = metrics.tcp_access_log_options()
            if mtls:  # the opened count names the caller: wait for its certificate before connecting on
                config.update(upstream_connect_mode="ON_DOWNSTREAM_TLS_HANDSHAKE", max_early_data_bytes=EARLY_DATA)


def add_metrics(snapshot: MeshSnapshot, proxy: Proxy, listeners: dict[str, dict], clusters: dict[str, dict]) -> None:
    """Add the loggers, the peer-identity filter and the cluster metadata, in place, to a proxy's
    `listeners` and `clusters` (by name)."""
    loggers = _Loggers(snapshot, proxy)
    for listener in listeners.values():
        inbound = proxy.kind != "router" and listener.get("traffic_direction") == "INBOUND"
        chains = [*listener.get("filter_chains", []), *filter(None, [listener.get("default_filter_chain")])]
        for chain in chains:
            _add_to_chain(loggers, chain, inbound)
    services = {s.hostname: s for s in snapshot.services_for(proxy)}
    for name, cluster in clusters.items():
        if "metadata" in cluster:
            continue  # a route's unknown destination keeps its marker; its labels stay unknown
        parsed = parse_cluster_name(name)
        if parsed and parsed[0] == "outbound" and parsed[3] in services:
            cluster["metadata"] = metrics.cluster_metadata(services[parsed[3]])
        elif name in SPECIAL_CLUSTERS:
            cluster["metadata"] = metrics.cluster_metadata(None, name)
