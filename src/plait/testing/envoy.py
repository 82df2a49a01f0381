"""A real Envoy process on a static bootstrap, for end-to-end tests and benchmarks.

Flows in: a bootstrap dict (usually `plait.xds.static.static_bootstrap(resources)`).
Flows out: a running Envoy (`EnvoyProcess`) whose admin API answers questions
about it: readiness, `/stats` counters, `/clusters` host health.

`run_envoy(bootstrap)` is a context manager: it writes the bootstrap to a
directory, starts Envoy with ``--disable-hot-restart`` (so many can run side by
side), puts the admin API on 127.0.0.1 at a free port (port 0; Envoy reports the
one it got through ``--admin-address-path``) unless told a port,
waits until ``/ready`` says LIVE and every listener that binds a port is
listed in ``/listeners``, and on exit stops that one process by PID: SIGTERM,
then SIGKILL after a timeout. Envoy's output goes to ``envoy.log`` in the
directory; a failed start raises `EnvoyStartError` with the log's tail. Every
wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from plait.host.envoy_binary import find_envoy

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.05
_ADMIN_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via HTTP_PROXY


class EnvoyStartError(RuntimeError):
    """Envoy exited or did not become ready; the message carries the end of its log."""


@dataclass(frozen=True)
class HostStatus:
    """One upstream host of a cluster as Envoy's admin ``/clusters`` reports it."""

    address: str
    port: int
    outlier_ejected: bool  # health_status.failed_outlier_check
    stats: dict[str, int]  # cx_active, rq_success, rq_error, rq_total, …


def bound_listener_names(bootstrap: dict) -> list[str]:
    """Names of the static listeners that bind a port (``bind_to_port: false`` ones never do)."""
    listeners = bootstrap.get("static_resources", {}).get("listeners", [])
    return [listener["name"] for listener in listeners if listener.get("bind_to_port", True)]


class EnvoyProcess:
    """A started Envoy: its PID, admin address and log; use `run_envoy` to get one."""

    def __init__(self, process: subprocess.Popen, admin_address: str, log_path: Path):
        self.process = process
        self.admin_address = admin_address  # "127.0.0.1:PORT"
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def admin(self, path: str, timeout: float = 5.0) -> str:
        """GET an admin endpoint (``/ready``, ``/stats?filter=…``) and return its body."""
        with _ADMIN_OPENER.open(f"http://{self.admin_address}{path}", timeout=timeout) as response:
            return response.read().decode()

    def stats(self, pattern: str = "") -> dict[str, int]:
        """Counters and gauges whose name matches the regex `pattern` (histograms are left out)."""
        query = "/stats" + (f"?filter={urllib.parse.quote(pattern)}" if pattern else "")
        out: dict[str, int] = {}
        for line in self.admin(query).splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stat(self, name: str) -> int:
        """One counter or gauge by its full name, e.g. ``cluster.<name>.upstream_rq_pending_overflow``."""
        found = self.stats(f"^{re.escape(name)}$")
        if name not in found:
            raise KeyError(f"Envoy has no stat {name!r}")
        return found[name]

    def cluster_hosts(self, cluster: str) -> list[HostStatus]:
        """The hosts of one cluster, with outlier-ejection state and per-host counters."""
        data = json.loads(self.admin("/clusters?format=json"))
        for status in data.get("cluster_statuses", []):
            if status["name"] == cluster:
                return [_host_status(h) for h in status.get("host_statuses", [])]
        raise KeyError(f"Envoy has no cluster {cluster!r}")

    def listener_names(self) -> list[str]:
        data = json.loads(self.admin("/listeners?format=json"))
        return [status["name"] for status in data.get("listener_statuses", [])]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def is_ready(self, listeners: list[str]) -> bool:
        try:
            if self.admin("/ready", timeout=1.0).strip() != "LIVE":
                return False
            return set(listeners) <= set(self.listener_names())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM this process, SIGKILL it if it is still there after `timeout` seconds."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


def _host_status(raw: dict) -> HostStatus:
    socket = raw["address"]["socket_address"]
    stats = {s["name"]: int(s.get("value", 0)) for s in raw.get("stats", [])}
    return HostStatus(
        address=socket["address"],
        port=int(socket["port_value"]),
        outlier_ejected=bool(raw.get("health_status", {}).get("failed_outlier_check")),
        stats=stats,
    )


def _wait_for_admin_address(envoy: EnvoyProcess, path: Path, deadline: float) -> str:
    while time.monotonic() < deadline and envoy.process.poll() is None:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return text
        time.sleep(POLL_INTERVAL)
    raise EnvoyStartError(
        f"Envoy did not report its admin address (exit status {envoy.process.poll()}):\n{envoy.log_tail()}"
    )


def _wait_until_ready(envoy: EnvoyProcess, listeners: list[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if envoy.process.poll() is not None:
            raise EnvoyStartError(f"Envoy exited with status {envoy.process.returncode}:\n{envoy.log_tail()}")
        if envoy.is_ready(listeners):
            return
        time.sleep(POLL_INTERVAL)
    raise EnvoyStartError(f"Envoy was not ready with listeners {listeners} in time:\n{envoy.log_tail()}")


def _admin_on_loopback(bootstrap: dict, port: int) -> dict:
    return {**bootstrap, "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}


@contextlib.contextmanager
def run_envoy(
    bootstrap: dict,
    *,
    workdir: str | Path | None = None,
    listeners: list[str] | None = None,
    admin_port: int = 0,
    concurrency: int = 1,
    log_level: str = "info",
    envoy: str | None = None,
    start_timeout: float = START_TIMEOUT,
) -> Iterator[EnvoyProcess]:
    """Start Envoy on `bootstrap`, wait until it serves `listeners` (default: every bound one), stop it after.

    `workdir` keeps the bootstrap and ``envoy.log`` (a temporary directory, removed after, if not given).
    """
    with contextlib.ExitStack() as stack:
        directory = Path(workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="envoy-")))
        directory.mkdir(parents=True, exist_ok=True)
        config, admin_path = directory / "bootstrap.json", directory / "admin-address"
        config.write_text(json.dumps(_admin_on_loopback(bootstrap, admin_port), indent=1))
        admin_path.unlink(missing_ok=True)
        command = [
            envoy or find_envoy(),
            "-c",
            str(config),
            "--disable-hot-restart",
            "--admin-address-path",
            str(admin_path),
            "--concurrency",
            str(concurrency),
            "--log-level",
            log_level,
        ]
        log_path = directory / "envoy.log"
        log = stack.enter_context(log_path.open("w"))
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        envoy_process = EnvoyProcess(process, "", log_path)
        stack.callback(envoy_process.stop)
        deadline = time.monotonic() + start_timeout
        envoy_process.admin_address = _wait_for_admin_address(envoy_process, admin_path, deadline)
        expected = bound_listener_names(bootstrap) if listeners is None else listeners
        _wait_until_ready(envoy_process, expected, deadline)
        yield envoy_process
