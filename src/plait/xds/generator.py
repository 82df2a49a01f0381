"""(MeshSnapshot, Proxy) → ResourceSet: everything one Envoy is sent. Pure: no I/O, no clock.

`generate` = `translate` (the translators) then `finish` (passes over the whole set: metrics, tracing,
secrets, EnvoyFilter patches). Incremental parts for the hub: `generate_routes` (route configurations
alone) and `explicit_proxy_listeners` (an explicit-proxy sidecar's listeners alone)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from plait.model.hosts import fqdn, matches
from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot
from plait.xds import envoyfilter
from plait.xds.references import listener_references, route_config_clusters
from plait.xds.resources import ResourceSet
from plait.xds.translate import clusters as cds
from plait.xds.translate import endpoints as eds
from plait.xds.translate import jwt, telemetry, tracing
from plait.xds.translate import listeners as lds
from plait.xds.translate import routes as rds
from plait.xds.translate import secrets as sds
from plait.xds.translate.common import parse_cluster_name


def _http_ports(services) -> list[int]:
    return sorted({p.number for s in services for p in s.ports if p.protocol.is_http or p.protocol.value == "AUTO"})


def generate(snapshot: MeshSnapshot, proxy: Proxy) -> ResourceSet:
    """All listeners, routes, clusters, endpoints and the secrets they name for one proxy."""
    return finish(snapshot, proxy, translate(snapshot, proxy))


def translate(snapshot: MeshSnapshot, proxy: Proxy) -> ResourceSet:
    """What the translators make for one proxy, before `finish`'s passes over the whole set."""
    services = snapshot.services_for(proxy)
    out = ResourceSet()
    out.add_clusters(cds.special_clusters(proxy))
    out.add_clusters(cds.outbound_clusters(snapshot, proxy, services))
    out.add_clusters(jwt.jwks_clusters(snapshot, proxy))
    for svc in services:
        out.add_endpoints(eds.service_load_assignments(snapshot, proxy, svc))
    if proxy.kind == "router":
        out.add_listeners(lds.gateway_listeners(snapshot, proxy))
    else:
        inbound = snapshot.inbound_ports(proxy)
        out.add_clusters(cds.inbound_cluster(proxy, i) for i in inbound)
        vss = snapshot.virtual_services_for(proxy)
        if proxy.mode == "capture":
            out.add_listeners([lds.virtual_outbound(snapshot, proxy), lds.virtual_inbound(snapshot, proxy, inbound)])
            out.add_listeners(lds.outbound_service_listeners(snapshot, proxy, services, vss))
        else:
            out.add_listeners(lds.explicit_proxy_listeners(snapshot, proxy, inbound))
    out.add_routes(generate_routes(snapshot, proxy))
    out.add_clusters(unknown_destination_clusters(snapshot, proxy, out))
    return out


def finish(snapshot: MeshSnapshot, proxy: Proxy, out: ResourceSet) -> ResourceSet:
    """`translate`'s set (changed in place) with metrics, tracing, the secrets it names and the
    EnvoyFilter patches."""
    telemetry.add_metrics(snapshot, proxy, out.listeners, out.clusters)
    tracing.add_tracing(snapshot, proxy, out.listeners, out.clusters)
    out.add_secrets(sds.credential_secrets(snapshot, proxy, [*out.listeners.values(), *out.clusters.values()]))
    return envoyfilter.patch_resources(snapshot, proxy, out)


def explicit_proxy_listeners(snapshot: MeshSnapshot, proxy: Proxy, translated_clusters: Collection[str]) -> dict:
    """An explicit-proxy sidecar's listeners exactly as `generate` makes them, without the rest of its
    resources: only its listeners depend on its IP, so sidecars alike but for their IP share the rest.
    `translated_clusters`: the cluster names `translate` gave one of them (tracing picks its collector
    among them). Its listeners' references to clusters, routes and secrets are those of the others:
    the IP is only in the listeners' names and addresses (EnvoyFilter listener patches aside, which
    the consistency check of the whole set covers)."""
    listeners = {
        listener["name"]: listener
        for listener in lds.explicit_proxy_listeners(snapshot, proxy, snapshot.inbound_ports(proxy))
    }
    telemetry.add_metrics(snapshot, proxy, listeners, {})
    tracing.add_tracing(snapshot, proxy, listeners, dict.fromkeys(translated_clusters, {}))
    return envoyfilter.patch_listeners_only(snapshot, proxy, listeners)


UNKNOWN_DESTINATION = {"filter_metadata": {"plait": {"unknown_destination": True}}}


def _known_destination(snapshot: MeshSnapshot, proxy: Proxy, services: dict, name: str) -> bool:
    """Does the proxy know the service, port and subset an ``outbound|PORT|SUBSET|HOST`` name means?"""
    _, port, subset, host = parse_cluster_name(name)
    service = services.get(host)
    if service is None or all(p.number != port for p in service.ports):
        return False
    rule = snapshot.destination_rule_for(proxy, service) if subset else None
    return not subset or (rule is not None and any(s.name == subset for s in rule.spec.subsets))


