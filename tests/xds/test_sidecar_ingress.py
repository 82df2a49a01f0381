"""Sidecar ingress and inboundConnectionPool in a real Envoy (beside goldens 35 and 36), as Istio:
with ingress listeners a sidecar's inbound ports are theirs only, each forwarding to its
defaultEndpoint, with the listener's connection pool (else the Sidecar's inboundConnectionPool).

The workload runs in explicit-proxy mode (its inbound listeners bound at its address), the app on
another loopback address, so ``0.0.0.0:PORT`` (the app's address) is reachable without capture.
"""

from __future__ import annotations

import contextlib
import http.client
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.envoy import EnvoyProcess, run_envoy
from plait.testing.http import http_request
from plait.xds.generator import generate
from plait.xds.static import static_bootstrap

MESH = """
apiVersion: v1
kind: Service
metadata: {{name: api}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: 9090}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: api}}
spec: {{address: {net}.2, labels: {{app: api}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: api}}
spec:
  workloadSelector: {{labels: {{app: api}}}}
  inboundConnectionPool: {{http: {{http1MaxPendingRequests: 3}}}}
  ingress:
  - port: {{number: 9080, protocol: HTTP, name: http}}
    defaultEndpoint: 0.0.0.0:8080
  - port: {{number: 9081, protocol: HTTP, name: http-limited}}
    defaultEndpoint: 0.0.0.0:8081
    connectionPool: {{http: {{http1MaxPendingRequests: 5}}}}
"""


@dataclass
class Workload:
    net: str
    envoy: EnvoyProcess


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> Iterator[Workload]:
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        for port in (8080, 8081, 9090):
            stack.enter_context(HttpBackend(f"app-{port}", f"{net}.3", port))
        snapshot = MeshSnapshot(load_text(MESH.format(net=net)).raise_for_errors())
        proxy = replace(Proxy.from_workload_entry(snapshot.workload("api"), mode="proxy"), app_address=f"{net}.3")
        envoy = stack.enter_context(
            run_envoy(static_bootstrap(generate(snapshot, proxy)), workdir=tmp_path_factory.mktemp("ingress"))
        )
        yield Workload(net, envoy)


def test_each_ingress_listener_forwards_to_its_default_endpoint(workload: Workload) -> None:
    for listen, app in ((9080, "app-8080"), (9081, "app-8081")):
        reply = http_request(f"{workload.net}.2", listen, "/")
        assert (reply.status, reply.backend) == (200, app)


def test_the_service_port_gets_no_listener_when_the_sidecar_declares_ingress(workload: Workload) -> None:
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        http_request(f"{workload.net}.2", 9090, "/", timeout=5)


def test_connection_pools_reach_the_inbound_clusters(workload: Workload) -> None:
    """The listener's own pool wins over inboundConnectionPool (Envoy's idle remaining_pending gauge)."""
    gauge = "cluster.inbound|{}||.circuit_breakers.default.remaining_pending"
    assert workload.envoy.stat(gauge.format(9080)) == 3
    assert workload.envoy.stat(gauge.format(9081)) == 5
