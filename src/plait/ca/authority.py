"""The certificate authority: its signing key and chain, CSR checks and signing.

Two ways to get a CA (`load_or_create`):

* **Self-signed root** (default): an EC P-256 root valid 10 years, generated once and kept in
  ``<state dir>/ca/`` (directory 0700, key 0600): ``ca-cert.pem`` + ``ca-key.pem``.
* **Plug-in CA**, as Istio's ``cacerts`` secret: a directory with ``ca-cert.pem`` (the signing
  certificate, an intermediate under your root), ``ca-key.pem`` (its key), ``root-cert.pem``
  (the root) and ``cert-chain.pem`` (ca-cert up to the root). The key stays where it is.

Either way the trust anchor is written to ``<state dir>/ca/root-cert.pem`` (`root_cert_path`),
where agents and tools find it.

Signing is pure: `check_csr` decides whether a CSR asks for exactly the caller's identity,
`CertificateAuthority.sign` makes the leaf. As Istio's CA does, `sign` returns the leaf first,
then the intermediates, then the root last.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plait.model.proxy import TRUST_DOMAIN

ROOT_TTL = datetime.timedelta(days=3650)
MAX_WORKLOAD_TTL = 90 * 86400  # Istio's default maximum workload certificate lifetime, in seconds
CLOCK_SKEW = datetime.timedelta(seconds=60)  # leaves start this much in the past, as Istio's do
SERVER_DNS_NAMES = (
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "plait-control-plane",
    "localhost",
)


def control_plane_dns_names(namespace: str = "istio-system", revision: str = "") -> tuple[str, ...]:
    """The names the control plane's TLS certificate (xDS and CA on 15012, the webhooks) is valid for:
    `SERVER_DNS_NAMES` (``istiod.istio-system.svc`` is the name every agent checks, whatever address it
    dials), and its Services ``istiod`` and ``istiod-REVISION`` in `namespace`, as the API server calls
    its webhooks (Istio's istiod carries the same pair)."""
    services = ("istiod", f"istiod-{revision}") if revision else ("istiod",)
    names = [f"{service}.{namespace}.{suffix}" for service in services for suffix in ("svc", "svc.cluster.local")]
    return tuple(dict.fromkeys((*SERVER_DNS_NAMES, *names)))


SERVER_CERT_TTL = 365 * 86400  # the control plane's own TLS certificate; a restart issues a new one
PLUGIN_FILES = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")
RSA_MIN_BITS = 2048
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)

LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_encipherment=True,
    content_commitment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CaError(Exception):
    """The CA cannot be loaded or cannot sign; the message says which file and what to do."""


class CsrRefused(Exception):
    """A request the CA will not sign. `kind` names the reason: ``bad_csr``, ``wrong_identity``,
    ``ttl`` (and ``unauthenticated``, which the service uses for callers without a valid token)."""

    def __init__(self, reason: str, *, kind: str = "bad_csr"):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


# ------------------------------------------------------------------ files


def ca_dir_of(state_dir: Path) -> Path:
    return Path(state_dir) / "ca"


def root_cert_path(state_dir: Path) -> Path:
    """Where the trust anchor of the control plane using `state_dir` is written."""
    return ca_dir_of(state_dir) / "root-cert.pem"


