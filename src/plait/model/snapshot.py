"""MeshSnapshot: an immutable, indexed view of all configuration and the service registry.

Translation only reads it. A new snapshot is made per change; `with_changes`
keeps the (expensive) registry index when only routing config changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from plait.api.mesh import MESH_CONFIG_MAP, MeshConfig
from plait.api.networking import ConnectionPoolSettings
from plait.api.resources import Resource
from plait.model.hosts import fqdn, matches
from plait.model.protocol import Protocol
from plait.model.protocol import parse as parse_protocol
from plait.model.proxy import Proxy
from plait.model.services import Endpoint, Port, Service, build_registry, visible

ROOT_NAMESPACE = "istio-system"
REGISTRY_KINDS = frozenset({"Service", "ServiceEntry", "WorkloadEntry"})
MESH_GATEWAY = "mesh"

Key = tuple[str, str, str]  # (kind, namespace, name)


@dataclass(frozen=True)
class InboundPort:
    """A port this proxy's own workload serves for some service, or that a Sidecar ``ingress`` listener
    declares (then `default_endpoint` is its ``defaultEndpoint``, ``""`` for the original destination)."""

    service: Service
    port: Port
    endpoint: Endpoint
    default_endpoint: str | None = None
    connection_pool: ConnectionPoolSettings | None = None  # the Sidecar's, for the inbound cluster


def _by_name(resources: Iterable[Resource]) -> list[Resource]:
    return sorted(resources, key=lambda r: (r.namespace, r.name))


RuleIndex = dict[str, tuple[dict[str, list[Resource]], list[tuple[str, list[Resource]]]]]


def _index_rules(rules: list[Resource]) -> RuleIndex:
    """DestinationRules per namespace and host: exact hosts in a dict, wildcards most specific first;
    each host's rules in name order (several may differ only by workloadSelector)."""
    index: RuleIndex = {}
    for dr in rules:
        exact, wild = index.setdefault(dr.namespace, ({}, []))
        host = fqdn(dr.spec.host, dr.namespace)
        if host.startswith("*"):
            entry = next((rules for h, rules in wild if h == host), None)
            if entry is None:
                wild.append((host, entry := []))
            entry.append(dr)
        else:
            exact.setdefault(host, []).append(dr)
    for _, wild in index.values():
        wild.sort(key=lambda pair: -len(pair[0]))
    return index


def _selects(dr: Resource, proxy: Proxy) -> bool:
    labels = dr.spec.workload_selector.match_labels if dr.spec.workload_selector else {}
    return all(proxy.labels.get(k) == v for k, v in labels.items())


def _rule_visible(dr: Resource, proxy: Proxy) -> bool:
    """exportTo, except that a rule with a workloadSelector stays in its namespace (Istio ignores its
    exportTo) and is seen there by the workloads it selects only."""
    if dr.spec.workload_selector:
        return dr.namespace == proxy.namespace and _selects(dr, proxy)
    return visible(dr.namespace, dr.spec.export_to, proxy.namespace)


def _uses_consistent_hash(dr: Resource) -> bool:
    """Does any policy of this DestinationRule (top, subset or port level) hash requests?"""
    policies = [dr.spec.traffic_policy, *(s.traffic_policy for s in dr.spec.subsets)]
    balancers = [
        lb for p in policies if p for lb in (p.load_balancer, *(pl.load_balancer for pl in p.port_level_settings))
    ]
    return any(lb and lb.consistent_hash for lb in balancers)


def gateway_ref(name: str, namespace: str) -> str:
    """``bookinfo-gateway`` written in namespace ``default`` → ``default/bookinfo-gateway``; ``mesh`` stays."""
    if name == MESH_GATEWAY or "/" in name:
        return name
    return f"{namespace}/{name}"


