"""Automatic mTLS and PeerAuthentication: the effective mode's precedence, what translation makes of
it (beside goldens 13-15), the authorization hooks, and real Envoys talking mutual TLS on loopback.

The end-to-end part runs sidecars in explicit-proxy mode on static bootstraps whose SDS secrets
``default`` / ``ROOTCA`` are swapped for static secrets made here (a root and leaf certificates
with SPIFFE URI SANs), so no agent is involved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy, peer_auth
from plait.model.proxy import EXPLICIT_PROXY_PORT, spiffe_id
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.envoy import EnvoyProcess, run_envoy
from plait.testing.http import http_request
from plait.xds.generator import generate
from plait.xds.static import static_bootstrap
from plait.xds.translate import jwt, rbac
from plait.xds.translate.common import SDS_CLUSTER

TESTDATA = Path(__file__).parent / "testdata"


def snapshot_of(text: str) -> MeshSnapshot:
    return MeshSnapshot(load_text(text).raise_for_errors())


def with_identity(proxy: Proxy) -> Proxy:
    return dataclasses.replace(proxy, identity=proxy.spiffe_id)


def workload_proxy(snapshot: MeshSnapshot, name: str, *, mode: str = "capture", identity: bool = True) -> Proxy:
    proxy = Proxy.from_workload_entry(snapshot.workload(name), mode=mode)
    return with_identity(proxy) if identity else proxy


def peer_authentication(
    name: str,
    namespace: str = "default",
    *,
    mode: str | None = None,
    selector: dict | None = None,
    ports: dict | None = None,
) -> str:
    spec: dict = {}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if mode:
        spec["mtls"] = {"mode": mode}
    if ports:
        spec["portLevelMtls"] = {port: {"mode": m} for port, m in ports.items()}
    return (
        json.dumps(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "PeerAuthentication",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
        )
        + "\n---\n"
    )


SERVER = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: server}, serviceAccount: server}
"""


def effective(*policies: str) -> peer_auth.PeerPolicy:
    snapshot = snapshot_of("".join(policies) + SERVER)
    return peer_auth.workload_policy(snapshot, workload_proxy(snapshot, "shop/server"))


# ------------------------------------------------------------------ the effective mode


def test_no_policy_is_permissive() -> None:
    assert effective() == peer_auth.PeerPolicy(peer_auth.PERMISSIVE)


def test_namespace_beats_mesh_and_unset_inherits() -> None:
    mesh = peer_authentication("default", "istio-system", mode="STRICT")
    assert effective(mesh).mode == "STRICT"
    assert effective(mesh, peer_authentication("default", "shop", mode="DISABLE")).mode == "DISABLE"
    assert effective(mesh, peer_authentication("default", "shop", mode="UNSET")).mode == "STRICT"
    assert effective(mesh, peer_authentication("default", "shop")).mode == "STRICT"  # no mtls at all


def test_other_namespaces_do_not_apply() -> None:
    assert effective(peer_authentication("default", "elsewhere", mode="STRICT")).mode == "PERMISSIVE"


def test_workload_policy_beats_namespace_and_port_level_beats_both() -> None:
    policy = effective(
        peer_authentication("default", "shop", mode="STRICT"),
        peer_authentication(
            "server", "shop", mode="DISABLE", selector={"app": "server"}, ports={8080: "STRICT", 9090: "UNSET"}
        ),
    )
    assert policy.mode == "DISABLE"
    assert policy.for_port(8080) == "STRICT"
    assert policy.for_port(9090) == "DISABLE"  # UNSET at port level: the workload's mode
    assert policy.for_port(7000) == "DISABLE"


def test_unset_workload_policy_keeps_the_namespace_mode_for_its_other_ports() -> None:
    policy = effective(
        peer_authentication("default", "shop", mode="STRICT"),
        peer_authentication("server", "shop", selector={"app": "server"}, ports={8080: "PERMISSIVE"}),
    )
    assert (policy.mode, policy.for_port(8080)) == ("STRICT", "PERMISSIVE")


