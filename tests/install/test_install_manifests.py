"""The install manifests (`plait.install.manifests`): goldens per profile and per example operator file,
and what the objects must hold (Istio's revisioned names, labels that let uninstall find them,
gateways of any namespace pointed at their revision's control plane, PDBs and HPAs).

tests/install/testdata/golden/NAME.yaml is ``plait manifest generate`` for each case of `CASES`, with
each of Istio's CRDs shortened to its name and labels (the CRDs are tested on their own);
regenerate with ``REFRESH_GOLDEN=1`` and review the diff. The cluster tests (tests/install/test_cluster.py,
tests/kube) apply these objects to a real API server / node.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from plait.cli.main import app
from plait.controlplane.gatewaydeploy import GATEWAY_CONTROLLER_RULES
from plait.controlplane.gatewaystatus import STATUS_RULES
from plait.controlplane.injector import mutating_webhook_configuration
from plait.controlplane.kubeidentity import CLUSTER_RULES, NAMESPACE_RULES
from plait.install.crds import CRD_FILE
from plait.install.manifests import components, manifest
from plait.install.operator import resolve
from plait.install.profiles import PROFILES
from plait.install.settings import InstallSettings
from plait.sources.kubernetes import READER_RULES

TESTDATA = Path(__file__).parent / "testdata"
OPERATOR = TESTDATA / "operator"
CASES = {
    **{f"profile-{name}": ([], [f"profile={name}"]) for name in PROFILES},
    "control-plane": (["control-plane.yaml"], []),
    "extra-gateway": (["extra-gateway.yaml"], []),
}
OWNERSHIP = ("app.kubernetes.io/managed-by", "install.operator.istio.io/owning-resource", "operator.istio.io/component")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def settings_of(case: str, **changes) -> InstallSettings:
    files, sets = CASES[case]
    resolved = resolve([(name, (OPERATOR / name).read_text()) for name in files], sets)
    return InstallSettings(**{**resolved.settings.__dict__, **changes})


def shortened(objects: list[dict]) -> list[dict]:
    return [
        {"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": o["metadata"]}
        if o["kind"] == "CustomResourceDefinition"
        else o
        for o in objects
    ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    actual = yaml.safe_dump_all(shortened(manifest(settings_of(case))), sort_keys=False, width=1000)
    golden = TESTDATA / "golden" / f"{case}.yaml"
    if os.environ.get("REFRESH_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(actual)
    expected = golden.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), golden.name, "generated"))
    assert actual == expected, f"manifests of {case} changed (REFRESH_GOLDEN=1 to accept):\n{diff}"


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_is_well_formed_and_labelled_for_uninstall(case: str) -> None:
    settings = settings_of(case)
    objects = manifest(settings)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "an object is made twice"
    namespaces = {o["metadata"]["name"] for o in by_kind(objects, "Namespace")}
    for obj in objects:
        meta = obj["metadata"]
        assert obj["apiVersion"] and obj["kind"] and DNS_1123.match(meta["name"]) and len(meta["name"]) <= 253
        if obj["kind"] == "Namespace":
            assert "labels" not in meta  # never istio.io/rev (that would select it for injection), never owned
            continue
        labels = meta["labels"]
        assert all(labels[key] for key in OWNERSHIP), obj
        assert labels["app.kubernetes.io/managed-by"] == "plait"
        if obj["kind"] == "CustomResourceDefinition":
            assert "istio.io/rev" not in labels  # shared by revisions
        else:
            assert labels["istio.io/rev"] == (settings.revision or "default")
        if "namespace" in meta:
            assert meta["namespace"] in namespaces or case == "extra-gateway" and meta["namespace"] == "istio-system"
    for deployment in by_kind(objects, "Deployment"):
        spec = deployment["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        assert set(spec["selector"]["matchLabels"].items()) <= set(pod_labels.items())
        assert pod_labels["istio.io/rev"] == settings.revision_label
        same = [o for o in objects if o["metadata"].get("namespace") == deployment["metadata"]["namespace"]]
        [service] = [s for s in by_kind(same, "Service") if s["metadata"]["name"] == deployment["metadata"]["name"]]
        assert set(service["spec"]["selector"].items()) <= set(pod_labels.items())
        [pdb] = [
            p for p in by_kind(same, "PodDisruptionBudget") if p["metadata"]["name"] == deployment["metadata"]["name"]
        ]
        assert pdb["spec"] == {"minAvailable": 1, "selector": spec["selector"]}
        account = spec["template"]["spec"]["serviceAccountName"]
        assert any(a["metadata"]["name"] == account for a in by_kind(same, "ServiceAccount"))


def _selects(expressions: list[dict], labels: dict[str, str]) -> bool:
    """A label selector's matchExpressions on these labels, as the API server evaluates them."""
    tests = {
        "In": lambda e: labels.get(e["key"]) in e["values"],
        "NotIn": lambda e: labels.get(e["key"]) not in e["values"],
        "Exists": lambda e: e["key"] in labels,
        "DoesNotExist": lambda e: e["key"] not in labels,
    }
    return all(tests[e["operator"]](e) for e in expressions)


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_pod_of_the_install_goes_through_its_injection_webhooks(case: str) -> None:
    """Pods carry their revision's label, which the injector's object selectors read: without Istio's
    ``sidecar.istio.io/inject: "false"`` label a new istiod pod needs the istiod it replaces to answer
    the webhook (failurePolicy Fail), and none is created while no istiod runs (a node test caught it)."""
    settings = settings_of(case)
    objects = manifest(settings)
    webhooks = by_kind(objects, "MutatingWebhookConfiguration") or [
        mutating_webhook_configuration(b"", revision=settings.revision)  # an install without istiod: its revision's
    ]
    selectors = [w["objectSelector"]["matchExpressions"] for c in webhooks for w in c["webhooks"]]
    for deployment in by_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert not any(_selects(expressions, labels) for expressions in selectors), deployment["metadata"]["name"]
        assert _selects(selectors[0], {**labels, "sidecar.istio.io/inject": "true"})  # the selectors do read labels


