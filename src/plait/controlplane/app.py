"""Run the control plane: load config and the CA, start the ADS server, the CA server and the
HTTP API, stop gracefully."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plait.controlplane import testhooks
from plait.controlplane.api import Api, admin_token_path, load_or_create_admin_token
from plait.controlplane.collector import Collector, serve_collector
from plait.controlplane.mesh import ConfigSource, MeshState
from plait.controlplane.tap import TapService
from plait.inject.settings import InjectSettings
from plait.model import MeshSnapshot
from plait.sources.files import FileStore
from plait.sources.workloads import WorkloadRegistry

if TYPE_CHECKING:
    from plait.api.resources import Resource
    from plait.ca.authority import CertificateAuthority
    from plait.ca.tokens import TokenIssuer
    from plait.controlplane.kubeidentity import ClusterIdentity, ClusterSettings
    from plait.controlplane.meshfile import MeshConfigUpdate
    from plait.sources.kubernetes import KubernetesSource

log = logging.getLogger("plait.controlplane")


@dataclass(frozen=True)
class Settings:
    config_dir: Path = Path("mesh")
    host: str = "127.0.0.1"
    xds_port: int = 15010
    http_port: int = 15014
    zipkin_port: int | None = None  # the trace collector (`plait.controlplane.collector`); the CLI's default is 9411
    debounce: float = 0.1
    poll_interval: float = 0.5
    state_dir: Path = Path(".plait/control-plane")  # the CA's files live in state_dir/ca (owner-only)
    ca_port: int = 15012
    cacerts_dir: Path | None = None  # Istio's plug-in CA files; None: a self-signed root in state_dir/ca
    cluster: ClusterSettings | None = None  # identity duties with `kubernetes` (None: their defaults)
    mesh_config: Path | None = None  # on Kubernetes: istiod's --meshConfig file, followed (`meshfile`)
    workload_cert_ttl: int = 24 * 3600  # seconds, when the agent asks for no particular lifetime
    xds_auth: Literal["permissive", "strict"] = "permissive"
    scoping: bool = True  # automatic scoping of sidecars on delta xDS (`plait.xds.scope`)
    # Read the configuration and the registry from a Kubernetes cluster instead of config_dir:
    # kubeconfig, else $KUBECONFIG, else the pod's service account, else ~/.kube/config.
    kubernetes: bool = False
    kubeconfig: str | None = None
    inject: InjectSettings | None = None  # the sidecar injector's settings on Kubernetes (None: cluster's)
    webhook_port: int | None = None  # the webhooks' TLS port on Kubernetes (None: cluster's, 15017)
    # On Kubernetes: a Gateway API Gateway → the objects of its `<gateway>-istio` proxy (the leader deploys them)
    gateway_manifests: Callable[[Resource], list[dict]] | None = None


class OwnMetrics:
    def __init__(self, store: ConfigSource, cluster: KubernetesSource | None = None) -> None:
        self.registry = CollectorRegistry()
        self.rebuilds = Counter("plait_snapshot_rebuilds_total", "Mesh snapshots built", registry=self.registry)
        self.objects = Gauge("plait_config_objects", "Configuration objects in force", ["kind"], registry=self.registry)
        self.invalid = Gauge(
            "plait_config_problems",
            "Problems that keep configuration out of force (an "
            "invalid object in the cluster, or a configuration directory that does not "
            "validate); listed by GET /api/v1/config",
            registry=self.registry,
        )
        self.invalid.set_function(lambda: sum(p.severity == "error" for p in store.problems))
        if cluster is not None:
            reachable = Gauge(
                "plait_kubernetes_api_reachable",
                "1 while the Kubernetes API answers; 0 while the control plane serves the last state it read",
                registry=self.registry,
            )
            reachable.set_function(lambda: float(cluster.reachable))
            relists = Gauge(
                "plait_kubernetes_relists",
                "Lists made again after the first (410 Gone, a kind served again)",
                registry=self.registry,
            )
            relists.set_function(lambda: float(cluster.relists))
        self.build_seconds = Histogram(
            "plait_snapshot_build_seconds", "Time to build a snapshot and hand it to the hub", registry=self.registry
        )

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
    log.info(
        "CA: root %s (SHA-256 %s); signing key %s; trust anchor for agents: %s",
        authority.root.subject.rfc4514_string(),
        fingerprint(authority.root),
        authority.key_path,
        root_cert_path(settings.state_dir),
    )
    return authority, TokenIssuer.load_or_create(token_key_path(settings.state_dir))


async def open_config(settings: Settings) -> tuple[ConfigSource, KubernetesSource | None]:
    """The configuration directory, loaded; or (settings.kubernetes) a not yet started cluster source,
    returned twice (as the mesh's source, and as the cluster to start and watch over).
    KubeConfigError when the kubeconfig is unusable."""
    if settings.kubernetes:
        # imported here: the Kubernetes client takes a quarter of a second to import, which every
        # other plait command would pay
        from plait.sources.kubernetes import KubernetesSource, connect

        cluster = KubernetesSource(await connect(settings.kubeconfig))
        return cluster, cluster
    store = FileStore(settings.config_dir)
    for p in store.load().problems:
        log.log(logging.ERROR if p.severity == "error" else logging.WARNING, "%s", p)
    return store, None


async def open_identity(
    cluster: KubernetesSource, settings: Settings, *, retry_at_most: float = 10.0
) -> ClusterIdentity:
    """On Kubernetes: the CA from Secrets, TokenReview, the webhook and the leader's duties
    (`plait.controlplane.kubeidentity`), on the cluster source's API client. While the API server
    cannot be reached (a control plane started before it, or during its restart) this waits and
    tries again, saying so, as istiod does, instead of exiting."""
    from plait.controlplane.kubeidentity import ClusterIdentity, ClusterSettings  # the Kubernetes client: see above

    cluster_settings = settings.cluster or ClusterSettings()
    if settings.inject is not None:
        cluster_settings = dataclasses.replace(cluster_settings, inject=settings.inject)
    if settings.webhook_port is not None:
        cluster_settings = dataclasses.replace(cluster_settings, webhook_port=settings.webhook_port)
    delay = 0.5
    while True:
        try:
            return await ClusterIdentity.open(cluster.api, settings.state_dir, cluster_settings)
        except Exception as error:  # noqa: BLE001 - only the API server being away is waited out
            if not api_server_away(error):
                raise
            log.warning(
                "cannot reach the Kubernetes API server at %s (%s); trying again in %.0f s",
                cluster.server,
                error,
                delay,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_at_most)


def api_server_away(error: BaseException) -> bool:
    """Whether `error` says the API server is not there (yet): no connection, a timeout, or a 5xx
    while it starts; anything else (a refusal, an unusable CA) is the operator's to fix."""
    from kubernetes_asyncio.client.exceptions import ApiException

    from plait.sources.kubernetes import UNREACHABLE

    if isinstance(error, ApiException):
        return error.status is not None and error.status >= 500
    return isinstance(error, UNREACHABLE)


async def wait_for_cluster(source: KubernetesSource, stop: asyncio.Event, every: float = 10.0) -> None:
    """Wait until every watched type has been listed once (istiod waits for its caches too), saying
    so every `every` seconds; nothing is served before, so no proxy gets a half-read mesh."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(source.wait_synced(), every)
            log.info("read the cluster at %s: %d objects", source.server, len(source.resources))
            return
        except TimeoutError:
            log.warning("still waiting to read the cluster at %s", source.server)


# The cyclic garbage collector's thresholds: Python's (700, 10, 10) made it ~19 % of the control
# plane's CPU in a storm of 1,600 proxies (an in-process diagnostic: 218 young collections walking
# the streams' objects); collecting young objects every 20,000 allocations instead made it ~1 %.
GC_THRESHOLDS = (20_000, 10, 10)


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM); then stop accepting, close streams, exit."""
    from plait.ca.service import ads_authenticator, serve_ca
    from plait.sources.kube_objects import scrape_targets
    from plait.xds.hub import XdsHub
    from plait.xds.server import Pacer, ads_handler, serve_ads

    stop = stop or asyncio.Event()
    gc.set_threshold(*GC_THRESHOLDS)
    store, cluster = await open_config(settings)
    mesh_file = None
    if cluster is not None and settings.mesh_config is not None:
        from plait.controlplane.meshfile import MeshConfigFile

        mesh_file = MeshConfigFile.open(settings.mesh_config, settings.inject or InjectSettings())
        cluster.set_extra(mesh_file.current.resources)
        settings = dataclasses.replace(settings, inject=mesh_file.current.inject)
    identity = await open_identity(cluster, settings) if cluster is not None else None
    authority, tokens = (identity.authority, identity.authenticator) if identity else load_ca(settings)
    hub = XdsHub(MeshSnapshot([]), mutate=testhooks.from_environment(), scoping=settings.scoping)
    metrics = OwnMetrics(store, cluster)

    also_notify: list[Callable[[], None]] = []  # beside the hub: the API's waiting name-table requests

    def publish(snapshot: MeshSnapshot, changed: set) -> None:
        with metrics.build_seconds.time():
            hub.update(snapshot, changed)
        metrics.observe(snapshot)
        for notify in also_notify:
            notify()

    state = MeshState(store, WorkloadRegistry(), debounce=settings.debounce, on_snapshot=publish)
    tasks = [asyncio.create_task(state.run())]
    if cluster is not None:
        cluster.on_change = state.changed
        tasks.append(asyncio.create_task(cluster.run()))
        await wait_for_cluster(cluster, stop)
    else:
        tasks.append(asyncio.create_task(state.watch_directory(settings.poll_interval)))
    state.rebuild()
    # xDS over TLS with a pod token beside the CA (istiod's 15012); plaintext xDS (15010) unless strict;
    # tap's RTDS and access log services beside ADS on both
    tap = TapService(metrics.registry)
    ads = None
    pacer = Pacer()  # one pace for new streams on both ports
    if settings.xds_auth != "strict":
        ads = await serve_ads(hub, settings.host, settings.xds_port, also=tap.handlers(), pacer=pacer)
    authenticate = ads_authenticator(tokens, registry=metrics.registry)
    tls_ads = (ads_handler(hub, authenticate, pacer), *tap.handlers(authenticate))
    ca = await serve_ca(
        authority,
        tokens,
        settings.host,
        settings.ca_port,
        default_ttl=settings.workload_cert_ttl,
        registry=metrics.registry,
        also=tls_ads,
        **({"server_names": identity.settings.server_names} if identity else {}),
    )
    admin_token = load_or_create_admin_token(admin_token_path(settings.state_dir))
    api = Api(
        state,
        hub,
        metrics.registry,
        admin_token=admin_token,
        token_verifier=None if identity else tokens.verify,  # on Kubernetes pods are not registered by API
        name=os.environ.get("POD_NAME") or socket.gethostname(),
        scrape_targets=None if cluster is None else lambda: scrape_targets(cluster.view.pods()),
    )
    also_notify.append(api.snapshot_changed)
    http_app = api.app()
    tap.add_routes(http_app)
    runner = web.AppRunner(http_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.http_port).start()
    traces = (
        None
        if settings.zipkin_port is None
        else await serve_collector(Collector(), settings.host, settings.zipkin_port)
    )
    if identity:
        from plait.controlplane.gatewaystatus import keep_status_written

        jobs = (lambda: keep_status_written(cluster.api, lambda: cluster.resources),)
        if settings.gateway_manifests is not None:
            from plait.controlplane.gatewaydeploy import keep_gateways_deployed

            build = settings.gateway_manifests
            jobs += (lambda: keep_gateways_deployed(cluster.api, lambda: cluster.resources, build),)
        await identity.start(settings.host, settings.state_dir, metrics.registry, view=cluster.view, leader_jobs=jobs)
    if mesh_file is not None:

        def mesh_changed(update: MeshConfigUpdate) -> None:
            cluster.set_extra(update.resources)
            if identity:
                identity.inject = update.inject
            state.changed()

        tasks.append(asyncio.create_task(mesh_file.follow(mesh_changed)))
    api.serving = True
    plaintext = "off (--xds-auth strict)" if ads is None else f"{settings.host}:{settings.xds_port}"
    where = f"Kubernetes API {cluster.server}" if cluster is not None else settings.config_dir
    log.info(
        "control plane ready: xDS and CA over TLS on %s:%d (pod tokens), plaintext xDS %s, HTTP API on "
        "%s:%d, config from %s (%d objects)",
        settings.host,
        settings.ca_port,
        plaintext,
        settings.host,
        settings.http_port,
        where,
        len(store.resources),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("control plane stopping")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if identity:
            await identity.close()
        if cluster is not None:
            await cluster.api.close()
        api.stopping()  # waiting name-table requests answer now, not when their wait ends
        await runner.cleanup()
        if traces is not None:
            await traces.cleanup()
        if ads is not None:
            await ads.stop(grace=1.0)
        await ca.stop(grace=1.0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