def test_selector_that_does_not_match_is_ignored() -> None:
    assert (
        effective(peer_authentication("other", "shop", mode="STRICT", selector={"app": "other"})).mode == "PERMISSIVE"
    )


def test_competing_workload_policies_pick_own_namespace_then_first_name() -> None:
    """Istio keeps the oldest; without creation times plait keeps the first name (documented)."""
    own_b = peer_authentication("b", "shop", mode="STRICT", selector={"app": "server"})
    own_a = peer_authentication("a", "shop", mode="DISABLE", selector={"app": "server"})
    root = peer_authentication("0-root", "istio-system", mode="PERMISSIVE", selector={"app": "server"})
    assert effective(own_b, own_a, root).mode == "DISABLE"
    assert effective(own_b, root).mode == "STRICT"
    assert effective(root, peer_authentication("default", "shop", mode="STRICT")).mode == "PERMISSIVE"


def test_namespace_mode_is_the_client_hint() -> None:
    snapshot = snapshot_of(
        peer_authentication("default", "istio-system", mode="DISABLE")
        + peer_authentication("default", "shop", mode="STRICT")
        + peer_authentication("wl", "other", mode="STRICT", selector={"app": "x"})
        + SERVER
    )
    assert peer_auth.namespace_mode(snapshot, "shop") == "STRICT"
    assert peer_auth.namespace_mode(snapshot, "other") == "DISABLE"  # workload-level policies do not count
    assert peer_auth.namespace_mode(snapshot_of(SERVER), "shop") is None


# ------------------------------------------------------------------ translation


def case_snapshot(case: str) -> MeshSnapshot:
    return snapshot_of((TESTDATA / f"{case}.input.yaml").read_text())


def walk(node) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_a_proxy_without_identity_gets_no_mesh_tls() -> None:
    """The PeerAuthentication input of golden 14, but the proxy has no certificates: plaintext as before."""
    snapshot = case_snapshot("14-peer-authentication")
    resources = generate(snapshot, workload_proxy(snapshot, "server", identity=False)).to_dict()
    nodes = list(walk(resources))
    assert not [n for n in nodes if "transport_socket" in n or "transport_socket_matches" in n]
    assert not [n for n in nodes if "forward_client_cert_details" in n]
    inbound = next(lst for lst in resources["lds"] if lst["name"] == "virtualInbound")
    assert [c["name"] for c in inbound["filter_chains"]] == [
        "inbound|9080",
        "inbound|9081",
        "inbound|9082",
        "inbound|9090",
        "inbound|9091",
        "inbound|9092|http",
        "inbound|9092|tcp",
        "inbound|9093|http",
        "inbound|9093|tcp",
        "virtualInbound-catchall|http",
        "virtualInbound-catchall|tcp",
    ]
    assert [f["name"] for f in inbound["listener_filters"]] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.http_inspector",
    ]


def test_destination_rule_istio_mutual_is_kept_for_a_client_without_identity() -> None:
    snapshot = case_snapshot("06-destination-policies")
    clusters = generate(snapshot, workload_proxy(snapshot, "client", identity=False)).clusters
    socket_ = clusters["outbound|80|stable|cart.default.svc.cluster.local"]["transport_socket"]
    assert socket_["typed_config"]["sni"] == "outbound_.80_.stable_.cart.default.svc.cluster.local"
    assert "transport_socket_matches" not in clusters["outbound|80||cart.default.svc.cluster.local"]


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingress, namespace: istio-system}
spec: {address: 10.0.9.1, labels: {istio: ingressgateway}, serviceAccount: ingress}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 9000, name: tcp, protocol: TCP}, hosts: ["*"]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ["*"]
  gateways: [web]
  http: [{route: [{destination: {host: server, port: {number: 80}}}]}]
  tcp: [{match: [{port: 9000}], route: [{destination: {host: server, port: {number: 7000}}}]}]
