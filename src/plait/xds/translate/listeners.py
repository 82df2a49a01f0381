"""Listeners (LDS) for sidecars (capture and explicit-proxy mode) and gateways.

Capture mode follows Istio: iptables sends outbound traffic to ``virtualOutbound``
(15001), which hands each connection to the listener for its original
destination (``0.0.0.0_9080`` for HTTP ports, ``<vip>_<port>`` for TCP/TLS), or
passes it through; inbound traffic arrives at ``virtualInbound`` (15006).
Explicit-proxy mode has no capture: apps send HTTP to the sidecar as their
HTTP_PROXY, and peers reach the workload's inbound listeners directly.

Inbound chains of a proxy with a mesh identity follow the PeerAuthentication
mode of each workload port (`plait.model.peer_auth`), with Istio's filter chain
matches: PERMISSIVE takes mTLS (tls_inspector: transport ``tls`` and an Istio
ALPN) and plaintext (``raw_buffer``); STRICT takes only TLS, and a plaintext
connection to the port lands on a chain that refuses it (tcp_proxy to
BlackHoleCluster, stat prefix ``inbound|PORT|strict-mtls-refused-plaintext``)
instead of the passthrough chains; DISABLE is plaintext as before. Ports no
service declares take ``virtualInbound``'s passthrough chains (to the address
dialled, as a port of unknown protocol under the workload's mode). Every
inbound HCM, passthrough ones included, gets `rbac.inbound_http_filters` first,
every inbound TCP chain `rbac.inbound_network_filters` before tcp_proxy.
"""

from __future__ import annotations

from plait.api import networking as net
from plait.api.resources import Resource
from plait.model import peer_auth
from plait.model.hosts import fqdn, matches
from plait.model.protocol import Protocol
from plait.model.protocol import parse as parse_protocol
from plait.model.proxy import EXPLICIT_PROXY_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT, Proxy
from plait.model.services import Port, Service
from plait.model.snapshot import InboundPort, MeshSnapshot, gateway_ref
from plait.xds.translate import rbac
from plait.xds.translate.common import (
    BLACKHOLE_CLUSTER,
    INBOUND_PASSTHROUGH_CLUSTER,
    LISTENER_FILTERS,
    PASSTHROUGH_CLUSTER,
    REGISTRY_ONLY,
    cluster_name,
    http_connection_manager,
    socket_address,
    tcp_proxy,
)
from plait.xds.translate.routes import RouteContext, destination_cluster, inbound_route_config
from plait.xds.translate.tls import ALL_MTLS_ALPNS, ISTIO_ALPN, MTLS_HTTP_ALPNS, gateway_server_tls, inbound_mtls

HTTP_SNIFF = {"application_protocols": ["http/1.1", "h2c"]}


def _listener(
    name: str,
    address: str,
    port: int,
    chains: list[dict],
    *,
    bind: bool = True,
    direction: str = "OUTBOUND",
    filters: tuple[str, ...] = (),
    default_chain: dict | None = None,
) -> dict:
    listener: dict = {
        "name": name,
        "address": socket_address(address, port),
        "filter_chains": chains,
        "traffic_direction": direction,
    }
    if default_chain:
        listener["default_filter_chain"] = default_chain
    if filters:
        listener["listener_filters"] = [LISTENER_FILTERS[f] for f in filters]
    if not bind:
        listener["bind_to_port"] = False
    return listener


def _weighted(route: net.TCPRoute | net.TLSRoute, ctx: RouteContext, namespace: str) -> list[tuple[str, int]]:
    return [
        (destination_cluster(d.destination, ctx, namespace), d.weight or 100)
        for d in route.route
        if d.weight is None or d.weight > 0 or len(route.route) == 1
    ]


def _l4_applies(m: net.L4MatchAttributes, ctx: RouteContext, vs_namespace: str, port: int | None = None) -> bool:
    """Port (`port`: a gateway server's, else the listener's), source labels and namespace, gateways."""
    port = port if port is not None else ctx.port
    if m.port is not None and port is not None and m.port != port:
        return False
    if m.source_labels and not all(ctx.proxy.labels.get(k) == v for k, v in m.source_labels.items()):
        return False
    if m.source_namespace and m.source_namespace != ctx.proxy.namespace:
        return False
    return not m.gateways or ctx.gateway in {gateway_ref(g, vs_namespace) for g in m.gateways}


