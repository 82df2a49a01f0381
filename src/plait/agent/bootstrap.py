"""The Envoy bootstrap for one proxy: who it is and where its control plane lives.

Pure: `build_bootstrap(settings)` turns a `BootstrapSettings` into the dict Envoy
reads with ``-c``. It follows Istio's ``envoy_bootstrap.json``:

* ``node``: Istio's id (``sidecar~IP~NAME.NS~NS.svc.cluster.local`` or
  ``router~…``), ``cluster`` = Istio's service cluster ``CANONICAL-SERVICE.NS``
  (``reviews.default``: the service name in its trace spans), and the metadata keys the control
  plane reads to rebuild the `plait.model.Proxy` (`node_metadata`);
* ``admin`` on 127.0.0.1 at the admin port;
* ``dynamic_resources``: everything over one ADS stream (SotW ``GRPC`` or
  ``DELTA_GRPC``) to the ``xds-grpc`` cluster, CDS and LDS through it, waiting
  for them without a fetch timeout (so Envoy is not ready before its first
  config);
* static clusters ``xds-grpc`` (HTTP/2 to the control plane, STATIC for an IP,
  STRICT_DNS for a name, TCP keepalive) and ``sds-grpc`` (HTTP/2 on the unix
  socket where the agent serves the ``default`` and ``ROOTCA`` secrets,
  `plait.agent.sds`; declared even without certificates, so that ISTIO_MUTUAL
  configuration is valid);
* Istio's runtime defaults, connection limit and stats tags; a runtime layer the control plane
  feeds over RTDS on the ADS stream's connection (`plait.telemetry.tap`: ``plait.tap``, on while
  someone taps this proxy);
* with a ``prometheus_port`` (Istio's 15090), a static listener serving ``/stats/prometheus`` from
  the admin API with Istio's metric names (`plait.telemetry.prometheus`), on all addresses in
  capture mode (the pod's own network) and on the proxy's address otherwise (many proxies share
  the host's).

A proxy with an identity (its agent has a token and serves certificates) also
has ``PLAIT_IDENTITY`` in its metadata, the label
``security.istio.io/tlsMode: istio`` if it is a sidecar (mesh clients then use
mTLS to it, as Istio's injector labels pods; gateways are called in
plaintext), and its ADS stream carries ``authorization: Bearer TOKEN``
(``initial_metadata``), which the control plane checks on its TLS port and with
``--xds-auth strict``. With ``xds_tls`` (the agent talks to the control plane's
TLS port, istiod's 15012) ``xds-grpc`` is TLS: SNI and DNS SAN
``istiod.istio-system.svc``, verified against the ``ROOTCA`` the agent serves
over SDS, ALPN h2; the token then never crosses the network in clear.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from plait import __version__
from plait.model import Proxy
from plait.model.proxy import TLS_MODE_LABEL
from plait.telemetry import tap
from plait.telemetry.metrics import proxy_identity
from plait.telemetry.prometheus import prometheus_cluster, prometheus_listener
from plait.xds.static import XDS_CLUSTER
from plait.xds.translate.common import SDS_CLUSTER, sds_secret

AgentMode = Literal["capture", "proxy", "gateway"]
XdsFlavour = Literal["sotw", "delta"]
ADS_PORT = 15010
DEFAULT_CONTROL_PLANE = f"127.0.0.1:{ADS_PORT}"
CONTROL_PLANE_NAME = "istiod.istio-system.svc"  # the name the control plane's TLS certificate carries

HTTP2_ONLY = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}
ADS_SOURCE = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
# Istio's runtime defaults (extractRuntimeFlags): big regexes allowed. Istio also sets
# overload.global_downstream_max_connections = 2147483647 here; Envoy 1.40 deprecates that key and
# warns on every start, so the same limit is set through the overload manager instead.
RUNTIME_DEFAULTS = {"re2.max_program_size.error_level": "32768"}
MAX_DOWNSTREAM_CONNECTIONS = 2147483647
OVERLOAD_MANAGER = {
    "resource_monitors": [
        {
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                "DownstreamConnectionsConfig",
                "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
            },
        }
    ]
}
# Istio's stats tags, so that per-cluster and per-listener stats carry the names dashboards expect.
STATS_TAGS = [
    {"tag_name": "cluster_name", "regex": r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"},
    {"tag_name": "tcp_prefix", "regex": r"^tcp\.((.*?)\.)\w+?$"},
    {"tag_name": "response_code", "regex": r"_rq(_(\d{3}))$"},
    {"tag_name": "response_code_class", "regex": r"_rq(_(\dxx))$"},
    {
        "tag_name": "http_conn_manager_listener_prefix",
        "regex": r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
    },
    {"tag_name": "http_conn_manager_prefix", "regex": r"^http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"},
    {"tag_name": "listener_address", "regex": r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"},
]


@dataclass(frozen=True)
class BootstrapSettings:
    """What the bootstrap depends on: the proxy's identity and where to find the control plane."""

    proxy: Proxy
    control_plane: str = DEFAULT_CONTROL_PLANE  # see parse_control_plane
    admin_port: int = 15000
    xds: XdsFlavour = "delta"
    sds_socket: str = "/tmp/plait-sds.sock"
    token: str | None = None  # the pod's token, sent on the ADS stream
    xds_tls: bool = False  # TLS to the control plane, verified against the ROOTCA secret (needs an identity)
    prometheus_port: int | None = None  # Istio's 15090: Envoy serves /stats/prometheus there
    own_values: Mapping[str, str] = field(default_factory=dict)  # its metrics' own labels (`metrics.own_values`)


