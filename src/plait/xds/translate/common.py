"""Building blocks shared by the per-kind translators: names, durations, matchers, filters."""

from __future__ import annotations

from plait.api.common import Percent, StringMatch, parse_duration

TYPE = "type.googleapis.com/"
CLUSTER_TYPE = TYPE + "envoy.config.cluster.v3.Cluster"
LISTENER_TYPE = TYPE + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = TYPE + "envoy.config.route.v3.RouteConfiguration"
VIRTUAL_HOST_TYPE = TYPE + "envoy.config.route.v3.VirtualHost"
ENDPOINT_TYPE = TYPE + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = TYPE + "envoy.extensions.transport_sockets.tls.v3.Secret"

PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"
DYNAMIC_FORWARD_PROXY_CLUSTER = "DynamicForwardProxyCluster"
SDS_CLUSTER = "sds-grpc"  # defined in the agent's bootstrap, as in Istio
XDS_CLUSTER = "xds-grpc"  # the control plane, in the agent's bootstrap (Istio's name)

ADS = {"ads": {}, "resource_api_version": "V3"}
ALLOW_ANY, REGISTRY_ONLY = "ALLOW_ANY", "REGISTRY_ONLY"

MAX_UINT32 = 4294967295


def cluster_name(direction: str, port: int, subset: str | None, host: str) -> str:
    """Istio's cluster name: ``outbound|9080|v2|reviews.default.svc.cluster.local``, ``inbound|9080||``."""
    return f"{direction}|{port}|{subset or ''}|{host}"


def parse_cluster_name(name: str) -> tuple[str, int, str, str] | None:
    parts = name.split("|")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2], parts[3]


def duration(text: str | float) -> str:
    """Envoy's JSON duration (``"7s"``, ``"0.250s"``) from a user duration or seconds."""
    seconds = parse_duration(text) if isinstance(text, str) else float(text)
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def fraction(percentage: Percent | None, legacy_percent: int | None = None) -> dict:
    """A FractionalPercent: Istio's double percentage becomes parts per million."""
    if percentage is not None:
        return {"numerator": round(percentage.value * 10_000), "denominator": "MILLION"}
    if legacy_percent is not None:
        return {"numerator": legacy_percent, "denominator": "HUNDRED"}
    return {"numerator": 100, "denominator": "HUNDRED"}


def string_matcher(match: StringMatch, ignore_case: bool = False) -> dict:
    kind = match.kind
    if kind == "regex":
        out: dict = {"safe_regex": {"regex": match.value}}
    elif kind == "present":
        out = {"safe_regex": {"regex": ".*"}}
    else:
        out = {kind: match.value}
    if ignore_case and kind != "regex":
        out["ignore_case"] = True
    return out


def socket_address(address: str, port: int) -> dict:
    return {"socket_address": {"address": address, "port_value": port}}


def typed(name: str, type_name: str, **config) -> dict:
    return {"name": name, "typed_config": {"@type": TYPE + type_name, **config}}


# On-demand cluster discovery (ODCDS) over the ADS stream: a sidecar's first call to a mesh service whose
# cluster it does not hold yet (automatic scoping, `plait.xds.scope`) waits for the control plane to send
# that cluster, then proceeds. Envoy asks only when the cluster is missing, so it costs nothing after.
ON_DEMAND_TIMEOUT = "10s"  # Envoy's default is 5 s; a control plane under a connect storm may be slower
ODCDS = {"source": ADS, "timeout": ON_DEMAND_TIMEOUT}


def tcp_proxy(
    stat_prefix: str,
    cluster: str | None = None,
    weighted: list[tuple[str, int]] | None = None,
    *,
    on_demand: bool = False,
) -> dict:
    """`on_demand`: fetch a missing cluster over ODCDS before connecting (a sidecar's outbound side)."""
    config: dict = {"stat_prefix": stat_prefix}
    if weighted and len(weighted) > 1:
        config["weighted_clusters"] = {"clusters": [{"name": c, "weight": w} for c, w in weighted]}
    else:
        config["cluster"] = weighted[0][0] if weighted else cluster
    if on_demand:
        config["on_demand"] = {"odcds_config": ADS, "timeout": ON_DEMAND_TIMEOUT}
    return typed("envoy.filters.network.tcp_proxy", "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", **config)


