"""The local mesh reads a Deployment's prometheus.io annotations as Istio's injector does: the agent of
each of its pods is told where the app's metrics are (ISTIO_PROMETHEUS_ANNOTATIONS) to merge them
(the agent's merging itself: tests/agent/test_merged_metrics.py)."""

from __future__ import annotations

import json
from pathlib import Path

from plait.agent.merged_metrics import AppScrape, parse_prometheus_annotations
from plait.runtime.addresses import Addresses
from plait.runtime.local import pods_for
from plait.runtime.manifests import load_manifests

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: shop, namespace: default}}
spec:
  template:
    metadata:
      labels: {{app: shop}}
      annotations: {annotations}
    spec:
      containers:
      - name: shop
        image: example/shop
        command: ["python3", "-m", "http.server", "8080"]
        ports: [{{containerPort: 8080}}]
"""


def pods(tmp_path: Path, annotations: dict) -> list:
    (tmp_path / "shop.yaml").write_text(DEPLOYMENT.format(annotations=json.dumps(annotations)))
    manifests = load_manifests([tmp_path])
    assert manifests.errors == []
    [deployment] = manifests.deployments
    return pods_for(deployment, Addresses("proxy"), "proxy")


def test_the_apps_prometheus_annotations_reach_its_agent(tmp_path: Path) -> None:
    [pod] = pods(tmp_path, {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/m"})
    assert parse_prometheus_annotations(pod.app_metrics, (15020, pod.status_port)) == AppScrape(8080, "/m")


def test_without_annotations_or_with_scrape_false_nothing_is_merged(tmp_path: Path) -> None:
    assert [p.app_metrics for p in pods(tmp_path, {})] == [""]
    assert [p.app_metrics for p in pods(tmp_path, {"prometheus.io/scrape": "false"})] == [""]