def unknown_destination_clusters(snapshot: MeshSnapshot, proxy: Proxy, out: ResourceSet) -> list[dict]:
    """Clusters for route destinations the proxy does not know (a host not in its registry view, a
    port the service lacks, a subset no DestinationRule defines). Istio routes them to a cluster it
    never sends, and Envoy answers 503; plait sends that cluster, empty, so the answer is the same 503
    (no healthy upstream) while every reference resolves and the push stays consistent."""
    names = {c for config in out.routes.values() for c in route_config_clusters(config)}
    names |= {
        n for listener in out.listeners.values() for kind, n in listener_references(listener) if kind == "cluster"
    }
    services = {s.hostname: s for s in snapshot.services_for(proxy)}
    return [
        {"name": n, "type": "STATIC", "connect_timeout": "10s", "metadata": UNKNOWN_DESTINATION}
        for n in sorted(names)
        if n not in out.clusters
        and n.startswith("outbound|")
        and parse_cluster_name(n) is not None
        and not _known_destination(snapshot, proxy, services, n)
    ]


def has_unknown_destinations(resources: ResourceSet) -> bool:
    """Are some clusters there only because routes name them (`unknown_destination_clusters`)? Then a
    change of routes alone can add or drop clusters."""
    return any(c.get("metadata") == UNKNOWN_DESTINATION for c in resources.clusters.values())


def route_names(snapshot: MeshSnapshot, proxy: Proxy) -> list[str]:
    if proxy.kind == "router":
        return sorted(
            {
                lds.gateway_route_name(server, gw, port)
                for port, servers in lds.gateway_servers(snapshot, proxy).items()
                for gw, server in servers
                if lds.gateway_server_kind(server) == "http"
            }
        )
    if proxy.mode == "proxy":
        return ["explicit_proxy"]
    ports = _http_ports(snapshot.services_for(proxy))
    if 80 not in ports and _unregistered_vs_hosts(snapshot, proxy):
        ports.append(80)
    return [str(p) for p in ports]


def _unregistered_vs_hosts(snapshot: MeshSnapshot, proxy: Proxy) -> bool:
    return any(
        fqdn(h, vs.namespace) not in snapshot.services and not h.startswith("*") and vs.spec.http
        for vs in snapshot.virtual_services_for(proxy)
        for h in vs.spec.hosts
    )


def affected_route_names(snapshot: MeshSnapshot, proxy: Proxy, hosts: Iterable[str]) -> list[str]:
    """Route configurations that a change to VirtualServices for `hosts` (FQDNs) can alter."""
    names = route_names(snapshot, proxy)
    if proxy.kind == "router" or proxy.mode == "proxy":
        return names
    hosts = list(hosts)
    ports = {
        str(p.number)
        for s in snapshot.services_for(proxy)
        if any(matches(h, s.hostname) for h in hosts)
        for p in s.ports
    }
    if any(h not in snapshot.services for h in hosts):
        ports.add("80")
    return [n for n in names if n in ports]


def generate_routes(snapshot: MeshSnapshot, proxy: Proxy, only: Iterable[str] | None = None) -> list[dict]:
    """Route configurations for a proxy, EnvoyFilter patches applied; `only` limits the work to the
    named ones (incremental pushes)."""
    return envoyfilter.patch_route_configs(snapshot, proxy, _generate_routes(snapshot, proxy, only))


def changed_virtual_hosts(
    snapshot: MeshSnapshot, proxy: Proxy, names: Iterable[str], hosts: Collection[str]
) -> dict[str, dict[str, dict]] | None:
    """Of a sidecar's named route configurations, the virtual hosts that a change to the VirtualServices
    of `hosts` alone can alter, by configuration and name (the rest are as last generated). None for
    gateways and when an EnvoyFilter patches its routes: then whole configurations are regenerated."""
    if proxy.kind == "router" or envoyfilter.patches_routes(snapshot, proxy):
        return None
    services = snapshot.services_for(proxy)
    vss = snapshot.virtual_services_for(proxy)
    if proxy.mode == "proxy":
        return {n: rds.explicit_proxy_virtual_hosts(snapshot, proxy, services, vss, hosts) for n in names}
    return {n: rds.sidecar_virtual_hosts(snapshot, proxy, int(n), services, vss, hosts) for n in names}


def _generate_routes(snapshot: MeshSnapshot, proxy: Proxy, only: Iterable[str] | None) -> list[dict]:
    wanted = set(only) if only is not None else None
    names = [n for n in route_names(snapshot, proxy) if wanted is None or n in wanted]
    if not names:
        return []
    if proxy.kind == "router":
        servers_by_name: dict[str, list] = {}
        for port, servers in lds.gateway_servers(snapshot, proxy).items():
            for gw, server in servers:
                servers_by_name.setdefault(lds.gateway_route_name(server, gw, port), []).append((gw, server))
        return [rds.gateway_route_config(snapshot, proxy, n, servers_by_name[n]) for n in names]
    services = snapshot.services_for(proxy)
    vss = snapshot.virtual_services_for(proxy)
    if proxy.mode == "proxy":
        return [rds.explicit_proxy_route_config(snapshot, proxy, services, vss)]
    return [rds.sidecar_route_config(snapshot, proxy, int(n), services, vss) for n in names]
