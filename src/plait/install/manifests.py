"""The objects that put plait in a cluster, as Istio's default profile names them (pure).

In: `InstallSettings` (namespace, image, which parts). Out: lists of Kubernetes objects as dicts,
grouped in the order they are applied (`components`): the core (namespace, service accounts, RBAC),
istiod (Deployment + Service, the validating webhook and, when enabled, the sidecar injector's
mutating webhook) and the ingress gateway (Deployment + Service). No I/O: `plait manifest
generate` prints them and `plait install` applies them.

The control plane's RBAC is the union of what its parts declare: `READER_RULES` (the Kubernetes
source's watches) and `CLUSTER_RULES`/`NAMESPACE_RULES` (the CA, the webhook, the leader's writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plait import __version__
from plait.controlplane.injector import mutating_webhook_configuration
from plait.controlplane.kubeidentity import CLUSTER_RULES, NAMESPACE_RULES
from plait.controlplane.webhook import validating_webhook_configuration
from plait.sources.kubernetes import READER_RULES

ISTIOD = "istiod"
INGRESS = "istio-ingressgateway"
INGRESS_ACCOUNT = "istio-ingressgateway-service-account"
INJECTOR_CONFIGURATION = "istio-sidecar-injector"
TOKEN_AUDIENCE = "istio-ca"
ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"
PROXY_UID = 1337

# istiod's ports: plaintext xDS, xDS + CA over TLS, HTTP API / monitoring, webhooks (Service 443 → 15017).
ISTIOD_PORTS = (
    ("grpc-xds", 15010, 15010),
    ("https-dns", 15012, 15012),
    ("https-webhook", 443, 15017),
    ("http-monitoring", 15014, 15014),
)
# The ingress gateway's Service ports, as Istio's default profile (port → the gateway pod's targetPort).
INGRESS_PORTS = (("status-port", 15021, 15021), ("http2", 80, 8080), ("https", 443, 8443))


@dataclass(frozen=True)
class InstallSettings:
    """What `plait install` is configured with; the defaults are Istio's names and plait's image."""

    namespace: str = "istio-system"
    image: str = f"plait/proxy:{__version__}"  # control plane, gateway agent (and the injected proxy)
    image_pull_policy: str = "IfNotPresent"
    ingress_gateway: bool = True
    ingress_service_type: str = "LoadBalancer"
    sidecar_injector: bool = True  # the MutatingWebhookConfiguration (istiod's /inject)
    log_level: str = "info"

    @property
    def control_plane(self) -> str:
        """Where proxies find xDS and the CA (TLS, pod token)."""
        return f"{ISTIOD}.{self.namespace}.svc:15012"


def _meta(name: str, namespace: str | None = None, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    return meta


def core(settings: InstallSettings) -> list[dict[str, Any]]:
    """The namespace, the control plane's and the gateway's service accounts, and the control plane's RBAC."""
    ns = settings.namespace
    labels = {"app": ISTIOD, "release": "istio"}
    role = f"{ISTIOD}-clusterrole-{ns}"
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(ISTIOD, ns, labels)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(role, labels=labels),
            "rules": [dict(rule) for rule in (*READER_RULES, *CLUSTER_RULES)],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(role, labels=labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": ISTIOD, "namespace": ns}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(ISTIOD, ns, labels),
            "rules": [dict(rule) for rule in NAMESPACE_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(ISTIOD, ns, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ISTIOD},
            "subjects": [{"kind": "ServiceAccount", "name": ISTIOD, "namespace": ns}],
        },
    ]
    if settings.ingress_gateway:
        objects.append(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(INGRESS_ACCOUNT, ns, {"app": INGRESS})}
        )
    return objects


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def istiod_deployment(settings: InstallSettings) -> dict[str, Any]:
    """istiod: ``plait control-plane --kubernetes`` with the in-cluster service account, ready on /ready (15014)."""
    labels = {"app": ISTIOD, "istio": "pilot"}
    container = {
        "name": "discovery",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["plait"],
        "args": ["control-plane", "--kubernetes", "--host", "0.0.0.0", "--log-level", settings.log_level]
        + ["--proxy-image", settings.image, "--init-image", settings.image],
        "ports": [{"containerPort": target, "protocol": "TCP"} for _, _, target in ISTIOD_PORTS],
        "env": [_field_env("POD_NAME", "metadata.name"), _field_env("POD_NAMESPACE", "metadata.namespace")],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": 15014},
            "initialDelaySeconds": 1,
            "periodSeconds": 3,
            "timeoutSeconds": 5,
        },
        "volumeMounts": [{"name": "state", "mountPath": "/var/lib/plait"}],
        "workingDir": "/var/lib/plait",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(ISTIOD, settings.namespace, labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"istio": "pilot"}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {
                    "serviceAccountName": ISTIOD,
                    "containers": [container],
                    "volumes": [{"name": "state", "emptyDir": {}}],
                },
            },
        },
    }


