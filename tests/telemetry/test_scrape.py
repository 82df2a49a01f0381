"""Prometheus' scrape configuration for the local mesh: Istio's job names, the labels each proxy's series
get, the file_sd targets (sidecars on POD_IP:15090, gateways on their agent's status port), and the whole
configuration accepted by Prometheus' own checker (promtool, Debian's prometheus package)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from plait.runtime.addresses import Addresses
from plait.runtime.local import LocalMesh, gateway_pod, pods_for, scrape_targets
from plait.runtime.manifests import load_manifests
from plait.telemetry import scrape
from plait.telemetry.metrics import WORKLOAD_NAME_LABEL

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
      - name: reviews
        command: [server]
        ports: [{containerPort: 9080}]
"""


def _pods(tmp_path: Path, mode: str = "capture"):
    (tmp_path / "app.yaml").write_text(DEPLOYMENT)
    manifests = load_manifests([tmp_path / "app.yaml"])
    assert manifests.errors == []
    addresses = Addresses(mode)
    pods = pods_for(manifests.deployments[0], addresses, mode)
    gateway = gateway_pod(
        "istio-ingressgateway", {"app": "istio-ingressgateway", "istio": "ingressgateway"}, {}, addresses, "10.244.0.1"
    )
    return pods, gateway


def test_local_pods_are_named_by_their_deployment_as_istios_workloads(tmp_path: Path) -> None:
    pods, _ = _pods(tmp_path)
    assert [p.name for p in pods] == ["reviews-v2-0", "reviews-v2-1"]
    assert {p.labels[WORKLOAD_NAME_LABEL] for p in pods} == {"reviews-v2"}


def test_targets_are_sidecars_on_15090_and_gateways_on_their_status_port(tmp_path: Path) -> None:
    pods, gateway = _pods(tmp_path)
    targets = scrape_targets([*pods, gateway])
    assert [t.address for t in targets] == [
        f"{pods[0].ip}:15090",
        f"{pods[1].ip}:15090",
        f"127.0.0.1:{gateway.status_port}",
    ]
    assert (targets[2].namespace, targets[2].pod) == ("istio-system", "istio-ingressgateway")


def test_file_sd_groups_carry_namespace_pod_and_the_pods_labels(tmp_path: Path) -> None:
    pods, _ = _pods(tmp_path)
    [first, _second] = scrape.file_sd_groups(scrape_targets(pods))
    assert first == {
        "targets": [f"{pods[0].ip}:15090"],
        "labels": {
            "app": "reviews",
            "service_istio_io_workload_name": "reviews-v2",
            "version": "v2",
            "namespace": "default",
            "pod": "reviews-v2-0",
            "__metrics_path__": "/stats/prometheus",
        },
    }


def test_label_keys_are_renamed_as_prometheus_labelmap() -> None:
    assert scrape.label_name("app.kubernetes.io/name") == "app_kubernetes_io_name"
    assert scrape.label_name("security.istio.io/tlsMode") == "security_istio_io_tlsMode"


def test_config_has_istios_jobs_and_the_interval() -> None:
    config = scrape.prometheus_config("/run/targets", "127.0.0.1:15014", "1s")
    assert config["global"] == {"scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"envoy-stats", "pilot"}
    assert jobs["envoy-stats"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy-stats"]["file_sd_configs"][0]["files"] == ["/run/targets/envoy-stats.json"]
    assert jobs["pilot"]["metrics_path"] == "/metrics"
    assert jobs["pilot"]["static_configs"][0]["targets"] == ["127.0.0.1:15014"]


def test_argv_bounds_retention_and_listens_where_asked() -> None:
    argv = scrape.prometheus_argv("/usr/bin/prometheus", "/s/prometheus.yml", "/s/data", "127.0.0.1:9090")
    assert argv == [
        "/usr/bin/prometheus",
        "--config.file=/s/prometheus.yml",
        "--storage.tsdb.path=/s/data",
        "--storage.tsdb.retention.time=6h",
        "--storage.tsdb.retention.size=256MB",
        "--web.listen-address=127.0.0.1:9090",
    ]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs Debian's prometheus package (promtool)")
def test_promtool_accepts_the_configuration_and_the_targets(tmp_path: Path) -> None:
    pods, gateway = _pods(tmp_path)
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / scrape.ENVOY_STATS_FILE).write_text(json.dumps(scrape.file_sd_groups(scrape_targets([*pods, gateway]))))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape.prometheus_config(str(targets), "127.0.0.1:15014", "1s")))
    done = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_the_targets_file_follows_the_started_pods_without_needless_rewrites(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(DEPLOYMENT)
    mesh = LocalMesh(load_manifests([tmp_path / "app.yaml"]), tmp_path / "state", mode="proxy", prometheus_port=9090)
    mesh.state.pods = mesh.plan()
    path = tmp_path / "state" / "prometheus" / "targets" / scrape.ENVOY_STATS_FILE

    def written() -> list[str]:
        return [group["labels"]["pod"] for group in json.loads(path.read_text())]

    mesh.state.pods[0].pid = 101
    mesh._write_scrape_targets()
    assert written() == ["reviews-v2-0"]
    before = path.stat().st_ino
    mesh._write_scrape_targets()  # the same pods (a restart keeps a pod's address): the file is left alone
    assert path.stat().st_ino == before
    for number, pod in enumerate(mesh.state.pods):
        pod.pid = 200 + number
    mesh._write_scrape_targets()  # replaced whole (a rename), as file_sd expects
    assert sorted(written()) == ["istio-egressgateway", "istio-ingressgateway", "reviews-v2-0", "reviews-v2-1"]
    assert path.stat().st_ino != before
