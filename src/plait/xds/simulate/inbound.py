"""The other end: what the destination's sidecar does with the request the client's proxy sends it.

Flows in: a MeshSnapshot, the client Proxy and its ResourceSet, and the client's Outcome (the
clusters and endpoints it would send to). For each destination endpoint that is a known
workload with an AuthorizationPolicy or RequestAuthentication in force, the workload's own
proxy is built (`Proxy.from_workload_entry`; it has a mesh identity when the WorkloadEntry is
labelled ``security.istio.io/tlsMode: istio``, as the agent labels workloads whose sidecar has
certificates, see `with_mesh_identity`) and its configuration generated; the connection is handed to its inbound
listener and filter chain as Envoy would; that chain's jwt_authn and RBAC filters are run.
Flows out: one explained `Authorization` per destination workload.

What the destination sees of the caller comes from the client's own configuration: the
cluster's transport socket for that endpoint (auto mTLS matches the endpoint's
``tlsMode`` metadata) says whether the hop is mutual TLS; if so the peer principal is the
client's SPIFFE identity, else there is none. The source address is the client proxy's IP.
`Caller` overrides both (``plait explain --source-principal/--source-ip``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from plait.model.proxy import TLS_MODE_LABEL, Proxy
from plait.model.snapshot import MeshSnapshot
from plait.xds.generator import generate
from plait.xds.resources import ResourceSet
from plait.xds.simulate.authz import check_http, check_tcp, explain, remote_ip
from plait.xds.simulate.listeners import listener_at, select_filter_chain
from plait.xds.simulate.outcome import Authorization, ClusterTarget, Endpoint, Outcome
from plait.xds.simulate.rbac import Peer
from plait.xds.simulate.request import Connection, Request
from plait.xds.translate.common import BLACKHOLE_CLUSTER
from plait.xds.translate.tls import ISTIO_ALPN, TRANSPORT_SOCKET_MATCH_KEY

HCM = "envoy.filters.network.http_connection_manager"
INBOUND_CAPTURE_LISTENER = "virtualInbound"
MESH_CERTIFICATE = "default"  # the SDS secret of the proxy's own mesh certificate


@dataclass(frozen=True)
class Caller:
    """What the simulation cannot know about who sends the request: an outside client's address
    (for a gateway), or an identity to assume instead of the one the configuration gives."""

    ip: str | None = None
    principal: str | None = None


def with_mesh_identity(proxy: Proxy, snapshot: MeshSnapshot) -> Proxy:
    """The proxy with its SPIFFE identity, as a running mesh would give it: a sidecar whose workload
    is labelled as having certificates (``security.istio.io/tlsMode: istio``); a gateway when any
    workload of the mesh is (the mesh has a CA, and gateways get certificates too)."""
    if proxy.identity is not None:
        return proxy
    if proxy.kind == "router":
        certified = any(we.spec.labels.get(TLS_MODE_LABEL) == "istio" for we in snapshot.workload_entries)
    else:
        certified = proxy.labels.get(TLS_MODE_LABEL) == "istio"
    return replace(proxy, identity=proxy.spiffe_id) if certified else proxy


def _upstream_socket(cluster: dict, endpoint: Endpoint) -> dict | None:
    """The transport socket Envoy uses for this endpoint: the first transport_socket_matches entry
    the endpoint's metadata satisfies, else the cluster's transport_socket."""
    tags = endpoint.metadata.get("filter_metadata", {}).get(TRANSPORT_SOCKET_MATCH_KEY, {})
    for entry in cluster.get("transport_socket_matches", []):
        if all(tags.get(k) == v for k, v in entry.get("match", {}).items()):
            return entry.get("transport_socket")
    return cluster.get("transport_socket")


def client_tls(cluster: dict, endpoint: Endpoint) -> tuple[bool, tuple[str, ...], str | None]:
    """(mutual TLS with the mesh certificate?, ALPN offered, SNI) of the hop to this endpoint."""
    socket = _upstream_socket(cluster, endpoint) or {}
    context = socket.get("typed_config", {})
    common = context.get("common_tls_context", {})
    if "common_tls_context" not in context:
        return False, (), None
    certificates = [s.get("name") for s in common.get("tls_certificate_sds_secret_configs", [])]
    return MESH_CERTIFICATE in certificates, tuple(common.get("alpn_protocols", ())), context.get("sni")


def _inbound_listener(resources: ResourceSet, proxy: Proxy, ip: str, port: int) -> dict | None:
    if proxy.mode == "proxy":
        return listener_at(resources, ip, port)
    return resources.listeners.get(INBOUND_CAPTURE_LISTENER)


def _upstream_request(request: Request, outcome: Outcome) -> Request:
    """The request as the client's proxy forwards it (after the route's rewrites)."""
    if outcome.upstream_path:
        path, _, query = outcome.upstream_path.partition("?")
        request = replace(request, path=path, query=query)
    if outcome.upstream_host and outcome.upstream_host != request.authority and " " not in outcome.upstream_host:
        kept = tuple((k, v) for k, v in request.headers if k not in ("host", ":authority"))
        request = replace(request, headers=kept + (("host", outcome.upstream_host),))
    return request


def _connection(
    cluster: dict, endpoint: Endpoint, client: Proxy, caller: Caller, http: bool
) -> tuple[Connection, str | None]:
    """The connection as the destination's listener sees it, and the peer principal it carries."""
    ip, _, port = endpoint.address.rpartition(":")
    mtls, alpn, sni = client_tls(cluster, endpoint)
    principal = (client.identity or client.spiffe_id) if mtls else None
    if caller.principal:
        principal, mtls, alpn = caller.principal, True, alpn or tuple(ISTIO_ALPN)
    if not mtls:
        alpn = ("http/1.1",) if http else ()
    conn = Connection(
        dest_ip=ip,
        dest_port=int(port),
        source_ip=caller.ip or client.ip,
        transport="tls" if mtls else "raw_buffer",
        alpn=alpn,
        server_name=sni if mtls else None,
    )
    return conn, principal


