"""The control plane with real processes: `plait control-plane`, three Envoys run by `plait agent`
(state-of-the-world and delta xDS), loopback backends, changes made through the HTTP API as
`plait apply` makes them, and traffic observed through the client's sidecar."""

from __future__ import annotations

import collections
import contextlib
import re
import threading
import time
from pathlib import Path

import pytest
import yaml

from plait.client import ClientError
from plait.controlplane.testhooks import REJECTED_ROUTE_ENV
from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.http import http_request
from plait.testing.live import AgentProcess, ControlPlaneProcess, wait_until

BOOKINFO = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo" / "networking"
CONVERGE = 10.0  # seconds a change may take to show in traffic (it takes well under one)


def registry_yaml(net: str) -> str:
    """reviews v1/v2/v3 and ratings v1 backends as Services + WorkloadEntries; ratings has a sidecar."""
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "reviews"},
            "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080, "targetPort": 8080}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ratings"},
            "spec": {"selector": {"app": "ratings"}, "ports": [{"name": "http", "port": 9080}]},
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": "ratings-v1"},
            "spec": {"address": f"{net}.21", "labels": {"app": "ratings", "version": "v1"}},
        },
    ]
    for i, version in enumerate(("v1", "v2", "v3"), start=11):
        docs.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "WorkloadEntry",
                "metadata": {"name": f"reviews-{version}"},
                "spec": {"address": f"{net}.{i}", "labels": {"app": "reviews", "version": version}},
            }
        )
    return yaml.safe_dump_all(docs)


class Mesh:
    def __init__(
        self,
        net: str,
        control_plane: ControlPlaneProcess,
        agents: dict[str, AgentProcess],
        backends: dict[str, HttpBackend],
    ):
        self.net, self.cp, self.agents, self.backends = net, control_plane, agents, backends

    def get(self, url: str, headers: dict | None = None):
        return http_request(f"{self.net}.1", EXPLICIT_PROXY_PORT, url, headers, timeout=15)

    def landing(self, n: int = 30, headers: dict | None = None) -> collections.Counter:
        return collections.Counter(self.get("http://reviews:9080/", headers).backend for _ in range(n))

    def eventually(self, predicate, what: str) -> None:
        wait_until(predicate, CONVERGE, what, interval=0.1)

    def apply_sample(self, *names: str) -> None:
        self.cp.apply("\n---\n".join((BOOKINFO / n).read_text() for n in names))

    def remove_sample(self, *names: str) -> None:
        """Delete what a sample defines, if it is there (cleanup must not hide a test's failure)."""
        for name in names:
            try:
                self.cp.delete((BOOKINFO / name).read_text())
            except ClientError as exc:
                if exc.status != 404:
                    raise

    def all_synced(self) -> bool:
        return all(self.cp.synced(a.proxy_id) for a in self.agents.values())


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("live")
    # Routes with this name are made unacceptable to Envoy (only those: the push path is production's).
    hook = {REJECTED_ROUTE_ENV: "plait-test-rejected"}
    with loopback_subnet() as net, ControlPlaneProcess(workdir / "mesh", workdir, env=hook) as cp:
        cp.apply(registry_yaml(net))
        backends = {
            f"reviews-{v}": HttpBackend(f"reviews-{v}", f"{net}.{i}", 8080)
            for i, v in enumerate(("v1", "v2", "v3"), start=11)
        }
        backends["ratings-v1"] = HttpBackend("ratings-v1", f"{net}.121", 9080)  # the app behind its sidecar
        for b in backends.values():
            b.__enter__()
        gateway_yaml = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: public}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 8080, name: http, protocol: HTTP}}, hosts: ["*"], bind: {net}.2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: public}}
spec:
  hosts: ["*"]
  gateways: [public]
  http: [{{route: [{{destination: {{host: ratings}}}}]}}]
