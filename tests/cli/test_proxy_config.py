"""plait proxy-config reads a real Envoy's admin API and prints istioctl-style tables; `secret`
decodes the certificates Envoy holds (static secrets and one delivered over file-based SDS)."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from plait.api import load_paths
from plait.cli import proxies
from plait.cli.envoyconfig import chain_root
from plait.cli.main import app
from plait.client import ClientError, Http
from plait.model import MeshSnapshot, Proxy
from plait.testing.envoy import run_envoy
from plait.xds.generator import generate
from plait.xds.static import static_bootstrap

TESTDATA = Path(__file__).parents[1] / "xds" / "testdata"


@pytest.fixture(scope="module")
def envoy(tmp_path_factory):
    snapshot = MeshSnapshot(load_paths([TESTDATA / "02-bookinfo-jason.input.yaml"]).raise_for_errors())
    proxy = Proxy.from_workload_entry(snapshot.workload("productpage-v1"), mode="capture")
    with run_envoy(static_bootstrap(generate(snapshot, proxy)), workdir=tmp_path_factory.mktemp("envoy")) as e:
        yield e


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_clusters_table(envoy) -> None:
    text = run("proxy-config", "cluster", "productpage", "--admin", envoy.admin_address)
    assert "SERVICE FQDN" in text
    line = next(row for row in text.splitlines() if "reviews.default.svc.cluster.local" in row and " v2 " in row)
    assert "9080" in line and "outbound" in line


def test_listeners_table_shows_chains_and_destinations(envoy) -> None:
    text = run("proxy-config", "listener", "productpage", "--admin", envoy.admin_address)
    assert "virtualOutbound" in text and "15001" in text
    assert "Cluster: PassthroughCluster" in text
    assert "Inline Route: 9080" in text  # the static bootstrap inlines RDS


def test_endpoints_table_and_yaml_output(envoy) -> None:
    text = run("proxy-config", "endpoint", "productpage", "--admin", envoy.admin_address)
    assert "10.244.0.13:9080" in text and "outbound|9080|v1|reviews.default.svc.cluster.local" in text
    assert "name: outbound|9080||details.default.svc.cluster.local" in run(
        "proxy-config", "cluster", "productpage", "--admin", envoy.admin_address, "-o", "yaml"
    )


def test_unknown_kind_is_refused() -> None:
    result = CliRunner().invoke(app, ["proxy-config", "certificates", "x", "--admin", "127.0.0.1:1"])
    assert result.exit_code == 2 and "KIND is one of" in result.output


# ------------------------------------------------------------------ secrets

NOW = datetime.datetime.now(datetime.UTC)
SPIFFE = "spiffe://cluster.local/ns/default/sa/productpage"
LONG_SPIFFE = "spiffe://cluster.local/ns/bookinfo-production-eu-west/sa/productpage-with-a-long-service-account"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_cert(
    subject: x509.Name,
    key,
    *,
    issuer: x509.Name | None = None,
    issuer_key=None,
    ca: bool = False,
    uri: str | None = None,
    dns: str | None = None,
    not_before: datetime.datetime | None = None,
    hours: float = 24,
) -> x509.Certificate:
    """A certificate for `key`, signed by `issuer_key` (self-signed without one)."""
    start = not_before or NOW - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(hours=hours))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if uri or dns:
        names = [x509.UniformResourceIdentifier(uri)] if uri else [x509.DNSName(dns)]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def key_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def tls_secret(name: str, chain: str, key) -> dict:
    return {
        "name": name,
        "tls_certificate": {
            "certificate_chain": {"inline_string": chain},
            "private_key": {"inline_string": key_pem(key)},
        },
    }


class Pki:
    """A mesh root, workload certificates under it (directly and through an intermediate), an
    expired one, an impostor that names the root as issuer but is signed by another key, and a
    gateway certificate from an unrelated CA."""

    def __init__(self) -> None:
        self.root_key, self.other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        self.root = make_cert(_name("plait root"), self.root_key, ca=True)
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        under_root = {"issuer": self.root.subject, "issuer_key": self.root_key}
        self.leaf = make_cert(x509.Name([]), self.leaf_key, uri=SPIFFE, hours=1, **under_root)
        self.intermediate = make_cert(_name("plait intermediate"), self.other_key, ca=True, **under_root)
        self.via_intermediate = make_cert(
            x509.Name([]), self.leaf_key, uri=SPIFFE, issuer=self.intermediate.subject, issuer_key=self.other_key
        )
        self.expired = make_cert(
            x509.Name([]),
            self.leaf_key,
            uri=SPIFFE,
            hours=1,
            not_before=NOW - datetime.timedelta(hours=3),
            **under_root,
        )
        self.impostor = make_cert(
            x509.Name([]), self.leaf_key, uri=LONG_SPIFFE, issuer=self.root.subject, issuer_key=self.other_key
        )
        self.gateway_root = make_cert(_name("acme root"), self.other_key, ca=True)
        self.gateway = make_cert(
            _name("bookinfo.example.com"),
            self.leaf_key,
            dns="bookinfo.example.com",
            issuer=self.gateway_root.subject,
            issuer_key=self.other_key,
        )

    def bootstrap(self, sds_file: Path) -> dict:
        """Static secrets as the agent's SDS would name them, plus a gateway credential that a
        cluster takes from file-based SDS (so Envoy lists it among its dynamic secrets)."""
        sds_file.write_text(
            json.dumps(
                {
                    "resources": [
                        {"@type": SECRET, **tls_secret("bookinfo-credential", pem(self.gateway), self.leaf_key)}
                    ]
                }
            )
        )
        sds = {"name": "bookinfo-credential", "sds_config": {"path_config_source": {"path": str(sds_file)}}}
        tls = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {"tls_certificate_sds_secret_configs": [sds]},
            },
        }
        return {
            "node": {"id": "router~127.0.0.1~gw.istio-system~istio-system.svc.cluster.local", "cluster": "gw"},
            "static_resources": {
                "secrets": [
                    tls_secret("default", pem(self.leaf), self.leaf_key),
                    {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_string": pem(self.root)}}},
                    tls_secret("rotated", pem(self.via_intermediate, self.intermediate), self.leaf_key),
                    tls_secret("stale", pem(self.expired), self.leaf_key),
                    tls_secret("impostor", pem(self.impostor), self.leaf_key),
                ],
                "clusters": [
                    {
                        "name": "to-gateway",
                        "type": "STATIC",
                        "transport_socket": tls,
                        "load_assignment": {"cluster_name": "to-gateway", "endpoints": []},
                    }
                ],
            },
        }


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def envoy_with_secrets(pki, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("envoy-secrets")
    with run_envoy(pki.bootstrap(workdir / "sds.json"), workdir=workdir) as e:
        yield e


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.split() and line.split()[0] == name)


def test_secret_table_shows_identity_serial_validity_and_root(envoy_with_secrets, pki) -> None:
    text = run("proxy-config", "secret", "gw", "--admin", envoy_with_secrets.admin_address)
    for column in (
        "RESOURCE NAME",
        "TYPE",
        "STATUS",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
        "IDENTITY",
        "ROOT",
    ):
        assert column in text
    default = _row(text, "default")
    assert "Cert Chain" in default and "STATIC" in default and " true " in default
    assert format(pki.leaf.serial_number, "x") in default and SPIFFE in default
    assert pki.leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ") in default
    root_fingerprint = pki.root.fingerprint(hashes.SHA256()).hex()
    assert f"chains to ROOTCA (plait root sha256:{root_fingerprint[:12]})" in default
    rootca = _row(text, "ROOTCA")
    assert " CA " in rootca and format(pki.root.serial_number, "x") in rootca and root_fingerprint[:12] in rootca


def test_secret_table_flags_expired_unverified_and_foreign_certificates(envoy_with_secrets, pki) -> None:
    text = run("proxy-config", "secret", "gw", "--admin", envoy_with_secrets.admin_address)
    assert "chains to ROOTCA" in _row(text, "rotated")  # leaf → intermediate → the root in ROOTCA
    assert " false " in _row(text, "stale")
    impostor = _row(text, "impostor")  # names the root as issuer, but the root's key did not sign it
    assert LONG_SPIFFE in impostor  # a wide row is not cut short
    assert impostor.rstrip().endswith("NOT VERIFIED: issuer in no CA secret (plait root)")
    gateway = _row(text, "bookinfo-credential")  # the one delivered over (file-based) SDS
    assert "ACTIVE" in gateway and "bookinfo.example.com" in gateway
    assert gateway.rstrip().endswith("NOT VERIFIED: issuer in no CA secret (acme root)")


def test_secret_yaml_and_json_give_every_certificate(envoy_with_secrets, pki) -> None:
    dumped = yaml.safe_load(
        run("proxy-config", "secret", "gw", "--admin", envoy_with_secrets.admin_address, "-o", "yaml")
    )
    by_name = {s["name"]: s for s in dumped}
    assert set(by_name) == {"default", "ROOTCA", "rotated", "stale", "impostor", "bookinfo-credential"}
    default = by_name["default"]
    assert default["identity"] == [SPIFFE] and default["valid"] is True and default["type"] == "Cert Chain"
    assert default["root"] == {
        "subject": "CN=plait root,O=cluster.local",
        "chains_to": "ROOTCA",
        "sha256": pki.root.fingerprint(hashes.SHA256()).hex(),
    }
    assert default["certificates"][0]["serial"] == format(pki.leaf.serial_number, "x")
    assert [c["subject"] for c in by_name["rotated"]["certificates"]] == ["", "CN=plait intermediate,O=cluster.local"]
    assert by_name["stale"]["certificates"][0]["validity"] == "expired" and by_name["stale"]["valid"] is False
    assert by_name["bookinfo-credential"]["status"] == "ACTIVE"
    assert by_name["bookinfo-credential"]["identity"] == ["bookinfo.example.com"]
    assert by_name["bookinfo-credential"]["root"]["chains_to"] is None
    as_json = json.loads(run("proxy-config", "secret", "gw", "--admin", envoy_with_secrets.admin_address, "-o", "json"))
    assert as_json == dumped


def test_a_proxy_without_identity_has_no_secrets(envoy) -> None:
    text = run("proxy-config", "secret", "productpage", "--admin", envoy.admin_address)
    assert "no secrets: this proxy has no workload identity" in text and "--token-file" in text
    assert (
        yaml.safe_load(run("proxy-config", "secret", "productpage", "--admin", envoy.admin_address, "-o", "yaml")) == []
    )


def test_a_proxy_with_identity_but_no_tls_yet_says_so(tmp_path) -> None:
    node = {
        "id": "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local",
        "cluster": "productpage",
        "metadata": {"PLAIT_IDENTITY": SPIFFE},
    }
    with run_envoy({"node": node}, workdir=tmp_path) as envoy:
        text = run("proxy-config", "secret", "productpage", "--admin", envoy.admin_address)
    assert f"no secrets yet: this proxy's identity is {SPIFFE}, but nothing in its configuration uses" in text


def test_chain_root_checks_every_link_and_the_anchor(pki) -> None:
    trust = {"ROOTCA": [pki.root]}
    assert chain_root([pki.via_intermediate, pki.intermediate, pki.root], trust)["chains_to"] == "ROOTCA"
    missing = chain_root([pki.via_intermediate, pki.root], trust)  # the intermediate left out
    assert missing == {"chains_to": None, "problem": "chain broken: certificate 1 not signed by certificate 2"}
    foreign = chain_root([pki.gateway_root], trust)
    assert foreign["chains_to"] is None and foreign["problem"] == "self-signed, in no CA secret"
    assert chain_root([pki.leaf], {"acme": [pki.gateway_root], "ROOTCA": [pki.root]})["chains_to"] == "ROOTCA"


def test_a_secret_the_agent_has_not_served_yet_is_warming(tmp_path) -> None:
    """Envoy asks the agent's SDS socket for `default`; nothing answers, so it stays warming."""
    sds = {
        "name": "default",
        "sds_config": {
            "initial_fetch_timeout": "0.1s",
            "resource_api_version": "V3",
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
            },
        },
    }
    h2 = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    socket = {"pipe": {"path": str(tmp_path / "sds.sock")}}
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {"tls_certificate_sds_secret_configs": [sds]},
        },
    }
    bootstrap = {
        "node": {"id": "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local", "cluster": "p"},
        "static_resources": {
            "clusters": [
                {
                    "name": "sds-grpc",
                    "type": "STATIC",
                    "typed_extension_protocol_options": h2,
                    "load_assignment": {
                        "cluster_name": "sds-grpc",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket}}]}],
                    },
                },
                {
                    "name": "outbound",
                    "type": "STATIC",
                    "transport_socket": tls,
                    "load_assignment": {"cluster_name": "outbound", "endpoints": []},
                },
            ]
        },
    }
    with run_envoy(bootstrap, workdir=tmp_path / "envoy") as envoy:
        row = _row(run("proxy-config", "secret", "productpage", "--admin", envoy.admin_address), "default")
    assert "WARMING" in row and "not received yet: is the SDS server (the proxy's agent) serving?" in row