def check_endpoint(
    snapshot: MeshSnapshot,
    destination: Proxy,
    cluster: dict,
    endpoint: Endpoint,
    client: Proxy,
    request: Request,
    http: bool,
    *,
    now: float | None,
    caller: Caller,
) -> Authorization:
    """Run the destination sidecar's inbound filters on what the client sends to `endpoint`."""
    resources = generate(snapshot, destination)
    conn, principal = _connection(cluster, endpoint, client, caller, http)
    listener = _inbound_listener(resources, destination, conn.dest_ip or "", conn.dest_port)
    chosen = select_filter_chain(listener, conn) if listener else None
    peer = Peer(
        dest_port=conn.dest_port,
        principal=principal,
        source_ip=conn.source_ip,
        dest_ip=conn.dest_ip,
        sni=conn.server_name,
        request=request,
    )
    if chosen is None:
        return _closed(
            destination,
            peer,
            f"no inbound listener or filter chain of {destination.workload} takes "
            f"the connection to port {conn.dest_port}: it is closed",
        )
    chain_name, chain, _ = chosen
    where = f"{listener.get('name')} port {conn.dest_port}, filter chain {chain_name}"
    filters = chain.get("filters", [])
    if any(f.get("typed_config", {}).get("cluster") == BLACKHOLE_CLUSTER for f in filters):
        return _closed(
            destination,
            peer,
            f"filter chain {chain_name} refuses the connection (the client sends "
            "plaintext and the port accepts only mutual TLS)",
            where,
        )
    hcm = next((f.get("typed_config", {}) for f in filters if f.get("name") == HCM), None)
    peer = replace(peer, request=request if hcm is not None else None)
    if hcm is not None:
        peer = replace(peer, remote_ip=remote_ip(hcm, request, conn.source_ip))
        auth = check_http(hcm.get("http_filters", []), peer, now, proxy=destination.workload, where=where)
    else:
        auth = check_tcp(filters, replace(peer, remote_ip=conn.source_ip), proxy=destination.workload, where=where)
    return explain(snapshot, auth)


def _closed(destination: Proxy, peer: Peer, why: str, where: str = "") -> Authorization:
    return Authorization(proxy=destination.workload, where=where, peer=peer, refused=True, summary=f"REFUSED: {why}")


def _governed(snapshot: MeshSnapshot, proxy: Proxy) -> bool:
    return bool(
        snapshot.policies_for(proxy, snapshot.authorization_policies)
        or snapshot.policies_for(proxy, snapshot.request_authentications)
    )


def _destinations(snapshot: MeshSnapshot, targets: list[ClusterTarget], mode: str):
    """(cluster name, endpoint, destination proxy) once per destination workload under some policy.
    An original-destination target (passthrough) reaches the workload at that address on any port:
    its inbound passthrough chains decide."""
    workloads = {
        f"{ep.address}:{ep.port}": ep.workload
        for svc in snapshot.services.values()
        for eps in svc.endpoints.values()
        for ep in eps
        if ep.workload
    }
    by_address = {we.spec.address: f"{we.namespace}/{we.name}" for we in snapshot.workload_entries}
    seen = set()
    for target in targets:
        for endpoint in target.endpoints:
            workload = workloads.get(endpoint.address)
            if workload is None and target.kind == "ORIGINAL_DST":
                workload = by_address.get(endpoint.address.rpartition(":")[0])
            entry = snapshot.workload(workload) if workload and workload not in seen else None
            if entry is None:
                continue
            seen.add(workload)
            proxy = with_mesh_identity(Proxy.from_workload_entry(entry, mode=mode), snapshot)  # type: ignore[arg-type]
            if proxy.kind == "sidecar" and _governed(snapshot, proxy):
                yield target, endpoint, proxy


def destination_checks(
    snapshot: MeshSnapshot,
    client: Proxy,
    resources: ResourceSet,
    outcome: Outcome,
    request: Request,
    *,
    now: float | None = None,
    caller: Caller = Caller(),
) -> list[Authorization]:
    """Authorization at each destination workload the request may reach (those with policies in force)."""
    live = [t for t in outcome.clusters if t.exists and t.percent > 0]
    upstream = _upstream_request(request, outcome)
    out = []
    for target, endpoint, destination in _destinations(snapshot, live, client.mode):
        # Passed through, the app's own bytes arrive: plaintext HTTP for an http:// request, which the
        # destination's passthrough chains detect; otherwise what the client's proxy speaks.
        http = request.scheme == "http" if target.kind == "ORIGINAL_DST" else outcome.protocol != "tcp"
        out.append(
            check_endpoint(
                snapshot,
                destination,
                resources.clusters.get(target.name, {}),
                endpoint,
                client,
                upstream,
                http,
                now=now,
                caller=caller,
            )
        )
    return out