def proxy_for_mode(
    mode: AgentMode,
    *,
    name: str,
    namespace: str,
    ip: str,
    labels: dict[str, str] | None = None,
    service_account: str = "default",
    app_address: str = "127.0.0.1",
    identity: str | None = None,
) -> Proxy:
    """The `Proxy` an agent stands for: a capture or explicit-proxy sidecar, or a gateway (``router``).
    A sidecar with an `identity` (SPIFFE id) is labelled ``security.istio.io/tlsMode: istio``."""
    if mode not in ("capture", "proxy", "gateway"):
        raise ValueError(f"mode must be capture, proxy or gateway, not {mode!r}")
    kind = "router" if mode == "gateway" else "sidecar"
    labels = dict(labels or {})
    if identity and kind == "sidecar":
        labels[TLS_MODE_LABEL] = "istio"
    return Proxy(
        kind=kind,
        ip=ip,
        name=name,
        namespace=namespace,
        labels=labels,
        mode="capture" if mode == "capture" else "proxy",
        service_account=service_account,
        app_address=app_address,
        identity=identity,
    )


def node_metadata(proxy: Proxy, admin_port: int = 15000) -> dict:
    """``node.metadata`` with Istio's key names; the control plane rebuilds the Proxy from them.
    ``ADMIN_ADDRESS`` tells `plait proxy-config` where this Envoy's admin API is; ``PLAIT_IDENTITY``
    (only when the agent serves certificates) is the SPIFFE id of those certificates."""
    metadata = {
        "NAMESPACE": proxy.namespace,
        "LABELS": dict(proxy.labels),
        "SERVICE_ACCOUNT": proxy.service_account,
        "WORKLOAD_NAME": proxy.name,
        "INTERCEPTION_MODE": "REDIRECT" if proxy.mode == "capture" else "NONE",
        "PLAIT_MODE": proxy.mode,
        "ISTIO_VERSION": __version__,
        "APP_ADDRESS": proxy.app_address,
        "ADMIN_ADDRESS": f"127.0.0.1:{admin_port}",
    }
    if proxy.identity:
        metadata["PLAIT_IDENTITY"] = proxy.identity
    return metadata


def parse_control_plane(text: str) -> tuple[str, int]:
    """The ADS address from ``HOST:PORT``, ``[V6]:PORT``, a bare ``HOST`` (port 15010), or the URL of
    the control plane's HTTP API (its host, port 15010) as the CLI's ``PLAIT_CONTROL_PLANE`` may hold.
    Raises ValueError naming the forms it accepts."""
    if "://" in text:
        host, port = urlsplit(text).hostname or "", str(ADS_PORT)
    elif is_ip(text.strip("[]")) or ":" not in text:
        host, port = text.strip("[]"), str(ADS_PORT)
    else:
        host, _, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, HOST or an http:// URL (e.g. 127.0.0.1:15010), got {text!r}")
    return host, int(port)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _endpoint(cluster: str, address: dict) -> dict:
    return {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]}


