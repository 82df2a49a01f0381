"""Clusters (CDS): one per service port and per DestinationRule subset, plus Istio's special ones.

Upstream TLS follows Istio: a DestinationRule's ``tls`` wins; without one, a client
that has a mesh identity uses automatic mTLS (mutual TLS to endpoints that carry a
sidecar, plaintext to the others) unless the destination is outside the mesh or its
namespace's PeerAuthentication is DISABLE.
"""

from __future__ import annotations

from plait.api import networking as net
from plait.api.common import parse_duration
from plait.model import peer_auth
from plait.model.protocol import Protocol
from plait.model.proxy import Proxy, spiffe_id
from plait.model.services import Endpoint, Port, Service
from plait.model.snapshot import InboundPort, MeshSnapshot
from plait.xds.translate.common import (
    ADS,
    BLACKHOLE_CLUSTER,
    DNS_CACHE,
    DYNAMIC_FORWARD_PROXY_CLUSTER,
    INBOUND_PASSTHROUGH_CLUSTER,
    MAX_UINT32,
    PASSTHROUGH_CLUSTER,
    TYPE,
    cluster_name,
    duration,
    socket_address,
)
from plait.xds.translate.endpoints import load_assignment
from plait.xds.translate.tls import (
    auto_mtls_matches,
    auto_sni_options,
    client_tls,
    outbound_sni,
    sidecar_credential_scope,
)

DEFAULT_CONNECT_TIMEOUT = "10s"  # Istio's meshConfig.connectTimeout default
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_LB = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_CONN": "LEAST_REQUEST",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "UNSPECIFIED": "LEAST_REQUEST",
}
DEFAULT_LB = "LEAST_REQUEST"  # Istio's default since 1.14


def merge_policy(
    base: net.TrafficPolicy | None, override: net.TrafficPolicy | None, port: int
) -> net.TrafficPolicy | None:
    """A subset's policy overrides the top level field by field (loadBalancer, connectionPool, …), as in Istio."""
    base_p = base.for_port(port) if base else None
    over_p = override.for_port(port) if override else None
    if base_p is None or over_p is None:
        return over_p or base_p
    merged = base_p.model_dump(exclude={"port_level_settings"})
    merged.update({k: v for k, v in over_p.model_dump(exclude={"port_level_settings"}).items() if v is not None})
    return net.TrafficPolicy.model_validate(merged)


def _circuit_breakers(pool: net.ConnectionPoolSettings | None, budget: net.RetryBudget | None = None) -> dict:
    """Istio lifts Envoy's default limits (1024) to 2^32-1 unless the DestinationRule sets them;
    a ``retryBudget`` (Istio's defaults: 20%, at least 3 concurrent retries) caps retries instead."""
    tcp, http = (pool.tcp if pool else None), (pool.http if pool else None)

    def pick(value: int | None) -> int:
        return MAX_UINT32 if value is None or value == 0 else value

    threshold: dict = {
        "max_connections": pick(tcp.max_connections if tcp else None),
        "max_pending_requests": pick(http.http1_max_pending_requests if http else None),
        "max_requests": pick(http.http2_max_requests if http else None),
        "max_retries": pick(http.max_retries if http else None),
        "track_remaining": True,
    }
    if budget is not None:  # budgetInterval has no field in the xDS protos plait publishes with: not sent
        threshold["retry_budget"] = {
            "budget_percent": {"value": 20.0 if budget.percent is None else budget.percent},
            "min_retry_concurrency": budget.min_retry_concurrency or 3,
        }
    return {"thresholds": [threshold]}


def _slow_start(lb: net.LoadBalancerSettings | None) -> dict | None:
    """``warmup`` (or the older ``warmupDurationSecs``) as Envoy's slow start, with Istio's defaults:
    linear ramp (aggression 1), from 10% of the weight."""
    if lb is None or (lb.warmup is None and lb.warmup_duration_secs is None):
        return None
    if lb.warmup is None:
        return {"slow_start_window": duration(lb.warmup_duration_secs)}
    return {
        "slow_start_window": duration(lb.warmup.duration),
        "aggression": {
            "default_value": 1.0 if lb.warmup.aggression is None else lb.warmup.aggression,
            "runtime_key": "(",
        },  # as Istio: a key no runtime layer can set
        "min_weight_percent": {"value": 10.0 if lb.warmup.minimum_percent is None else lb.warmup.minimum_percent},
    }