def _cidr_ranges(subnets: list[str]) -> list[dict]:
    out = []
    for subnet in subnets:
        address, _, length = subnet.partition("/")
        out.append({"address_prefix": address, "prefix_len": int(length or 32)})
    return out


def _on_demand(ctx: RouteContext) -> bool:
    """Sidecars fetch a mesh cluster they do not hold on a first connection (ODCDS); gateways hold all theirs."""
    return ctx.proxy.kind == "sidecar"


def tcp_chains(vs: Resource | None, ctx: RouteContext, stat: str, default: str) -> list[dict]:
    """Filter chains for a TCP port: VirtualService tcp routes by destination subnet, else the default cluster."""
    chains: dict[str, dict] = {}
    for route in vs.spec.tcp if vs else []:
        for m in route.match or [net.L4MatchAttributes()]:
            if not _l4_applies(m, ctx, vs.namespace):
                continue
            key = ",".join(sorted(m.destination_subnets))
            if key in chains:
                continue
            weighted = _weighted(route, ctx, vs.namespace)
            chain: dict = {"filters": [tcp_proxy(stat, weighted=weighted, on_demand=_on_demand(ctx))]}
            if m.destination_subnets:
                chain["filter_chain_match"] = {"prefix_ranges": _cidr_ranges(m.destination_subnets)}
            chains[key] = chain
    chains.setdefault("", {"filters": [tcp_proxy(stat, default, on_demand=_on_demand(ctx))]})
    return list(chains.values())


def tls_chains(
    vs: Resource | None,
    ctx: RouteContext,
    stat: str,
    allowed_hosts: list[str] | None = None,
    server_port: int | None = None,
) -> list[dict]:
    """Filter chains for TLS by SNI from VirtualService tls routes (sniHosts); `server_port`: the
    gateway server's port, which their ``port`` matches."""
    chains, seen = [], set()
    for route in vs.spec.tls if vs else []:
        for m in route.match:
            if not _l4_applies(m, ctx, vs.namespace, server_port):
                continue
            names = [h for h in m.sni_hosts if allowed_hosts is None or any(matches(a, h) for a in allowed_hosts)]
            names = [n for n in names if n not in seen]
            if not names:
                continue
            seen.update(names)
            # as Istio: an sniHost of * matches every name (Envoy refuses a bare * in server_names)
            match: dict = {"server_names": names} if "*" not in names else {}
            match["transport_protocol"] = "tls"
            if m.destination_subnets:
                match["prefix_ranges"] = _cidr_ranges(m.destination_subnets)
            chains.append(
                {
                    "filter_chain_match": match,
                    "filters": [
                        tcp_proxy(stat, weighted=_weighted(route, ctx, vs.namespace), on_demand=_on_demand(ctx))
                    ],
                }
            )
    return chains


def _vs_for(virtual_services: list[Resource], hostname: str) -> Resource | None:
    return next(
        (vs for vs in virtual_services for h in vs.spec.hosts if matches(fqdn(h, vs.namespace), hostname)), None
    )


def outbound_service_listeners(
    snapshot: MeshSnapshot, proxy: Proxy, services: list[Service], virtual_services: list[Resource]
) -> list[dict]:
    """Capture-mode listeners that virtualOutbound hands connections to (not bound to ports)."""
    listeners: dict[str, dict] = {}
    for svc in services:
        for port in svc.ports:
            if port.protocol.is_http and f"0.0.0.0_{port.number}" in listeners:
                continue  # HTTP ports share one listener
            listener = _outbound_listener(snapshot, proxy, svc, port, virtual_services)
            if listener and listener["name"] not in listeners:
                listeners[listener["name"]] = listener
    return [listeners[name] for name in sorted(listeners)]


