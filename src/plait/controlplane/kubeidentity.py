"""The control plane's identity duties on Kubernetes, wired together: what `app.run` starts when it
runs against a cluster.

* The CA comes from the Secrets ``cacerts`` / ``istio-ca-secret`` (`plait.ca.kubesecrets`), so
  every replica signs with the same key; callers are proved by TokenReview of their pod's token
  (`plait.ca.kubeauth`), for the CA and for xDS on the TLS port.
* Every replica serves the validating webhook (`plait.controlplane.webhook`) and the sidecar
  injector (`plait.controlplane.injector`, ``/inject``) over TLS on 15017 with a certificate its CA
  issues (``istiod.istio-system.svc``, ``localhost``).
* One replica, the leader of Lease ``<namespace>/plait-leader`` (`plait.controlplane.kubelease`),
  writes what is written once per cluster: the root certificate ConfigMap in every namespace
  (`plait.controlplane.rootcert`) and the root as ``caBundle`` of the validating and the
  mutating webhook configurations, so the API server trusts the webhooks' certificate
  (`keep_webhook_ca_bundle`).

As istiod, the namespace is ``$POD_NAMESPACE`` (default ``istio-system``) and the election
identity ``$POD_NAME`` (default: the host name).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from plait.ca.authority import CaError, CertificateAuthority, ca_dir_of, control_plane_dns_names, fingerprint, pem
from plait.ca.kubeauth import TokenReviewAuthenticator
from plait.ca.kubesecrets import load_cluster_ca
from plait.ca.tokens import AUDIENCE
from plait.controlplane.injector import InjectionMetrics, NamespaceLabels, configuration_name, inject_handler
from plait.controlplane.kubefollow import follow
from plait.controlplane.kubelease import DEFAULT_LEASE_NAME, LeaseElection
from plait.controlplane.leader import ElectionConfig
from plait.controlplane.rootcert import publish_root_cert
from plait.controlplane.webhook import (
    WEBHOOK_PORT,
    WebhookMetrics,
    serve_webhook,
    tls_context,
)
from plait.inject.settings import InjectSettings
from plait.sources.kube_watch import ClusterView

log = logging.getLogger("plait.controlplane")


# The RBAC these duties need, for the manifests that install the control plane (its service account):
CLUSTER_RULES = (  # ClusterRole
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update"]},
    {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
        "verbs": ["get", "list", "watch", "update"],
    },
)
NAMESPACE_RULES = (  # Role in the control plane's namespace
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
)


@dataclass(frozen=True)
class ClusterSettings:
    namespace: str = field(default_factory=lambda: os.environ.get("POD_NAMESPACE") or "istio-system")
    identity: str = field(default_factory=lambda: os.environ.get("POD_NAME") or socket.gethostname())
    lease_name: str | None = None  # None: plait-leader[-REV], one leader per revision
    election: ElectionConfig = field(default_factory=ElectionConfig)
    webhook_port: int = WEBHOOK_PORT
    webhook_configuration: str | None = None  # whose caBundle the leader keeps; None: Istio's name for the revision
    inject: InjectSettings = field(default_factory=InjectSettings)  # what the injector adds to pods
    injector_configuration: str | None = None  # whose caBundle the leader keeps; None: Istio's name for the revision

    @property
    def mutating_configuration(self) -> str:
        return self.injector_configuration or configuration_name(self.inject.revision)

    @property
    def validating_configuration(self) -> str:
        """Istio's ``istio-validator[-REV]-<namespace>`` unless given."""
        revision = f"-{self.inject.revision}" if self.inject.revision else ""
        return self.webhook_configuration or f"istio-validator{revision}-{self.namespace}"

    @property
    def server_names(self) -> tuple[str, ...]:
        """What the control plane's certificate is valid for: its Service ``istiod[-REV].NAMESPACE.svc``."""
        return control_plane_dns_names(self.namespace, self.inject.revision)

    @property
    def lease(self) -> str:
        """The leader Lease: each revision elects its own leader (it keeps its own webhooks' caBundles)."""
        revision = self.inject.revision
        return self.lease_name or (f"{DEFAULT_LEASE_NAME}-{revision}" if revision else DEFAULT_LEASE_NAME)

    token_audiences: tuple[str, ...] = (AUDIENCE,)  # Istio's TOKEN_AUDIENCES