"""
        cp.apply(gateway_yaml)
        agents = {
            "client": AgentProcess(
                cp, workdir, mode="proxy", name="client", ip=f"{net}.1", labels={"app": "client"}, xds="sotw"
            ),
            "ratings": AgentProcess(
                cp,
                workdir,
                mode="proxy",
                name="ratings-v1",
                ip=f"{net}.21",
                labels={"app": "ratings", "version": "v1"},
                app_address=f"{net}.121",
                xds="delta",
            ),
            "gateway": AgentProcess(
                cp,
                workdir,
                mode="gateway",
                name="ingressgateway",
                namespace="istio-system",
                ip=f"{net}.2",
                labels={"istio": "ingressgateway"},
                xds="delta",
            ),
        }
        try:
            for agent in agents.values():
                agent.start()
            m = Mesh(net, cp, agents, backends)
            m.eventually(m.all_synced, "every proxy SYNCED")
            yield m
        finally:
            for agent in agents.values():
                agent.stop()
            for b in backends.values():
                b.__exit__(None, None, None)


class Load:
    """A steady request loop in a thread, counting failures (anything but 200)."""

    def __init__(self, mesh: Mesh, url: str = "http://reviews:9080/"):
        self.mesh, self.url = mesh, url
        self.results: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.results.append(self.mesh.get(self.url).status)
            except OSError:
                self.results.append(0)
            time.sleep(0.01)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(20)

    @property
    def failures(self) -> list[int]:
        return [s for s in self.results if s != 200]


def all_synced(mesh: Mesh):
    """A predicate: every proxy has acknowledged the newest configuration (STALE while it is on its way)."""
    return lambda: all(t["state"] == "SYNCED" for s in mesh.cp.api.get("/debug/syncz") for t in s["types"].values())


def test_every_proxy_is_synced_with_its_envoy_version(mesh: Mesh) -> None:
    mesh.eventually(all_synced(mesh), "every proxy to be SYNCED")  # the last registration may be on its way
    statuses = mesh.cp.statuses()
    for agent in mesh.agents.values():
        status = statuses[agent.proxy_id]
        # a sidecar on delta xDS is scoped: its virtual hosts come one by one (VHDS)
        scoped = status["stream"] == "delta" and agent.proxy_id.startswith("sidecar~")
        types = ("cds", "lds", "eds", "rds") + (("vhds",) if scoped else ())
        assert {t: s["state"] for t, s in status["types"].items()} == dict.fromkeys(types, "SYNCED")
        assert status["envoy_version"].startswith("1.")
    assert {statuses[a.proxy_id]["stream"] for a in mesh.agents.values()} == {"sotw", "delta"}


def test_traffic_through_sidecars_and_the_gateway(mesh: Mesh) -> None:
    assert mesh.get("http://ratings:9080/").backend == "ratings-v1"  # client sidecar → ratings sidecar → app
    reply = http_request(f"{mesh.net}.2", 8080, "/", {"Host": "anything.example"})
    assert reply.status == 200 and reply.backend == "ratings-v1"
    assert set(mesh.landing(40)) == {"reviews-v1", "reviews-v2", "reviews-v3"}


def test_applying_a_virtual_service_moves_traffic_and_deleting_it_moves_it_back(mesh: Mesh) -> None:
    mesh.apply_sample("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    try:
        mesh.eventually(lambda: set(mesh.landing(10)) == {"reviews-v1"}, "all-v1 in force")
        assert set(mesh.landing(30)) == {"reviews-v1"}
    finally:
        mesh.remove_sample("virtual-service-all-v1.yaml")
    mesh.eventually(lambda: len(mesh.landing(30)) == 3, "round robin over v1, v2, v3 again")


def test_bookinfo_samples_give_the_documented_behaviour(mesh: Mesh) -> None:
    jason = {"end-user": "jason"}
    try:
        mesh.apply_sample("destination-rule-all.yaml", "virtual-service-reviews-jason-v2-v3.yaml")
        mesh.eventually(lambda: set(mesh.landing(10)) == {"reviews-v3"}, "jason-v2-v3 in force")
        assert set(mesh.landing(20, jason)) == {"reviews-v2"}
        assert set(mesh.landing(20)) == {"reviews-v3"}

        mesh.apply_sample("virtual-service-reviews-test-v2.yaml")
        mesh.eventually(lambda: set(mesh.landing(10)) == {"reviews-v1"}, "test-v2 in force")
        assert set(mesh.landing(20, jason)) == {"reviews-v2"}

        mesh.apply_sample("virtual-service-reviews-80-20.yaml")
        mesh.eventually(lambda: "reviews-v2" in mesh.landing(20), "80/20 in force (v2 reached without jason)")
        counts = mesh.landing(400)
        assert set(counts) == {"reviews-v1", "reviews-v2"}
        assert 320 - 4.5 * 8 <= counts["reviews-v1"] <= 320 + 4.5 * 8  # binomial(400, 0.8): sd 8

        mesh.apply_sample("virtual-service-ratings-test-delay.yaml")
        mesh.eventually(lambda: mesh.get("http://ratings:9080/", jason).elapsed >= 6.9, "the 7s delay for jason")
        assert mesh.get("http://ratings:9080/").elapsed < 1.0  # others are not delayed

        mesh.apply_sample("virtual-service-ratings-test-abort.yaml")
        mesh.eventually(lambda: mesh.get("http://ratings:9080/", jason).status == 500, "abort for jason")
        assert mesh.get("http://ratings:9080/").status == 200
    finally:
        mesh.remove_sample(
            "virtual-service-reviews-80-20.yaml",
            "virtual-service-ratings-test-abort.yaml",
            "virtual-service-ratings-test-delay.yaml",
        )


def test_an_endpoint_added_and_removed_follows_eds_without_failed_requests(mesh: Mesh) -> None:
    extra = HttpBackend("reviews-v4", f"{mesh.net}.14", 8080)
    with extra, Load(mesh) as load:
        mesh.cp.register("reviews-v4", extra.address, {"app": "reviews", "version": "v4"})
        mesh.eventually(lambda: extra.count > 0, "the new endpoint to receive traffic")
        mesh.cp.deregister("reviews-v4")
        time.sleep(1.0)  # give EDS time to remove it
        seen = extra.count
        time.sleep(1.0)
        assert extra.count == seen, "the removed endpoint still receives requests"
    assert len(load.results) > 50 and load.failures == []


NACKED_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-pinned}
spec:
  hosts: [reviews]
  http:
  - name: plait-test-rejected
    route: [{destination: {host: reviews, subset: v1}}]
"""


