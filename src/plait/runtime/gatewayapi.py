"""Automated deployment of Gateway API gateways in the local mesh, as Istio deploys them on Kubernetes.

In: the mesh's configuration (a Gateway of class ``istio``) and host ports handed out by the runtime.
Out: what the runtime runs for each such Gateway: a gateway pod ``<gateway>-istio`` labelled
``gateway.networking.k8s.io/gateway-name: <gateway>`` and the Service ``<gateway>-istio`` whose ports are
the listeners' ports, each mapped (targetPort) to the host port the gateway's Envoy listens on.
`plan` is pure; `LocalMesh` applies it when the mesh starts and whenever Gateways change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from plait.api.resources import Resource
from plait.lower import GATEWAY_NAME_LABEL, deployed_gateways


@dataclass(frozen=True)
class DeployedGateway:
    """One Gateway's proxy: its pod name, namespace, labels, and listener port → host port."""

    gateway: str
    namespace: str
    ports: tuple[tuple[int, int], ...]  # (listener port, host port)

    @property
    def name(self) -> str:
        return f"{self.gateway}-istio"

    @property
    def labels(self) -> dict[str, str]:
        return {GATEWAY_NAME_LABEL: self.gateway, "istio.io/gateway-name": self.gateway}

    @property
    def pod_ports(self) -> dict[str, int]:
        return {f"port-{port}": host for port, host in self.ports}

    def service(self) -> dict:
        """The Service ``<gateway>-istio``: the address routes send to (Istio's ``<gateway>-istio``)."""
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": {GATEWAY_NAME_LABEL: self.gateway}},
            "spec": {
                "selector": {GATEWAY_NAME_LABEL: self.gateway},
                "ports": [{"name": f"port-{port}", "port": port, "targetPort": host} for port, host in self.ports],
            },
        }


def plan(
    resources: Iterable[Resource], current: dict[str, DeployedGateway], host_port: Callable[[], int]
) -> dict[str, DeployedGateway]:
    """The gateways to run, keyed ``namespace/gateway``: those running keep their host ports while
    their listener ports stay the same; a new or changed Gateway gets fresh host ports."""
    out = {}
    for gateway in deployed_gateways(resources):
        key = f"{gateway.namespace}/{gateway.name}"
        listener_ports = sorted({listener.port for listener in gateway.spec.listeners})
        running = current.get(key)
        if running and [port for port, _ in running.ports] == listener_ports:
            out[key] = running
        else:
            ports = tuple((port, host_port()) for port in listener_ports)
            out[key] = DeployedGateway(gateway.name, gateway.namespace, ports)
    return out
