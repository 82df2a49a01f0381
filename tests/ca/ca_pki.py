"""Certificates made by hand for the CA tests (an operator's own root and intermediate, CSRs
with odd contents) and a chain check done independently of plait, with cryptography's verifier."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ca_cert(
    name: str, key, issuer: x509.Certificate | None = None, issuer_key=None, *, ca: bool = True
) -> x509.Certificate:
    """A CA certificate for `key` named O=example, CN=`name`; self-signed without `issuer`."""
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example"), x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )
    now = utcnow()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=ca,
                crl_sign=ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key((issuer_key or key).public_key()), critical=False
        )
        .sign(issuer_key or key, hashes.SHA256())
    )


class OperatorPki:
    """An operator's own root and intermediate, written as Istio's plug-in CA files."""

    def __init__(self):
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.root = ca_cert("example root", self.root_key)
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = ca_cert("example intermediate", self.intermediate_key, self.root, self.root_key)

    def write(self, directory: Path, *, key=None, chain: bytes | None = None) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca-cert.pem").write_bytes(pem(self.intermediate))
        (directory / "ca-key.pem").write_bytes(key_pem(key or self.intermediate_key))
        (directory / "root-cert.pem").write_bytes(pem(self.root))
        (directory / "cert-chain.pem").write_bytes(pem(self.intermediate) + pem(self.root) if chain is None else chain)
        return directory


def csr(*names: x509.GeneralName, key=None) -> bytes:
    """A PEM CSR with exactly these subjectAltNames (none: no SAN extension)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def uri(identity: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(identity)


def weak_rsa_csr(identity: str) -> bytes:
    return csr(uri(identity), key=rsa.generate_private_key(public_exponent=65537, key_size=1024))


def verified_identity(chain: list[bytes], root_pem: bytes, at: datetime.datetime) -> list[str]:
    """Verify `chain` (leaf first) up to `root_pem` as a TLS client certificate, with
    cryptography's path builder; returns the leaf's URI SANs."""
    root = x509.load_pem_x509_certificate(root_pem)
    certs = [x509.load_pem_x509_certificate(c) for c in chain]
    verifier = verification.PolicyBuilder().store(verification.Store([root])).time(at).build_client_verifier()
    result = verifier.verify(certs[0], certs[1:])
    assert result.chain[-1] == root
    return [n.value for n in result.subjects if isinstance(n, x509.UniformResourceIdentifier)]