GRPC_WEB_FILTER = "envoy.filters.http.grpc_web"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
ROUTER_FILTER = "envoy.filters.http.router"
DFP_FILTER = "envoy.filters.http.dynamic_forward_proxy"
ON_DEMAND_FILTER = "envoy.filters.http.on_demand"
DNS_CACHE = {"name": "dynamic_forward_proxy_cache_config", "dns_lookup_family": "V4_PREFERRED"}


def http_filters(
    *,
    dynamic_forward_proxy: bool = False,
    authz: list[dict] | None = None,
    grpc_web: bool = False,
    on_demand: bool = False,
) -> list[dict]:
    """The HCM's filters; `authz` (jwt_authn, RBAC) go first, as in Istio: before grpc_web (`grpc_web`),
    fault, CORS and the router; `on_demand` (ODCDS) right after CORS, so that the dynamic forward proxy
    and the router find the route's cluster."""
    filters = [*(authz or [])]
    if grpc_web:
        filters.append(typed(GRPC_WEB_FILTER, "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"))
    filters += [
        typed(FAULT_FILTER, "envoy.extensions.filters.http.fault.v3.HTTPFault"),
        typed(CORS_FILTER, "envoy.extensions.filters.http.cors.v3.Cors"),
    ]
    if on_demand:
        filters.append(typed(ON_DEMAND_FILTER, "envoy.extensions.filters.http.on_demand.v3.OnDemand", odcds=ODCDS))
    if dynamic_forward_proxy:
        filters.append(
            typed(
                DFP_FILTER,
                "envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
                dns_cache_config=DNS_CACHE,
            )
        )
    filters.append(typed(ROUTER_FILTER, "envoy.extensions.filters.http.router.v3.Router"))
    return filters


# Istio's sidecar inbound: append the peer's certificate details (subject, URI and DNS SANs) to
# X-Forwarded-Client-Cert, so the application sees who called it over mTLS.
FORWARD_CLIENT_CERT = {
    "forward_client_cert_details": "APPEND_FORWARD",
    "set_current_client_cert_details": {"subject": True, "uri": True, "dns": True},
}


def http_connection_manager(
    stat_prefix: str,
    *,
    rds: str | None = None,
    route_config: dict | None = None,
    gateway: bool = False,
    dynamic_forward_proxy: bool = False,
    authz: list[dict] | None = None,
    forward_client_cert: bool = False,
    grpc_web: bool = False,
    on_demand: bool = False,
) -> dict:
    """`authz`, `grpc_web`, `on_demand`: see `http_filters`; `forward_client_cert`: Istio's XFCC handling."""
    config: dict = {"stat_prefix": stat_prefix}
    if rds is not None:
        config["rds"] = {"config_source": ADS, "route_config_name": rds}
    else:
        config["route_config"] = route_config
    config.update(
        {
            "http_filters": http_filters(
                dynamic_forward_proxy=dynamic_forward_proxy, authz=authz, grpc_web=grpc_web, on_demand=on_demand
            ),
            "use_remote_address": gateway,
            "normalize_path": True,
            "upgrade_configs": [{"upgrade_type": "websocket"}],
            "stream_idle_timeout": "0s",
        }
    )
    if forward_client_cert:
        config.update(FORWARD_CLIENT_CERT)
    return typed(
        "envoy.filters.network.http_connection_manager",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        **config,
    )


LISTENER_FILTERS = {
    "original_dst": typed(
        "envoy.filters.listener.original_dst", "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
    ),
    "tls_inspector": typed(
        "envoy.filters.listener.tls_inspector", "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
    ),
    "http_inspector": typed(
        "envoy.filters.listener.http_inspector", "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
    ),
}


def sds_secret(name: str) -> dict:
    """An SDS reference to the agent's secret server (Istio's ``default`` / ``ROOTCA``)."""
    return {
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
            },
            "resource_api_version": "V3",
        },
    }


def ads_secret(name: str) -> dict:
    """An SDS reference served by the control plane over ADS (gateway credentialName)."""
    return {"name": name, "sds_config": ADS}
