"""What the injector is configured with (`InjectSettings`), and the names it reads and writes.

Everything a cluster operator may want to change — images, the control plane's address, the
revision, the trust domain, proxy resources — is a setting, not a constant. The defaults are
Istio's (``istiod.istio-system.svc:15012``, requests 100m/128Mi, limits 2000m/1024Mi, log level
``warning``, status port 15020) and plait's own image name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plait import __version__

# Pod annotations and labels the injector reads (Istio's names).
INJECT = "sidecar.istio.io/inject"
STATUS = "sidecar.istio.io/status"
REVISION_LABEL = "istio.io/rev"
NAMESPACE_INJECTION_LABEL = "istio-injection"
PROXY_CONFIG = "proxy.istio.io/config"
INCLUDE_OUTBOUND_IP_RANGES = "traffic.sidecar.istio.io/includeOutboundIPRanges"
EXCLUDE_OUTBOUND_IP_RANGES = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
INCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/includeInboundPorts"
EXCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/excludeInboundPorts"
EXCLUDE_OUTBOUND_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"
INCLUDE_OUTBOUND_PORTS = "traffic.sidecar.istio.io/includeOutboundPorts"
INTERCEPTION_MODE = "sidecar.istio.io/interceptionMode"
PROXY_CPU = "sidecar.istio.io/proxyCPU"
PROXY_MEMORY = "sidecar.istio.io/proxyMemory"
PROXY_CPU_LIMIT = "sidecar.istio.io/proxyCPULimit"
PROXY_MEMORY_LIMIT = "sidecar.istio.io/proxyMemoryLimit"
PROXY_IMAGE = "sidecar.istio.io/proxyImage"
LOG_LEVEL = "sidecar.istio.io/logLevel"
REWRITE_PROBES = "sidecar.istio.io/rewriteAppHTTPProbers"
STATUS_PORT = "status.sidecar.istio.io/port"
READINESS_INITIAL_DELAY = "readiness.status.sidecar.istio.io/initialDelaySeconds"
READINESS_PERIOD = "readiness.status.sidecar.istio.io/periodSeconds"
READINESS_FAILURE_THRESHOLD = "readiness.status.sidecar.istio.io/failureThreshold"

# What the injector adds (Istio's names).
INIT_CONTAINER = "istio-init"
PROXY_CONTAINER = "istio-proxy"
TOKEN_VOLUME = "istio-token"
ROOT_CERT_VOLUME = "istiod-ca-cert"
ENVOY_VOLUME = "istio-envoy"
ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"
TOKEN_DIR = "/var/run/secrets/tokens"
ROOT_CERT_DIR = "/var/run/secrets/istio"
ENVOY_DIR = "/etc/istio/proxy"
APP_PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"
APP_METRICS_ENV = "ISTIO_PROMETHEUS_ANNOTATIONS"  # the app's prometheus.io annotations, for the merged metrics

PROXY_UID = 1337
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
READINESS_PORT = 15021  # the agent's /healthz/ready
PROMETHEUS_PORT = 15090
# Istio's pod annotations telling Prometheus where the proxy's metrics are when they are not merged
# (Envoy's 15090, Istio's names; `plait.inject.prometheus`)
PROMETHEUS_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(PROMETHEUS_PORT),
    "prometheus.io/path": "/stats/prometheus",
}

ENVOY_LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")


class InjectError(ValueError):
    """The pod cannot be injected as asked (a bad annotation, a bad object); the message says why."""


def _default_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2000m", "memory": "1024Mi"}}


@dataclass(frozen=True)
class InjectSettings:
    """The mesh-wide injection configuration (Istio's values.global.proxy, meshConfig.defaultConfig)."""

    proxy_image: str = f"plait/proxy:{__version__}"
    init_image: str | None = None  # the istio-init image; default: proxy_image (as Istio's proxyv2)
    control_plane: str = "istiod.istio-system.svc:15012"  # xDS and CA, TLS, authenticated by the pod's token
    revision: str = ""  # the control plane's revision; "" is Istio's "default"
    trust_domain: str = "cluster.local"
    cluster_id: str = "Kubernetes"
    resources: dict[str, Any] = field(default_factory=_default_resources)
    log_level: str = "warning"  # Envoy's; sidecar.istio.io/logLevel overrides it per pod
    concurrency: int = 2  # Envoy worker threads (Istio's defaultConfig.concurrency for sidecars)
    drain_seconds: float = 5.0  # Istio's terminationDrainDuration
    status_port: int = 15020  # where the agent serves the rewritten app probes (/app-health/…)
    enable_prometheus_merge: bool = True  # meshConfig.enablePrometheusMerge: scrape the merged 15020
    hold_application_until_proxy_starts: bool = False
    proxy_metadata: dict[str, str] = field(default_factory=dict)  # env of istio-proxy (defaultConfig.proxyMetadata)
    rewrite_app_probers: bool = True
    token_audience: str = "istio-ca"
    image_pull_policy: str | None = None  # None: Kubernetes' default for the image's tag
    image_pull_secrets: tuple[str, ...] = ()
    injection_policy: str = "enabled"  # Istio's sidecarInjectorWebhook policy: enabled | disabled

    @property
    def revision_name(self) -> str:
        """The revision as labels and the status annotation spell it ("default" for "")."""
        return self.revision or "default"
