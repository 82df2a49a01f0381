"""Istio's standard metrics from real Envoys: a client sidecar calls a server sidecar over mutual TLS
(certificates from the control plane's CA), and both proxies' port-15090 endpoints are read as
Prometheus reads them."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plait.client import Http
from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.telemetry.logs import ISTIO_JSON_FORMAT
from plait.telemetry.metrics import HTTP_LABELS, TCP_LABELS
from plait.telemetry.prometheus import istio_exposition
from plait.testing.backends import HttpBackend, TcpBackend, loopback_subnet
from plait.testing.http import http_request
from plait.testing.live import AgentProcess, ControlPlaneProcess, free_port, wait_until

N = 7
SERVICE_PORT = 9080
TCP_PORT = 9000
ECHO_ID = "spiffe://cluster.local/ns/default/sa/echo"
GATEWAY_ID = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/server"


ACCESS_LOG = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    accessLogFile: /dev/stdout
    accessLogEncoding: {encoding}
"""


def mesh_yaml(net: str) -> str:
    return (
        ACCESS_LOG.format(encoding="TEXT")
        + f"""---
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
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec: {{selector: {{app: echo}}, ports: [{{name: tcp, port: {TCP_PORT}}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-v1, namespace: default}}
spec:
  address: {net}.22
  labels: {{app: echo, version: v1, security.istio.io/tlsMode: istio}}
  serviceAccount: echo
  ports: {{tcp: {TCP_PORT}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {TCP_PORT}, name: tcp, protocol: TCP}}, hosts: ["*"], bind: {net}.2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: istio-system}}
spec:
  hosts: ["*"]
  gateways: [tcp]
  tcp: [{{route: [{{destination: {{host: echo.default.svc.cluster.local, port: {{number: {TCP_PORT}}}}}}}]}}]
"""
    )


class Proxies:
    def __init__(self, net: str, cp: ControlPlaneProcess, agents: dict[str, AgentProcess], backend: HttpBackend):
        self.net, self.cp, self.agents, self.backend = net, cp, agents, backend
        self.client, self.server = agents["client"], agents["server"]

    def call(self, url: str, headers: dict | None = None) -> int:
        return http_request(f"{self.net}.1", EXPLICIT_PROXY_PORT, url, headers, timeout=15).status


