"""Automatic scoping with real Envoys: `plait control-plane` (scoping on, its default) and `plait agent`
sidecars on delta xDS (their default) with workload certificates and STRICT mutual TLS. The client's
sidecar starts with none of the other services' clusters; its first call to one fetches the cluster on
demand (Envoy's on_demand filter, ODCDS over ADS) and succeeds, with the route rule, mTLS and
authorization of every later call; its replica is sent what it learned."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.http import http_request
from plait.testing.live import AgentProcess, ControlPlaneProcess, run_plait, wait_until

PORT = 9080
FILLERS = 40  # services nobody calls: a sidecar without scoping holds all their clusters
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
SERVER = "server.default.svc.cluster.local"
GUARDED = "guarded.default.svc.cluster.local"
VIRTUAL_SERVICE = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: server, namespace: default}
spec:
  hosts: [server]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: server, subset: v2}}]
  - route: [{destination: {host: server, subset: v1}}]
"""


def mesh_yaml(net: str) -> str:
    def service(name: str) -> str:
        return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: {PORT}}}]}}
"""

    def entry(name: str, app: str, ip: str, version: str = "v1") -> str:
        return f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec:
  address: {ip}
  labels: {{app: {app}, version: {version}, security.istio.io/tlsMode: istio}}
  serviceAccount: {app}
"""

    docs = [
        service("server"),
        entry("server-v1", "server", f"{net}.21"),
        entry("server-v2", "server", f"{net}.23", "v2"),
        service("guarded"),
        entry("guarded-v1", "guarded", f"{net}.24"),
        *(service(f"filler-{i:02}") for i in range(FILLERS)),
        """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
""",
        """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: server, namespace: default}
spec:
  host: server
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
""",
        VIRTUAL_SERVICE,
        """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: guarded, namespace: default}
spec:
  selector: {matchLabels: {app: guarded}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/someone-else"]}}]}]
""",
    ]
    return "---\n".join(docs)


def agent(cp: ControlPlaneProcess, workdir: Path, *, name: str, app: str, ip: str, **kw) -> AgentProcess:
    token = cp.issue_token("default", app, name)
    return AgentProcess(
        cp,
        workdir,
        mode="proxy",
        name=name,
        ip=ip,
        labels={"app": app, "version": kw.pop("version", "v1")},
        tls=True,
        extra_args=["--service-account", app, "--token-file", str(token), "--root-cert", str(cp.root_cert_path)]
        + ["--ca-address", cp.ca_address],
        **kw,
    )


class Mesh:
    def __init__(self, net: str, cp: ControlPlaneProcess, agents: dict[str, AgentProcess], backends: dict):
        self.net, self.cp, self.agents, self.backends = net, cp, agents, backends

    def call(self, host: str, headers: dict | None = None, client: str = "client"):
        proxy = self.agents[client]
        return http_request(proxy.ip, EXPLICIT_PROXY_PORT, f"http://{host}:{PORT}/", headers, timeout=15)

    def clusters(self, client: str = "client") -> set[str]:
        """The clusters the Envoy itself holds (its admin API), not what the control plane believes."""
        dump = self.agents[client].admin.get("/config_dump?resource=dynamic_active_clusters")
        return {c["cluster"]["name"] for c in dump["configs"]}

    def virtual_hosts(self, client: str = "client") -> dict[str, list[str]]:
        """The virtual hosts of the Envoy's outbound route configuration, and their domains."""
        dump = self.agents[client].admin.get("/config_dump?resource=dynamic_route_configs")
        (config,) = [c["route_config"] for c in dump["configs"] if c["route_config"]["name"] == "explicit_proxy"]
        assert config["vhds"]["config_source"] == {"ads": {}, "resource_api_version": "V3"}
        return {v["name"]: v["domains"] for v in config.get("virtual_hosts", [])}

    def outbound_hosts(self, client: str = "client") -> set[str]:
        return {name.split("|")[3] for name in self.clusters(client) if name.startswith("outbound|")}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    work = tmp_path_factory.mktemp("scoping")
    (work / "mesh").mkdir()
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(loopback_subnet())
        (work / "mesh" / "mesh.yaml").write_text(mesh_yaml(net))
        cp = stack.enter_context(ControlPlaneProcess(work / "mesh", work, extra_args=["--xds-auth", "strict"]))
        backends = {
            name: stack.enter_context(HttpBackend(name, f"{net}.1{ip}", PORT))
            for name, ip in (("server-v1", 21), ("server-v2", 23), ("guarded-v1", 24), ("outside", 50))
        }
        agents = {
            name: agent(cp, work, name=name, app=name.split("-")[0], ip=f"{net}.{ip}", app_address=f"{net}.1{ip}", **kw)
            for name, ip, kw in (("server-v1", 21, {}), ("server-v2", 23, {"version": "v2"}), ("guarded-v1", 24, {}))
        }
        agents["client"] = agent(cp, work, name="client-v1", app="client", ip=f"{net}.1")
        for process in agents.values():
            stack.enter_context(process)
        wait_until(lambda: all(cp.synced(p.proxy_id) for p in agents.values()), 30, "every proxy SYNCED")
        wait_until(lambda: all(p.admin.get("/certs")["certificates"] for p in agents.values()), 20, "certificates")
        yield Mesh(net, cp, agents, backends)


