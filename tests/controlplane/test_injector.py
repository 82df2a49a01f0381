"""The sidecar injection webhook's shell (plait.controlplane.injector), without a cluster: /inject
over HTTPS beside /validate, AdmissionReview v1 and v1beta1, namespace labels asked of the lookup,
results counted, and the MutatingWebhookConfiguration in Istio's shape. The cluster test (kubectl
create through the API server) is in test_kube_injector.py."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl

import jsonpatch
import pytest
from aiohttp import ClientSession
from prometheus_client import CollectorRegistry

from plait.ca.authority import load_or_create, pem
from plait.controlplane.injector import (
    InjectionMetrics,
    check_review,
    configuration_name,
    control_plane_address,
    inject_handler,
    mutating_webhook_configuration,
)
from plait.controlplane.kubeidentity import ca_bundle_update
from plait.controlplane.webhook import serve_webhook, tls_context
from plait.inject import InjectSettings
from plait.testing.live import free_port

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-0", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "web:1"}]},
}
NAMESPACES = {"shop": {"istio-injection": "enabled"}, "plain": {}, "canary": {"istio.io/rev": "canary"}}


def review(pod=POD, namespace="shop", version="admission.k8s.io/v1") -> dict:
    return {
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {"uid": f"uid-{namespace}", "operation": "CREATE", "namespace": namespace, "object": pod},
    }


def opted_out() -> dict:
    return {**POD, "metadata": {**POD["metadata"], "annotations": {"sidecar.istio.io/inject": "false"}}}


def bad_annotation() -> dict:
    return {**POD, "metadata": {**POD["metadata"], "annotations": {"sidecar.istio.io/proxyCPU": "lots"}}}


def test_served_over_https_beside_validate_in_both_review_versions(tmp_path):
    authority = load_or_create(tmp_path / "ca")
    key, chain = authority.issue_server_certificate()
    client_context = ssl.create_default_context(cadata=pem(authority.root).decode())
    registry = CollectorRegistry()
    asked: list[str] = []

    async def labels(namespace: str) -> dict[str, str]:
        asked.append(namespace)
        if namespace == "unreadable":
            raise OSError("the API server is away")
        return NAMESPACES.get(namespace, {})

    handler = inject_handler(
        lambda: InjectSettings(proxy_image="registry.local/proxy:7"), labels, InjectionMetrics(registry)
    )

    async def post(session, port, body, path="/inject"):
        async with session.post(f"https://localhost:{port}{path}", json=body, ssl=client_context) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else await r.text())

    async def scenario():
        port = free_port()
        runner = await serve_webhook(
            tls_context(b"".join(chain), key, tmp_path / "tls"), "127.0.0.1", port, inject=handler
        )
        try:
            async with ClientSession() as session:
                status, answer = await post(session, port, review())
                assert status == 200 and answer["apiVersion"] == "admission.k8s.io/v1"
                response = answer["response"]
                assert (response["uid"], response["allowed"], response["patchType"]) == ("uid-shop", True, "JSONPatch")
                injected = jsonpatch.apply_patch(POD, json.loads(base64.b64decode(response["patch"])))
                names = [c["name"] for c in injected["spec"]["containers"]]
                assert names == ["web", "istio-proxy"] and injected["spec"]["initContainers"][0]["name"] == "istio-init"
                assert injected["spec"]["containers"][1]["image"] == "registry.local/proxy:7"
                assert "sidecar.istio.io/status" in injected["metadata"]["annotations"]

                status, answer = await post(session, port, review(version="admission.k8s.io/v1beta1"))
                assert answer["apiVersion"] == "admission.k8s.io/v1beta1" and "patch" in answer["response"]

                for skipped in (review(namespace="plain"), review(opted_out()), review(namespace="canary")):
                    status, answer = await post(session, port, skipped)
                    assert status == 200 and answer["response"] == {"uid": skipped["request"]["uid"], "allowed": True}

                status, answer = await post(session, port, review(bad_annotation()))
                assert answer["response"]["allowed"] is False
                assert "sidecar.istio.io/proxyCPU" in answer["response"]["status"]["message"]

                status, text = await post(session, port, review(namespace="unreadable"))
                assert status == 503 and "cannot read namespace unreadable" in text
                status, text = await post(session, port, {"kind": "AdmissionReview", "apiVersion": "v2"})
                assert status == 400 and "not an AdmissionReview" in text
                status, answer = await post(session, port, review(), path="/validate")  # still the validator
                assert status == 200 and answer["response"]["allowed"] is True and "patch" not in answer["response"]
        finally:
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert asked == ["shop", "shop", "plain", "shop", "canary", "shop", "unreadable"]
    count = {
        result: registry.get_sample_value("plait_webhook_injections_total", {"result": result})
        for result in ("injected", "skipped", "refused", "error")
    }
    assert count == {"injected": 2, "skipped": 3, "refused": 1, "error": 1}


@pytest.mark.parametrize(
    "bad, message",
    [
        ([], "expected an AdmissionReview"),
        ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v2"}, "is not one of"),
        ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}, "no request with a uid"),
    ],
)
def test_what_is_not_an_admission_review_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        check_review(bad)


def expressions(webhook: dict, selector: str) -> list[tuple]:
    return [(e["key"], e["operator"], tuple(e.get("values", ()))) for e in webhook[selector]["matchExpressions"]]


def test_the_default_revisions_configuration_has_istios_four_webhooks():
    config = mutating_webhook_configuration(b"ROOT", url="https://127.0.0.1:9443/inject")
    assert (config["kind"], config["metadata"]["name"]) == ("MutatingWebhookConfiguration", "istio-sidecar-injector")
    hooks = {w["name"]: w for w in config["webhooks"]}
    assert list(hooks) == [
        "rev.namespace.sidecar-injector.istio.io",
        "rev.object.sidecar-injector.istio.io",
        "namespace.sidecar-injector.istio.io",
        "object.sidecar-injector.istio.io",
    ]
    for hook in hooks.values():
        assert hook["rules"] == [
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
        ]
        assert (hook["failurePolicy"], hook["reinvocationPolicy"], hook["sideEffects"]) == ("Fail", "Never", "None")
        assert hook["admissionReviewVersions"] == ["v1", "v1beta1"]
        assert hook["clientConfig"] == {
            "caBundle": base64.b64encode(b"ROOT").decode(),
            "url": "https://127.0.0.1:9443/inject",
        }
    namespace = hooks["namespace.sidecar-injector.istio.io"]
    assert expressions(namespace, "namespaceSelector") == [("istio-injection", "In", ("enabled",))]
    assert expressions(namespace, "objectSelector") == [("sidecar.istio.io/inject", "NotIn", ("false",))]
    assert expressions(hooks["rev.namespace.sidecar-injector.istio.io"], "namespaceSelector") == [
        ("istio.io/rev", "In", ("default",)),
        ("istio-injection", "DoesNotExist", ()),
    ]
    assert expressions(hooks["object.sidecar-injector.istio.io"], "objectSelector") == [
        ("sidecar.istio.io/inject", "In", ("true",)),
        ("istio.io/rev", "DoesNotExist", ()),
    ]


def test_a_revisions_configuration_selects_only_its_revision_at_its_service():
    config = mutating_webhook_configuration(b"ROOT", revision="canary")
    assert config["metadata"]["name"] == configuration_name("canary") == "istio-sidecar-injector-canary"
    assert config["metadata"]["labels"]["istio.io/rev"] == "canary"
    assert [w["name"] for w in config["webhooks"]] == [
        "rev.namespace.sidecar-injector.istio.io",
        "rev.object.sidecar-injector.istio.io",
    ]
    (by_namespace, by_object) = config["webhooks"]
    assert by_namespace["clientConfig"]["service"] == {
        "name": "istiod-canary",
        "namespace": "istio-system",
        "path": "/inject",
        "port": 443,
    }
    assert ("istio.io/rev", "In", ("canary",)) in expressions(by_namespace, "namespaceSelector")
    assert ("istio.io/rev", "In", ("canary",)) in expressions(by_object, "objectSelector")
    assert control_plane_address("canary") == "istiod-canary.istio-system.svc:15012"
    assert control_plane_address() == "istiod.istio-system.svc:15012"


def test_the_leader_sets_the_ca_bundle_of_every_injector_webhook():
    config = mutating_webhook_configuration(b"old")
    updated = ca_bundle_update(config, b"ROOT PEM")
    assert {w["clientConfig"]["caBundle"] for w in updated["webhooks"]} == {base64.b64encode(b"ROOT PEM").decode()}
    assert ca_bundle_update(updated, b"ROOT PEM") is None
