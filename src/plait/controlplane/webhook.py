"""The validating admission webhook: ``kubectl apply`` of invalid Istio config is refused with
`plait validate`'s message, and nothing is stored.

Kubernetes 1.20 drops the CRDs' CEL rules, so this check is what keeps bad config out of the
cluster. The API server POSTs an ``AdmissionReview`` (``admission.k8s.io/v1`` or ``v1beta1``,
answered in the version asked) to ``https://<control plane>:15017/validate``; the object is
checked by `plait.api.loader.parse_document`, the very function behind `plait validate`, and
each problem is reported as ``<Kind> <namespace>/<name>: <field path>: <what was expected>``
(there is no file or document number in a cluster). As istiod's webhook:

* only CREATE and UPDATE are checked; anything else is allowed;
* warnings (valid, but worth knowing) are returned as admission warnings, which kubectl prints;
* an Istio kind plait has no model for yet (WasmPlugin…) is allowed
  with a warning that it has no effect; the webhook's configuration
  (`validating_webhook_configuration`) does not even send those, nor any other kind, so users'
  other CRDs are never blocked. Services are read by plait but never validated here.

`admission_response` is pure; `webhook_app` is the aiohttp application; `serve_webhook` runs
it over TLS.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from plait.api.errors import Problem
from plait.api.loader import parse_document
from plait.api.resources import SPEC_MODELS, Source
from plait.api.unsupported import kind_not_supported
from plait.ca.authority import make_private_dir, write_file

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WEBHOOK_PORT = 15017  # istiod's webhook port (Service istiod port 443 → 15017)
WEBHOOK_PATH = "/validate"
INJECT_PATH = "/inject"  # the sidecar injector's, served beside (plait.controlplane.injector)
WEBHOOK_NAME = "validation.istio.io"
CONFIGURATION_NAME = "istio-validator-istio-system"
REVIEW_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
CHECKED_OPERATIONS = ("CREATE", "UPDATE")
# group → resources (plural) of every Istio kind plait reads; Services and Secrets are not validated here
VALIDATED_RESOURCES = {
    "networking.istio.io": (
        "virtualservices",
        "destinationrules",
        "serviceentries",
        "gateways",
        "sidecars",
        "workloadentries",
        "envoyfilters",
        "proxyconfigs",
    ),
    "security.istio.io": ("peerauthentications", "authorizationpolicies", "requestauthentications"),
    "telemetry.istio.io": ("telemetries",),
}
VALIDATED_KINDS = frozenset(
    kind
    for kind, (versions, _) in SPEC_MODELS.items()
    if kind not in ("Service", "Secret", "ConfigMap") and not versions[0].startswith("gateway.networking.k8s.io/")
)  # core kinds are the API server's, the Gateway API's its CRDs' own rules (as with Istio)


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.reviews = Counter(
            "plait_webhook_validations_total",
            "Objects the validating webhook was asked about, by kind and result (allowed, denied, not_checked)",
            ["kind", "result"],
            registry=registry or CollectorRegistry(),
        )


def describe(problem: Problem) -> str:
    """A problem as the webhook reports it: the object, the field path, what was expected."""
    field = f": {problem.path}" if problem.path else ""
    return f"{problem.kind} {problem.namespace}/{problem.name}{field}: {problem.message}"


def check_object(obj: object, *, namespace: str = "", name: str = "") -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) for one object from an admission request. `namespace` and `name` come
    from the request, for objects that leave them out (the API server fills them in later)."""
    if not isinstance(obj, dict):
        return [Problem(message="the admission request holds no object")], []
    metadata = dict(obj.get("metadata") or {})
    metadata.setdefault("namespace", namespace or "default")
    if not metadata.get("name"):  # generateName: the final name is not known yet
        metadata["name"] = name or f"{metadata.get('generateName', '')}generated"
    _, problems = parse_document({**obj, "metadata": metadata}, Source(file="", document=None))
    return [p for p in problems if p.severity == "error"], [p for p in problems if p.severity == "warning"]


def _verdict(request: dict, metrics: WebhookMetrics | None) -> dict:
    """The `response` part (without uid) for one AdmissionRequest."""
    obj = request.get("object")
    kind = obj.get("kind", "") if isinstance(obj, dict) else ""
    if request.get("operation") not in CHECKED_OPERATIONS:
        return _counted(metrics, kind, "not_checked", {"allowed": True})
    if kind not in VALIDATED_KINDS:
        not_supported = kind_not_supported(kind, str(obj.get("apiVersion", ""))) if isinstance(obj, dict) else None
        warnings = [f"{not_supported}: it is stored but has no effect on the mesh"] if not_supported else []
        return _counted(metrics, kind, "not_checked", {"allowed": True, **({"warnings": warnings} if warnings else {})})
    errors, warnings = check_object(obj, namespace=request.get("namespace") or "", name=request.get("name") or "")
    if errors:
        message = "configuration is invalid: " + "; ".join(describe(p) for p in errors)
        log.info("webhook: denied %s%s", message, " (dry run)" if request.get("dryRun") else "")
        return _counted(metrics, kind, "denied", {"allowed": False, "status": {"message": message}})
    response: dict = {"allowed": True}
    if warnings:
        response["warnings"] = [describe(p) for p in warnings]
    return _counted(metrics, kind, "allowed", response)


