"""TLS origination (DestinationRule tls SIMPLE / MUTUAL) verifies the server, as Istio (beside golden 30).

A real Envoy, as an explicit proxy on loopback, originates TLS to a Python HTTPS server whose
certificate is self-signed: without ``caCertificates`` it is checked against the OS trust bundle and
refused; with them it passes; a wrong ``subjectAltNames``, a host the certificate does not name (auto
SAN validation) or a revoked certificate (``caCrl``) is refused; ``insecureSkipVerify`` lets it through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import socketserver
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.envoy import EnvoyProcess, run_envoy
from plait.testing.http import http_request
from plait.xds.generator import generate
from plait.xds.static import static_bootstrap
from plait.xds.translate.tls import SYSTEM_TRUST_BUNDLE

CERTIFIED_HOSTS = ["untrusted.example", "trusted.example", "insecure.example", "wrongsan.example", "revoked.example"]
SERVER_PORT = 8443


@dataclasses.dataclass(frozen=True)
class ServerFiles:
    certificate: Path  # self-signed, naming CERTIFIED_HOSTS; it is also the CA clients may trust
    key: Path
    crl: Path  # revokes the certificate


def make_server_files(directory: Path) -> ServerFiles:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-signed test server")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in CERTIFIED_HOSTS]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(cert.serial_number)
        .revocation_date(now - datetime.timedelta(minutes=5))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(hours=2))
        .add_revoked_certificate(revoked)
        .sign(key, hashes.SHA256())
    )
    files = ServerFiles(directory / "server.pem", directory / "server-key.pem", directory / "server.crl")
    files.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.crl.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return files


class HttpsBackend(HttpBackend):
    """`HttpBackend` behind TLS with the given certificate; failed handshakes are dropped quietly."""

    def __init__(self, name: str, address: str, port: int, files: ServerFiles, *, client_ca: Path | None = None):
        super().__init__(name, address, port)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files.certificate, files.key)
        if client_ca:  # mutual TLS: a client certificate from this CA is required
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)
        base = self.server_class

        class TlsServer(base):  # type: ignore[misc, valid-type]
            def finish_request(self, request, client_address) -> None:
                try:
                    request = context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                super().finish_request(request, client_address)

            def handle_error(self, request, client_address) -> None:
                pass

        self.server_class: type[socketserver.BaseServer] = TlsServer


def mesh_yaml(net: str, files: ServerFiles) -> str:
    """One ServiceEntry per case, each on port 80 sending to the HTTPS server, with its DestinationRule."""
    ca = str(files.certificate)
    policies = {
        "untrusted.example": {"mode": "SIMPLE"},
        "trusted.example": {"mode": "SIMPLE", "caCertificates": ca},
        "insecure.example": {"mode": "SIMPLE", "insecureSkipVerify": True},
        "wrongsan.example": {"mode": "SIMPLE", "caCertificates": ca, "subjectAltNames": ["other.example"]},
        "autosan.example": {"mode": "SIMPLE", "caCertificates": ca},
        "revoked.example": {"mode": "SIMPLE", "caCertificates": ca, "caCrl": str(files.crl)},
        "named.example": {
            "mode": "SIMPLE",
            "caCertificates": ca,
            "sni": "trusted.example",
            "subjectAltNames": ["trusted.example"],
        },
    }
    parts = []
    for host, tls in policies.items():
        name = host.split(".")[0]
        parts += [
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "ServiceEntry",
                "metadata": {"name": name},
                "spec": {
                    "hosts": [host],
                    "location": "MESH_EXTERNAL",
                    "resolution": "STATIC",
                    "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                    "endpoints": [{"address": f"{net}.30", "ports": {"http": SERVER_PORT}}],
                },
            },
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": name},
                "spec": {"host": host, "trafficPolicy": {"tls": tls}},
            },
        ]
    return "".join(json.dumps(p) + "\n---\n" for p in parts)


@dataclasses.dataclass
class Origination:
    net: str
    client: EnvoyProcess
    server: HttpsBackend

    def get(self, host: str):
        return http_request(f"{self.net}.1", EXPLICIT_PROXY_PORT, f"http://{host}/")

    def ssl_stat(self, host: str, name: str) -> int:
        return self.client.stat(f"cluster.outbound|80||{host}.ssl.{name}")


@pytest.fixture(scope="module")
def origination(tmp_path_factory) -> Iterator[Origination]:
    workdir = tmp_path_factory.mktemp("origination")
    files = make_server_files(workdir)
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        server = stack.enter_context(HttpsBackend("tls-server", f"{net}.30", SERVER_PORT, files))
        snapshot = MeshSnapshot(load_text(mesh_yaml(net, files)).raise_for_errors())
        client = Proxy(kind="sidecar", ip=f"{net}.1", name="client", mode="proxy")
        envoy = stack.enter_context(run_envoy(static_bootstrap(generate(snapshot, client)), workdir=workdir / "envoy"))
        yield Origination(net, envoy, server)


def test_the_os_trust_bundle_is_there() -> None:
    """Clusters without caCertificates point Envoy at it; Envoy refuses a config naming a missing file."""
    assert Path(SYSTEM_TRUST_BUNDLE).is_file()


def test_a_self_signed_server_is_refused_without_ca_certificates(origination: Origination) -> None:
    before = origination.server.count
    assert origination.get("untrusted.example").status == 503
    assert origination.server.count == before
    assert origination.ssl_stat("untrusted.example", "fail_verify_error") >= 1


def test_the_server_passes_with_its_ca_certificates(origination: Origination) -> None:
    reply = origination.get("trusted.example")
    assert (reply.status, reply.backend) == (200, "tls-server")
    assert origination.ssl_stat("trusted.example", "handshake") >= 1


def test_a_port_in_the_host_is_not_part_of_the_automatic_sni(origination: Origination) -> None:
    reply = http_request(
        f"{origination.net}.1",
        EXPLICIT_PROXY_PORT,
        "http://trusted.example:80/",
        headers={"Host": "trusted.example:80"},
    )
    assert (reply.status, reply.backend) == (200, "tls-server")


def test_insecure_skip_verify_lets_any_server_through(origination: Origination) -> None:
    reply = origination.get("insecure.example")
    assert (reply.status, reply.backend) == (200, "tls-server")


def test_a_subject_alt_name_the_certificate_lacks_is_refused(origination: Origination) -> None:
    assert origination.get("wrongsan.example").status == 503
    assert origination.ssl_stat("wrongsan.example", "fail_verify_san") >= 1


def test_auto_san_validation_refuses_a_certificate_not_naming_the_host(origination: Origination) -> None:
    """Trusted CA, no sni and no subjectAltNames: the certificate must name the request's host."""
    assert origination.get("autosan.example").status == 503
    assert origination.ssl_stat("autosan.example", "fail_verify_san") >= 1