def _outbound_listener(
    snapshot: MeshSnapshot, proxy: Proxy, svc: Service, port: Port, virtual_services: list[Resource]
) -> dict | None:
    p, ctx = port.number, RouteContext(snapshot, proxy, port.number)
    default = cluster_name("outbound", p, None, svc.hostname)
    if port.protocol.is_http:
        hcm = http_connection_manager(f"outbound_0.0.0.0_{p}", rds=str(p), on_demand=True)
        return _listener(f"0.0.0.0_{p}", "0.0.0.0", p, [{"filters": [hcm]}], bind=False)
    if port.protocol is Protocol.UDP:
        return None
    address = svc.address
    vs = _vs_for(virtual_services, svc.hostname)
    stat = f"outbound|{p}||{svc.hostname}"
    if port.protocol is Protocol.AUTO:
        hcm = http_connection_manager(f"outbound_0.0.0.0_{p}", rds=str(p), on_demand=True)
        fallback = default if address != "0.0.0.0" else PASSTHROUGH_CLUSTER
        chains = [
            {"filter_chain_match": HTTP_SNIFF, "filters": [hcm]},
            {"filters": [tcp_proxy(stat, fallback, on_demand=True)]},
        ]
        return _listener(f"{address}_{p}", address, p, chains, bind=False, filters=("http_inspector",))
    if port.protocol.is_tls:
        chains = tls_chains(vs, ctx, stat)
        if address == "0.0.0.0":  # no VIP: pick the service by SNI
            names = [n for c in chains for n in c["filter_chain_match"].get("server_names", ["*"])]
            if not any(matches(n, svc.hostname) for n in names):
                chains.append(
                    {
                        "filter_chain_match": {"server_names": [svc.hostname]},
                        "filters": [tcp_proxy(stat, default, on_demand=True)],
                    }
                )
            fallback = BLACKHOLE_CLUSTER if snapshot.outbound_policy(proxy) == REGISTRY_ONLY else PASSTHROUGH_CLUSTER
            return _listener(
                f"0.0.0.0_{p}",
                "0.0.0.0",
                p,
                chains,
                bind=False,
                filters=("tls_inspector",),
                default_chain={"filters": [tcp_proxy(fallback, fallback)]},
            )
        chains.append({"filters": [tcp_proxy(stat, default, on_demand=True)]})
        return _listener(f"{address}_{p}", address, p, chains, bind=False, filters=("tls_inspector",))
    if address == "0.0.0.0":
        return None  # a TCP service without an address cannot be told apart from others on its port
    return _listener(f"{address}_{p}", address, p, tcp_chains(vs, ctx, stat, default), bind=False)


def virtual_outbound(snapshot: MeshSnapshot, proxy: Proxy) -> dict:
    cluster = BLACKHOLE_CLUSTER if snapshot.outbound_policy(proxy) == REGISTRY_ONLY else PASSTHROUGH_CLUSTER
    chain = {"name": "virtualOutbound-catchall-tcp", "filters": [tcp_proxy(cluster, cluster)]}
    listener = _listener("virtualOutbound", "0.0.0.0", OUTBOUND_CAPTURE_PORT, [chain])
    listener["use_original_dst"] = True
    return listener


