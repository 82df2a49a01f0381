"""docs/agent.md's worked example, run as written: the real control plane, a backend, and two agents.

The YAML comes from the doc itself; its 127.0.30.x addresses are moved to a
loopback subnet this test holds alone, and every port is a free one.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from agent_harness import PLAIT, http_get, wait_for

from plait.testing.backends import loopback_subnet
from plait.testing.live import free_port

DOC = Path(__file__).parents[2] / "docs" / "agent.md"
CURL = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} from %{url}\n", "http://reviews:9080/"]


def doc_yaml(subnet: str) -> str:
    [text] = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return text.replace("127.0.30.", f"{subnet}.")


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_worked_example(start_agent, tmp_path: Path) -> None:
    assert " -- curl -s -o /dev/null -w '%{http_code} from %{url}\\n' http://reviews:9080/" in DOC.read_text()
    xds_port, http_port = free_port(), free_port()
    with loopback_subnet() as subnet:
        (tmp_path / "mesh").mkdir()
        (tmp_path / "mesh" / "reviews.yaml").write_text(doc_yaml(subnet))
        started = [
            subprocess.Popen(
                [sys.executable, "-m", "http.server", "8081", "--bind", f"{subnet}.2"],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [
                    str(PLAIT),
                    "control-plane",
                    "--config-dir",
                    str(tmp_path / "mesh"),
                    "--xds-port",
                    str(xds_port),
                    "--http-port",
                    str(http_port),
                    "--ca-port",
                    str(free_port()),
                    "--state-dir",
                    str(tmp_path / "cp-state"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            wait_for(lambda: listening(f"{subnet}.2", 8081), "the reviews backend")
            wait_for(
                lambda: listening("127.0.0.1", http_port) and http_get(f"http://127.0.0.1:{http_port}/ready")[0] == 200,
                "the control plane",
            )
            sidecar = start_agent(
                "--mode",
                "proxy",
                "--labels",
                "app=productpage,version=v1",
                name="productpage-v1",
                ip=f"{subnet}.1",
                control_plane_port=xds_port,
                app=CURL,
                drain=1,
            )
            gateway = start_agent(
                "--mode",
                "gateway",
                "--namespace",
                "istio-system",
                "--labels",
                "istio=ingressgateway",
                name="ingressgateway",
                ip=f"{subnet}.3",
                control_plane_port=xds_port,
            )
            assert sidecar.wait_exit() == 0, sidecar.log()
            assert "200 from http://reviews:9080/" in sidecar.log()
            assert "draining Envoy for 1s (/drain_listeners?inboundonly&graceful)" in sidecar.log()
            gateway.wait_ready()
        finally:
            for process in started:
                process.terminate()
                process.wait(10)