"""

SHOP = """
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp, port: 7000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server}
spec: {address: 10.0.0.1, labels: {app: server, security.istio.io/tlsMode: istio}, serviceAccount: server}
"""


def test_gateway_with_identity_uses_auto_mtls_towards_sidecars() -> None:
    snapshot = snapshot_of(SHOP + "---" + GATEWAY)
    clusters = generate(snapshot, workload_proxy(snapshot, "istio-system/ingress")).clusters
    matches = clusters["outbound|80||server.default.svc.cluster.local"]["transport_socket_matches"]
    context = matches[0]["transport_socket"]["typed_config"]
    assert [m["name"] for m in matches] == ["tlsMode-istio", "tlsMode-disabled"]
    assert context["common_tls_context"]["combined_validation_context"]["default_validation_context"] == {
        "match_typed_subject_alt_names": [
            {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/server"}}
        ]
    }


AUTHZ_HTTP = {"name": "test.authz.http"}
AUTHZ_NET = {"name": "test.authz.network"}


@pytest.fixture
def authz_hooks(monkeypatch) -> list[tuple[str, str, int]]:
    """The rbac/jwt placeholders replaced by markers, recording who was asked for what."""
    calls: list[tuple[str, str, int]] = []

    def http_filters(snapshot, proxy, port):
        calls.append(("http", proxy.name, port))
        return [{**AUTHZ_HTTP, "port": port}]

    def network_filters(snapshot, proxy, port):
        calls.append(("network", proxy.name, port))
        return [{**AUTHZ_NET, "port": port}]

    monkeypatch.setattr(rbac, "inbound_http_filters", http_filters)
    monkeypatch.setattr(rbac, "inbound_network_filters", network_filters)
    monkeypatch.setattr(jwt, "jwks_clusters", lambda snapshot, proxy: [{"name": "jwks|test", "type": "STATIC"}])
    return calls


def _filter_names(chain: dict) -> list[str]:
    return [f["name"] for f in chain["filters"]]


def test_authorization_filters_sit_on_every_inbound_chain(authz_hooks) -> None:
    snapshot = case_snapshot("14-peer-authentication")
    resources = generate(snapshot, workload_proxy(snapshot, "server"))
    assert "jwks|test" in resources.clusters
    chains = {c["name"]: c for c in resources.listeners["virtualInbound"]["filter_chains"]}
    assert [n for n in chains if n.startswith("virtualInbound-catchall")], "passthrough chains are inbound too"
    for name, chain in chains.items():
        port = 0 if name.startswith("virtualInbound-catchall") else int(name.split("|")[1])  # passthrough: 0
        if name.endswith("plaintext-refused"):
            assert _filter_names(chain) == ["envoy.filters.network.tcp_proxy"]
        elif _filter_names(chain) == ["envoy.filters.network.http_connection_manager"]:
            http_filters = chain["filters"][0]["typed_config"]["http_filters"]
            assert http_filters[0] == {**AUTHZ_HTTP, "port": port}, name
            assert http_filters[-1]["name"] == "envoy.filters.http.router"
        else:
            assert chain["filters"][0] == {**AUTHZ_NET, "port": port}, name
            assert _filter_names(chain)[1:] == ["envoy.filters.network.tcp_proxy"]


def test_authorization_filters_on_gateway_listeners(authz_hooks) -> None:
    snapshot = snapshot_of(SHOP + "---" + GATEWAY)
    listeners = generate(snapshot, workload_proxy(snapshot, "istio-system/ingress")).listeners
    http_chain = listeners["0.0.0.0_8080"]["filter_chains"][0]
    assert http_chain["filters"][0]["typed_config"]["http_filters"][0] == {**AUTHZ_HTTP, "port": 8080}
    tcp_chain = listeners["0.0.0.0_9000"]["filter_chains"][0]
    assert tcp_chain["filters"][0] == {**AUTHZ_NET, "port": 9000}


# ------------------------------------------------------------------ real Envoys

TRUST = "spiffe://cluster.local/ns/default/sa/"


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, text)])


def _pem_key(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclasses.dataclass(frozen=True)
class Certificates:
    root: str
    leaves: dict[str, tuple[str, str]]  # service account → (certificate chain, key)


def make_certificates(accounts: list[str]) -> Certificates:
    """A root CA and, per service account, a leaf with URI SAN ``spiffe://cluster.local/ns/default/sa/<sa>``."""
    now = datetime.datetime.now(datetime.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("plait test root"))
        .issuer_name(_name("plait test root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
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
        .sign(root_key, hashes.SHA256())
    )
    leaves = {}
    for account in accounts:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(TRUST + account)]), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(root_key, hashes.SHA256())
        )
        leaves[account] = (leaf.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))
    return Certificates(root.public_bytes(serialization.Encoding.PEM).decode(), leaves)


