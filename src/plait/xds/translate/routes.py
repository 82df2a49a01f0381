"""Routes (RDS): VirtualService HTTP routes → Envoy route configurations.

Sidecars get one route configuration per outbound HTTP port (named after the
port, ``"9080"``), whose virtual hosts carry every name a client may use for a
service; gateways get one per server port (``http.80``). A service that no
VirtualService routes gets Istio's default route.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass

from plait.api import networking as net
from plait.api.resources import Resource
from plait.model.hosts import client_names, fqdn, matches
from plait.model.proxy import Proxy
from plait.model.services import Service
from plait.model.snapshot import MESH_GATEWAY, MeshSnapshot, gateway_ref
from plait.xds.translate.clusters import merge_policy
from plait.xds.translate.common import (
    CORS_FILTER,
    DYNAMIC_FORWARD_PROXY_CLUSTER,
    FAULT_FILTER,
    PASSTHROUGH_CLUSTER,
    TYPE,
    cluster_name,
    duration,
    fraction,
    parse_cluster_name,
    string_matcher,
)
from plait.xds.translate.delegate import http_routes
from plait.xds.translate.matches import route_match
from plait.xds.translate.retries import default_retry_policy, retry_policy

_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}
_GRPC_CODES = {
    name: i
    for i, name in enumerate(
        [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ]
    )
}


@dataclass(frozen=True)
class RouteContext:
    """What a VirtualService's routes are being built for."""

    snapshot: MeshSnapshot
    proxy: Proxy
    port: int | None  # the listener port on sidecars; None on gateways
    gateway: str = MESH_GATEWAY  # "mesh" or "namespace/name"
    server_port: int | None = None  # a gateway server's port (the request's port, for redirects)
    tls: bool = False  # the gateway server terminates TLS


def _internal(name: str) -> bool:
    """Pseudo-headers and Host, which Envoy does not let header operations touch (Istio drops them)."""
    return name.startswith(":") or name.lower() == "host"


