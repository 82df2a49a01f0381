"""The objects that put plait in a cluster, named as Istio names them (pure).

In: `InstallSettings` (from `plait.install.operator`). Out: lists of Kubernetes objects as dicts,
grouped in the order they are applied (`components`), as istioctl reports them: "Istio core" (Istio's
CRDs and the namespace), "Istiod" (service account, RBAC, the mesh ConfigMap ``istio[-REV]``,
Deployment and Service ``istiod[-REV]``, PodDisruptionBudget, HorizontalPodAutoscaler, the
validating and sidecar-injector webhooks), "Ingress gateways" and "Egress gateways" (per gateway: its
namespace, service account and Role, Deployment, Service, PodDisruptionBudget, HPA), and "Addons"
(``addons.prometheus``: `plait.install.addons`). Every pod plait installs carries Istio's
``prometheus.io/scrape|port|path`` annotations (istiod 15014 /metrics, gateways 15090 /stats/prometheus). No I/O: `plait
manifest generate` prints them and `plait install` applies them.

Every object but namespaces carries `owner_labels`, which `plait uninstall` selects by: Istio's
``install.operator.istio.io/owning-resource``, ``operator.istio.io/component`` and ``istio.io/rev``
(not on the CRDs, which revisions share), and ``app.kubernetes.io/managed-by: plait``. The control
plane's RBAC is the union of what its parts declare: `READER_RULES` (the Kubernetes source's
watches) and `CLUSTER_RULES`/`NAMESPACE_RULES` (the CA, the webhook, the leader's writes) and
`GATEWAY_CONTROLLER_RULES` and `STATUS_RULES` (the leader deploys Gateway API gateways and writes their status).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

from plait.controlplane.gatewaydeploy import GATEWAY_CONTROLLER_RULES
from plait.controlplane.gatewaystatus import STATUS_RULES
from plait.controlplane.injector import mutating_webhook_configuration
from plait.controlplane.kubeidentity import CLUSTER_RULES, NAMESPACE_RULES
from plait.controlplane.webhook import validating_webhook_configuration
from plait.install import addons
from plait.install.crds import istio_crds
from plait.install.settings import ISTIOD, GatewaySettings, InstallSettings, K8sSettings
from plait.sources.kubernetes import READER_RULES

MANAGED_BY = ("app.kubernetes.io/managed-by", "plait")
OWNER = "install.operator.istio.io/owning-resource"
COMPONENT = "operator.istio.io/component"
REVISION = "istio.io/rev"
TOKEN_AUDIENCE = "istio-ca"
ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"
PROXY_UID = 1337
STATUS_PORT = 15021
DASHBOARD_PORT = 20001  # the mesh dashboard (Kiali's port), `plait dashboard` forwards to it
PROMETHEUS_PORT = 15090  # the gateway's Istio metrics (`plait agent --prometheus-port`), Istio's 15090

# istiod's ports: plaintext xDS, xDS + CA over TLS, HTTP API / monitoring, webhooks (Service 443 → 15017).
ISTIOD_PORTS = (
    ("grpc-xds", 15010, 15010),
    ("https-dns", 15012, 15012),
    ("https-webhook", 443, 15017),
    ("http-monitoring", 15014, 15014),
)
ZIPKIN_PORT = 9411  # istiod's trace collector, behind the Service zipkin (Istio's default tracing address)
# The gateways' Service ports, as Istio's default profile (port → the gateway pod's targetPort).
INGRESS_PORTS = (("status-port", 15021, 15021), ("http2", 80, 8080), ("https", 443, 8443))
EGRESS_PORTS = (("http2", 80, 8080), ("https", 443, 8443))
CPU_UTILIZATION = 80  # Istio's default HPA target
RBAC = "rbac.authorization.k8s.io/v1"


def owner_labels(settings: InstallSettings, component: str, revisioned: bool = True) -> dict[str, str]:
    """The labels that mark an object as made by this install (and let uninstall find it and only it)."""
    labels = {MANAGED_BY[0]: MANAGED_BY[1], OWNER: settings.owner, COMPONENT: component}
    return {**labels, REVISION: settings.revision_label} if revisioned else labels


def _meta(name: str, namespace: str | None = None, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    return meta


def _labelled(obj: dict[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    obj["metadata"]["labels"] = {**obj["metadata"].get("labels", {}), **labels}
    return obj


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name)}


def base(settings: InstallSettings) -> list[dict[str, Any]]:
    """Istio's CRDs (shared by every revision) and the control plane's namespace."""
    labels = owner_labels(settings, "Base", revisioned=False)
    crds = [_labelled(crd, labels) for crd in istio_crds(settings.legacy_apis)]
    return [*crds, _namespace(settings.namespace)]


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _pod_spec(k8s: K8sSettings, account: str, containers: list[dict[str, Any]], volumes: list[dict[str, Any]]):
    spec: dict[str, Any] = {"serviceAccountName": account, "containers": containers, "volumes": volumes}
    if k8s.node_selector:
        spec["nodeSelector"] = dict(k8s.node_selector)
    return spec


def _container_extras(container: dict[str, Any], k8s: K8sSettings) -> dict[str, Any]:
    container["env"] += [copy.deepcopy(e) for e in k8s.env]
    if k8s.resources:
        container["resources"] = copy.deepcopy(k8s.resources)
    return container


def _deployment(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    selector: Mapping[str, str],
    pod_labels: Mapping[str, str],
    k8s: K8sSettings,
    pod_spec: dict[str, Any],
    scrape: tuple[int, str],
) -> dict[str, Any]:
    """A Deployment whose pods are never injected and are scraped (Istio's prometheus.io annotations)
    on `scrape` = (port, path). Never injected as Istio's charts say it: the label as well as the
    annotation, as the injection webhooks' object selectors read labels only (a pod with its revision's
    label would otherwise go through a webhook served by the istiod it may be replacing)."""
    spec: dict[str, Any] = {}
    replicas = k8s.replicas if k8s.replicas is not None else (k8s.hpa or {}).get("minReplicas", 1)
    spec["replicas"] = replicas
    spec["selector"] = {"matchLabels": dict(selector)}
    spec["template"] = {
        "metadata": {
            "labels": {**pod_labels, "sidecar.istio.io/inject": "false"},
            "annotations": {
                "prometheus.io/path": scrape[1],
                "prometheus.io/port": str(scrape[0]),
                "prometheus.io/scrape": "true",
                "sidecar.istio.io/inject": "false",
            },
        },
        "spec": pod_spec,
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, namespace, labels), "spec": spec}


def _service(name: str, namespace: str, labels: Mapping[str, str], selector: Mapping[str, str], ports, kind=None):
    spec: dict[str, Any] = {"type": kind} if kind else {}
    spec["selector"] = dict(selector)
    spec["ports"] = [dict(port) for port in ports]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, namespace, labels), "spec": spec}


def _port(name: str, port: int, target: int) -> dict[str, Any]:
    return {"name": name, "port": port, "targetPort": target, "protocol": "TCP"}


def disruption_budget(
    settings: InstallSettings, name: str, namespace: str, labels: Mapping[str, str], selector: Mapping[str, str]
) -> dict[str, Any]:
    """A PodDisruptionBudget with minAvailable 1, as Istio's (policy/v1beta1 on an old API server)."""
    return {
        "apiVersion": "policy/v1beta1" if settings.legacy_apis else "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, namespace, labels),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(selector)}},
    }