def _outlier_detection(od: net.OutlierDetection) -> tuple[dict, int | None]:
    """Envoy outlier detection + the panic threshold (Istio's minHealthPercent)."""
    out: dict = {"enforcing_success_rate": 0}
    five_xx = od.consecutive_5xx_errors
    gateway = od.consecutive_gateway_errors
    if five_xx is None and gateway is None and od.consecutive_errors is not None:
        gateway = od.consecutive_errors  # Istio maps the deprecated field to gateway errors
    if five_xx is not None:
        out["consecutive_5xx"] = five_xx
        out["enforcing_consecutive_5xx"] = 100 if five_xx > 0 else 0
    else:
        out["enforcing_consecutive_5xx"] = 0
    if gateway is not None:
        out["consecutive_gateway_failure"] = gateway
        out["enforcing_consecutive_gateway_failure"] = 100 if gateway > 0 else 0
    if od.split_external_local_origin_errors:
        out["split_external_local_origin_errors"] = True
        if od.consecutive_local_origin_failures is not None:
            out["consecutive_local_origin_failure"] = od.consecutive_local_origin_failures
            out["enforcing_consecutive_local_origin_failure"] = 100
    if od.interval:
        out["interval"] = duration(od.interval)
    if od.base_ejection_time:
        out["base_ejection_time"] = duration(od.base_ejection_time)
    if od.max_ejection_percent is not None:
        out["max_ejection_percent"] = od.max_ejection_percent
    return out, od.min_health_percent


def _http2_options(http: net.HTTPSettings | None) -> dict:
    """HTTP/2 upstream settings Istio passes on: maxConcurrentStreams, http2KeepAlive (PING)."""
    options: dict = {}
    if http and http.max_concurrent_streams:
        options["max_concurrent_streams"] = http.max_concurrent_streams
    keepalive = http.http2_keep_alive if http else None
    if keepalive and (keepalive.interval or keepalive.timeout):
        options["connection_keepalive"] = {
            k: duration(v) for k, v in (("interval", keepalive.interval), ("timeout", keepalive.timeout)) if v
        }
    return options


def _http_protocol_options(port: Port, policy: net.TrafficPolicy | None) -> dict | None:
    """Upstream HTTP version and connection limits; None where Envoy's default (HTTP/1.1) is right."""
    if not (port.protocol.is_http or port.protocol is Protocol.AUTO):
        return None
    http = policy.connection_pool.http if policy and policy.connection_pool else None
    tcp = policy.connection_pool.tcp if policy and policy.connection_pool else None
    common: dict = {}
    idle = (http.idle_timeout if http else None) or (tcp.idle_timeout if tcp else None)
    if idle:
        common["idle_timeout"] = duration(idle)
    if http and http.max_requests_per_connection:
        common["max_requests_per_connection"] = http.max_requests_per_connection
    if tcp and tcp.max_connection_duration:
        common["max_connection_duration"] = duration(tcp.max_connection_duration)
    auto_sni = auto_sni_options(policy.tls if policy else None)
    options: dict = {"@type": TYPE + HTTP_OPTIONS}
    if (http and http.use_client_protocol) or port.protocol is Protocol.AUTO:
        options["use_downstream_protocol_config"] = {"http_protocol_options": {}, "http2_protocol_options": {}}
    elif port.protocol.is_http2 or (http is not None and http.h2_upgrade_policy == "UPGRADE"):
        options["explicit_http_config"] = {"http2_protocol_options": _http2_options(http)}
    elif common or auto_sni:
        options["explicit_http_config"] = {"http_protocol_options": {}}
    else:
        return None
    if common:
        options["common_http_protocol_options"] = common
    if auto_sni:
        options["upstream_http_protocol_options"] = auto_sni
    return {HTTP_OPTIONS: options}


