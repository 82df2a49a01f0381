"""What an install is made of, once its IstioOperator input is read: frozen settings (pure data).

In: nothing (defaults are Istio's default profile with plait's image). Out: `InstallSettings` and its
parts (`K8sSettings` per component, `GatewaySettings` per gateway), read by `plait.install.manifests`
and made by `plait.install.operator` from IstioOperator files and ``--set`` flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plait import __version__

ISTIOD = "istiod"
INGRESS = "istio-ingressgateway"
EGRESS = "istio-egressgateway"
DEFAULT_IMAGE = f"plait/proxy:{__version__}"
DEFAULT_AUTOSCALING = {"minReplicas": 1, "maxReplicas": 5}


@dataclass(frozen=True)
class K8sSettings:
    """A component's ``k8s`` block: what its Deployment, Service and HorizontalPodAutoscaler get."""

    resources: dict[str, Any] = field(default_factory=dict)
    env: tuple[dict[str, Any], ...] = ()
    hpa: dict[str, Any] | None = None  # minReplicas, maxReplicas[, metrics]; None: no HorizontalPodAutoscaler
    node_selector: dict[str, str] = field(default_factory=dict)
    replicas: int | None = None
    service_type: str | None = None  # None: the component's own default
    service_ports: tuple[dict[str, Any], ...] | None = None  # None: the component's own default


@dataclass(frozen=True)
class GatewaySettings:
    """One ingress or egress gateway: its name, namespace, pod labels and k8s settings."""

    name: str
    namespace: str
    labels: dict[str, str]
    egress: bool = False
    k8s: K8sSettings = field(default_factory=K8sSettings)

    @property
    def service_account(self) -> str:
        return f"{self.name}-service-account"


def default_gateway(egress: bool = False, namespace: str = "istio-system") -> GatewaySettings:
    """Istio's istio-ingressgateway (or istio-egressgateway) with the default profile's autoscaling."""
    name, istio = (EGRESS, "egressgateway") if egress else (INGRESS, "ingressgateway")
    return GatewaySettings(
        name, namespace, {"app": name, "istio": istio}, egress, K8sSettings(hpa=dict(DEFAULT_AUTOSCALING))
    )


@dataclass(frozen=True)
class InstallSettings:
    """What `plait install` is configured with; the defaults are Istio's default profile and plait's image."""

    namespace: str = "istio-system"  # values.global.istioNamespace
    image: str = DEFAULT_IMAGE  # control plane, gateway agent (and the injected proxy): hub/proxy:tag
    image_pull_policy: str = "IfNotPresent"
    revision: str = ""  # "": the default revision
    owner: str = (
        "installed-state"  # the IstioOperator's metadata.name (label install.operator.istio.io/owning-resource)
    )
    log_level: str = "info"
    base: bool = True  # the CRDs, the namespace (component Base)
    pilot: K8sSettings | None = field(default_factory=lambda: K8sSettings(hpa=dict(DEFAULT_AUTOSCALING)))
    gateways: tuple[GatewaySettings, ...] = (default_gateway(),)
    sidecar_injector: bool = True  # the MutatingWebhookConfiguration (istiod's /inject)
    mesh_config: dict[str, Any] = field(default_factory=dict)  # meshConfig, stored in ConfigMap istio[-REV]
    prometheus: bool = False  # addons.prometheus: a Prometheus server scraping the mesh (plait.install.addons)
    legacy_apis: bool = False  # autoscaling/v2beta2 and policy/v1beta1 (Kubernetes before 1.23 / 1.21)

    @property
    def istiod(self) -> str:
        """The control plane's Deployment and Service: ``istiod[-REV]``."""
        return f"{ISTIOD}-{self.revision}" if self.revision else ISTIOD

    @property
    def revision_label(self) -> str:
        return self.revision or "default"

    @property
    def control_plane(self) -> str:
        """Where proxies of this revision find xDS and the CA (TLS, pod token): meshConfig's
        defaultConfig.discoveryAddress, else ``istiod[-REV].<namespace>.svc:15012``."""
        configured = (self.mesh_config.get("defaultConfig") or {}).get("discoveryAddress")
        return configured or f"{self.istiod}.{self.namespace}.svc:15012"

    @property
    def ingress_gateways(self) -> tuple[GatewaySettings, ...]:
        return tuple(g for g in self.gateways if not g.egress)

    @property
    def egress_gateways(self) -> tuple[GatewaySettings, ...]:
        return tuple(g for g in self.gateways if g.egress)
