"""Istio's egress pattern written with the Gateway API, in the local mesh (capture mode), end to end.

../shared/examples/gateway-api-egress/egress.yaml is applied unchanged: a ServiceEntry for ifconfig.me
(resolution DNS), a Gateway ``egress-gateway`` of class istio, an HTTPRoute on the ServiceEntry sending
to ``egress-gateway-istio:80`` and one on the Gateway forwarding to the host. The runtime deploys the
gateway ``egress-gateway-istio`` by itself. There is no internet here: the "external" ifconfig.me is a
server on a loopback address of the host, outside the mesh, and the mesh runs in a mount namespace whose
/etc/hosts names that address ifconfig.me (what the host's DNS would answer). A pod's plain
`curl http://ifconfig.me/` gets the external answer, through the egress gateway (its counters show
it; the pod cannot reach the server by itself). Deleting the Gateway removes its gateway.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plait.runtime import netns
from plait.runtime.local import State
from plait.testing.backends import HttpBackend
from plait.testing.http import http_request
from plait.testing.live import free_port, wait_until
from plait.testing.live import run_plait as plait
from plait.testing.localmesh import down_leaves_nothing, wait_for_no_other_mesh

EXAMPLE = Path(__file__).parents[3] / "shared" / "examples" / "gateway-api-egress" / "egress.yaml"
SHARED_EXAMPLE = Path("/work/shared/examples/gateway-api-egress/egress.yaml")
EXTERNAL_ADDRESS = "127.77.0.1"  # the host's loopback: no pod reaches it but through the gateway

CLIENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: client}
spec:
  replicas: 1
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers:
      - name: client
        image: python:3.11
        command: ["sh", "-c", "exec python3 -m http.server $PORT --bind $BIND_ADDRESS"]
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: client}
spec:
  selector: {app: client}
  ports: [{name: http, port: 80}]
"""


def example() -> Path:
    return EXAMPLE if EXAMPLE.exists() else SHARED_EXAMPLE


def up_in_mount_namespace(workdir: Path, state_dir: Path) -> subprocess.CompletedProcess:
    """`plait up -d` in a private mount namespace whose /etc/hosts adds ifconfig.me → EXTERNAL_ADDRESS."""
    hosts = workdir / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n{EXTERNAL_ADDRESS} ifconfig.me\n")
    up = [sys.executable, "-m", "plait", "up", "-f", "client.yaml", "-f", "egress.yaml", "-d", "--mode", "capture"]
    up += ["--ingress-port", str(free_port()), "--state-dir", str(state_dir)]
    script = f'mount --bind "{hosts}" /etc/hosts && exec "$@"'
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *up]
    return subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=240, env=env)


class Mesh:
    def __init__(self, workdir: Path, state_dir: Path, external: HttpBackend):
        self.workdir, self.state_dir, self.external = workdir, state_dir, external

    def pods(self) -> dict:
        return {p.name: p for p in State.load(self.state_dir).pods}

    def curl(self, url: str) -> tuple[int, str]:
        """GET from inside the client pod, entered from the mesh's mount namespace (where its network
        namespaces are mounted)."""
        curl = ["curl", "-s", "--max-time", "10", "-w", "\n%{http_code}", url]
        mount = ["nsenter", f"--mount=/proc/{State.load(self.state_dir).supervisor_pid}/ns/mnt"]
        argv = mount + netns.exec_argv(netns.Network().namespace("client-0"), curl)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        body, _, status = done.stdout.rpartition("\n")
        return int(status or 0), body

    def gateway_stat(self, name: str) -> int:
        pod = self.pods()["egress-gateway-istio"]
        stats = http_request("127.0.0.1", pod.admin_port, "/stats").body.decode()
        found = re.search(rf"^{re.escape(name)}: (\d+)$", stats, flags=re.MULTILINE)
        return int(found.group(1)) if found else 0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("capture mode needs root (CI runs as root)")
    workdir = tmp_path_factory.mktemp("gatewayapi-egress")
    state_dir = workdir / "state"
    (workdir / "client.yaml").write_text(CLIENT)
    (workdir / "egress.yaml").write_text(example().read_text())  # unchanged
    with HttpBackend("ifconfig.me", EXTERNAL_ADDRESS, 80) as external:
        wait_for_no_other_mesh()
        started = time.monotonic()
        try:
            up = up_in_mount_namespace(workdir, state_dir)
            assert up.returncode == 0, up.stdout + up.stderr
            print(f"mesh ready in {time.monotonic() - started:.1f}s")
            yield Mesh(workdir, state_dir, external)
        finally:
            down_leaves_nothing(workdir, state_dir, "capture")


def test_the_gateway_is_deployed_for_the_gateway_object(mesh: Mesh) -> None:
    pod = mesh.pods()["egress-gateway-istio"]
    assert (pod.namespace, pod.kind) == ("istio-system", "gateway")
    assert pod.labels["gateway.networking.k8s.io/gateway-name"] == "egress-gateway"
    services = plait("get", "service", "egress-gateway-istio", "-n", "istio-system", "-o", "yaml", cwd=mesh.workdir)
    assert "targetPort" in services.stdout, services.stdout + services.stderr


def test_plain_curl_leaves_through_the_egress_gateway(mesh: Mesh) -> None:
    counter = "cluster.outbound|80||ifconfig.me.upstream_rq_200"
    before_gateway, before_external = mesh.gateway_stat(counter), mesh.external.count
    replies = [mesh.curl(f"http://ifconfig.me/ip/{i}") for i in range(3)]
    assert [status for status, _ in replies] == [200] * 3, replies
    assert all('"ifconfig.me"' in body for _, body in replies), replies
    assert mesh.external.count - before_external == 3
    wait_until(lambda: mesh.gateway_stat(counter) - before_gateway == 3, 5, "the egress gateway's counter")
    seen = mesh.external.requests[-1]
    assert seen.headers["host"] == "ifconfig.me"
    assert seen.headers["x-forwarded-for"] == mesh.pods()["client-0"].ip  # the gateway saw the pod


def test_the_pod_cannot_reach_the_server_by_itself(mesh: Mesh) -> None:
    """The server's address is the host's loopback: inside the pod it is the pod's own (its app on port
    80 answers, if anything); the external server sees nothing."""
    before = mesh.external.count
    _, body = mesh.curl(f"http://{EXTERNAL_ADDRESS}/direct")
    assert '"ifconfig.me"' not in body
    assert mesh.external.count == before


def test_deleting_the_gateway_removes_its_proxy(mesh: Mesh) -> None:
    gateway = mesh.workdir / "gateway.yaml"
    text = example().read_text()
    gateway.write_text(next(d for d in text.split("\n---\n") if "kind: Gateway\n" in d))
    deleted = plait("delete", "-f", str(gateway), cwd=mesh.workdir)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    pid = mesh.pods()["egress-gateway-istio"].pid
    wait_until(lambda: "egress-gateway-istio" not in mesh.pods(), 15, "the gateway pod removed")
    wait_until(lambda: not _alive(pid), 15, "the gateway process gone")
    services = plait("get", "service", "-n", "istio-system", cwd=mesh.workdir)
    assert "egress-gateway-istio" not in services.stdout
    status, _ = mesh.curl("http://ifconfig.me/after-delete")
    assert status != 200  # the sidecar's route now points at a Service with no gateway behind it


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
