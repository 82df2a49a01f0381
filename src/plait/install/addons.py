"""The Prometheus addon (``--set addons.prometheus=true``), as Istio's samples/addons/prometheus.yaml
installs it (pure).

In: `InstallSettings`. Out: the objects of a Prometheus server in the control plane's namespace: service
account, ClusterRole/Binding to discover pods, the ConfigMap ``prometheus`` with its ``prometheus.yml``,
the Deployment and Service ``prometheus`` (port 9090, Istio's). It scrapes every pod that asks to be
scraped with Istio's ``prometheus.io/scrape|port|path`` annotations (sidecars on 15090, gateways on
15090, istiod on 15014), labelling each series with its ``namespace`` and ``pod`` as Istio's addon does.
The image is Debian's ``prometheus`` in plait's image repository (`prometheus_image`; ``./dev images``
builds it). No sidecar: Prometheus reads the proxies' plaintext metrics ports, outside the mesh.
"""

from __future__ import annotations

from typing import Any

import yaml

from plait.install.settings import InstallSettings

NAME = "prometheus"
PORT = 9090  # Istio's addon port (`plait dashboard prometheus` forwards to it)
SCRAPE_INTERVAL = "15s"  # Istio's
RETENTION = "6h"
COMPONENT = "Prometheus"


def prometheus_image(settings: InstallSettings) -> str:
    """``<repository of plait's image>/prometheus:<its tag>``: plait/proxy:1.0 → plait/prometheus:1.0."""
    repository, _, tag = settings.image.rpartition(":")
    directory = repository.rpartition("/")[0]
    return f"{directory}/{NAME}:{tag}" if directory else f"{NAME}:{tag}"


def scrape_config(interval: str = SCRAPE_INTERVAL) -> dict[str, Any]:
    """prometheus.yml: Prometheus itself, and every pod annotated ``prometheus.io/scrape: "true"``."""
    annotation = "__meta_kubernetes_pod_annotation_prometheus_io_"
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": "10s"},
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": [f"localhost:{PORT}"]}]},
            {
                "job_name": "kubernetes-pods",
                "kubernetes_sd_configs": [{"role": "pod"}],
                "relabel_configs": [
                    {"source_labels": [f"{annotation}scrape"], "action": "keep", "regex": "true"},
                    {
                        "source_labels": ["__meta_kubernetes_pod_phase"],
                        "action": "drop",
                        "regex": "Pending|Succeeded|Failed|Completed",
                    },
                    {"source_labels": [f"{annotation}path"], "action": "replace", "target_label": "__metrics_path__"},
                    {
                        "source_labels": ["__address__", f"{annotation}port"],
                        "action": "replace",
                        "regex": r"([^:]+)(?::\d+)?;(\d+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                    },
                    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
                    {
                        "source_labels": ["__meta_kubernetes_namespace"],
                        "action": "replace",
                        "target_label": "namespace",
                    },
                    {"source_labels": ["__meta_kubernetes_pod_name"], "action": "replace", "target_label": "pod"},
                ],
            },
        ],
    }


def prometheus(settings: InstallSettings, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The addon's objects, each with `labels` (the install's owner labels)."""
    namespace = settings.namespace
    meta = {"name": NAME, "namespace": namespace, "labels": dict(labels)}
    pod_labels = {"app": NAME, "sidecar.istio.io/inject": "false"}
    cluster_meta = {"name": f"{NAME}-{namespace}", "labels": dict(labels)}
    container = {
        "name": NAME,
        "image": prometheus_image(settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["/usr/bin/prometheus"],
        "args": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address=:{PORT}",
        ],
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": PORT}, "periodSeconds": 2},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/prometheus"},
            {"name": "data", "mountPath": "/prometheus"},
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": cluster_meta,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["nodes", "services", "endpoints", "pods"],
                    "verbs": ["get", "list", "watch"],
                },
                {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": cluster_meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_meta["name"]},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {"prometheus.yml": yaml.safe_dump(scrape_config(), sort_keys=False)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": NAME}},
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                    "spec": {
                        "serviceAccountName": NAME,
                        "containers": [container],
                        "volumes": [
                            {"name": "config", "configMap": {"name": NAME}},
                            {"name": "data", "emptyDir": {}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {**meta, "labels": {**labels, "app": NAME}},
            "spec": {
                "selector": {"app": NAME},
                "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
            },
        },
    ]
