"""The validating webhook's answers (plait.controlplane.webhook), without a cluster: the same loader
and message text as `plait validate`, AdmissionReview v1 and v1beta1, kinds that are not checked,
and the HTTPS endpoint itself. The cluster test (kubectl apply through the API server) is in
test_kube_identity.py."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import yaml
from aiohttp import ClientSession
from prometheus_client import CollectorRegistry

from plait.api.loader import parse_text
from plait.api.resources import SPEC_MODELS
from plait.ca.authority import load_or_create, pem
from plait.controlplane.kubeidentity import ca_bundle_update
from plait.controlplane.webhook import (
    VALIDATED_KINDS,
    VALIDATED_RESOURCES,
    WebhookMetrics,
    admission_response,
    describe,
    serve_webhook,
    tls_context,
    validating_webhook_configuration,
)
from plait.testing.live import free_port

BAD_TIMEOUT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: 5 seconds
"""
GOOD = BAD_TIMEOUT.replace("5 seconds", "5s")


def review(obj: dict | None, *, version: str = "admission.k8s.io/v1", operation: str = "CREATE", **request) -> dict:
    return {
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
            "operation": operation,
            "object": obj,
            "namespace": "shop",
            **request,
        },
    }


def test_an_invalid_object_is_denied_with_plait_validates_message():
    answer = admission_response(review(yaml.safe_load(BAD_TIMEOUT)))
    response = answer["response"]
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert response["uid"] == "0df28fbd-5f5f-11e8-bc74-36e6bb280816" and response["allowed"] is False
    (problem,) = parse_text(BAD_TIMEOUT, "f.yaml").errors  # what `plait validate` reports
    assert response["status"]["message"] == (
        f"configuration is invalid: VirtualService shop/reviews: spec.http[0].timeout: {problem.message}"
    )
    assert "'5 seconds' is not a duration" in response["status"]["message"]


def test_a_valid_object_is_allowed_and_v1beta1_is_answered_in_v1beta1():
    answer = admission_response(review(yaml.safe_load(GOOD), version="admission.k8s.io/v1beta1"))
    assert answer["apiVersion"] == "admission.k8s.io/v1beta1"
    assert answer["response"] == {"uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816", "allowed": True}


def test_every_problem_is_listed():
    obj = yaml.safe_load(BAD_TIMEOUT)
    obj["spec"]["http"][0]["retries"] = {"attempts": "three"}
    message = admission_response(review(obj))["response"]["status"]["message"]
    assert message.count("VirtualService shop/reviews: spec.http[0]") == 2
    assert "spec.http[0].timeout" in message and "spec.http[0].retries.attempts" in message


def test_metadata_left_out_comes_from_the_request():
    obj = yaml.safe_load(BAD_TIMEOUT)
    obj["metadata"] = {"generateName": "reviews-"}
    message = admission_response(review(obj, namespace="shop"))["response"]["status"]["message"]
    assert message.startswith("configuration is invalid: VirtualService shop/reviews-generated: spec.http[0].timeout")


def test_unknown_fields_and_wrong_versions_are_refused_as_plait_validate_does():
    obj = yaml.safe_load(GOOD)
    obj["spec"]["http"][0]["time_out"] = "5s"
    message = admission_response(review(obj))["response"]["status"]["message"]
    assert "spec.http[0].time_out: unknown field 'time_out'" in message and "write 'timeOut'" in message
    obj = {**yaml.safe_load(GOOD), "apiVersion": "networking.istio.io/v2"}
    message = admission_response(review(obj))["response"]["status"]["message"]
    assert "apiVersion: 'networking.istio.io/v2' is not an apiVersion of VirtualService" in message


def test_only_create_and_update_are_checked():
    for operation in ("DELETE", "CONNECT"):
        assert admission_response(review(yaml.safe_load(BAD_TIMEOUT), operation=operation))["response"]["allowed"]
    assert not admission_response(review(yaml.safe_load(BAD_TIMEOUT), operation="UPDATE"))["response"]["allowed"]


def test_kinds_plait_does_not_model_are_allowed_with_a_warning_and_others_silently():
    wasm = {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "mesh-default", "namespace": "istio-system"},
        "spec": {"url": "oci://example.com/filter:1"},
    }
    response = admission_response(review(wasm))["response"]
    assert response["allowed"] is True
    assert response["warnings"] == [
        "kind WasmPlugin (extensions.istio.io/v1alpha1) is not supported by plait yet: "
        "it is stored but has no effect on the mesh"
    ]
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"x": 1}}
    assert admission_response(review(widget))["response"] == {
        "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
        "allowed": True,
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 0}]}}
    assert admission_response(review(service))["response"]["allowed"] is True  # not Istio config: not judged