def test_the_control_plane_may_do_what_its_parts_declare():
    objects = manifest(InstallSettings())
    [cluster_role] = by_kind(objects, "ClusterRole")
    [role] = by_kind(objects, "Role")[:1]
    assert cluster_role["rules"] == [*READER_RULES, *CLUSTER_RULES, *GATEWAY_CONTROLLER_RULES, *STATUS_RULES]
    assert role["metadata"]["name"] == "istiod" and role["rules"] == list(NAMESPACE_RULES)
    [binding] = by_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"] == "istiod-clusterrole-istio-system"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "istiod", "namespace": "istio-system"}]


def test_a_revision_gets_istios_revisioned_names_everywhere():
    objects = manifest(settings_of("control-plane"))
    names = {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] != "CustomResourceDefinition"}
    assert {
        ("ServiceAccount", "istiod-1-9-1"),
        ("ClusterRole", "istiod-clusterrole-1-9-1-istio-system"),
        ("ConfigMap", "istio-1-9-1"),
        ("Deployment", "istiod-1-9-1"),
        ("Service", "istiod-1-9-1"),
        ("PodDisruptionBudget", "istiod-1-9-1"),
        ("HorizontalPodAutoscaler", "istiod-1-9-1"),
        ("ValidatingWebhookConfiguration", "istio-validator-1-9-1-istio-system"),
        ("MutatingWebhookConfiguration", "istio-sidecar-injector-1-9-1"),
    } <= names
    deployment = named(objects, "Deployment", "istiod-1-9-1")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--revision") + 1] == "1-9-1"
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "istiod", "istio.io/rev": "1-9-1"}
    service = named(objects, "Service", "istiod-1-9-1")
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        (15010, 15010),
        (15012, 15012),
        (443, 15017),
        (15014, 15014),
    }
    hooks = named(objects, "MutatingWebhookConfiguration", "istio-sidecar-injector-1-9-1")["webhooks"]
    assert {h["clientConfig"]["service"]["name"] for h in hooks} == {"istiod-1-9-1"}
    assert all("caBundle" not in h["clientConfig"] for h in hooks)
    assert any(
        {"key": "istio.io/rev", "operator": "In", "values": ["1-9-1"]} in h["namespaceSelector"]["matchExpressions"]
        for h in hooks
    )
    assert not any(
        "istio-injection" in str(h["namespaceSelector"])
        and "In" in str(h["namespaceSelector"])
        and "enabled" in str(h["namespaceSelector"])
        for h in hooks
    )


