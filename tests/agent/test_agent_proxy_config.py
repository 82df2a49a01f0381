"""ProxyConfig reaches Envoy through the agent: worker threads (``--concurrency``) and environment
variables (``--proxy-env``), as a real Envoy reports them."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

from agent_harness import http_get, wait_for

from plait.testing.live import free_port


def concurrency_stat(admin_port: int) -> str:
    """Envoy's ``server.concurrency`` line, once its admin API answers."""

    def read() -> str:
        try:
            return http_get(f"http://127.0.0.1:{admin_port}/stats?filter=^server.concurrency$")[1]
        except urllib.error.URLError:
            return ""

    return str(wait_for(read, "Envoy's admin API")).strip()


def test_concurrency_and_environment_reach_envoy(start_agent) -> None:
    agent = start_agent("--concurrency", "2", "--proxy-env", "PLAIT_PROXY_TEST=a=b,c", control_plane_port=free_port())
    envoy = agent.envoy_pid()
    assert concurrency_stat(agent.admin_port) == "server.concurrency: 2"
    assert b"PLAIT_PROXY_TEST=a=b,c" in Path(f"/proc/{envoy}/environ").read_bytes().split(b"\0")


def test_concurrency_zero_means_one_worker_per_cpu(start_agent) -> None:
    agent = start_agent("--concurrency", "0", control_plane_port=free_port())
    agent.envoy_pid()
    assert concurrency_stat(agent.admin_port) == f"server.concurrency: {os.cpu_count()}"


def test_a_negative_concurrency_is_refused(start_agent) -> None:
    agent = start_agent("--concurrency", "-1", control_plane_port=free_port())
    assert agent.wait_exit() == 2
    assert "must be 0 (one worker per CPU) or more" in agent.log()