def test_a_resource_envoy_rejects_is_nacked_and_the_last_good_config_keeps_serving(mesh: Mesh) -> None:
    """The control plane's test hook makes this route unacceptable to Envoy: the routes are NACKed."""
    client = mesh.agents["client"].proxy_id
    before = mesh.landing(30)
    mesh.cp.apply(NACKED_VS)
    try:
        mesh.eventually(lambda: mesh.cp.statuses()[client]["types"]["rds"]["state"] == "NACKED", "RDS NACKED")
        nack = mesh.cp.statuses()[client]["types"]["rds"]
        assert "may not be modified" in nack["nack_message"]
        assert set(mesh.landing(30)) == set(before)  # the last good routes still serve: not pinned to v1
    finally:
        mesh.cp.delete(NACKED_VS)
    mesh.eventually(lambda: mesh.cp.synced(client), "SYNCED again once the bad config is gone")


def test_killing_the_control_plane_fails_no_request_and_a_restart_converges(mesh: Mesh) -> None:
    with Load(mesh) as load:
        mesh.cp.signal(__import__("signal").SIGKILL)
        mesh.cp.process.wait(10)
        time.sleep(1.0)
        assert all(a.ready() for a in mesh.agents.values())  # Envoys keep serving their last config
        mesh.cp.start()  # same ports, same config directory
        mesh.eventually(mesh.all_synced, "every proxy reconnected and SYNCED")
    assert len(load.results) > 50 and load.failures == []
    mesh.apply_sample("destination-rule-all.yaml", "virtual-service-reviews-test-v2.yaml")
    try:
        mesh.eventually(lambda: set(mesh.landing(10)) == {"reviews-v1"}, "a change after the restart")
    finally:
        mesh.remove_sample("virtual-service-reviews-test-v2.yaml")


def test_proxy_status_cli_shows_every_proxy(mesh: Mesh) -> None:
    from typer.testing import CliRunner

    from plait.cli.main import app

    mesh.eventually(all_synced(mesh), "every proxy to be SYNCED")  # the previous test's last change may be on its way
    result = CliRunner().invoke(
        app, ["proxy-status", "-o", "wide", "--control-plane", f"127.0.0.1:{mesh.cp.http_port}"]
    )
    assert result.exit_code == 0, result.output
    for agent in mesh.agents.values():  # named POD.NAMESPACE as istioctl names them; the node id in wide output
        row = next(row.split() for row in result.output.splitlines() if agent.proxy_id in row)
        assert row[0] == f"{agent.name}.{agent.namespace}" and row.count("SYNCED") == 4


def test_apply_rejects_bad_config_and_changes_nothing(mesh: Mesh) -> None:
    with pytest.raises(ClientError) as rejected:
        mesh.cp.apply(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n"
            "spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}], timeout: soon}]}\n"
        )
    assert rejected.value.status == 400
    assert rejected.value.problems[0]["path"] == "spec.http[0].timeout"
    assert not any(i["metadata"]["name"] == "x" for i in mesh.cp.api.get("/api/v1/config")["items"])


