"""Run the control plane: load config, start the ADS server and the HTTP API, stop gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plait.controlplane import testhooks
from plait.controlplane.api import Api
from plait.controlplane.mesh import MeshState
from plait.model import MeshSnapshot
from plait.sources.files import FileStore
from plait.sources.workloads import WorkloadRegistry

log = logging.getLogger("plait.controlplane")


@dataclass(frozen=True)
class Settings:
    config_dir: Path = Path("mesh")
    host: str = "127.0.0.1"
    xds_port: int = 15010
    http_port: int = 15014
    debounce: float = 0.1
    poll_interval: float = 0.5


class OwnMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rebuilds = Counter("plait_snapshot_rebuilds_total", "Mesh snapshots built", registry=self.registry)
        self.objects = Gauge("plait_config_objects", "Configuration objects in force", ["kind"],
                             registry=self.registry)
        self.build_seconds = Histogram("plait_snapshot_build_seconds", "Time to build a snapshot and hand it "
                                       "to the hub", registry=self.registry)

    def observe(self, snapshot: MeshSnapshot) -> None:
        self.rebuilds.inc()
        counts: dict[str, int] = {}
        for key in snapshot.resources:
            counts[key[0]] = counts.get(key[0], 0) + 1
        for kind, n in counts.items():
            self.objects.labels(kind=kind).set(n)


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM); then stop accepting, close streams, exit."""
    from plait.xds.hub import XdsHub
    from plait.xds.server import serve_ads

    stop = stop or asyncio.Event()
    store = FileStore(settings.config_dir)
    loaded = store.load()
    for p in loaded.problems:
        log.log(logging.ERROR if p.severity == "error" else logging.WARNING, "%s", p)
    hub = XdsHub(MeshSnapshot([]), mutate=testhooks.from_environment())
    metrics = OwnMetrics()

    def publish(snapshot: MeshSnapshot, changed: set) -> None:
        with metrics.build_seconds.time():
            hub.update(snapshot, changed)
        metrics.observe(snapshot)

    state = MeshState(store, WorkloadRegistry(), debounce=settings.debounce, on_snapshot=publish)
    state.rebuild()
    ads = await serve_ads(hub, settings.host, settings.xds_port)
    api = Api(state, hub, metrics.registry)
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.http_port).start()
    api.serving = True
    log.info("control plane ready: xDS on %s:%d, HTTP API on %s:%d, config in %s (%d objects)", settings.host,
             settings.xds_port, settings.host, settings.http_port, settings.config_dir, len(store.resources))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(state.run()), asyncio.create_task(state.watch_directory(settings.poll_interval))]
    try:
        await stop.wait()
    finally:
        log.info("control plane stopping")
        for task in tasks:
            task.cancel()
        await runner.cleanup()
        await ads.stop(grace=1.0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
