"""Simulation against a whole mesh: generate the proxy's configuration and answer DNS as the mesh does.

`mesh_resolver` maps every name a workload in a namespace may use for a service (short name,
``name.namespace``, ``.svc``, FQDN, ServiceEntry hosts) to its address; `simulate_mesh`
generates the proxy's ResourceSet from a MeshSnapshot (unless given) and, for a gateway, maps
the requested port through the gateway Service's targetPort before simulating.
"""

from __future__ import annotations

from dataclasses import replace

from plait.model.hosts import client_names
from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot
from plait.xds.generator import generate
from plait.xds.resources import ResourceSet
from plait.xds.simulate.engine import simulate
from plait.xds.simulate.outcome import Outcome
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


def simulate_mesh(snapshot: MeshSnapshot, proxy: Proxy, request: Request,
                  resources: ResourceSet | None = None) -> Outcome:
    """Generate the proxy's configuration (unless given) and simulate with the mesh's own DNS; a
    request to a gateway's port goes where the gateway's Service sends it (its targetPort)."""
    resources = resources if resources is not None else generate(snapshot, proxy)
    if proxy.kind == "router":
        listen = gateway_listen_port(snapshot, proxy, request.port)
        proxy = replace(proxy, listen_ports={**proxy.listen_ports, request.port: listen})
    return simulate(resources, proxy, request, mesh_resolver(snapshot, proxy.namespace))
