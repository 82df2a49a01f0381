"""The CA's gRPC service (Istio's ``IstioCertificateService/CreateCertificate``, TLS) and the
identity check of ADS streams on that TLS port (the control plane serves xDS there too).

A caller proves who it is with gRPC metadata ``authorization: Bearer <pod token>``, checked by
an `Authenticator` (`plait.ca.tokens` locally, `plait.ca.kubeauth` on Kubernetes); the CA signs
a CSR only for the identity that token gives, ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``. Refusals:

* no or invalid token → UNAUTHENTICATED; a token that cannot be checked now (on Kubernetes: the
  API server does not answer the TokenReview) → UNAVAILABLE, which agents retry;
* a CSR for any other identity (or extra names) → PERMISSION_DENIED, logged at WARNING with
  the caller's namespace/service account/pod, its address and what it asked for;
* a malformed or weak CSR → INVALID_ARGUMENT; a lifetime above the maximum → INVALID_ARGUMENT.

The server's own certificate (DNS names ``istiod.istio-system.svc``, ``localhost``, …) is
issued by the CA when the server starts and lasts a year; restarting the control plane renews
it. Signing runs on the event loop (about a millisecond).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable

import grpc
from prometheus_client import CollectorRegistry, Counter

from plait.ca import wire
from plait.ca.authority import (
    MAX_WORKLOAD_TTL,
    SERVER_DNS_NAMES,
    CaError,
    CertificateAuthority,
    CsrRefused,
    check_csr,
)
from plait.ca.tokens import Authenticator, AuthenticatorUnavailable, InvalidToken, TokenIdentity, bearer_token
from plait.model.proxy import TRUST_DOMAIN, spiffe_id
from plait.xds.server import PENDING_STREAMS, Authenticate, Refusal

log = logging.getLogger(__name__)

CA_PORT = 15012
DEFAULT_WORKLOAD_TTL = 24 * 3600
REFUSAL_CODES = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "wrong_identity": grpc.StatusCode.PERMISSION_DENIED,
    "bad_csr": grpc.StatusCode.INVALID_ARGUMENT,
    "ttl": grpc.StatusCode.INVALID_ARGUMENT,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}


class CaMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.issued = Counter("plait_ca_certificates_issued_total", "Workload certificates signed", registry=registry)
        self.refused = Counter(
            "plait_ca_requests_refused_total",
            "Certificate requests refused, by reason "
            "(unauthenticated, wrong_identity, bad_csr, ttl; unavailable: the token could not be "
            "reviewed now)",
            ["reason"],
            registry=registry,
        )


class CaService:
    """Handles CreateCertificate calls; `clock` gives the time (seconds since the epoch)."""

    def __init__(
        self,
        authority: CertificateAuthority,
        tokens: Authenticator,
        *,
        trust_domain: str,
        default_ttl: int,
        max_ttl: int,
        metrics: CaMetrics,
        clock: Callable[[], float] = time.time,
    ):
        self.authority, self.tokens, self.trust_domain = authority, tokens, trust_domain
        self.default_ttl, self.max_ttl, self.metrics, self.clock = default_ttl, max_ttl, metrics, clock

    async def create_certificate(self, request, context: grpc.aio.ServicerContext):
        metadata = dict(context.invocation_metadata() or ())
        caller = None
        try:
            caller = await self._caller(metadata)
            identity = spiffe_id(caller.namespace, caller.service_account, self.trust_domain)
            csr = check_csr(request.csr.encode(), identity)
            now = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)
            chain = self.authority.sign(
                csr, identity, request.validity_duration or self.default_ttl, now, max_ttl_seconds=self.max_ttl
            )
        except CsrRefused as refused:
            self.metrics.refused.labels(reason=refused.kind).inc()
            log.warning(
                "certificate refused (%s) to %s at %s: %s",
                refused.kind,
                caller or "unknown caller",
                context.peer(),
                refused.reason,
            )
            await context.abort(REFUSAL_CODES[refused.kind], refused.reason)
        except CaError as error:
            log.error("cannot sign: %s", error)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        self.metrics.issued.inc()
        log.info("issued a certificate for %s to %s at %s", identity, caller, context.peer())
        return wire.IstioCertificateResponse(cert_chain=[c.decode() for c in chain])

    async def _caller(self, metadata: dict) -> TokenIdentity:
        token = bearer_token(metadata)
        if token is None:
            raise CsrRefused("no token: send gRPC metadata 'authorization: Bearer <pod token>'", kind="unauthenticated")
        try:
            return await self.tokens.authenticate(token)
        except InvalidToken as error:
            raise CsrRefused(f"invalid token: {error}", kind="unauthenticated") from None
        except AuthenticatorUnavailable as error:
            raise CsrRefused(f"cannot check the token now: {error}", kind="unavailable") from None

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            wire.SERVICE,
            {
                wire.METHOD: grpc.unary_unary_rpc_method_handler(
                    self.create_certificate,
                    request_deserializer=wire.IstioCertificateRequest.FromString,
                    response_serializer=wire.IstioCertificateResponse.SerializeToString,
                )
            },
        )


async def serve_ca(
    authority: CertificateAuthority,
    tokens: Authenticator,
    host: str,
    port: int = CA_PORT,
    *,
    trust_domain: str = TRUST_DOMAIN,
    default_ttl: int = DEFAULT_WORKLOAD_TTL,
    max_ttl: int = MAX_WORKLOAD_TTL,
    registry: CollectorRegistry | None = None,
    also: tuple[grpc.GenericRpcHandler, ...] = (),
    server_names: tuple[str, ...] = SERVER_DNS_NAMES,
) -> grpc.aio.Server:
    """Start the CA's gRPC server over TLS on host:port (port 0: see `server.bound_port`), serving
    `also` too (the control plane's xDS, as istiod's 15012 does), with a certificate for `server_names`.
    Stop it with ``await server.stop(grace)``."""
    service = CaService(
        authority,
        tokens,
        trust_domain=trust_domain,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        metrics=CaMetrics(registry or CollectorRegistry()),
    )
    key, chain = authority.issue_server_certificate(server_names)
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20), *PENDING_STREAMS]
    )
    server.add_generic_rpc_handlers((service.handler(), *also))
    try:
        bound = server.add_secure_port(f"{host}:{port}", grpc.ssl_server_credentials([(key, b"".join(chain))]))
    except RuntimeError as error:
        raise OSError(f"the CA cannot listen on {host}:{port}: {error}") from None
    await server.start()
    server.bound_port = bound
    return server


def ads_authenticator(tokens: Authenticator, *, registry: CollectorRegistry | None = None) -> Authenticate:
    """For `ads_handler`: a stream is admitted only with a valid pod token whose namespace and
    service account are the node's (node id and NAMESPACE / SERVICE_ACCOUNT metadata)."""
    rejected = Counter(
        "plait_xds_rejected_streams_total",
        "ADS streams refused on the TLS port (no, invalid or wrong pod token)",
        ["reason"],
        registry=registry or CollectorRegistry(),
    )

    async def authenticate(metadata: dict[str, str], node) -> Refusal | None:
        refusal = await _check_node(tokens, metadata, node)
        if refusal is not None:
            rejected.labels(reason=refusal.code.name.lower()).inc()
        return refusal

    return authenticate


