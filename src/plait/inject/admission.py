"""The webhook's answer to one AdmissionReview, without I/O: what the HTTP shell sends back.

In: the AdmissionReview the API server POSTs (``admission.k8s.io/v1`` or ``v1beta1``, a Pod
CREATE), the labels of the pod's namespace (the shell reads them from its namespace watch) and
`InjectSettings`. Out: the AdmissionReview response: ``allowed: true`` with a base64 JSON patch
(``patchType: JSONPatch``) when the pod is injected, ``allowed: true`` and no patch when it is not
(the reason is returned too, for the shell's log), ``allowed: false`` with the message when the
pod cannot be injected as asked (a bad annotation), as Istio's webhook refuses such pods.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from plait.inject.patch import json_patch
from plait.inject.policy import should_inject
from plait.inject.settings import InjectError, InjectSettings
from plait.inject.sidecar import inject


def review_response(
    review: Mapping[str, Any], namespace_labels: Mapping[str, str], settings: InjectSettings
) -> tuple[dict[str, Any], str]:
    """(the AdmissionReview to send back, why: injected or not, or the error)."""
    request = review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    answer = {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }
    pod = request.get("object")
    if request.get("operation", "CREATE") != "CREATE" or not isinstance(pod, dict) or pod.get("kind", "Pod") != "Pod":
        return answer, "not a Pod being created"
    pod = {**pod, "metadata": {**(pod.get("metadata") or {})}}
    pod["metadata"].pop("managedFields", None)  # large, and injection never reads it
    pod["metadata"].setdefault("namespace", request.get("namespace", ""))
    wanted, why = should_inject(pod, namespace_labels, settings)
    if not wanted:
        return answer, why
    try:
        injected = inject(pod, settings)
    except InjectError as exc:
        response.update(allowed=False, status={"code": 400, "message": f"sidecar injection: {exc}"})
        return answer, str(exc)
    patch = json_patch(pod, injected)  # touches neither managedFields nor the namespace: valid on the original
    response.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(patch).encode()).decode())
    return answer, why