def with_static_secrets(bootstrap: dict, certs: Certificates, account: str) -> dict:
    """The agent's SDS secrets `default` / `ROOTCA` as static secrets of the bootstrap."""
    chain, key = certs.leaves[account]
    for node in walk(bootstrap):
        if node.get("name") in ("default", "ROOTCA") and "sds_config" in node:
            del node["sds_config"]
    static = bootstrap["static_resources"]
    static["clusters"] = [c for c in static["clusters"] if c["name"] != SDS_CLUSTER]
    static["secrets"] = [
        {
            "name": "default",
            "tls_certificate": {"certificate_chain": {"inline_string": chain}, "private_key": {"inline_string": key}},
        },
        {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_string": certs.root}}},
    ]
    return bootstrap


def mesh_yaml(net: str) -> str:
    """Four services on port 80 (workload port 8080, and 7000 of unknown protocol on `permissive`):
    three workloads with a sidecar (service account b), one without (`plain`)."""
    parts = []
    for host, name, sidecar in (
        (10, "permissive", True),
        (11, "strict", True),
        (12, "imposter", True),
        (13, "plain", False),
    ):
        labels = {"app": name, **({"security.istio.io/tlsMode": "istio"} if sidecar else {})}
        ports = [{"name": "http", "port": 80, "targetPort": 8080}]
        if name == "permissive":
            ports.append({"name": "misc", "port": 7000})
        parts += [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name},
                "spec": {"selector": {"app": name}, "ports": ports},
            },
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "WorkloadEntry",
                "metadata": {"name": name},
                "spec": {"address": f"{net}.{host}", "labels": labels, "serviceAccount": "b"},
            },
        ]
    text = "".join(json.dumps(p) + "\n---\n" for p in parts)
    return text + peer_authentication("strict", mode="STRICT", selector={"app": "strict"})


@dataclasses.dataclass
class MtlsMesh:
    net: str
    client: EnvoyProcess
    servers: dict[str, EnvoyProcess]
    apps: dict[str, HttpBackend]

    def via_client(self, url: str):
        return http_request(f"{self.net}.1", EXPLICIT_PROXY_PORT, url)


SIDECARS = {"permissive": (10, "b"), "strict": (11, "b"), "imposter": (12, "c")}  # host, certificate's account


@pytest.fixture(scope="module")
def mtls_mesh(tmp_path_factory) -> Iterator[MtlsMesh]:
    certs = make_certificates(["a", "b", "c"])
    workdir = tmp_path_factory.mktemp("mtls")
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        yield start_mesh(stack, net, certs, workdir)


def start_mesh(stack: contextlib.ExitStack, net: str, certs: Certificates, workdir: Path) -> MtlsMesh:
    """The apps (127.0.N.20-22, `plain` at .13), the server sidecars (.10-.12) and the client (.1)."""
    snapshot = snapshot_of(mesh_yaml(net))

    def start(proxy: Proxy, account: str) -> EnvoyProcess:
        bootstrap = with_static_secrets(static_bootstrap(generate(snapshot, proxy)), certs, account)
        return stack.enter_context(run_envoy(bootstrap, workdir=workdir / proxy.name))

    apps = {
        name: stack.enter_context(HttpBackend(f"{name}-app", f"{net}.{host + 10}", 8080))
        for name, (host, _) in SIDECARS.items()
    }
    apps["permissive-misc"] = stack.enter_context(HttpBackend("permissive-misc", f"{net}.20", 7000))
    apps["plain"] = stack.enter_context(HttpBackend("plain-app", f"{net}.13", 8080))
    servers = {}
    for name, (host, account) in SIDECARS.items():
        proxy = Proxy.from_workload_entry(snapshot.workload(name), mode="proxy")
        servers[name] = start(with_identity(dataclasses.replace(proxy, app_address=f"{net}.{host + 10}")), account)
    client = Proxy(
        kind="sidecar",
        ip=f"{net}.1",
        name="client",
        mode="proxy",
        service_account="a",
        identity=spiffe_id("default", "a"),
    )
    return MtlsMesh(net, start(client, "a"), servers, apps)