async def _check_node(tokens: Authenticator, metadata: dict[str, str], node) -> Refusal | None:
    token = bearer_token(metadata)
    if token is None:
        return Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            "no token: xDS on this port needs gRPC metadata "
            "'authorization: Bearer <pod token>' (plait agent --token-file)",
        )
    try:
        caller = await tokens.authenticate(token)
    except InvalidToken as error:
        return Refusal(grpc.StatusCode.UNAUTHENTICATED, f"invalid token: {error}")
    except AuthenticatorUnavailable as error:
        return Refusal(grpc.StatusCode.UNAVAILABLE, f"cannot check the token now: {error}")
    fields = node.metadata.fields
    parts = node.id.split("~")
    namespaces = {
        parts[2].rpartition(".")[2] if len(parts) == 4 else "",  # the hub reads it from the id
        fields["NAMESPACE"].string_value if "NAMESPACE" in fields else caller.namespace,
    }
    account = fields["SERVICE_ACCOUNT"].string_value if "SERVICE_ACCOUNT" in fields else "default"
    if namespaces != {caller.namespace} or account != caller.service_account:
        return Refusal(
            grpc.StatusCode.PERMISSION_DENIED,
            f"the token is for {caller.namespace}/{caller.service_account}, but node {node.id} claims "
            f"namespace {' and '.join(sorted(namespaces))} and service account {account}",
        )
    return None
