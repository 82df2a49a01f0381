"""`plait up` in explicit-proxy mode (no root needed): pods from a Deployment, sidecars, the ingress
gateway, a killed app restarted, and `plait down` leaving nothing behind. Real processes throughout."""

from __future__ import annotations

import http.client
import os
import signal
import ssl
from pathlib import Path

import pytest

from plait.host.processes import alive
from plait.runtime.local import State
from plait.testing.http import http_request
from plait.testing.live import free_port, wait_until
from plait.testing.live import run_plait as plait

MANIFEST = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v1}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      containers:
      - name: web
        image: python:3.11
        command: ["sh", "-c", "exec python3 -m http.server $PORT --bind $BIND_ADDRESS"]
        ports: [{containerPort: 9080}]
        readinessProbe: {httpGet: {path: /, port: 9080}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, serverCertificate: CERT, privateKey: KEY}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: web}}]}]
"""


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("up")
    certs = Path(__file__).parents[1] / "xds" / "testdata" / "certs"
    (workdir / "app.yaml").write_text(
        MANIFEST.replace("CERT", str(certs / "cert.pem")).replace("KEY", str(certs / "key.pem"))
    )
    port, tls_port = free_port(), free_port()
    result = plait(
        "up",
        "-f",
        "app.yaml",
        "-d",
        "--mode",
        "proxy",
        "--ingress-port",
        str(port),
        "--ingress-tls-port",
        str(tls_port),
        cwd=workdir,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield workdir, port, tls_port
    finally:
        state = State.load(workdir / ".plait")
        down = plait("down", cwd=workdir)
        assert down.returncode == 0, down.stdout + down.stderr
        if state:  # nothing left behind: every process it started is gone
            pids = [state.supervisor_pid, state.control_plane_pid] + [p.pid for p in state.pods]
            assert not [p for p in pids if p and alive(p)]


def test_up_detached_returns_when_everything_is_ready(mesh) -> None:
    workdir, _, _ = mesh
    status = plait("status", cwd=workdir)
    assert status.returncode == 0
    for pod in ("default/web-v1-0", "default/web-v1-1", "istio-system/istio-ingressgateway"):
        line = next(line for line in status.stdout.splitlines() if pod in line)
        assert "ready" in line and "SYNCED" in line, status.stdout
    assert "default/web" in status.stdout and "10.96.0." in status.stdout


def test_ingress_gateway_and_sidecar_to_sidecar_traffic(mesh) -> None:
    workdir, port, _ = mesh
    assert http_request("127.0.0.1", port, "/").status == 200
    state = State.load(workdir / ".plait")
    web0 = next(p for p in state.pods if p.name == "web-v1-0")
    # from web-v1-0's sidecar (its HTTP_PROXY) to the web service: load-balanced over both replicas
    assert http_request(web0.ip, 15001, "http://web:9080/").status == 200


def test_a_killed_app_is_restarted_and_traffic_recovers(mesh) -> None:
    workdir, port, _ = mesh
    state = State.load(workdir / ".plait")
    pod = next(p for p in state.pods if p.name == "web-v1-1")
    apps = [c for c in children(pod.pid) if "envoy" not in Path(f"/proc/{c}/cmdline").read_text()]
    assert apps, "the app process of web-v1-1 was not found"
    os.kill(apps[0], signal.SIGKILL)
    wait_until(lambda: State.load(workdir / ".plait").pods[1].restarts >= 1, 30, "the pod to be restarted")
    wait_until(
        lambda: "ready" in next(row for row in plait("status", cwd=workdir).stdout.splitlines() if "web-v1-1" in row),
        60,
        "the restarted pod to be ready",
    )
    assert [http_request("127.0.0.1", port, "/").status for _ in range(20)] == [200] * 20
    assert " 1 " in next(row for row in plait("status", cwd=workdir).stdout.splitlines() if "web-v1-1" in row) + " "


def test_https_server_with_a_user_certificate_on_the_ingress_gateway(mesh) -> None:
    _, _, tls_port = mesh
    context = ssl.create_default_context(
        cafile=str(Path(__file__).parents[1] / "xds" / "testdata" / "certs" / "cert.pem")
    )
    context.check_hostname = False  # the test certificate names store.example.com
    connection = http.client.HTTPSConnection("127.0.0.1", tls_port, context=context, timeout=10)
    try:
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        assert connection.sock.version().startswith("TLS")
    finally:
        connection.close()
