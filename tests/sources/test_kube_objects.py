"""Pure conversions of Kubernetes objects (`plait.sources.kube_objects`) not covered by the watch tests."""

from __future__ import annotations

from plait.sources.kube_objects import scrape_targets


def test_scrape_targets_are_the_running_pods_annotated_to_be_scraped():
    """istiod's Prometheus service discovery: Istio's prometheus.io annotations, the pod's labels as
    Prometheus label names, namespace and pod; pods not running, without an IP or not annotated are left out."""

    def pod(name: str, phase: str = "Running", ip: str = "10.1.0.7", **annotations: str) -> dict:
        return {
            "metadata": {
                "name": name,
                "namespace": "bookinfo",
                "labels": {"app": "reviews", "app.kubernetes.io/version": "v2"},
                "annotations": annotations,
            },
            "status": {"phase": phase, "podIP": ip},
        }

    scraped = {"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus"}
    pods = [
        pod("reviews-v2-a", **scraped),
        pod("reviews-v2-b", **{"prometheus.io/scrape": "true", "prometheus.io/port": "9080"}),
        pod("pending", phase="Pending", **scraped),
        pod("no-ip", ip="", **scraped),
        pod("not-annotated"),
        pod("no-port", **{"prometheus.io/scrape": "true"}),
    ]
    assert scrape_targets(pods) == [
        {
            "targets": ["10.1.0.7:15020"],
            "labels": {
                "app": "reviews",
                "app_kubernetes_io_version": "v2",
                "namespace": "bookinfo",
                "pod": "reviews-v2-a",
                "__metrics_path__": "/stats/prometheus",
            },
        },
        {
            "targets": ["10.1.0.7:9080"],
            "labels": {
                "app": "reviews",
                "app_kubernetes_io_version": "v2",
                "namespace": "bookinfo",
                "pod": "reviews-v2-b",
                "__metrics_path__": "/metrics",
            },
        },
    ]
