"""``plait logs`` on the local mesh: a pod log file split by container, --tail, -f, and clear errors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from plait.cli.main import app
from plait.runtime import podlogs
from plait.runtime.local import Pod, State
from plait.testing.backends import FixedHttpServer

ACCESS = '[2026-12-07T00:19:32.796Z] "GET /productpage HTTP/1.1" 200 - via_upstream - "-" 0 5289 25 24 ...'
LOG = f"""[agent] proxy ready
[envoy] [2026-12-07 03:00:00.000][1][info][main] starting main dispatch loop
 * Serving Flask app 'productpage'
[envoy] {ACCESS}
INFO:werkzeug:127.0.0.1 - - "GET /productpage HTTP/1.1" 200 -
"""
runner = CliRunner()


def pod(path: Path, name: str = "productpage-v1-0", kind: str = "sidecar") -> Pod:
    return Pod(
        name=name,
        namespace="default",
        deployment=name.rpartition("-")[0],
        labels={"app": "productpage", "version": "v1"} if kind == "sidecar" else {"istio": "ingressgateway"},
        service_account="bookinfo-productpage",
        ip="127.1.0.2",
        app_ip="127.1.0.2",
        admin_port=15000,
        status_port=15021,
        command=[],
        env={},
        ports={},
        kind=kind,
        log=str(path),
    )


@pytest.fixture
def mesh(tmp_path: Path) -> Path:
    log = tmp_path / "logs" / "productpage-v1-0.log"
    log.parent.mkdir()
    log.write_text(LOG + "a line still being writ")
    gateway = pod(tmp_path / "logs" / "gw.log", "istio-ingressgateway", "gateway")
    State(mode="proxy", state_dir=str(tmp_path), pods=[pod(log), gateway]).save()
    return tmp_path


def test_containers_split_the_pod_log(mesh: Path) -> None:
    lines, _ = podlogs.read(mesh / "logs" / "productpage-v1-0.log", "istio-proxy")
    assert lines == [
        "[agent] proxy ready",
        "[2026-12-07 03:00:00.000][1][info][main] starting main dispatch loop",
        ACCESS,
    ]
    app_lines, end = podlogs.read(mesh / "logs" / "productpage-v1-0.log", "productpage", tail=1)
    assert app_lines == ['INFO:werkzeug:127.0.0.1 - - "GET /productpage HTTP/1.1" 200 -'] and end == len(LOG)


def test_the_cli_shows_a_container_with_tail(mesh: Path) -> None:
    result = runner.invoke(
        app, ["logs", "productpage-v1-0", "-c", "istio-proxy", "--tail", "1", "--state-dir", str(mesh)]
    )
    assert result.exit_code == 0, result.output
    assert result.output == ACCESS + "\n"
    result = runner.invoke(app, ["logs", "productpage-v1-0", "--state-dir", str(mesh)])
    assert result.output.splitlines() == [" * Serving Flask app 'productpage'", LOG.splitlines()[-1]]


@pytest.mark.parametrize(
    "args, message",
    [
        (["productpage-v1-0", "-c", "nginx"], "container 'nginx' is not valid for pod productpage-v1-0: choose one of"),
        (["istio-ingressgateway", "-c", "app"], "choose one of istio-proxy"),
        (["reviews-v9-0"], "pod default/reviews-v9-0 not found in the local mesh; its pods: default/productpage-v1-0"),
    ],
)
def test_errors_say_what_exists(mesh: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["logs", *args, "--state-dir", str(mesh)])
    assert result.exit_code == 1 and message in " ".join(result.output.split())


def test_no_local_mesh_says_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    result = runner.invoke(app, ["logs", "p", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no local mesh runs from" in result.output


def test_follow_prints_lines_as_they_are_written(mesh: Path) -> None:
    log = mesh / "logs" / "productpage-v1-0.log"
    command = [sys.executable, "-m", "plait", "logs", "productpage-v1-0", "-c", "istio-proxy", "-f", "--tail", "0"]
    with subprocess.Popen([*command, "--state-dir", str(mesh)], stdout=subprocess.PIPE, text=True) as follower:
        seen: list[str] = []
        threading.Thread(target=lambda: seen.extend(follower.stdout), daemon=True).start()
        try:
            deadline = time.monotonic() + 30
            n = 0
            while not seen and time.monotonic() < deadline:  # until the follower, started at some point, prints
                n += 1
                with log.open("a") as file:
                    file.write(f"ten\n[envoy] access line {n}\n")
                time.sleep(0.3)
            time.sleep(0.5)
        finally:
            follower.kill()
    assert seen, "nothing followed"
    numbers = [int(line.removeprefix("access line ")) for line in seen]
    assert numbers == list(range(numbers[0], n + 1)), seen  # each new proxy line once, in order, nothing older


def test_on_kubernetes_the_pods_log_api_is_read(tmp_path: Path) -> None:
    pod_logs = FixedHttpServer(f"{ACCESS}\nsecond line\n")  # an API server's pods/log, as plait logs reads it
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{pod_logs.port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    args = ["logs", "productpage-v1-5d8f7c9b6-x2k4p", "-n", "bookinfo", "-c", "istio-proxy", "--tail", "2"]
    with pod_logs:
        result = runner.invoke(app, [*args, "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{ACCESS}\nsecond line\n"
    [asked] = pod_logs.paths
    path, _, query = asked.partition("?")
    assert path == "/api/v1/namespaces/bookinfo/pods/productpage-v1-5d8f7c9b6-x2k4p/log"
    assert sorted(query.split("&")) == ["container=istio-proxy", "follow=False", "tailLines=2"]