def _apply_load_balancer(cluster: dict, lb: net.LoadBalancerSettings | None) -> None:
    """The load-balancing policy (Istio's default LEAST_REQUEST), hashing, passthrough and slow start."""
    if lb and lb.consistent_hash:
        ch = lb.consistent_hash
        if ch.maglev:
            cluster["lb_policy"] = "MAGLEV"
            if ch.maglev.table_size:
                cluster["maglev_lb_config"] = {"table_size": ch.maglev.table_size}
        else:
            cluster["lb_policy"] = "RING_HASH"
            size = (ch.ring_hash.minimum_ring_size if ch.ring_hash else None) or ch.minimum_ring_size
            if size:
                cluster["ring_hash_lb_config"] = {"minimum_ring_size": size}
    elif lb and lb.simple == "PASSTHROUGH":
        cluster["type"] = "ORIGINAL_DST"
        cluster["lb_policy"] = "CLUSTER_PROVIDED"
        cluster.pop("eds_cluster_config", None)
        cluster.pop("load_assignment", None)
    elif lb and lb.simple:
        cluster["lb_policy"] = _LB[lb.simple]
    elif cluster.get("type") != "ORIGINAL_DST":
        cluster["lb_policy"] = DEFAULT_LB
    slow_start = _slow_start(lb)
    if slow_start and cluster.get("lb_policy") in ("ROUND_ROBIN", "LEAST_REQUEST"):
        config = "round_robin_lb_config" if cluster["lb_policy"] == "ROUND_ROBIN" else "least_request_lb_config"
        cluster[config] = {"slow_start_config": slow_start}


def _apply_policy(cluster: dict, policy: net.TrafficPolicy | None, port: Port) -> None:
    pool = policy.connection_pool if policy else None
    if pool and pool.tcp and pool.tcp.connect_timeout:
        cluster["connect_timeout"] = duration(pool.tcp.connect_timeout)
    if pool and pool.tcp and pool.tcp.tcp_keepalive:
        ka = pool.tcp.tcp_keepalive
        keepalive = {}
        if ka.probes:
            keepalive["keepalive_probes"] = ka.probes
        if ka.time:
            keepalive["keepalive_time"] = max(1, int(parse_duration(ka.time)))
        if ka.interval:
            keepalive["keepalive_interval"] = max(1, int(parse_duration(ka.interval)))
        cluster["upstream_connection_options"] = {"tcp_keepalive": keepalive}
    cluster["circuit_breakers"] = _circuit_breakers(pool, policy.retry_budget if policy else None)
    protocol_options = _http_protocol_options(port, policy)
    if protocol_options:
        cluster["typed_extension_protocol_options"] = protocol_options
    _apply_load_balancer(cluster, policy.load_balancer if policy else None)
    if policy and policy.outlier_detection:
        outlier, panic = _outlier_detection(policy.outlier_detection)
        cluster["outlier_detection"] = outlier
        # As Istio: minHealthPercent (0 unless set), so ejected hosts stay ejected instead of Envoy's
        # default 50% panic mode spreading traffic over them again.
        cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": panic or 0}}


