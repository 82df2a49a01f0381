"""Run the control plane: load config and the CA, start the ADS server, the CA server and the
HTTP API, stop gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plait.controlplane import testhooks
from plait.controlplane.api import Api, admin_token_path, load_or_create_admin_token
from plait.controlplane.kubeidentity import ClusterIdentity, ClusterSettings, connect
from plait.controlplane.mesh import MeshState
from plait.model import MeshSnapshot
from plait.sources.files import FileStore
from plait.sources.workloads import WorkloadRegistry

if TYPE_CHECKING:
    from plait.ca.authority import CertificateAuthority
    from plait.ca.tokens import TokenIssuer

log = logging.getLogger("plait.controlplane")


@dataclass(frozen=True)
class Settings:
    config_dir: Path = Path("mesh")
    host: str = "127.0.0.1"
    xds_port: int = 15010
    http_port: int = 15014
    debounce: float = 0.1
    poll_interval: float = 0.5
    state_dir: Path = Path(".plait/control-plane")  # the CA's files live in state_dir/ca (owner-only)
    ca_port: int = 15012
    cacerts_dir: Path | None = None  # Istio's plug-in CA files; None: a self-signed root in state_dir/ca
    cluster: ClusterSettings = field(default_factory=ClusterSettings)  # identity duties with `kubernetes`
    workload_cert_ttl: int = 24 * 3600  # seconds, when the agent asks for no particular lifetime
    xds_auth: Literal["permissive", "strict"] = "permissive"
    # Read the configuration and the registry from a Kubernetes cluster instead of config_dir:
    # kubeconfig, else $KUBECONFIG, else the pod's service account, else ~/.kube/config.
    kubernetes: bool = False
    kubeconfig: str | None = None


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


def load_ca(settings: Settings) -> tuple[CertificateAuthority, TokenIssuer]:
    """The CA and the pod-token verifier; CaError if the CA files are unusable."""
    from plait.ca.authority import ca_dir_of, fingerprint, load_or_create, root_cert_path
    from plait.ca.tokens import TokenIssuer, token_key_path

    authority = load_or_create(ca_dir_of(settings.state_dir), cacerts_dir=settings.cacerts_dir)
    log.info("CA: root %s (SHA-256 %s); signing key %s; trust anchor for agents: %s",
             authority.root.subject.rfc4514_string(), fingerprint(authority.root), authority.key_path,
             root_cert_path(settings.state_dir))
    return authority, TokenIssuer.load_or_create(token_key_path(settings.state_dir))


async def open_cluster(settings: Settings) -> ClusterIdentity:
    """The control plane's identity on the cluster (its CA from the Secrets there)."""
    api = await connect(settings.kubeconfig)
    try:
        return await ClusterIdentity.open(api, settings.state_dir, settings.cluster)
    except BaseException:
        await api.close()
        raise


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM); then stop accepting, close streams, exit."""
    from plait.ca.service import ads_authenticator, serve_ca
    from plait.xds.hub import XdsHub
    from plait.xds.server import ads_handler, serve_ads

    stop = stop or asyncio.Event()
    # On Kubernetes: CA from Secrets, TokenReview, webhook, leader's duties (plait.controlplane.kubeidentity)
    cluster = await open_cluster(settings) if settings.kubernetes else None
    authority, tokens = (cluster.authority, cluster.authenticator) if cluster else load_ca(settings)
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
    # xDS over TLS with a pod token beside the CA (istiod's 15012); plaintext xDS (15010) unless strict
    ads = None if settings.xds_auth == "strict" else await serve_ads(hub, settings.host, settings.xds_port)
    tls_ads = ads_handler(hub, ads_authenticator(tokens, registry=metrics.registry))
    ca = await serve_ca(authority, tokens, settings.host, settings.ca_port, default_ttl=settings.workload_cert_ttl,
                        registry=metrics.registry, also=(tls_ads,))
    admin_token = load_or_create_admin_token(admin_token_path(settings.state_dir))
    api = Api(state, hub, metrics.registry, admin_token=admin_token,
              token_verifier=None if cluster else tokens.verify)  # on Kubernetes pods are not registered by API
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.http_port).start()
    if cluster:
        await cluster.start(settings.host, settings.state_dir, metrics.registry)
    api.serving = True
    plaintext = "off (--xds-auth strict)" if ads is None else f"{settings.host}:{settings.xds_port}"
    log.info("control plane ready: xDS and CA over TLS on %s:%d (pod tokens), plaintext xDS %s, HTTP API on "
             "%s:%d, config in %s (%d objects)", settings.host, settings.ca_port, plaintext,
             settings.host, settings.http_port, settings.config_dir, len(store.resources))
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
        if cluster:
            await cluster.close()
            await cluster.api.close()
        await runner.cleanup()
        if ads is not None:
            await ads.stop(grace=1.0)
        await ca.stop(grace=1.0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
