"""Telemetry ``metrics`` overrides on real Envoys: a client sidecar calls a server sidecar over mutual
TLS under a root-namespace Telemetry, and both proxies' port-15090 endpoints are read as Prometheus
reads them. The Telemetry is in place before the first request, so no series predates it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from test_metrics_live import SERVICE_PORT, Proxies, agent, mesh_yaml, samples, synced

from plait.telemetry.metrics import HTTP_LABELS
from plait.testing.backends import HttpBackend, TcpBackend, loopback_subnet
from plait.testing.live import ControlPlaneProcess, wait_until

OVERRIDES = """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_DURATION}
      disabled: true
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        grpc_response_status: {operation: REMOVE}
        destination_version: {value: "'stable'"}
        request_method: {value: request.method}
        request_path: {value: request.url_path}
    - match: {metric: RESPONSE_SIZE, mode: SERVER}
      tagOverrides:
        api_version: {value: "request.headers['x-api-version']"}
"""


@pytest.fixture(scope="module")
def proxies(tmp_path_factory) -> Iterator[Proxies]:
    work = tmp_path_factory.mktemp("overrides")
    (work / "mesh").mkdir()
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        (work / "mesh" / "mesh.yaml").write_text(mesh_yaml(net) + OVERRIDES)
        cp = stack.enter_context(ControlPlaneProcess(work / "mesh", work, extra_args=["--xds-auth", "strict"]))
        backend = stack.enter_context(HttpBackend("server-v1", f"{net}.121", SERVICE_PORT))
        stack.enter_context(TcpBackend("echo-v1", f"{net}.122", 9000))
        agents = {
            "server": agent(
                cp,
                work,
                name="server-v1",
                sa="server",
                ip=f"{net}.21",
                labels={"app": "server", "version": "v1"},
                app_address=f"{net}.121",
            ),
            "client": agent(
                cp, work, name="client-v1", sa="client", ip=f"{net}.1", labels={"app": "client", "version": "v1"}
            ),
        }
        for process in agents.values():
            stack.enter_context(process)
        wait_until(lambda: all(synced(cp, p) for p in agents.values()), 20, "every proxy SYNCED")
        certificates = lambda: all(p.admin.get("/certs")["certificates"] for p in agents.values())  # noqa: E731
        wait_until(certificates, 20, "every proxy's certificates")
        proxies = Proxies(net, cp, agents, backend)
        for _ in range(3):
            assert proxies.call(f"http://server:{SERVICE_PORT}/reviews/1?page=2", {"x-api-version": "v7"}) == 200

        def flushed() -> bool:  # Envoy publishes histograms at its stats flush (every 5 s)
            counts = [s["value"] for p in agents.values() for s in samples(p, "istio_response_bytes_count")]
            return len(counts) == 2 and min(counts) >= 3

        wait_until(flushed, 15, "the histograms to be flushed")
        yield proxies


def series(proxies: Proxies, side: str, name: str) -> list[dict]:
    return [s for s in samples(proxies.agents[side], name) if s["value"] >= 1]


def test_a_disabled_metric_is_absent_from_15090(proxies: Proxies) -> None:
    for side in ("client", "server"):
        assert series(proxies, side, "istio_response_bytes_count")  # histograms were flushed
        for suffix in ("_bucket", "_count", "_sum"):
            assert series(proxies, side, "istio_request_duration_milliseconds" + suffix) == [], side


def test_client_tag_overrides_remove_replace_and_add_labels(proxies: Proxies) -> None:
    [source] = series(proxies, "client", "istio_requests_total")
    assert source["reporter"] == "source" and source["value"] == 3
    assert "grpc_response_status" not in source  # removed
    assert source["destination_version"] == "stable"  # replaced by a literal
    assert (source["request_method"], source["request_path"]) == ("GET", "/reviews/1")  # url_path: no query
    assert set(source) - {"value"} == set(HTTP_LABELS) - {"grpc_response_status"} | {"request_method", "request_path"}


def test_mode_client_leaves_the_server_side_as_istios(proxies: Proxies) -> None:
    [destination] = series(proxies, "server", "istio_requests_total")
    assert destination["reporter"] == "destination" and destination["value"] == 3
    assert set(destination) - {"value"} == set(HTTP_LABELS)
    assert destination["destination_version"] == "v1" and destination["grpc_response_status"] == ""


def test_a_server_tag_from_a_request_header(proxies: Proxies) -> None:
    [server] = series(proxies, "server", "istio_response_bytes_count")
    assert server["api_version"] == "v7"
    [client] = series(proxies, "client", "istio_response_bytes_count")
    assert "api_version" not in client
