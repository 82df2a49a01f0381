"""The Prometheus addon (``--set addons.prometheus=true``), as Istio's samples/addons/prometheus.yaml
installs it (pure).

In: `InstallSettings`. Out: the objects of a Prometheus server in the control plane's namespace: service
account, the ConfigMap ``prometheus`` with its ``prometheus.yml``, the Deployment and Service
``prometheus`` (port 9090, Istio's). It scrapes every pod that asks to be scraped with Istio's
``prometheus.io/scrape|port|path`` annotations (sidecars, gateways on 15090, istiod on 15014), labelling
each series with the pod's labels, ``namespace`` and ``pod`` as Istio's addon does; the pods come from
istiod's HTTP service discovery (`plait.sources.kube_objects.scrape_targets`), not from the API server.
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


def scrape_config(discovery_url: str, interval: str = SCRAPE_INTERVAL) -> dict[str, Any]:
    """prometheus.yml: Prometheus itself, and every pod annotated ``prometheus.io/scrape: "true"``, found
    through istiod's HTTP service discovery at `discovery_url` (Debian's Prometheus is built without
    Kubernetes service discovery; istiod watches the pods anyway)."""
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": "10s"},
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": [f"localhost:{PORT}"]}]},
            {
                "job_name": "kubernetes-pods",
                "http_sd_configs": [{"url": discovery_url, "refresh_interval": interval}],
            },
        ],
    }


def discovery_url(settings: InstallSettings) -> str:
    """istiod's ``/api/v1/prometheus/targets`` on its monitoring port (15014), through its Service."""
    return f"http://{settings.istiod}.{settings.namespace}.svc:15014/api/v1/prometheus/targets"


def prometheus(settings: InstallSettings, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The addon's objects, each with `labels` (the install's owner labels)."""
    namespace = settings.namespace
    meta = {"name": NAME, "namespace": namespace, "labels": dict(labels)}
    pod_labels = {"app": NAME, "sidecar.istio.io/inject": "false"}
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
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {"prometheus.yml": yaml.safe_dump(scrape_config(discovery_url(settings)), sort_keys=False)},
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