class ClusterIdentity:
    """The CA, the TokenReview authenticator, the webhook server and the election of one replica."""

    def __init__(self, api: client.ApiClient, authority: CertificateAuthority, settings: ClusterSettings):
        self.api, self.authority, self.settings = api, authority, settings
        self.inject = settings.inject  # the injector's settings now: replaced when the mesh config changes
        self.authenticator = TokenReviewAuthenticator(api, audiences=settings.token_audiences)
        self.election = LeaseElection(
            api,
            namespace=settings.namespace,
            name=settings.lease,
            identity=settings.identity,
            config=settings.election,
        )
        self._runner: web.AppRunner | None = None
        self._election: asyncio.Task | None = None

    @classmethod
    async def open(cls, api: client.ApiClient, state_dir: Path, settings: ClusterSettings) -> ClusterIdentity:
        """Load the CA from the cluster's Secrets (CaError if they hold an unusable CA); the namespace
        is created if missing (a control plane run from outside the cluster, for development)."""
        await _ensure_namespace(api, settings.namespace)
        authority, where = await load_cluster_ca(api, ca_dir_of(state_dir), namespace=settings.namespace)
        log.info(
            "CA from %s: root %s (SHA-256 %s)",
            where,
            authority.root.subject.rfc4514_string(),
            fingerprint(authority.root),
        )
        return cls(api, authority, settings)

    async def start(
        self,
        host: str,
        state_dir: Path,
        registry: CollectorRegistry | None = None,
        view: ClusterView | None = None,
        leader_jobs: tuple[Callable[[], Awaitable[None]], ...] = (),
    ) -> None:
        """Serve the webhooks and take part in the election. `view`: the Kubernetes source's state,
        where the injector finds namespace labels."""
        key, chain = self.authority.issue_server_certificate(self.settings.server_names)
        context = tls_context(b"".join(chain), key, ca_dir_of(state_dir) / "webhook")
        inject = inject_handler(lambda: self.inject, namespace_labels(self.api, view), InjectionMetrics(registry))
        self._runner = await serve_webhook(
            context, host, self.settings.webhook_port, metrics=WebhookMetrics(registry), inject=inject
        )
        root = pem(self.authority.root)
        jobs = [
            lambda: publish_root_cert(self.api, root.decode()),
            lambda: keep_webhook_ca_bundle(self.api, self.settings.validating_configuration, root),
            lambda: keep_webhook_ca_bundle(self.api, self.settings.mutating_configuration, root, kind="mutating"),
            *leader_jobs,
        ]
        self._election = asyncio.create_task(self.election.run(jobs))
        log.info(
            "validating webhook on https://%s:%d/validate, sidecar injector on /inject (proxy image %s, "
            "revision %s); leader election on Lease %s/%s as %s",
            host,
            self.settings.webhook_port,
            self.settings.inject.proxy_image,
            self.settings.inject.revision_name,
            self.settings.namespace,
            self.settings.lease,
            self.settings.identity,
        )

    async def close(self) -> None:
        """Leave the election (handing the Lease over) and stop serving the webhook."""
        if self._election is not None:
            self._election.cancel()
            await asyncio.gather(self._election, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()


def namespace_labels(api: client.ApiClient, view: ClusterView | None) -> NamespaceLabels:
    """The labels of a namespace as the watch has them, else (a namespace created an instant ago)
    read from the API server."""
    core = client.CoreV1Api(api)

    async def labels(namespace: str) -> dict[str, str]:
        known = view.known_namespace_labels(namespace) if view is not None else None
        if known is not None:
            return known
        try:
            found = await core.read_namespace(namespace)
        except ApiException as error:
            if error.status == 404:
                return {}
            raise
        return dict(found.metadata.labels or {})

    return labels


async def _ensure_namespace(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    try:
        await core.read_namespace(namespace)
    except ApiException as error:
        if error.status == 403:  # may not look: in its own namespace in a cluster, which exists
            return
        if error.status >= 500:
            raise  # the API server is not ready: the caller waits and tries again
        if error.status != 404:
            raise CaError(f"cannot read namespace {namespace}: {error.status} {error.reason}") from None
        try:
            await core.create_namespace({"metadata": {"name": namespace}})
            log.info("created namespace %s for the control plane's Secrets and Lease", namespace)
        except ApiException as create_error:
            if create_error.status != 409:
                raise CaError(
                    f"namespace {namespace} does not exist and cannot be created: "
                    f"{create_error.status} {create_error.reason}"
                ) from None


def ca_bundle_update(configuration: dict, ca_bundle: bytes) -> dict | None:
    """`configuration` (a webhook configuration as a dict) with every webhook's caBundle set to
    `ca_bundle` (PEM), or None if they all have it."""
    wanted = base64.b64encode(ca_bundle).decode()
    webhooks = configuration.get("webhooks") or []
    if all((w.get("clientConfig") or {}).get("caBundle") == wanted for w in webhooks):
        return None
    return {
        **configuration,
        "webhooks": [{**w, "clientConfig": {**(w.get("clientConfig") or {}), "caBundle": wanted}} for w in webhooks],
    }


async def keep_webhook_ca_bundle(
    api: client.ApiClient, name: str, ca_bundle: bytes, *, kind: str = "validating"
) -> None:
    """Keep `ca_bundle` in every webhook of the (`kind`: validating or mutating) webhook configuration
    `name` (when it exists) until cancelled: the leader's job, as istiod patches its webhooks."""
    registration = client.AdmissionregistrationV1Api(api)
    changed = asyncio.Event()
    await_change = asyncio.create_task(
        follow(
            getattr(registration, f"list_{kind}_webhook_configuration"),
            lambda kind, obj: changed.set(),
            field_selector=f"metadata.name={name}",
        )
    )
    try:
        while True:
            await changed.wait()
            changed.clear()
            await _patch_ca_bundle(registration, kind, name, ca_bundle)
    finally:
        await_change.cancel()
        await asyncio.gather(await_change, return_exceptions=True)


async def _patch_ca_bundle(
    registration: client.AdmissionregistrationV1Api, kind: str, name: str, ca_bundle: bytes
) -> None:
    try:
        current = await getattr(registration, f"read_{kind}_webhook_configuration")(name)
        update = ca_bundle_update(registration.api_client.sanitize_for_serialization(current), ca_bundle)
        if update is not None:
            await getattr(registration, f"replace_{kind}_webhook_configuration")(name, update)
            log.info("webhook: set the caBundle of %s webhook configuration %s to the mesh's root", kind, name)
    except ApiException as error:
        if error.status not in (404, 409):  # gone, or changed meanwhile (the change brings another event)
            log.warning("webhook: cannot set the caBundle of %s: %s %s", name, error.status, error.reason)
    except (aiohttp.ClientError, OSError, TimeoutError) as error:  # the watch lists again when it is back
        log.warning("webhook: cannot set the caBundle of %s: the API server is away (%s)", name, error)
