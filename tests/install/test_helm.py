"""The Helm charts (charts/base, charts/istiod, charts/gateway) render, offline with Helm's own SDK
(PyPI helm-python-sdk), exactly the objects `plait manifest generate` prints for the same settings
(namespaces aside: Helm makes those), values from `plait.install.helm.chart_values`."""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import pytest
import yaml

from plait.install.helm import chart_values
from plait.install.manifests import manifest
from plait.install.operator import resolve
from plait.install.settings import InstallSettings

CHARTS = Path(__file__).parents[2] / "charts"
OPERATOR = Path(__file__).parent / "testdata" / "operator"


def key(obj: dict) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def comparable(obj: dict) -> dict:
    """The mesh ConfigMap's YAML text compared as data (Helm's toYaml and PyYAML quote differently)."""
    if obj["kind"] == "ConfigMap" and "mesh" in obj.get("data", {}):
        return {**obj, "data": {**obj["data"], "mesh": yaml.safe_load(obj["data"]["mesh"])}}
    return obj


def rendered(settings: InstallSettings) -> dict[tuple[str, str, str], dict]:
    objects = {}
    for index, (chart, namespace, values) in enumerate(chart_values(settings)):
        output = helm.Chart.load(str(CHARTS / chart)).render(values, name=f"{chart}-{index}", namespace=namespace)
        for text in output.values():
            for obj in yaml.load_all(text, Loader=yaml.CSafeLoader):
                if obj:
                    assert key(obj) not in objects, f"{key(obj)} rendered twice"
                    objects[key(obj)] = comparable(obj)
    return objects


CASES = {
    "default": ([], []),
    "demo-canary": ([], ["profile=demo", "revision=canary", "components.pilot.k8s.replicaCount=2"]),
    "control-plane": (["control-plane.yaml"], []),
    "extra-gateway": (["extra-gateway.yaml"], []),
    "no-injector-mesh-namespace": ([], ["values.global.istioNamespace=mesh", "meshConfig.accessLogEncoding=JSON"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("legacy", [False, True])
def test_the_charts_render_what_manifest_generate_prints(case: str, legacy: bool) -> None:
    files, sets = CASES[case]
    settings = resolve([(name, (OPERATOR / name).read_text()) for name in files], sets).settings
    settings = InstallSettings(
        **{**settings.__dict__, "legacy_apis": legacy, "sidecar_injector": "injector" not in case}
    )
    if legacy and settings.base:  # the base chart ships Istio's CRDs as they are (CEL rules need 1.25+)
        settings = InstallSettings(**{**settings.__dict__, "base": False})
    expected = {key(o): comparable(o) for o in manifest(settings) if o["kind"] != "Namespace"}
    actual = rendered(settings)
    assert sorted(actual) == sorted(expected)
    for name, obj in expected.items():
        assert actual[name] == obj, name


def test_the_charts_defaults_are_the_default_profile():
    releases = [(chart, namespace) for chart, namespace, _ in chart_values(InstallSettings())]
    assert releases == [("base", "istio-system"), ("istiod", "istio-system"), ("gateway", "istio-system")]
    actual = {}
    for chart, namespace in releases:
        output = helm.Chart.load(str(CHARTS / chart)).render({}, name=chart, namespace=namespace)
        actual |= {key(o): comparable(o) for text in output.values() for o in yaml.safe_load_all(text) if o}
    expected = {key(o): comparable(o) for o in manifest(InstallSettings()) if o["kind"] != "Namespace"}
    assert actual == expected
