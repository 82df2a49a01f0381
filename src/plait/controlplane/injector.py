"""The sidecar injection webhook: the API server POSTs each Pod being created in an injected
namespace to ``https://<control plane>:15017/inject`` and stores the pod with the patch returned.

A thin shell over the pure `plait.inject.admission.review_response` (Istio's decision and the
JSON patch): this module checks the AdmissionReview (``admission.k8s.io/v1`` or ``v1beta1``,
answered in the version asked), finds the labels of the pod's namespace (the Kubernetes source's
watch, else a GET: a namespace created an instant ago may not have reached the watch yet), counts
the result, and builds the ``MutatingWebhookConfiguration`` that sends pods here, in Istio's shape
(`mutating_webhook_configuration`). Every replica serves it, beside ``/validate``; the leader keeps
the configuration's ``caBundle`` (`plait.controlplane.kubeidentity`).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from plait.controlplane.webhook import INJECT_PATH, REVIEW_VERSIONS
from plait.inject.admission import review_response
from plait.inject.settings import INJECT, NAMESPACE_INJECTION_LABEL, REVISION_LABEL, InjectSettings

log = logging.getLogger(__name__)

NamespaceLabels = Callable[[str], Awaitable[Mapping[str, str]]]


class InjectionMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.injections = Counter(
            "plait_webhook_injections_total",
            "Pods the injection webhook was asked about, by result: injected, skipped (not selected, "
            "opted out, already injected), refused (a bad annotation), error (namespace unreadable)",
            ["result"],
            registry=registry or CollectorRegistry(),
        )


def configuration_name(revision: str = "") -> str:
    """Istio's name for the injector's configuration: ``istio-sidecar-injector[-REV]``."""
    return f"istio-sidecar-injector-{revision}" if revision else "istio-sidecar-injector"


def control_plane_address(revision: str = "", namespace: str = "istio-system") -> str:
    """Where injected proxies find xDS and the CA: Service ``istiod[-REV]`` of `namespace`, port 15012."""
    service = f"istiod-{revision}" if revision else "istiod"
    return f"{service}.{namespace}.svc:15012"


def check_review(review: object) -> Mapping:
    """`review` itself if it is an AdmissionReview in a version we answer, with a request and a uid;
    ValueError saying what is wrong otherwise."""
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise ValueError("expected an AdmissionReview")
    if review.get("apiVersion") not in REVIEW_VERSIONS:
        raise ValueError(f"AdmissionReview {review.get('apiVersion')!r} is not one of {', '.join(REVIEW_VERSIONS)}")
    request = review.get("request")
    if not isinstance(request, dict) or not request.get("uid"):
        raise ValueError("the AdmissionReview has no request with a uid")
    return review


def result_of(answer: Mapping) -> str:
    """injected, skipped or refused, from the AdmissionReview answer."""
    response = answer.get("response") or {}
    if not response.get("allowed", True):
        return "refused"
    return "injected" if response.get("patch") else "skipped"


def inject_handler(
    settings: Callable[[], InjectSettings], namespace_labels: NamespaceLabels, metrics: InjectionMetrics | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler of POST /inject; `settings()` gives the injector's settings in force (the
    mesh config's proxy defaults change them while the control plane runs)."""

    async def handle(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.Response(status=415, text="invalid Content-Type, want application/json")
        try:
            review = check_review(json.loads(await request.read()))
        except ValueError as error:  # also bad JSON
            return web.Response(status=400, text=f"not an AdmissionReview: {error}")
        admission = review["request"]
        namespace = admission.get("namespace") or ((admission.get("object") or {}).get("metadata") or {}).get(
            "namespace", ""
        )
        try:
            labels = await namespace_labels(namespace)
        except Exception as error:  # the API server is away: refuse (failurePolicy Fail does the same)
            _count(metrics, "error")
            log.warning("inject: cannot read the labels of namespace %s: %s", namespace, error)
            return web.Response(status=503, text=f"cannot read namespace {namespace}: {error}")
        answer, why = review_response(review, labels, settings())
        result = result_of(answer)
        _count(metrics, result)
        pod = (admission.get("object") or {}).get("metadata") or {}
        log.debug("inject: %s/%s %s: %s", namespace, pod.get("name") or pod.get("generateName", ""), result, why)
        return web.json_response(answer)

    return handle


def _count(metrics: InjectionMetrics | None, result: str) -> None:
    if metrics is not None:
        metrics.injections.labels(result=result).inc()


def _not_in(key: str, *values: str) -> dict:
    return {"key": key, "operator": "NotIn", "values": list(values)}


def _in(key: str, *values: str) -> dict:
    return {"key": key, "operator": "In", "values": list(values)}


def _absent(key: str) -> dict:
    return {"key": key, "operator": "DoesNotExist"}


def _selectors(revision: str) -> list[tuple[str, list[dict], list[dict]]]:
    """(name prefix, namespace selector, object selector) of each of Istio's webhooks for `revision`:
    the revision label on the namespace, or on the pod; for the default revision also
    ``istio-injection=enabled`` on the namespace, or ``sidecar.istio.io/inject=true`` on the pod."""
    rev = revision or "default"
    selectors = [
        ("rev.namespace.", [_in(REVISION_LABEL, rev), _absent(NAMESPACE_INJECTION_LABEL)], [_not_in(INJECT, "false")]),
        (
            "rev.object.",
            [_absent(REVISION_LABEL), _absent(NAMESPACE_INJECTION_LABEL)],
            [_not_in(INJECT, "false"), _in(REVISION_LABEL, rev)],
        ),
    ]
    if not revision:
        selectors += [
            ("namespace.", [_in(NAMESPACE_INJECTION_LABEL, "enabled")], [_not_in(INJECT, "false")]),
            (
                "object.",
                [_absent(NAMESPACE_INJECTION_LABEL), _absent(REVISION_LABEL)],
                [_in(INJECT, "true"), _absent(REVISION_LABEL)],
            ),
        ]
    return selectors


def mutating_webhook_configuration(
    ca_bundle: bytes,
    *,
    url: str | None = None,
    service: str | None = None,
    namespace: str = "istio-system",
    port: int = 443,
    revision: str | None = None,
) -> dict:
    """The MutatingWebhookConfiguration that sends Pod CREATEs to the injector, as Istio's chart
    writes it: ``istio-sidecar-injector[-REV]``, one webhook per way a pod is selected (namespace
    ``istio-injection=enabled`` or ``istio.io/rev=REV``, else the pod's own labels), never for a pod
    labelled ``sidecar.istio.io/inject=false``; failurePolicy Fail, reinvocationPolicy Never,
    sideEffects None. At `url`, else at Service `namespace`/`service` (``istiod[-REV]``):`port`."""
    revision = revision or ""
    client_config: dict = {"caBundle": base64.b64encode(ca_bundle).decode()}
    if url:
        client_config["url"] = url
    else:
        name = service or (f"istiod-{revision}" if revision else "istiod")
        client_config["service"] = {"name": name, "namespace": namespace, "path": INJECT_PATH, "port": port}
    webhooks = [
        {
            "name": f"{prefix}sidecar-injector.istio.io",
            "clientConfig": client_config,
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchExpressions": namespace_selector},
            "objectSelector": {"matchExpressions": object_selector},
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "timeoutSeconds": 10,
        }
        for prefix, namespace_selector, object_selector in _selectors(revision)
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": configuration_name(revision),
            "labels": {"app": "sidecar-injector", "istio.io/rev": revision or "default"},
        },
        "webhooks": webhooks,
    }
