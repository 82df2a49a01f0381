"""review_response: the webhook's AdmissionReview answer, as the API server would apply it."""

from __future__ import annotations

import base64
import json

import jsonpatch

from plait.inject import InjectSettings, inject, review_response

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "web-",
        "labels": {"app": "web"},
        "managedFields": [{"manager": "kubectl", "operation": "Update"}],
    },
    "spec": {"containers": [{"name": "web", "image": "web:1"}]},
}


def review(pod=POD, operation="CREATE") -> dict:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "1234", "operation": operation, "namespace": "shop", "object": pod},
    }


def test_injected_pod_gets_a_patch_the_api_server_can_apply() -> None:
    answer, why = review_response(review(), {"istio-injection": "enabled"}, InjectSettings())
    response = answer["response"]
    assert (answer["apiVersion"], answer["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert (response["uid"], response["allowed"], response["patchType"]) == ("1234", True, "JSONPatch")
    assert why == "namespace label istio-injection=enabled"
    patched = jsonpatch.apply_patch(POD, json.loads(base64.b64decode(response["patch"])))
    assert patched["metadata"]["managedFields"] == POD["metadata"]["managedFields"]  # untouched
    assert "namespace" not in patched["metadata"]
    expected = inject({**POD, "metadata": {**POD["metadata"], "namespace": "shop"}}, InjectSettings())
    patched["metadata"]["namespace"] = "shop"
    del expected["metadata"]["managedFields"], patched["metadata"]["managedFields"]
    assert patched == expected
    proxy = patched["spec"]["containers"][-1]
    assert proxy["name"] == "istio-proxy"


def test_pod_not_selected_is_allowed_without_a_patch() -> None:
    answer, why = review_response(review(), {}, InjectSettings())
    assert answer["response"] == {"uid": "1234", "allowed": True}
    assert "neither istio-injection=enabled" in why


def test_bad_annotation_refuses_the_pod_with_the_message() -> None:
    pod = {**POD, "metadata": {**POD["metadata"], "annotations": {"sidecar.istio.io/proxyCPU": "lots"}}}
    answer, _ = review_response(review(pod), {"istio-injection": "enabled"}, InjectSettings())
    response = answer["response"]
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        "sidecar injection: annotation sidecar.istio.io/proxyCPU: 'lots' is not a Kubernetes quantity "
        "(e.g. 100m, 128Mi)"
    )


def test_other_operations_pass() -> None:
    answer, why = review_response(review(operation="UPDATE"), {"istio-injection": "enabled"}, InjectSettings())
    assert answer["response"] == {"uid": "1234", "allowed": True}
    assert why == "not a Pod being created"
