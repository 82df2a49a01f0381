"""Traces from real Envoys: a client sidecar calls a server sidecar over mutual TLS, both report
their spans to the control plane's collector (Zipkin v2 JSON), and the spans form one trace with the
right parent chain; the application sees both B3 and W3C trace context."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from test_metrics_live import agent, synced  # same directory

from plait.client import Http
from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.http import http_request
from plait.testing.live import ControlPlaneProcess, free_port, wait_until

SERVICE_PORT = 9080


def mesh_yaml(net: str, zipkin_port: int, sampling: float) -> str:
    return f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    defaultConfig:
      tracing:
        sampling: {sampling}
        zipkin: {{address: "127.0.0.1:{zipkin_port}"}}
        customTags:
          team: {{literal: {{value: books}}}}
          user: {{header: {{name: end-user, defaultValue: nobody}}}}
---
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
"""


class Mesh:
    def __init__(self, net: str, cp: ControlPlaneProcess, zipkin: Http, backend: HttpBackend):
        self.net, self.cp, self.zipkin, self.backend = net, cp, zipkin, backend

    def call(self, path: str, headers: dict | None = None) -> int:
        url = f"http://server:{SERVICE_PORT}{path}"
        return http_request(f"{self.net}.1", EXPLICIT_PROXY_PORT, url, headers, timeout=15).status

    def trace(self, trace_id: str, spans: int) -> list[dict]:
        """The trace once the collector has `spans` of it (Envoy flushes every 5 s, or every 5 spans)."""
        found: list[dict] = []

        def enough() -> bool:
            found[:] = self.zipkin.get(f"/api/v2/trace/{trace_id}")  # 404 (ClientError) until the first span
            return len(found) >= spans

        wait_until(enough, 20, f"{spans} spans of trace {trace_id}", interval=0.5)
        return found


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    work = tmp_path_factory.mktemp("traces")
    (work / "mesh").mkdir()
    zipkin_port = free_port()
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        (work / "mesh" / "mesh.yaml").write_text(mesh_yaml(net, zipkin_port, sampling=0))
        cp = stack.enter_context(
            ControlPlaneProcess(
                work / "mesh", work, extra_args=["--xds-auth", "strict", "--zipkin-port", str(zipkin_port)]
            )
        )
        backend = stack.enter_context(HttpBackend("server-v1", f"{net}.121", SERVICE_PORT))
        labels = {"version": "v1"}
        agents = [
            agent(
                cp,
                work,
                name="server-v1",
                sa="server",
                ip=f"{net}.21",
                labels={"app": "server", **labels},
                app_address=f"{net}.121",
            ),
            agent(cp, work, name="client-v1", sa="client", ip=f"{net}.1", labels={"app": "client", **labels}),
        ]
        for process in agents:
            stack.enter_context(process)
        wait_until(lambda: all(synced(cp, p) for p in agents), 20, "every proxy SYNCED")
        wait_until(lambda: all(p.admin.get("/certs")["certificates"] for p in agents), 20, "certificates")
        yield Mesh(net, cp, Http(f"http://127.0.0.1:{zipkin_port}", what="the collector"), backend)


def test_a_forced_trace_spans_both_sidecars_with_the_right_parents(mesh: Mesh):
    """Sampling is 0 %: only the caller's ``x-client-trace-id`` (Envoy's forced trace, as Istio's) starts one."""
    mesh.backend.reset()
    assert mesh.call("/traced?x=1", {"x-client-trace-id": "force", "end-user": "jason"}) == 200
    seen = mesh.backend.requests[-1].headers
    trace_id = seen["x-b3-traceid"]
    assert len(trace_id) == 32 and seen["x-b3-sampled"] == "1"
    version, w3c_trace, w3c_parent, flags = seen["traceparent"].split("-")
    assert (version, w3c_trace, w3c_parent, flags) == ("00", trace_id, seen["x-b3-spanid"], "01")

    spans = mesh.trace(trace_id, 2)
    client = next(s for s in spans if s["kind"] == "CLIENT")
    server = next(s for s in spans if s["kind"] == "SERVER")
    assert {s["traceId"] for s in spans} == {trace_id}
    assert "parentId" not in client and server["parentId"] == client["id"]
    assert seen["x-b3-spanid"] == server["id"] and seen["x-b3-parentspanid"] == client["id"]
    assert client["localEndpoint"]["serviceName"] == "client.default"
    assert server["localEndpoint"]["serviceName"] == "server.default"
    assert client["name"] == f"server.default.svc.cluster.local:{SERVICE_PORT}/*"
    assert client["tags"]["upstream_cluster"] == f"outbound|{SERVICE_PORT}||server.default.svc.cluster.local"
    for span, service in ((client, "client"), (server, "server")):
        tags = span["tags"]
        assert tags["istio.canonical_service"] == service and tags["istio.canonical_revision"] == "v1"
        assert tags["istio.namespace"] == "default" and tags["istio.mesh_id"] == "cluster.local"
        assert tags["node_id"].startswith("sidecar~") and tags["http.method"] == "GET"
        assert tags["http.status_code"] == "200" and tags["http.url"].endswith("/traced?x=1")
        assert tags["team"] == "books" and tags["user"] == "jason" and tags["component"] == "proxy"


def test_unsampled_requests_leave_no_spans_and_a_sampled_b3_caller_is_honoured(mesh: Mesh):
    mesh.backend.reset()
    assert mesh.call("/quiet") == 200
    quiet = mesh.backend.requests[-1].headers
    assert quiet.get("x-b3-sampled") == "0"
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {"x-b3-traceid": trace_id, "x-b3-spanid": "b7ad6b7169203331", "x-b3-sampled": "1"}
    assert mesh.call("/sampled", headers) == 200
    spans = mesh.trace(trace_id, 2)
    client = next(s for s in spans if s["kind"] == "CLIENT")
    assert client["parentId"] == "b7ad6b7169203331"  # the caller's span
    listed = mesh.zipkin.get("/api/v2/traces?serviceName=server.default&limit=100")
    assert quiet["x-b3-traceid"] not in {t[0]["traceId"] for t in listed}
