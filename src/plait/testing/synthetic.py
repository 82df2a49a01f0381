"""A synthetic mesh of any size, as Istio YAML loaded through `plait.api.load_text`.

Flows in: a `MeshShape` (how many services, endpoints per service, namespaces).
Flows out: the YAML text, the typed `Resource`s, and the proxies to translate for.
Pure (no I/O, no clock), deterministic: the same shape gives the same objects.

Each service ``svc-NNNN`` is a Kubernetes Service (a cluster IP, one HTTP port
8080 named ``http``) with WorkloadEntries ``svc-NNNN-K`` labelled ``app`` and
``version`` (v1, v2, v1, …). Every `routed_every`-th service also has a
DestinationRule with subsets v1 and v2 and a VirtualService (a header match to
v2, then a 90/10 split, with retries and a timeout). An ingress gateway
(WorkloadEntry labelled ``istio: ingressgateway``, Gateway on HTTP 80 for
``*``) serves a VirtualService that routes a few hostnames to the first services.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from plait.api import Resource, load_text
from plait.model import MeshSnapshot, Proxy
from plait.model.proxy import ProxyMode

SERVICE_PORT = 8080
SERVICE_NETWORK = ipaddress.IPv4Address("10.96.0.0")  # cluster IPs, as Kubernetes habitually allocates them
WORKLOAD_NETWORK = ipaddress.IPv4Address("10.128.0.0")  # room for ~4 million workload addresses
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_ADDRESS = "10.127.0.1"
GATEWAY_NAME = "istio-ingressgateway"
GATEWAY_HOSTS = ("shop.example.com", "api.example.com", "www.example.com")
GATEWAY_ROUTED_SERVICES = 5  # the gateway VirtualService sends /svc-NNNN to the first few services


@dataclass(frozen=True)
class MeshShape:
    """How big the synthetic mesh is."""

    services: int = 1000
    endpoints_per_service: int = 3
    namespaces: int = 4
    routed_every: int = 10  # every n-th service gets a DestinationRule and a VirtualService

    def service_name(self, index: int) -> str:
        return f"svc-{index:04d}"

    def namespace(self, index: int) -> str:
        return f"mesh-{index % self.namespaces}"

    def is_routed(self, index: int) -> bool:
        return index % self.routed_every == 0

    def hostname(self, index: int) -> str:
        return f"{self.service_name(index)}.{self.namespace(index)}.svc.cluster.local"

    def workload_name(self, index: int, endpoint: int) -> str:
        return f"{self.service_name(index)}-{endpoint}"

    @property
    def routed_services(self) -> int:
        return len(range(0, self.services, self.routed_every))


def _service(shape: MeshShape, index: int) -> str:
    name, namespace = shape.service_name(index), shape.namespace(index)
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}
spec:
  clusterIP: {SERVICE_NETWORK + index + 1}
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: {SERVICE_PORT}, targetPort: {SERVICE_PORT}}}
"""


def workload_entry_yaml(shape: MeshShape, index: int, endpoint: int, *, version: str | None = None) -> str:
    """A service's endpoint; the benchmark gives it another `version` label to make an endpoint update."""
    name, namespace = shape.service_name(index), shape.namespace(index)
    address = WORKLOAD_NETWORK + index * shape.endpoints_per_service + endpoint + 1
    version = version or ("v2" if endpoint % 2 else "v1")
    return f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {shape.workload_name(index, endpoint)}, namespace: {namespace}}}
spec:
  address: {address}
  labels: {{app: {name}, version: {version}}}
  serviceAccount: {name}
  ports: {{http: {SERVICE_PORT}}}
"""


def _destination_rule(shape: MeshShape, index: int) -> str:
    name, namespace = shape.service_name(index), shape.namespace(index)
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: {name}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


def virtual_service_yaml(shape: MeshShape, index: int, *, v1_weight: int = 90) -> str:
    """The VirtualService of a routed service; the benchmark changes `v1_weight` to make an update."""
    name, namespace = shape.service_name(index), shape.namespace(index)
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{name}]
  http:
  - match:
    - headers: {{end-user: {{exact: jason}}}}
    route:
    - destination: {{host: {name}, subset: v2}}
  - route:
    - destination: {{host: {name}, subset: v1}}
      weight: {v1_weight}
    - destination: {{host: {name}, subset: v2}}
      weight: {100 - v1_weight}
    retries: {{attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure,reset"}}
    timeout: 10s
"""


def _gateway_objects(shape: MeshShape) -> str:
    routes = "".join(
        f"""  - match:
    - uri: {{prefix: /{shape.service_name(i)}}}
    route:
    - destination: {{host: {shape.hostname(i)}, port: {{number: {SERVICE_PORT}}}}}
"""
        for i in range(min(GATEWAY_ROUTED_SERVICES, shape.services))
    )
    return f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {GATEWAY_NAME}, namespace: {GATEWAY_NAMESPACE}}}
spec:
  address: {GATEWAY_ADDRESS}
  labels: {{istio: ingressgateway, app: {GATEWAY_NAME}}}
  serviceAccount: {GATEWAY_NAME}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: {GATEWAY_NAMESPACE}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ingress, namespace: {GATEWAY_NAMESPACE}}}
spec:
  hosts: [{", ".join(GATEWAY_HOSTS)}]
  gateways: [{GATEWAY_NAMESPACE}/ingress]
  http:
{routes}"""


def mesh_yaml(shape: MeshShape = MeshShape()) -> str:
    """The whole mesh as one multi-document YAML text."""
    docs = []
    for index in range(shape.services):
        docs.append(_service(shape, index))
        docs += [workload_entry_yaml(shape, index, k) for k in range(shape.endpoints_per_service)]
        if shape.is_routed(index):
            docs += [_destination_rule(shape, index), virtual_service_yaml(shape, index)]
    docs.append(_gateway_objects(shape))
    return "---\n".join(docs)


def load_one(text: str) -> Resource:
    """A single object from YAML text, failing loudly on any error."""
    (resource,) = load_text(text).raise_for_errors()
    return resource


def mesh_resources(shape: MeshShape = MeshShape()) -> list[Resource]:
    """The mesh as typed Resources, parsed and validated as user YAML would be."""
    return load_text(mesh_yaml(shape), file="<synthetic mesh>").raise_for_errors()


def sidecar_proxy(snapshot: MeshSnapshot, shape: MeshShape = MeshShape(), *, mode: ProxyMode = "capture") -> Proxy:
    """The sidecar of the first workload of the first service."""
    we = snapshot.workload(f"{shape.namespace(0)}/{shape.workload_name(0, 0)}")
    return Proxy.from_workload_entry(we, mode=mode)


def gateway_proxy(snapshot: MeshSnapshot) -> Proxy:
    """The ingress gateway (a router)."""
    return Proxy.from_workload_entry(snapshot.workload(f"{GATEWAY_NAMESPACE}/{GATEWAY_NAME}"))