def test_counted_by_kind_and_result():
    metrics = WebhookMetrics(CollectorRegistry())
    admission_response(review(yaml.safe_load(BAD_TIMEOUT)), metrics)
    admission_response(review(yaml.safe_load(GOOD)), metrics)
    admission_response(review(yaml.safe_load(GOOD)), metrics)

    def count(result):
        return metrics.reviews.labels(kind="VirtualService", result=result)._value.get()

    assert (count("denied"), count("allowed")) == (1, 2)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v2"},
        {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}},
    ],
)
def test_what_is_not_an_admission_review_is_an_error(bad):
    with pytest.raises(ValueError):
        admission_response(bad)


def test_the_configuration_lists_exactly_the_istio_kinds_plait_validates():
    plurals = {r for resources in VALIDATED_RESOURCES.values() for r in resources}
    plural = {
        "ServiceEntry": "serviceentries",
        "WorkloadEntry": "workloadentries",
        "AuthorizationPolicy": "authorizationpolicies",
        "Telemetry": "telemetries",
    }
    assert plurals == {plural.get(k, k.lower() + "s") for k in VALIDATED_KINDS}
    gateway_api = {
        "GatewayClass",
        "KubernetesGateway",
        "HTTPRoute",
        "GRPCRoute",
        "TCPRoute",
        "TLSRoute",
        "ReferenceGrant",
    }
    assert VALIDATED_KINDS == set(SPEC_MODELS) - {"Service", "Secret", "ConfigMap"} - gateway_api
    config = validating_webhook_configuration(b"PEM", url="https://127.0.0.1:1/validate")
    (webhook,) = config["webhooks"]
    assert webhook["clientConfig"] == {"caBundle": "UEVN", "url": "https://127.0.0.1:1/validate"}
    assert webhook["failurePolicy"] == "Fail" and webhook["sideEffects"] == "None"
    assert {g for rule in webhook["rules"] for g in rule["apiGroups"]} == {
        "networking.istio.io",
        "security.istio.io",
        "telemetry.istio.io",
    }
    in_cluster = validating_webhook_configuration(b"PEM")["webhooks"][0]["clientConfig"]
    assert in_cluster["service"] == {"name": "istiod", "namespace": "istio-system", "path": "/validate", "port": 443}


def test_describe_without_a_path():
    problem = parse_text("apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: t}\n").errors[0]
    assert describe(problem).startswith("WorkloadGroup default/t: kind: ")


def test_served_over_https(tmp_path):
    authority = load_or_create(tmp_path / "ca")
    key, chain = authority.issue_server_certificate()
    client_context = ssl.create_default_context(cadata=pem(authority.root).decode())

    async def scenario():
        port = free_port()
        runner = await serve_webhook(tls_context(b"".join(chain), key, tmp_path / "tls"), "127.0.0.1", port)
        try:
            async with ClientSession() as session:
                url = f"https://localhost:{port}/validate"
                async with session.post(url, json=review(yaml.safe_load(BAD_TIMEOUT)), ssl=client_context) as r:
                    assert r.status == 200
                    assert (await r.json())["response"]["allowed"] is False
                async with session.post(
                    url, data=b"{}", ssl=client_context, headers={"Content-Type": "text/plain"}
                ) as r:
                    assert r.status == 415
                async with session.post(
                    url, data=b"not json", ssl=client_context, headers={"Content-Type": "application/json"}
                ) as r:
                    assert r.status == 400 and "not an AdmissionReview" in await r.text()
        finally:
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert (tmp_path / "tls" / "webhook-key.pem").stat().st_mode & 0o077 == 0


def test_a_request_without_an_object_is_allowed_as_nothing_plait_reads():
    assert admission_response(review(None))["response"]["allowed"] is True


def test_the_leader_sets_every_webhooks_ca_bundle_to_the_root_once():
    config = validating_webhook_configuration(b"old", url="https://localhost:1/validate")
    config["webhooks"].append({**config["webhooks"][0], "name": "second.validation.istio.io"})
    updated = ca_bundle_update(config, b"ROOT PEM")
    assert [w["clientConfig"]["caBundle"] for w in updated["webhooks"]] == ["Uk9PVCBQRU0="] * 2
    assert updated["webhooks"][0]["clientConfig"]["url"] == "https://localhost:1/validate"
    assert ca_bundle_update(updated, b"ROOT PEM") is None