def xds_cluster(control_plane: str, tls: bool = False) -> dict:
    """HTTP/2 to the control plane; a name is resolved (IPv4 first) and re-resolved as DNS changes.
    With `tls`, the control plane's certificate must chain to ROOTCA and name CONTROL_PLANE_NAME."""
    host, port = parse_control_plane(control_plane)
    cluster = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": _endpoint(XDS_CLUSTER, {"socket_address": {"address": host, "port_value": port}}),
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
        "typed_extension_protocol_options": HTTP2_ONLY,
    }
    if not is_ip(host):
        cluster.update(dns_lookup_family="V4_PREFERRED", respect_dns_ttl=True)
    if tls:
        cluster["transport_socket"] = control_plane_tls()
    return cluster


def control_plane_tls() -> dict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": CONTROL_PLANE_NAME,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": CONTROL_PLANE_NAME}}]
                    },
                    "validation_context_sds_secret_config": sds_secret("ROOTCA"),
                },
            },
        },
    }


def sds_cluster(socket_path: str) -> dict:
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": _endpoint(SDS_CLUSTER, {"pipe": {"path": socket_path}}),
        "typed_extension_protocol_options": HTTP2_ONLY,
    }


def ads_config(xds: XdsFlavour, token: str | None = None) -> dict:
    """One ADS stream to ``xds-grpc``; with a `token`, gRPC metadata ``authorization: Bearer TOKEN``."""
    if xds not in ("sotw", "delta"):
        raise ValueError(f"xds must be sotw or delta, not {xds!r}")
    # Reconnect quickly after a control-plane restart (Envoy's default backoff grows to 30 s).
    service: dict = {
        "envoy_grpc": {
            "cluster_name": XDS_CLUSTER,
            "retry_policy": {"retry_back_off": {"base_interval": "0.2s", "max_interval": "5s"}},
        }
    }
    if token:
        service["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {token}"}]
    return {
        "api_type": "DELTA_GRPC" if xds == "delta" else "GRPC",
        "transport_api_version": "V3",
        "set_node_on_first_message_only": True,
        "grpc_services": [service],
    }


def _static_resources(settings: BootstrapSettings) -> dict:
    clusters = [xds_cluster(settings.control_plane, settings.xds_tls), sds_cluster(settings.sds_socket)]
    if settings.prometheus_port is None:
        return {"clusters": clusters}
    address = "0.0.0.0" if settings.proxy.mode == "capture" else settings.proxy.ip
    return {
        "clusters": [*clusters, prometheus_cluster(settings.admin_port)],
        "listeners": [prometheus_listener(address, settings.prometheus_port, settings.own_values)],
    }


def build_bootstrap(settings: BootstrapSettings) -> dict:
    proxy = settings.proxy
    ads = ads_config(settings.xds, settings.token)
    return {
        "node": {
            "id": proxy.id,
            "cluster": f"{proxy_identity(proxy)['canonical_service']}.{proxy.namespace}",
            "metadata": node_metadata(proxy, settings.admin_port),
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": settings.admin_port}}},
        "dynamic_resources": {
            "ads_config": ads,
            "cds_config": ADS_SOURCE,
            "lds_config": ADS_SOURCE,
        },
        "static_resources": _static_resources(settings),
        "layered_runtime": {
            "layers": [
                {"name": "global config", "static_layer": RUNTIME_DEFAULTS},
                tap.rtds_layer(ads["grpc_services"][0]),  # plait.tap, on while someone taps this proxy
                {"name": "admin", "admin_layer": {}},
            ]
        },
        "overload_manager": OVERLOAD_MANAGER,
        "stats_config": {"use_all_default_tags": False, "stats_tags": STATS_TAGS},
    }
