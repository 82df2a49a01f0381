"""The agent's side of the CA: make a key and a CSR locally, ask the CA to sign it.

The private key never leaves the caller; only the CSR (public key + the URI SAN of the
identity) goes to the CA, over TLS verified against the mesh's root (`root_pem`), with the
pod token as gRPC metadata ``authorization: Bearer <token>``. The CA's certificate names
``istiod.istio-system.svc`` (and ``localhost``, ``plait-control-plane``), so the TLS name is
checked against `server_name` whatever address is dialled.
"""

from __future__ import annotations

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plait.ca import wire

SERVER_NAME = "istiod.istio-system.svc"
_REFUSALS = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
)


class CertificateRefused(Exception):
    """The CA answered and said no; the message is the CA's reason."""


class CaUnavailable(Exception):
    """The CA could not be reached or did not answer in time."""


def new_key_and_csr(identity: str) -> tuple[bytes, bytes]:
    """(PEM private key, PEM CSR): a new EC P-256 key and a CSR whose only subjectAltName is the
    URI `identity` (the subject is empty, as Istio's agent makes it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


async def request_certificate(
    address: str,
    *,
    root_pem: bytes,
    token: str,
    csr_pem: bytes,
    ttl_seconds: int,
    server_name: str = SERVER_NAME,
    timeout: float = 10,
) -> list[bytes]:
    """Ask the CA at `address` (host:port) to sign `csr_pem` for `ttl_seconds` (0: the CA's
    default). Returns the PEM chain, one certificate per item, leaf first and root last."""
    credentials = grpc.ssl_channel_credentials(root_certificates=root_pem)
    request = wire.IstioCertificateRequest(csr=csr_pem.decode(), validity_duration=int(ttl_seconds))
    async with grpc.aio.secure_channel(
        address, credentials, options=[("grpc.ssl_target_name_override", server_name)]
    ) as channel:
        call = channel.unary_unary(
            wire.METHOD_PATH,
            request_serializer=wire.IstioCertificateRequest.SerializeToString,
            response_deserializer=wire.IstioCertificateResponse.FromString,
        )
        try:
            response = await call(request, metadata=(("authorization", f"Bearer {token}"),), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() in _REFUSALS:
                raise CertificateRefused(error.details() or error.code().name) from None
            raise CaUnavailable(f"CA at {address}: {error.code().name}: {error.details()}") from None
    return _split(response.cert_chain)


def _split(items) -> list[bytes]:
    """One PEM certificate per item (an Istio CA may put several in one string)."""
    try:
        chain = [
            c.public_bytes(serialization.Encoding.PEM)
            for item in items
            for c in x509.load_pem_x509_certificates(item.encode())
        ]
    except ValueError as error:
        raise CertificateRefused(f"the CA answered with something that is not a PEM chain ({error})") from None
    if not chain:
        raise CertificateRefused("the CA answered with no certificate")
    return chain