# One inbound chain: (name suffix, transport_protocol, application_protocols, what serves it, mTLS?).
# "http" is the HCM, "tcp" tcp_proxy to the app, "refuse" tcp_proxy to BlackHoleCluster.
ChainSpec = tuple[str, str | None, list[str] | None, str, bool]
SNIFFED_HTTP = HTTP_SNIFF["application_protocols"]
_REFUSE: ChainSpec = ("|plaintext-refused", "raw_buffer", None, "refuse", False)
_PLAINTEXT: dict[str, list[ChainSpec]] = {
    "http": [("", None, None, "http", False)],
    "tcp": [("", None, None, "tcp", False)],
    "auto": [("|http", None, SNIFFED_HTTP, "http", False), ("|tcp", None, None, "tcp", False)],
}
# Ports of unknown protocol (AUTO) over mTLS: Istio clients announce HTTP in ALPN (istio-http/*), which
# gets the HCM; plait's clients (upstream Envoy has no istio.alpn filter) offer "istio" only, so their
# connections take the TCP chain: still mTLS, but opaque to L7 policy. Name the port (http-…) for HTTP.
_PERMISSIVE: dict[str, list[ChainSpec]] = {
    "http": [("|mtls", "tls", ALL_MTLS_ALPNS, "http", True), ("", "raw_buffer", None, "http", False)],
    "tcp": [
        ("|mtls", "tls", ALL_MTLS_ALPNS, "tcp", True),
        ("|tls", "tls", None, "tcp", False),
        ("", "raw_buffer", None, "tcp", False),
    ],
    "auto": [
        ("|http-mtls", "tls", MTLS_HTTP_ALPNS, "http", True),
        ("|tcp-mtls", "tls", ISTIO_ALPN, "tcp", True),
        ("|tcp-tls", "tls", None, "tcp", False),
        ("|http", "raw_buffer", SNIFFED_HTTP, "http", False),
        ("|tcp", "raw_buffer", None, "tcp", False),
    ],
}
_STRICT: dict[str, list[ChainSpec]] = {
    "http": [("|mtls", "tls", None, "http", True), _REFUSE],
    "tcp": [("|mtls", "tls", None, "tcp", True), _REFUSE],
    "auto": [("|http-mtls", "tls", MTLS_HTTP_ALPNS, "http", True), ("|tcp-mtls", "tls", None, "tcp", True), _REFUSE],
}
_CHAINS_BY_MODE = {peer_auth.PERMISSIVE: _PERMISSIVE, peer_auth.STRICT: _STRICT, peer_auth.DISABLE: _PLAINTEXT}


def _protocol_kind(protocol: Protocol) -> str:
    if protocol.is_http:
        return "http"
    return "auto" if protocol is Protocol.AUTO else "tcp"


def _inbound_filters(snapshot: MeshSnapshot, proxy: Proxy, port: int | None, serves: str) -> list[dict]:
    """The filters of one inbound chain for workload port `port`; None: the passthrough chains, for ports
    no service declares, which send to the address the client dialled (``InboundPassthroughCluster``)."""
    cluster = cluster_name("inbound", port, None, "") if port is not None else INBOUND_PASSTHROUGH_CLUSTER
    if serves == "http":
        return [
            http_connection_manager(
                f"inbound_0.0.0.0_{port or 0}",
                route_config=inbound_route_config(cluster, port or 0),
                authz=rbac.inbound_http_filters(snapshot, proxy, port or 0),
                forward_client_cert=proxy.identity is not None,
            )
        ]
    if serves == "refuse":
        stat = f"inbound|{port}" if port is not None else "virtualInbound"
        return [tcp_proxy(f"{stat}|strict-mtls-refused-plaintext", BLACKHOLE_CLUSTER)]
    return [*rbac.inbound_network_filters(snapshot, proxy, port or 0), tcp_proxy(cluster, cluster)]


def inbound_mode(snapshot: MeshSnapshot, proxy: Proxy, port: int) -> str:
    """The PeerAuthentication mode of a workload port; DISABLE (plaintext) for a proxy without certificates."""
    if proxy.identity is None:
        return peer_auth.DISABLE
    return peer_auth.workload_policy(snapshot, proxy).for_port(port)


def _chains(
    snapshot: MeshSnapshot, proxy: Proxy, specs: list[ChainSpec], name: str, port: int | None, match: dict
) -> list[dict]:
    chains = []
    for suffix, transport, alpns, serves, mtls in specs:
        chain_match = dict(match)
        if transport:
            chain_match["transport_protocol"] = transport
        if alpns:
            chain_match["application_protocols"] = alpns
        chain: dict = {"name": f"{name}{suffix}"}
        if chain_match:
            chain["filter_chain_match"] = chain_match
        chain["filters"] = _inbound_filters(snapshot, proxy, port, serves)
        if mtls:
            chain["transport_socket"] = inbound_mtls()
        chains.append(chain)
    return chains


