"""One agent's life: bootstrap, Envoy, status port, optional app, drain, stop.

`run_agent(config)` writes the bootstrap into the state directory, serves the
status port, starts Envoy under supervision and then either waits for
SIGTERM/SIGINT or, with an app command, waits until the proxy is ready, starts
the app, forwards signals to it and returns its exit status. Shutting down
always drains Envoy (``/drain_listeners?graceful``, inbound listeners only for
a sidecar, as Istio does), waits the drain period and stops Envoy by PID.

With an identity (`AgentConfig.identity`: a token file, the CA's address and
root) the agent first gets its workload certificate (`identity`), then serves
it over SDS (`sds`) on ``PROXY_DIR/sds.sock`` and only then starts Envoy, so
no listener of Envoy's ever waits for a secret; it renews the certificate at
half life for as long as it runs. A CA that refuses the identity, or a token
file that cannot be read, ends the agent with status 1 before Envoy starts.

Files Envoy itself opens live in the proxy directory, ``STATE_DIR/proxy/``
(mode 0700, owned by the proxy user): the SDS socket (0600) and, when Envoy
runs as another user (`AgentConfig.proxy_uid`) and the bootstrap carries the
pod's token, a copy of the bootstrap (0600) so the token is not on Envoy's
command line. If the proxy user cannot reach ``STATE_DIR`` (a parent such as
/root or pytest's temporary directory is 0700) or the socket's path would be
too long for a Unix socket, the proxy directory is a fresh one under $TMPDIR,
removed on exit. The bootstrap in the state directory is 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from plait.agent.admin import AdminUnavailable, EnvoyAdmin
from plait.agent.app import app_environment, start_app, wait_for_app
from plait.agent.app_probe import AppProber
from plait.agent.bootstrap import BootstrapSettings, build_bootstrap
from plait.agent.dnsproxy import DnsProxy, DnsSettings, start_dns
from plait.agent.identity import CertificateError, CertificateManager, read_token
from plait.agent.merged_metrics import AppScrape
from plait.agent.readiness import Readiness, check_readiness, wait_until_ready
from plait.agent.registration import (
    Registration,
    app_probe_ok,
    deregister,
    keep_registered,
)
from plait.agent.sds import SdsServer
from plait.agent.status import StatusServer
from plait.agent.supervisor import EnvoySupervisor, envoy_argv
from plait.host.envoy_binary import find_envoy
from plait.host.processes import describe_exit, exit_status
from plait.telemetry.metrics import own_values, proxy_environment

log = logging.getLogger("plait.agent")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
APP_STOP_GRACE = 10.0  # seconds an app has to exit after the signal, or the drain period if longer
BOOTSTRAP_FILE = "envoy-bootstrap.json"
PID_FILE = "envoy.pid"
SDS_SOCKET = "sds.sock"
PROXY_DIR = "proxy"
MAX_SOCKET_PATH = 107  # a Unix socket's path, in bytes (sun_path holds 108 with the NUL)


def default_state_dir(name: str, namespace: str) -> Path:
    return Path(tempfile.gettempdir()) / "plait-agent" / f"{name}.{namespace}"


@dataclass(frozen=True)
class IdentitySettings:
    """Where the workload certificate comes from; the identity itself is `Proxy.identity`."""

    token_file: Path  # the pod's token: proves the identity to the CA (and to the control plane)
    root_cert: Path  # PEM; verifies the CA's TLS certificate
    ca_address: str  # HOST:PORT of the CA (the control plane's 15012)
    ttl_seconds: int  # the certificate lifetime to ask for


@dataclass(frozen=True)
class AgentConfig:
    bootstrap: BootstrapSettings
    state_dir: Path
    status_port: int = 15021
    status_address: str = "0.0.0.0"
    concurrency: int = 1  # Envoy worker threads; 0: one per CPU (as Istio's ProxyConfig)
    proxy_env: Mapping[str, str] = field(default_factory=dict)  # ProxyConfig environmentVariables, for Envoy
    envoy_log_level: str = "warning"
    drain_seconds: float = 5.0
    app_command: tuple[str, ...] = ()
    envoy: str | None = None  # default: plait.host.envoy_binary.find_envoy()
    registration: Registration | None = None  # register the workload with the control plane
    proxy_uid: int | None = None  # run Envoy as this user (capture mode: 1337, which iptables skips)
    identity: IdentitySettings | None = None  # get a certificate and serve it over SDS
    probe_port: int | None = None  # also serve the status routes here, with /app-health (Istio's 15020)
    app_probers: Mapping[str, AppProber] = field(default_factory=dict)  # /app-health path → the app's probe
    dns: DnsSettings | None = None  # answer the pod's DNS (Istio's ISTIO_META_DNS_CAPTURE)
    app_metrics: AppScrape | None = (
        None  # merge the app's metrics into /stats/prometheus (ISTIO_PROMETHEUS_ANNOTATIONS)
    )


def make_proxy_dir(state_dir: Path, proxy_uid: int | None) -> tuple[Path, bool]:
    """The directory for files Envoy opens, mode 0700 and owned by the proxy user; and whether it is
    a temporary one (``STATE_DIR/proxy`` is out of the proxy user's reach, or too long a path)."""
    preferred = state_dir.resolve() / PROXY_DIR
    if len(os.fsencode(preferred / SDS_SOCKET)) <= MAX_SOCKET_PATH and (
        proxy_uid is None or reachable_by(preferred.parent, proxy_uid)
    ):
        preferred.mkdir(mode=0o700, exist_ok=True)
        directory, temporary = preferred, False
    else:
        directory, temporary = Path(tempfile.mkdtemp(prefix="plait-proxy-")), True
        log.info(
            "%s is out of reach for Envoy (uid %s) or too long a path for a socket; using %s",
            preferred,
            proxy_uid,
            directory,
        )
    os.chmod(directory, 0o700)
    if proxy_uid is not None:
        os.chown(directory, proxy_uid, proxy_uid)
    return directory, temporary


def reachable_by(directory: Path, uid: int) -> bool:
    """Can user `uid` (group `uid`, no other groups, as Envoy runs under setpriv) enter `directory`?"""
    if uid == 0:
        return True
    for each in (directory, *directory.parents):
        mode = each.stat()
        bit = stat.S_IXUSR if mode.st_uid == uid else stat.S_IXGRP if mode.st_gid == uid else stat.S_IXOTH
        if not mode.st_mode & bit:
            return False
    return True


async def _stop_dns(dns: tuple[DnsProxy, asyncio.Task] | None) -> None:
    if dns is None:
        return
    server, follower = dns
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    await server.stop()


def write_private(path: Path, text: str, *, owner: int | None = None) -> None:
    """Write `text` to `path`, mode 0600 (it may hold the pod's token), owned by `owner` if given."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as file:
        os.fchmod(fd, 0o600)
        if owner is not None:
            os.fchown(fd, owner, owner)
        file.write(text)


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
        self.certificates: CertificateManager | None = None
        self.proxy_dir: Path | None = None
        self._temporary_proxy_dir = False
        self._sds: SdsServer | None = None
        self._renewal: asyncio.Task | None = None

    async def readiness(self) -> Readiness:
        if self.draining:
            return Readiness(False, "draining")
        if self.certificates is not None and self.certificates.current is None:
            return Readiness(False, f"no workload certificate yet: {self.certificates.problem}")
        return await check_readiness(self.admin)

    def _telemetry_env(self) -> dict[str, str]:
        """Envoy's own metric labels (`plait.telemetry.metrics.ENVIRONMENT`); what the pod's environment
        already says (an injected ISTIO_META_WORKLOAD_NAME, CANONICAL_SERVICE …) wins."""
        return {k: v for k, v in proxy_environment(self.proxy).items() if k not in os.environ}

    def _envoy_env(self) -> dict[str, str]:
        """What Envoy's environment adds to the agent's."""
        return {**self._telemetry_env(), **self.config.proxy_env}

    async def run(self) -> int:
        try:
            settings = self._prepare()
        except CertificateError as exc:
            log.error("error: %s", exc)
            self._remove_proxy_dir()
            return 1
        own = own_values({**os.environ, **self._envoy_env()})
        bootstrap_path = self._write_bootstrap(replace(settings, own_values=own))
        envoy = EnvoySupervisor(
            self._envoy_argv(bootstrap_path, settings),
            pid_file=self.config.state_dir / PID_FILE,
            env=self._envoy_env(),
        )
        status = StatusServer(
            self.readiness,
            self.admin,
            app_probers=self.config.app_probers,
            app_address=self.proxy.app_address,
            app_metrics=self.config.app_metrics,
            own_values=own,
        )
        await status.start(self.config.status_address, self.config.status_port)
        if self.config.probe_port:
            await status.start(self.config.status_address, self.config.probe_port)
        log.info(
            "proxy %s; status on %s:%d, Envoy admin on 127.0.0.1:%d, control plane %s (%s)",
            self.proxy.id,
            self.config.status_address,
            self.config.status_port,
            self.config.bootstrap.admin_port,
            self.config.bootstrap.control_plane,
            self.config.bootstrap.xds,
        )
        registered = self._start_registration()
        dns = await start_dns(self.config.dns, self.proxy) if self.config.dns else None
        with self._signal_handlers():
            try:
                if self.certificates is not None and (code := await self._start_certificates(settings)) is not None:
                    return code
                await envoy.start()
                if self.config.app_command:
                    return await self._serve_app()
                await self.stop_requested.wait()
                await self._drain()
                return 0
            finally:
                await self._stop_registration(registered)
                await _stop_dns(dns)
                await envoy.stop()
                await self._stop_certificates()
                await status.close()
                self._remove_proxy_dir()

    def _prepare(self) -> BootstrapSettings:
        """The bootstrap's settings, with the SDS socket's path and, with an identity, the pod's token;
        makes the proxy directory and the certificate manager. CertificateError if a file is unreadable."""
        state_dir = self.config.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        settings = self.config.identity
        if settings is None or self.proxy.identity is None:
            return replace(self.config.bootstrap, sds_socket=str(state_dir.absolute() / PROXY_DIR / SDS_SOCKET))
        self.proxy_dir, self._temporary_proxy_dir = make_proxy_dir(state_dir, self.config.proxy_uid)
        try:
            root_pem = settings.root_cert.read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read the root certificate {settings.root_cert}: {exc.strerror}") from None
        self.certificates = CertificateManager(
            self.proxy.identity, settings.ca_address, root_pem, settings.token_file, settings.ttl_seconds
        )
        return replace(
            self.config.bootstrap, sds_socket=str(self.proxy_dir / SDS_SOCKET), token=read_token(settings.token_file)
        )

    def _write_bootstrap(self, settings: BootstrapSettings) -> Path:
        path = self.config.state_dir / BOOTSTRAP_FILE
        write_private(path, json.dumps(build_bootstrap(settings), indent=2) + "\n")
        return path

    def _envoy_argv(self, bootstrap_path: Path, settings: BootstrapSettings) -> list[str]:
        uid = self.config.proxy_uid
        argv = envoy_argv(
            self.config.envoy or find_envoy(),
            bootstrap_path,
            concurrency=self.config.concurrency or os.cpu_count() or 1,
            proxy_uid=uid,
            log_level=self.config.envoy_log_level,
            drain_seconds=self.config.drain_seconds,
        )
        if uid is None or settings.token is None or self.proxy_dir is None:
            return argv
        # For another user envoy_argv puts the bootstrap on the command line, which every user can read (and
        # the agent logs); this one holds the pod's token, so Envoy gets a copy only it can read instead.
        copy = self.proxy_dir / BOOTSTRAP_FILE
        write_private(copy, bootstrap_path.read_text(), owner=uid)
        at = argv.index("--config-yaml")
        argv[at : at + 2] = ["-c", str(copy)]
        return argv

    async def _start_certificates(self, settings: BootstrapSettings) -> int | None:
        """Get the first certificate, serve it over SDS and keep it renewed; or the exit status if the
        agent must stop instead (1: refused; 0: asked to stop while waiting for the CA)."""
        assert self.certificates is not None
        log.info(
            "identity %s: asking the CA at %s for a %ds certificate; SDS on %s",
            self.proxy.identity,
            self.certificates.ca_address,
            self.certificates.ttl_seconds,
            settings.sds_socket,
        )
        first = asyncio.create_task(self.certificates.first_certificate())
        stop = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({first, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not first.done():
            first.cancel()
            log.info("stopped before the CA answered; Envoy was never started")
            return 0
        try:
            first.result()
        except CertificateError as exc:
            log.error("error: %s", exc)
            return 1
        self._sds = SdsServer(Path(settings.sds_socket), owner_uid=self.config.proxy_uid)
        await self._sds.start()
        self.certificates.subscribe(self._sds.update)
        self._renewal = asyncio.create_task(self.certificates.keep_renewed(), name="certificate-renewal")
        return None

    async def _stop_certificates(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        if self._sds is not None:
            await self._sds.stop()

    def _remove_proxy_dir(self) -> None:
        if self._temporary_proxy_dir and self.proxy_dir is not None:
            shutil.rmtree(self.proxy_dir, ignore_errors=True)

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
