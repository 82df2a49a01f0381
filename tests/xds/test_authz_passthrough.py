"""Authorization covers every inbound path: connections to ports no Service declares (the inbound
passthrough chains of ``virtualInbound``, capture mode) get the workload's AuthorizationPolicies, as in
Istio — HTTP ones the HTTP RBAC filters (so path rules work), others the network RBAC filters.

The real Envoy runs without iptables: the test binds ``virtualInbound`` to the undeclared port itself
(``<net>.2:7777``, standing for the captured original destination) and points
``InboundPassthroughCluster`` at the app (``<net>.3:7777``) instead of the original destination, which
without capture would be Envoy again. Everything else is the generated configuration.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.envoy import EnvoyProcess, run_envoy
from plait.xds.generator import generate
from plait.xds.simulate import Caller, Request, simulate_mesh
from plait.xds.simulate.inbound import check_endpoint
from plait.xds.simulate.outcome import Endpoint
from plait.xds.static import static_bootstrap
from plait.xds.translate.common import INBOUND_PASSTHROUGH_CLUSTER, socket_address

UNDECLARED_PORT = 7777
MESH = """
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: default}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: api, namespace: default}}
spec: {{address: {net}.2, labels: {{app: api}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default}}
spec: {{address: {net}.1, labels: {{app: client}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-client, namespace: default}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  rules: [{{from: [{{source: {{ipBlocks: ["{net}.1/32"]}}}}]}}]
"""
DENY_ADMIN = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"""


@dataclass
class Passthrough:
    net: str
    snapshot: MeshSnapshot
    envoy: EnvoyProcess
    app: HttpBackend

    def http_status(self, source_ip: str, path: str) -> int:
        with contextlib.closing(
            http.client.HTTPConnection(f"{self.net}.2", UNDECLARED_PORT, timeout=10, source_address=(source_ip, 0))
        ) as connection:
            connection.request("GET", path)
            return connection.getresponse().status

    def simulated(self, source_ip: str, path: str, *, http: bool = True):
        api = Proxy.from_workload_entry(self.snapshot.workload("api"), mode="capture")
        client = Proxy.from_workload_entry(self.snapshot.workload("client"), mode="capture")
        return check_endpoint(
            self.snapshot,
            api,
            {},
            Endpoint(f"{self.net}.2:{UNDECLARED_PORT}"),
            client,
            Request.from_url(f"http://{self.net}.2:{UNDECLARED_PORT}{path}"),
            http=http,
            now=None,
            caller=Caller(ip=source_ip),
        )


def passthrough_bootstrap(snapshot: MeshSnapshot, proxy: Proxy, net: str) -> dict:
    """The generated virtualInbound alone, bound to the undeclared port; the passthrough cluster to the app."""
    bootstrap = static_bootstrap(generate(snapshot, proxy))
    static = bootstrap["static_resources"]
    inbound = copy.deepcopy(next(lst for lst in static["listeners"] if lst["name"] == "virtualInbound"))
    inbound["address"] = socket_address(f"{net}.2", UNDECLARED_PORT)
    static["listeners"] = [inbound]
    passthrough = next(c for c in static["clusters"] if c["name"] == INBOUND_PASSTHROUGH_CLUSTER)
    for key in ("lb_policy", "upstream_bind_config"):
        passthrough.pop(key)
    app = {"endpoint": {"address": socket_address(f"{net}.3", UNDECLARED_PORT)}}
    passthrough.update(
        {
            "type": "STATIC",
            "load_assignment": {"cluster_name": INBOUND_PASSTHROUGH_CLUSTER, "endpoints": [{"lb_endpoints": [app]}]},
        }
    )
    return bootstrap


@contextlib.contextmanager
def passthrough_envoy(workdir: Path, *, deny_admin: bool) -> Iterator[Passthrough]:
    """Workload `api` (capture mode) with ALLOW allow-client and, if asked, DENY deny-admin (its path
    rule becomes "deny everything" on TCP, Istio's fail-closed choice: the TCP test goes without it)."""
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        text = MESH.format(net=net) + ("---" + DENY_ADMIN if deny_admin else "")
        snapshot = MeshSnapshot(load_text(text).raise_for_errors())
        proxy = replace(Proxy.from_workload_entry(snapshot.workload("api"), mode="capture"), app_address=f"{net}.3")
        app = stack.enter_context(HttpBackend("api-undeclared", f"{net}.3", UNDECLARED_PORT))
        envoy = stack.enter_context(run_envoy(passthrough_bootstrap(snapshot, proxy, net), workdir=workdir))
        yield Passthrough(net, snapshot, envoy, app)


@pytest.fixture(scope="module")
def passthrough(tmp_path_factory) -> Iterator[Passthrough]:
    with passthrough_envoy(tmp_path_factory.mktemp("passthrough"), deny_admin=True) as running:
        yield running


def test_the_passthrough_chains_carry_the_policies(passthrough: Passthrough) -> None:
    api = Proxy.from_workload_entry(passthrough.snapshot.workload("api"), mode="capture")
    chains = generate(passthrough.snapshot, api).listeners["virtualInbound"]["filter_chains"]
    catch_all = {
        c["name"]: [f["name"] for f in c["filters"]] for c in chains if c["name"].startswith("virtualInbound-catchall")
    }
    assert catch_all == {
        "virtualInbound-catchall|http": ["envoy.filters.network.http_connection_manager"],
        "virtualInbound-catchall|tcp": [
            "envoy.filters.network.rbac",
            "envoy.filters.network.rbac",
            "envoy.filters.network.tcp_proxy",
        ],
    }


@pytest.mark.parametrize(
    ("source", "path", "expected"),
    [
        ("client", "/public", 200),  # ALLOW: the client's address
        ("client", "/admin/users", 403),  # DENY: the path, seen because the chain is HTTP
        ("127.0.0.1", "/public", 403),  # no ALLOW rule matches
    ],
)
def test_http_to_an_undeclared_port_is_authorized_as_simulated(
    passthrough: Passthrough, source: str, path: str, expected: int
) -> None:
    source_ip = f"{passthrough.net}.1" if source == "client" else source
    before = passthrough.app.count
    assert passthrough.http_status(source_ip, path) == expected
    assert passthrough.app.count == before + (expected == 200)
    simulated = passthrough.simulated(source_ip, path)
    assert simulated.where.startswith("virtualInbound port 7777, filter chain virtualInbound-catchall|http")
    assert (simulated.status or 200) == expected


def tcp_exchange(address: str, source_ip: str, payload: bytes = b"ping\n") -> bytes:
    """Connect from `source_ip`, send bytes that are not HTTP, read until the connection closes."""
    with socket.create_connection((address, UNDECLARED_PORT), timeout=5, source_address=(source_ip, 0)) as conn:
        conn.sendall(payload)
        conn.settimeout(2)
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := conn.recv(4096):
                received += chunk
        return received


def test_other_bytes_to_an_undeclared_port_get_the_network_policies(tmp_path: Path) -> None:
    with passthrough_envoy(tmp_path, deny_admin=False) as passthrough:
        net = passthrough.net
        assert b"Bad request" in tcp_exchange(f"{net}.2", f"{net}.1")  # reached the app, which answers 400
        assert tcp_exchange(f"{net}.2", "127.0.0.1") == b""
        assert passthrough.envoy.stat("tcp.allow.rbac.denied") == 1
        for source_ip, refused in ((f"{net}.1", False), ("127.0.0.1", True)):
            simulated = passthrough.simulated(source_ip, "/", http=False)
            assert "filter chain virtualInbound-catchall|tcp" in simulated.where
            assert simulated.refused is refused


def test_a_path_deny_rule_closes_every_tcp_connection_to_an_undeclared_port(passthrough: Passthrough) -> None:
    """As on any TCP chain: the DENY rule without its HTTP-only path condition matches everything."""
    net = passthrough.net
    assert tcp_exchange(f"{net}.2", f"{net}.1") == b""
    assert passthrough.envoy.stat("tcp.deny.rbac.denied") >= 1
    assert passthrough.simulated(f"{net}.1", "/", http=False).refused


def test_the_mesh_simulation_follows_a_passed_through_request_to_its_workload(passthrough: Passthrough) -> None:
    """`plait explain` from a captured client: PassthroughCluster to the workload's address, whose
    passthrough HTTP chain then decides, as the real Envoy did. (The same mesh on 10.1.0.0/24: iptables
    does not capture loopback, so the simulation would rightly send a loopback request straight out.)"""
    snapshot = MeshSnapshot(load_text(MESH.format(net="10.1.0") + "---" + DENY_ADMIN).raise_for_errors())
    client = Proxy.from_workload_entry(snapshot.workload("client"), mode="capture")
    for path, expected in (("/public", 200), ("/admin/users", 403)):
        outcome = simulate_mesh(snapshot, client, Request.from_url(f"http://10.1.0.2:{UNDECLARED_PORT}{path}"))
        assert [t.name for t in outcome.clusters] == ["PassthroughCluster"]
        assert [a.where for a in outcome.authorization] == [
            "virtualInbound port 7777, filter chain virtualInbound-catchall|http"
        ]
        assert (outcome.status or 200) == expected == passthrough.http_status(f"{passthrough.net}.1", path)
