"""Gateway server TLS settings in a real Envoy (beside golden 33): cipherSuites and protocol versions
reach tls_params; a MUTUAL server's verifyCertificateSpki refuses a client whose certificate the CA
signed but whose key is not pinned.

The gateway runs on a static bootstrap, its HTTPS server moved from port 443 to 8443 on a loopback
address of its own; the certificate is the test certificate of tests/xds/testdata/certs (ECDSA).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import hashlib
import http.client
import socket
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
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.envoy import EnvoyProcess, run_envoy
from plait.xds.generator import generate
from plait.xds.static import static_bootstrap

CERTS = Path(__file__).parent / "testdata" / "certs"
CERT, KEY = CERTS / "cert.pem", CERTS / "key.pem"
GATEWAY_PORT = 8443


def spki_of(path: Path) -> str:
    """Envoy's verify_certificate_spki value: base64 of the SHA-256 of the DER SubjectPublicKeyInfo."""
    public = x509.load_pem_x509_certificate(path.read_bytes()).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


MESH = """
apiVersion: v1
kind: Service
metadata: {{name: store}}
spec:
  selector: {{app: store}}
  ports: [{{name: http, port: 8000}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: store}}
spec: {{address: {net}.20, labels: {{app: store}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingress, namespace: istio-system}}
spec: {{address: {net}.10, labels: {{istio: ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [store.example.com]
    tls:
      mode: SIMPLE
      serverCertificate: {cert}
      privateKey: {key}
      maxProtocolVersion: TLSV1_2
      cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]
  - port: {{number: 443, name: https-pinned, protocol: HTTPS}}
    hosts: [pinned.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: {cert}
      privateKey: {key}
      caCertificates: {cert}
      verifyCertificateSpki: [{pin}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: store}}
spec:
  hosts: [store.example.com, pinned.example.com]
  gateways: [secure]
  http: [{{route: [{{destination: {{host: store, port: {{number: 8000}}}}}}]}}]
"""


def client_context(*, ciphers: str | None = None, certificate: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(CERT)
    context.check_hostname = False
    if ciphers:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(ciphers)
    if certificate:
        context.load_cert_chain(CERT, KEY)
    return context


def https_get(address: str, host: str, context: ssl.SSLContext) -> tuple[int, str]:
    """(status, negotiated cipher) of GET https://<host>/ sent to the gateway with SNI <host>."""
    with (
        socket.create_connection((address, GATEWAY_PORT), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        return response.status, tls.cipher()[0]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[tuple[str, EnvoyProcess]]:
    """The gateway's address (its HTTPS servers listen on GATEWAY_PORT there) and its Envoy."""
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        stack.enter_context(HttpBackend("store", f"{net}.20", 8000))
        text = MESH.format(net=net, cert=CERT, key=KEY, pin=spki_of(CERT))
        snapshot = MeshSnapshot(load_text(text).raise_for_errors())
        proxy = Proxy.from_workload_entry(snapshot.workload("istio-system/ingress"))
        proxy = dataclasses.replace(proxy, listen_ports={443: GATEWAY_PORT})
        bootstrap = static_bootstrap(generate(snapshot, proxy))
        for listener in bootstrap["static_resources"]["listeners"]:
            listener["address"]["socket_address"]["address"] = f"{net}.10"
        envoy = stack.enter_context(run_envoy(bootstrap, workdir=tmp_path_factory.mktemp("gateway")))
        yield f"{net}.10", envoy


def test_the_configured_cipher_suite_is_negotiated(gateway: tuple[str, EnvoyProcess]) -> None:
    assert https_get(gateway[0], "store.example.com", client_context(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")) == (
        200,
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    )


def test_a_client_offering_only_other_cipher_suites_is_refused(gateway: tuple[str, EnvoyProcess]) -> None:
    with pytest.raises(ssl.SSLError):
        https_get(gateway[0], "store.example.com", client_context(ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))


def test_max_protocol_version_holds_tls_1_3_clients_to_1_2(gateway: tuple[str, EnvoyProcess]) -> None:
    context = client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(ssl.SSLError):
        https_get(gateway[0], "store.example.com", context)


def signed_by_the_test_ca(directory: Path) -> tuple[Path, Path]:
    """A client certificate the test CA signed, for a new key (so not the pinned one)."""
    now = datetime.datetime.now(datetime.UTC)
    ca = x509.load_pem_x509_certificate(CERT.read_bytes())
    ca_key = serialization.load_pem_private_key(KEY.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(ca_key, hashes.SHA256())
    )  # type: ignore[arg-type]
    cert_path, key_path = directory / "other.pem", directory / "other-key.pem"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_verify_certificate_spki_refuses_a_valid_client_whose_key_is_not_pinned(
    gateway: tuple[str, EnvoyProcess], tmp_path: Path
) -> None:
    address, envoy = gateway
    assert https_get(address, "pinned.example.com", client_context(certificate=True))[0] == 200
    other = client_context()
    other.load_cert_chain(*signed_by_the_test_ca(tmp_path))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(address, "pinned.example.com", other)
    assert envoy.stat(f"listener.{address}_{GATEWAY_PORT}.ssl.fail_verify_cert_hash") == 1
