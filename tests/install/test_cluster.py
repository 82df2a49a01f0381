"""plait's install commands against a real Kubernetes API server (kube-testenv, API server only: objects
are stored, no pod runs): ``check --pre`` on an empty cluster, install of the two example operator
files (revision 1-9-1 and a gateway in its own namespace), ``verify-install`` finding every object
(and the Deployments not ready: no node here), ``check`` naming the broken parts with hints,
``uninstall --revision`` removing that revision's objects and nothing else, ``--purge`` the CRDs too.
The lead's node tests (tests/kube/test_node_install.py) run the pods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plait.cli.main import app
from plait.install.apply import InstallError, Kubectl, install, installed_objects, legacy_apis, wait_for_webhooks
from plait.install.operator import resolve
from plait.install.settings import InstallSettings
from plait.testing.kube import KubeTestenv, require_testenv

OPERATOR = Path(__file__).parent / "testdata" / "operator"


@pytest.fixture(scope="module")
def cluster():
    env = KubeTestenv(require_testenv(), prefix="plait-install-").start()
    try:
        yield env
    finally:
        env.remove()


@pytest.fixture
def kubectl(cluster: KubeTestenv, monkeypatch) -> Kubectl:
    binary = str(Path(cluster.env["KUBE_TESTENV_BIN"]) / "kubectl")
    monkeypatch.setenv("KUBECTL", binary)
    return Kubectl(binary=binary, kubeconfig=cluster.kubeconfig)


def plait(cluster: KubeTestenv, *args: str):
    return CliRunner().invoke(app, [*args, "--kubeconfig", cluster.kubeconfig])


def settings_of(kubectl: Kubectl, name: str) -> InstallSettings:
    resolved = resolve([(name, (OPERATOR / name).read_text())])
    return InstallSettings(**{**resolved.settings.__dict__, "legacy_apis": legacy_apis(kubectl)})


def names(objects: list[dict]) -> set[tuple[str, str, str]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects}


def test_check_pre_passes_on_an_empty_cluster(cluster, kubectl):
    result = plait(cluster, "check", "--pre")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "kubernetes-api" in lines and "pre-kubernetes-setup" in lines
    assert "√ can query the Kubernetes API" in lines
    assert "√ is running the minimum Kubernetes API version (1.20)" in lines
    assert "√ can create customresourcedefinitions.apiextensions.k8s.io" in lines
    assert lines[-1] == "Status check results are √"


def test_install_uninstall_leaves_only_what_others_made(cluster, kubectl):
    assert legacy_apis(kubectl)  # kube-testenv is 1.20
    kubectl.run("create", "namespace", "istio-system")
    kubectl.run("create", "configmap", "users-own", "-n", "istio-system")
    control_plane, gateway = settings_of(kubectl, "control-plane.yaml"), settings_of(kubectl, "extra-gateway.yaml")
    reported: list[str] = []
    install(kubectl, control_plane, reported.append, timeout=60, wait=False)
    install(kubectl, gateway, reported.append, timeout=60, wait=False)
    assert reported == [
        "Istio core installed",
        "Istiod installed",
        "Ingress gateways installed",
        "Egress gateways installed",
        "Ingress gateways installed",
    ]
    # no node runs istiod here: the validation webhook never answers, and install (with its wait) says so
    with pytest.raises(InstallError, match="failed calling webhook.*is the control plane's webhook reachable"):
        wait_for_webhooks(kubectl, "istio-system", timeout=2)
    hpa = kubectl.get_json("horizontalpodautoscalers.v2beta2.autoscaling", "istiod-1-9-1", "-n", "istio-system")
    assert (hpa["apiVersion"], hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == ("autoscaling/v2beta2", 2, 10)
    assert kubectl.run("get", "deployment", "-n", "istio-gateway-sample", "-o", "name").split() == [
        "deployment.apps/istio-ingressgateway-istio-gateway-sample"
    ]

    verified = plait(cluster, "verify-install", "-f", str(OPERATOR / "control-plane.yaml"))
    lines = verified.output.splitlines()
    assert verified.exit_code == 1
    assert "✔ CustomResourceDefinition: virtualservices.networking.istio.io: checked successfully" in lines
    assert "✔ ValidatingWebhookConfiguration: istio-validator-1-9-1-istio-system: checked successfully" in lines
    assert "✘ Deployment: istiod-1-9-1.istio-system: 0/2 replicas ready" in lines  # no node: nothing runs
    not_ready = [line for line in lines if line.startswith("✘ ") and "verification failed" not in line]
    assert len(not_ready) == 3 and all(line.startswith("✘ Deployment: ") for line in not_ready)
    assert lines[-1] == "✘ plait installation verification failed: 3 resources are missing or not ready"

    checked = plait(cluster, "check", "-f", str(OPERATOR / "control-plane.yaml"))
    out = checked.output
    assert checked.exit_code == 1
    assert "√ Istio's CRDs are installed" in out
    assert "× Deployment istio-system/istiod-1-9-1 is ready\n    0/2 replicas ready\n    see: kubectl describe" in out
    assert "× istio-validator-1-9-1-istio-system has its caBundle" in out
    assert "× validating webhook refuses an invalid VirtualService (dry run)" in out
    assert "see: check that Service istiod-1-9-1.istio-system has ready endpoints" in out

    before = names(installed_objects(kubectl, None, purge=True))
    removed = plait(cluster, "uninstall", "--revision", "1-9-1", "-y")
    assert removed.exit_code == 0, removed.output
    assert "  Removed Deployment:istio-gateway-sample:istio-ingressgateway-istio-gateway-sample." in removed.output
    assert removed.output.splitlines()[-1] == "✔ Uninstall complete"
    left = names(installed_objects(kubectl, None, purge=True))
    assert left and {kind for kind, _, _ in left} == {"CustomResourceDefinition"}  # shared by revisions
    assert len(before) - len(left) == len(removed.output.splitlines()) - 1
    assert kubectl.run("get", "configmap", "users-own", "-n", "istio-system", "-o", "name").strip()
    assert "istio-gateway-sample" in kubectl.run("get", "namespaces", "-o", "name")  # namespaces stay

    purged = plait(cluster, "uninstall", "--purge", "-y")
    assert purged.exit_code == 0, purged.output
    assert installed_objects(kubectl, None, purge=True) == []
    assert "virtualservices" not in kubectl.run("get", "crd", "-o", "name")


def test_install_of_a_gateway_alone_needs_the_crds(cluster, kubectl):
    result = plait(cluster, "install", "-y", "-f", str(OPERATOR / "extra-gateway.yaml"), "--timeout", "5")
    assert result.exit_code == 1
    assert "the cluster lacks Istio's CRDs" in result.output and "--set profile=minimal" in result.output
    assert json.loads(kubectl.run("get", "deployments", "-A", "-o", "json"))["items"] == []


def test_install_says_which_deployment_is_not_ready_and_why(cluster, kubectl):
    result = plait(cluster, "install", "-y", "--set", "profile=minimal", "--timeout", "3")
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "✔ Istio core installed"
    assert "✘ Deployment istio-system/istiod is not ready: kubectl rollout status" in result.output
    assert "no pod was created" in result.output  # an API server alone runs no controllers
    assert "see kubectl describe pods -n istio-system -l app=istiod,istio.io/rev=default" in result.output
    purged = plait(cluster, "uninstall", "--purge", "-y")
    assert purged.exit_code == 0 and installed_objects(kubectl, None, purge=True) == []
