"""Harness for the agent's process tests: a started ``plait agent``, PIDs, free ports, bounded waits.

`RunningAgent` is one agent process (started by the `start_agent` fixture in
conftest.py): the test talks to it by its status port and by PIDs (the
agent's, and Envoy's from the PID file the agent writes). Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PLAIT = Path(sys.executable).parent / "plait"
WAIT = 15.0
POLL = 0.05
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(POLL)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class RunningAgent:
    process: subprocess.Popen
    status_port: int
    admin_port: int
    state_dir: Path
    log_path: Path
    seen_pids: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.process.pid

    def envoy_pid(self, other_than: int | None = None) -> int:
        """The PID in the agent's PID file, once there is one (different from `other_than`)."""

        def read() -> int | None:
            try:
                pid = int((self.state_dir / "envoy.pid").read_text())
            except (FileNotFoundError, ValueError):
                return None
            return pid if pid != other_than else None

        pid = wait_for(read, "the agent to report an Envoy PID")
        self.seen_pids.add(pid)
        return pid

    def readiness(self) -> tuple[int, str]:
        try:
            return http_get(f"http://127.0.0.1:{self.status_port}/healthz/ready")
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            return 0, str(exc)

    def wait_ready(self, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while (answer := self.readiness())[0] != 200:
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after {timeout}s: {answer}\n{self.log()}")
            time.sleep(POLL)

    def wait_exit(self, timeout: float = WAIT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent did not exit within {timeout}s:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_everything(self) -> None:
        for pid in [self.pid, *self.seen_pids]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(5)