def _inbound_chains(snapshot: MeshSnapshot, proxy: Proxy, inbound: InboundPort, match: dict) -> list[dict]:
    port = inbound.endpoint.port
    specs = _CHAINS_BY_MODE[inbound_mode(snapshot, proxy, port)][_protocol_kind(inbound.port.protocol)]
    return _chains(snapshot, proxy, specs, f"inbound|{port}", port, match)


def _inbound_listener_filters(chains: list[dict], *, capture: bool) -> tuple[str, ...]:
    """original_dst (capture), tls_inspector where a chain matches TLS, http_inspector where one sniffs HTTP."""
    chain_matches = [c.get("filter_chain_match", {}) for c in chains]
    needed = {
        "original_dst": capture,
        "tls_inspector": any(m.get("transport_protocol") for m in chain_matches),
        "http_inspector": any(set(m.get("application_protocols", ())) & set(SNIFFED_HTTP) for m in chain_matches),
    }
    return tuple(name for name, wanted in needed.items() if wanted)


def _passthrough_chains(snapshot: MeshSnapshot, proxy: Proxy) -> list[dict]:
    """Istio's inbound passthrough: ports no service declares, as a port of unknown protocol under the
    workload's own PeerAuthentication mode (port-level settings do not apply), each chain with the
    authorization filters of any other port, so a DENY or a non-matching ALLOW refuses it too. No
    ``destination_port`` in their match: a declared port's chains always win."""
    mode = peer_auth.workload_policy(snapshot, proxy).mode if proxy.identity is not None else peer_auth.DISABLE
    return _chains(snapshot, proxy, _CHAINS_BY_MODE[mode]["auto"], "virtualInbound-catchall", None, {})


def virtual_inbound(snapshot: MeshSnapshot, proxy: Proxy, inbound_ports: list[InboundPort]) -> dict:
    chains = []
    for inbound in inbound_ports:
        chains += _inbound_chains(snapshot, proxy, inbound, {"destination_port": inbound.endpoint.port})
    chains += _passthrough_chains(snapshot, proxy)
    listener = _listener(
        "virtualInbound",
        "0.0.0.0",
        INBOUND_CAPTURE_PORT,
        chains,
        direction="INBOUND",
        filters=_inbound_listener_filters(chains, capture=True),
    )
    _skip_http_inspection(listener, chains)
    return listener


def _skip_http_inspection(listener: dict, chains: list[dict]) -> None:
    """As Istio: no HTTP sniffing on declared ports whose chains do not need it, so a server-first
    protocol there is not kept waiting for the client's first bytes (only undeclared ports are)."""
    sniffing: dict[int, bool] = {}
    for chain in chains:
        match = chain.get("filter_chain_match", {})
        if "destination_port" in match:
            sniffs = bool(set(match.get("application_protocols", ())) & set(SNIFFED_HTTP))
            sniffing[match["destination_port"]] = sniffing.get(match["destination_port"], False) or sniffs
    quiet = sorted(port for port, sniffs in sniffing.items() if not sniffs)
    filters = listener.get("listener_filters", [])
    if LISTENER_FILTERS["http_inspector"] not in filters or not quiet:
        return
    ranges = [{"destination_port_range": {"start": port, "end": port + 1}} for port in quiet]
    disabled = ranges[0] if len(ranges) == 1 else {"or_match": {"rules": ranges}}
    listener["listener_filters"] = [
        {**f, "filter_disabled": disabled} if f is LISTENER_FILTERS["http_inspector"] else f for f in filters
    ]


def explicit_proxy_listeners(snapshot: MeshSnapshot, proxy: Proxy, inbound_ports: list[InboundPort]) -> list[dict]:
    """Explicit-proxy mode: the HTTP_PROXY listener and one bound inbound listener per workload port."""
    hcm = http_connection_manager(
        "outbound_explicit_proxy", rds="explicit_proxy", dynamic_forward_proxy=True, on_demand=True
    )
    out = [_listener("explicit_proxy", proxy.ip, EXPLICIT_PROXY_PORT, [{"filters": [hcm]}])]
    for inbound in inbound_ports:
        port = inbound.endpoint.port
        chains = _inbound_chains(snapshot, proxy, inbound, {})
        out.append(
            _listener(
                f"{proxy.ip}_{port}",
                proxy.ip,
                port,
                chains,
                direction="INBOUND",
                filters=_inbound_listener_filters(chains, capture=False),
            )
        )
    return out