def build_cluster(
    svc: Service,
    port: Port,
    subset: str | None,
    policy: net.TrafficPolicy | None,
    sans: list[str],
    *,
    auto_mtls: bool = False,
) -> dict:
    """One outbound cluster; `auto_mtls`: the client may use Istio's automatic mTLS to this service."""
    name = cluster_name("outbound", port.number, subset, svc.hostname)
    cluster: dict = {"name": name, "connect_timeout": DEFAULT_CONNECT_TIMEOUT}
    if svc.resolution in ("EDS", "STATIC"):
        cluster["type"] = "EDS"
        cluster["eds_cluster_config"] = {"eds_config": ADS, "service_name": name}
    elif svc.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        cluster["type"] = "STRICT_DNS" if svc.resolution == "DNS" else "LOGICAL_DNS"
        cluster["dns_lookup_family"] = "V4_PREFERRED"
        endpoints = svc.endpoints.get(port.number) or (
            Endpoint(address=svc.hostname, port=port.target_port or port.number),
        )
        cluster["load_assignment"] = load_assignment(name, endpoints)
    else:  # NONE: send to wherever the app was going
        cluster["type"] = "ORIGINAL_DST"
        cluster["lb_policy"] = "CLUSTER_PROVIDED"
    _apply_policy(cluster, policy, port)
    tls = policy.tls if policy else None
    if tls:
        socket = client_tls(tls, svc, port, subset, sans)
        if socket:
            cluster["transport_socket"] = socket
    elif auto_mtls and cluster["type"] != "ORIGINAL_DST":
        # Original-destination endpoints carry no tlsMode metadata, so they would all match plaintext.
        cluster["transport_socket_matches"] = auto_mtls_matches(outbound_sni(port, subset, svc), sans)
    if policy and policy.proxy_protocol:
        _wrap_in_proxy_protocol(cluster, policy.proxy_protocol.version)
    return cluster


def _proxy_protocol_socket(version: str, inner: dict) -> dict:
    return {
        "name": "envoy.transport_sockets.upstream_proxy_protocol",
        "typed_config": {
            "@type": TYPE + "envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport",
            "config": {"version": version},
            "transport_socket": inner,
        },
    }


