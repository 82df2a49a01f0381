"""Each control-plane revision keeps its own webhooks and elects its own leader, under the names
`plait install` gives them (Istio's): istio-validator[-REV]-<namespace>, istio-sidecar-injector[-REV],
Lease plait-leader[-REV]. Two revisions side by side then never fight over one caBundle or one Lease."""

from __future__ import annotations

from plait.controlplane.kubeidentity import ClusterSettings
from plait.inject.settings import InjectSettings
from plait.install.manifests import components
from plait.install.settings import InstallSettings


def names(settings: ClusterSettings) -> tuple[str, str, str]:
    return settings.validating_configuration, settings.mutating_configuration, settings.lease


def test_the_default_revision_keeps_istios_plain_names():
    assert names(ClusterSettings(namespace="istio-system")) == (
        "istio-validator-istio-system",
        "istio-sidecar-injector",
        "plait-leader",
    )


def test_a_revision_keeps_its_own_and_matches_what_install_makes():
    cluster = ClusterSettings(namespace="mesh", inject=InjectSettings(revision="canary"))
    assert names(cluster) == ("istio-validator-canary-mesh", "istio-sidecar-injector-canary", "plait-leader-canary")
    installed = dict(components(InstallSettings(namespace="mesh", revision="canary")))["Istiod"]
    webhooks = {o["kind"]: o["metadata"]["name"] for o in installed if o["kind"].endswith("WebhookConfiguration")}
    assert webhooks == {
        "ValidatingWebhookConfiguration": cluster.validating_configuration,
        "MutatingWebhookConfiguration": cluster.mutating_configuration,
    }


def test_given_names_win():
    given = ClusterSettings(webhook_configuration="v", injector_configuration="m", lease_name="l")
    assert names(given) == ("v", "m", "l")
