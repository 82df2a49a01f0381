"""The agent's SDS server: the protocol without I/O, the socket's permissions, and real Envoy.

Certificates are made here with `cryptography` (a root, workload leaves with a
SPIFFE URI SAN, a client certificate); the CA is tested in tests/ca and with
the agent in test_identity.py. The Envoy tests run an Envoy whose only
listener is mutual TLS with ``default`` and ``ROOTCA`` from SDS, through the
``sds-grpc`` cluster exactly as the agent's bootstrap declares it.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import socket
import ssl
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2

from plait.agent.bootstrap import sds_cluster
from plait.agent.run import make_proxy_dir, reachable_by
from plait.agent.sds import SECRET_TYPE, SdsServer, SecretStream, secret_resources
from plait.testing.envoy import run_envoy
from plait.testing.live import free_port
from plait.xds.translate.common import sds_secret

IDENTITY = "spiffe://cluster.local/ns/default/sa/reviews"
CLIENT_IDENTITY = "spiffe://cluster.local/ns/default/sa/productpage"
WAIT = 15.0


# ------------------------------------------------------------------ certificates made in the test


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Root:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls) -> Root:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(self, uri: str, serial: int) -> Material:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return Material(chain_pem=_pem(cert), key_pem=_key_pem(key), root_pem=_pem(self.cert))


@dataclass(frozen=True)
class Material:
    chain_pem: bytes
    key_pem: bytes
    root_pem: bytes


@pytest.fixture(scope="module")
def root() -> Root:
    return Root.make()


# ------------------------------------------------------------------ the protocol, without I/O


def request(*names: str, nonce: str = "", version: str = "", error: str = "") -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(
        resource_names=list(names), type_url=SECRET_TYPE, response_nonce=nonce, version_info=version
    )
    if error:
        req.error_detail.code, req.error_detail.message = 3, error
    return req


def unpack(response: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    out = {}
    for resource in response.resources:
        secret = secret_pb2.Secret()
        assert resource.Unpack(secret)
        out[secret.name] = secret
    return out


def test_default_is_the_chain_and_key_and_rootca_the_root(root: Root) -> None:
    material = root.issue(IDENTITY, 1)
    secrets = secret_resources(material)
    assert secrets["default"].tls_certificate.certificate_chain.inline_bytes == material.chain_pem
    assert secrets["default"].tls_certificate.private_key.inline_bytes == material.key_pem
    assert secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes == material.root_pem
    assert not secrets["ROOTCA"].HasField("tls_certificate")


def test_first_request_gets_the_secrets_it_names_and_an_ack_gets_nothing(root: Root) -> None:
    stream, material = SecretStream(), root.issue(IDENTITY, 1)
    response = stream.receive(request("default"), material)
    assert response.type_url == SECRET_TYPE and response.nonce and response.version_info
    assert list(unpack(response)) == ["default"]
    assert stream.receive(request("default", nonce=response.nonce, version=response.version_info), material) is None
    assert stream.acked_version == response.version_info


def test_nothing_is_sent_before_there_is_a_certificate_then_it_is(root: Root) -> None:
    stream = SecretStream()
    assert stream.receive(request("default"), None) is None
    response = stream.update(root.issue(IDENTITY, 1))
    assert list(unpack(response)) == ["default"]


def test_rotation_pushes_default_with_a_new_version_and_leaves_rootca_alone(root: Root) -> None:
    default, rootca = SecretStream(), SecretStream()
    first, second = root.issue(IDENTITY, 1), root.issue(IDENTITY, 2)
    sent = default.receive(request("default"), first)
    rootca_sent = rootca.receive(request("ROOTCA"), first)
    assert default.update(first) is None  # the same certificate again: nothing new
    pushed = default.update(second)
    assert pushed.version_info != sent.version_info and pushed.nonce != sent.nonce
    assert unpack(pushed)["default"].tls_certificate.certificate_chain.inline_bytes == second.chain_pem
    assert rootca.update(second) is None  # same root, same version
    assert rootca_sent.version_info == SecretStream().receive(request("ROOTCA"), second).version_info


def test_versions_are_content_hashes(root: Root) -> None:
    material = root.issue(IDENTITY, 1)
    assert (
        SecretStream().receive(request("default"), material).version_info
        == SecretStream().receive(request("default"), material).version_info
    )


def test_unknown_names_get_no_response(root: Root) -> None:
    stream = SecretStream()
    assert stream.receive(request("file-cert:/etc/certs/cert.pem"), root.issue(IDENTITY, 1)) is None
    assert stream.unknown_names == ("file-cert:/etc/certs/cert.pem",)
    both = stream.receive(request("ROOTCA", "other"), root.issue(IDENTITY, 1))
    assert list(unpack(both)) == ["ROOTCA"] and stream.unknown_names == ("other",)


def test_a_nack_is_logged_with_envoys_reason_and_not_answered(root: Root, caplog) -> None:
    stream, material = SecretStream(), root.issue(IDENTITY, 1)
    sent = stream.receive(request("default"), material)
    with caplog.at_level(logging.WARNING, logger="plait.agent"):
        assert (
            stream.receive(request("default", nonce=sent.nonce, error="Failed to load private key"), material) is None
        )
    assert "Envoy rejected secrets default version " + sent.version_info in caplog.text
    assert "Failed to load private key" in caplog.text
    assert stream.acked_version == ""


def test_stale_nonces_are_ignored_but_new_names_are_answered(root: Root) -> None:
    stream, material = SecretStream(), root.issue(IDENTITY, 1)
    first = stream.receive(request("default"), material)
    stream.update(root.issue(IDENTITY, 2))  # a push Envoy has not answered yet
    assert stream.receive(request("default", nonce=first.nonce, version=first.version_info), material) is None
    renamed = stream.receive(request("default", "ROOTCA", nonce=first.nonce), material)
    assert sorted(unpack(renamed)) == ["ROOTCA", "default"]


# ------------------------------------------------------------------ where the socket lives


def test_the_socket_is_0600_and_owned_by_the_proxy_user(tmp_path: Path, root: Root) -> None:
    if os.geteuid() != 0:
        pytest.fail("chown to the proxy user needs root; CI runs this as root")

    async def serve() -> os.stat_result:
        server = SdsServer(tmp_path / "sds.sock", owner_uid=1337)
        await server.start()
        try:
            return os.stat(tmp_path / "sds.sock")
        finally:
            await server.stop()

    info = asyncio.run(serve())
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (1337, 1337)
    assert not (tmp_path / "sds.sock").exists()


def test_proxy_dir_is_in_the_state_dir_when_the_proxy_user_can_reach_it(tmp_path: Path) -> None:
    state = tmp_path / "agent"
    state.mkdir()
    directory, temporary = make_proxy_dir(state, None)
    assert (directory, temporary) == (state.resolve() / "proxy", False)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_proxy_dir_moves_to_tmp_when_a_parent_is_closed_to_the_proxy_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("chown to the proxy user needs root; CI runs this as root")
    closed = tmp_path / "closed"
    (closed / "agent").mkdir(parents=True)
    closed.chmod(0o700)
    assert not reachable_by(closed / "agent", 1337) and reachable_by(Path("/tmp"), 1337)
    directory, temporary = make_proxy_dir(closed / "agent", 1337)
    try:
        assert temporary and directory.parent == Path(tempfile.gettempdir())
        info = directory.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (1337, 0o700)
    finally:
        directory.rmdir()


def test_proxy_dir_moves_to_tmp_when_the_socket_path_would_be_too_long(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    directory, temporary = make_proxy_dir(deep, None)
    try:
        assert temporary and len(str(directory / "sds.sock")) < 107
    finally:
        directory.rmdir()


# ------------------------------------------------------------------ real Envoy


class ServerThread:
    """An `SdsServer` on an event loop in a thread of its own, so a synchronous test can drive Envoy."""

    def __init__(self, socket_path: Path, material: Material):
        self.loop = asyncio.new_event_loop()
        self.server = SdsServer(socket_path)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.server.start()).result(WAIT)
        self.update(material)

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def update(self, material: Material) -> None:
        self.loop.call_soon_threadsafe(self.server.update, material)

    def stop(self) -> None:
        self.call(self.server.stop()).result(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)


def mtls_bootstrap(socket_path: Path, port: int) -> dict:
    """One listener, mutual TLS from SDS (``default``, ``ROOTCA``), answering 200 to every request."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "mtls",
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
                    ],
                }
            ]
        },
    }
    tls = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [sds_secret("default")],
            "validation_context_sds_secret_config": sds_secret("ROOTCA"),
        },
    }
    return {
        "node": {
            "id": "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local",
            "cluster": "reviews-v1.default",
        },
        "static_resources": {
            "clusters": [sds_cluster(str(socket_path))],
            "listeners": [
                {
                    "name": "mtls",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
                            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
                        }
                    ],
                }
            ],
        },
    }


