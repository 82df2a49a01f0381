"""The install manifests (`plait.install.manifests`): goldens per settings, and what they must hold.

tests/install/testdata/NAME.golden.yaml is `manifest(settings)` for each case of `CASES`, as
``plait manifest generate`` prints it; regenerate with ``REFRESH_GOLDEN=1``. The cluster test
(tests/kube/test_node_bookinfo.py) applies these objects to a real node.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from plait.cli.main import app
from plait.controlplane.kubeidentity import CLUSTER_RULES, NAMESPACE_RULES
from plait.install.manifests import InstallSettings, components, manifest
from plait.sources.kubernetes import READER_RULES

TESTDATA = Path(__file__).parent / "testdata"
CASES = {
    "default": InstallSettings(),
    "custom": InstallSettings(
        namespace="mesh", image="registry.example/plait:2", ingress_gateway=False, sidecar_injector=True
    ),
}


def render(settings: InstallSettings) -> str:
    return yaml.safe_dump_all(manifest(settings), sort_keys=False, width=1000)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    actual = render(CASES[case])
    golden = TESTDATA / f"{case}.golden.yaml"
    if os.environ.get("REFRESH_GOLDEN"):
        golden.write_text(actual)
    expected = golden.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), golden.name, "generated"))
    assert actual == expected, f"manifests of {case} changed (REFRESH_GOLDEN=1 to accept):\n{diff}"


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def test_the_control_plane_may_do_what_its_parts_declare():
    objects = manifest(InstallSettings())
    [cluster_role] = by_kind(objects, "ClusterRole")
    [role] = by_kind(objects, "Role")
    assert cluster_role["rules"] == [*READER_RULES, *CLUSTER_RULES]
    assert role["rules"] == list(NAMESPACE_RULES)
    [binding] = by_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "istiod", "namespace": "istio-system"}]


def test_istiod_serves_istios_ports_and_is_ready_on_15014():
    objects = manifest(InstallSettings(image="example/plait:7"))
    service = next(o for o in by_kind(objects, "Service") if o["metadata"]["name"] == "istiod")
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        (15010, 15010),
        (15012, 15012),
        (443, 15017),
        (15014, 15014),
    }
    deployment = next(o for o in by_kind(objects, "Deployment") if o["metadata"]["name"] == "istiod")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "example/plait:7"
    assert container["args"][:2] == ["control-plane", "--kubernetes"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 15014}
    assert {e["name"] for e in container["env"]} == {"POD_NAME", "POD_NAMESPACE"}
    assert set(service["spec"]["selector"].items()) <= set(deployment["spec"]["template"]["metadata"]["labels"].items())


def test_the_ingress_gateway_maps_80_and_443_as_istio_and_runs_the_agent_in_gateway_mode():
    objects = dict(components(InstallSettings()))["Ingress gateways"]
    deployment, service = objects
    assert service["metadata"]["labels"]["istio"] == "ingressgateway"
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {(80, 8080), (443, 8443), (15021, 15021)}
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["agent", "--mode", "gateway"]
    token = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "istio-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "istio-ca"


def test_parts_are_named_and_ordered_as_istioctl_reports_them():
    assert [name for name, _ in components(InstallSettings())] == ["Istio core", "Istiod", "Ingress gateways"]
    assert [name for name, _ in components(InstallSettings(ingress_gateway=False))] == ["Istio core", "Istiod"]


def test_the_webhooks_point_at_istiod_in_the_chosen_namespace():
    objects = manifest(InstallSettings(namespace="mesh", sidecar_injector=True))
    [validating] = by_kind(objects, "ValidatingWebhookConfiguration")
    [mutating] = by_kind(objects, "MutatingWebhookConfiguration")
    assert validating["webhooks"][0]["clientConfig"] == {
        "service": {"name": "istiod", "namespace": "mesh", "path": "/validate", "port": 443}
    }
    assert all(
        hook["clientConfig"] == {"service": {"name": "istiod", "namespace": "mesh", "path": "/inject", "port": 443}}
        for hook in mutating["webhooks"]
    )
    namespace_selected = {"key": "istio-injection", "operator": "In", "values": ["enabled"]}
    assert any(namespace_selected in hook["namespaceSelector"]["matchExpressions"] for hook in mutating["webhooks"])
    assert not by_kind(manifest(InstallSettings(sidecar_injector=False)), "MutatingWebhookConfiguration")


def test_manifest_generate_prints_the_objects():
    result = CliRunner().invoke(app, ["manifest", "generate", "--namespace", "mesh", "--no-ingress-gateway"])
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load_all(result.output)) == manifest(InstallSettings(namespace="mesh", ingress_gateway=False))
