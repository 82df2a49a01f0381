"""The CA itself: its root (generated once, kept owner-only), Istio's plug-in CA files, which CSRs
it signs and what the certificates it issues contain."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from ca_pki import PRODUCTPAGE, REVIEWS, OperatorPki, ca_cert, csr, pem, uri, utcnow, verified_identity, weak_rsa_csr
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from plait.ca.authority import (
    MAX_WORKLOAD_TTL,
    SERVER_DNS_NAMES,
    CaError,
    CsrRefused,
    check_csr,
    load_or_create,
    root_cert_path,
)

HOUR = 3600


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    return load_or_create(tmp_path_factory.mktemp("state") / "ca")


def issue(authority, identity=PRODUCTPAGE, ttl=HOUR, now=None):
    return authority.sign(check_csr(csr(uri(identity)), identity), identity, ttl, now or utcnow())


# ------------------------------------------------------------------ the self-signed root


def test_root_is_generated_once_and_kept_owner_only(tmp_path):
    ca_dir = tmp_path / "state" / "ca"
    first = load_or_create(ca_dir)
    assert mode(ca_dir) == 0o700
    assert mode(ca_dir / "ca-key.pem") == 0o600
    assert first.key_path == ca_dir / "ca-key.pem"
    assert root_cert_path(tmp_path / "state").read_bytes() == pem(first.root)
    assert not [p for p in ca_dir.iterdir() if p.name.endswith(".tmp")]

    again = load_or_create(ca_dir)
    assert again.root == first.root
    assert again.signing_key.private_numbers() == first.signing_key.private_numbers()


def test_root_fields(authority):
    root = authority.root
    assert authority.chain == (root,)
    assert root.subject.rfc4514_string() == "CN=plait root CA cluster.local,O=plait"
    assert root.issuer == root.subject
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey) and root.public_key().curve.name == "secp256r1"
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert datetime.timedelta(days=3649) < lifetime < datetime.timedelta(days=3651)


def test_a_root_without_its_key_is_an_error_that_says_what_to_do(tmp_path):
    load_or_create(tmp_path / "ca")
    (tmp_path / "ca" / "ca-key.pem").unlink()
    with pytest.raises(
        CaError, match="ca-cert.pem exists but its key .*ca-key.pem does not; restore the key, or remove"
    ):
        load_or_create(tmp_path / "ca")


# ------------------------------------------------------------------ Istio's plug-in CA


def test_plugin_ca_signs_with_the_intermediate_and_chains_to_the_operators_root(tmp_path):
    pki = OperatorPki()
    authority = load_or_create(tmp_path / "state" / "ca", cacerts_dir=pki.write(tmp_path / "cacerts"))
    assert authority.chain == (pki.intermediate, pki.root)
    assert authority.key_path == tmp_path / "cacerts" / "ca-key.pem"
    assert not (tmp_path / "state" / "ca" / "ca-key.pem").exists()  # the operator's key is not copied
    assert root_cert_path(tmp_path / "state").read_bytes() == pem(pki.root)

    chain = issue(authority)
    assert [x509.load_pem_x509_certificate(c) for c in chain[1:]] == [pki.intermediate, pki.root]
    assert verified_identity(chain, pem(pki.root), utcnow()) == [PRODUCTPAGE]


def test_plugin_ca_without_cert_chain_when_the_root_signed_ca_cert(tmp_path):
    pki = OperatorPki()
    cacerts = pki.write(tmp_path / "cacerts")
    (cacerts / "cert-chain.pem").unlink()
    assert load_or_create(tmp_path / "ca", cacerts_dir=cacerts).chain == (pki.intermediate, pki.root)


def test_plugin_ca_with_a_key_that_is_not_ca_certs(tmp_path):
    cacerts = OperatorPki().write(tmp_path / "cacerts", key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CaError, match=r"ca-key.pem is not the key of .*ca-cert.pem"):
        load_or_create(tmp_path / "ca", cacerts_dir=cacerts)


def test_plugin_ca_whose_chain_does_not_reach_root_cert(tmp_path):
    pki, stranger = OperatorPki(), OperatorPki()
    cacerts = pki.write(tmp_path / "cacerts")
    (cacerts / "root-cert.pem").write_bytes(pem(stranger.root))
    with pytest.raises(CaError, match="was not issued by root-cert.pem.*cert-chain.pem must hold the chain"):
        load_or_create(tmp_path / "ca", cacerts_dir=cacerts)


def test_plugin_ca_cert_that_is_not_a_ca(tmp_path):
    pki = OperatorPki()
    leafish = ca_cert("not a CA", pki.intermediate_key, pki.root, pki.root_key, ca=False)
    cacerts = pki.write(tmp_path / "cacerts")
    (cacerts / "ca-cert.pem").write_bytes(pem(leafish))
    with pytest.raises(CaError, match="ca-cert.pem: 'CN=not a CA,O=example' is not a CA certificate"):
        load_or_create(tmp_path / "ca", cacerts_dir=cacerts)


def test_plugin_ca_with_missing_files(tmp_path):
    (tmp_path / "cacerts").mkdir()
    with pytest.raises(CaError, match="missing ca-cert.pem, ca-key.pem, root-cert.pem"):
        load_or_create(tmp_path / "ca", cacerts_dir=tmp_path / "cacerts")


# ------------------------------------------------------------------ CSR checks


@pytest.mark.parametrize(
    "pem_csr, kind, message",
    [
        (csr(uri(REVIEWS)), "wrong_identity", f"asks for URI:{REVIEWS}; this caller may only have {PRODUCTPAGE}"),
        (csr(uri(PRODUCTPAGE), x509.DNSName("reviews.default.svc")), "wrong_identity", "DNS:reviews.default.svc"),
        (csr(uri(PRODUCTPAGE), uri(REVIEWS)), "wrong_identity", f"URI:{PRODUCTPAGE}, URI:{REVIEWS}"),
        (csr(uri(PRODUCTPAGE), uri(PRODUCTPAGE)), "bad_csr", "2 times; name it once"),
        (csr(), "bad_csr", "no subjectAltName"),
        (weak_rsa_csr(PRODUCTPAGE), "bad_csr", "RSA key of 1024 bits is too weak"),
        (csr(uri(PRODUCTPAGE), key=ec.generate_private_key(ec.SECP521R1())), "bad_csr", "secp521r1 is not accepted"),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n",
            "bad_csr",
            "not a PEM certificate signing request",
        ),
    ],
    ids=["other-identity", "extra-dns", "two-uris", "same-uri-twice", "no-san", "rsa-1024", "p521", "garbage"],
)
def test_csrs_that_are_refused(pem_csr, kind, message):
    with pytest.raises(CsrRefused) as refused:
        check_csr(pem_csr, PRODUCTPAGE)
    assert refused.value.kind == kind
    assert message in refused.value.reason


def test_a_csr_whose_signature_does_not_verify_is_refused():
    der = bytearray(x509.load_pem_x509_csr(csr(uri(PRODUCTPAGE))).public_bytes(Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(Encoding.PEM)
    with pytest.raises(CsrRefused, match="signature does not verify"):
        check_csr(tampered, PRODUCTPAGE)


def test_good_csrs_are_accepted():
    assert check_csr(csr(uri(PRODUCTPAGE)), PRODUCTPAGE).is_signature_valid
    check_csr(csr(uri(PRODUCTPAGE), key=ec.generate_private_key(ec.SECP384R1())), PRODUCTPAGE)
    check_csr(csr(uri(PRODUCTPAGE), key=rsa.generate_private_key(public_exponent=65537, key_size=2048)), PRODUCTPAGE)


# ------------------------------------------------------------------ issued certificates


def test_leaf_fields(authority):
    now = utcnow().replace(microsecond=0)
    chain = issue(authority, ttl=24 * HOUR, now=now)
    assert chain[-1] == pem(authority.root)
    leaf = x509.load_pem_x509_certificate(chain[0])
    assert leaf.subject == x509.Name([])
    assert leaf.issuer == authority.root.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and list(san.value) == [uri(PRODUCTPAGE)]
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert leaf.not_valid_before_utc == now - datetime.timedelta(seconds=60)
    assert leaf.not_valid_after_utc == now + datetime.timedelta(hours=24)
    assert 0 < leaf.serial_number < 2**128
    assert verified_identity(chain, pem(authority.root), now) == [PRODUCTPAGE]


def test_serials_are_random(authority):
    serials = {x509.load_pem_x509_certificate(issue(authority)[0]).serial_number for _ in range(5)}
    assert len(serials) == 5


def test_lifetime_above_the_maximum_is_refused(authority):
    identity = PRODUCTPAGE
    request = check_csr(csr(uri(identity)), identity)
    with pytest.raises(CsrRefused, match="longer than the maximum") as refused:
        authority.sign(request, identity, MAX_WORKLOAD_TTL + 1, utcnow())
    assert refused.value.kind == "ttl"
    with pytest.raises(CsrRefused, match="longer than the maximum 7200s"):
        authority.sign(request, identity, 3 * HOUR, utcnow(), max_ttl_seconds=2 * HOUR)
    assert issue(authority, ttl=MAX_WORKLOAD_TTL)


def test_a_leaf_never_outlives_the_signing_certificate(authority):
    near_the_end = authority.root.not_valid_after_utc - datetime.timedelta(hours=1)
    leaf = x509.load_pem_x509_certificate(issue(authority, ttl=24 * HOUR, now=near_the_end)[0])
    assert leaf.not_valid_after_utc == authority.root.not_valid_after_utc


def test_the_control_planes_server_certificate(authority):
    key_pem, chain = authority.issue_server_certificate()
    leaf = x509.load_pem_x509_certificate(chain[0])
    key = serialization.load_pem_private_key(key_pem, None)
    assert leaf.public_key() == key.public_key()
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == list(SERVER_DNS_NAMES)
    assert chain[-1] == pem(authority.root)
    server = (
        x509.verification.PolicyBuilder()
        .store(x509.verification.Store([authority.root]))
        .build_server_verifier(x509.DNSName("istiod.istio-system.svc"))
    )
    assert server.verify(leaf, [])[-1] == authority.root


def test_a_revisions_control_plane_certificate_names_its_own_service_and_the_name_agents_check():
    from plait.ca.authority import control_plane_dns_names

    assert control_plane_dns_names() == SERVER_DNS_NAMES
    names = control_plane_dns_names("mesh", "canary")
    assert names[: len(SERVER_DNS_NAMES)] == SERVER_DNS_NAMES  # istiod.istio-system.svc: what agents verify
    assert names[len(SERVER_DNS_NAMES) :] == (
        "istiod.mesh.svc",
        "istiod.mesh.svc.cluster.local",
        "istiod-canary.mesh.svc",  # the revision's webhooks are called on its own Service
        "istiod-canary.mesh.svc.cluster.local",
    )
