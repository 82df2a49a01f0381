"""Fixtures for the agent's process tests: ``plait agent`` processes and test control planes.

`start_agent(...)` runs ``plait agent`` with its own state directory and free
ports; `ads_server(...)` starts a `fixed_ads.FixedAdsServer`. At teardown
every process a test started or saw is killed by PID if it is still there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_harness import PLAIT, RunningAgent
from fixed_ads import FixedAdsServer

from plait.testing.live import free_port


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., RunningAgent]]:
    agents: list[RunningAgent] = []

    def start(
        *flags: str,
        control_plane_port: int,
        status_port: int | None = None,
        app: list[str] | None = None,
        drain: float = 0.3,
        name: str = "reviews-v1",
        ip: str = "127.0.0.1",
    ) -> RunningAgent:
        state_dir = tmp_path / f"agent-{len(agents)}"
        admin_port, status_port = free_port(), status_port or free_port()
        command = [
            str(PLAIT),
            "agent",
            "--name",
            name,
            "--ip",
            ip,
            "--control-plane",
            f"127.0.0.1:{control_plane_port}",
            "--admin-port",
            str(admin_port),
            "--status-port",
            str(status_port),
            "--state-dir",
            str(state_dir),
            "--drain-duration",
            str(drain),
            *flags,
        ]
        if app:
            command += ["--", *app]
        log_path = tmp_path / f"agent-{len(agents)}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        agent = RunningAgent(process, status_port, admin_port, state_dir, log_path)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.kill_everything()


@pytest.fixture
def ads_server() -> Iterator[Callable[..., FixedAdsServer]]:
    servers: list[FixedAdsServer] = []

    def start(port: int | None = None) -> FixedAdsServer:
        server = FixedAdsServer(port or free_port(), free_port()).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