def istiod_service(settings: InstallSettings) -> dict[str, Any]:
    """Service istiod: 15010, 15012, 443 → 15017 (webhooks), 15014."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ISTIOD, settings.namespace, {"app": ISTIOD, "istio": "pilot"}),
        "spec": {
            "selector": {"app": ISTIOD, "istio": "pilot"},
            "ports": [
                {"name": name, "port": port, "targetPort": target, "protocol": "TCP"}
                for name, port, target in ISTIOD_PORTS
            ],
        },
    }


def validating_webhook(settings: InstallSettings) -> dict[str, Any]:
    """The validating webhook configuration; its caBundle is left to the control plane's leader."""
    config = validating_webhook_configuration(b"", namespace=settings.namespace, service=ISTIOD)
    for hook in config["webhooks"]:
        hook["clientConfig"].pop("caBundle", None)
    return config


def mutating_webhook(settings: InstallSettings) -> dict[str, Any]:
    """The sidecar injector's MutatingWebhookConfiguration, as the control plane's injector describes it
    (Istio's four webhooks: namespace or pod selected, never ``sidecar.istio.io/inject: "false"``), sent
    to istiod's /inject; its caBundle is left to the control plane's leader."""
    config = mutating_webhook_configuration(b"", namespace=settings.namespace, service=ISTIOD)
    for hook in config["webhooks"]:
        hook["clientConfig"].pop("caBundle", None)
    return config


def istiod(settings: InstallSettings) -> list[dict[str, Any]]:
    """The control plane: Deployment, Service, and the admission webhooks it serves."""
    objects = [istiod_deployment(settings), istiod_service(settings), validating_webhook(settings)]
    if settings.sidecar_injector:
        objects.append(mutating_webhook(settings))
    return objects


def _gateway_container(settings: InstallSettings) -> dict[str, Any]:
    labels = "app=istio-ingressgateway,istio=ingressgateway"
    args = ["agent", "--mode", "gateway", "--name", "$(POD_NAME)", "--namespace", "$(POD_NAMESPACE)"]
    args += ["--ip", "$(INSTANCE_IP)", "--service-account", "$(SERVICE_ACCOUNT)", "--labels", labels]
    args += ["--control-plane", settings.control_plane, "--token-file", "/var/run/secrets/tokens/istio-token"]
    args += ["--root-cert", "/var/run/secrets/istio/root-cert.pem", "--state-dir", "/etc/istio/proxy"]
    args += ["--status-port", "15021"]
    return {
        "name": "istio-proxy",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["plait"],
        "args": args,
        "ports": [{"containerPort": target, "protocol": "TCP"} for _, _, target in INGRESS_PORTS],
        "env": [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("INSTANCE_IP", "status.podIP"),
            _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 2},
        "securityContext": {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": True},
        "volumeMounts": [
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": True},
            {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
        ],
    }


def ingress_gateway(settings: InstallSettings) -> list[dict[str, Any]]:
    """istio-ingressgateway: ``plait agent --mode gateway`` with a projected token (audience istio-ca)."""
    labels = {"app": INGRESS, "istio": "ingressgateway"}
    volumes = [
        {"name": "istio-envoy", "emptyDir": {}},
        {
            "name": "istio-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": TOKEN_AUDIENCE,
                            "expirationSeconds": 43200,
                            "path": "istio-token",
                        }
                    }
                ]
            },
        },
        {"name": "istiod-ca-cert", "configMap": {"name": ROOT_CERT_CONFIGMAP}},
    ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(INGRESS, settings.namespace, labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {
                    "serviceAccountName": INGRESS_ACCOUNT,
                    "containers": [_gateway_container(settings)],
                    "volumes": volumes,
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(INGRESS, settings.namespace, labels),
        "spec": {
            "type": settings.ingress_service_type,
            "selector": labels,
            "ports": [
                {"name": name, "port": port, "targetPort": target, "protocol": "TCP"}
                for name, port, target in INGRESS_PORTS
            ],
        },
    }
    return [deployment, service]


def components(settings: InstallSettings) -> list[tuple[str, list[dict[str, Any]]]]:
    """(component, objects) in the order they are applied, named as istioctl reports them."""
    parts = [("Istio core", core(settings)), ("Istiod", istiod(settings))]
    if settings.ingress_gateway:
        parts.append(("Ingress gateways", ingress_gateway(settings)))
    return parts


def manifest(settings: InstallSettings) -> list[dict[str, Any]]:
    """Every object, in apply order."""
    return [obj for _, objects in components(settings) for obj in objects]