def test_the_mesh_configmap_holds_meshconfig_as_yaml_with_the_revisions_discovery_address():
    objects = manifest(settings_of("control-plane"))
    mesh = yaml.safe_load(named(objects, "ConfigMap", "istio-1-9-1")["data"]["mesh"])
    assert mesh["accessLogFile"] == "/dev/stdout" and mesh["enableTracing"] is True
    assert mesh["defaultConfig"]["discoveryAddress"] == "istiod-1-9-1.istio-system.svc:15012"
    assert mesh["defaultConfig"]["tracing"]["sampling"] == 100.0
    default = yaml.safe_load(named(manifest(InstallSettings()), "ConfigMap", "istio")["data"]["mesh"])
    assert default == {"defaultConfig": {"discoveryAddress": "istiod.istio-system.svc:15012"}}


def test_k8s_settings_reach_the_deployments_services_and_autoscalers():
    objects = manifest(settings_of("control-plane"))
    for name in ("istiod-1-9-1", "istio-ingressgateway", "istio-egressgateway"):
        deployment = named(objects, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"taco-istio": "enabled"}
        assert pod["containers"][0]["resources"] == {"requests": {"cpu": "1000m", "memory": "1024Mi"}}
        hpa = named(objects, "HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert deployment["spec"]["replicas"] == 2
    istiod = named(objects, "Deployment", "istiod-1-9-1")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "PILOT_TRACE_SAMPLING", "value": "100"} in istiod["env"]
    ingress = named(objects, "Service", "istio-ingressgateway")["spec"]
    assert ingress["type"] == "NodePort"
    assert [(p["name"], p["port"], p["targetPort"], p.get("nodePort")) for p in ingress["ports"]] == [
        ("status-port", 15021, 15021, None),
        ("http2", 80, 8080, 31080),
        ("https", 443, 8443, 30443),
        ("tcp", 31400, 31400, None),
        ("tls", 15443, 15443, None),
    ]
    container = named(objects, "Deployment", "istio-ingressgateway")["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in container["ports"]] == [15021, 15090, 8080, 8443, 31400, 15443]


def test_the_egress_gateway_is_istios():
    objects = manifest(settings_of("profile-demo"))
    service = named(objects, "Service", "istio-egressgateway")
    assert service["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, 8080), (443, 8443)]
    assert service["spec"]["selector"] == {"app": "istio-egressgateway", "istio": "egressgateway"}
    assert [name for name, _ in components(settings_of("profile-demo"))] == [
        "Istio core",
        "Istiod",
        "Ingress gateways",
        "Egress gateways",
    ]


def test_a_gateway_in_its_own_namespace_finds_its_revisions_control_plane_by_itself():
    settings = settings_of("extra-gateway")
    parts = components(settings)
    assert [name for name, _ in parts] == ["Ingress gateways"]
    objects = parts[0][1]
    assert objects[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-gateway-sample"}}
    name = "istio-ingressgateway-istio-gateway-sample"
    deployment = named(objects, "Deployment", name)
    assert deployment["metadata"]["namespace"] == "istio-gateway-sample"
    labels = {"app": name, "istio": "ingressgateway-istio-gateway-sample"}
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:3] == ["agent", "--mode", "gateway"]
    assert args[args.index("--control-plane") + 1] == "istiod-1-9-1.istio-system.svc:15012"
    assert args[args.index("--labels") + 1] == f"app={name},istio=ingressgateway-istio-gateway-sample"
    assert not by_kind(objects, "ConfigMap")  # nothing to copy by hand: the root cert ConfigMap is the control plane's
    role = named(objects, "Role", f"{name}-sds")
    assert role["metadata"]["namespace"] == "istio-gateway-sample"
    binding = named(objects, "RoleBinding", f"{name}-sds")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{name}-service-account"}]


def test_old_api_servers_get_v2beta2_autoscalers_v1beta1_budgets_and_crds_without_cel():
    objects = manifest(settings_of("control-plane", legacy_apis=True))
    assert {o["apiVersion"] for o in by_kind(objects, "HorizontalPodAutoscaler")} == {"autoscaling/v2beta2"}
    assert {o["apiVersion"] for o in by_kind(objects, "PodDisruptionBudget")} == {"policy/v1beta1"}
    old = yaml.safe_dump_all(by_kind(objects, "CustomResourceDefinition"))
    assert "x-kubernetes-validations" not in old and "default: ''" not in old
    new = yaml.safe_dump_all(by_kind(manifest(settings_of("control-plane")), "CustomResourceDefinition"))
    assert "x-kubernetes-validations" in new


def test_the_base_component_carries_istios_own_crds():
    upstream = [d for d in yaml.load_all(CRD_FILE.read_text(), Loader=yaml.CSafeLoader) if d]
    crds = by_kind(manifest(InstallSettings()), "CustomResourceDefinition")
    assert [c["metadata"]["name"] for c in crds] == [u["metadata"]["name"] for u in upstream]
    assert len(crds) == 15 and "virtualservices.networking.istio.io" in {c["metadata"]["name"] for c in crds}
    assert all(c["spec"] == u["spec"] for c, u in zip(crds, upstream, strict=True))


def test_default_install_keeps_its_parts_and_names():
    assert [name for name, _ in components(InstallSettings())] == ["Istio core", "Istiod", "Ingress gateways"]
    objects = manifest(InstallSettings(image="example/plait:7"))
    deployment = named(objects, "Deployment", "istiod")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "example/plait:7"
    assert container["args"][:2] == ["control-plane", "--kubernetes"] and "--revision" not in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 15014}
    gateway = named(objects, "Service", "istio-ingressgateway")
    assert gateway["spec"]["type"] == "LoadBalancer"
    assert {(p["port"], p["targetPort"]) for p in gateway["spec"]["ports"]} == {(80, 8080), (443, 8443), (15021, 15021)}
    validating = named(objects, "ValidatingWebhookConfiguration", "istio-validator-istio-system")
    assert validating["webhooks"][0]["clientConfig"] == {
        "service": {"name": "istiod", "namespace": "istio-system", "path": "/validate", "port": 443}
    }
    assert not by_kind(manifest(InstallSettings(sidecar_injector=False)), "MutatingWebhookConfiguration")


def test_manifest_generate_prints_what_install_applies():
    files = [str(OPERATOR / "control-plane.yaml")]
    result = CliRunner().invoke(
        app, ["manifest", "generate", "-f", files[0], "--set", "values.global.istioNamespace=mesh"]
    )
    assert result.exit_code == 0, result.output
    expected = resolve(
        [("control-plane.yaml", (OPERATOR / "control-plane.yaml").read_text())], ["values.global.istioNamespace=mesh"]
    )
    assert list(yaml.safe_load_all(result.stdout)) == manifest(expected.settings)


def test_the_prometheus_addon_scrapes_what_istios_annotations_point_at(tmp_path):
    """``--set addons.prometheus=true``: Istio's addon in the control plane's namespace (istioctl's "Addons"
    part); every
    pod plait installs is annotated so (istiod 15014 /metrics, gateways 15090 /stats/prometheus). The pods
    come from istiod's HTTP service discovery."""
    resolved = resolve(sets=["addons.prometheus=true"], image="registry.test/plait/proxy:7")
    assert not resolved.warnings
    parts = dict(components(resolved.settings))
    addon = parts["Addons"]
    assert [(o["kind"], o["metadata"]["name"]) for o in addon] == [
        ("ServiceAccount", "prometheus"),
        ("ConfigMap", "prometheus"),
        ("Deployment", "prometheus"),
        ("Service", "prometheus"),
    ]
    container = named(addon, "Deployment", "prometheus")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.test/plait/prometheus:7"
    text = named(addon, "ConfigMap", "prometheus")["data"]["prometheus.yml"]
    (pods,) = [job for job in yaml.safe_load(text)["scrape_configs"] if job["job_name"] == "kubernetes-pods"]
    assert pods["http_sd_configs"][0]["url"] == "http://istiod.istio-system.svc:15014/api/v1/prometheus/targets"
    (tmp_path / "prometheus.yml").write_text(text)
    checked = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr  # Debian's Prometheus takes it
    for name, where in (("istiod", ("15014", "/metrics")), ("istio-ingressgateway", ("15090", "/stats/prometheus"))):
        annotations = named(manifest(resolved.settings), "Deployment", name)["spec"]["template"]["metadata"][
            "annotations"
        ]
        assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == where
        assert annotations["prometheus.io/scrape"] == "true"
    assert "Addons" not in dict(components(resolve().settings))  # off by default, as Istio's profiles
