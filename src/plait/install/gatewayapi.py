"""Kubernetes manifests for a Gateway of class ``istio``: what Istio's gateway controller deploys.

In: a Gateway API Gateway (a loaded Resource) and the install settings. Out: the ServiceAccount, Role,
RoleBinding, Deployment and Service ``<gateway>-istio`` (plait's gateway agent, labelled
``gateway.networking.k8s.io/gateway-name``), built by the same builder as the profile's gateways. The
Service has one port per listener port; its type is the ``networking.istio.io/service-type``
annotation, else LoadBalancer, as in Istio. Pure; applying them (and deleting them with the Gateway)
is the Kubernetes source's business.
"""

from __future__ import annotations

from typing import Any

from plait.api.resources import Resource
from plait.install.manifests import gateway
from plait.install.settings import GatewaySettings, InstallSettings, K8sSettings
from plait.lower import GATEWAY_NAME_LABEL

SERVICE_TYPE_ANNOTATION = "networking.istio.io/service-type"


def unprivileged(port: int) -> int:
    """Where the proxy (uid 1337) listens for a listener port: ports below 1024 + 8000 (80 → 8080, 443 → 8443,
    as Istio's profile gateways), since Kubernetes 1.20 counts the sysctl Istio sets
    (net.ipv4.ip_unprivileged_port_start=0) as unsafe; the Service keeps the listener's port."""
    return port + 8000 if port < 1024 else port


def gateway_settings(resource: Resource) -> GatewaySettings:
    """The deployed gateway of a Gateway API Gateway, as the settings of a profile gateway."""
    ports = sorted({listener.port for listener in resource.spec.listeners})
    service_ports = tuple({"name": f"port-{port}", "port": port, "targetPort": unprivileged(port)} for port in ports)
    k8s = K8sSettings(
        service_type=resource.meta.annotations.get(SERVICE_TYPE_ANNOTATION, "LoadBalancer"),
        service_ports=service_ports,
    )
    labels = {GATEWAY_NAME_LABEL: resource.name, "istio.io/gateway-name": resource.name}
    return GatewaySettings(f"{resource.name}-istio", resource.namespace, labels, k8s=k8s)


def gateway_manifests(settings: InstallSettings, resource: Resource) -> list[dict[str, Any]]:
    """Everything `<gateway>-istio` needs on Kubernetes."""
    return gateway(settings, gateway_settings(resource))