def autoscaler(
    settings: InstallSettings, name: str, namespace: str, labels: Mapping[str, str], hpa: Mapping[str, Any]
) -> dict[str, Any]:
    """A HorizontalPodAutoscaler of Deployment `name` from a hpaSpec (autoscaling/v2beta2 on an old API server);
    without metrics it scales on CPU at 80 % as Istio's."""
    metrics = hpa.get("metrics") or [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_UTILIZATION}},
        }
    ]
    return {
        "apiVersion": "autoscaling/v2beta2" if settings.legacy_apis else "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": hpa.get("minReplicas", 1),
            "maxReplicas": hpa.get("maxReplicas", 5),
            "metrics": copy.deepcopy(metrics),
        },
    }


def _scaling(
    settings: InstallSettings,
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    selector: Mapping[str, str],
    k8s: K8sSettings,
) -> list[dict[str, Any]]:
    objects = [disruption_budget(settings, name, namespace, labels, selector)]
    if k8s.hpa and k8s.replicas is None:
        objects.append(autoscaler(settings, name, namespace, labels, k8s.hpa))
    return objects


def istiod_rbac(settings: InstallSettings) -> list[dict[str, Any]]:
    """The control plane's service account, ClusterRole (cluster-wide reads and writes) and Role (its namespace)."""
    ns, name = settings.namespace, settings.istiod
    labels = {"app": ISTIOD, **owner_labels(settings, "Pilot")}
    role = f"{ISTIOD}-clusterrole{'-' + settings.revision if settings.revision else ''}-{ns}"
    subjects = [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, ns, labels)},
        {
            "apiVersion": RBAC,
            "kind": "ClusterRole",
            "metadata": _meta(role, labels=labels),
            "rules": [dict(rule) for rule in (*READER_RULES, *CLUSTER_RULES, *GATEWAY_CONTROLLER_RULES, *STATUS_RULES)],
        },
        {
            "apiVersion": RBAC,
            "kind": "ClusterRoleBinding",
            "metadata": _meta(role, labels=labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects,
        },
        {
            "apiVersion": RBAC,
            "kind": "Role",
            "metadata": _meta(name, ns, labels),
            "rules": [dict(rule) for rule in NAMESPACE_RULES],
        },
        {
            "apiVersion": RBAC,
            "kind": "RoleBinding",
            "metadata": _meta(name, ns, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subjects,
        },
    ]


def mesh_config(settings: InstallSettings) -> dict[str, Any]:
    """meshConfig as this revision's proxies see it: the given fields, discoveryAddress filled in."""
    config = copy.deepcopy(settings.mesh_config)
    config.setdefault("defaultConfig", {})["discoveryAddress"] = settings.control_plane
    return config


def mesh_configmap_name(settings: InstallSettings) -> str:
    return f"istio-{settings.revision}" if settings.revision else "istio"


def mesh_configmap(settings: InstallSettings) -> dict[str, Any]:
    """Istio's mesh ConfigMap ``istio[-REV]``: key ``mesh`` holds meshConfig as YAML; istiod[-REV] reads
    it mounted at MESH_CONFIG_DIR, as Istio's does."""
    name = mesh_configmap_name(settings)
    labels = {"app": ISTIOD, **owner_labels(settings, "Pilot")}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(name, settings.namespace, labels),
        "data": {"mesh": yaml.safe_dump(mesh_config(settings), sort_keys=True)},
    }