# ------------------------------------------------------------------ gateways


TERMINATING_MODES = ("SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL")


def gateway_server_kind(server: net.Server) -> str:
    """How a Gateway server is served, from its protocol (any case) and TLS mode, as Istio:
    ``http`` (HCM with RDS: HTTP, HTTP2, GRPC, GRPC-WEB, and HTTPS terminated), ``tls-passthrough``
    (VirtualService ``tls`` routes by SNI: PASSTHROUGH, or TLS without a terminating mode),
    ``auto-passthrough``, else ``tcp`` (VirtualService ``tcp`` routes: TCP, MONGO, MYSQL, REDIS, and
    TLS terminated here)."""
    proto = parse_protocol(server.port.protocol)
    mode = server.tls.mode if server.tls else None
    if mode == "AUTO_PASSTHROUGH":
        return "auto-passthrough"
    if mode == "PASSTHROUGH" or (proto is Protocol.TLS and mode not in TERMINATING_MODES):
        return "tls-passthrough"
    if proto is not None and (proto.is_http or proto is Protocol.HTTPS):
        return "http"
    return "tcp"


def gateway_route_name(server: net.Server, gateway: Resource, listen_port: int) -> str:
    """Istio's names: ``http.80`` for plaintext HTTP protocols, ``https.443.<port name>.<gateway>.<namespace>``
    for servers that terminate TLS."""
    proto = parse_protocol(server.port.protocol)
    if proto is not None and proto.is_http and not (server.tls and server.tls.mode):
        return f"http.{listen_port}"
    return f"https.{server.port.number}.{server.port.name}.{gateway.name}.{gateway.namespace}"


def _server_names(server: net.Server) -> list[str]:
    hosts = [h.rpartition("/")[2] for h in server.hosts]
    return [] if "*" in hosts else hosts


def _gateway_server_chains(
    snapshot: MeshSnapshot, proxy: Proxy, gw: Resource, server: net.Server, listen_port: int, *, grpc_web: bool = False
) -> list[dict]:
    """The filter chains of one server; `grpc_web`: its HCM converts gRPC-Web (Istio's GRPC-WEB servers)."""
    kind = gateway_server_kind(server)
    mode = server.tls.mode if server.tls else None
    ref = f"{gw.namespace}/{gw.name}"
    stat = f"outbound_0.0.0.0_{listen_port}"
    if kind == "auto-passthrough":
        return _with_network_authz(snapshot, proxy, listen_port, _auto_passthrough_chains(snapshot, proxy, stat))
    if kind == "tls-passthrough":
        ctx = RouteContext(snapshot, proxy, None, gateway=ref)
        hosts = [h.rpartition("/")[2] for h in server.hosts]
        chains = []
        for vs in snapshot.virtual_services_for(proxy, gateway=ref):
            chains += tls_chains(vs, ctx, stat, allowed_hosts=hosts, server_port=server.port.number)
        return _with_network_authz(snapshot, proxy, listen_port, chains)
    if kind == "tcp":
        for vs in snapshot.virtual_services_for(proxy, gateway=ref):
            if vs.spec.tcp:
                chains = tcp_chains(vs, RouteContext(snapshot, proxy, server.port.number, ref), stat, BLACKHOLE_CLUSTER)
                if mode:
                    for chain in chains:
                        chain["transport_socket"] = gateway_server_tls(server.tls)
                return _with_network_authz(snapshot, proxy, listen_port, chains)
        return []
    hcm = http_connection_manager(
        stat,
        rds=gateway_route_name(server, gw, listen_port),
        gateway=True,
        authz=rbac.inbound_http_filters(snapshot, proxy, listen_port),
        grpc_web=grpc_web,
    )
    chain: dict = {"filters": [hcm]}
    if mode in TERMINATING_MODES:
        chain["transport_socket"] = gateway_server_tls(server.tls)
        match: dict = {"transport_protocol": "tls"}
        names = _server_names(server)
        if names:
            match["server_names"] = names
        chain["filter_chain_match"] = match
    return [chain]


