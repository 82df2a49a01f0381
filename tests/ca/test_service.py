"""The CA's gRPC service over real TLS on 127.0.0.1, called with plait's own client: who gets a
certificate, who is refused, with which status, and what is logged and counted."""

from __future__ import annotations

import asyncio
import datetime
import logging

import grpc
import pytest
from ca_pki import PRODUCTPAGE, REVIEWS, pem, utcnow, verified_identity
from cryptography import x509
from prometheus_client import CollectorRegistry

from plait.ca import wire
from plait.ca.authority import load_or_create
from plait.ca.client import CaUnavailable, CertificateRefused, new_key_and_csr, request_certificate
from plait.ca.service import ads_authenticator, serve_ca
from plait.ca.tokens import TokenIssuer
from plait.model import Proxy
from plait.testing.ads_client import make_node
from plait.testing.live import free_port

TIMEOUT = 30


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    return load_or_create(tmp_path_factory.mktemp("state") / "ca")


@pytest.fixture
def tokens():
    return TokenIssuer(b"t" * 32)


class Ca:
    def __init__(self, authority, tokens, address: str, registry: CollectorRegistry):
        self.authority, self.tokens, self.address, self.registry = authority, tokens, address, registry
        self.root_pem = pem(authority.root)

    async def request(self, identity: str, *, token: str | None = None, ttl: int = 0, **kw) -> list[bytes]:
        token = token or self.tokens.issue("default", "productpage", "productpage-v1-0")
        _, csr = new_key_and_csr(identity)
        return await request_certificate(
            self.address, root_pem=self.root_pem, token=token, csr_pem=csr, ttl_seconds=ttl, **kw
        )

    async def status_of(self, metadata: tuple, identity: str = PRODUCTPAGE) -> grpc.StatusCode:
        """The status of a raw call with this metadata (no client-side mapping of errors)."""
        credentials = grpc.ssl_channel_credentials(root_certificates=self.root_pem)
        async with grpc.aio.secure_channel(
            self.address, credentials, options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
        ) as channel:
            call = channel.unary_unary(
                wire.METHOD_PATH,
                request_serializer=wire.IstioCertificateRequest.SerializeToString,
                response_deserializer=wire.IstioCertificateResponse.FromString,
            )
            request = wire.IstioCertificateRequest(csr=new_key_and_csr(identity)[1].decode())
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call(request, metadata=metadata, timeout=10)
            return error.value.code()

    def count(self, name: str, **labels) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def scenario(authority, tokens, test, **serve):
    async def run():
        registry = CollectorRegistry()
        server = await serve_ca(authority, tokens, "127.0.0.1", 0, registry=registry, **serve)
        try:
            await test(Ca(authority, tokens, f"127.0.0.1:{server.bound_port}", registry))
        finally:
            await server.stop(0)

    asyncio.run(asyncio.wait_for(run(), TIMEOUT))


def test_a_pod_gets_a_certificate_for_its_own_identity(authority, tokens):
    async def test(ca: Ca):
        before = utcnow()
        chain = await ca.request(PRODUCTPAGE)
        assert verified_identity(chain, ca.root_pem, utcnow()) == [PRODUCTPAGE]
        assert chain[-1] == ca.root_pem
        leaf = x509.load_pem_x509_certificate(chain[0])
        assert abs(leaf.not_valid_after_utc - before - datetime.timedelta(hours=24)) < datetime.timedelta(seconds=5)

        short = x509.load_pem_x509_certificate((await ca.request(PRODUCTPAGE, ttl=600))[0])
        assert short.not_valid_after_utc - short.not_valid_before_utc == datetime.timedelta(seconds=660)
        assert ca.count("plait_ca_certificates_issued_total") == 2

    scenario(authority, tokens, test)


def test_a_pod_asking_for_another_identity_is_refused_and_logged(authority, tokens, caplog):
    async def test(ca: Ca):
        with (
            caplog.at_level(logging.WARNING, logger="plait.ca.service"),
            pytest.raises(CertificateRefused, match=f"asks for URI:{REVIEWS}; this caller may only have {PRODUCTPAGE}"),
        ):
            await ca.request(REVIEWS)
        token = ca.tokens.issue("default", "productpage", "productpage-v1-0")
        assert await ca.status_of((("authorization", f"Bearer {token}"),), REVIEWS) == grpc.StatusCode.PERMISSION_DENIED
        assert ca.count("plait_ca_requests_refused_total", reason="wrong_identity") == 2
        assert ca.count("plait_ca_certificates_issued_total") == 0

    scenario(authority, tokens, test)
    refusal = caplog.records[0]
    assert refusal.levelno == logging.WARNING
    message = refusal.getMessage()
    assert "wrong_identity" in message and "default/productpage (pod productpage-v1-0)" in message
    assert "ipv4:127.0.0.1:" in message and REVIEWS in message