def _istiod_labels(settings: InstallSettings) -> dict[str, str]:
    return {"app": ISTIOD, REVISION: settings.revision_label}


MESH_CONFIG_DIR = "/etc/istio/config"  # where istiod's mesh ConfigMap is mounted (Istio's path)


def istiod_deployment(settings: InstallSettings) -> dict[str, Any]:
    """istiod[-REV]: ``plait control-plane --kubernetes [--revision REV] --mesh-config …`` with its own
    service account and its mesh ConfigMap mounted, ready on /ready (15014)."""
    k8s = settings.pilot or K8sSettings()
    args = ["control-plane", "--kubernetes", "--host", "0.0.0.0", "--log-level", settings.log_level]
    args += ["--proxy-image", settings.image, "--init-image", settings.image]
    args += ["--revision", settings.revision] if settings.revision else []
    args += ["--mesh-config", f"{MESH_CONFIG_DIR}/mesh", "--dashboard-port", str(DASHBOARD_PORT)]
    if settings.prometheus:  # the dashboard reads the addon's Prometheus
        args += ["--dashboard-prometheus", f"http://{addons.NAME}.{settings.namespace}.svc:{addons.PORT}"]
    else:  # without it the proxies' stats, found as the addon would find them: istiod's own http_sd, over loopback
        args += ["--dashboard-targets", "http://127.0.0.1:15014/api/v1/prometheus/targets"]
    container = {
        "name": "discovery",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["plait"],
        "args": args,
        "ports": [{"containerPort": target, "protocol": "TCP"} for _, _, target in ISTIOD_PORTS]
        + [{"containerPort": port, "protocol": "TCP"} for port in (ZIPKIN_PORT, DASHBOARD_PORT)],
        "env": [_field_env("POD_NAME", "metadata.name"), _field_env("POD_NAMESPACE", "metadata.namespace")],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": 15014},
            "initialDelaySeconds": 1,
            "periodSeconds": 3,
            "timeoutSeconds": 5,
        },
        "volumeMounts": [
            {"name": "state", "mountPath": "/var/lib/plait"},
            {"name": "config-volume", "mountPath": MESH_CONFIG_DIR},
        ],
        "workingDir": "/var/lib/plait",
    }
    pod_labels = {**_istiod_labels(settings), "istio": "pilot"}
    volumes = [
        {"name": "state", "emptyDir": {}},
        {"name": "config-volume", "configMap": {"name": mesh_configmap_name(settings)}},
    ]
    pod = _pod_spec(k8s, settings.istiod, [_container_extras(container, k8s)], volumes)
    labels = {**pod_labels, **owner_labels(settings, "Pilot")}
    return _deployment(
        settings.istiod, settings.namespace, labels, _istiod_labels(settings), pod_labels, k8s, pod, (15014, "/metrics")
    )