def cli(mesh: Mesh, *args: str) -> str:
    from typer.testing import CliRunner

    from plait.cli.main import app

    result = CliRunner().invoke(app, [*args, "--control-plane", f"127.0.0.1:{mesh.cp.http_port}"])
    assert result.exit_code == 0, result.output
    return result.output


def test_proxy_status_for_one_proxy_compares_sent_with_held(mesh: Mesh) -> None:
    text = cli(mesh, "proxy-status", "client.default")
    assert "Envoy holds what the control plane sent." in text
    assert text.count("SYNCED") == 4


def test_proxy_config_finds_the_envoy_through_the_control_plane(mesh: Mesh) -> None:
    routes = cli(mesh, "proxy-config", "route", "client.default")
    assert "explicit_proxy" in routes and "reviews.default.svc.cluster.local:9080" in routes
    endpoints = cli(mesh, "proxy-config", "endpoint", "client.default")
    assert f"{mesh.net}.11:8080" in endpoints


def test_version_and_metrics(mesh: Mesh) -> None:
    assert "control plane version: 0." in cli(mesh, "version")
    metrics = mesh.cp.api.get("/metrics")
    for name in (
        "plait_xds_pushes_total",
        "plait_xds_push_seconds",
        "plait_xds_connected_proxies 3.0",
        "plait_xds_nacks_total",
        "plait_xds_convergence_seconds",
        "plait_snapshot_rebuilds_total",
        "plait_xds_refused_proxies 0.0",
    ):
        assert name in metrics, name
    # The test hook is on, yet the production push path ran: route-only changes (deleting a VirtualService
    # above) regenerated only routes.
    routes_only = re.search(r'^plait_xds_generations_total\{kind="routes"\} (\S+)$', metrics, re.M)
    assert routes_only and float(routes_only.group(1)) >= 1, metrics


def test_cli_apply_get_and_delete(mesh: Mesh, tmp_path: Path) -> None:
    sample = BOOKINFO / "virtual-service-reviews-test-v2.yaml"
    assert "VirtualService default/reviews created" in cli(mesh, "apply", "-f", str(sample))
    assert "VirtualService default/reviews unchanged" in cli(mesh, "apply", "-f", str(sample))
    listed = yaml.safe_load(cli(mesh, "get", "vs", "reviews", "-o", "yaml"))
    assert listed["spec"]["http"][0]["match"][0]["headers"]["end-user"] == {"exact": "jason"}
    stored = mesh.cp.config_dir / "default" / "virtualservice-reviews.yaml"
    assert stored.exists()  # persisted, so a restart reloads it
    assert "VirtualService default/reviews deleted" in cli(mesh, "delete", "-f", str(sample))
    assert not stored.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(sample.read_text().replace("subset: v2", "subset: v2\n    timeout: soon"))
    from typer.testing import CliRunner

    from plait.cli.main import app

    result = CliRunner().invoke(app, ["apply", "-f", str(bad), "--control-plane", f"127.0.0.1:{mesh.cp.http_port}"])
    assert result.exit_code == 1
    assert "nothing was applied" in result.output


def test_bad_api_requests_get_400_with_a_reason(mesh: Mesh) -> None:
    for body in (b"not json", b'{"address": "10.0.0.1", "ports": {"http": "x"}}'):
        with pytest.raises(ClientError) as refused:
            mesh.cp.api.request("PUT", "/api/v1/workloads/default/broken", body, "application/json")
        assert refused.value.status == 400
    with pytest.raises(ClientError) as missing:
        mesh.cp.api.request("PUT", "/api/v1/workloads/default/nobody/ready", b'{"ready": true}', "application/json")
    assert missing.value.status == 404
    assert mesh.cp.api.get("/ready")  # still serving


def test_an_agent_registers_its_workload_and_leaves_eds_before_it_stops(mesh: Mesh, tmp_path: Path) -> None:
    """`plait agent --register`: the workload joins EDS once its proxy is ready, and on SIGTERM it
    leaves every EDS while its Envoy drains — so callers see no failed request."""
    app = HttpBackend("reviews-v5", f"{mesh.net}.115", 8080)
    agent = AgentProcess(
        mesh.cp,
        tmp_path,
        mode="proxy",
        name="reviews-v5",
        ip=f"{mesh.net}.15",
        labels={"app": "reviews", "version": "v5"},
        app_address=app.address,
        extra=[
            "--register",
            "http=8080",
            "--control-plane-api",
            f"http://127.0.0.1:{mesh.cp.http_port}",
            "--drain-duration",
            "2",
        ],
    )
    with app, Load(mesh) as load:
        agent.start()
        try:
            mesh.eventually(lambda: app.count > 0, "the registered workload to receive traffic through its sidecar")
            assert any(w["name"] == "reviews-v5" and w["ready"] for w in mesh.cp.api.get("/api/v1/workloads"))
        finally:
            agent.stop()
        seen = app.count
        time.sleep(0.5)
        assert app.count == seen
    assert not any(w["name"] == "reviews-v5" for w in mesh.cp.api.get("/api/v1/workloads"))
    assert len(load.results) > 30 and load.failures == []


