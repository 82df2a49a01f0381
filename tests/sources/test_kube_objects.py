"""Pure conversions of Kubernetes objects (`plait.sources.kube_objects`) not covered by the watch tests."""

from __future__ import annotations

from plait.sources.kube_objects import pod_workload, scrape_targets, workload_name


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


def test_a_pods_workload_is_its_deployment_as_istio_names_it():
    def pod(owner: dict | None, **labels: str) -> dict:
        meta = {"name": "reviews-v2-65754bbd4f-fnmtb", "namespace": "bookinfo", "labels": labels}
        return {"metadata": {**meta, "ownerReferences": [owner] if owner else []}, "status": {"podIP": "10.1.0.7"}}

    replica_set = {"kind": "ReplicaSet", "name": "reviews-v2-65754bbd4f", "controller": True}
    assert workload_name(pod(replica_set, **{"pod-template-hash": "65754bbd4f"})) == "reviews-v2"
    assert workload_name(pod({"kind": "StatefulSet", "name": "db", "controller": True})) == "db"
    assert workload_name(pod(None)) == "reviews-v2-65754bbd4f-fnmtb"
    entry = pod_workload(pod(replica_set, app="reviews", **{"pod-template-hash": "65754bbd4f"}))
    assert entry.spec.labels["service.istio.io/workload-name"] == "reviews-v2"
    assert entry.spec.labels["app"] == "reviews"
