"""The CA inside the real control plane: ``plait control-plane --xds-auth strict`` creates its CA
owner-only in --state-dir, answers CSRs on --ca-port, serves xDS there too over TLS (its
certificate names istiod.istio-system.svc and chains to the root), admits an ADS stream only
with a pod token that matches the node (an accepted stream is checked with the in-process ADS
client, which sends the token as gRPC metadata through a client interceptor, as Envoy sends its
initial_metadata; refused streams with a bare stream, which shows how it ended), and opens no
plaintext xDS port.
Bad plug-in CA files stop the command with a clear error."""

from __future__ import annotations

import asyncio
import socket
import stat
import urllib.request

import grpc
import pytest
from ca_pki import OperatorPki, utcnow, verified_identity
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.service.discovery.v3 import discovery_pb2
from prometheus_client.parser import text_string_to_metric_families

from plait.agent.bootstrap import CONTROL_PLANE_NAME
from plait.ca.client import CertificateRefused, new_key_and_csr, request_certificate
from plait.model import Proxy
from plait.testing.ads_client import SERVICE, AdsClient, make_node
from plait.testing.live import ControlPlaneProcess, run_plait
from plait.xds.resources import TYPE_URLS

TIMEOUT = 30
PRODUCTPAGE = Proxy(
    kind="sidecar",
    ip="127.0.0.1",
    name="productpage-v1",
    namespace="default",
    mode="proxy",
    service_account="bookinfo-productpage",
)


class BearerToken(grpc.aio.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every stream of the channel."""

    def __init__(self, token: str):
        self.token = token

    async def intercept_stream_stream(self, continuation, details, request_iterator):
        metadata = grpc.aio.Metadata(*(details.metadata or ()), ("authorization", f"Bearer {self.token}"))
        return await continuation(details._replace(metadata=metadata), request_iterator)


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("strict")
    (workdir / "mesh").mkdir()
    with ControlPlaneProcess(
        workdir / "mesh", workdir, extra_args=["--xds-auth", "strict", "--workload-cert-ttl", "10m"]
    ) as cp:
        yield cp


def tls_channel(cp: ControlPlaneProcess, interceptors=()) -> grpc.aio.Channel:
    """To the control plane's TLS port, trusting only the mesh root, expecting Envoy's SNI name."""
    credentials = grpc.ssl_channel_credentials(root_certificates=cp.root_cert_path.read_bytes())
    return grpc.aio.secure_channel(
        cp.ca_address,
        credentials,
        interceptors=list(interceptors),
        options=[("grpc.ssl_target_name_override", CONTROL_PLANE_NAME)],
    )


def clusters_received(cp: ControlPlaneProcess, proxy: Proxy, token: str) -> list[str]:
    """The clusters the in-process ADS client holds once synced, sending `token`."""

    async def run():
        async with (
            tls_channel(cp, [BearerToken(token)]) as channel,
            AdsClient(cp.ca_address, make_node(proxy), channel=channel) as client,
        ):
            await client.wait_synced(TIMEOUT)
            return sorted(client.held["cds"])

    return asyncio.run(asyncio.wait_for(run(), TIMEOUT))


def refusal(cp: ControlPlaneProcess, proxy: Proxy, token: str | None) -> tuple[grpc.StatusCode, str]:
    """How a stream whose first request carries `proxy`'s node ends (it must end: refused)."""

    async def run():
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        async with tls_channel(cp) as channel:
            call = channel.stream_stream(
                f"{SERVICE}StreamAggregatedResources",
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
            )(metadata=metadata)
            await call.write(discovery_pb2.DiscoveryRequest(node=make_node(proxy), type_url=TYPE_URLS["cds"]))
            return await call.code(), await call.details()

    return asyncio.run(asyncio.wait_for(run(), TIMEOUT))


def token(cp: ControlPlaneProcess, namespace: str, service_account: str) -> str:
    return cp.issue_token(namespace, service_account, "productpage-v1-0").read_text()


def test_state_dir_holds_the_ca_owner_only(control_plane):
    ca_dir = control_plane.state_dir / "ca"
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca_dir / "ca-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((ca_dir / "token-signing.key").stat().st_mode) == 0o600
    assert control_plane.root_cert_path == ca_dir / "root-cert.pem"
    log = control_plane.log_path.read_text()
    assert "CA: root CN=plait root CA cluster.local,O=plait (SHA-256 " in log
    assert f"signing key {ca_dir / 'ca-key.pem'}" in log


def test_the_control_plane_answers_csrs(control_plane):
    root_pem = control_plane.root_cert_path.read_bytes()
    identity = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"

    async def ask(for_identity: str) -> list[bytes]:
        _, csr = new_key_and_csr(for_identity)
        return await request_certificate(
            control_plane.ca_address,
            root_pem=root_pem,
            token=token(control_plane, "default", "bookinfo-productpage"),
            csr_pem=csr,
            ttl_seconds=0,
        )

    chain = asyncio.run(ask(identity))
    assert verified_identity(chain, root_pem, utcnow()) == [identity]
    with pytest.raises(CertificateRefused, match="this caller may only have"):
        asyncio.run(ask("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"))
    assert "certificate refused (wrong_identity) to default/bookinfo-productpage" in control_plane.log_path.read_text()


def test_strict_ads_admits_a_node_with_its_own_token(control_plane):
    clusters = clusters_received(control_plane, PRODUCTPAGE, token(control_plane, "default", "bookinfo-productpage"))
    assert "PassthroughCluster" in clusters


def test_strict_opens_no_plaintext_xds_port(control_plane):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", control_plane.xds_port), timeout=5).close()
    assert "plaintext xDS off (--xds-auth strict)" in control_plane.log_path.read_text()


def test_strict_ads_refuses_a_node_without_a_token(control_plane):
    code, details = refusal(control_plane, PRODUCTPAGE, None)
    assert code == grpc.StatusCode.UNAUTHENTICATED and details.startswith("no token")
    assert f"for node {PRODUCTPAGE.id} refused: no token" in control_plane.log_path.read_text()
    assert metric(control_plane, "plait_xds_rejected_streams_total", reason="unauthenticated") >= 1


def test_strict_ads_refuses_a_token_for_another_namespace_or_account(control_plane):
    code, details = refusal(control_plane, PRODUCTPAGE, token(control_plane, "istio-system", "bookinfo-productpage"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == (
        f"the token is for istio-system/bookinfo-productpage, but node {PRODUCTPAGE.id} claims "
        "namespace default and service account bookinfo-productpage"
    )
    code, _ = refusal(control_plane, PRODUCTPAGE, token(control_plane, "default", "bookinfo-reviews"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert metric(control_plane, "plait_xds_rejected_streams_total", reason="permission_denied") >= 2


def metric(cp: ControlPlaneProcess, name: str, **labels) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{cp.http_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_bad_plugin_ca_files_stop_the_command_with_a_clear_error(tmp_path):
    cacerts = OperatorPki().write(tmp_path / "cacerts", key=ec.generate_private_key(ec.SECP256R1()))
    result = run_plait(
        "control-plane",
        "--config-dir",
        str(tmp_path / "mesh"),
        "--state-dir",
        str(tmp_path / "state"),
        "--cacerts",
        str(cacerts),
        "--xds-port",
        "0",
        "--http-port",
        "0",
        "--ca-port",
        "0",
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1
    assert "certificate authority:" in result.stderr and "ca-key.pem is not the key of" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
