"""Automatic scoping in capture mode (root): `plait up` runs a client pod, an HTTP service and a TCP
echo service in network namespaces with iptables capture. The client's sidecar starts without the
services' clusters; its first HTTP request and its first TCP connection, captured by iptables, make
its Envoy fetch the cluster on demand (the HCM's on_demand filter, the TCP proxy's on_demand) and go
through over mutual TLS, as later ones do."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from plait.runtime.local import State, pod_argv
from plait.testing.live import free_port
from plait.testing.live import run_plait as plait
from plait.testing.localmesh import down_leaves_nothing, envoy_admin, wait_for_no_other_mesh

ECHO = "echo.default.svc.cluster.local"
WEB = "web.default.svc.cluster.local"
ECHO_SERVER = (
    "import socketserver\n"
    "class H(socketserver.BaseRequestHandler):\n"
    "    def handle(self):\n"
    "        self.request.sendall(b'echo:' + self.request.recv(64))\n"
    "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
    "socketserver.ThreadingTCPServer(('0.0.0.0', 9000), H).serve_forever()\n"
)
TCP_CLIENT = (
    "import socket\n"
    f"s = socket.create_connection(('{ECHO}', 9000), timeout=10)\n"
    "s.sendall(b'hello'); print(s.recv(64).decode())\n"
)

MANIFESTS = f"""
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  selector: {{app: echo}}
  ports: [{{name: tcp, port: 9000, targetPort: 9000}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo}}
spec:
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      containers:
      - name: echo
        command: ["python3", "-c", {json.dumps(ECHO_SERVER)}]
        ports: [{{containerPort: 9000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 9080, targetPort: 9080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        command: ["python3", "-m", "http.server", "9080"]
        ports: [{{containerPort: 9080}}]
        readinessProbe: {{httpGet: {{path: /, port: 9080}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client}}
spec:
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      containers:
      - name: client
        command: ["python3", "-c", "import time; time.sleep(86400)"]
"""


class Mesh:
    def __init__(self, workdir: Path, state_dir: Path):
        self.workdir, self.state_dir = workdir, state_dir
        self.client = next(p.name for p in State.load(state_dir).pods if p.name.startswith("client"))

    def in_client(self, argv: list[str]) -> subprocess.CompletedProcess:
        argv = pod_argv(self.state_dir, self.client, argv)
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    def stat(self, name: str) -> int:
        for line in envoy_admin(self.state_dir, self.client, "/stats?filter=ssl.handshake$").splitlines():
            stat, _, value = line.partition(": ")
            if stat == name:
                return int(value)
        return 0

    def outbound_hosts(self) -> set[str]:
        text = envoy_admin(self.state_dir, self.client, "/clusters")
        return {line.split("::")[0].split("|")[3] for line in text.splitlines() if line.startswith("outbound|")}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    if not Path("/proc/self/ns/net").exists() or subprocess.run(["id", "-u"], capture_output=True).stdout != b"0\n":
        pytest.fail("capture mode needs root (CI runs as root)")
    workdir = tmp_path_factory.mktemp("scoping-capture")
    (workdir / "manifests.yaml").write_text(MANIFESTS)
    state_dir = workdir / "state"
    wait_for_no_other_mesh()
    try:
        up = plait(
            "up",
            "-f",
            str(workdir / "manifests.yaml"),
            "-d",
            "--mode",
            "capture",
            "--state-dir",
            str(state_dir),
            "--ingress-port",
            str(free_port()),
            "--ingress-tls-port",
            str(free_port()),
            cwd=workdir,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        yield Mesh(workdir, state_dir)
    finally:
        if State.load(state_dir):
            down_leaves_nothing(workdir, state_dir, "capture")


def test_first_tcp_connection_and_first_http_request_fetch_their_clusters_and_use_mtls(mesh: Mesh) -> None:
    assert not {ECHO, WEB} & mesh.outbound_hosts()  # nothing called yet: neither cluster was sent

    echoed = mesh.in_client(["python3", "-c", TCP_CLIENT])
    assert echoed.returncode == 0 and echoed.stdout.strip() == "echo:hello", echoed.stderr
    assert ECHO in mesh.outbound_hosts() and WEB not in mesh.outbound_hosts()
    assert mesh.stat(f"cluster.outbound|9000||{ECHO}.ssl.handshake") >= 1  # auto mTLS on the first connection

    fetched = mesh.in_client(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{WEB}:9080/"])
    assert fetched.stdout == "200", fetched.stderr
    assert mesh.stat(f"cluster.outbound|9080||{WEB}.ssl.handshake") >= 1
    shown = plait("proxy-config", "scope", mesh.client, cwd=mesh.workdir)
    assert ECHO in shown.stdout and WEB in shown.stdout and "called it" in shown.stdout, shown.stdout + shown.stderr