def test_callers_without_a_valid_token_are_unauthenticated(authority, tokens, tmp_path):
    async def test(ca: Ca):
        assert await ca.status_of(()) == grpc.StatusCode.UNAUTHENTICATED
        token = ca.tokens.issue("default", "productpage", "productpage-v1-0")
        tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        assert await ca.status_of((("authorization", f"Bearer {tampered}"),)) == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(CertificateRefused, match="invalid token: bad signature"):
            await ca.request(PRODUCTPAGE, token=tampered)
        stranger = TokenIssuer(b"s" * 32).issue("default", "productpage", "productpage-v1-0")
        with pytest.raises(CertificateRefused, match="invalid token: bad signature"):
            await ca.request(PRODUCTPAGE, token=stranger)
        expired = ca.tokens.issue("default", "productpage", "p", ttl_seconds=1, now=1_000_000)
        with pytest.raises(CertificateRefused, match="invalid token: expired"):
            await ca.request(PRODUCTPAGE, token=expired)
        assert ca.count("plait_ca_requests_refused_total", reason="unauthenticated") == 5

    scenario(authority, tokens, test)


def test_lifetime_limits(authority, tokens):
    async def test(ca: Ca):
        with pytest.raises(CertificateRefused, match="requested lifetime 7201s is longer than the maximum 7200s"):
            await ca.request(PRODUCTPAGE, ttl=7201)
        leaf = x509.load_pem_x509_certificate((await ca.request(PRODUCTPAGE))[0])
        assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == datetime.timedelta(seconds=660)
        assert ca.count("plait_ca_requests_refused_total", reason="ttl") == 1

    scenario(authority, tokens, test, default_ttl=600, max_ttl=7200)


def test_the_client_checks_the_cas_name_and_root(authority, tokens, tmp_path):
    async def test(ca: Ca):
        with pytest.raises(CaUnavailable, match="UNAVAILABLE"):
            await ca.request(PRODUCTPAGE, server_name="example.com", timeout=5)
        other_root = load_or_create(tmp_path / "other").root
        ca.root_pem = pem(other_root)
        with pytest.raises(CaUnavailable, match="UNAVAILABLE"):
            await ca.request(PRODUCTPAGE, timeout=5)

    scenario(authority, tokens, test)


def test_no_ca_listening_is_unavailable(authority):
    async def test():
        _, csr = new_key_and_csr(PRODUCTPAGE)
        with pytest.raises(CaUnavailable, match="UNAVAILABLE|DEADLINE_EXCEEDED"):
            await request_certificate(
                f"127.0.0.1:{free_port()}",
                root_pem=pem(authority.root),
                token="t",
                csr_pem=csr,
                ttl_seconds=0,
                timeout=3,
            )

    asyncio.run(test())


# ------------------------------------------------------------------ the ADS check (--xds-auth strict)


def test_ads_authenticator(tokens):
    registry = CollectorRegistry()
    check = ads_authenticator(tokens, registry=registry)

    def authenticate(metadata, node):
        return asyncio.run(check(metadata, node))

    proxy = Proxy(
        kind="sidecar", ip="127.0.0.1", name="productpage-v1", namespace="default", service_account="productpage"
    )
    node = make_node(proxy)

    def bearer(namespace: str, service_account: str) -> dict[str, str]:
        return {"authorization": f"Bearer {tokens.issue(namespace, service_account, 'productpage-v1-0')}"}

    assert authenticate(bearer("default", "productpage"), node) is None
    assert authenticate({}, node).code == grpc.StatusCode.UNAUTHENTICATED
    assert authenticate({"authorization": "Bearer x.y.z"}, node).code == grpc.StatusCode.UNAUTHENTICATED
    assert authenticate(bearer("default", "reviews"), node).code == grpc.StatusCode.PERMISSION_DENIED
    assert authenticate(bearer("other", "productpage"), node).code == grpc.StatusCode.PERMISSION_DENIED

    metadata_says_other = make_node(proxy)
    metadata_says_other.metadata.fields["NAMESPACE"].string_value = "other"
    refused = authenticate(bearer("other", "productpage"), metadata_says_other)
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED and "namespace default and other" in refused.reason

    no_account = make_node(proxy)
    del no_account.metadata.fields["SERVICE_ACCOUNT"]  # the hub then treats it as "default", so must the check
    assert authenticate(bearer("default", "default"), no_account) is None
    assert authenticate(bearer("default", "productpage"), no_account).code == grpc.StatusCode.PERMISSION_DENIED

    assert registry.get_sample_value("plait_xds_rejected_streams_total", {"reason": "unauthenticated"}) == 2
    assert registry.get_sample_value("plait_xds_rejected_streams_total", {"reason": "permission_denied"}) == 4
