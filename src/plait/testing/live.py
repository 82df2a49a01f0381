"""Real plait processes for tests and benchmarks: a control plane and agents, on loopback.

`ControlPlaneProcess` runs ``plait control-plane`` on free ports with a config
directory and a state directory (its CA: `root_cert_path`, `ca_address`, and
`issue_token` to hand a pod its token); `AgentProcess` runs ``plait agent`` for
one proxy. Both are context managers that wait until the process is ready, die
with the test process (PR_SET_PDEATHSIG), and are stopped by PID.
`ControlPlaneProcess.api` is the CLI's own HTTP client, so tests use the same
API as users.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from plait.ca.authority import root_cert_path, write_file
from plait.ca.tokens import TokenIssuer, token_key_path
from plait.client import ClientError, Http
from plait.host.processes import die_with_parent

STARTUP_TIMEOUT = 30.0


# Test ports come from below the kernel's ephemeral range (32768–60999 by default) and Kubernetes'
# NodePorts (30000–32767), above the dashboard's 20001: a port taken from the ephemeral range could
# meanwhile become the local port of some process' outgoing connection, and a later bind on 0.0.0.0
# then fails (seen in CI). They are handed out in turn across processes (test runs side by side, the
# benchmarks' helpers), from a counter kept in a file under a lock.
_TEST_PORTS = range(21000, 30000)
_PORT_COUNTER = Path(tempfile.gettempdir()) / "plait-test-ports"


def free_port(address: str = "0.0.0.0") -> int:
    """A port nobody uses on `address` (by default any address) now, that no outgoing connection can
    take, and that no test process was handed recently (several processes bind theirs only later)."""
    with open(_PORT_COUNTER, "a+") as counter:
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.seek(0)
        text = counter.read().strip()
        cursor = int(text) if text.isdigit() else random.randrange(len(_TEST_PORTS))
        for _ in range(len(_TEST_PORTS)):
            port = _TEST_PORTS[cursor % len(_TEST_PORTS)]
            cursor = (cursor + 1) % len(_TEST_PORTS)
            if _bindable(address, port):
                counter.seek(0)
                counter.truncate()
                counter.write(str(cursor))
                return port
    raise RuntimeError(f"no free port left in {_TEST_PORTS.start}–{_TEST_PORTS.stop - 1}")


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate` until true; connection errors count as 'not yet', other errors propagate."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ClientError, OSError, KeyError):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class PlaitProcess:
    """``python -m plait ARGS`` with its output in a log file; stopped by PID."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.args, self.log_path, self.extra_env = args, log_path, env or {}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
        env.update(self.extra_env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "plait", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process and self.process.poll() is not None:
            raise RuntimeError(f"{self.args[0]} exited ({self.process.returncode}):\n{self.log_tail()}")


class ControlPlaneProcess(PlaitProcess):
    def __init__(
        self,
        config_dir: Path,
        workdir: Path,
        *,
        debounce: str = "100ms",
        env: dict[str, str] | None = None,
        state_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ):
        self.config_dir, self.xds_port, self.http_port, self.ca_port = config_dir, free_port(), free_port(), free_port()
        self.workdir, self.state_dir = workdir, state_dir or workdir / "cp-state"
        super().__init__(
            [
                "control-plane",
                "--config-dir",
                str(config_dir),
                "--xds-port",
                str(self.xds_port),
                "--http-port",
                str(self.http_port),
                "--debounce",
                debounce,
                "--state-dir",
                str(self.state_dir),
                "--ca-port",
                str(self.ca_port),
                # a free port for the trace collector, not Zipkin's 9411, which a local mesh may hold
                *(() if "--zipkin-port" in extra_args else ("--zipkin-port", str(free_port()))),
                *extra_args,
            ],
            workdir / "control-plane.log",
            env,
        )
        self.api = Http(f"http://127.0.0.1:{self.http_port}")

    @property
    def ca_address(self) -> str:
        """What agents are given as --ca-address."""
        return f"127.0.0.1:{self.ca_port}"

    @property
    def root_cert_path(self) -> Path:
        """The mesh's root certificate (exists once the control plane has started)."""
        return root_cert_path(self.state_dir)

    def issue_token(self, namespace: str, service_account: str, pod: str) -> Path:
        """A pod token for namespace/service account/pod, written to a file under the work
        directory, as the local runtime hands one to a pod; returns the file's path."""
        token = TokenIssuer.load_or_create(token_key_path(self.state_dir)).issue(namespace, service_account, pod)
        path = self.workdir / "tokens" / f"{namespace}.{service_account}.{pod}.jwt"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, token.encode())
        return path

    @property
    def address(self) -> str:
        """What agents are given as --control-plane."""
        return f"127.0.0.1:{self.xds_port}"

    def start(self) -> None:
        super().start()

        def ready() -> bool:
            self.check_alive()
            return self.api.get("/ready") is not None

        wait_until(ready, STARTUP_TIMEOUT, f"the control plane to be ready ({self.log_path})")

    def apply(self, text: str) -> dict:
        return self.api.request("POST", "/api/v1/config", text.encode())

    def delete(self, text: str) -> dict:
        return self.api.request("POST", "/api/v1/config/delete", text.encode())

    def register(
        self,
        name: str,
        address: str,
        labels: dict,
        ports: dict | None = None,
        *,
        namespace: str = "default",
        ready: bool = True,
        service_account: str = "default",
    ) -> None:
        body = {
            "address": address,
            "labels": labels,
            "ports": ports or {},
            "ready": ready,
            "serviceAccount": service_account,
        }
        self.api.request("PUT", f"/api/v1/workloads/{namespace}/{name}", json.dumps(body).encode(), "application/json")

    def deregister(self, name: str, namespace: str = "default") -> None:
        self.api.request("DELETE", f"/api/v1/workloads/{namespace}/{name}")

    def statuses(self) -> dict[str, dict]:
        return {s["proxy_id"]: s for s in self.api.get("/debug/syncz")}

    def synced(self, proxy_id: str) -> bool:
        """Every type acknowledged; endpoints may be NOT SENT: a scoped sidecar that holds no EDS cluster
        yet asks for none."""
        status = self.statuses().get(proxy_id)
        return bool(status) and all(
            t["state"] == "SYNCED" or (short == "eds" and t["state"] == "NOT SENT")
            for short, t in status["types"].items()
        )

    def __enter__(self) -> "ControlPlaneProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class AgentProcess(PlaitProcess):
    """``plait agent`` for one proxy; `ip` is the proxy's address (127.x.y.z). `extra` and
    `extra_args` are appended to the agent's arguments (e.g. ``--token-file``). With `tls` its
    Envoy gets xDS from the control plane's TLS port (it then needs a token and the root)."""

    def __init__(
        self,
        control_plane: ControlPlaneProcess,
        workdir: Path,
        *,
        mode: str,
        name: str,
        ip: str,
        labels: dict[str, str] | None = None,
        namespace: str = "default",
        app_address: str | None = None,
        xds: str = "delta",
        extra: list[str] | None = None,
        extra_args: Sequence[str] = (),
        tls: bool = False,
    ):
        self.admin_port, self.status_port = free_port(), free_port()
        self.name, self.namespace, self.ip = name, namespace, ip
        state = workdir / f"agent-{name}"
        args = [
            "agent",
            "--mode",
            mode,
            "--name",
            name,
            "--namespace",
            namespace,
            "--ip",
            ip,
            "--control-plane",
            control_plane.ca_address if tls else control_plane.address,
            "--admin-port",
            str(self.admin_port),
            "--status-port",
            str(self.status_port),
            "--state-dir",
            str(state),
            "--xds",
            xds,
            "--drain-duration",
            "0.5",
        ]
        if labels:
            args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
        if app_address:
            args += ["--app-address", app_address]
        super().__init__(args + (extra or []) + list(extra_args), workdir / f"agent-{name}.log")
        self.status = Http(f"http://127.0.0.1:{self.status_port}", what=f"agent {name}")
        self.admin = Http(f"http://127.0.0.1:{self.admin_port}", what=f"Envoy of {name}")

    @property
    def proxy_id(self) -> str:
        kind = "router" if "gateway" in self.args[self.args.index("--mode") + 1] else "sidecar"
        return f"{kind}~{self.ip}~{self.name}.{self.namespace}~{self.namespace}.svc.cluster.local"

    def ready(self) -> bool:
        try:
            self.status.get("/healthz/ready")
            return True
        except ClientError:
            return False

    def start(self) -> None:
        super().start()

        def ready() -> bool:
            self.check_alive()
            return self.ready()

        wait_until(ready, STARTUP_TIMEOUT, f"agent {self.name} to be ready ({self.log_path})")

    def __enter__(self) -> "AgentProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_plait(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the ``plait`` command as a user would (no HTTP_PROXY from the test's environment)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    return subprocess.run(
        [sys.executable, "-m", "plait", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