def istiod_service(settings: InstallSettings) -> dict[str, Any]:
    """Service istiod[-REV]: 15010, 15012, 443 → 15017 (webhooks), 15014; it selects its revision's pods."""
    labels = {"app": ISTIOD, "istio": "pilot", **owner_labels(settings, "Pilot")}
    ports = [_port(name, port, target) for name, port, target in ISTIOD_PORTS]
    return _service(settings.istiod, settings.namespace, labels, _istiod_labels(settings), ports)


def zipkin_service(settings: InstallSettings) -> dict[str, Any]:
    """Service zipkin: ``zipkin.istio-system:9411``, Istio's default ``defaultConfig.tracing.zipkin.address``,
    reaches the collector every istiod runs (of every revision: one Service, made by the default one)."""
    labels = {"app": "zipkin", **owner_labels(settings, "Pilot")}
    ports = [_port("http-query", ZIPKIN_PORT, ZIPKIN_PORT)]
    return _service("zipkin", settings.namespace, labels, {"app": ISTIOD}, ports)


def _without_ca_bundle(config: dict[str, Any], settings: InstallSettings) -> dict[str, Any]:
    for hook in config["webhooks"]:  # each its own copy (no YAML aliases in manifest generate)
        hook["clientConfig"] = {k: copy.deepcopy(v) for k, v in hook["clientConfig"].items() if k != "caBundle"}
    return _labelled(config, owner_labels(settings, "Pilot"))


def validating_webhook(settings: InstallSettings) -> dict[str, Any]:
    """``istio-validator[-REV]-<namespace>``; its caBundle is left to the control plane's leader."""
    revision = f"-{settings.revision}" if settings.revision else ""
    config = validating_webhook_configuration(
        b"",
        namespace=settings.namespace,
        service=settings.istiod,
        name=f"istio-validator{revision}-{settings.namespace}",
    )
    return _without_ca_bundle(config, settings)


def mutating_webhook(settings: InstallSettings) -> dict[str, Any]:
    """The sidecar injector's ``istio-sidecar-injector[-REV]``, as the control plane's injector describes it
    (namespace ``istio-injection=enabled`` or ``istio.io/rev=REV``, or the pod's labels), sent to
    istiod[-REV]'s /inject; its caBundle is left to the control plane's leader."""
    config = mutating_webhook_configuration(
        b"", namespace=settings.namespace, service=settings.istiod, revision=settings.revision
    )
    return _without_ca_bundle(config, settings)


def istiod(settings: InstallSettings) -> list[dict[str, Any]]:
    """The control plane: RBAC, mesh ConfigMap, Deployment, Service, PDB/HPA and the webhooks it serves."""
    k8s = settings.pilot or K8sSettings()
    labels = {"app": ISTIOD, **owner_labels(settings, "Pilot")}
    scaling = _scaling(settings, settings.istiod, settings.namespace, labels, _istiod_labels(settings), k8s)
    objects = [*istiod_rbac(settings), mesh_configmap(settings), istiod_deployment(settings), istiod_service(settings)]
    objects += [*scaling, validating_webhook(settings)]
    if not settings.revision:
        objects.append(zipkin_service(settings))
    if settings.sidecar_injector:
        objects.append(mutating_webhook(settings))
    return objects


def _default_ports(gateway: GatewaySettings) -> list[dict[str, Any]]:
    return [_port(*port) for port in (EGRESS_PORTS if gateway.egress else INGRESS_PORTS)]


def _service_ports(gateway: GatewaySettings) -> list[dict[str, Any]]:
    if gateway.k8s.service_ports is None:
        return _default_ports(gateway)
    return [
        {"protocol": "TCP", **copy.deepcopy(port), "targetPort": port.get("targetPort", port.get("port"))}
        for port in gateway.k8s.service_ports
    ]


