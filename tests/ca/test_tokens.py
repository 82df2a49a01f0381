"""Pod tokens (Kubernetes service-account token shape, HS256) and Istio's CA messages on the wire."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading

import pytest
from google.protobuf import struct_pb2

from plait.ca import wire
from plait.ca.tokens import InvalidToken, TokenIdentity, TokenIssuer, bearer_token, token_key_path

NOW = 1_900_000_000


@pytest.fixture
def issuer(tmp_path):
    return TokenIssuer.load_or_create(token_key_path(tmp_path))


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def with_claims(token: str, **changes) -> str:
    header, _, signature = token.split(".")
    payload = base64.urlsafe_b64encode(json.dumps({**claims_of(token), **changes}).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def test_issue_and_verify(issuer):
    token = issuer.issue("default", "bookinfo-productpage", "productpage-v1-0", ttl_seconds=3600, now=NOW)
    assert issuer.verify(token, now=NOW + 10) == TokenIdentity("default", "bookinfo-productpage", "productpage-v1-0")
    assert claims_of(token) == {
        "iss": "plait/local",
        "sub": "system:serviceaccount:default:bookinfo-productpage",
        "aud": ["istio-ca"],
        "iat": NOW,
        "exp": NOW + 3600,
        "kubernetes.io": {
            "namespace": "default",
            "serviceaccount": {"name": "bookinfo-productpage"},
            "pod": {"name": "productpage-v1-0"},
        },
    }


def test_default_lifetime_is_a_year(issuer):
    claims = claims_of(issuer.issue("default", "reviews", "reviews-v1-0", now=NOW))
    assert claims["exp"] - claims["iat"] == 365 * 86400


@pytest.mark.parametrize(
    "alter, reason",
    [
        (
            lambda t: with_claims(
                t,
                **{
                    "kubernetes.io": {
                        "namespace": "default",
                        "serviceaccount": {"name": "reviews"},
                        "pod": {"name": "x"},
                    }
                },
            ),
            "bad signature",
        ),
        (lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), "bad signature"),
        (lambda t: t.rsplit(".", 1)[0], "not a JWT"),
        (lambda t: "***." + t.split(".", 1)[1], "not a JWT"),
        (lambda t: "", "not a JWT"),
    ],
    ids=["claims-changed", "signature-changed", "no-signature", "bad-base64", "empty"],
)
def test_altered_tokens_are_refused(issuer, alter, reason):
    token = issuer.issue("default", "productpage", "productpage-v1-0", now=NOW)
    with pytest.raises(InvalidToken, match=reason):
        issuer.verify(alter(token), now=NOW)


def test_expired_token(issuer):
    token = issuer.issue("default", "productpage", "p", ttl_seconds=60, now=NOW)
    issuer.verify(token, now=NOW + 59)
    with pytest.raises(InvalidToken, match="expired 1s ago"):
        issuer.verify(token, now=NOW + 61)


def test_token_from_another_key(issuer, tmp_path):
    other = TokenIssuer.load_or_create(tmp_path / "other" / "key")
    with pytest.raises(InvalidToken, match="bad signature"):
        issuer.verify(other.issue("default", "productpage", "p", now=NOW), now=NOW)


def test_wrong_audience_and_algorithm():
    """Tokens signed with the right key (by hand here) but for another audience, or unsigned."""
    key = b"k" * 32
    issuer = TokenIssuer(key)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64(
        json.dumps(claims_of(issuer.issue("default", "productpage", "p", now=NOW)) | {"aud": ["kubernetes"]}).encode()
    )
    signature = b64(hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    with pytest.raises(InvalidToken, match="wrong audience"):
        issuer.verify(f"{header}.{payload}.{signature}", now=NOW)
    with pytest.raises(InvalidToken, match="unsupported JWT algorithm"):
        issuer.verify(b64(b'{"alg":"none"}') + f".{payload}.", now=NOW)


def test_names_must_be_kubernetes_names(issuer):
    with pytest.raises(ValueError, match="namespace 'ns/sa/x' is not a Kubernetes name"):
        issuer.issue("ns/sa/x", "productpage", "p")


def test_key_file_is_created_once_owner_only_even_by_racing_callers(tmp_path):
    path = token_key_path(tmp_path / "state")
    issuers: list[TokenIssuer] = []
    threads = [threading.Thread(target=lambda: issuers.append(TokenIssuer.load_or_create(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_bytes()) == 32
    assert [p.name for p in path.parent.iterdir()] == ["token-signing.key"]
    token = issuers[0].issue("default", "productpage", "p")
    assert all(i.verify(token) for i in issuers)


def test_bearer_token():
    assert bearer_token({"authorization": "Bearer abc.def.ghi"}) == "abc.def.ghi"
    assert bearer_token({"authorization": "bearer abc"}) == "abc"
    assert bearer_token({"authorization": "Basic abc"}) is None
    assert bearer_token({"authorization": "Bearer "}) is None
    assert bearer_token({}) is None


# ------------------------------------------------------------------ wire


def test_wire_messages_round_trip_with_istios_field_numbers():
    request = wire.IstioCertificateRequest(csr="-----BEGIN CERTIFICATE REQUEST-----", validity_duration=86400)
    request.metadata.update({"WorkloadName": "productpage-v1"})
    data = request.SerializeToString()
    assert data[0] == (1 << 3 | 2)  # csr: field 1, length-delimited
    assert bytes([3 << 3 | 0, 0x80, 0xA3, 0x05]) in data  # validity_duration: field 3, varint 86400
    assert bytes([4 << 3 | 2]) in data  # metadata: field 4
    decoded = wire.IstioCertificateRequest.FromString(data)
    assert decoded == request
    assert isinstance(decoded.metadata, struct_pb2.Struct)

    response = wire.IstioCertificateResponse(cert_chain=["leaf", "intermediate", "root"])
    assert response.SerializeToString() == b"\n\x04leaf\n\x0cintermediate\n\x04root"
    assert list(wire.IstioCertificateResponse.FromString(response.SerializeToString()).cert_chain) == [
        "leaf",
        "intermediate",
        "root",
    ]
    assert wire.METHOD_PATH == "/istio.v1.auth.IstioCertificateService/CreateCertificate"
