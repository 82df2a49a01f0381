"""The service registry: Kubernetes Services + WorkloadEntries, and ServiceEntries, as one model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from plait.api import networking as net
from plait.api.resources import K8sServiceSpec, Resource
from plait.model import protocol as proto
from plait.model.hosts import DOMAIN_SUFFIX
from plait.model.protocol import Protocol


@dataclass(frozen=True)
class Port:
    name: str
    number: int
    protocol: Protocol
    target_port: int | str | None = None


@dataclass(frozen=True)
class Endpoint:
    """One workload instance serving one service port."""

    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict)
    locality: str | None = None
    weight: int | None = None
    service_account: str | None = None
    workload: str | None = None  # "namespace/name" of the WorkloadEntry (or pod) behind it
    namespace: str = "default"
    ready: bool = True  # a workload that is not ready stays out of EDS (it keeps its own inbound config)

    def has_labels(self, selector: Mapping[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class Service:
    hostname: str
    namespace: str
    name: str
    origin: str  # "Service" or "ServiceEntry"
    ports: tuple[Port, ...]
    addresses: tuple[str, ...] = ()
    resolution: str = "EDS"  # EDS (registry endpoints), STATIC, DNS, DNS_ROUND_ROBIN, NONE
    mesh_external: bool = False
    export_to: frozenset[str] = frozenset({"*"})
    endpoints: Mapping[int, tuple[Endpoint, ...]] = field(default_factory=dict)  # by service port number
    subject_alt_names: tuple[str, ...] = ()  # a ServiceEntry's: the identities its servers present

    @property
    def short_name(self) -> str:
        return self.hostname.split(".", 1)[0]

    def port(self, number: int) -> Port | None:
        return next((p for p in self.ports if p.number == number), None)

    @property
    def address(self) -> str:
        return self.addresses[0] if self.addresses else "0.0.0.0"


def visible(owner_namespace: str, export_to: Iterable[str], viewer_namespace: str) -> bool:
    """Istio's exportTo: '*' everyone (the default), '.' the owner's namespace, '~' nobody, or names."""
    export = set(export_to) or {"*"}
    if "*" in export:
        return True
    if "." in export and viewer_namespace == owner_namespace:
        return True
    return viewer_namespace in export


READY_ANNOTATION = "plait.io/ready"  # "false" on a WorkloadEntry: registered but not ready


def _workload_endpoint(we: Resource | None, spec: net.WorkloadEntrySpec, port: int, namespace: str) -> Endpoint:
    return Endpoint(
        address=spec.address,
        port=port,
        labels=MappingProxyType(dict(spec.labels)),
        locality=spec.locality,
        weight=spec.weight,
        service_account=spec.service_account or "default",
        workload=f"{we.namespace}/{we.name}" if we else None,
        namespace=namespace,
        ready=not we or we.meta.annotations.get(READY_ANNOTATION) != "false",
    )


def _k8s_target(target: int | str | None, we: net.WorkloadEntrySpec, number: int, name: str) -> int | None:
    """The port a workload listens on: a numeric targetPort, a named one looked up in its ports, or the port."""
    if isinstance(target, str) and not target.isdigit():
        return we.ports.get(target)
    if target is not None:
        return int(target)
    return we.ports.get(name, number)


class WorkloadIndex:
    """WorkloadEntries by (namespace, label, value), so selectors need not scan them all."""

    def __init__(self, workloads: Iterable[Resource]):
        self._by_label: dict[tuple[str, str, str], list[Resource]] = {}
        for we in workloads:
            for label in we.spec.labels.items():
                self._by_label.setdefault((we.meta.namespace, *label), []).append(we)

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[Resource]:
        """Workloads in `namespace` carrying every label of a non-empty selector."""
        if not selector:
            return []
        first, *rest = selector.items()
        candidates = self._by_label.get((namespace, *first), [])
        return [we for we in candidates if all(we.spec.labels.get(k) == v for k, v in rest)]


def from_k8s_service(svc: Resource, workloads: WorkloadIndex, domain: str = DOMAIN_SUFFIX) -> Service:
    spec: K8sServiceSpec = svc.spec
    ports = tuple(
        Port(p.name, p.port, proto.from_port(p.name, p.app_protocol, p.protocol), p.target_port) for p in spec.ports
    )
    endpoints: dict[int, tuple[Endpoint, ...]] = {}
    selected = workloads.select(svc.namespace, spec.selector)
    for port in spec.ports:
        eps = []
        for we in selected:
            target = _k8s_target(port.target_port, we.spec, port.port, port.name)
            if target is not None:
                eps.append(_workload_endpoint(we, we.spec, target, we.namespace))
        endpoints[port.port] = tuple(eps)
    addresses = (spec.cluster_ip,) if spec.cluster_ip and spec.cluster_ip != "None" else ()
    return Service(
        hostname=f"{svc.name}.{svc.namespace}.{domain}",
        namespace=svc.namespace,
        name=svc.name,
        origin="Service",
        ports=ports,
        addresses=addresses,
        resolution="EDS",
        endpoints=MappingProxyType(endpoints),
    )


def from_service_entry(se: Resource, workloads: WorkloadIndex) -> list[Service]:
    """One Service per host, as Istio does; endpoints from the entry or from selected WorkloadEntries."""
    spec: net.ServiceEntrySpec = se.spec
    ports = tuple(
        Port(p.name, p.number, proto.parse(p.protocol) or proto.from_port(p.name), p.target_port) for p in spec.ports
    )
    if spec.workload_selector:
        sources = [(we, we.spec) for we in workloads.select(se.namespace, spec.workload_selector.labels)]
    else:
        sources = [(None, e) for e in spec.endpoints]
    services = []
    for host in spec.hosts:
        endpoints: dict[int, tuple[Endpoint, ...]] = {}
        for port in spec.ports:
            eps = []
            for we, ep in sources:
                number = ep.ports.get(port.name) or port.target_port or port.number
                eps.append(_workload_endpoint(we, ep, number, se.namespace))
            endpoints[port.number] = tuple(eps)
        services.append(
            Service(
                hostname=host,
                namespace=se.namespace,
                name=se.name,
                origin="ServiceEntry",
                ports=ports,
                addresses=tuple(a for a in spec.addresses if "/" not in a or a.endswith("/32")),
                resolution=spec.resolution,
                mesh_external=spec.location == "MESH_EXTERNAL",
                export_to=frozenset(spec.export_to or ["*"]),
                endpoints=MappingProxyType(endpoints),
                subject_alt_names=tuple(spec.subject_alt_names),
            )
        )
    return services


def build_registry(resources: Iterable[Resource], domain: str = DOMAIN_SUFFIX) -> dict[str, Service]:
    """All services by hostname. Kubernetes Services win over ServiceEntries for the same host."""
    resources = list(resources)
    workloads = WorkloadIndex(r for r in resources if r.kind == "WorkloadEntry")
    registry: dict[str, Service] = {}
    for r in sorted((r for r in resources if r.kind == "ServiceEntry"), key=lambda r: (r.namespace, r.name)):
        for svc in from_service_entry(r, workloads):
            registry.setdefault(svc.hostname, svc)
    for r in (r for r in resources if r.kind == "Service"):
        svc = from_k8s_service(r, workloads, domain)
        registry[svc.hostname] = svc
    return registry
