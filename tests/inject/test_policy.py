"""should_inject: Istio's decision table (webhook selectors, then injectRequired), case by case."""

from __future__ import annotations

import pytest

from plait.inject import InjectSettings, injection_required, should_inject

DEFAULT = InjectSettings()
CANARY = InjectSettings(revision="canary")


def pod(labels=None, annotations=None, namespace="shop", host_network=False) -> dict:
    spec = {"containers": [{"name": "app", "image": "app:1"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {
        "metadata": {"name": "p", "namespace": namespace, "labels": labels or {}, "annotations": annotations or {}},
        "spec": spec,
    }


ENABLED = {"istio-injection": "enabled"}
OPT_OUT = {"sidecar.istio.io/inject": "false"}
OPT_IN = {"sidecar.istio.io/inject": "true"}

TABLE = [
    # (pod, namespace labels, settings, injected?, reason contains)
    (pod(), ENABLED, DEFAULT, True, "namespace label istio-injection=enabled"),
    (pod(), {"istio-injection": "disabled"}, DEFAULT, False, "istio-injection=disabled"),
    (pod(labels=OPT_IN), {"istio-injection": "disabled"}, DEFAULT, False, "istio-injection=disabled"),
    (pod(), {}, DEFAULT, False, "neither istio-injection=enabled nor istio.io/rev=default"),
    (pod(labels=OPT_IN), {}, DEFAULT, True, "pod label sidecar.istio.io/inject=true"),
    (pod(annotations=OPT_IN), {}, DEFAULT, False, "no sidecar.istio.io/inject=true label"),  # selectors see labels only
    (pod(labels=OPT_OUT), ENABLED, DEFAULT, False, "pod label sidecar.istio.io/inject=false"),
    (pod(annotations=OPT_OUT), ENABLED, DEFAULT, False, "pod annotation sidecar.istio.io/inject=false"),
    (pod(labels=OPT_IN, annotations=OPT_OUT), ENABLED, DEFAULT, True, "istio-injection=enabled"),  # label wins
    (pod(labels=OPT_OUT, annotations=OPT_IN), ENABLED, DEFAULT, False, "label sidecar.istio.io/inject=false"),
    (pod(annotations={"sidecar.istio.io/inject": "yes"}), ENABLED, DEFAULT, True, "enabled"),  # invalid: default
    (pod(host_network=True), ENABLED, DEFAULT, False, "hostNetwork"),
    (pod(labels=OPT_IN, namespace="kube-system"), ENABLED, DEFAULT, False, "kube-system is never injected"),
    (pod(namespace="kube-public"), ENABLED, DEFAULT, False, "kube-public is never injected"),
    (pod(annotations={"sidecar.istio.io/status": "{}"}), ENABLED, DEFAULT, False, "already injected"),
    # revisions
    (pod(), {"istio.io/rev": "default"}, DEFAULT, True, "namespace label istio.io/rev=default"),
    (pod(), {"istio.io/rev": "canary"}, DEFAULT, False, "another revision"),
    (pod(), {"istio.io/rev": "canary"}, CANARY, True, "namespace label istio.io/rev=canary"),
    (pod(labels=OPT_OUT), {"istio.io/rev": "canary"}, CANARY, False, "inject=false"),
    (pod(), ENABLED, CANARY, False, "selects the default revision"),
    (pod(), {**ENABLED, "istio.io/rev": "canary"}, CANARY, False, "selects the default revision"),  # legacy wins
    (pod(), {**ENABLED, "istio.io/rev": "canary"}, DEFAULT, True, "istio-injection=enabled"),
    (pod(labels={"istio.io/rev": "canary"}), {}, CANARY, True, "pod label istio.io/rev=canary"),
    (pod(labels={"istio.io/rev": "canary"}), {}, DEFAULT, False, "another revision"),
    (pod(labels={"istio.io/rev": "canary", **OPT_IN}), {}, DEFAULT, False, "another revision"),
    (pod(labels=OPT_IN), {}, CANARY, False, "istio.io/rev=canary"),  # object opt-in is the default revision's
]


@pytest.mark.parametrize(("the_pod", "namespace_labels", "settings", "injected", "reason"), TABLE)
def test_should_inject(the_pod, namespace_labels, settings, injected, reason) -> None:
    decision, why = should_inject(the_pod, namespace_labels, settings)
    assert decision is injected
    assert reason in why


def test_namespace_of_the_request_counts_when_the_pod_has_none() -> None:
    the_pod = pod(namespace="")
    assert should_inject(the_pod, ENABLED, DEFAULT, namespace="kube-system") == (
        False,
        "namespace kube-system is never injected",
    )


def test_policy_disabled_injects_only_pods_that_ask() -> None:
    disabled = InjectSettings(injection_policy="disabled")
    assert injection_required(pod(), disabled)[0] is False
    assert injection_required(pod(annotations=OPT_IN), disabled) == (
        True,
        "pod annotation sidecar.istio.io/inject=true",
    )
    assert should_inject(pod(), ENABLED, disabled)[0] is False
