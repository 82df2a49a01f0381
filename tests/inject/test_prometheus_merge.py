"""Istio's metrics merging in the injector: meshConfig.enablePrometheusMerge and the pod's
prometheus.istio.io/merge-metrics decide whether Prometheus is sent to the agent's merged 15020
(the app's annotations moved to ISTIO_PROMETHEUS_ANNOTATIONS) or to Envoy's 15090 (goldens:
tests/inject/testdata/15-prometheus-merge)."""

from __future__ import annotations

import json

import pytest

from plait.agent.merged_metrics import AppScrape, parse_prometheus_annotations
from plait.inject import InjectSettings, inject
from plait.inject.mesh_config import apply_mesh_config
from plait.inject.settings import InjectError

PRODUCTPAGE = {"prometheus.io/scrape": "true", "prometheus.io/port": "9080", "prometheus.io/path": "/metrics"}


def pod(annotations: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "productpage", "namespace": "bookinfo", "annotations": dict(annotations or {})},
        "spec": {"containers": [{"name": "productpage", "image": "bookinfo/productpage:1.0"}]},
    }


def injected(annotations: dict[str, str] | None = None, settings: InjectSettings | None = None):
    out = inject(pod(annotations), settings or InjectSettings())
    proxy = next(c for c in out["spec"]["containers"] if c["name"] == "istio-proxy")
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    scrape = {k: v for k, v in out["metadata"]["annotations"].items() if k.startswith("prometheus.io/")}
    return scrape, env.get("ISTIO_PROMETHEUS_ANNOTATIONS")


MERGED = {"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus"}
ENVOY = {**MERGED, "prometheus.io/port": "15090"}


def test_merged_by_default_and_the_agent_reads_what_the_injector_moved() -> None:
    scrape, env = injected(PRODUCTPAGE)
    assert scrape == MERGED
    assert json.loads(env) == {"scrape": "true", "path": "/metrics", "port": "9080"}
    assert parse_prometheus_annotations(env, (15021, 15020)) == AppScrape(9080, "/metrics")


def test_a_pod_without_annotations_is_merged_without_app_metrics() -> None:
    assert injected() == (MERGED, None)


def test_the_mesh_config_can_turn_merging_off() -> None:
    settings = apply_mesh_config(InjectSettings(), {"enablePrometheusMerge": False}, "mesh.yaml")
    assert injected(settings=settings) == (ENVOY, None)
    assert injected(PRODUCTPAGE, settings) == (PRODUCTPAGE, None)  # the app's own endpoint stays
    on = {"prometheus.istio.io/merge-metrics": "true", **PRODUCTPAGE}
    assert injected(on, settings)[0] == MERGED  # the pod's annotation wins over the mesh


def test_the_pod_can_turn_merging_off_and_a_pod_not_scraped_stays_so() -> None:
    assert injected({"prometheus.istio.io/merge-metrics": "false"}) == (ENVOY, None)
    assert injected({"prometheus.io/scrape": "false"}) == ({"prometheus.io/scrape": "false"}, None)


def test_a_pod_already_pointing_at_the_merged_port_is_left_alone() -> None:
    assert injected(MERGED) == (MERGED, None)


def test_the_merged_port_follows_the_status_port_annotation() -> None:
    scrape, _ = injected({"status.sidecar.istio.io/port": "15030", **PRODUCTPAGE})
    assert scrape["prometheus.io/port"] == "15030"


@pytest.mark.parametrize(
    ("mesh", "annotations", "message"),
    [
        ({"enablePrometheusMerge": "yes"}, {}, "mesh.yaml: enablePrometheusMerge: expected true or false"),
        (
            {},
            {"prometheus.istio.io/merge-metrics": "maybe"},
            "prometheus.istio.io/merge-metrics: expected true or false",
        ),
    ],
)
def test_bad_merge_settings_say_where(mesh: dict, annotations: dict, message: str) -> None:
    with pytest.raises(InjectError, match=message):
        injected(annotations, apply_mesh_config(InjectSettings(), mesh, "mesh.yaml"))
