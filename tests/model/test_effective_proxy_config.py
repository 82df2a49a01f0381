"""ProxyConfig: validation, and which settings a workload's proxy gets (Istio's EffectiveProxyConfig)."""

from __future__ import annotations

import json

import pytest

from plait.api import load_text
from plait.model.proxy_config import applicable_proxy_configs, effective_proxy_config


def proxy_config(name: str, namespace: str, **spec) -> str:
    return json.dumps(
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "ProxyConfig",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


MESH = [
    proxy_config("mesh", "istio-system", concurrency=2, environmentVariables={"LEVEL": "mesh", "MESH": "1"}),
    proxy_config("mesh-gateways", "istio-system", selector={"matchLabels": {"istio": "ingressgateway"}}, concurrency=4),
    proxy_config("b-namespace", "shop", environmentVariables={"LEVEL": "namespace"}),
    proxy_config("z-namespace", "shop", concurrency=9),  # a second selector-less one: only the first counts
    proxy_config(
        "cart",
        "shop",
        selector={"matchLabels": {"app": "cart"}},
        concurrency=0,
        environmentVariables={"LEVEL": "workload"},
    ),
]


def resources():
    return load_text("\n---\n".join(MESH)).raise_for_errors()


@pytest.mark.parametrize(
    ("namespace", "labels", "expected"),
    [
        ("shop", {"app": "cart"}, (0, {"LEVEL": "workload", "MESH": "1"})),
        ("shop", {"app": "web"}, (2, {"LEVEL": "namespace", "MESH": "1"})),
        ("other", {"app": "cart"}, (2, {"LEVEL": "mesh", "MESH": "1"})),
        ("istio-system", {"istio": "ingressgateway"}, (4, {"LEVEL": "mesh", "MESH": "1"})),
    ],
)
def test_workload_beats_namespace_beats_root(namespace: str, labels: dict, expected: tuple) -> None:
    effective = effective_proxy_config(resources(), namespace, labels)
    assert (effective.concurrency, dict(effective.environment)) == expected


def test_only_the_first_selector_less_config_of_a_namespace_applies() -> None:
    names = [pc.name for pc in applicable_proxy_configs(resources(), "shop", {})]
    assert names == ["mesh", "b-namespace"]


def test_no_proxy_config_leaves_the_agent_defaults() -> None:
    effective = effective_proxy_config([], "default", {})
    assert (effective.concurrency, dict(effective.environment)) == (None, {})


@pytest.mark.parametrize(
    ("spec", "path", "expected"),
    [
        ({"concurrency": -1}, "spec.concurrency", "greater than or equal to 0"),
        ({"selector": {"labels": {"app": "x"}}}, "spec.selector.labels", "unknown field"),
        ({"environmentVariables": {"A=B": "c"}}, "spec.environmentVariables.A=B", "not an environment variable name"),
    ],
)
def test_invalid_proxy_configs_are_refused(spec: dict, path: str, expected: str) -> None:
    errors = load_text(proxy_config("p", "default", **spec)).errors
    assert [e.path for e in errors] == [path] and expected in errors[0].message


def test_image_is_accepted_with_a_warning() -> None:
    result = load_text(proxy_config("p", "default", image={"imageType": "distroless"}))
    assert not result.errors and [w.path for w in result.warnings] == ["spec.image"]