# ------------------------------------------------------------------ where the admin API is read


def status_of(mode: str, kind: str = "sidecar") -> dict:
    return {
        "proxy_id": f"{kind}~10.244.0.9~ratings-v1-0.default~default.svc.cluster.local",
        "admin_address": "127.0.0.1:15123",
        "proxy": {"name": "ratings-v1-0", "mode": mode, "kind": kind},
    }


def test_a_capture_mode_pod_is_read_inside_its_network_namespace(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(proxies, "NETNS_DIR", tmp_path)
    (tmp_path / "plait-ratings-v1-0").touch()  # what `ip netns add` leaves in /run/netns
    with proxies.admin_api(status_of("capture"), None) as envoy:
        assert envoy == proxies.PodAdmin("plait-ratings-v1-0", "127.0.0.1:15123")
    # an explicit-proxy sidecar, a gateway (on the host), --admin, or no such namespace: plain HTTP
    for status, override in (
        (status_of("proxy"), None),
        (status_of("capture", "router"), None),
        (status_of("capture"), "127.0.0.1:9"),
    ):
        with proxies.admin_api(status, override) as envoy:
            assert isinstance(envoy, Http)
    (tmp_path / "plait-ratings-v1-0").unlink()
    with proxies.admin_api(status_of("capture"), None) as envoy:
        assert envoy.base == "http://127.0.0.1:15123"


def test_a_pod_namespace_that_is_gone_is_a_clear_error() -> None:
    with pytest.raises(
        ClientError,
        match=r"cannot reach the proxy's Envoy admin API at http://127.0.0.1:1/ready "
        r"in network namespace plait-no-such-pod-\d+: ",
    ):
        proxies.PodAdmin(f"plait-no-such-pod-{os.getpid()}", "127.0.0.1:1").get("/ready")


def test_the_control_plane_is_looked_for_in_a_cluster_only_when_a_kubeconfig_says_so(monkeypatch) -> None:
    monkeypatch.delenv("PLAIT_CONTROL_PLANE", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert proxies.cluster_of(None, None, "istio-system", "") is None  # the local mesh
    assert proxies.cluster_of(None, "/k", "istio-system", "") == proxies.Cluster("/k")
    monkeypatch.setenv("KUBECONFIG", "/env/k")
    assert proxies.cluster_of(None, None, "mesh", "1-9-1") == proxies.Cluster(None, "mesh", "1-9-1")
    assert proxies.cluster_of(None, None, "mesh", "1-9-1").selector == "app=istiod,istio.io/rev=1-9-1"
    assert proxies.cluster_of("localhost:15014", None, "istio-system", "") is None  # named: that one
    monkeypatch.setenv("PLAIT_CONTROL_PLANE", "cp:15014")
    assert proxies.cluster_of(None, None, "istio-system", "") is None
    assert proxies.cluster_of(None, "/k", "istio-system", "") == proxies.Cluster("/k")  # --kubeconfig wins