def _wrap_in_proxy_protocol(cluster: dict, version: str) -> None:
    """DestinationRule ``proxyProtocol``: each upstream connection starts with a PROXY header (v1 or
    v2), then runs the transport it had (TLS, auto-mTLS matches, or plain bytes), as Istio wraps it."""
    plain = {
        "name": "envoy.transport_sockets.raw_buffer",
        "typed_config": {"@type": TYPE + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
    }
    for match in cluster.get("transport_socket_matches", []):
        match["transport_socket"] = _proxy_protocol_socket(version, match["transport_socket"])
    if "transport_socket" in cluster or not cluster.get("transport_socket_matches"):
        cluster["transport_socket"] = _proxy_protocol_socket(version, cluster.get("transport_socket", plain))


def service_sans(svc: Service) -> list[str]:
    """SPIFFE identities of the workloads behind a service, which mesh mTLS clients verify, after a
    ServiceEntry's own subjectAltNames (as Istio's service accounts of a service)."""
    accounts = sorted({(ep.namespace, ep.service_account or "default") for eps in svc.endpoints.values() for ep in eps})
    return [*svc.subject_alt_names, *(spiffe_id(ns, sa) for ns, sa in accounts)]


def uses_auto_mtls(snapshot: MeshSnapshot, proxy: Proxy, svc: Service) -> bool:
    """Istio's auto mTLS applies: the client has certificates, the service is in the mesh, and its
    namespace (or the mesh) does not turn mTLS off. Workload-level PeerAuthentications do not count."""
    return (
        proxy.identity is not None
        and not svc.mesh_external
        and peer_auth.namespace_mode(snapshot, svc.namespace) != peer_auth.DISABLE
    )


def outbound_clusters(snapshot: MeshSnapshot, proxy: Proxy, services: list[Service]) -> list[dict]:
    out = []
    for svc in services:
        dr = snapshot.destination_rule_for(proxy, svc)
        spec: net.DestinationRuleSpec | None = dr.spec if dr else None
        sans = service_sans(svc)
        auto = uses_auto_mtls(snapshot, proxy, svc)
        for port in svc.ports:
            if port.protocol is Protocol.UDP:
                continue
            top = spec.traffic_policy.for_port(port.number) if spec and spec.traffic_policy else None
            out.append(
                build_cluster(svc, port, None, dr and sidecar_credential_scope(top, proxy, dr), sans, auto_mtls=auto)
            )
            for subset in spec.subsets if spec else ():
                merged = merge_policy(spec.traffic_policy, subset.traffic_policy, port.number)
                out.append(
                    build_cluster(
                        svc, port, subset.name, dr and sidecar_credential_scope(merged, proxy, dr), sans, auto_mtls=auto
                    )
                )
    return out


def _ingress_address(proxy: Proxy, inbound: InboundPort) -> dict | None:
    """Where the inbound cluster sends: the app (its address, the workload port), or a Sidecar ingress
    listener's ``defaultEndpoint`` (``0.0.0.0``/``[::]``: the app's address; ``127.0.0.1``/``[::1]``;
    ``unix://`` a socket); None: the original destination (an ingress listener without one, captured)."""
    target = inbound.default_endpoint
    if target is None or (target == "" and proxy.mode != "capture"):
        return socket_address(proxy.app_address, inbound.endpoint.port)
    if target == "":
        return None
    if target.startswith("unix://"):
        return {"pipe": {"path": target.removeprefix("unix://")}}
    host, _, port = target.rpartition(":")
    address = proxy.app_address if host in ("0.0.0.0", "[::]") else host.strip("[]")
    return socket_address(address, int(port))


def _inbound_pool(cluster: dict, port: Port, pool: net.ConnectionPoolSettings) -> None:
    """A Sidecar's connection pool on an inbound cluster, as Istio: limits, timeouts, keepalive and
    the HTTP connection options (the load balancer and outlier detection do not apply inbound)."""
    balancer = cluster.get("lb_policy")
    _apply_policy(cluster, net.TrafficPolicy(connection_pool=pool), port)
    if balancer is None:
        cluster.pop("lb_policy", None)
    options = cluster.get("typed_extension_protocol_options", {}).get(HTTP_OPTIONS)
    if options and "use_downstream_protocol_config" in options:  # inbound: HTTP/1.1 to the app, as before
        del options["use_downstream_protocol_config"]
        options["explicit_http_config"] = {"http_protocol_options": {}}


def inbound_cluster(proxy: Proxy, inbound: InboundPort) -> dict:
    """``inbound|9080||``: the sidecar's path to its own application (or a Sidecar ingress listener's
    defaultEndpoint)."""
    name = cluster_name("inbound", inbound.endpoint.port, None, "")
    address = _ingress_address(proxy, inbound)
    if address is None:
        cluster: dict = {
            "name": name,
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
            "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}},
        }
    else:
        cluster = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
            },
        }
    cluster["circuit_breakers"] = _circuit_breakers(None)
    if inbound.port.protocol.is_http2:
        cluster["typed_extension_protocol_options"] = {
            HTTP_OPTIONS: {"@type": TYPE + HTTP_OPTIONS, "explicit_http_config": {"http2_protocol_options": {}}}
        }
    if inbound.connection_pool:
        _inbound_pool(cluster, inbound.port, inbound.connection_pool)
    return cluster


def special_clusters(proxy: Proxy) -> list[dict]:
    clusters = [
        {
            "name": PASSTHROUGH_CLUSTER,
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
            "circuit_breakers": _circuit_breakers(None),
        },
        {"name": BLACKHOLE_CLUSTER, "type": "STATIC", "connect_timeout": DEFAULT_CONNECT_TIMEOUT},
    ]
    if proxy.kind == "sidecar" and proxy.mode == "capture":
        # From 127.0.0.6, as Istio: iptables lets that source through, so a connection to the pod's own
        # address on a port no Service names reaches the app instead of looping back into Envoy.
        clusters.append(
            {
                "name": INBOUND_PASSTHROUGH_CLUSTER,
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
                "circuit_breakers": _circuit_breakers(None),
                "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}},
            }
        )
    if proxy.kind == "sidecar" and proxy.mode == "proxy":
        clusters.append(
            {
                "name": DYNAMIC_FORWARD_PROXY_CLUSTER,
                "lb_policy": "CLUSTER_PROVIDED",
                "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
                "cluster_type": {
                    "name": "envoy.clusters.dynamic_forward_proxy",
                    "typed_config": {
                        "@type": TYPE + "envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
                        "dns_cache_config": DNS_CACHE,
                    },
                },
            }
        )
    return clusters
