"""`plait up` runs Kubernetes manifests as Kubernetes would: ``$(VAR)`` in a container's args expands
from its environment, and a crash-looping pod fails `plait up -d` with its name, its restarts and the
last lines of its log. Real processes, explicit-proxy mode (no root needed)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from plait.runtime.local import CRASH_LOOP_RESTARTS, State
from plait.testing.http import http_request
from plait.testing.live import free_port, wait_until
from plait.testing.live import run_plait as plait
from plait.testing.localmesh import down_leaves_nothing, wait_for_no_other_mesh

SERVICE_AND_ROUTE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: web}}]}]
"""

EXPANDED_ARGS = (
    SERVICE_AND_ROUTE
    + """
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        command: ["python3", "-m", "http.server"]
        args: ["$(LISTEN_PORT)", "--bind", "$(BIND_ADDRESS)"]
        env: [{name: LISTEN_PORT, value: "9080"}]
        ports: [{containerPort: 9080}]
        readinessProbe: {httpGet: {path: /, port: 9080}}
"""
)

CRASH_LOOP = (
    SERVICE_AND_ROUTE
    + """
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        command: ["python3", "-c", "import sys; print('cannot open the database', flush=True); sys.exit(3)"]
        ports: [{containerPort: 9080}]
"""
)


def up(workdir: Path, manifest: str, ingress_port: int):
    wait_for_no_other_mesh()
    (workdir / "app.yaml").write_text(manifest)
    return plait(
        "up",
        "-f",
        "app.yaml",
        "-d",
        "--mode",
        "proxy",
        "--ingress-port",
        str(ingress_port),
        "--ingress-tls-port",
        str(free_port()),
        cwd=workdir,
    )


@pytest.fixture
def workdir(tmp_path: Path):
    yield tmp_path
    down_leaves_nothing(tmp_path, tmp_path / ".plait", "proxy")


def test_args_referencing_the_environment_reach_the_app_expanded(workdir: Path) -> None:
    port = free_port()
    result = up(workdir, EXPANDED_ARGS, port)
    assert result.returncode == 0, result.stdout + result.stderr
    state = State.load(workdir / ".plait")
    pod = next(p for p in state.pods if p.name == "web-0")
    assert pod.command == ["python3", "-m", "http.server", "9080", "--bind", pod.app_ip]
    assert http_request("127.0.0.1", port, "/").status == 200


def test_a_crash_looping_pod_fails_up_with_its_log(workdir: Path) -> None:
    result = up(workdir, CRASH_LOOP, free_port())
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pod default/web-0 keeps crashing" in result.stderr
    restarts = re.search(r"restarted (\d+) times without becoming ready", result.stderr)
    assert restarts and int(restarts.group(1)) >= CRASH_LOOP_RESTARTS, result.stderr
    assert "cannot open the database" in result.stderr
    assert "the application exited with status 3" in result.stderr
    assert "not every pod was ready after" not in result.stderr


def test_a_crash_looping_pod_is_reported_in_the_foreground_too(tmp_path: Path) -> None:
    wait_for_no_other_mesh()
    (tmp_path / "app.yaml").write_text(CRASH_LOOP)
    output = tmp_path / "up.out"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    with open(output, "wb") as sink:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plait",
                "up",
                "-f",
                "app.yaml",
                "--mode",
                "proxy",
                "--ingress-port",
                str(free_port()),
                "--ingress-tls-port",
                str(free_port()),
            ],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_until(
            lambda: "keeps crashing" in output.read_text(errors="replace"),
            120,
            f"plait up to report the crash loop ({output})",
            interval=0.5,
        )
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
    text = output.read_text(errors="replace")
    assert text.count("pod default/web-0 keeps crashing") == 1  # once per pod, above the live table
    assert "cannot open the database" in text and "stopped; nothing left running." in text