def _counted(metrics: WebhookMetrics | None, kind: str, result: str, response: dict) -> dict:
    if metrics is not None:
        metrics.reviews.labels(kind=kind or "unknown", result=result).inc()
    return response


def admission_response(review: object, metrics: WebhookMetrics | None = None) -> dict:
    """The AdmissionReview to answer `review` with (same apiVersion, the request's uid)."""
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise ValueError("expected an AdmissionReview")
    version = review.get("apiVersion")
    if version not in REVIEW_VERSIONS:
        raise ValueError(f"AdmissionReview {version!r} is not one of {', '.join(REVIEW_VERSIONS)}")
    request = review.get("request")
    if not isinstance(request, dict) or not request.get("uid"):
        raise ValueError("the AdmissionReview has no request with a uid")
    return {
        "apiVersion": version,
        "kind": "AdmissionReview",
        "response": {"uid": request["uid"], **_verdict(request, metrics)},
    }


def webhook_app(metrics: WebhookMetrics | None = None, *, inject: Handler | None = None) -> web.Application:
    """POST /validate (and /validate/…): AdmissionReview in, AdmissionReview out; with `inject`, the
    sidecar injector (`plait.controlplane.injector`) on POST /inject too."""

    async def validate(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.Response(status=415, text="invalid Content-Type, want application/json")
        try:
            answer = admission_response(json.loads(await request.read()), metrics)
        except ValueError as error:  # also bad JSON
            return web.Response(status=400, text=f"not an AdmissionReview: {error}")
        return web.json_response(answer)

    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post(WEBHOOK_PATH, validate)
    app.router.add_post(WEBHOOK_PATH + "/{rest:.*}", validate)
    if inject is not None:
        app.router.add_post(INJECT_PATH, inject)
        app.router.add_post(INJECT_PATH + "/{rest:.*}", inject)
    return app


def tls_context(chain_pem: bytes, key_pem: bytes, directory: Path) -> ssl.SSLContext:
    """A server TLS context for the webhook from PEM (the files are kept 0600 in `directory`)."""
    make_private_dir(directory)
    cert_file, key_file = directory / "webhook-cert.pem", directory / "webhook-key.pem"
    write_file(cert_file, chain_pem)
    write_file(key_file, key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def serve_webhook(
    context: ssl.SSLContext,
    host: str,
    port: int = WEBHOOK_PORT,
    *,
    metrics: WebhookMetrics | None = None,
    inject: Handler | None = None,
) -> web.AppRunner:
    """Serve the webhook (and the injector, given its handler) over TLS on host:port until
    ``await runner.cleanup()``."""
    runner = web.AppRunner(webhook_app(metrics, inject=inject), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    return runner


def validating_webhook_configuration(
    ca_bundle: bytes,
    *,
    url: str | None = None,
    service: str = "istiod",
    namespace: str = "istio-system",
    port: int = 443,
    name: str = CONFIGURATION_NAME,
    failure_policy: str = "Fail",
) -> dict:
    """The ValidatingWebhookConfiguration that sends plait's kinds (CREATE, UPDATE, every version)
    to the control plane: at `url`, else at Service `namespace`/`service`:`port`. `ca_bundle` is
    the PEM that signed the webhook's serving certificate. ``Fail`` (Istio's choice): while no
    control plane answers, Istio config cannot be written unchecked."""
    client_config: dict = {"caBundle": base64.b64encode(ca_bundle).decode()}
    if url:
        client_config["url"] = url
    else:
        client_config["service"] = {"name": service, "namespace": namespace, "path": WEBHOOK_PATH, "port": port}
    rules = [
        {
            "apiGroups": [group],
            "apiVersions": ["*"],
            "operations": list(CHECKED_OPERATIONS),
            "resources": list(resources),
            "scope": "*",
        }
        for group, resources in VALIDATED_RESOURCES.items()
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app": "istiod", "istio": "istiod"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": client_config,
                "rules": rules,
                "failurePolicy": failure_policy,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1", "v1beta1"],
                "timeoutSeconds": 10,
            }
        ],
    }
