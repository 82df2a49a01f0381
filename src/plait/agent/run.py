"""One agent's life: bootstrap, Envoy, status port, optional app, drain, stop.

`run_agent(config)` writes the bootstrap into the state directory, serves the
status port, starts Envoy under supervision and then either waits for
SIGTERM/SIGINT or, with an app command, waits until the proxy is ready, starts
the app, forwards signals to it and returns its exit status. Shutting down
always drains Envoy (``/drain_listeners?graceful``, inbound listeners only for
a sidecar, as Istio does), waits the drain period and stops Envoy by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from plait.agent.admin import AdminUnavailable, EnvoyAdmin
from plait.agent.app import app_environment, start_app, wait_for_app
from plait.agent.bootstrap import BootstrapSettings, build_bootstrap
from plait.agent.processes import describe_exit, exit_status
from plait.agent.registration import Registration, app_probe_ok, deregister, keep_registered
from plait.agent.readiness import Readiness, check_readiness, wait_until_ready
from plait.agent.status import StatusServer
from plait.agent.supervisor import EnvoySupervisor, envoy_argv
from plait.xds.static import find_envoy

log = logging.getLogger("plait.agent")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
APP_STOP_GRACE = 10.0  # seconds an app has to exit after the signal, or the drain period if longer
BOOTSTRAP_FILE = "envoy-bootstrap.json"
PID_FILE = "envoy.pid"
SDS_SOCKET = "sds.sock"


def default_state_dir(name: str, namespace: str) -> Path:
    return Path(tempfile.gettempdir()) / "plait-agent" / f"{name}.{namespace}"


@dataclass(frozen=True)
class AgentConfig:
    bootstrap: BootstrapSettings
    state_dir: Path
    status_port: int = 15021
    status_address: str = "0.0.0.0"
    concurrency: int = 1
    envoy_log_level: str = "warning"
    drain_seconds: float = 5.0
    app_command: tuple[str, ...] = ()
    envoy: str | None = None  # default: plait.xds.static.find_envoy()
    registration: Registration | None = None  # register the workload with the control plane
    proxy_uid: int | None = None  # run Envoy as this user (capture mode: 1337, which iptables skips)


async def run_agent(config: AgentConfig) -> int:
    """Run until SIGTERM/SIGINT (exit status 0) or until the app exits (its status)."""
    return await Agent(config).run()


class Agent:
    def __init__(self, config: AgentConfig):
        self.config = config
        self.proxy = config.bootstrap.proxy
        self.admin = EnvoyAdmin(config.bootstrap.admin_port)
        self.draining = False
        self.stop_requested = asyncio.Event()
        self.app: asyncio.subprocess.Process | None = None

    async def readiness(self) -> Readiness:
        if self.draining:
            return Readiness(False, "draining")
        return await check_readiness(self.admin)

    async def run(self) -> int:
        bootstrap_path = self._write_bootstrap()
        argv = envoy_argv(self.config.envoy or find_envoy(), bootstrap_path, concurrency=self.config.concurrency,
                          proxy_uid=self.config.proxy_uid,
                          log_level=self.config.envoy_log_level, drain_seconds=self.config.drain_seconds)
        envoy = EnvoySupervisor(argv, pid_file=self.config.state_dir / PID_FILE)
        status = StatusServer(self.readiness, self.admin)
        await status.start(self.config.status_address, self.config.status_port)
        log.info("proxy %s; status on %s:%d, Envoy admin on 127.0.0.1:%d, control plane %s (%s)",
                 self.proxy.id, self.config.status_address, self.config.status_port,
                 self.config.bootstrap.admin_port, self.config.bootstrap.control_plane, self.config.bootstrap.xds)
        registered = self._start_registration()
        with self._signal_handlers():
            try:
                await envoy.start()
                if self.config.app_command:
                    return await self._serve_app()
                await self.stop_requested.wait()
                await self._drain()
                return 0
            finally:
                await self._stop_registration(registered)
                await envoy.stop()
                await status.close()

    def _start_registration(self) -> asyncio.Task | None:
        reg = self.config.registration
        if reg is None:
            return None

        async def ready() -> bool:
            app_running = not self.config.app_command or (self.app is not None and self.app.returncode is None)
            if not (app_running and (await self.readiness()).ready):
                return False
            return reg.app_probe is None or await app_probe_ok(reg.app_probe)

        self._registration_stop = asyncio.Event()
        return asyncio.create_task(keep_registered(reg, ready, self._registration_stop))

    async def _stop_registration(self, task: asyncio.Task | None) -> None:
        if task is None or self.config.registration is None:
            return
        self._registration_stop.set()
        await task
        await deregister(self.config.registration)

    def _write_bootstrap(self) -> Path:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.config.state_dir / BOOTSTRAP_FILE
        path.write_text(json.dumps(build_bootstrap(self.config.bootstrap), indent=2) + "\n")
        return path

    async def _serve_app(self) -> int:
        stop = asyncio.create_task(self.stop_requested.wait())
        ready = asyncio.create_task(wait_until_ready(self.readiness))
        await asyncio.wait({stop, ready}, return_when=asyncio.FIRST_COMPLETED)
        if stop.done():
            ready.cancel()
            log.info("stopped before the proxy was ready; the application was never started")
            await self._drain()
            return 0
        log.info("proxy ready; starting the application: %s", " ".join(self.config.app_command))
        self.app = await start_app(self.config.app_command, app_environment(self.proxy, os.environ))
        app_exit = asyncio.create_task(self.app.wait())
        await asyncio.wait({stop, app_exit}, return_when=asyncio.FIRST_COMPLETED)
        if app_exit.done():
            stop.cancel()
            log.info("the application %s", describe_exit(self.app.returncode))
            await self._drain()
        else:  # the signal was forwarded to the app: drain while it shuts down
            await asyncio.gather(self._drain(), wait_for_app(self.app, max(APP_STOP_GRACE, self.config.drain_seconds)))
            log.info("the application %s", describe_exit(self.app.returncode))
        return exit_status(self.app.returncode)

    async def _drain(self) -> None:
        self.draining = True
        if self.config.registration is not None:
            self._registration_stop.set()  # leave every EDS first, then drain
        path = "/drain_listeners?inboundonly&graceful" if self.proxy.kind == "sidecar" else "/drain_listeners?graceful"
        try:
            await self.admin.post(path)
        except AdminUnavailable as exc:
            log.warning("could not drain Envoy: %s", exc)
            return
        log.info("draining Envoy for %gs (%s)", self.config.drain_seconds, path)
        await asyncio.sleep(self.config.drain_seconds)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.app and self.app.returncode is None:
            self.app.send_signal(sig)
        if sig in STOP_SIGNALS and not self.stop_requested.is_set():
            log.info("%s received; shutting down", sig.name)
            self.stop_requested.set()

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        signals = FORWARDED_SIGNALS if self.config.app_command else STOP_SIGNALS
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
