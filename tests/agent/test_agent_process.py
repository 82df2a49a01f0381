"""``plait agent`` with real Envoys: readiness, restarts, drain, hold-application, no orphans.

The control plane is `fixed_ads.FixedAdsServer` (a cluster and a listener,
SotW or delta); the full control plane is tested elsewhere. Processes are
checked by PID: the agent's own, Envoy's from the agent's PID file, the app's
from a file the app writes.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from agent_harness import alive, http_get, wait_for
from fixed_ads import HELLO

from plait.testing.live import free_port

NODE_ID = "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local"

# The app under hold-application: records the agent's readiness answer at its start, then
# either exits with a status or waits for SIGTERM and exits 3.
APP = """
import os, signal, sys, time, urllib.request
status_url, record, mode = sys.argv[1:4]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(status_url, timeout=5) as response:
    seen = response.status
def record_line(text):
    with open(record, "a") as f:
        f.write(text + "\\n")
record_line(f"pid {os.getpid()} readiness {seen}")
if mode == "exit":
    sys.exit(7)
def on_term(signum, frame):
    record_line("terminated")
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
time.sleep(60)
"""


def app_command(tmp_path: Path, status_port: int, mode: str) -> tuple[list[str], Path]:
    script, record = tmp_path / "app.py", tmp_path / "app.record"
    script.write_text(APP)
    return [sys.executable, str(script), f"http://127.0.0.1:{status_port}/healthz/ready", str(record), mode], record


def record_lines(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def test_not_ready_while_there_is_no_control_plane(start_agent) -> None:
    agent = start_agent("--log-level", "info", control_plane_port=free_port())
    envoy = agent.envoy_pid()
    wait_for(lambda: agent.readiness()[0] == 503, "the status port")
    time.sleep(1.0)  # Envoy has been trying to reach the control plane for a while
    status, reason = agent.readiness()
    assert status == 503
    assert "config not received from the control plane: cds updates: 0 successful" in reason
    assert alive(envoy)
    assert f"[agent] Envoy started (pid {envoy})" in agent.log()
    assert "[envoy] [" in agent.log() and "starting main dispatch loop" in agent.log()  # Envoy's log, passed through
    assert http_get(f"http://127.0.0.1:{agent.status_port}/nothing")[0] == 404


def test_envoy_killed_is_restarted(start_agent) -> None:
    agent = start_agent(control_plane_port=free_port())
    first = agent.envoy_pid()
    os.kill(first, signal.SIGKILL)
    second = agent.envoy_pid(other_than=first)
    assert not alive(first) and alive(second)
    wait_for(lambda: agent.readiness()[0] == 503, "the restarted Envoy's admin API behind the status port")
    assert f"Envoy (pid {first}) was killed by SIGKILL; restarting in 0.2s" in agent.log()


def test_sigterm_drains_and_stops_envoy(start_agent, ads_server) -> None:
    server = ads_server()
    agent = start_agent(control_plane_port=server.port, drain=1.0)
    envoy = agent.envoy_pid()
    agent.wait_ready()
    sent = time.monotonic()
    agent.process.send_signal(signal.SIGTERM)
    wait_for(lambda: agent.readiness() == (503, "draining\n"), "readiness to report draining")
    assert agent.wait_exit() == 0
    assert time.monotonic() - sent >= 1.0  # the drain period was waited
    assert not alive(envoy)
    assert not (agent.state_dir / "envoy.pid").exists()
    assert "draining Envoy for 1s (/drain_listeners?inboundonly&graceful)" in agent.log()


@pytest.mark.parametrize("xds", ["sotw", "delta"])
def test_ready_once_the_control_plane_serves_config(start_agent, ads_server, xds: str) -> None:
    port = free_port()
    agent = start_agent("--xds", xds, "--labels", "app=reviews,version=v1", control_plane_port=port)
    agent.envoy_pid()
    wait_for(lambda: agent.readiness()[0] == 503, "the status port")
    server = ads_server(port)  # the control plane comes up after the proxy
    agent.wait_ready()
    assert http_get(f"http://127.0.0.1:{server.listener_port}/") == (200, HELLO)
    node = server.servicer.nodes[0]
    assert node.id == NODE_ID and node.cluster == "reviews.default"
    labels = node.metadata.fields["LABELS"].struct_value.fields
    assert {k: v.string_value for k, v in labels.items()} == {"app": "reviews", "version": "v1"}
    assert node.metadata.fields["PLAIT_MODE"].string_value == "capture"
    assert node.user_agent_build_version.version.major_number == 1  # the hub reports Envoy's version
    status, metrics = http_get(f"http://127.0.0.1:{agent.status_port}/stats/prometheus")
    assert status == 200 and "envoy_cluster_manager_cds_update_success{} 1" in metrics


def test_app_starts_only_once_ready_and_its_status_is_the_agents(start_agent, ads_server, tmp_path: Path) -> None:
    port, status_port = free_port(), free_port()
    command, record = app_command(tmp_path, status_port, mode="exit")
    agent = start_agent(control_plane_port=port, status_port=status_port, app=command)
    envoy = agent.envoy_pid()
    wait_for(lambda: agent.readiness()[0] == 503, "the status port")
    time.sleep(1.0)
    assert record_lines(record) == [], "the app started before its proxy was ready"
    ads_server(port)
    assert agent.wait_exit() == 7
    [line] = record_lines(record)
    assert line.endswith("readiness 200")
    assert not alive(envoy)


def agent_with_a_waiting_app(start_agent, ads_server, tmp_path: Path):
    """An agent whose app has started and waits for a signal: (agent, Envoy's pid, the app's pid, its record)."""
    server, status_port = ads_server(), free_port()
    command, record = app_command(tmp_path, status_port, mode="wait")
    agent = start_agent(control_plane_port=server.port, status_port=status_port, app=command)
    envoy = agent.envoy_pid()
    wait_for(lambda: record_lines(record), "the app to start")
    return agent, envoy, int(record_lines(record)[0].split()[1]), record


def test_sigterm_reaches_the_app_and_the_agent_exits_with_its_status(start_agent, ads_server, tmp_path: Path) -> None:
    agent, envoy, app_pid, record = agent_with_a_waiting_app(start_agent, ads_server, tmp_path)
    agent.process.send_signal(signal.SIGTERM)
    assert agent.wait_exit() == 3
    assert record_lines(record)[1:] == ["terminated"]
    assert not alive(app_pid) and not alive(envoy)


def test_agent_killed_takes_envoy_and_app_with_it(start_agent, ads_server, tmp_path: Path) -> None:
    agent, envoy, app_pid, _ = agent_with_a_waiting_app(start_agent, ads_server, tmp_path)
    agent.process.kill()
    agent.wait_exit()
    wait_for(lambda: not alive(envoy) and not alive(app_pid), "Envoy and the app to die with the agent", timeout=5)
