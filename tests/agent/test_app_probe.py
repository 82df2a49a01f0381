"""The agent runs the app's rewritten probes (/app-health on --probe-port) and `plait agent-wait` holds the app.

A real ``plait agent`` (real Envoy, a fixed control plane) and a real app process: an HTTP
server (/ok answers 200, /sick 500, /moved 302), a TCP port, and a gRPC server answering the
standard health check. The probes are handed over as the injector writes them
(`plait.inject.probes`), in ISTIO_KUBE_APP_PROBERS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from agent_harness import PLAIT, http_get, wait_for

from plait.inject import InjectSettings, inject
from plait.inject.probes import app_probers, probers_env
from plait.testing.live import free_port

APP = r"""
import sys, threading, http.server
from concurrent import futures
import grpc

http_port, grpc_port, serving = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = {"/ok": 200, "/sick": 500, "/moved": 302}.get(self.path, 404)
        if self.path == "/header" and self.headers.get("X-Probe") == "yes":
            status = 200
        self.send_response(status)
        self.send_header("Location", "http://127.0.0.1:1/")
        self.end_headers()
    def log_message(self, *args):
        pass

def check(request, context):
    return b"\x08\x01" if serving == "SERVING" else b"\x08\x02"

server = grpc.server(futures.ThreadPoolExecutor(2))
handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
    "Check": grpc.unary_unary_rpc_method_handler(check)})
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{grpc_port}")
server.start()
http.server.ThreadingHTTPServer(("127.0.0.1", http_port), Handler).serve_forever()
"""


def app_pod(http_port: int, grpc_port: int, closed_port: int) -> dict:
    """A pod whose probes cover every kind the injector hands over."""
    return {
        "containers": [
            {
                "name": "web",
                "ports": [{"name": "http", "containerPort": http_port}],
                "readinessProbe": {"httpGet": {"path": "/ok", "port": "http"}, "timeoutSeconds": 2},
                "livenessProbe": {"httpGet": {"path": "/sick", "port": http_port}},
                "startupProbe": {"httpGet": {"path": "/moved", "port": http_port}},
                "lifecycle": {
                    "preStop": {
                        "httpGet": {
                            "path": "/header",
                            "port": http_port,
                            "httpHeaders": [{"name": "X-Probe", "value": "yes"}],
                        }
                    }
                },
            },
            {
                "name": "tcp",
                "readinessProbe": {"tcpSocket": {"port": http_port}},
                "livenessProbe": {"tcpSocket": {"port": closed_port}},
            },
            {"name": "rpc", "readinessProbe": {"grpc": {"port": grpc_port}}},
        ]
    }


@pytest.fixture
def app() -> Iterator[tuple[int, int, int]]:
    http_port, grpc_port, closed_port = free_port(), free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-c", APP, str(http_port), str(grpc_port), "SERVING"])
    try:
        wait_for(lambda: _answers(http_port), "the app's HTTP port")
        yield http_port, grpc_port, closed_port
    finally:
        process.kill()
        process.wait(5)


def _answers(port: int) -> bool:
    try:
        return http_get(f"http://127.0.0.1:{port}/ok")[0] == 200
    except OSError:
        return False


def test_agent_answers_the_apps_probes_on_the_probe_port(start_agent, ads_server, app) -> None:
    http_port, grpc_port, closed_port = app
    probers = app_probers(app_pod(http_port, grpc_port, closed_port), status_port=15020)
    probe_port = free_port()
    agent = start_agent(
        "--probe-port", str(probe_port), "--app-probers", probers_env(probers), control_plane_port=ads_server().port
    )
    agent.wait_ready()

    def health(path: str) -> int:
        return http_get(f"http://127.0.0.1:{probe_port}/app-health/{path}")[0]

    assert health("web/readyz") == 200  # named port resolved by the injector
    assert health("web/livez") == 500  # the app's own failure status is passed on
    assert health("web/startupz") == 200  # 3xx passes, as the kubelet counts it; not followed
    assert health("web/prestopz") == 200  # the probe's headers are sent
    assert health("tcp/readyz") == 200
    assert health("tcp/livez") == 503  # nothing listens there
    assert health("rpc/readyz") == 200  # grpc.health.v1 SERVING
    assert health("nobody/readyz") == 404
    assert http_get(f"http://127.0.0.1:{probe_port}/healthz/ready")[0] == 200  # the status routes too
    assert http_get(f"http://127.0.0.1:{agent.status_port}/app-health/web/readyz")[0] == 200


def test_agent_refuses_probers_that_are_not_the_injectors_json(tmp_path) -> None:
    result = subprocess.run(
        [
            str(PLAIT),
            "agent",
            "--name",
            "a",
            "--ip",
            "127.0.0.1",
            "--app-probers",
            '{"/app-health/web/readyz": {"httpGet": {"port": "http"}}}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2
    assert "ISTIO_KUBE_APP_PROBERS['/app-health/web/readyz'].httpGet.port: expected a port number" in result.stderr


def test_agent_wait_returns_once_the_proxy_is_ready(start_agent, ads_server) -> None:
    agent = start_agent(control_plane_port=ads_server().port)
    url = f"http://127.0.0.1:{agent.status_port}/healthz/ready"
    agent.wait_ready()
    waited = subprocess.run(
        [str(PLAIT), "agent-wait", "--url", url, "--timeout", "10"], capture_output=True, text=True, timeout=60
    )
    assert waited.returncode == 0, waited.stderr
    assert f"{url} is ready" in waited.stderr


def test_agent_wait_gives_up_after_its_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz/ready"  # nothing listens
    waited = subprocess.run(
        [str(PLAIT), "agent-wait", "--url", url, "--timeout", "0.5", "--period", "0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert waited.returncode == 1
    assert f"{url} not ready after 0.5s" in waited.stderr


def test_probers_json_is_what_the_agent_parses() -> None:
    probers = app_probers(app_pod(8080, 9090, 1), status_port=15020)
    assert json.loads(probers_env(probers))["/app-health/web/readyz"] == {
        "httpGet": {"path": "/ok", "port": 8080},
        "timeoutSeconds": 2,
    }


def test_the_injected_sidecar_command_runs_and_answers_the_kubelets_probe(tmp_path, ads_server, app) -> None:
    """The istio-proxy container the injector writes, run here: the kubelet's $(VAR)s filled in, the
    control plane swapped for a local plaintext one (no pod token here), ports moved to free ones."""
    http_port, _, _ = app
    pod = {
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "web", "readinessProbe": {"httpGet": {"path": "/ok", "port": http_port}}}]},
    }
    injected = inject(pod, InjectSettings())
    web, proxy = injected["spec"]["containers"]
    env = {e["name"]: e["value"] for e in proxy["env"] if "value" in e}
    env.update(POD_NAME="web", POD_NAMESPACE="default", INSTANCE_IP="127.0.0.1", SERVICE_ACCOUNT="default")
    probe_port, status_port = free_port(), free_port()
    replaced = {
        "--control-plane": f"127.0.0.1:{ads_server().port}",
        "--state-dir": str(tmp_path / "proxy"),
        "--status-port": str(status_port),
        "--probe-port": str(probe_port),
    }
    args = ["agent"]
    flags = iter(proxy["args"][1:])
    for flag, value in zip(flags, flags, strict=True):  # every flag of the injected command has a value
        if flag not in ("--token-file", "--root-cert"):
            args += [flag, re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], replaced.get(flag, value))]
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        [str(PLAIT), *args, "--admin-port", str(free_port())],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _status(status_port, "/healthz/ready") == 200, "the injected sidecar to be ready")
        path = web["readinessProbe"]["httpGet"]["path"]  # what the kubelet now asks, on the probe port
        assert web["readinessProbe"]["httpGet"]["port"] == 15020 and path == "/app-health/web/readyz"
        assert _status(probe_port, path) == 200
    finally:
        agent.terminate()
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)


def _status(port: int, path: str) -> int:
    try:
        return http_get(f"http://127.0.0.1:{port}{path}")[0]
    except OSError:
        return 0
