"""Which listener takes the connection and which of its filter chains serves it.

Capture mode: ``virtualOutbound`` hands the connection to the listener on the exact original
destination ip:port, else to ``0.0.0.0:<port>``, else keeps it; explicit-proxy mode: the
``explicit_proxy`` listener; a gateway: the listener on the port the client connects to
(after its Service's port mapping). The listener filters decide what is known of the
connection (SNI, ALPN); then `select_filter_chain` keeps, criterion by criterion, the most
specific matching chains without backtracking, falling back to the default chain.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from plait.model.proxy import Proxy
from plait.xds.resources import ResourceSet
from plait.xds.simulate.outcome import Outcome
from plait.xds.simulate.request import Connection, Request, Resolver, is_ip

CAPTURE_LISTENER = "virtualOutbound"
EXPLICIT_PROXY_LISTENER = "explicit_proxy"


def _address(listener: dict) -> tuple[str, int]:
    sock = listener.get("address", {}).get("socket_address", {})
    return sock.get("address", ""), int(sock.get("port_value", 0))


def listener_at(resources: ResourceSet, ip: str, port: int, skip: str = "") -> dict | None:
    """The listener whose address is exactly ip:port."""
    return next(
        (
            listener
            for name, listener in sorted(resources.listeners.items())
            if name != skip and _address(listener) == (ip, port)
        ),
        None,
    )


def captured_listener(
    resources: ResourceSet, proxy: Proxy, request: Request, out: Outcome, resolve: Resolver | None
) -> tuple[dict, Connection] | None:
    """Capture mode: iptables → virtualOutbound, which hands the connection on by original destination."""
    host, port = request.host, request.port
    ip = host if is_ip(host) else (resolve(host) if resolve else None)
    out.destination = f"{ip or host}:{port}"
    if ip:
        out.step("destination", f"{ip}:{port}", "an IP address" if ip == host else f"{host} resolves to {ip}")
    else:
        out.step("destination", f"{host}:{port}", f"{host} is not a name the mesh resolves: only port {port} is known")
    if ip and ipaddress.ip_address(ip).is_loopback:
        out.action = "bypass"
        out.notes.append(
            "iptables does not capture traffic to loopback: it goes straight to the local "
            "application, the sidecar is not involved"
        )
        return None
    conn = Connection(dest_ip=ip, dest_port=port, source_ip=proxy.ip)
    exact = listener_at(resources, ip, port, skip=CAPTURE_LISTENER) if ip else None
    if exact:
        out.step("listener", exact["name"], f"virtualOutbound hands the connection to the listener on {ip}:{port}")
        return exact, conn
    wildcard = listener_at(resources, "0.0.0.0", port, skip=CAPTURE_LISTENER)
    if wildcard:
        out.step(
            "listener",
            wildcard["name"],
            f"virtualOutbound hands the connection on: no listener on {ip or host}:{port}, the wildcard 0.0.0.0:{port}",
        )
        return wildcard, conn
    capture = resources.listeners.get(CAPTURE_LISTENER)
    if capture is None:
        out.fail(None, None, "the proxy has no virtualOutbound listener: captured traffic goes nowhere")
        return None
    out.step("listener", CAPTURE_LISTENER, f"no listener for port {port}: virtualOutbound keeps the connection")
    return capture, conn


def gateway_listener(
    resources: ResourceSet, proxy: Proxy, request: Request, out: Outcome
) -> tuple[dict, Connection] | None:
    """A gateway serves the port the client connects to (its Service may map it, e.g. 80 → 8080)."""
    ip = request.host if is_ip(request.host) else proxy.ip
    mapped = proxy.listen_ports.get(request.port, request.port)
    for port in dict.fromkeys([mapped, request.port]):
        listener = listener_at(resources, ip, port) or listener_at(resources, "0.0.0.0", port)
        if listener:
            out.destination = f"{ip}:{port}"
            via = f" (port {request.port} is served on {port})" if port != request.port else ""
            out.step("listener", listener["name"], f"the gateway's listener on port {port}{via}")
            return listener, Connection(dest_ip=ip, dest_port=port)
    ports = ", ".join(str(_address(lst)[1]) for lst in resources.listeners.values()) or "none"
    out.fail(
        None,
        None,
        f"the gateway has no listener on port {request.port} (it listens on {ports}): the connection is refused",
    )
    return None


def explicit_listener(
    resources: ResourceSet, proxy: Proxy, request: Request, out: Outcome
) -> tuple[dict, Connection] | None:
    """Explicit-proxy mode: the application sends every request to its sidecar (HTTP_PROXY)."""
    listener = resources.listeners.get(EXPLICIT_PROXY_LISTENER)
    if listener is None:
        out.fail(None, None, "the proxy has no explicit_proxy listener")
        return None
    ip, port = _address(listener)
    out.destination = f"{ip}:{port}"
    out.step("listener", EXPLICIT_PROXY_LISTENER, f"the application's HTTP_PROXY is {ip}:{port}")
    return listener, Connection(dest_ip=ip, dest_port=port, source_ip=proxy.ip)


def inspect_connection(listener: dict, conn: Connection, request: Request) -> Connection:
    """What the listener filters detect: TLS (SNI, ALPN) with tls_inspector, HTTP/1.1 with http_inspector."""
    names = {f.get("name") for f in listener.get("listener_filters", [])}
    if request.scheme == "https" and "envoy.filters.listener.tls_inspector" in names:
        sni = None if is_ip(request.host) else request.host
        return replace(conn, transport="tls", server_name=sni, alpn=("h2", "http/1.1"))
    if request.scheme == "http" and "envoy.filters.listener.http_inspector" in names:
        return replace(conn, alpn=("http/1.1",))
    return conn


Candidates = list[tuple[int, dict]]


def _fcm(candidate: tuple[int, dict]) -> dict:
    return candidate[1].get("filter_chain_match", {})


def _by_port(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    exact = [c for c in cands if _fcm(c).get("destination_port") == conn.dest_port]
    if exact:
        return exact, f"destination_port {conn.dest_port}"
    return [c for c in cands if "destination_port" not in _fcm(c)], None


def _in_range(ip: str, cidr: dict) -> bool:
    network = ipaddress.ip_network(f"{cidr['address_prefix']}/{cidr.get('prefix_len', 0)}", strict=False)
    address = ipaddress.ip_address(ip)
    return address.version == network.version and address in network


def _longest_prefix(cands: Candidates, key: str, ip: str | None, label: str) -> tuple[Candidates, str | None]:
    """Chains whose `key` ranges hold `ip` with the longest prefix; a chain without ranges counts as /0."""
    best, kept, why = -1, [], None
    for c in cands:
        ranges = _fcm(c).get(key)
        length, cidr = 0, None
        if ranges:
            hits = [
                (int(r.get("prefix_len", 0)), f"{r['address_prefix']}/{r.get('prefix_len', 0)}")
                for r in ranges
                if is_ip(ip) and _in_range(ip, r)
            ]
            if not hits:
                continue
            length, cidr = max(hits)
        if length > best:
            best, kept, why = length, [c], cidr
        elif length == best:
            kept.append(c)
    return kept, (f"{label} {why} holds {ip}" if why else None)


def _by_dest_ip(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    return _longest_prefix(cands, "prefix_ranges", conn.dest_ip, "prefix_ranges")


def _by_server_name(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    sni = (conn.server_name or "").lower()
    wanted = [sni] + ["*" + sni[i:] for i, ch in enumerate(sni) if ch == "."] if sni else []
    for name in wanted:
        hit = [c for c in cands if name in [n.lower() for n in _fcm(c).get("server_names", [])]]
        if hit:
            return hit, f"server_names {name} (SNI {sni})"
    return [c for c in cands if not _fcm(c).get("server_names")], None


def _by_transport(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    hit = [c for c in cands if _fcm(c).get("transport_protocol") == conn.transport]
    if hit:
        return hit, f"transport_protocol {conn.transport}"
    return [c for c in cands if not _fcm(c).get("transport_protocol")], None


def _by_alpn(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    for protocol in conn.alpn:
        hit = [c for c in cands if protocol in _fcm(c).get("application_protocols", [])]
        if hit:
            return hit, f"application_protocols {protocol} (detected)"
    return [c for c in cands if not _fcm(c).get("application_protocols")], None


def _by_direct_source(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    return _longest_prefix(cands, "direct_source_prefix_ranges", conn.source_ip, "direct_source_prefix_ranges")


def _by_source_type(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    local = is_ip(conn.source_ip) and (
        conn.source_ip == conn.dest_ip or ipaddress.ip_address(conn.source_ip).is_loopback
    )
    wanted = "SAME_IP_OR_LOOPBACK" if local else "EXTERNAL"
    hit = [c for c in cands if _fcm(c).get("source_type") == wanted]
    if hit:
        return hit, f"source_type {wanted}"
    return [c for c in cands if _fcm(c).get("source_type", "ANY") == "ANY"], None


def _by_source_ip(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    return _longest_prefix(cands, "source_prefix_ranges", conn.source_ip, "source_prefix_ranges")


def _by_source_port(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    return [c for c in cands if not _fcm(c).get("source_ports")], None  # the client's port is not known


_CHAIN_LEVELS = (
    _by_port,
    _by_dest_ip,
    _by_server_name,
    _by_transport,
    _by_alpn,
    _by_direct_source,
    _by_source_type,
    _by_source_ip,
    _by_source_port,
)


def _matching_chains(listener: dict, conn: Connection) -> tuple[Candidates, list[str], str | None]:
    """Envoy's levels, most specific first, without backtracking: (chains left, reasons, what of the
    choice the simulator cannot know, if anything)."""
    cands: Candidates = list(enumerate(listener.get("filter_chains", [])))
    reasons: list[str] = []
    for level in _CHAIN_LEVELS:
        if level is _by_source_port and any(_fcm(c).get("source_ports") for c in cands):
            return cands, reasons, "a filter chain matches on source_ports, and the client's port is not known"
        cands, why = level(cands, conn)
        if why:
            reasons.append(why)
        if not cands:
            break
    if len(cands) > 1:
        names = ", ".join(c[1].get("name") or f"#{c[0]}" for c in cands)
        return cands, reasons, f"several filter chains match ({names}): they differ in what plait does not model"
    return cands, reasons, None


def unmodelled_chain_choice(listener: dict, conn: Connection) -> str | None:
    """Why the simulator cannot tell which filter chain Envoy picks (None when it can); as Istio's
    simulation reports ErrMultipleFilterChain instead of guessing."""
    return _matching_chains(listener, conn)[2]


def select_filter_chain(listener: dict, conn: Connection) -> tuple[str, dict, list[str]] | None:
    """Envoy's choice: level by level keep the most specific matching chains; no backtracking.
    (Check `unmodelled_chain_choice` first: with several chains left, this returns the first.)"""
    cands, reasons, _ = _matching_chains(listener, conn)
    if cands:
        index, chain = cands[0]
        return chain.get("name") or f"#{index}", chain, reasons or ["no filter_chain_match: it takes any connection"]
    default = listener.get("default_filter_chain")
    if default is not None:
        return default.get("name") or "default_filter_chain", default, ["no filter chain matches: the default chain"]
    return None