class Registry:
    """Services by hostname and, per workload, the service ports it serves. Built only when
    Services, ServiceEntries or WorkloadEntries change."""

    def __init__(self, resources: Iterable[Resource]):
        self.services: dict[str, Service] = build_registry(resources)
        self.ports_by_workload: dict[str, list[InboundPort]] = {}
        for svc in self.services.values():
            for port in svc.ports:
                for ep in svc.endpoints.get(port.number, ()):
                    if ep.workload:
                        self.ports_by_workload.setdefault(ep.workload, []).append(InboundPort(svc, port, ep))


class MeshSnapshot:
    def __init__(
        self,
        resources: Iterable[Resource],
        *,
        root_namespace: str = ROOT_NAMESPACE,
        _registry: Registry | None = None,
        _by_kind: dict[str, list[Resource]] | None = None,
    ):
        self.resources: dict[Key, Resource] = (
            resources if isinstance(resources, dict) else {r.key: r for r in resources}
        )
        self.root_namespace = root_namespace
        self.registry = _registry or Registry(r for r in self.resources.values() if r.kind in REGISTRY_KINDS)
        self.services = self.registry.services
        if _by_kind is None:
            _by_kind = {}
            for r in self.resources.values():
                _by_kind.setdefault(r.kind, []).append(r)
            _by_kind = {kind: _by_name(items) for kind, items in _by_kind.items()}
        self._by_kind = _by_kind
        self.virtual_services = _by_kind.get("VirtualService", [])
        self.destination_rules = _by_kind.get("DestinationRule", [])
        self.gateways = _by_kind.get("Gateway", [])
        self.sidecars = _by_kind.get("Sidecar", [])
        self.workload_entries = _by_kind.get("WorkloadEntry", [])
        self.peer_authentications = _by_kind.get("PeerAuthentication", [])
        self.authorization_policies = _by_kind.get("AuthorizationPolicy", [])
        self.request_authentications = _by_kind.get("RequestAuthentication", [])
        self.envoy_filters = _by_kind.get("EnvoyFilter", [])
        self.proxy_configs = _by_kind.get("ProxyConfig", [])
        self.telemetries = _by_kind.get("Telemetry", [])
        mesh_map = self.resources.get(("ConfigMap", root_namespace, MESH_CONFIG_MAP))
        self.mesh_config: MeshConfig = mesh_map.spec.mesh_config() if mesh_map else MeshConfig()
        self._rules = _index_rules(self.destination_rules)
        self.hashing_rules = any(_uses_consistent_hash(dr) for dr in self.destination_rules)
        self._services_for: dict[tuple, tuple[Service, ...]] = {}

    def with_changes(self, upserts: Iterable[Resource] = (), deletes: Iterable[Key] = ()) -> "MeshSnapshot":
        """A new snapshot with some objects replaced or removed; untouched indexes are shared."""
        resources = dict(self.resources)
        upserts, deletes = list(upserts), list(deletes)
        for key in deletes:
            resources.pop(key, None)
        for r in upserts:
            resources[r.key] = r
        touched = {r.kind for r in upserts} | {k[0] for k in deletes}
        by_kind = dict(self._by_kind)
        for kind in touched:
            by_kind[kind] = _by_name(r for r in resources.values() if r.kind == kind)
        registry = None if touched & REGISTRY_KINDS else self.registry
        return MeshSnapshot(resources, root_namespace=self.root_namespace, _registry=registry, _by_kind=by_kind)

    # ------------------------------------------------------------ scoping

    def sidecar_for(self, proxy: Proxy) -> Resource | None:
        """The Sidecar that applies: one selecting the workload, else its namespace's default, else the root's."""
        candidates = [s for s in self.sidecars if s.namespace == proxy.namespace]
        for s in candidates:
            sel = s.spec.workload_selector
            if sel and sel.labels and all(proxy.labels.get(k) == v for k, v in sel.labels.items()):
                return s
        for s in candidates:
            if not s.spec.workload_selector:
                return s
        return next(
            (s for s in self.sidecars if s.namespace == self.root_namespace and not s.spec.workload_selector), None
        )

    def outbound_policy(self, proxy: Proxy) -> str:
        sidecar = self.sidecar_for(proxy)
        policy = sidecar.spec.outbound_traffic_policy if sidecar else None
        return policy.mode if policy else "ALLOW_ANY"

    def _egress_hosts(self, proxy: Proxy) -> list[tuple[str, str]] | None:
        """(namespace pattern, host pattern) pairs the proxy's Sidecar imports; None means everything."""
        sidecar = self.sidecar_for(proxy)
        if proxy.kind != "sidecar" or sidecar is None or not sidecar.spec.egress:
            return None
        pairs = []
        for listener in sidecar.spec.egress:
            for entry in listener.hosts:
                ns, host = entry.split("/", 1)
                pairs.append((proxy.namespace if ns == "." else ns, host))
        return pairs

    @staticmethod
    def _imported(pairs: list[tuple[str, str]] | None, namespace: str, hosts: Iterable[str]) -> bool:
        if pairs is None:
            return True
        hosts = list(hosts)
        return any(
            ns != "~" and (ns == "*" or ns == namespace) and any(matches(h, host) or matches(host, h) for host in hosts)
            for ns, h in pairs
        )

    def services_for(self, proxy: Proxy) -> list[Service]:
        """Services this proxy may reach: exported to its namespace and imported by its Sidecar
        (worked out once per namespace and Sidecar egress)."""
        pairs = self._egress_hosts(proxy)
        key = (proxy.namespace, None if pairs is None else tuple(pairs))
        found = self._services_for.get(key)
        if found is None:
            found = self._services_for[key] = tuple(
                s
                for s in sorted(self.services.values(), key=lambda s: s.hostname)
                if visible(s.namespace, s.export_to, proxy.namespace)
                and self._imported(pairs, s.namespace, [s.hostname])
            )
        return list(found)

    def virtual_services_for(self, proxy: Proxy, gateway: str = MESH_GATEWAY) -> list[Resource]:
        """VirtualServices bound to `gateway` (``mesh`` = sidecars) and visible to the proxy."""
        pairs = self._egress_hosts(proxy) if gateway == MESH_GATEWAY else None
        out = []
        for vs in self.virtual_services:
            bound = [gateway_ref(g, vs.namespace) for g in vs.spec.gateways] or [MESH_GATEWAY]
            if gateway not in bound:
                continue
            if not visible(vs.namespace, vs.spec.export_to, proxy.namespace) and gateway == MESH_GATEWAY:
                continue
            if self._imported(pairs, vs.namespace, vs.spec.hosts):
                out.append(vs)
        return out

    def destination_rule_for(self, proxy: Proxy, service: Service, *, inbound: bool = False) -> Resource | None:
        """Istio's precedence: the proxy's namespace, then the service's, then the root namespace;
        within one namespace the most specific host that has rules the proxy may see (an exact host
        beats a wildcard, a longer wildcard a shorter one), and among that host's rules one whose
        workloadSelector selects the proxy beats one without selector. As in Istio, once a host has
        rules in a namespace, the proxy gets one of those or none: a rule selecting other workloads of
        the proxy's namespace hides the namespace's and the service's less specific rules from it.
        `inbound` (the proxy's own service, for its inbound cluster): selectors are not honoured there,
        as in Istio, so only a rule without one is returned."""
        for namespace in (proxy.namespace, service.namespace, self.root_namespace):
            exact, wild = self._rules.get(namespace, ({}, []))
            hosts = [exact.get(service.hostname, [])] + [
                rules for host, rules in wild if matches(host, service.hostname)
            ]
            for rules in hosts:
                seen = [
                    dr
                    for dr in rules
                    if _rule_visible(dr, proxy) or (dr.spec.workload_selector and dr.namespace == proxy.namespace)
                ]
                if seen:
                    chosen = [
                        dr for dr in seen if _rule_visible(dr, proxy) and not (inbound and dr.spec.workload_selector)
                    ]
                    return min(chosen, key=lambda dr: not dr.spec.workload_selector, default=None)
        return None

    def gateways_for(self, proxy: Proxy) -> list[Resource]:
        if proxy.kind != "router":
            return []
        return [g for g in self.gateways if all(proxy.labels.get(k) == v for k, v in g.spec.selector.items())]

    def policies_for(self, proxy: Proxy, policies: list[Resource]) -> list[Resource]:
        """Security policies (PeerAuthentication, AuthorizationPolicy, RequestAuthentication) that apply
        to a proxy: those in the root namespace (mesh-wide) and in its own namespace, whose selector,
        if any, matches its labels. Ordered root namespace first, then namespace-wide, then selecting."""

        def applies(policy: Resource) -> bool:
            if policy.namespace not in (self.root_namespace, proxy.namespace):
                return False
            selector = policy.spec.selector.match_labels if policy.spec.selector else {}
            return all(proxy.labels.get(k) == v for k, v in selector.items())

        def rank(policy: Resource) -> tuple:
            return (
                policy.namespace != self.root_namespace,
                bool(policy.spec.selector and policy.spec.selector.match_labels),
            )

        return sorted((p for p in policies if applies(p)), key=rank)

    def workload_ports(self, proxy: Proxy) -> list[InboundPort]:
        """Every (service, port) the proxy's own workload is an endpoint of."""
        return self.registry.ports_by_workload.get(proxy.workload, [])

    def inbound_ports(self, proxy: Proxy) -> list[InboundPort]:
        """The service ports the proxy's own workload serves (deduplicated by workload port), or, as in
        Istio, only the ports of its Sidecar's ``ingress`` listeners when it has some; the Sidecar's
        connection pool (the listener's, else ``inboundConnectionPool``) goes with each."""
        sidecar = self.sidecar_for(proxy)
        spec = sidecar.spec if sidecar else None
        if sidecar is not None and spec.ingress:
            return sorted(self._ingress_ports(proxy, sidecar), key=lambda ip: ip.endpoint.port)
        pool = spec.inbound_connection_pool if spec else None
        seen, out = set(), []
        for ip in self.workload_ports(proxy):
            if ip.endpoint.port not in seen:
                seen.add(ip.endpoint.port)
                out.append(replace(ip, connection_pool=pool or self._rule_pool(proxy, ip.service, ip.port.number)))
        return sorted(out, key=lambda ip: ip.endpoint.port)

    def _rule_pool(self, proxy: Proxy, service: Service, port: int) -> ConnectionPoolSettings | None:
        """The connectionPool of the DestinationRule for the proxy's own service, at that service port:
        Istio sets it on the receiving side too (a Sidecar's pool overrides it)."""
        rule = self.destination_rule_for(proxy, service, inbound=True)
        policy = rule.spec.traffic_policy.for_port(port) if rule and rule.spec.traffic_policy else None
        return policy.connection_pool if policy else None

    def _ingress_ports(self, proxy: Proxy, sidecar: Resource) -> list[InboundPort]:
        """One per ingress listener; its service is the one the workload serves on that port, else one
        named after the Sidecar (Istio's stand-in)."""
        served = {ip.endpoint.port: ip.service for ip in self.workload_ports(proxy)}
        out = []
        for listener in sidecar.spec.ingress:
            number = listener.port.number
            port = Port(listener.port.name, number, parse_protocol(listener.port.protocol) or Protocol.AUTO)
            service = served.get(number) or Service(
                hostname=f"{sidecar.name}.{sidecar.namespace}",
                namespace=sidecar.namespace,
                name=sidecar.name,
                origin="Sidecar",
                ports=(port,),
            )
            endpoint = Endpoint(address=proxy.ip, port=number, workload=proxy.workload, namespace=proxy.namespace)
            pool = (
                listener.connection_pool
                or sidecar.spec.inbound_connection_pool
                or self._rule_pool(proxy, service, number)
            )
            out.append(
                InboundPort(
                    service, port, endpoint, default_endpoint=listener.default_endpoint or "", connection_pool=pool
                )
            )
        return out

    def workload(self, name: str) -> Resource | None:
        """A WorkloadEntry by ``name`` or ``namespace/name``."""
        ns, _, short = name.rpartition("/")
        for we in self.workload_entries:
            if we.name == short and (not ns or we.namespace == ns):
                return we
        return None
