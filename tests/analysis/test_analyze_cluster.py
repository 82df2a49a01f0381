"""``plait analyze`` against a real API server (kube-testenv, API-only mode, Istio's CRDs loaded):
what kubectl stored is read as the control plane reads it, files given beside it win over the
cluster's objects, and the namespaces Istio never injects are left out."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from plait.cli.main import app
from plait.testing.kube import KubeTestenv, require_testenv

runner = CliRunner()

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: admin, port: 9901}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: shop, labels: {app: reviews, version: v1}}
spec:
  serviceAccountName: reviews
  containers: [{name: app, image: reviews:1}, {name: istio-proxy, image: proxy:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  serviceAccountName: web
  containers: [{name: app, image: web:1}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gateway]
  http:
  - route: [{destination: {host: reviews, subset: v3}}]
"""


@pytest.fixture(scope="module")
def cluster():
    env = KubeTestenv(require_testenv(), prefix="plait-kube-analyze-").start()
    try:
        env.load_crds()
        env.apply(CLUSTER)
        yield env
    finally:
        env.remove()


def test_analyze_reads_what_kubectl_stored(cluster):
    result = runner.invoke(app, ["analyze", "--kubeconfig", cluster.kubeconfig, "-n", "shop"])
    assert result.exit_code == 79, result.output
    assert result.stdout.splitlines() == [
        'Error [IST0101] (VirtualService shop/reviews) Referenced gateway not found: "bookinfo-gateway"',
        "Error [IST0101] (VirtualService shop/reviews) Referenced host+subset in destinationrule not found: "
        '"reviews+v3"',
        "Error [IST0173] (DestinationRule shop/reviews) The Subset v2 defined in the DestinationRule does not select "
        "any pods. Which may lead to 503 UH (NoHealthyUpstream).",
        "Warning [IST0103] (Pod shop/web) The pod shop/web is missing the Istio proxy. This can often be resolved by "
        "restarting or redeploying the workload.",
        "Info [IST0118] (Service shop/reviews) Port name admin (port: 9901, targetPort: 9901) doesn't follow the "
        "naming convention of Istio port.",
    ]


def test_all_namespaces_leaves_out_those_istio_never_injects(cluster):
    result = runner.invoke(app, ["analyze", "--kubeconfig", cluster.kubeconfig, "-A", "--output-threshold", "Info"])
    namespaces_reported = {
        line.split("(Namespace ", 1)[1].split(")", 1)[0] for line in result.stdout.splitlines() if "(Namespace " in line
    }
    assert namespaces_reported == {"default", "plain"}  # not kube-system, kube-public, kube-node-lease


def test_files_are_analyzed_with_the_cluster_and_win_over_its_objects(cluster, tmp_path):
    fix = tmp_path / "fix.yaml"
    fix.write_text(
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"""
    )
    result = runner.invoke(
        app, ["analyze", "--kubeconfig", cluster.kubeconfig, "-n", "shop", "--failure-threshold", "Error", str(fix)]
    )
    assert result.exit_code == 0, result.output  # what is left is a Warning and an Info
    assert [line.split(" (")[0] for line in result.stdout.splitlines()] == ["Warning [IST0103]", "Info [IST0118]"]