def agent(
    cp: ControlPlaneProcess,
    workdir: Path,
    *,
    name: str,
    sa: str,
    ip: str,
    labels: dict,
    mode: str = "proxy",
    namespace: str = "default",
    **kw,
) -> AgentProcess:
    token = cp.issue_token(namespace, sa, name)
    process = AgentProcess(
        cp,
        workdir,
        mode=mode,
        namespace=namespace,
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


def synced(cp: ControlPlaneProcess, process: AgentProcess) -> bool:
    """Every type it was sent acknowledged (a gateway without HTTP servers is sent no routes)."""
    status = cp.statuses().get(process.proxy_id)
    return bool(status) and {t["state"] for t in status["types"].values()} <= {"SYNCED", "NOT SENT"}


@pytest.fixture(scope="module")
def proxies(tmp_path_factory) -> Iterator[Proxies]:
    work = tmp_path_factory.mktemp("telemetry")
    (work / "mesh").mkdir()
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        (work / "mesh" / "mesh.yaml").write_text(mesh_yaml(net))
        cp = stack.enter_context(ControlPlaneProcess(work / "mesh", work, extra_args=["--xds-auth", "strict"]))
        backend = stack.enter_context(HttpBackend("server-v1", f"{net}.121", SERVICE_PORT))
        stack.enter_context(TcpBackend("echo-v1", f"{net}.122", TCP_PORT))
        v1 = {"version": "v1"}
        agents = {
            "server": agent(
                cp,
                work,
                name="server-v1",
                sa="server",
                ip=f"{net}.21",
                labels={"app": "server", **v1},
                app_address=f"{net}.121",
            ),
            "client": agent(cp, work, name="client-v1", sa="client", ip=f"{net}.1", labels={"app": "client", **v1}),
            "echo": agent(
                cp,
                work,
                name="echo-v1",
                sa="echo",
                ip=f"{net}.22",
                labels={"app": "echo", **v1},
                app_address=f"{net}.122",
            ),
            "gateway": agent(
                cp,
                work,
                mode="gateway",
                namespace="istio-system",
                name="istio-ingressgateway",
                sa="istio-ingressgateway-service-account",
                ip=f"{net}.2",
                labels={"istio": "ingressgateway"},
            ),
        }
        for process in agents.values():
            stack.enter_context(process)
        wait_until(lambda: all(synced(cp, p) for p in agents.values()), 20, "every proxy SYNCED")
        certificates = lambda: all(p.admin.get("/certs")["certificates"] for p in agents.values())  # noqa: E731
        wait_until(certificates, 20, "every proxy's certificates")
        yield Proxies(net, cp, agents, backend)


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

    def counted() -> bool:  # each Envoy publishes histograms at its own stats flush (every 5 s)
        client = samples(proxies.client, "istio_request_duration_milliseconds_count")
        server = samples(proxies.server, "istio_response_bytes_count")
        return any(s["value"] >= 1 for s in client) and any(s["value"] >= 1 for s in server)

    wait_until(counted, 15, "both sidecars to flush their histograms")
    buckets = [s for s in samples(proxies.client, "istio_request_duration_milliseconds_bucket")]
    bounds = sorted({float(s["le"]) for s in buckets})
    assert bounds[:4] == [0.5, 1.0, 5.0, 10.0] and bounds[-2:] == [3600000.0, float("inf")]
    for name in ("istio_request_bytes_count", "istio_response_bytes_count"):
        assert any(s["value"] >= 1 and s["reporter"] == "source" for s in samples(proxies.client, name))


def test_a_header_forged_by_the_app_still_reports_the_real_caller(proxies: Proxies) -> None:
    forged = {
        "x-plait-peer-workload": "impostor",
        "x-plait-peer-app": "impostor",
        "x-plait-peer-destination-service": "impostor",
    }
    for _ in range(3):
        assert proxies.call(f"http://server:{SERVICE_PORT}/forged", forged) == 200
    for label in ("source_workload", "source_app", "destination_service"):
        assert requests_total(proxies.server, **{label: "impostor"}) == []
    [destination] = requests_total(proxies.server, reporter="destination", source_workload="client-v1")
    assert destination["value"] >= 3


def test_a_plaintext_caller_is_unknown_even_with_a_forged_header(proxies: Proxies) -> None:
    headers = {"Host": "server", "x-plait-peer-workload": "impostor"}
    for _ in range(2):
        reply = http_request(f"{proxies.net}.21", SERVICE_PORT, "/plain", headers)
        assert reply.status == 200
    [plain] = requests_total(proxies.server, connection_security_policy="none")
    # nothing the caller says is believed: who it is, and which service it called
    unknown = {k: "unknown" for k in expected_source() if k.startswith(("source_", "destination_service"))}
    assert plain == {
        **expected_destination(connection_security_policy="none", destination_principal="unknown"),
        **unknown,
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
    own = {
        "workload": "client-v1",
        "workload_namespace": "default",
        "app": "client",
        "version": "v1",
        "canonical_service": "client",
        "canonical_revision": "v1",
        "cluster": "Kubernetes",
    }
    assert counters(istio_exposition(raw, own)) == counters(by_envoy) != []
    assert "destination_peer=" in raw and "source_workload" not in raw  # Envoy holds the short form
    from_agent = proxies.client.status.get("/stats/prometheus")
    assert counters(from_agent) == counters(by_envoy)
    assert "envoy_istio_" not in by_envoy and "envoy_istio_" not in from_agent


def tcp_samples(process: AgentProcess, reporter: str) -> dict[str, dict]:
    """The TCP metrics of one reporter on a proxy's 15090 endpoint: name → the labels and value (one
    series each: the same labels for every connection)."""
    names = {"opened": "connections_opened", "closed": "connections_closed", "sent": "sent_bytes"}
    out = {}
    for short, name in {**names, "received": "received_bytes"}.items():
        series = [s for s in samples(process, f"istio_tcp_{name}_total") if s["reporter"] == reporter]
        assert len(series) <= 1, series
        if series:
            out[short] = series[0]
    return out


def test_tcp_connections_and_bytes_through_a_gateway_are_counted_on_both_sides(proxies: Proxies) -> None:
    connections, message = 3, b"hello, echo"
    for _ in range(connections):
        with socket.create_connection((f"{proxies.net}.2", TCP_PORT), timeout=10) as conn:
            conn.sendall(message)
            received = b""
            while len(received) < len(b"echo-v1\n") + len(message):
                received += conn.recv(1024)
            assert received == b"echo-v1\n" + message
    gateway, echo = proxies.agents["gateway"], proxies.agents["echo"]
    done = lambda process, reporter: tcp_samples(process, reporter).get("closed", {}).get("value") == connections  # noqa: E731
    wait_until(lambda: done(gateway, "source") and done(echo, "destination"), 10, "every connection closed")
    for process, reporter in ((gateway, "source"), (echo, "destination")):
        tcp = tcp_samples(process, reporter)
        assert {name: s["value"] for name, s in tcp.items()} == {
            "opened": connections,
            "closed": connections,
            "received": connections * len(message),
            "sent": connections * (len(b"echo-v1\n") + len(message)),
        }, reporter
        labels = {k: v for k, v in tcp["closed"].items() if k != "value"}
        assert set(labels) == set(TCP_LABELS)
        assert labels["destination_workload"] == "echo-v1" and labels["request_protocol"] == "tcp"
    source_side = {k: v for k, v in tcp_samples(gateway, "source")["closed"].items()}
    assert (source_side["source_workload"], source_side["source_workload_namespace"]) == (
        "istio-ingressgateway",
        "istio-system",
    )
    assert (source_side["source_principal"], source_side["destination_principal"]) == (GATEWAY_ID, ECHO_ID)
    assert source_side["destination_service"] == "echo.default.svc.cluster.local"
    destination_side = tcp_samples(echo, "destination")["closed"]
    assert destination_side["connection_security_policy"] == "mutual_tls"
    assert destination_side["source_principal"] == GATEWAY_ID  # the certificate; TCP carries no peer headers
    assert destination_side["source_workload"] == destination_side["destination_service"] == "unknown"


# Istio's default TEXT format, field by field: [start] "METHOD PATH PROTOCOL" CODE FLAGS DETAILS
# TERMINATION "FAILURE" IN OUT DURATION UPSTREAM_TIME "XFF" "AGENT" "ID" "AUTHORITY" "HOST" CLUSTER
# UPSTREAM_LOCAL DOWNSTREAM_LOCAL DOWNSTREAM_REMOTE SNI ROUTE
ISTIO_TEXT_LINE = re.compile(
    r'^\[(?P<start>\d{4}-\d\d-\d\dT[\d:.]+Z)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" '
    r"(?P<code>\d+) (?P<flags>\S+) (?P<details>\S+) (?P<termination>\S+) "
    r'"(?P<failure>[^"]*)" (?P<received>\d+) (?P<sent>\d+) (?P<duration>\d+) (?P<upstream_time>\S+) '
    r'"(?P<xff>[^"]*)" "(?P<agent>[^"]*)" "(?P<request_id>[^"]*)" "(?P<authority>[^"]*)" "(?P<host>[^"]*)" '
    r"(?P<cluster>\S+) (?P<upstream_local>\S+) (?P<downstream_local>\S+) (?P<downstream_remote>\S+) "
    r"(?P<sni>\S+) (?P<route>\S+)$"
)


def access_log_lines(process: AgentProcess, marker: str) -> list[str]:
    """Envoy's access log lines in the agent's log (Envoy's stdout, prefixed ``[envoy] ``) that hold `marker`."""
    lines = process.log_path.read_text(errors="replace").splitlines()
    return [line.removeprefix("[envoy] ") for line in lines if marker in line and "[envoy] " in line]


def test_access_logs_are_istios_default_text_format(proxies: Proxies) -> None:
    agent_string = "plait-telemetry-text-check"
    assert proxies.call(f"http://server:{SERVICE_PORT}/logged?x=1", {"User-Agent": agent_string}) == 200
    wait_until(lambda: access_log_lines(proxies.client, agent_string), 10, "the client's access log line")
    wait_until(lambda: access_log_lines(proxies.server, agent_string), 10, "the server's access log line")
    [client_line] = access_log_lines(proxies.client, agent_string)
    client = ISTIO_TEXT_LINE.match(client_line)
    assert client, client_line
    assert (client["method"], client["path"], client["protocol"], client["code"]) == (
        "GET",
        "/logged?x=1",
        "HTTP/1.1",
        "200",
    )
    assert (client["flags"], client["details"], client["agent"]) == ("-", "via_upstream", agent_string)
    assert client["cluster"] == f"outbound|{SERVICE_PORT}||server.default.svc.cluster.local"
    assert client["host"] == f"{proxies.net}.21:{SERVICE_PORT}"
    [server_line] = access_log_lines(proxies.server, agent_string)
    server = ISTIO_TEXT_LINE.match(server_line)
    assert server, server_line
    assert server["cluster"] == f"inbound|{SERVICE_PORT}||" and server["request_id"] == client["request_id"]


def test_access_log_encoding_json_follows_the_mesh_config(proxies: Proxies) -> None:
    cp = proxies.cp
    cp.apply(ACCESS_LOG.format(encoding="JSON"))
    try:
        agent_string = "plait-telemetry-json-check"

        def logged_as_json() -> bool:
            proxies.call(f"http://server:{SERVICE_PORT}/json", {"User-Agent": agent_string})
            return any(line.startswith("{") for line in access_log_lines(proxies.client, agent_string))

        wait_until(logged_as_json, 15, "a JSON access log line", interval=0.5)
        entry = json.loads(
            next(line for line in access_log_lines(proxies.client, agent_string) if line.startswith("{"))
        )
        assert set(entry) == set(ISTIO_JSON_FORMAT)
        assert (entry["method"], entry["path"], entry["response_code"], entry["user_agent"]) == (
            "GET",
            "/json",
            200,
            agent_string,
        )
    finally:
        cp.apply(ACCESS_LOG.format(encoding="TEXT"))


ERRORS_ONLY = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
"""


def test_a_telemetry_filter_expression_logs_only_errors(proxies: Proxies) -> None:
    proxies.cp.apply(ERRORS_ONLY)
    try:
        marker = "plait-telemetry-errors-only"

        def filtered() -> bool:  # the filter is in place once a successful request is no longer logged
            before = len(access_log_lines(proxies.client, marker + "-ok"))
            proxies.call(f"http://server:{SERVICE_PORT}/", {"User-Agent": marker + "-ok"})
            time.sleep(1.2)  # Envoy flushes its access log file every second
            return len(access_log_lines(proxies.client, marker + "-ok")) == before

        wait_until(filtered, 20, "the CEL filter to apply", interval=0.5)
        for _ in range(3):
            assert proxies.call(f"http://server:{SERVICE_PORT}/", {"User-Agent": marker + "-ok2"}) == 200
            assert proxies.call(f"http://nowhere:{SERVICE_PORT}/", {"User-Agent": marker + "-err"}) == 503
        wait_until(lambda: len(access_log_lines(proxies.client, marker + "-err")) == 3, 10, "three error lines")
        time.sleep(1.2)
        assert access_log_lines(proxies.client, marker + "-ok2") == []
        assert all(" 503 UH " in line for line in access_log_lines(proxies.client, marker + "-err"))
    finally:
        proxies.cp.delete(ERRORS_ONLY)
