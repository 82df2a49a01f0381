"""The DNS name table a proxy's agent answers from: Istio's NDS ``NameTable``, built purely.

`build_name_table(snapshot, proxy)` maps every host the proxy may reach (exported to its
namespace and imported by its Sidecar) to the IPs its DNS proxy answers with, as istiod's
``BuildNameTable`` does:

* a Service or ServiceEntry with addresses: those addresses (CIDRs other than /32 are not
  addresses and are left out);
* a Kubernetes Service without one (headless, ``clusterIP: None``): its ready endpoints' IPs on its
  first port, so headless names resolve to pods;
* a ServiceEntry host without addresses: no entry (the name is left to the upstream DNS), unless
  the proxy asks for auto-allocation (Istio's ``ISTIO_META_DNS_AUTO_ALLOCATE``), which gives each
  such host a stable VIP in ``240.240.0.0/16`` (class E, never routed), the same for every proxy;
* wildcard hosts: never (DNS cannot answer a pattern).

Kubernetes services carry their short name and namespace, so the agent can answer the names the
pod's search domains produce (``reviews``, ``reviews.default``, ``reviews.default.svc``).
`to_json`/`from_json` are the wire form (the proto3 JSON of Istio's message).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from plait.model import MeshSnapshot, Proxy
from plait.model.services import Service

NDS_TYPE_URL = "type.googleapis.com/istio.networking.nds.v1.NameTable"
KUBERNETES = "Kubernetes"
EXTERNAL = "External"  # Istio's registry name for ServiceEntries
AUTO_ALLOCATE_NETWORK = ipaddress.IPv4Network("240.240.0.0/16")


@dataclass(frozen=True)
class NameInfo:
    """One host's entry: Istio's ``NameTable.NameInfo``."""

    ips: tuple[str, ...]
    registry: str
    shortname: str = ""  # Kubernetes services only
    namespace: str = ""  # Kubernetes services only
    alt_hosts: tuple[str, ...] = ()  # names the host also answers to (Istio: multi-cluster/cluster-set names)

    def to_dict(self) -> dict:
        out: dict = {"ips": list(self.ips), "registry": self.registry}
        if self.shortname:
            out |= {"shortname": self.shortname, "namespace": self.namespace}
        if self.alt_hosts:
            out["altHosts"] = list(self.alt_hosts)
        return out


@dataclass(frozen=True)
class NameTable:
    table: Mapping[str, NameInfo] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"table": {host: info.to_dict() for host, info in sorted(self.table.items())}}


def from_json(data: object) -> NameTable:
    """Parse the wire form; raises ValueError naming the entry and field that is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("table", {}), dict):
        raise ValueError('a name table is a JSON object {"table": {HOST: {"ips": [...], ...}}}')
    table = {}
    for host, entry in data.get("table", {}).items():
        if not isinstance(entry, dict):
            raise ValueError(f"table.{host}: expected an object with ips, registry, shortname, namespace")
        ips = entry.get("ips", [])
        if not isinstance(ips, list) or not all(_is_ip(ip) for ip in ips):
            raise ValueError(f"table.{host}.ips: expected a list of IP addresses, got {ips!r}")
        table[host.lower()] = NameInfo(
            ips=tuple(ips),
            registry=str(entry.get("registry", "")),
            shortname=str(entry.get("shortname", "")),
            namespace=str(entry.get("namespace", "")),
            alt_hosts=tuple(str(h).lower() for h in entry.get("altHosts", [])),
        )
    return NameTable(table)


def build_name_table(snapshot: MeshSnapshot, proxy: Proxy, *, auto_allocate: bool = False) -> NameTable:
    """The name table for `proxy` (see the module docstring)."""
    allocated = auto_allocated_addresses(snapshot.services.values()) if auto_allocate else {}
    table: dict[str, NameInfo] = {}
    for service in snapshot.services_for(proxy):
        if service.hostname.startswith("*"):
            continue
        ips = service_ips(service) or allocated.get(service.hostname, ())
        if not ips:
            continue
        table[service.hostname] = _name_info(service, ips)
    return NameTable(table)


def service_ips(service: Service) -> tuple[str, ...]:
    """The IPs DNS answers for `service` without auto-allocation; () when it has none to give."""
    ips = tuple(a.removesuffix("/32") for a in service.addresses if _is_ip(a.removesuffix("/32")))
    if ips or service.origin != "Service" or not service.ports:
        return ips
    endpoints = service.endpoints.get(service.ports[0].number, ())
    return tuple(dict.fromkeys(e.address for e in endpoints if e.ready and _is_ip(e.address)))


def auto_allocated_addresses(services: Iterable[Service]) -> dict[str, tuple[str, ...]]:
    """A VIP for every ServiceEntry host with no address of its own and a resolution other than
    NONE, as Istio's DNS auto-allocation: hosts in name order take 240.240.0.1, .0.2, … (skipping
    each block's .0 and .255), so a host keeps its VIP while the set of such hosts is unchanged."""
    hosts = sorted(
        s.hostname
        for s in services
        if s.origin == "ServiceEntry" and not s.addresses and s.resolution != "NONE" and not s.hostname.startswith("*")
    )
    usable = (a for a in AUTO_ALLOCATE_NETWORK if a.packed[-1] not in (0, 255))
    return {host: (str(address),) for host, address in zip(hosts, usable)}


def _name_info(service: Service, ips: tuple[str, ...]) -> NameInfo:
    if service.origin == "Service":
        return NameInfo(ips=ips, registry=KUBERNETES, shortname=service.name, namespace=service.namespace)
    return NameInfo(ips=ips, registry=EXTERNAL)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