def _gateway_container(settings: InstallSettings, gateway: GatewaySettings) -> dict[str, Any]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(gateway.labels.items()))
    args = ["agent", "--mode", "gateway", "--name", "$(POD_NAME)", "--namespace", "$(POD_NAMESPACE)"]
    args += ["--ip", "$(INSTANCE_IP)", "--service-account", "$(SERVICE_ACCOUNT)", "--labels", labels]
    args += ["--control-plane", settings.control_plane, "--token-file", "/var/run/secrets/tokens/istio-token"]
    args += ["--root-cert", "/var/run/secrets/istio/root-cert.pem", "--state-dir", "/etc/istio/proxy"]
    args += ["--status-port", str(STATUS_PORT), "--prometheus-port", str(PROMETHEUS_PORT)]
    targets = dict.fromkeys([STATUS_PORT, PROMETHEUS_PORT, *(p["targetPort"] for p in _service_ports(gateway))])
    container = {
        "name": "istio-proxy",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["plait"],
        "args": args,
        "ports": [{"containerPort": target, "protocol": "TCP"} for target in targets],
        "env": [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("INSTANCE_IP", "status.podIP"),
            _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            {"name": "ISTIO_META_WORKLOAD_NAME", "value": gateway.name},  # its metrics' workload, as Istio's
        ],
        # Istio's gateway probe (3 s to answer, 4 misses) polled every 2 s instead of 15: ready sooner,
        # and a gateway starved of CPU for a moment (a node restarting pods) is not taken out of service.
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": STATUS_PORT},
            "periodSeconds": 2,
            "timeoutSeconds": 3,
            "failureThreshold": 4,
        },
        "securityContext": {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": True},
        "volumeMounts": [
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": True},
            {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
        ],
    }
    return _container_extras(container, gateway.k8s)


GATEWAY_VOLUMES = (
    {"name": "istio-envoy", "emptyDir": {}},
    {
        "name": "istio-token",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"audience": TOKEN_AUDIENCE, "expirationSeconds": 43200, "path": "istio-token"}}
            ]
        },
    },
    {"name": "istiod-ca-cert", "configMap": {"name": ROOT_CERT_CONFIGMAP}},
)


def gateway(settings: InstallSettings, gateway: GatewaySettings) -> list[dict[str, Any]]:
    """One gateway: ``plait agent --mode gateway`` pointed at its revision's control plane, with a projected
    token (audience istio-ca), its service account and Role (read its namespace's secrets: the TLS
    credentials of its Gateways), Service, PodDisruptionBudget and HPA."""
    component = "EgressGateways" if gateway.egress else "IngressGateways"
    ns, name = gateway.namespace, gateway.name
    labels = {**gateway.labels, **owner_labels(settings, component)}
    pod_labels = {**gateway.labels, REVISION: settings.revision_label}
    account = gateway.service_account
    role = f"{name}-sds"
    pod = _pod_spec(gateway.k8s, account, [_gateway_container(settings, gateway)], copy.deepcopy(list(GATEWAY_VOLUMES)))
    default_type = "ClusterIP" if gateway.egress else "LoadBalancer"
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(account, ns, labels)},
        {
            "apiVersion": RBAC,
            "kind": "Role",
            "metadata": _meta(role, ns, labels),
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}],
        },
        {
            "apiVersion": RBAC,
            "kind": "RoleBinding",
            "metadata": _meta(role, ns, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account}],
        },
        _deployment(
            name, ns, labels, gateway.labels, pod_labels, gateway.k8s, pod, (PROMETHEUS_PORT, "/stats/prometheus")
        ),
        _service(name, ns, labels, gateway.labels, _service_ports(gateway), gateway.k8s.service_type or default_type),
    ]
    return objects + _scaling(settings, name, ns, labels, gateway.labels, gateway.k8s)


def gateways(settings: InstallSettings, egress: bool, namespaces: set[str]) -> list[dict[str, Any]]:
    """The ingress (or egress) gateways, each namespace not made before (`namespaces`) made first."""
    objects: list[dict[str, Any]] = []
    for each in settings.egress_gateways if egress else settings.ingress_gateways:
        if each.namespace not in namespaces:
            namespaces.add(each.namespace)
            objects.append(_namespace(each.namespace))
        objects += gateway(settings, each)
    return objects


def components(settings: InstallSettings) -> list[tuple[str, list[dict[str, Any]]]]:
    """(component, objects) in the order they are applied, named as istioctl reports them; components
    the settings leave out are not listed."""
    parts: list[tuple[str, list[dict[str, Any]]]] = []
    namespaces: set[str] = set()
    if settings.base:
        parts.append(("Istio core", base(settings)))
        namespaces.add(settings.namespace)
    if settings.pilot is not None:
        made = [] if settings.namespace in namespaces else [_namespace(settings.namespace)]
        namespaces.add(settings.namespace)
        parts.append(("Istiod", made + istiod(settings)))
    for title, egress in (("Ingress gateways", False), ("Egress gateways", True)):
        objects = gateways(settings, egress, namespaces)
        if objects:
            parts.append((title, objects))
    if settings.prometheus:
        parts.append(("Addons", addons.prometheus(settings, owner_labels(settings, addons.COMPONENT))))
    return parts


def manifest(settings: InstallSettings) -> list[dict[str, Any]]:
    """Every object, in apply order."""
    return [obj for _, objects in components(settings) for obj in objects]