def test_before_any_call_the_client_holds_only_what_its_workload_uses(mesh: Mesh) -> None:
    assert mesh.outbound_hosts() == set()
    assert not any(SERVER in name or "filler" in name for name in mesh.clusters())
    assert set(mesh.virtual_hosts()) == {"explicit_proxy/plait-vhds-ready"}  # no service's, no catch-all
    shown = run_plait(
        "proxy-config",
        "scope",
        "client-v1.default",
        "--control-plane",
        f"http://127.0.0.1:{mesh.cp.http_port}",
        cwd=mesh.cp.workdir,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("scoped: sent ") and f"of {FILLERS + 10}" not in shown.stdout
    scope = json.loads(
        run_plait(
            "proxy-config",
            "scope",
            "client-v1",
            "-o",
            "json",
            "--control-plane",
            f"http://127.0.0.1:{mesh.cp.http_port}",
            cwd=mesh.cp.workdir,
        ).stdout
    )
    assert scope["scoped"] and scope["stream"] == "delta" and scope["hosts"] == {}
    assert scope["clusters"]["generated"] - scope["clusters"]["sent"] >= FILLERS + 3  # server (3), guarded, fillers
    assert scope["virtual_hosts"] == {"sent": 0, "generated": FILLERS + 2}  # fillers, server, guarded


def test_the_first_call_to_an_unseen_service_succeeds_over_mtls_and_follows_its_route_rule(mesh: Mesh) -> None:
    first = mesh.call("server", {"end-user": "jason"})
    assert first.status == 200 and first.backend == "server-v2"  # the VirtualService's match
    received = mesh.backends["server-v2"].requests[-1]
    assert f"URI={CLIENT_ID}" in received.headers["x-forwarded-client-cert"]  # the server's sidecar saw mTLS
    assert mesh.call("server").backend == "server-v1"
    assert SERVER in mesh.outbound_hosts()
    held = mesh.virtual_hosts()  # fetched on demand (VHDS): the service's own virtual host, nothing else
    assert {f"server:{PORT}", f"{SERVER}:{PORT}"} <= set(held[f"explicit_proxy/{SERVER}:{PORT}"])
    assert not any("filler" in name for name in held)
    assert not any("filler" in name for name in mesh.clusters())
    why = mesh.cp.api.get(f"/debug/scopez?proxy={mesh.agents['client'].proxy_id}")["hosts"]
    assert why == {SERVER: "called it"}


def test_a_denied_service_stays_denied_on_the_first_call_and_after(mesh: Mesh) -> None:
    before = len(mesh.backends["guarded-v1"].requests)
    assert [mesh.call("guarded").status for _ in range(2)] == [403, 403]
    assert len(mesh.backends["guarded-v1"].requests) == before
    assert GUARDED in mesh.outbound_hosts()  # it was fetched; the server's sidecar said no


def _spliced_generations(mesh: Mesh) -> float:
    found = re.search(r'^plait_xds_generations_total\{kind="virtual_hosts"\} (\S+)$', mesh.cp.api.get("/metrics"), re.M)
    return float(found.group(1)) if found else 0.0


def test_a_route_change_reaches_the_virtual_host_the_client_holds(mesh: Mesh) -> None:
    """Through the production path: only the changed virtual host is made again and spliced in."""
    assert mesh.call("server").backend == "server-v1"
    spliced = _spliced_generations(mesh)
    changed = VIRTUAL_SERVICE.replace("subset: v1}}]", "subset: v2}}]")
    mesh.cp.apply(changed)
    try:
        wait_until(lambda: mesh.call("server").backend == "server-v2", 10, "the new default route")
    finally:
        mesh.cp.apply(VIRTUAL_SERVICE)
    wait_until(lambda: mesh.call("server").backend == "server-v1", 10, "the route restored")
    assert _spliced_generations(mesh) > spliced


def test_a_host_outside_the_mesh_passes_through_and_is_held_for_itself_alone(mesh: Mesh) -> None:
    outside = mesh.backends["outside"]
    response = http_request(
        mesh.agents["client"].ip, EXPLICIT_PROXY_PORT, f"http://{outside.address}:{PORT}/", timeout=15
    )
    assert response.status == 200 and response.backend == "outside"
    held = mesh.virtual_hosts()
    name = f"explicit_proxy/{outside.address}:{PORT}"
    assert held[name] == [f"{outside.address}:{PORT}"]  # Istio's allow_any, for that host only
    assert not any(domains == ["*"] for domains in held.values())


def test_a_replica_of_the_workload_is_sent_what_the_workload_learned(mesh: Mesh, tmp_path) -> None:
    replica = agent(mesh.cp, tmp_path, name="client-v1-b", app="client", ip=f"{mesh.net}.3")
    with replica:
        mesh.agents["replica"] = replica
        try:
            wait_until(lambda: SERVER in mesh.outbound_hosts("replica"), 10, "the replica to hold server's clusters")
            assert mesh.call("server", client="replica").backend == "server-v1"
        finally:
            del mesh.agents["replica"]