# ------------------------------------------------------------------ gateway credentials over SDS (ADS)


def self_signed(host: str) -> tuple[str, str]:
    """A certificate for `host` (its own CA) and its key, in PEM."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def https_get(address: str, port: int, host: str, ca_pem: str) -> tuple[int, bytes, bytes]:
    """(status, body, the server's certificate in DER) of GET / with SNI and Host `host`, the server
    verified against `ca_pem` (ssl.SSLCertVerificationError when it does not match)."""
    import http.client
    import socket
    import ssl

    context = ssl.create_default_context(cadata=ca_pem)
    with (
        socket.create_connection((address, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        return response.status, response.read(), tls.getpeercert(binary_form=True)


def secure_gateway_yaml(net: str, with_secret: str | None) -> str:
    """An HTTPS Gateway server on the ingress gateway whose certificate comes from credentialName
    `secure-cred` (a Secret in the gateway's namespace, istio-system), routed to ratings."""
    docs = f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [secure.example.com]
    bind: {net}.2
    tls: {{mode: SIMPLE, credentialName: secure-cred}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure}}
spec:
  hosts: [secure.example.com]
  gateways: [secure]
  http: [{{route: [{{destination: {{host: ratings}}}}]}}]
"""
    return docs + (f"---\n{with_secret}" if with_secret else "")


def tls_secret(cert: str, key: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "secure-cred", "namespace": "istio-system"},
            "stringData": {"tls.crt": cert, "tls.key": key},
        }
    )


def test_a_gateway_credential_is_served_over_ads_and_a_missing_one_is_refused(mesh: Mesh) -> None:
    """credentialName → SDS over ADS from a Secret: the gateway answers HTTPS with that certificate;
    the Secret deleted, the gateway's new config is refused (named in proxy-status) and the last good
    one keeps serving; the sidecars never hold the key."""
    import ssl

    cert, key = self_signed("secure.example.com")
    gateway = mesh.agents["gateway"].proxy_id
    secret = tls_secret(cert, key)
    mesh.cp.apply(secure_gateway_yaml(mesh.net, secret))
    try:
        mesh.eventually(
            lambda: https_get(f"{mesh.net}.2", 8443, "secure.example.com", cert)[0] == 200,
            "HTTPS on the gateway with the credential",
        )
        status, body, served = https_get(f"{mesh.net}.2", 8443, "secure.example.com", cert)
        assert status == 200 and b"ratings-v1" in body
        assert served == ssl.PEM_cert_to_DER_cert(cert)
        other, _ = self_signed("secure.example.com")
        with pytest.raises(ssl.SSLCertVerificationError):  # the check above is a real check
            https_get(f"{mesh.net}.2", 8443, "secure.example.com", other)
        statuses = mesh.cp.statuses()
        assert statuses[gateway]["types"]["sds"]["state"] == "SYNCED"
        assert all("sds" not in statuses[a.proxy_id]["types"] for n, a in mesh.agents.items() if n != "gateway")

        mesh.cp.delete(secret)
        mesh.eventually(lambda: mesh.cp.statuses()[gateway]["refused"], "the gateway's new config refused")
        refused = mesh.cp.statuses()[gateway]["refused"]
        assert any("refers to secret secure-cred, which nothing serves" in r for r in refused), refused
        assert "plait_xds_refused_proxies 1.0" in mesh.cp.api.get("/metrics")
        assert "REFUSED (the last good config stays): lds " in cli(mesh, "proxy-status", "ingressgateway")
        status, _, served = https_get(f"{mesh.net}.2", 8443, "secure.example.com", cert)  # the last good config
        assert status == 200 and served == ssl.PEM_cert_to_DER_cert(cert)
    finally:
        mesh.cp.delete(secure_gateway_yaml(mesh.net, None))
        with contextlib.suppress(ClientError):
            mesh.cp.delete(secret)
    mesh.eventually(lambda: not mesh.cp.statuses()[gateway]["refused"], "the gateway consistent again")
    mesh.eventually(all_synced(mesh), "every proxy SYNCED")
