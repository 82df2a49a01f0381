"""The walk through one proxy: listener, filter chain, connection manager, route, action.

`simulate` finds the listener and filter chain, then follows the chain's network filter: a
TCP proxy ends the walk at its clusters; an HTTP connection manager gets its route
configuration (RDS or inline), prepares the request (``normalize_path``, Host port stripping),
picks the virtual host and the first matching route, and carries out the route's action:
``cluster``/``weighted_clusters`` (with policies and rewrites), ``redirect`` (the Location is
rebuilt) or ``direct_response``.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import replace

from plait.model.proxy import Proxy
from plait.telemetry.metrics import is_peer_identity_filter
from plait.xds.resources import ResourceSet
from plait.xds.simulate.authz import JWT_FILTER, check_http, check_tcp, has_authz, remote_ip
from plait.xds.simulate.clusters import cluster_targets, settle
from plait.xds.simulate.jwt import routing_metadata
from plait.xds.simulate.listeners import (
    captured_listener,
    explicit_listener,
    gateway_listener,
    inspect_connection,
    select_filter_chain,
    unmodelled_chain_choice,
)
from plait.xds.simulate.outcome import Outcome
from plait.xds.simulate.policies import header_changes, rewrite, rewritten_path, route_policies
from plait.xds.simulate.rbac import Peer, metadata_matches
from plait.xds.simulate.request import Connection, Request, Resolver, normalize_path, strip_port
from plait.xds.simulate.routes import (
    describe_match,
    find_virtual_host,
    route_mismatch,
    unmodelled_matchers,
    virtual_service_of,
)

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
_REDIRECT_CODES = {
    "MOVED_PERMANENTLY": 301,
    "FOUND": 302,
    "SEE_OTHER": 303,
    "TEMPORARY_REDIRECT": 307,
    "PERMANENT_REDIRECT": 308,
}


def _filter(chain: dict, name: str) -> dict | None:
    return next((f.get("typed_config", {}) for f in chain.get("filters", []) if f.get("name") == name), None)


def _route_label(index: int, route: dict) -> str:
    vs, where = virtual_service_of(route)
    label = f"#{index}"
    if route.get("name"):
        label += f" {route['name']}"
    return label + (f" ({vs} {where})" if vs else "")


def _redirect(spec: dict, match: dict, request: Request, out: Outcome) -> Outcome:
    """Envoy answers itself with a redirect; Location is rebuilt from the request and the rule
    (a new scheme drops the request's port when it was the old scheme's default)."""
    scheme = spec.get("scheme_redirect") or ("https" if spec.get("https_redirect") else request.scheme)
    host = spec.get("host_redirect") or request.authority  # a new host drops the request's port
    default_port = {"http": ":80", "https": ":443"}[request.scheme]
    if spec.get("port_redirect"):
        host = f"{strip_port(host)}:{spec['port_redirect']}"
    elif scheme != request.scheme and host.endswith(default_port):
        host = strip_port(host)
    path = spec.get("path_redirect") or rewritten_path(spec, match, request)
    query = "" if spec.get("strip_query") or "?" in path or not request.query else f"?{request.query}"
    out.action, out.status = "redirect", _REDIRECT_CODES.get(spec.get("response_code", "MOVED_PERMANENTLY"), 301)
    out.location = f"{scheme}://{host}{path}{query}"
    return out


def _direct_response(spec: dict, out: Outcome) -> Outcome:
    body = spec.get("body", {})
    out.action, out.status = "direct_response", int(spec.get("status", 200))
    if "inline_string" in body:
        out.body = body["inline_string"]
    elif "inline_bytes" in body:
        out.body = base64.b64decode(body["inline_bytes"]).decode("utf-8", "replace")
    return out


def _route_clusters(action: dict, request: Request, out: Outcome) -> list[tuple[str, int | None, list[str]]]:
    if "weighted_clusters" in action:
        out.action = "weighted_clusters"
        return [
            (
                c.get("name", ""),
                int(c.get("weight", 0)),
                [f"{side} {change}" for side in ("request", "response") for change in header_changes(c, side)],
            )
            for c in action["weighted_clusters"].get("clusters", [])
        ]
    out.action = "cluster"
    if "cluster_header" in action:
        name = request.header(action["cluster_header"].lower()) or ""
        out.notes.append(f"the cluster is named by the request's {action['cluster_header']} header")
        return [(name, None, [])]
    return [(action.get("cluster", ""), None, [])]


def _follow_route(
    index: int,
    route: dict,
    vhost: dict,
    route_config: dict,
    hcm: dict,
    request: Request,
    out: Outcome,
    resources: ResourceSet,
    conn: Connection,
) -> Outcome:
    out.route, out.route_index = route.get("name") or f"#{index}", index
    out.virtual_service, out.vs_route = virtual_service_of(route)
    owner = (
        f"VirtualService {out.virtual_service} {out.vs_route}"
        if out.virtual_service
        else ("Istio's default route (no VirtualService)" if route.get("name") == "default" else "")
    )
    conditions = describe_match(route.get("match", {}))
    name = f"#{index}" + (f" {route['name']}" if route.get("name") else "")
    out.step("route", name, "; ".join(filter(None, [owner, f"matches {conditions}"])))
    match = route.get("match", {})
    if "redirect" in route:
        return _redirect(route["redirect"], match, request, out)
    if "direct_response" in route:
        return _direct_response(route["direct_response"], out)
    action = route.get("route")
    if action is None:
        return out.not_modelled(f"the route's action ({', '.join(route)}) is not one plait follows")
    out.policies, notes = route_policies(route, vhost, route_config, action, hcm, request)
    out.notes += notes
    rewrite(action, match, request, out)
    out.clusters = cluster_targets(_route_clusters(action, request, out), resources, conn, request)
    return settle(out, http=True)


def _route_config(hcm: dict, resources: ResourceSet) -> tuple[dict | None, str, str]:
    if "rds" in hcm:
        name = hcm["rds"].get("route_config_name", "")
        return resources.routes.get(name), name, f"RDS {name!r}"
    inline = hcm.get("route_config") or {}
    return inline, inline.get("name", "inline"), "inline route_config"


def _prepare(hcm: dict, request: Request, conn: Connection, out: Outcome) -> Request:
    """What the connection manager does before routing: path normalization, Host port stripping."""
    if hcm.get("normalize_path") and normalize_path(request.path) != request.path:
        out.notes.append(f"normalize_path: {request.path} is routed as {normalize_path(request.path)}")
        request = replace(request, path=normalize_path(request.path))
    authority = request.authority
    strip = hcm.get("strip_any_host_port") or (
        hcm.get("strip_matching_host_port") and authority.endswith(f":{conn.dest_port}")
    )
    if strip and strip_port(authority) != authority:
        kept = tuple((k, v) for k, v in request.headers if k not in ("host", ":authority"))
        request = replace(request, headers=kept + (("host", strip_port(authority)),))
    return request


def _authorize_http(
    hcm: dict, request: Request, conn: Connection, out: Outcome, now: float | None
) -> tuple[bool, dict]:
    """The connection manager's own jwt_authn and RBAC filters (a gateway's: a sidecar's outbound HCM has
    none); False when Envoy answers 401/403. With it, the dynamic metadata route matching sees."""
    filters = hcm.get("http_filters", [])
    if not has_authz(filters):
        return True, {}
    peer = Peer(
        dest_port=conn.dest_port,
        source_ip=conn.source_ip,
        remote_ip=remote_ip(hcm, request, conn.source_ip),
        dest_ip=conn.dest_ip,
        sni=conn.server_name,
        request=request,
    )
    auth = check_http(
        filters, peer, now, proxy=out.proxy, where=f"{out.listener}, filter chain {out.filter_chain}", role="gateway"
    )
    out.authorization.append(auth)
    if auth.status:
        out.fail(auth.status, None, auth.summary)
        return False, {}
    jwt_config = next((f.get("typed_config", {}) for f in filters if f.get("name") == JWT_FILTER), {})
    seen = routing_metadata(jwt_config, auth.jwt) if auth.jwt else {}
    return True, {JWT_FILTER: seen} if seen else {}


# HTTP filters whose effect the simulator knows: it evaluates RBAC and jwt_authn, follows fault
# injection and CORS in the route's policies; gRPC-Web, buffering and the router leave routing alone;
# on_demand only fetches a route's cluster the proxy does not hold yet (automatic scoping), and the
# simulator is given every cluster translation made, so it changes nothing here.
MODELLED_HTTP_FILTERS = frozenset(
    "type.googleapis.com/" + name
    for name in (
        "envoy.extensions.filters.http.fault.v3.HTTPFault",
        "envoy.extensions.filters.http.cors.v3.Cors",
        "envoy.extensions.filters.http.rbac.v3.RBAC",
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
        "envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
        "envoy.extensions.filters.http.buffer.v3.Buffer",
        "envoy.extensions.filters.http.on_demand.v3.OnDemand",
        "envoy.extensions.filters.http.router.v3.Router",
    )
)


def unmodelled_http_filters(hcm: dict) -> list[str]:
    """The connection manager's HTTP filters the simulator does not know (e.g. Lua or rate limiting
    added by an EnvoyFilter): what they do to a request is not modelled, so it must not guess. The
    telemetry filter that stamps the client's identity (``x-plait-peer``) is known: it runs after
    the fault filter has fixed the route, so it never changes routing."""

    def types(f: dict) -> list[str]:  # its typed config, or what an extension config (ECDS) may hold
        return f.get("config_discovery", {}).get("type_urls") or [f.get("typed_config", {}).get("@type")]

    return [
        f.get("name", "?")
        for f in hcm.get("http_filters", [])
        if not all(t in MODELLED_HTTP_FILTERS for t in types(f)) and not is_peer_identity_filter(f)
    ]


def _follow_http(
    hcm: dict, chain: dict, request: Request, conn: Connection, out: Outcome, resources: ResourceSet, now: float | None
) -> Outcome:
    tls_chain = "transport_socket" in chain
    if (request.scheme == "https") != tls_chain and request.method != "CONNECT":
        what = "TLS to a plain-HTTP" if not tls_chain else "plain HTTP to a TLS-terminating"
        return out.fail(None, None, f"the client sends {what} connection manager: the request fails")
    route_config, name, source = _route_config(hcm, resources)
    out.route_config = name
    if route_config is None:
        return out.fail(None, None, f"route configuration {name!r} was never sent: Envoy does not serve the listener")
    out.step("route config", name, f"HTTP connection manager, {source}")
    unknown_filters = unmodelled_http_filters(hcm)
    if unknown_filters:
        return out.not_modelled(
            f"the connection manager runs HTTP filters plait does not simulate: {', '.join(unknown_filters)}"
        )
    request = _prepare(hcm, request, conn, out)
    allowed, metadata = _authorize_http(hcm, request, conn, out, now)
    if not allowed:
        return out
    peer = Peer(dest_port=conn.dest_port, metadata=metadata)
    vhost, why = find_virtual_host(route_config, request.authority)
    if vhost is None:
        return out.fail(404, "NR", why)
    out.virtual_host = vhost.get("name", "")
    out.step("virtual host", out.virtual_host, f"Host {request.authority!r} → {why}")
    if vhost.get("require_tls") in ("ALL", "EXTERNAL_ONLY") and not tls_chain:
        out.status, out.action = 301, "redirect"
        out.location = f"https://{strip_port(request.authority)}{request.path}"
        out.notes.append("the virtual host requires TLS: Envoy redirects to https")
        return out
    for index, route in enumerate(vhost.get("routes", [])):
        unknown = unmodelled_matchers(route.get("match", {}))
        if unknown:
            return out.not_modelled(
                f"route {_route_label(index, route)} of virtual host {out.virtual_host} "
                f"matches on {', '.join(unknown)}, which plait does not evaluate"
            )
        reason = route_mismatch(route.get("match", {}), request, functools.partial(metadata_matches, peer=peer))
        if reason is None:
            return _follow_route(index, route, vhost, route_config, hcm, request, out, resources, conn)
        out.skipped_routes.append(f"{_route_label(index, route)}: {reason}")
    count = len(vhost.get("routes", []))
    return out.fail(404, "NR", f"none of the {count} route(s) of virtual host {out.virtual_host} matches")


def _follow_tcp(tcp: dict, request: Request, conn: Connection, out: Outcome, resources: ResourceSet) -> Outcome:
    out.protocol, out.action = "tcp", "tcp_proxy"
    weighted = tcp.get("weighted_clusters", {}).get("clusters")
    entries: list[tuple[str, int | None, list[str]]] = [(tcp.get("cluster", ""), None, [])]
    if weighted:
        entries = [(c["name"], int(c.get("weight", 0)), []) for c in weighted]
    out.step("tcp proxy", ", ".join(name for name, _, _ in entries), "the bytes are proxied as TCP: no HTTP routing")
    out.clusters = cluster_targets(entries, resources, conn, request)
    return settle(out, http=False)


def _authorize_tcp(chain: dict, conn: Connection, out: Outcome) -> bool:
    """A TCP chain's network RBAC filters (a gateway's); False when they close the connection."""
    filters = chain.get("filters", [])
    if not has_authz(filters):
        return True
    peer = Peer(
        dest_port=conn.dest_port,
        source_ip=conn.source_ip,
        remote_ip=conn.source_ip,
        dest_ip=conn.dest_ip,
        sni=conn.server_name,
    )
    auth = check_tcp(
        filters, peer, proxy=out.proxy, where=f"{out.listener}, filter chain {out.filter_chain}", role="gateway"
    )
    out.authorization.append(auth)
    if auth.refused:
        out.protocol, out.refused = "tcp", True
        out.fail(None, None, auth.summary)
        return False
    return True


def _follow_chain(
    chain: dict, request: Request, conn: Connection, out: Outcome, resources: ResourceSet, now: float | None
) -> Outcome:
    hcm = _filter(chain, HCM)
    if hcm is not None:
        return _follow_http(hcm, chain, request, conn, out, resources, now)
    tcp = _filter(chain, TCP_PROXY)
    if tcp is not None:
        if not _authorize_tcp(chain, conn, out):
            return out
        return _follow_tcp(tcp, request, conn, out, resources)
    names = ", ".join(f.get("name", "?") for f in chain.get("filters", []))
    return out.not_modelled(f"the filter chain runs {names or 'no filters'}, which plait does not follow")


def simulate(
    resources: ResourceSet,
    proxy: Proxy,
    request: Request,
    resolve: Resolver | None = None,
    *,
    now: float | None = None,
    source_ip: str | None = None,
) -> Outcome:
    """Where `request`, sent by the application behind `proxy` (or to the gateway `proxy`), ends up.
    `now` (epoch seconds) lets JWT expiry be checked; `source_ip` is the outside client of a gateway."""
    mode = "gateway" if proxy.kind == "router" else f"sidecar, {proxy.mode} mode"
    out = Outcome(request=request, proxy=proxy.id, mode=mode)
    if proxy.kind == "router":
        found = gateway_listener(resources, proxy, request, out)
    elif proxy.mode == "proxy":
        if request.scheme == "https":
            out.notes.append("an https:// URL through HTTP_PROXY is a CONNECT request for host:port")
            request = replace(request, method="CONNECT", path="", query="", explicit_port=True)
        found = explicit_listener(resources, proxy, request, out)
    else:
        found = captured_listener(resources, proxy, request, out, resolve)
    if found is None:
        return out
    listener, conn = found
    if proxy.kind == "router" and source_ip:
        conn = replace(conn, source_ip=source_ip)
    out.listener = listener.get("name")
    conn = inspect_connection(listener, conn, request)
    unknown = unmodelled_chain_choice(listener, conn)
    if unknown:
        return out.not_modelled(f"{out.listener}: {unknown}")
    chosen = select_filter_chain(listener, conn)
    if chosen is None:
        return out.fail(
            None,
            None,
            f"no filter chain of {out.listener} matches and it has no default chain: Envoy closes the connection",
        )
    out.filter_chain, chain, reasons = chosen
    out.step("filter chain", out.filter_chain, "; ".join(reasons))
    return _follow_chain(chain, request, conn, out, resources, now)