def test_an_explicit_sni_and_san_replace_the_automatic_ones(origination: Origination) -> None:
    """named.example is not in the certificate, but sni and subjectAltNames say trusted.example."""
    reply = origination.get("named.example")
    assert (reply.status, reply.backend) == (200, "tls-server")


def test_a_certificate_revoked_by_ca_crl_is_refused(origination: Origination) -> None:
    assert origination.get("revoked.example").status == 503
    assert origination.ssl_stat("revoked.example", "fail_verify_error") >= 1


# ------------------------------------------------------------------ DestinationRule workloadSelector

SELECTOR_MESH = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: sleep}}
spec: {{address: {net}.1, labels: {{app: sleep}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: httpbin}}
spec: {{address: {net}.2, labels: {{app: httpbin}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: trusted}}
spec:
  hosts: [trusted.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: {net}.30, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: trusted}}
spec:
  host: trusted.example
  trafficPolicy: {{tls: {{mode: SIMPLE, caCertificates: {ca}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: trusted-for-sleep}}
spec:
  host: trusted.example
  workloadSelector: {{matchLabels: {{app: sleep}}}}
  trafficPolicy:
    tls: {{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {ca}, privateKey: {key}}}
"""


def test_a_workload_selector_gives_the_client_certificate_to_the_selected_workload_only(tmp_path: Path) -> None:
    """The server wants a client certificate (its own, self-signed, doubles as the client CA): sleep's
    sidecar has it from `trusted-for-sleep`; httpbin's gets `trusted` (SIMPLE) and is refused."""
    files = make_server_files(tmp_path)
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        stack.enter_context(HttpsBackend("mtls-server", f"{net}.30", SERVER_PORT, files, client_ca=files.certificate))
        text = SELECTOR_MESH.format(net=net, port=SERVER_PORT, ca=files.certificate, key=files.key)
        snapshot = MeshSnapshot(load_text(text).raise_for_errors())
        statuses = {}
        for name in ("sleep", "httpbin"):
            proxy = Proxy.from_workload_entry(snapshot.workload(name), mode="proxy")
            envoy = stack.enter_context(run_envoy(static_bootstrap(generate(snapshot, proxy)), workdir=tmp_path / name))
            statuses[name] = http_request(proxy.ip, EXPLICIT_PROXY_PORT, "http://trusted.example/").status
            handshakes = envoy.stat("cluster.outbound|80||trusted.example.ssl.handshake")
            assert handshakes == (1 if name == "sleep" else 0), name
        assert statuses == {"sleep": 200, "httpbin": 503}