def plaintext_answer(address: str, port: int) -> int | None:
    """The status a plaintext HTTP request straight to a sidecar's inbound port gets; None: refused."""
    try:
        return http_request(address, port, "/", timeout=5).status
    except (TimeoutError, http.client.HTTPException, ConnectionError):
        return None


def test_sidecars_talk_mutual_tls_and_the_app_sees_the_caller(mtls_mesh: MtlsMesh) -> None:
    reply = mtls_mesh.via_client("http://permissive/")
    assert (reply.status, reply.backend) == (200, "permissive-app")
    xfcc = mtls_mesh.apps["permissive"].requests[-1].headers["x-forwarded-client-cert"]
    assert f"By={TRUST}b" in xfcc and f"URI={TRUST}a" in xfcc
    server = mtls_mesh.servers["permissive"]
    assert server.stat(f"listener.{mtls_mesh.net}.10_8080.ssl.handshake") >= 1
    assert mtls_mesh.client.stat("cluster.outbound|80||permissive.default.svc.cluster.local.ssl.handshake") >= 1


def test_port_of_unknown_protocol_is_mutual_tls_as_tcp(mtls_mesh: MtlsMesh) -> None:
    """plait's clients offer ALPN "istio" only, so the server's tcp-mtls chain carries the bytes."""
    reply = mtls_mesh.via_client("http://permissive:7000/")
    assert (reply.status, reply.backend) == (200, "permissive-misc")
    assert "x-forwarded-client-cert" not in mtls_mesh.apps["permissive-misc"].requests[-1].headers
    assert mtls_mesh.servers["permissive"].stat(f"listener.{mtls_mesh.net}.10_7000.ssl.handshake") >= 1


def test_permissive_accepts_a_plaintext_client(mtls_mesh: MtlsMesh) -> None:
    assert plaintext_answer(f"{mtls_mesh.net}.10", 8080) == 200


def test_strict_refuses_a_plaintext_client_and_takes_mtls(mtls_mesh: MtlsMesh) -> None:
    strict = mtls_mesh.servers["strict"]
    before = mtls_mesh.apps["strict"].count
    assert plaintext_answer(f"{mtls_mesh.net}.11", 8080) is None
    assert mtls_mesh.apps["strict"].count == before
    assert strict.stat("tcp.inbound|8080|strict-mtls-refused-plaintext.downstream_cx_total") >= 1
    reply = mtls_mesh.via_client("http://strict/")
    assert (reply.status, reply.backend) == (200, "strict-app")
    assert strict.stat(f"listener.{mtls_mesh.net}.11_8080.ssl.handshake") >= 1


def test_client_refuses_a_server_with_the_wrong_identity(mtls_mesh: MtlsMesh) -> None:
    """`imposter`'s workloads run as service account b, but its sidecar shows a certificate for c."""
    reply = mtls_mesh.via_client("http://imposter/")
    assert reply.status == 503
    assert mtls_mesh.apps["imposter"].count == 0
    assert mtls_mesh.client.stat("cluster.outbound|80||imposter.default.svc.cluster.local.ssl.fail_verify_san") >= 1


def test_plaintext_to_a_workload_without_sidecar(mtls_mesh: MtlsMesh) -> None:
    reply = mtls_mesh.via_client("http://plain/")
    assert (reply.status, reply.backend) == (200, "plain-app")
    assert "x-forwarded-client-cert" not in mtls_mesh.apps["plain"].requests[-1].headers