def client_context(root: Root, tmp_path: Path) -> ssl.SSLContext:
    """Verifies the server against the root (no host name: a SPIFFE certificate has none) and presents
    a client certificate from the same root, as a mesh peer would."""
    client = root.issue(CLIENT_IDENTITY, 99)
    (tmp_path / "client.pem").write_bytes(client.chain_pem)
    (tmp_path / "client.key").write_bytes(client.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=root.cert.public_bytes(serialization.Encoding.PEM).decode())
    context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    return context


def get(context: ssl.SSLContext, port: int) -> tuple[str, x509.Certificate]:
    """One request on a new connection: (status line, the server's certificate)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw) as conn:
            peer = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True))
            conn.sendall(b"GET / HTTP/1.1\r\nHost: mtls\r\n\r\n")
            answer = b""
            while not answer.endswith(b"\r\n\r\nok") and (chunk := conn.recv(4096)):  # the body is "ok"
                answer += chunk
    return answer.split(b"\r\n", 1)[0].decode(), peer


def uri_san(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )


def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def envoy_with_sds(tmp_path: Path, root: Root) -> Iterator[tuple[ServerThread, object, int]]:
    socket_path, port = tmp_path / "sds.sock", free_port()
    server = ServerThread(socket_path, root.issue(IDENTITY, 1001))
    try:
        with run_envoy(mtls_bootstrap(socket_path, port), workdir=tmp_path / "envoy") as envoy:
            yield server, envoy, port
    finally:
        server.stop()


def test_envoy_serves_the_workload_certificate_from_sds(envoy_with_sds, root: Root, tmp_path: Path) -> None:
    _, envoy, port = envoy_with_sds
    status, peer = get(client_context(root, tmp_path), port)
    assert status == "HTTP/1.1 200 OK"
    assert uri_san(peer) == [IDENTITY] and peer.serial_number == 1001
    certs = json.loads(envoy.admin("/certs"))["certificates"]
    leaves = [c["cert_chain"][0] for c in certs if c["cert_chain"]]
    assert [(int(leaf["serial_number"], 16), leaf["subject_alt_names"]) for leaf in leaves] == [
        (1001, [{"uri": IDENTITY}])
    ]
    assert int(certs[0]["ca_cert"][0]["serial_number"], 16) == root.cert.serial_number
    dump = json.loads(envoy.admin("/config_dump?resource=dynamic_active_secrets"))
    assert sorted(s["name"] for s in dump["configs"]) == ["ROOTCA", "default"]


def test_rotation_under_a_request_loop_fails_no_request(envoy_with_sds, root: Root, tmp_path: Path) -> None:
    server, envoy, port = envoy_with_sds
    context = client_context(root, tmp_path)
    serials: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() and len(serials) + len(failures) < 5000:
            try:
                status, peer = get(context, port)
                serials.append(peer.serial_number) if status == "HTTP/1.1 200 OK" else failures.append(status)
            except (OSError, ssl.SSLError) as exc:
                failures.append(repr(exc))

    client = threading.Thread(target=loop)
    client.start()
    try:
        wait_for(lambda: len(serials) >= 20, "requests with the first certificate")
        server.update(root.issue(IDENTITY, 2002))
        wait_for(lambda: serials.count(2002) >= 20, "requests with the rotated certificate")
    finally:
        stop.set()
        client.join(WAIT)
    assert failures == []
    first_new = serials.index(2002)
    assert set(serials[:first_new]) == {1001} and set(serials[first_new:]) == {2002}  # switched once, for good
    assert envoy.stat("sds.default.update_success") == 2
    assert envoy.stat("sds.ROOTCA.update_success") == 1  # same root: not pushed again


def test_a_secret_envoy_rejects_is_logged_and_the_old_one_stays(
    envoy_with_sds, root: Root, tmp_path: Path, caplog
) -> None:
    server, envoy, port = envoy_with_sds
    good, other = root.issue(IDENTITY, 3003), root.issue(IDENTITY, 4004)
    with caplog.at_level(logging.WARNING, logger="plait.agent"):
        server.update(Material(chain_pem=good.chain_pem, key_pem=other.key_pem, root_pem=good.root_pem))
        wait_for(lambda: envoy.stat("sds.default.update_rejected") == 1, "Envoy to reject the mismatched key")
        wait_for(lambda: "Envoy rejected secrets default" in caplog.text, "the NACK in the agent's log")
    assert "private key" in caplog.text.lower()  # Envoy's own reason
    assert get(client_context(root, tmp_path), port)[1].serial_number == 1001
