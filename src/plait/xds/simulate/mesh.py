"""Simulation against a whole mesh: generate the proxy's configuration and answer DNS as the mesh does.

`mesh_resolver` maps every name a workload in a namespace may use for a service (short name,
``name.namespace``, ``.svc``, FQDN, ServiceEntry hosts) to its address; `simulate_mesh`
generates the proxy's ResourceSet from a MeshSnapshot (unless given) and, for a gateway, maps
the requested port through the gateway Service's targetPort before simulating. Then
authorization: a gateway's own filters are explained in Istio's terms, and the destination
sidecars' inbound jwt_authn and RBAC filters are run (`plait.xds.simulate.inbound`); when every
destination refuses the request, so does the outcome (401/403, or a closed TCP connection).
"""

from __future__ import annotations

from dataclasses import replace

from plait.model.hosts import client_names
from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot
from plait.xds.generator import generate
from plait.xds.resources import ResourceSet
from plait.xds.simulate.authz import explain
from plait.xds.simulate.engine import simulate
from plait.xds.simulate.inbound import Caller, destination_checks
from plait.xds.simulate.outcome import Authorization, Outcome
from plait.xds.simulate.request import Request, Resolver, is_ip
from plait.xds.translate.listeners import gateway_listen_port


def mesh_resolver(snapshot: MeshSnapshot, namespace: str) -> Resolver:
    """What cluster DNS answers to a workload in `namespace`: a service's names (``reviews`` in its own
    namespace, ``reviews.default``, ``reviews.default.svc``, the FQDN; ServiceEntry hosts) → its address."""
    table: dict[str, str] = {}
    for svc in sorted(snapshot.services.values(), key=lambda s: s.hostname):
        if svc.address == "0.0.0.0" or svc.hostname.startswith("*"):
            continue
        for name in client_names(svc.hostname, 0, namespace):
            if not name.endswith(":0"):
                table.setdefault(name.lower(), svc.address)

    def resolve(host: str) -> str | None:
        host = host.lower().rstrip(".")
        return host if is_ip(host) else table.get(host)

    return resolve


def simulate_mesh(
    snapshot: MeshSnapshot,
    proxy: Proxy,
    request: Request,
    resources: ResourceSet | None = None,
    *,
    now: float | None = None,
    caller: Caller = Caller(),
) -> Outcome:
    """Generate the proxy's configuration (unless given) and simulate with the mesh's own DNS; a
    request to a gateway's port goes where the gateway's Service sends it (its targetPort). Then
    the authorization of the gateway itself and of each destination workload under a policy.
    `now` (epoch seconds) lets JWT expiry be checked; `caller` overrides who is asking."""
    resources = resources if resources is not None else generate(snapshot, proxy)
    if proxy.kind == "router":
        listen = gateway_listen_port(snapshot, proxy, request.port)
        proxy = replace(proxy, listen_ports={**proxy.listen_ports, request.port: listen})
    out = simulate(resources, proxy, request, mesh_resolver(snapshot, proxy.namespace), now=now, source_ip=caller.ip)
    for auth in out.authorization:  # the gateway's own filters
        auth.proxy = proxy.workload
        explain(snapshot, auth)
    if out.authorization and out.authorization[-1].denied:
        out.notes[-1] = f"{proxy.workload} (gateway): {out.authorization[-1].summary}"
        return out
    if out.failed or out.action in ("redirect", "direct_response", "bypass"):
        return out
    hop = Caller(principal=caller.principal) if proxy.kind == "router" else caller
    checks = destination_checks(snapshot, proxy, resources, out, request, now=now, caller=hop)
    out.authorization += checks
    _settle_authorization(out, checks)
    return out


def _settle_authorization(out: Outcome, checks: list[Authorization]) -> None:
    """Every destination refuses: Envoy there answers (401/403) or closes the connection; some do: a note."""
    denied = [a for a in checks if a.denied]
    if not denied:
        return
    if len(denied) < len(checks):
        names = ", ".join(a.proxy for a in denied)
        out.notes.append(f"requests that reach {names} are refused there: {denied[0].summary}")
        return
    first, more = denied[0], f" (and {len(denied) - 1} more)" if len(denied) > 1 else ""
    out.refused = first.refused
    out.fail(first.status, None, f"{first.proxy}{more}: {first.summary}")
