"""Bad annotations are refused with the annotation's name, its value and what was expected."""

from __future__ import annotations

import pytest

from plait.inject import InjectError, InjectSettings, inject

BAD = [
    (
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "10.0.0.0/33",
        "'10.0.0.0/33' is not an IP range in CIDR form",
    ),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "*", "'*' is not an IP range"),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", "fd00::/8", "is IPv6"),
    ("traffic.sidecar.istio.io/excludeInboundPorts", "80,http", "'http' is not a port number"),
    ("traffic.sidecar.istio.io/includeInboundPorts", "70000", "'70000' is not a port number"),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", "*", "'*' is not a port number"),
    ("status.sidecar.istio.io/port", "x", "'x' is not a port number"),
    ("readiness.status.sidecar.istio.io/periodSeconds", "5s", "'5s' is not a whole number"),
    ("sidecar.istio.io/proxyCPU", "lots", "'lots' is not a Kubernetes quantity"),
    ("sidecar.istio.io/proxyMemoryLimit", "1 GB", "'1 GB' is not a Kubernetes quantity"),
    ("sidecar.istio.io/logLevel", "verbose", "'verbose' is not one of trace, debug"),
    ("sidecar.istio.io/interceptionMode", "TPROXY", "TPROXY is not supported"),
    ("proxy.istio.io/config", "holdApplicationUntilProxyStart: true", "unknown ProxyConfig field"),
    ("proxy.istio.io/config", "holdApplicationUntilProxyStarts: maybe", "holdApplicationUntilProxyStarts: expected"),
    ("proxy.istio.io/config", "[1, 2]", "expected a ProxyConfig object"),
    ("proxy.istio.io/config", "{a: [", "not YAML or JSON"),
    ("proxy.istio.io/config", "terminationDrainDuration: soon", "terminationDrainDuration: 'soon' is not a duration"),
    ("proxy.istio.io/config", "concurrency: -1", "concurrency: expected a whole number"),
]


@pytest.mark.parametrize(("annotation", "value", "message"), BAD)
def test_bad_annotation_is_refused(annotation: str, value: str, message: str) -> None:
    pod = {"metadata": {"name": "p", "annotations": {annotation: value}}, "spec": {"containers": [{"name": "a"}]}}
    with pytest.raises(InjectError) as raised:
        inject(pod, InjectSettings())
    assert f"annotation {annotation}" in str(raised.value)
    assert message in str(raised.value)


def test_input_is_not_modified() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}]},
    }
    before = repr(pod)
    inject(pod, InjectSettings())
    assert repr(pod) == before


def test_settings_choose_images_addresses_and_resources() -> None:
    settings = InjectSettings(
        proxy_image="reg/proxy:9",
        init_image="reg/init:9",
        control_plane="cp.mesh:15012",
        trust_domain="example.org",
        cluster_id="east",
        image_pull_policy="Never",
        image_pull_secrets=("regcred",),
        resources={"requests": {"cpu": "10m"}},
    )
    out = inject({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}, settings)
    (init,) = out["spec"]["initContainers"]
    proxy = out["spec"]["containers"][-1]
    assert (init["image"], proxy["image"], proxy["imagePullPolicy"]) == ("reg/init:9", "reg/proxy:9", "Never")
    args = proxy["args"]
    assert args[args.index("--control-plane") + 1] == "cp.mesh:15012"
    assert args[args.index("--trust-domain") + 1] == "example.org"
    assert {"name": "ISTIO_META_CLUSTER_ID", "value": "east"} in proxy["env"]
    assert proxy["resources"] == init["resources"] == {"requests": {"cpu": "10m"}}
    assert out["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert '"imagePullSecrets":["regcred"]' in out["metadata"]["annotations"]["sidecar.istio.io/status"]


def test_pod_made_by_a_deployment_names_the_deployment() -> None:
    pod = {
        "metadata": {
            "generateName": "reviews-v1-7d4b9c-",
            "namespace": "bookinfo",
            "labels": {"app": "reviews", "pod-template-hash": "7d4b9c"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-7d4b9c", "controller": True}
            ],
        },
        "spec": {"containers": [{"name": "reviews"}]},
    }
    env = {e["name"]: e.get("value") for e in inject(pod, InjectSettings())["spec"]["containers"][-1]["env"]}
    assert env["ISTIO_META_WORKLOAD_NAME"] == "reviews-v1"
    assert env["ISTIO_META_OWNER"] == "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/reviews-v1"
