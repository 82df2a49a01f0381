"""Istio's standard metrics from real Envoys: a client sidecar calls a server sidecar over mutual TLS
(certificates from the control plane's CA), and both proxies' port-15090 endpoints are read as
Prometheus reads them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plait.client import Http
from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.telemetry.metrics import HTTP_LABELS
from plait.telemetry.prometheus import istio_exposition
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.http import http_request
from plait.testing.live import AgentProcess, ControlPlaneProcess, free_port, wait_until

N = 7
SERVICE_PORT = 9080
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/server"


def mesh_yaml(net: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: default}}
spec: {{selector: {{app: server}}, ports: [{{name: http, port: {SERVICE_PORT}}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: server-v1, namespace: default}}
spec:
  address: {net}.21
  labels: {{app: server, version: v1, security.istio.io/tlsMode: istio}}
  serviceAccount: server
  ports: {{http: {SERVICE_PORT}}}
---
apiVersion: v1
kind: Service
metadata: {{name: nowhere, namespace: default}}
spec: {{selector: {{app: nowhere}}, ports: [{{name: http, port: {SERVICE_PORT}}}]}}
"""


class Proxies:
    def __init__(self, net: str, client: AgentProcess, server: AgentProcess, backend: HttpBackend):
        self.net, self.client, self.server, self.backend = net, client, server, backend

    def call(self, url: str, headers: dict | None = None) -> int:
        return http_request(f"{self.net}.1", EXPLICIT_PROXY_PORT, url, headers, timeout=15).status


def agent(cp: ControlPlaneProcess, workdir: Path, *, name: str, sa: str, ip: str, labels: dict, **kw) -> AgentProcess:
    token = cp.issue_token("default", sa, name)
    process = AgentProcess(
        cp,
        workdir,
        mode="proxy",
        name=name,
        ip=ip,
        labels=labels,
        tls=True,
        extra_args=[
            "--service-account",
            sa,
            "--token-file",
            str(token),
            "--root-cert",
            str(cp.root_cert_path),
            "--ca-address",
            cp.ca_address,
            "--prometheus-port",
            str(free_port()),
        ],
        **kw,
    )
    process.prometheus_port = int(process.args[process.args.index("--prometheus-port") + 1])
    return process


@pytest.fixture(scope="module")
def proxies(tmp_path_factory) -> Iterator[Proxies]:
    work = tmp_path_factory.mktemp("telemetry")
    (work / "mesh").mkdir()
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        (work / "mesh" / "mesh.yaml").write_text(mesh_yaml(net))
        cp = stack.enter_context(ControlPlaneProcess(work / "mesh", work, extra_args=["--xds-auth", "strict"]))
        backend = stack.enter_context(HttpBackend("server-v1", f"{net}.121", SERVICE_PORT))
        labels = {"app": "server", "version": "v1"}
        server = agent(cp, work, name="server-v1", sa="server", ip=f"{net}.21", labels=labels, app_address=f"{net}.121")
        client = agent(
            cp, work, name="client-v1", sa="client", ip=f"{net}.1", labels={"app": "client", "version": "v1"}
        )
        stack.enter_context(server)
        stack.enter_context(client)
        wait_until(lambda: cp.synced(client.proxy_id) and cp.synced(server.proxy_id), 20, "both proxies SYNCED")
        certificates = lambda: all(p.admin.get("/certs")["certificates"] for p in (client, server))  # noqa: E731
        wait_until(certificates, 20, "both proxies' certificates")
        yield Proxies(net, client, server, backend)


def scrape(process: AgentProcess) -> str:
    return Http(f"http://{process.ip}:{process.prometheus_port}", what="15090").get("/stats/prometheus")


def samples(process: AgentProcess, name: str) -> list[dict]:
    """The samples of one metric on the proxy's 15090 endpoint: labels and value."""
    families = text_string_to_metric_families(scrape(process))
    return [{**s.labels, "value": s.value} for f in families for s in f.samples if s.name == name]


def requests_total(process: AgentProcess, **labels: str) -> list[dict]:
    return [s for s in samples(process, "istio_requests_total") if all(s[k] == v for k, v in labels.items())]


def expected_source(**overrides: str) -> dict:
    return {
        "reporter": "source",
        "source_workload": "client-v1",
        "source_canonical_service": "client",
        "source_canonical_revision": "v1",
        "source_workload_namespace": "default",
        "source_principal": CLIENT_ID,
        "source_app": "client",
        "source_version": "v1",
        "source_cluster": "Kubernetes",
        "destination_workload": "server-v1",
        "destination_workload_namespace": "default",
        "destination_principal": SERVER_ID,
        "destination_app": "server",
        "destination_version": "v1",
        "destination_service": "server.default.svc.cluster.local",
        "destination_service_name": "server",
        "destination_service_namespace": "default",
        "destination_canonical_service": "server",
        "destination_canonical_revision": "v1",
        "destination_cluster": "Kubernetes",
        "request_protocol": "http",
        "response_code": "200",
        "grpc_response_status": "",
        "response_flags": "-",
        "connection_security_policy": "unknown",
        **overrides,
    }


