"""IstioOperator input (`plait.install.operator`): profiles, files and --set merged in istioctl's order,
the fields plait does not implement reported by path, and bad input refused with file, path and
what was expected. testdata/operator holds users' Istio files (see its NOTICE)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plait.install.operator import OperatorError, apply_set, merge, parse_set, resolve
from plait.install.profiles import PROFILES, profile_spec

OPERATOR = Path(__file__).parent / "testdata" / "operator"


def read(name: str) -> tuple[str, str]:
    return name, (OPERATOR / name).read_text()


def test_the_revision_examples_are_accepted_with_nothing_unsupported():
    control_plane = resolve([read("control-plane.yaml")])
    gateway = resolve([read("extra-gateway.yaml")])
    assert control_plane.warnings == () and gateway.warnings == ()

    settings = control_plane.settings
    assert (settings.revision, settings.namespace, settings.owner, settings.log_level) == (
        "1-9-1",
        "istio-system",
        "istio-controlplane",
        "info",
    )
    assert settings.pilot.hpa == {"maxReplicas": 10, "minReplicas": 2}
    assert settings.pilot.node_selector == {"taco-istio": "enabled"}
    assert settings.pilot.env == ({"name": "PILOT_TRACE_SAMPLING", "value": "100"},)
    assert [(g.name, g.egress) for g in settings.gateways] == [
        ("istio-ingressgateway", False),
        ("istio-egressgateway", True),
    ]
    ingress = settings.ingress_gateways[0]
    assert ingress.k8s.service_type == "NodePort"
    assert [p.get("nodePort") for p in ingress.k8s.service_ports] == [None, 31080, 30443, None, None]
    assert settings.mesh_config["accessLogFile"] == "/dev/stdout"
    assert settings.control_plane == "istiod-1-9-1.istio-system.svc:15012"

    extra = gateway.settings
    assert (extra.base, extra.pilot) == (False, None)
    [sample] = extra.gateways
    assert (sample.name, sample.namespace) == ("istio-ingressgateway-istio-gateway-sample", "istio-gateway-sample")
    assert sample.labels == {
        "app": "istio-ingressgateway-istio-gateway-sample",
        "istio": "ingressgateway-istio-gateway-sample",
    }
    assert extra.control_plane == "istiod-1-9-1.istio-system.svc:15012"  # its revision's, found by itself


def test_fields_plait_does_not_implement_are_reported_by_path_not_dropped_silently():
    resolved = resolve([read("istio-fields.yaml")])
    suffix = " is not implemented by plait; ignored"
    assert all(w.startswith("istio-fields.yaml: ") and w.endswith(suffix) for w in resolved.warnings)
    assert [w.removeprefix("istio-fields.yaml: ").removesuffix(suffix) for w in resolved.warnings] == [
        "spec.meshConfig.outboundTrafficPolicy",
        "spec.meshConfig.defaultConfig.holdApplicationUntilProxyStarts",
        "spec.values.global.proxy",
        "spec.values.pilot",
        "spec.components.cni",
        "spec.components.pilot.k8s.affinity",
    ]
    assert resolved.settings.pilot.replicas == 2  # the implemented fields still apply
    assert resolved.settings.gateways == ()  # profile minimal


def test_a_set_flag_on_an_unimplemented_field_is_reported_once_as_set():
    resolved = resolve([read("istio-fields.yaml")], ["values.global.proxy.image=x", "components.cni.enabled=false"])
    assert [w for w in resolved.warnings if w.startswith("--set")] == []  # the file already named them
    assert resolve([], ["values.sidecarInjectorWebhook.enabled=true"]).warnings == (
        "--set: spec.values.sidecarInjectorWebhook is not implemented by plait; ignored",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spec:\n  revision: 1-9-1\n", "f.yaml: expected apiVersion install.istio.io/v1alpha1 and kind IstioOperator"),
        (
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  meshConfig:\n    enableTracing: yes please\n",
            "f.yaml: spec.meshConfig.enableTracing: expected true or false, got yes please",
        ),
        (
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    ingressGateways:\n"
            "    - name: gw\n      k8s:\n        hpaSpec:\n          maxReplicas: ten\n",
            "f.yaml: spec.components.ingressGateways[0].k8s.hpaSpec.maxReplicas: expected an integer, got ten",
        ),
        (
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: tiny\n",
            "f.yaml: spec.profile: expected one of default, demo, minimal, remote, empty, got tiny",
        ),
        (
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  revision: Canary_1\n",
            "f.yaml: spec.revision: expected lower-case letters, digits and '-' (a DNS label), got 'Canary_1'",
        ),
        (
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    egressGateways:\n"
            "    - enabled: true\n",
            "f.yaml: spec.components.egressGateways[0].name: expected the gateway's name",
        ),
        (
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  values:\n    global:\n"
            "      logging:\n        level: default:loud\n",
            "f.yaml: spec.values.global.logging.level: expected default:LEVEL with LEVEL one of debug, info, warn,",
        ),
        (
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    ingressGateways:\n"
            "    - name: gw\n      k8s:\n        service:\n          type: External\n",
            "f.yaml: spec.components.ingressGateways[0].k8s.service.type: expected one of ClusterIP, NodePort, "
            "LoadBalancer, got External",
        ),
        ("a: [", "f.yaml: not YAML"),
    ],
)
def test_bad_input_names_the_file_the_field_and_what_was_expected(text, message):
    with pytest.raises(OperatorError) as refused:
        resolve([("f.yaml", text)])
    assert str(refused.value).startswith(message), str(refused.value)


def test_order_is_profile_then_files_then_set():
    first = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: demo\n  revision: a\n"
    second = (
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  revision: b\n  hub: example.org/mesh\n"
    )
    resolved = resolve([("1.yaml", first), ("2.yaml", second)], ["tag=7"])
    assert resolved.spec["profile"] == "demo"
    assert resolved.settings.revision == "b"
    assert resolved.settings.image == "example.org/mesh/proxy:7"
    assert [g.name for g in resolved.settings.egress_gateways] == ["istio-egressgateway"]  # demo's
    assert resolve([("1.yaml", first)], ["profile=minimal"]).settings.gateways == ()  # --set profile wins
    assert resolve([], [], image="mine:1").settings.image == "mine:1"


def test_gateways_merge_by_name_over_the_profile():
    user = (
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    ingressGateways:\n"
        "    - name: istio-ingressgateway\n      k8s:\n        service:\n          type: NodePort\n"
        "    - name: second\n      namespace: edge\n      enabled: true\n"
    )
    settings = resolve([("u.yaml", user)]).settings
    first, second = settings.ingress_gateways
    assert (first.name, first.k8s.service_type, first.k8s.hpa) == (
        "istio-ingressgateway",
        "NodePort",
        {"minReplicas": 1, "maxReplicas": 5},
    )
    assert (second.name, second.namespace, second.labels) == (
        "second",
        "edge",
        {"app": "second", "istio": "ingressgateway"},
    )


def test_merge_replaces_plain_lists_and_merges_mappings():
    assert merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3], "d": 4}}) == {"a": {"b": 1, "c": [3], "d": 4}}


@pytest.mark.parametrize(
    ("flag", "segments", "value"),
    [
        ("profile=demo", ["profile"], "demo"),
        ("components.ingressGateways[0].enabled=false", ["components", "ingressGateways", 0, "enabled"], False),
        (
            "components.egressGateways[name:eg].k8s.replicaCount=3",
            ["components", "egressGateways", ("name", "eg"), "k8s", "replicaCount"],
            3,
        ),
        ("revision=1-9-1", ["revision"], "1-9-1"),
        ("tag=007", ["tag"], "007"),
    ],
)
def test_set_paths_are_istioctls(flag, segments, value):
    assert parse_set(flag) == (segments, value)


def test_set_writes_into_lists_by_index_or_selector():
    spec = profile_spec("default")
    spec = apply_set(spec, "components.ingressGateways[0].k8s.service.type=NodePort")
    spec = apply_set(spec, "components.egressGateways[name:istio-egressgateway].enabled=true")
    spec = apply_set(spec, "components.ingressGateways[name:edge].enabled=true")
    assert spec["components"]["ingressGateways"][0]["k8s"]["service"] == {"type": "NodePort"}
    assert spec["components"]["egressGateways"][0]["enabled"] is True
    assert spec["components"]["ingressGateways"][1] == {"name": "edge", "enabled": True}


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("profile", "--set profile: expected path=value"),
        ("a..b=1", "--set a..b=1: expected a path such as"),
        (
            "components.ingressGateways[x].enabled=true",
            "--set components.ingressGateways[x].enabled=true: [x]: expected",
        ),
        (
            "components.ingressGateways[5].enabled=true",
            "--set components.ingressGateways[5].enabled=true: [5]: the list has 1",
        ),
        ("profile.x=1", "--set profile.x=1: x: the field above it is not a mapping"),
        ("revision.x=1", "--set: spec.revision: expected a string, got {x: 1}"),
        ("profile=huge", "profile: expected one of default, demo, minimal, remote, empty, got 'huge'"),
    ],
)
def test_bad_set_flags_say_what_is_wrong(flag, message):
    with pytest.raises(OperatorError) as refused:
        resolve([], [flag])
    assert str(refused.value).startswith(message), str(refused.value)


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_enable_what_istios_do(profile):
    settings = resolve([], [f"profile={profile}"]).settings
    enabled = (
        settings.base,
        settings.pilot is not None,
        [g.name for g in settings.ingress_gateways],
        [g.name for g in settings.egress_gateways],
    )
    assert (
        enabled
        == {
            "default": (True, True, ["istio-ingressgateway"], []),
            "demo": (True, True, ["istio-ingressgateway"], ["istio-egressgateway"]),
            "minimal": (True, True, [], []),
            "remote": (True, False, [], []),
            "empty": (False, False, [], []),
        }[profile]
    )
    assert settings.mesh_config.get("accessLogFile") == ("/dev/stdout" if profile == "demo" else None)
