"""The agent's secret discovery service: the workload's certificate and trust bundle for its Envoy.

Flows in: the current certificate material (`SecretMaterial`: the chain, the
private key, the root certificates), set with `SdsServer.update` whenever the
certificate manager gets a new certificate; SDS requests from Envoy on a Unix
socket. Flows out: Istio's two secrets, by the names Envoy asks for:

* ``default``: ``tls_certificate`` with the chain (leaf then intermediates,
  never the root) and the private key, both inline;
* ``ROOTCA``: ``validation_context.trusted_ca`` with the root certificate(s).

The protocol is state of the world (``StreamSecrets``), which is what an
``sds_config`` with ``api_type: GRPC`` opens; ``DeltaSecrets`` and
``FetchSecrets`` answer UNIMPLEMENTED. `SecretStream` is the protocol without
I/O: a request or a new certificate in, at most one response out; a response's
version is a hash of the secrets it carries, so a rotation changes
``default``'s version and leaves ``ROOTCA``'s alone (nothing is pushed for it).
Envoy's NACKs are logged with its reason.

`SdsServer` is the grpc.aio shell: one task per stream, woken on `update`.
Who may connect is decided by the file system: the socket is mode 0600, owned
by the user Envoy runs as (`owner_uid`), in a directory the caller keeps
private (`plait.agent.run` uses ``STATE_DIR/proxy/``, mode 0700). Nothing
blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Protocol

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

log = logging.getLogger("plait.agent")

WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SOCKET_MODE = 0o600
_WAKE, _CLOSED = object(), object()


class SecretMaterial(Protocol):
    chain_pem: bytes  # the leaf, then any intermediates
    key_pem: bytes
    root_pem: bytes  # the trust bundle


def secret_resources(material: SecretMaterial) -> dict[str, secret_pb2.Secret]:
    """Istio's ``default`` and ``ROOTCA`` secrets for this material."""
    workload = secret_pb2.Secret(name=WORKLOAD_SECRET)
    workload.tls_certificate.certificate_chain.inline_bytes = material.chain_pem
    workload.tls_certificate.private_key.inline_bytes = material.key_pem
    root = secret_pb2.Secret(name=ROOT_SECRET)
    root.validation_context.trusted_ca.inline_bytes = material.root_pem
    return {WORKLOAD_SECRET: workload, ROOT_SECRET: root}


def version_of(secrets: Iterable[secret_pb2.Secret]) -> str:
    """A content hash: the same secrets always get the same version, different ones a different one."""
    digest = hashlib.sha256()
    for secret in sorted(secrets, key=lambda s: s.name):
        digest.update(secret.SerializeToString(deterministic=True))
    return digest.hexdigest()[:16]


class SecretStream:
    """One SDS stream (state of the world), without I/O.

    `receive` takes each request from Envoy, `update` each new certificate; both return the
    response to send, or None. A response carries every secret the stream asks for that exists
    (names it does not know are in `unknown_names` and get nothing) and is sent only when its
    version differs from the last one sent, or when Envoy asks for other names.
    """

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.unknown_names: tuple[str, ...] = ()
        self.sent_version = ""
        self.acked_version = ""
        self._nonce = 0

    def receive(
        self, request: discovery_pb2.DiscoveryRequest, material: SecretMaterial | None
    ) -> discovery_pb2.DiscoveryResponse | None:
        if request.response_nonce and request.response_nonce != str(self._nonce):
            if tuple(request.resource_names) == self.names:
                return None  # a stale ACK or NACK of an earlier response
        elif request.HasField("error_detail"):
            log.warning(
                "Envoy rejected secrets %s version %s: %s",
                ", ".join(self.names),
                self.sent_version,
                request.error_detail.message,
            )
            return None
        elif request.response_nonce and tuple(request.resource_names) == self.names:
            self.acked_version = request.version_info
            return None
        self.names = tuple(request.resource_names)
        self.sent_version = ""  # Envoy asks anew (first request, other names): answer even with the same version
        return self.update(material)

    def update(self, material: SecretMaterial | None) -> discovery_pb2.DiscoveryResponse | None:
        if material is None:
            return None
        available = secret_resources(material)
        self.unknown_names = tuple(name for name in self.names if name not in available)
        secrets = [available[name] for name in self.names if name in available]
        version = version_of(secrets)
        if not secrets or version == self.sent_version:
            return None
        self._nonce += 1
        self.sent_version = version
        response = discovery_pb2.DiscoveryResponse(version_info=version, type_url=SECRET_TYPE, nonce=str(self._nonce))
        for secret in secrets:
            response.resources.add().Pack(secret)
        return response


class SdsServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """SDS on a Unix socket; `update` hands every open stream the new certificate."""

    def __init__(self, socket_path: Path, *, owner_uid: int | None = None):
        self.socket_path = socket_path
        self.owner_uid = owner_uid
        self._material: SecretMaterial | None = None
        self._streams: set[asyncio.Queue] = set()
        self._unknown_logged: set[str] = set()
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        """Listen on the socket (replacing a stale one), mode 0600, owned by `owner_uid` if given."""
        self.socket_path.unlink(missing_ok=True)
        self._server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix:{self.socket_path}")
        await self._server.start()
        os.chmod(self.socket_path, SOCKET_MODE)
        if self.owner_uid is not None:
            os.chown(self.socket_path, self.owner_uid, self.owner_uid)

    async def stop(self) -> None:
        if self._server:
            await self._server.stop(grace=0.5)
        self.socket_path.unlink(missing_ok=True)

    def update(self, material: SecretMaterial) -> None:
        self._material = material
        for queue in self._streams:
            queue.put_nowait(_WAKE)

    async def StreamSecrets(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream, queue = SecretStream(), asyncio.Queue()
        reader = asyncio.create_task(_read(request_iterator, queue))
        self._streams.add(queue)
        try:
            while (item := await queue.get()) is not _CLOSED:
                if item is _WAKE:
                    response = stream.update(self._material)
                else:
                    response = stream.receive(item, self._material)
                self._log_unknown(stream.unknown_names)
                if response is not None:
                    log.debug("SDS: sending %s version %s", ", ".join(stream.names), response.version_info)
                    yield response
        finally:
            self._streams.discard(queue)
            reader.cancel()

    def _log_unknown(self, names: tuple[str, ...]) -> None:
        for name in sorted(set(names) - self._unknown_logged):
            self._unknown_logged.add(name)
            log.warning(
                "Envoy asked for secret %r; this agent serves only %r and %r", name, WORKLOAD_SECRET, ROOT_SECRET
            )


async def _read(requests: AsyncIterator[discovery_pb2.DiscoveryRequest], queue: asyncio.Queue) -> None:
    """Envoy's requests into `queue`, then _CLOSED when the stream ends."""
    try:
        async for request in requests:
            queue.put_nowait(request)
    except grpc.aio.AioRpcError:
        pass
    finally:
        queue.put_nowait(_CLOSED)