def expected_destination(**overrides: str) -> dict:
    return expected_source(**{"reporter": "destination", "connection_security_policy": "mutual_tls", **overrides})


def test_mtls_requests_are_counted_on_both_sides_with_istios_labels(proxies: Proxies) -> None:
    for _ in range(N):
        assert proxies.call(f"http://server:{SERVICE_PORT}/ok") == 200
    [source] = requests_total(proxies.client, reporter="source", response_code="200")
    assert set(source) - {"value"} == set(HTTP_LABELS)  # exactly Istio's label set
    assert source == {**expected_source(), "value": N}
    [destination] = requests_total(proxies.server, reporter="destination", source_workload="client-v1")
    assert destination == {**expected_destination(), "value": N}
    assert proxies.backend.count >= N


def test_request_duration_and_sizes_are_histograms_with_envoys_buckets(proxies: Proxies) -> None:
    proxies.call(f"http://server:{SERVICE_PORT}/histogram")

    def counted() -> bool:  # Envoy publishes histograms at its stats flush (every 5 s)
        return any(s["value"] >= 1 for s in samples(proxies.client, "istio_request_duration_milliseconds_count"))

    wait_until(counted, 15, "the duration histogram to be flushed")
    buckets = [s for s in samples(proxies.client, "istio_request_duration_milliseconds_bucket")]
    bounds = sorted({float(s["le"]) for s in buckets})
    assert bounds[:4] == [0.5, 1.0, 5.0, 10.0] and bounds[-2:] == [3600000.0, float("inf")]
    for name in ("istio_request_bytes_count", "istio_response_bytes_count"):
        assert any(s["value"] >= 1 and s["reporter"] == "source" for s in samples(proxies.client, name))
    assert any(s["value"] >= 1 for s in samples(proxies.server, "istio_response_bytes_count"))


def test_a_header_forged_by_the_app_still_reports_the_real_caller(proxies: Proxies) -> None:
    forged = {"x-plait-peer-workload": "impostor", "x-plait-peer-app": "impostor"}
    for _ in range(3):
        assert proxies.call(f"http://server:{SERVICE_PORT}/forged", forged) == 200
    assert requests_total(proxies.server, source_workload="impostor") == []
    assert requests_total(proxies.server, source_app="impostor") == []
    [destination] = requests_total(proxies.server, reporter="destination", source_workload="client-v1")
    assert destination["value"] >= 3


def test_a_plaintext_caller_is_unknown_even_with_a_forged_header(proxies: Proxies) -> None:
    headers = {"Host": "server", "x-plait-peer-workload": "impostor"}
    for _ in range(2):
        reply = http_request(f"{proxies.net}.21", SERVICE_PORT, "/plain", headers)
        assert reply.status == 200
    [plain] = requests_total(proxies.server, connection_security_policy="none")
    unknown_source = {k: "unknown" for k in expected_source() if k.startswith("source_")}
    assert plain == {
        **expected_destination(connection_security_policy="none", destination_principal="unknown"),
        **unknown_source,
        "value": 2,
    }


def test_a_service_without_endpoints_reports_503_uh(proxies: Proxies) -> None:
    for _ in range(2):
        assert proxies.call(f"http://nowhere:{SERVICE_PORT}/") == 503
    [failed] = requests_total(proxies.client, response_flags="UH")
    unknown = ("workload", "workload_namespace", "principal", "app", "version", "canonical_service")
    assert failed == {
        **expected_source(
            response_code="503",
            response_flags="UH",
            destination_service="nowhere.default.svc.cluster.local",
            destination_service_name="nowhere",
            source_principal="unknown",  # no upstream connection, so no certificate was presented
            destination_canonical_revision="unknown",
            **{f"destination_{k}": "unknown" for k in unknown},
        ),
        "value": 2,
    }


def test_envoy_and_the_agent_rename_alike(proxies: Proxies) -> None:
    """The Lua filter on 15090 and the agent's Python rename are one rule: same text from the same stats."""
    proxies.call(f"http://server:{SERVICE_PORT}/same")
    raw = proxies.client.admin.get("/stats/prometheus")
    by_envoy = scrape(proxies.client)
    counters = lambda text: sorted(line for line in text.splitlines() if line.startswith("istio_requests_total"))  # noqa: E731
    assert counters(istio_exposition(raw)) == counters(by_envoy) != []
    from_agent = proxies.client.status.get("/stats/prometheus")
    assert counters(from_agent) == counters(by_envoy)
    assert "envoy_istio_" not in by_envoy and "envoy_istio_" not in from_agent