def _with_network_authz(snapshot: MeshSnapshot, proxy: Proxy, listen_port: int, chains: list[dict]) -> list[dict]:
    """A gateway's TCP chains: its network RBAC filters before tcp_proxy."""
    authz = rbac.inbound_network_filters(snapshot, proxy, listen_port)
    return [{**chain, "filters": [*authz, *chain["filters"]]} for chain in chains] if authz else chains


def _auto_passthrough_chains(snapshot: MeshSnapshot, proxy: Proxy, stat: str) -> list[dict]:
    """SNI ``outbound_.<port>_.<subset>_.<host>`` → that cluster, for cross-network passthrough."""
    chains = []
    for svc in snapshot.services_for(proxy):
        dr = snapshot.destination_rule_for(proxy, svc)
        subsets = [None] + [s.name for s in (dr.spec.subsets if dr else [])]
        for port in svc.ports:
            for subset in subsets:
                sni = f"outbound_.{port.number}_.{subset or ''}_.{svc.hostname}"
                chains.append(
                    {
                        "filter_chain_match": {"server_names": [sni], "transport_protocol": "tls"},
                        "filters": [tcp_proxy(stat, cluster_name("outbound", port.number, subset, svc.hostname))],
                    }
                )
    return chains


def gateway_listen_port(snapshot: MeshSnapshot, proxy: Proxy, port: int) -> int:
    """Where a gateway listens for a server port: an explicit mapping, else the targetPort of the
    gateway's own Service port (80 → 8080, as Istio's gateways do), else the port itself."""
    if port in proxy.listen_ports:
        return proxy.listen_ports[port]
    return next((ip.endpoint.port for ip in snapshot.workload_ports(proxy) if ip.port.number == port), port)


def gateway_servers(snapshot: MeshSnapshot, proxy: Proxy) -> dict[int, list[tuple[Resource, net.Server]]]:
    """Servers of the Gateways that select this proxy, grouped by the port it listens on."""
    by_port: dict[int, list[tuple[Resource, net.Server]]] = {}
    for gw in snapshot.gateways_for(proxy):
        for server in gw.spec.servers:
            by_port.setdefault(gateway_listen_port(snapshot, proxy, server.port.number), []).append((gw, server))
    return by_port


def _is_grpc_web(server: net.Server) -> bool:
    return parse_protocol(server.port.protocol) is Protocol.GRPC_WEB


def gateway_listeners(snapshot: MeshSnapshot, proxy: Proxy) -> list[dict]:
    out = []
    for listen_port, servers in sorted(gateway_servers(snapshot, proxy).items()):
        chains, seen_http = [], False
        # Plaintext HTTP servers of a port share one HCM: it converts gRPC-Web if any of them is GRPC-WEB.
        plain_grpc_web = any(_is_grpc_web(s) and not (s.tls and s.tls.mode) for _, s in servers)
        for gw, server in servers:
            grpc_web = _is_grpc_web(server) or (plain_grpc_web and not (server.tls and server.tls.mode))
            for chain in _gateway_server_chains(snapshot, proxy, gw, server, listen_port, grpc_web=grpc_web):
                plain = "filter_chain_match" not in chain
                if plain and seen_http:
                    continue  # plain-HTTP servers on one port share one chain and one route config
                seen_http = seen_http or plain
                chains.append(chain)
        if not chains:
            continue
        needs_tls = any(c.get("filter_chain_match", {}).get("transport_protocol") == "tls" for c in chains)
        bind = servers[0][1].bind or "0.0.0.0"
        out.append(
            _listener(
                f"{bind}_{listen_port}", bind, listen_port, chains, filters=("tls_inspector",) if needs_tls else ()
            )
        )
    return out