def make_private_dir(path: Path) -> None:
    """`path` (and parents) exists and only its owner may enter it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_file(path: Path, data: bytes, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Write `path` atomically: a temporary file created with `mode` (0600: never readable by
    others, not even briefly), then renamed over `path`, or, with `exclusive`, linked to `path`
    only if nothing is there yet (FileExistsError otherwise), so concurrent creators agree."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_secret(path: Path, make: Callable[[], bytes]) -> bytes:
    """The secret kept in `path`, created the first time by `make` (0600, in a 0700 directory).
    Safe when several processes call it at once: one file wins, all read it."""
    if not path.exists():
        make_private_dir(path.parent)
        with contextlib.suppress(FileExistsError):  # another process made it first; use theirs
            write_file(path, make(), exclusive=True)
    return path.read_bytes()


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, ``AB:CD:…`` as openssl prints it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())


# ------------------------------------------------------------------ the authority


@dataclass(frozen=True)
class CertificateAuthority:
    """`chain` runs from the signing certificate up to and including the root (just the root
    when the root signs); `key_path` is where the signing key is kept."""

    signing_key: SigningKey
    chain: tuple[x509.Certificate, ...]
    key_path: Path

    @property
    def signing_cert(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]

    def sign(
        self,
        csr: x509.CertificateSigningRequest,
        identity: str,
        ttl_seconds: int,
        now: datetime.datetime,
        *,
        max_ttl_seconds: int = MAX_WORKLOAD_TTL,
    ) -> list[bytes]:
        """A workload certificate for `identity` (a CSR that passed `check_csr`), valid from
        60 s before `now` for `ttl_seconds` but never past the signing certificate. Returns PEM:
        leaf, intermediates, root last (as Istio's CA answers)."""
        if ttl_seconds <= 0:
            raise CsrRefused(f"requested lifetime {ttl_seconds}s is not positive", kind="ttl")
        if ttl_seconds > max_ttl_seconds:
            raise CsrRefused(
                f"requested lifetime {ttl_seconds}s is longer than the maximum {max_ttl_seconds}s", kind="ttl"
            )
        builder = (
            self._leaf_builder(csr.public_key(), now, ttl_seconds)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True
            )  # the subject is empty, so the SAN is critical (RFC 5280)
            .add_extension(LEAF_KEY_USAGE, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        return self._finish(builder.subject_name(x509.Name([])))

    def issue_server_certificate(
        self,
        dns_names: tuple[str, ...] = SERVER_DNS_NAMES,
        ttl_seconds: int = SERVER_CERT_TTL,
        now: datetime.datetime | None = None,
    ) -> tuple[bytes, list[bytes]]:
        """A new key and a TLS server certificate for the control plane itself:
        (PEM key, PEM chain leaf first, root last)."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            self._leaf_builder(key.public_key(), now or _utcnow(), ttl_seconds)
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "plait"),
                        x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0]),
                    ]
                )
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .add_extension(LEAF_KEY_USAGE, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        return key_pem(key), self._finish(builder)

    def _leaf_builder(self, public_key, now: datetime.datetime, ttl_seconds: int) -> x509.CertificateBuilder:
        not_after = min(now + datetime.timedelta(seconds=ttl_seconds), self.signing_cert.not_valid_after_utc)
        if not_after <= now:
            raise CaError(
                f"the CA certificate expired on {self.signing_cert.not_valid_after_utc:%Y-%m-%d %H:%M} "
                "UTC; give the control plane a new CA"
            )
        return (
            x509.CertificateBuilder()
            .issuer_name(self.signing_cert.subject)
            .public_key(public_key)
            .serial_number(secrets.randbits(128) or 1)
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.signing_key.public_key()), critical=False
            )
        )

    def _finish(self, builder: x509.CertificateBuilder) -> list[bytes]:
        leaf = builder.sign(self.signing_key, _hash_for(self.signing_key))
        return [pem(leaf)] + [pem(c) for c in self.chain]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _hash_for(key: SigningKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


# ------------------------------------------------------------------ CSR checks


def check_csr(csr_pem: bytes, identity: str) -> x509.CertificateSigningRequest:
    """The parsed CSR if it asks for exactly `identity` (its only subjectAltName, a URI) with a
    strong enough key and a valid signature; CsrRefused saying why not otherwise."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        valid, key = csr.is_signature_valid, csr.public_key()
        names = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        raise CsrRefused(f"the CSR has no subjectAltName; it must name {identity} as its only URI") from None
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CsrRefused(f"not a PEM certificate signing request plait can read ({error})") from None
    if not valid:
        raise CsrRefused("the CSR's signature does not verify with its own public key")
    _check_key(key)
    asked = [_describe_name(n) for n in names]
    if any(name != x509.UniformResourceIdentifier(identity) for name in names):
        raise CsrRefused(
            f"the CSR asks for {', '.join(asked)}; this caller may only have {identity}", kind="wrong_identity"
        )
    if len(names) != 1:
        raise CsrRefused(f"the CSR names {identity} {len(names)} times; name it once")
    return csr


def _check_key(key) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < RSA_MIN_BITS:
            raise CsrRefused(
                f"RSA key of {key.key_size} bits is too weak; use at least {RSA_MIN_BITS} bits or EC P-256"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_CURVES):
            raise CsrRefused(f"EC curve {key.curve.name} is not accepted; use P-256 or P-384")
    else:
        raise CsrRefused(f"{type(key).__name__} keys are not accepted; use EC P-256, P-384 or RSA >= 2048")


def _describe_name(name: x509.GeneralName) -> str:
    kinds = {x509.UniformResourceIdentifier: "URI", x509.DNSName: "DNS", x509.IPAddress: "IP", x509.RFC822Name: "email"}
    return f"{kinds.get(type(name), type(name).__name__)}:{name.value}"


# ------------------------------------------------------------------ loading and creating


def load_or_create(
    ca_dir: Path, *, cacerts_dir: Path | None = None, trust_domain: str = TRUST_DOMAIN
) -> CertificateAuthority:
    """The plug-in CA in `cacerts_dir` if given, else the self-signed root kept in `ca_dir`
    (generated on first use). Writes the root to ``ca_dir/root-cert.pem``. CaError if the files
    are unusable."""
    ca_dir = Path(ca_dir)
    make_private_dir(ca_dir)
    authority = _load_plugin(Path(cacerts_dir)) if cacerts_dir else _load_or_create_root(ca_dir, trust_domain)
    root_file = ca_dir / "root-cert.pem"
    if not root_file.exists() or root_file.read_bytes() != pem(authority.root):
        write_file(root_file, pem(authority.root), mode=0o644)
    return authority


def _load_or_create_root(ca_dir: Path, trust_domain: str) -> CertificateAuthority:
    cert_file, key_file = ca_dir / "ca-cert.pem", ca_dir / "ca-key.pem"
    if not cert_file.exists():
        key, cert = generate_root(trust_domain)
        write_file(key_file, key_pem(key))
        write_file(cert_file, pem(cert), mode=0o644)
        return CertificateAuthority(key, (cert,), key_file)
    if not key_file.exists():
        raise CaError(
            f"{cert_file} exists but its key {key_file} does not; restore the key, or remove "
            f"{ca_dir} to start a new root (every workload then needs new certificates)"
        )
    cert = _read_certs(cert_file)[0]
    key = _read_key(key_file)
    _check_pair(cert, key, cert_file, key_file)
    _check_ca(cert, cert_file)
    return CertificateAuthority(key, (cert,), key_file)


def generate_root(
    trust_domain: str = TRUST_DOMAIN, now: datetime.datetime | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new self-signed root: EC P-256, 10 years, ``O=plait, CN=plait root CA <trust domain>``."""
    now = now or _utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "plait"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"plait root CA {trust_domain}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ROOT_TTL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
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
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _load_plugin(cacerts: Path) -> CertificateAuthority:
    """Istio's plug-in CA files, checked: the key matches ca-cert, ca-cert is a CA, and ca-cert
    leads to root-cert through cert-chain."""
    required = PLUGIN_FILES[:3]
    missing = [n for n in required if not (cacerts / n).is_file()]
    if missing:
        raise CaError(
            f"{cacerts}: missing {', '.join(missing)}; a plug-in CA directory holds Istio's "
            f"{', '.join(PLUGIN_FILES)} (cert-chain.pem may be left out when root-cert.pem "
            "signed ca-cert.pem)"
        )
    cert_file, key_file, root_file = (cacerts / n for n in required)
    cert, key, root = _read_certs(cert_file)[0], _read_key(key_file), _read_certs(root_file)[0]
    _check_pair(cert, key, cert_file, key_file)
    _check_ca(cert, cert_file)
    _check_ca(root, root_file)
    chain_file = cacerts / "cert-chain.pem"
    pool = _read_certs(chain_file) if chain_file.is_file() else []
    return CertificateAuthority(key, _path_to_root(cert, root, pool, cacerts), key_file)


def _path_to_root(
    cert: x509.Certificate, root: x509.Certificate, pool: list[x509.Certificate], cacerts: Path
) -> tuple[x509.Certificate, ...]:
    """ca-cert, the intermediates that link it to root (taken from cert-chain.pem), root."""
    path = [cert]
    while path[-1] != root:
        current = path[-1]
        if _issued_by(current, root):
            path.append(root)
            break
        issuer = next((c for c in pool if c not in path and c != root and _issued_by(current, c)), None)
        if issuer is None:
            raise CaError(
                f"{cacerts}: '{current.subject.rfc4514_string()}' was not issued by root-cert.pem, "
                "and cert-chain.pem holds no certificate that issued it; cert-chain.pem must hold the "
                "chain from ca-cert.pem up to root-cert.pem"
            )
        path.append(issuer)
    return tuple(path)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _read_certs(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError:
        raise CaError(f"{path}: not a PEM certificate") from None


def _read_key(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:
        raise CaError(
            f"{path}: the key is encrypted; give plait the unencrypted key (as in Istio's cacerts "
            "secret) and protect the file with permissions 0600"
        ) from None
    except ValueError:
        raise CaError(f"{path}: not a PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CaError(f"{path}: a {type(key).__name__}; plait signs with EC or RSA keys")
    return key


def _check_pair(cert: x509.Certificate, key: SigningKey, cert_file: Path, key_file: Path) -> None:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise CaError(f"{key_file} is not the key of {cert_file}; put the matching certificate and key together")


def _check_ca(cert: x509.Certificate, path: Path) -> None:
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        raise CaError(
            f"{path}: '{cert.subject.rfc4514_string()}' is not a CA certificate (basicConstraints "
            "CA:TRUE is missing); use a CA certificate made for signing"
        )
    if cert.not_valid_after_utc <= _utcnow():
        raise CaError(f"{path}: expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; renew it")