def _header_value_options(ops: net.HeaderOperations | None) -> tuple[list[dict], list[str]]:
    if ops is None:
        return [], []
    add = [
        {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for k, v in ops.set.items()
        if not _internal(k)
    ]
    add += [
        {"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
        for k, v in ops.add.items()
        if not _internal(k)
    ]
    return add, [k for k in ops.remove if not _internal(k)]


def header_authority(headers: net.Headers | None) -> str | None:
    """A request ``set`` (else ``add``) of ``:authority`` or ``host``: Istio rewrites the Host with it."""
    ops = headers.request if headers else None
    if ops is None:
        return None
    for values in (ops.set, ops.add):
        found = [v for k, v in values.items() if k.lower() in (":authority", "host")]
        if found:
            return found[-1]
    return None


def _apply_headers(target: dict, headers: net.Headers | None) -> None:
    if headers is None:
        return
    for side, ops in (("request", headers.request), ("response", headers.response)):
        add, remove = _header_value_options(ops)
        if add:
            target.setdefault(f"{side}_headers_to_add", []).extend(add)
        if remove:
            target.setdefault(f"{side}_headers_to_remove", []).extend(remove)


def _match_applies(m: net.HTTPMatchRequest | None, ctx: RouteContext, vs_namespace: str) -> bool:
    """Matches on port, gateways, source labels and source namespace are decided here, per proxy, as
    Istio's TranslateRoute: the port is the listener's (a gateway server's on gateways); a match that
    names gateways is decided by them alone, else by sourceLabels and sourceNamespace."""
    if m is None:
        return True
    port = ctx.port if ctx.port is not None else ctx.server_port
    if m.port is not None and port is not None and m.port != port:
        return False
    if m.gateways:
        return ctx.gateway in {gateway_ref(g, vs_namespace) for g in m.gateways}
    if m.source_labels and not all(ctx.proxy.labels.get(k) == v for k, v in m.source_labels.items()):
        return False
    return not m.source_namespace or m.source_namespace == ctx.proxy.namespace


def destination_cluster(dest: net.Destination, ctx: RouteContext, vs_namespace: str) -> str:
    """The cluster for a destination; the port defaults to the service's only port, else the listener's."""
    host = fqdn(dest.host, vs_namespace)
    port = dest.port.number if dest.port else None
    if port is None:
        svc = ctx.snapshot.services.get(host)
        if svc and len(svc.ports) == 1:
            port = svc.ports[0].number
        elif svc and ctx.port is not None and svc.port(ctx.port):
            port = ctx.port
        elif svc and svc.ports:
            port = next((p.number for p in svc.ports if p.protocol.is_http), svc.ports[0].number)
        else:
            port = ctx.port or 80
    return cluster_name("outbound", port, dest.subset, host)


def hash_policy(ctx: RouteContext, cluster: str) -> list[dict]:
    """Consistent-hash keys come from the destination's effective DestinationRule policy, set on the route."""
    if not ctx.snapshot.hashing_rules:
        return []
    _, port, subset, host = parse_cluster_name(cluster) or ("", 0, "", "")
    svc = ctx.snapshot.services.get(host)
    dr = ctx.snapshot.destination_rule_for(ctx.proxy, svc) if svc else None
    if dr is None:
        return []
    subset_policy = next((s.traffic_policy for s in dr.spec.subsets if s.name == subset), None)
    policy = merge_policy(dr.spec.traffic_policy, subset_policy, port)
    ch = policy.load_balancer.consistent_hash if policy and policy.load_balancer else None
    if ch is None:
        return []
    if ch.http_header_name:
        return [{"header": {"header_name": ch.http_header_name}}]
    if ch.http_cookie:
        cookie: dict = {"name": ch.http_cookie.name}
        if ch.http_cookie.path:
            cookie["path"] = ch.http_cookie.path
        if ch.http_cookie.ttl:
            cookie["ttl"] = duration(ch.http_cookie.ttl)
        if ch.http_cookie.attributes:
            cookie["attributes"] = [
                {"name": a.name, **({"value": a.value} if a.value is not None else {})}
                for a in ch.http_cookie.attributes
            ]
        return [{"cookie": cookie}]
    if ch.use_source_ip:
        return [{"connection_properties": {"source_ip": True}}]
    return [{"query_parameter": {"name": ch.http_query_parameter_name}}]


def _fault(fault: net.HTTPFaultInjection) -> dict:
    config: dict = {"@type": TYPE + "envoy.extensions.filters.http.fault.v3.HTTPFault"}
    if fault.delay:
        config["delay"] = {
            "fixed_delay": duration(fault.delay.fixed_delay),
            "percentage": fraction(fault.delay.percentage, fault.delay.percent),
        }
    if fault.abort:
        abort: dict = {"percentage": fraction(fault.abort.percentage, fault.abort.percent)}
        if fault.abort.http_status is not None:
            abort["http_status"] = fault.abort.http_status
        else:
            code = fault.abort.grpc_status or "UNKNOWN"
            abort["grpc_status"] = int(code) if code.isdigit() else _GRPC_CODES.get(code.upper(), 2)
        config["abort"] = abort
    return config


def _cors(cors: net.CorsPolicy) -> dict:
    config: dict = {"@type": TYPE + "envoy.extensions.filters.http.cors.v3.CorsPolicy"}
    origins = [string_matcher(o) for o in cors.allow_origins] + [{"exact": o} for o in cors.allow_origin]
    if origins:
        config["allow_origin_string_match"] = origins
    for field in ("allow_methods", "allow_headers", "expose_headers"):
        values = getattr(cors, field)
        if values:
            config[field] = ",".join(values)
    if cors.max_age:
        config["max_age"] = str(int(duration(cors.max_age).rstrip("s").split(".")[0]))
    if cors.allow_credentials is not None:
        config["allow_credentials"] = cors.allow_credentials
    # As Istio: preflights from origins not allowed go on to the app unless unmatchedPreflights is IGNORE.
    config["forward_not_matching_preflights"] = cors.unmatched_preflights != "IGNORE"
    return config


def _destinations(http: net.HTTPRoute, ctx: RouteContext, vs_namespace: str, action: dict) -> list[dict]:
    """One destination is the route's cluster; several are weighted clusters, weights as written
    (relative: Envoy divides by their sum), those without weight dropped, as Istio. Returns the
    hash policies of the destinations' DestinationRules."""
    if len(http.route) == 1:
        action["cluster"] = destination_cluster(http.route[0].destination, ctx, vs_namespace)
        return hash_policy(ctx, action["cluster"])
    clusters, hashes = [], []
    for d in http.route:
        if not d.weight:
            continue
        entry: dict = {"name": destination_cluster(d.destination, ctx, vs_namespace), "weight": d.weight}
        _apply_headers(entry, d.headers)
        if header_authority(d.headers):
            entry["host_rewrite_literal"] = header_authority(d.headers)
        clusters.append(entry)
        hashes += hash_policy(ctx, entry["name"])
    action["weighted_clusters"] = {"clusters": clusters}
    return hashes


def _route_action(
    http: net.HTTPRoute, ctx: RouteContext, vs_namespace: str, match: net.HTTPMatchRequest | None
) -> dict:
    action: dict = {}
    hashes = _destinations(http, ctx, vs_namespace, action)
    action["timeout"] = duration(http.timeout) if http.timeout else "0s"
    action["max_grpc_timeout"] = action["timeout"]  # as Istio: a client's grpc-timeout counts, up to the route's
    policy = retry_policy(http.retries, consistent_hash=bool(hashes) and "cluster" in action)
    if policy:
        action["retry_policy"] = policy
    if http.rewrite:
        if http.rewrite.uri is not None:
            if match and match.uri and match.uri.kind == "regex":
                action["regex_rewrite"] = {"pattern": {"regex": match.uri.value}, "substitution": http.rewrite.uri}
            else:
                action["prefix_rewrite"] = http.rewrite.uri
        if http.rewrite.uri_regex_rewrite:
            action["regex_rewrite"] = {
                "pattern": {"regex": http.rewrite.uri_regex_rewrite.match},
                "substitution": http.rewrite.uri_regex_rewrite.rewrite,
            }
    authority = (
        (http.rewrite.authority if http.rewrite else None)
        or header_authority(http.headers)
        or (header_authority(http.route[0].headers) if len(http.route) == 1 else None)
    )
    if authority:
        action["host_rewrite_literal"] = authority
    mirrors = [(m.destination, m.percentage) for m in http.mirrors]
    if http.mirror:
        legacy = net.Percent(value=http.mirror_percent) if http.mirror_percent is not None else None
        mirrors.append((http.mirror, http.mirror_percentage or legacy))
    if mirrors:
        action["request_mirror_policies"] = [
            {
                "cluster": destination_cluster(dest, ctx, vs_namespace),
                "runtime_fraction": {"default_value": fraction(pct)},
                "trace_sampled": False,
            }
            for dest, pct in mirrors
        ]
    if hashes:
        action["hash_policy"] = hashes
    return action


def _redirect_port(redirect: net.HTTPRedirect, ctx: RouteContext) -> int | None:
    """Istio: ``derivePort: FROM_REQUEST_PORT`` is the port the route serves; the scheme's default
    port is left out of Location."""
    if redirect.port is None and redirect.derive_port is None:
        return None
    port = redirect.port
    if redirect.derive_port == "FROM_REQUEST_PORT":
        port = ctx.server_port if ctx.server_port is not None else ctx.port
    scheme = redirect.scheme or ("https" if ctx.tls else "http")
    if (scheme, port) in (("http", 80), ("https", 443)):
        return None
    return port


def _redirect(redirect: net.HTTPRedirect, ctx: RouteContext) -> dict:
    out: dict = {"response_code": _REDIRECT_CODES[redirect.redirect_code]}
    if redirect.prefix_rewrite:
        out["prefix_rewrite"] = redirect.prefix_rewrite
    elif redirect.uri:
        out["path_redirect"] = redirect.uri
    if redirect.authority:
        out["host_redirect"] = redirect.authority
    port = _redirect_port(redirect, ctx)
    if port:
        out["port_redirect"] = port
    if redirect.scheme:
        out["scheme_redirect"] = redirect.scheme
    return out


def _direct_response(dr: net.HTTPDirectResponse) -> dict:
    out: dict = {"status": dr.status}
    if dr.body and dr.body.string is not None:
        out["body"] = {"inline_string": dr.body.string}
    elif dr.body and dr.body.bytes is not None:
        out["body"] = {"inline_bytes": base64.b64encode(base64.b64decode(dr.body.bytes)).decode()}
    return out


def virtual_service_routes(vs: Resource, ctx: RouteContext, vhost_name: str) -> list[dict]:
    """Envoy routes for one VirtualService: one per (http route, match), in order, delegates merged in."""
    out = []
    gateway_semantics = vs.meta.annotations.get("internal.istio.io/route-semantics") == "gateway"
    for label, http in http_routes(vs, ctx.snapshot):
        for j, m in enumerate(http.match or [None]):
            if not _match_applies(m, ctx, vs.namespace):
                continue
            route: dict = {"match": route_match(m, gateway_semantics=gateway_semantics)}
            name = ".".join(n for n in (http.name, m.name if m else None) if n)
            if name:
                route["name"] = name
            if m and m.stat_prefix:
                route["stat_prefix"] = m.stat_prefix
            if http.redirect:
                route["redirect"] = _redirect(http.redirect, ctx)
            elif http.direct_response:
                route["direct_response"] = _direct_response(http.direct_response)
            else:
                route["route"] = _route_action(http, ctx, vs.namespace, m)
            per_filter: dict = {}
            if http.fault:
                per_filter[FAULT_FILTER] = _fault(http.fault)
            if http.cors_policy:
                per_filter[CORS_FILTER] = _cors(http.cors_policy)
            if per_filter:
                route["typed_per_filter_config"] = per_filter
            _apply_headers(route, http.headers)
            if len(http.route) == 1 and "route" in route:
                _apply_headers(route, http.route[0].headers)
            route["metadata"] = {
                "filter_metadata": {
                    "istio": {"config": vs.config_path()},
                    "plait": {"route": label + (f".match[{j}]" if m else "")},
                }
            }
            route["decorator"] = {"operation": route_operation(route, vs.name, vhost_name)}
            out.append(route)
            if m is None or is_catch_all(route):
                return out  # as Istio: nothing after a catch-all can match, so nothing more is sent
    return out


def route_operation(route: dict, vs_name: str, vhost_name: str) -> str:
    """The span name of a VirtualService's route, as Istio's getRouteOperation: ``HOST:PORT`` of its one
    destination (else ``VS-NAME:PORT`` of the virtual host), then its path (an exact path, a prefix
    with ``*``, else ``/*``): ``productpage.default.svc.cluster.local:9080/productpage``."""
    match = route.get("match", {})
    prefix = match.get("prefix", match.get("path_separated_prefix"))
    path = match["path"] if "path" in match else prefix + "*" if prefix is not None else "/*"
    parsed = parse_cluster_name(route.get("route", {}).get("cluster", ""))
    if parsed and parsed[0] == "outbound":
        return f"{parsed[3]}:{parsed[1]}{path}"
    return f"{vs_name}:{vhost_name.rpartition(':')[2]}{path}"


def is_catch_all(route: dict) -> bool:
    """Istio's IsCatchAllRoute: path ``/`` (prefix or separated prefix) or regex ``.*``, and no
    header, query or metadata condition."""
    match = route.get("match", {})
    path = (
        match.get("prefix") == "/"
        or match.get("path_separated_prefix") == "/"
        or (match.get("safe_regex", {}).get("regex") == ".*")
    )
    return path and not any(match.get(k) for k in ("headers", "query_parameters", "dynamic_metadata"))


def default_route(svc: Service, port: int, ctx: RouteContext) -> dict:
    action: dict = {
        "cluster": cluster_name("outbound", port, None, svc.hostname),
        "timeout": "0s",
        "max_grpc_timeout": "0s",
        "retry_policy": default_retry_policy(),
    }
    hashes = hash_policy(ctx, action["cluster"])
    if hashes:
        action["hash_policy"] = hashes
    return {
        "name": "default",
        "match": {"prefix": "/"},
        "route": action,
        "decorator": {"operation": f"{svc.hostname}:{port}/*"},
    }


class HostIndex:
    """VirtualServices by the host they route: exact FQDNs in a dict, wildcards most specific first.
    For one host the first VirtualService by namespace/name wins, as for sidecars in Istio."""

    def __init__(self, virtual_services: list[Resource]):
        self.pairs = [(fqdn(h, vs.namespace), vs) for vs in virtual_services for h in vs.spec.hosts]
        self.exact: dict[str, Resource] = {}
        for host, vs in self.pairs:
            if not host.startswith("*"):
                self.exact.setdefault(host, vs)
        self.wild = sorted(((h, vs) for h, vs in self.pairs if h.startswith("*")), key=lambda p: -len(p[0]))

    def lookup(self, hostname: str) -> Resource | None:
        found = self.exact.get(hostname)
        if found is not None:
            return found
        return next((vs for host, vs in self.wild if matches(host, hostname)), None)


def catch_all_vhost(policy: str, explicit_proxy: bool = False) -> dict:
    if policy == "REGISTRY_ONLY":
        return {
            "name": "block_all",
            "domains": ["*"],
            "routes": [{"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}],
        }
    cluster = DYNAMIC_FORWARD_PROXY_CLUSTER if explicit_proxy else PASSTHROUGH_CLUSTER
    return {
        "name": "allow_any",
        "domains": ["*"],
        "routes": [{"name": "allow_any", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}],
    }


def service_vhost(svc: Service, port: int, ctx: RouteContext, index: HostIndex, domains: list[str]) -> dict:
    """The service's virtual host: its VirtualService's routes for this proxy, else the default route.
    As Istio, a VirtualService none of whose routes apply to the proxy (``sourceLabels``,
    ``sourceNamespace``, ``gateways``, ``port``) is set aside, so the service keeps its default route."""
    name = f"{svc.hostname}:{port}"
    vs = index.lookup(svc.hostname)
    routes = virtual_service_routes(vs, ctx, name) if vs and vs.spec.http else []
    routes = routes or [default_route(svc, port, ctx)]
    vhost: dict = {"name": name, "domains": domains, "routes": routes, "include_request_attempt_count": True}
    return vhost


def _service_domains(
    proxy: Proxy, port: int, services: list[Service]
) -> tuple[list[tuple[Service, list[str]]], set[str]]:
    """The services with an HTTP port `port`, each with the domains of its virtual host (a name an
    earlier service took is not repeated), and every domain taken."""
    served, used = [], set()
    for svc in services:
        p = svc.port(port)
        if p is None or not (p.protocol.is_http or p.protocol.value == "AUTO"):
            continue
        domains = [d for d in client_names(svc.hostname, port, proxy.namespace, svc.addresses) if d not in used]
        used.update(domains)
        served.append((svc, domains))
    return served, used


def sidecar_route_config(
    snapshot: MeshSnapshot, proxy: Proxy, port: int, services: list[Service], virtual_services: list[Resource]
) -> dict:
    """Route configuration ``"<port>"`` for a capture-mode sidecar."""
    ctx = RouteContext(snapshot, proxy, port)
    index = HostIndex(virtual_services)
    served, used = _service_domains(proxy, port, services)
    vhosts = [service_vhost(svc, port, ctx, index, domains) for svc, domains in served]
    if port == 80:
        vhosts += _vhosts_for_unregistered_hosts(snapshot, ctx, index, used)
    vhosts.append(catch_all_vhost(snapshot.outbound_policy(proxy)))
    return {"name": str(port), "virtual_hosts": vhosts, "validate_clusters": False}


def _covered(hostname: str, hosts: Collection[str]) -> bool:
    return any(matches(h, hostname) for h in hosts)


def sidecar_virtual_hosts(
    snapshot: MeshSnapshot,
    proxy: Proxy,
    port: int,
    services: list[Service],
    virtual_services: list[Resource],
    hosts: Collection[str],
) -> dict[str, dict]:
    """Of route configuration ``"<port>"`` (`sidecar_route_config`), the virtual hosts of the services
    one of `hosts` (FQDNs or wildcard patterns) covers, by name: all that a change to the
    VirtualServices of `hosts` alone can alter."""
    ctx = RouteContext(snapshot, proxy, port)
    index = HostIndex(virtual_services)
    served, _ = _service_domains(proxy, port, services)
    vhosts = [service_vhost(svc, port, ctx, index, domains) for svc, domains in served if _covered(svc.hostname, hosts)]
    return {vhost["name"]: vhost for vhost in vhosts}


def _vhosts_for_unregistered_hosts(
    snapshot: MeshSnapshot, ctx: RouteContext, index: HostIndex, used: set[str]
) -> list[dict]:
    """VirtualService hosts with no service behind them are served on port 80, as Istio does."""
    out = []
    for host, vs in index.pairs:
        if host in snapshot.services or host.startswith("*") or not vs.spec.http or host in used:
            continue
        routes = virtual_service_routes(vs, ctx, f"{host}:80")
        if not routes:  # none applies to this proxy: Istio leaves the host to the catch-all
            continue
        used.update({host, f"{host}:80"})
        out.append(
            {
                "name": f"{host}:80",
                "domains": [host, f"{host}:80"],
                "routes": routes,
                "include_request_attempt_count": True,
            }
        )
    return out


def _explicit_domains(proxy: Proxy, services: list[Service]) -> list[tuple[Service, int, list[str]]]:
    """Each HTTP port of each service with the domains of its virtual host on the HTTP_PROXY listener
    (``host:port``, the bare host for port 80; a name an earlier one took is not repeated)."""
    served, used = [], set()
    for svc in services:
        for p in svc.ports:
            if not (p.protocol.is_http or p.protocol.value == "AUTO"):
                continue
            names = client_names(svc.hostname, p.number, proxy.namespace, svc.addresses)
            domains = [d for d in names if (d.endswith(f":{p.number}") or p.number == 80) and d not in used]
            used.update(domains)
            served.append((svc, p.number, domains))
    return served


def explicit_proxy_route_config(
    snapshot: MeshSnapshot, proxy: Proxy, services: list[Service], virtual_services: list[Resource]
) -> dict:
    """One route configuration for the HTTP_PROXY listener: services on every port, told apart by Host."""
    index = HostIndex(virtual_services)
    served = _explicit_domains(proxy, services)
    vhosts = [service_vhost(svc, port, RouteContext(snapshot, proxy, port), index, ds) for svc, port, ds in served]
    used = {d for _, _, domains in served for d in domains}
    vhosts += _vhosts_for_unregistered_hosts(snapshot, RouteContext(snapshot, proxy, 80), index, used)
    vhosts.append(catch_all_vhost(snapshot.outbound_policy(proxy), explicit_proxy=True))
    return {"name": "explicit_proxy", "virtual_hosts": vhosts, "validate_clusters": False}


def explicit_proxy_virtual_hosts(
    snapshot: MeshSnapshot,
    proxy: Proxy,
    services: list[Service],
    virtual_services: list[Resource],
    hosts: Collection[str],
) -> dict[str, dict]:
    """Of `explicit_proxy_route_config`, the virtual hosts of the services `hosts` cover, by name (see
    `sidecar_virtual_hosts`)."""
    index = HostIndex(virtual_services)
    vhosts = [
        service_vhost(svc, port, RouteContext(snapshot, proxy, port), index, domains)
        for svc, port, domains in _explicit_domains(proxy, services)
        if _covered(svc.hostname, hosts)
    ]
    return {vhost["name"]: vhost for vhost in vhosts}


def inbound_route_config(cluster: str, port: int) -> dict:
    return {
        "name": cluster,
        "validate_clusters": False,
        "virtual_hosts": [
            {
                "name": f"inbound|http|{port}",
                "domains": ["*"],
                "routes": [
                    {
                        "name": "default",
                        "match": {"prefix": "/"},
                        "route": {
                            "cluster": cluster,
                            "timeout": "0s",
                            "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"},
                        },
                        "decorator": {"operation": f"inbound|{port}/*"},
                    }
                ],
            }
        ],
    }


def _gateway_domains(vs_host: str, server_host: str) -> str | None:
    """The narrower of a VirtualService host and a Gateway server host, if they overlap."""
    if matches(server_host, vs_host):
        return vs_host
    if matches(vs_host, server_host):
        return server_host
    return None


def _server_host_applies(entry: str, gateway_ns: str, vs_ns: str) -> str | None:
    """``ns/host`` filters VirtualServices by namespace (``.`` = the Gateway's, ``*`` = any)."""
    ns, _, host = entry.rpartition("/")
    if ns in ("", "*") or (ns == "." and vs_ns == gateway_ns) or ns == vs_ns:
        return host
    return None


def gateway_route_config(
    snapshot: MeshSnapshot, proxy: Proxy, name: str, servers: list[tuple[Resource, net.Server]]
) -> dict:
    """Route configuration for the HTTP(S) servers that share one gateway port."""
    vhosts: dict[str, dict] = {}

    def vhost_for(domain: str, port: int) -> dict:
        return vhosts.setdefault(
            domain,
            {
                "name": f"{domain}:{port}",
                "domains": [domain] if domain == "*" else [domain, f"{domain}:*"],
                "routes": [],
                "include_request_attempt_count": True,
            },
        )

    for gw, server in servers:
        ref = f"{gw.namespace}/{gw.name}"
        ctx = RouteContext(
            snapshot, proxy, None, gateway=ref, server_port=server.port.number, tls=server.tls is not None
        )  # as Istio's IsTLS
        if server.tls and server.tls.https_redirect:
            for entry in server.hosts:
                vhost_for(entry.rpartition("/")[2], server.port.number)["require_tls"] = "ALL"
        for vs in snapshot.virtual_services_for(proxy, gateway=ref):
            if not vs.spec.http:
                continue
            for vs_host in vs.spec.hosts:
                for entry in server.hosts:
                    host = _server_host_applies(entry, gw.namespace, vs.namespace)
                    domain = _gateway_domains(vs_host, host) if host else None
                    if domain is None:
                        continue
                    vhost = vhost_for(domain, server.port.number)
                    if not any(
                        r.get("metadata", {}).get("filter_metadata", {}).get("istio", {}).get("config")
                        == vs.config_path()
                        for r in vhost["routes"]
                    ):
                        vhost["routes"] += virtual_service_routes(vs, ctx, vhost["name"])
    for vhost in vhosts.values():
        # As Istio's SortVHostRoutes: catch-alls go last, so another VirtualService's routes stay reachable.
        vhost["routes"] = [r for r in vhost["routes"] if not is_catch_all(r)] + [
            r for r in vhost["routes"] if is_catch_all(r)
        ]
        if not vhost["routes"] and vhost.get("require_tls"):
            vhost["routes"] = [{"match": {"prefix": "/"}, "direct_response": {"status": 404}}]
    return {
        "name": name,
        "virtual_hosts": sorted(vhosts.values(), key=lambda v: (v["domains"][0] == "*", v["name"])),
        "validate_clusters": False,
    }
