"""The CA on Kubernetes, against a real API server (kube-testenv, API-only mode): callers proved by
TokenReview of their service-account tokens (plait.ca.kubeauth), and the CA's key from the
Secrets ``cacerts`` / ``istio-ca-secret`` (plait.ca.kubesecrets).

Tokens are made as the kubelet makes a pod's projected token: the TokenRequest API, audience
istio-ca, bound to a pod object (which never runs here)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
from pathlib import Path

import grpc
import pytest
from ca_pki import OperatorPki, key_pem, pem, utcnow, verified_identity
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from plait.ca import wire
from plait.ca.authority import CaError, load_or_create
from plait.ca.client import CertificateRefused, new_key_and_csr, request_certificate
from plait.ca.kubeauth import TokenReviewAuthenticator
from plait.ca.kubesecrets import load_cluster_ca
from plait.ca.service import ads_authenticator, serve_ca
from plait.ca.tokens import AuthenticatorUnavailable
from plait.model import Proxy
from plait.testing.ads_client import make_node
from plait.testing.kube import KubeTestenv, require_testenv
from plait.testing.kubeapi import api_client, ensure_namespace, legacy_token, pod_token
from plait.testing.live import free_port

TIMEOUT = 60
A_IN_X = "spiffe://cluster.local/ns/x/sa/a"


@pytest.fixture(scope="module")
def cluster():
    env = KubeTestenv(require_testenv(), prefix="plait-kube-ca-").start()
    try:
        yield env
    finally:
        env.remove()


def on_cluster(cluster: KubeTestenv, test) -> None:
    async def run():
        api = await api_client(cluster.kubeconfig)
        try:
            await test(api)
        finally:
            await api.close()

    asyncio.run(asyncio.wait_for(run(), TIMEOUT))


class KubeCa:
    """The CA served over TLS on 127.0.0.1, checking callers with TokenReview."""

    def __init__(self, authority, address: str, registry: CollectorRegistry):
        self.authority, self.address, self.registry = authority, address, registry

    async def request(self, identity: str, token: str) -> list[bytes]:
        _, csr = new_key_and_csr(identity)
        return await request_certificate(
            self.address, root_pem=pem(self.authority.root), token=token, csr_pem=csr, ttl_seconds=3600, timeout=20
        )

    async def refusal(self, identity: str, token: str) -> str:
        with pytest.raises(CertificateRefused) as refused:
            await self.request(identity, token)
        return str(refused.value)

    def refused(self, reason: str) -> float:
        return self.registry.get_sample_value("plait_ca_requests_refused_total", {"reason": reason}) or 0.0


async def serving(api, tmp_path: Path, test) -> None:
    authority = load_or_create(tmp_path / "ca")
    registry = CollectorRegistry()
    server = await serve_ca(authority, TokenReviewAuthenticator(api), "127.0.0.1", 0, registry=registry)
    try:
        await test(KubeCa(authority, f"127.0.0.1:{server.bound_port}", registry))
    finally:
        await server.stop(0)


def test_a_pods_projected_token_gets_exactly_its_own_identity(cluster, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="plait.ca.service")

    async def test(api):
        token = await pod_token(api, "x", "a", pod="a-0")

        async def calls(ca: KubeCa):
            chain = await ca.request(A_IN_X, token)
            assert verified_identity(chain, pem(ca.authority.root), utcnow()) == [A_IN_X]
            message = await ca.refusal("spiffe://cluster.local/ns/x/sa/b", token)
            assert f"this caller may only have {A_IN_X}" in message
            assert f"may only have {A_IN_X}" in await ca.refusal("spiffe://cluster.local/ns/y/sa/a", token)
            assert ca.refused("wrong_identity") == 2

        await serving(api, tmp_path, calls)

    on_cluster(cluster, test)
    assert "issued a certificate for spiffe://cluster.local/ns/x/sa/a to x/a (pod a-0)" in caplog.text


def test_tokens_the_api_server_does_not_vouch_for_istio_ca_are_unauthenticated(cluster, tmp_path):
    async def test(api):
        api_audience = await pod_token(api, "x", "a", audiences=())  # the API server's own audience
        other_audience = await pod_token(api, "x", "a", audiences=("vault",))
        legacy = await legacy_token(api, "x", "a", Path(cluster.dir) / "sa.key")

        async def calls(ca: KubeCa):
            assert "invalid bearer token" in await ca.refusal(A_IN_X, "garbage")
            for token in (api_audience, other_audience, legacy):
                message = await ca.refusal(A_IN_X, token)
                assert 'is invalid for the target audiences ["istio-ca"]' in message
            assert ca.refused("unauthenticated") == 4

        await serving(api, tmp_path, calls)
        # the legacy token itself is good: the API server authenticates it without an audience
        review = await client.AuthenticationV1Api(api).create_token_review({"spec": {"token": legacy}})
        assert review.status.authenticated and review.status.user.username == "system:serviceaccount:x:a"

    on_cluster(cluster, test)


def test_the_grpc_status_codes(cluster, tmp_path):
    async def test(api):
        token = await pod_token(api, "x", "a")

        async def calls(ca: KubeCa):
            credentials = grpc.ssl_channel_credentials(root_certificates=pem(ca.authority.root))
            async with grpc.aio.secure_channel(
                ca.address, credentials, options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
            ) as channel:
                call = channel.unary_unary(
                    wire.METHOD_PATH,
                    request_serializer=wire.IstioCertificateRequest.SerializeToString,
                    response_deserializer=wire.IstioCertificateResponse.FromString,
                )
                for identity, bearer, code in (
                    (A_IN_X, "garbage", grpc.StatusCode.UNAUTHENTICATED),
                    ("spiffe://cluster.local/ns/x/sa/b", token, grpc.StatusCode.PERMISSION_DENIED),
                ):
                    request = wire.IstioCertificateRequest(csr=new_key_and_csr(identity)[1].decode())
                    with pytest.raises(grpc.aio.AioRpcError) as error:
                        await call(request, metadata=(("authorization", f"Bearer {bearer}"),), timeout=20)
                    assert error.value.code() == code

        await serving(api, tmp_path, calls)

    on_cluster(cluster, test)


def test_an_unreachable_api_server_is_unavailable_not_a_refusal():
    async def test():
        configuration = client.Configuration(host=f"https://127.0.0.1:{free_port()}")
        async with client.ApiClient(configuration) as api:
            with pytest.raises(AuthenticatorUnavailable, match="did not answer the TokenReview"):
                await TokenReviewAuthenticator(api, timeout=5).authenticate("x.y.z")

    asyncio.run(asyncio.wait_for(test(), TIMEOUT))


def test_xds_on_the_tls_port_takes_the_pods_token_for_its_own_node(cluster):
    async def test(api):
        token = await pod_token(api, "x", "a", pod="a-1")
        check = ads_authenticator(TokenReviewAuthenticator(api))
        node = make_node(Proxy(kind="sidecar", ip="10.1.0.9", name="a-1", namespace="x", service_account="a"))
        other = make_node(Proxy(kind="sidecar", ip="10.1.0.8", name="b-1", namespace="x", service_account="b"))
        assert await check({"authorization": f"Bearer {token}"}, node) is None
        refused = await check({"authorization": f"Bearer {token}"}, other)
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED and "the token is for x/a" in refused.reason
        assert (await check({"authorization": "Bearer nope"}, node)).code == grpc.StatusCode.UNAUTHENTICATED

    on_cluster(cluster, test)


# ------------------------------------------------------------------ the CA's key from Secrets


def test_without_secrets_a_root_is_generated_once_and_shared_by_every_replica(cluster, tmp_path):
    async def test(api):
        await ensure_namespace(api, "plait-a")
        first, where = await load_cluster_ca(api, tmp_path / "replica-1" / "ca", namespace="plait-a")
        assert where == "Secret plait-a/istio-ca-secret (new)"
        second, where = await load_cluster_ca(api, tmp_path / "replica-2" / "ca", namespace="plait-a")
        assert where == "Secret plait-a/istio-ca-secret" and second.root == first.root
        assert second.signing_key.private_numbers() == first.signing_key.private_numbers()
        secret = await client.CoreV1Api(api).read_namespaced_secret("istio-ca-secret", "plait-a")
        assert secret.type == "istio.io/ca-root" and set(secret.data) == {"ca-cert.pem", "ca-key.pem", "root-cert.pem"}
        assert (tmp_path / "replica-2" / "ca" / "root-cert.pem").read_bytes() == pem(first.root)
        key_file = tmp_path / "replica-2" / "ca" / "istio-ca-secret" / "ca-key.pem"
        assert key_file.stat().st_mode & 0o077 == 0

    on_cluster(cluster, test)


def test_two_replicas_starting_at_once_agree_on_one_root(cluster, tmp_path):
    async def test(api):
        await ensure_namespace(api, "plait-b")
        results = await asyncio.gather(
            *(load_cluster_ca(api, tmp_path / f"r{i}" / "ca", namespace="plait-b") for i in range(3))
        )
        assert len({authority.root for authority, _ in results}) == 1
        assert sorted(where for _, where in results).count("Secret plait-b/istio-ca-secret (new)") == 1

    on_cluster(cluster, test)


def data(files: dict[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(content).decode() for name, content in files.items()}


def test_a_plug_in_ca_in_secret_cacerts_is_used(cluster, tmp_path):
    pki = OperatorPki()

    async def test(api):
        await ensure_namespace(api, "plait-c")
        files = {
            "ca-cert.pem": pem(pki.intermediate),
            "ca-key.pem": key_pem(pki.intermediate_key),
            "root-cert.pem": pem(pki.root),
            "cert-chain.pem": pem(pki.intermediate) + pem(pki.root),
        }
        await client.CoreV1Api(api).create_namespaced_secret(
            "plait-c", {"metadata": {"name": "cacerts"}, "data": data(files)}
        )
        authority, where = await load_cluster_ca(api, tmp_path / "ca", namespace="plait-c")
        assert where == "Secret plait-c/cacerts (plug-in CA)"
        assert authority.chain == (pki.intermediate, pki.root)
        token = await pod_token(api, "x", "a")
        registry = CollectorRegistry()
        server = await serve_ca(authority, TokenReviewAuthenticator(api), "127.0.0.1", 0, registry=registry)
        try:
            chain = await KubeCa(authority, f"127.0.0.1:{server.bound_port}", registry).request(A_IN_X, token)
        finally:
            await server.stop(0)
        assert verified_identity(chain, pem(pki.root), utcnow()) == [A_IN_X]
        secrets = await client.CoreV1Api(api).list_namespaced_secret("plait-c")
        assert [s.metadata.name for s in secrets.items if s.metadata.name.startswith("istio")] == []

    on_cluster(cluster, test)


def test_a_broken_cacerts_secret_is_an_error_naming_it(cluster, tmp_path):
    pki = OperatorPki()

    async def test(api):
        core = client.CoreV1Api(api)
        await ensure_namespace(api, "plait-d")
        await core.create_namespaced_secret(
            "plait-d", {"metadata": {"name": "cacerts"}, "data": data({"ca-cert.pem": pem(pki.intermediate)})}
        )
        with pytest.raises(CaError, match="Secret plait-d/cacerts has ca-cert.pem but not ca-key.pem"):
            await load_cluster_ca(api, tmp_path / "ca", namespace="plait-d")
        wrong_key = {
            "ca-cert.pem": pem(pki.intermediate),
            "ca-key.pem": key_pem(pki.root_key),
            "root-cert.pem": pem(pki.root),
        }
        await core.replace_namespaced_secret(
            "cacerts", "plait-d", {"metadata": {"name": "cacerts"}, "data": data(wrong_key)}
        )
        with pytest.raises(CaError, match=r"Secret plait-d/cacerts \(copied to .*\): .*ca-key.pem is not the key of"):
            await load_cluster_ca(api, tmp_path / "ca", namespace="plait-d")
        await core.replace_namespaced_secret(
            "cacerts", "plait-d", {"metadata": {"name": "cacerts"}, "data": data({"root-cert.pem": pem(pki.root)})}
        )
        _, where = await load_cluster_ca(api, tmp_path / "ca", namespace="plait-d")  # no signing CA: passed over
        assert where == "Secret plait-d/istio-ca-secret (new)"

    on_cluster(cluster, test)


def test_without_rbac_for_secrets_the_error_says_what_is_needed(cluster, tmp_path):
    """A user the API server knows (a client certificate from the cluster's CA) without any role."""
    ca_cert = x509.load_pem_x509_certificate((Path(cluster.dir) / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((Path(cluster.dir) / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "nobody.crt").write_bytes(pem(cert))
    (tmp_path / "nobody.key").write_bytes(key_pem(key))

    async def test():
        configuration = client.Configuration(host=cluster.env["KUBE_TESTENV_SERVER"])
        configuration.ssl_ca_cert = str(Path(cluster.dir) / "ca.crt")
        configuration.cert_file, configuration.key_file = str(tmp_path / "nobody.crt"), str(tmp_path / "nobody.key")
        async with client.ApiClient(configuration) as api:
            with pytest.raises(
                CaError,
                match="403 Forbidden; the control plane needs get and create on secrets in namespace istio-system",
            ):
                await load_cluster_ca(api, tmp_path / "ca", namespace="istio-system")

    asyncio.run(asyncio.wait_for(test(), TIMEOUT))
