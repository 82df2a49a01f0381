"""The local mesh: the control plane, every pod (app + `plait agent` sidecar) and the gateways as
processes on this machine, supervised until stopped.

`LocalMesh.run()` starts the control plane, applies the Services (with VIPs) and
Istio config, starts one `plait agent … --register … -- APP` per pod (the agent
holds the app until its proxy is ready, and registers the workload, ready only
when proxy and app are) and the ingress/egress gateways, then restarts any pod
process that exits (with backoff, counting restarts) until `stop` is set; then it
stops everything by PID. State (pods, addresses, PIDs) is written to
``<state-dir>/state.json`` for `plait status` and `plait down`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from plait.api.loader import parse_document
from plait.api.resources import Resource, Source
from plait.ca.authority import root_cert_path, write_file
from plait.ca.tokens import TokenIssuer, token_key_path
from plait.client import ClientError, Http
from plait.host.processes import die_with_parent
from plait.inject.prometheus import scrape_annotations
from plait.model.proxy import PROMETHEUS_PORT
from plait.model.proxy_config import effective_proxy_config
from plait.runtime import gatewayapi, iptables
from plait.runtime import netns as capture
from plait.runtime.addresses import Addresses
from plait.runtime.manifests import Deployment, Manifests, pod_fields
from plait.telemetry import scrape
from plait.telemetry.metrics import WORKLOAD_NAME_LABEL

log = logging.getLogger("plait.runtime")
CA_PORT, API_PORT = 15012, 15014  # xDS and the CA over TLS (istiod's 15012), the HTTP API
ZIPKIN_PORT = 9411  # the control plane's trace collector, behind the Service zipkin.istio-system as on Kubernetes
CONTROL_PLANE_LABELS = {"app": "istiod", "istio": "pilot"}
TOKEN_FILE = "istio-token"  # in each pod's directory, as Istio mounts /var/run/secrets/tokens/istio-token
BACKOFF_START, BACKOFF_MAX = 0.5, 10.0
# A pod restarted this often and not ready is crash-looping (Kubernetes' CrashLoopBackOff): `plait up` says so.
CRASH_LOOP_RESTARTS = 3
MERGED_PORT = 15020  # Istio's merged metrics (and app probes) on the agent: POD_IP:15020 in capture mode
LOG_TAIL_LINES = 12
STATE_FILE = "state.json"
PROMETHEUS_DIR = "prometheus"  # in the state dir: prometheus.yml, targets/, data/
PROMETHEUS_INSTALL = "apt-get install prometheus"
PROMETHEUS_ADDON_PORT = 9090  # Istio's prometheus addon's port
DASHBOARD_PORT = 20001  # the control plane's dashboard (Kiali's port)


@dataclass
class Pod:
    name: str
    namespace: str
    deployment: str
    labels: dict[str, str]
    service_account: str
    ip: str  # the sidecar's address: what peers reach
    app_ip: str  # where the app listens (explicit-proxy mode); the pod IP in capture mode
    admin_port: int
    status_port: int
    command: list[str]
    env: dict[str, str]
    ports: dict[str, int]
    probe: str | None = None
    kind: str = "sidecar"  # or "gateway"
    app_metrics: str = ""  # ISTIO_PROMETHEUS_ANNOTATIONS: the app's metrics the agent merges (its prometheus.io/*)
    pid: int | None = None
    restarts: int = 0
    started_at: float = 0.0
    log: str = ""


@dataclass
class State:
    mode: str
    state_dir: str
    control_plane_pid: int | None = None
    supervisor_pid: int | None = None
    ingress: str = ""
    pods: list[Pod] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)  # "ns/name" → VIP
    # ServiceEntry host → an address pods resolve it to (its own, else one that is only ever captured)
    external_hosts: dict[str, str] = field(default_factory=dict)
    prometheus: str = ""  # its URL when the mesh runs one
    prometheus_pid: int | None = None
    dashboard: str = ""  # the control plane's dashboard URL

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> "State | None":
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["pods"] = [Pod(**p) for p in data.get("pods", [])]
        return cls(**data)


def crash_looping(pods: list[Pod], ready: set[str]) -> list[Pod]:
    """Pods restarted `CRASH_LOOP_RESTARTS` times or more that are not ready now (by ``namespace/name``)."""
    return [pod for pod in pods if pod.restarts >= CRASH_LOOP_RESTARTS and f"{pod.namespace}/{pod.name}" not in ready]


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines of a pod's log (its agent and its app), without Envoy's own ``[envoy]`` lines."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip() and not line.startswith("[envoy]")][-lines:]


def control_plane_state(state_dir: Path) -> Path:
    """The control plane's own state: the CA (key, root), the token-signing key, the API token."""
    return state_dir / "control-plane"


def pod_argv(state_dir: Path, pod_name: str, argv: list[str]) -> list[str]:
    """The command line running `argv` in a capture-mode pod as the mesh runs pods: in its network
    namespace, seeing neither the control plane's keys nor other pods' directories (their tokens,
    their SDS sockets), only its own (see `netns.exec_argv`)."""
    state_dir = state_dir.resolve()
    return capture.exec_argv(
        capture.Network().namespace(pod_name),
        argv,
        hide=[control_plane_state(state_dir), state_dir / "pods"],
        keep=state_dir / "pods" / pod_name,
    )


def _probe_url(container, app_ip: str) -> str | None:
    probe = container.readiness_probe.http_get if container.readiness_probe else None
    if probe is None:
        return None
    port = (
        probe.port
        if isinstance(probe.port, int)
        else next((p.container_port for p in container.ports if p.name == probe.port), 80)
    )
    return f"http://{app_ip}:{port}{probe.path}"


def pods_for(deployment: Deployment, addresses: Addresses, mode: str) -> list[Pod]:
    """One Pod per replica of a Deployment: addresses, ports, the first container's command and env.

    The environment is the container's ``env`` (``$(VAR)`` and ``fieldRef`` resolved as the kubelet does;
    ``status.podIP`` is where the app listens: its own address in explicit-proxy mode) over ``PORT`` (the
    first container port), under what the runtime provides (POD_NAME, POD_NAMESPACE, BIND_ADDRESS,
    NO_PROXY, PATH); command and args then expand their ``$(VAR)`` references from it."""
    container = deployment.containers[0]
    pods = []
    for name in deployment.pod_names():
        ip = addresses.pod_ip()
        # explicit-proxy: the app has a loopback address of its own; capture: the pod's own loopback
        app_ip = addresses.app_ip() if mode == "proxy" else "127.0.0.1"
        ports = {p.name or f"port-{p.container_port}": p.container_port for p in container.ports}
        provided = dict(
            POD_NAME=name,
            POD_NAMESPACE=deployment.namespace,
            BIND_ADDRESS=app_ip if mode == "proxy" else "0.0.0.0",
            NO_PROXY=f"127.0.0.1,localhost,{app_ip}",
            # "python" in a container command is plait's own Python, with plait importable
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        defaults = {"PORT": str(container.ports[0].container_port)} if container.ports else {}
        fields = pod_fields(
            name, deployment.namespace, deployment.service_account, app_ip if mode == "proxy" else ip, deployment.labels
        )
        env = container.environment(fields, defaults, provided)
        pods.append(
            Pod(
                name=name,
                namespace=deployment.namespace,
                deployment=deployment.name,
                # the workload is the Deployment, as Istio's injector names it (ISTIO_META_WORKLOAD_NAME)
                labels={WORKLOAD_NAME_LABEL: deployment.name, **deployment.labels},
                service_account=deployment.service_account,
                ip=ip,
                app_ip=app_ip,
                admin_port=addresses.port(),
                status_port=addresses.port(),
                command=container.argv(env),
                env=env,
                ports=ports,
                probe=_probe_url(container, app_ip),
                app_metrics=scrape_annotations(deployment.annotations, merge=True, status_port=MERGED_PORT)[1] or "",
            )
        )
    return pods


def gateway_pod(
    name: str,
    labels: dict[str, str],
    ports: dict[str, int],
    addresses: Addresses,
    ip: str,
    namespace: str = "istio-system",
) -> Pod:
    """Gateways run on the host: reachable at 127.0.0.1 from it and, in capture mode, at the bridge's
    address from the pods."""
    return Pod(
        name=name,
        namespace=namespace,
        deployment=name,
        labels=labels,
        service_account=f"{name}-service-account",
        ip=ip,
        app_ip="127.0.0.1",
        admin_port=addresses.port(),
        status_port=addresses.port(),
        command=[],
        env={},
        ports=ports,
        kind="gateway",
    )


def scrape_targets(pods: list[Pod]) -> list[scrape.ScrapeTarget]:
    """Where Prometheus reads each pod's metrics: a sidecar's Envoy on POD_IP:15090, a gateway's agent on
    its status port (the local gateways share the host's address, so not on 15090)."""
    return [
        scrape.ScrapeTarget(
            f"{pod.ip}:{PROMETHEUS_PORT}" if pod.kind != "gateway" else f"127.0.0.1:{pod.status_port}",
            pod.namespace,
            pod.name,
            pod.labels,
        )
        for pod in pods
    ]


def gateway_services(ingress_port: int, egress_port: int, ingress_tls_port: int) -> list[dict]:
    """Istio's gateway Services: the Gateway's server ports map to where the gateways listen."""

    def service(name: str, labels: dict, ports: list[dict]) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "istio-system"},
            "spec": {"selector": labels, "ports": ports},
        }

    return [
        service(
            "istio-ingressgateway",
            {"istio": "ingressgateway"},
            [
                {"name": "http2", "port": 80, "targetPort": ingress_port},
                {"name": "https", "port": 443, "targetPort": ingress_tls_port},
            ],
        ),
        service(
            "istio-egressgateway",
            {"istio": "egressgateway"},
            [{"name": "http2", "port": 80, "targetPort": egress_port}],
        ),
    ]


def collector_service(addresses: Addresses, state: State) -> dict:
    """Istio's ``zipkin`` Service in istio-system, in front of the control plane's collector (its
    registered workload `control_plane_workload`), with a VIP as Kubernetes would give it."""
    vip = addresses.service_ip()
    state.services["istio-system/zipkin"] = vip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "zipkin", "namespace": "istio-system"},
        "spec": {
            "clusterIP": vip,
            "selector": {"app": "istiod"},
            "ports": [{"name": "http-query", "port": ZIPKIN_PORT, "targetPort": ZIPKIN_PORT}],
        },
    }


def control_plane_workload(address: str) -> dict:
    """The control plane as a workload of the registry (its collector's endpoint), as istiod's pod is."""
    return {
        "address": address,
        "labels": CONTROL_PLANE_LABELS,
        "ports": {"http-query": ZIPKIN_PORT},
        "serviceAccount": "istiod",
        "ready": True,
    }


def config_documents(manifests: Manifests, addresses: Addresses, state: State) -> list[dict]:
    """Everything for the control plane; Services without a clusterIP get a VIP, as Kubernetes gives."""
    docs = []
    for r in manifests.config.resources:
        doc = r.to_dict()
        if r.kind == "Service" and not doc["spec"].get("clusterIP"):
            doc["spec"]["clusterIP"] = addresses.service_ip()
        if r.kind == "Service":
            state.services[f"{r.namespace}/{r.name}"] = doc["spec"]["clusterIP"]
        if r.kind == "ServiceEntry":
            for host in r.spec.hosts:
                if not host.startswith("*"):
                    state.external_hosts[host] = (
                        next((a for a in r.spec.addresses if "/" not in a), None) or addresses.external_ip()
                    )
        docs.append(doc)
    return docs


class LocalMesh:
    def __init__(
        self,
        manifests: Manifests,
        state_dir: Path,
        *,
        mode: str = "proxy",
        ingress_port: int = 8080,
        egress_port: int = 8081,
        ingress_tls_port: int = 8443,
        python: str = sys.executable,
        landing: str = "/",
        cert_ttl: float = 24 * 3600,
        prometheus_port: int | None = None,
        scrape_interval: str = scrape.DEFAULT_SCRAPE_INTERVAL,
    ):
        self.manifests, self.state_dir, self.mode, self.python = manifests, state_dir, mode, python
        self.ingress_port, self.egress_port, self.ingress_tls_port = ingress_port, egress_port, ingress_tls_port
        self.cert_ttl = cert_ttl
        self.prometheus_port, self.scrape_interval = prometheus_port, scrape_interval
        self.addresses = Addresses(mode)
        self.network = capture.Network()
        self.state = State(
            mode=mode,
            state_dir=str(state_dir),
            supervisor_pid=os.getpid(),
            ingress=f"http://127.0.0.1:{ingress_port}{landing}",
        )
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.control_plane: asyncio.subprocess.Process | None = None
        self.prometheus: asyncio.subprocess.Process | None = None
        self.stop = asyncio.Event()
        self.gateway_api: dict[str, gatewayapi.DeployedGateway] = {}  # Gateway API gateways running
        self.gateway_supervisors: dict[str, asyncio.Task] = {}

    # ------------------------------------------------------------ processes

    @property
    def control_plane_state(self) -> Path:
        return control_plane_state(self.state_dir)

    @property
    def root_cert(self) -> Path:
        """A public copy of the mesh's root certificate, which agents verify the CA's server with."""
        return self.state_dir / "root-cert.pem"

    def _pod_dir(self, pod: Pod) -> Path:
        return self.state_dir / "pods" / pod.name

    def _issue_token(self, pod: Pod) -> Path:
        """The pod's service-account token: what it proves its identity to the CA with (owner-only)."""
        path = self._pod_dir(pod) / TOKEN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, self._tokens.issue(pod.namespace, pod.service_account, pod.name).encode())
        return path

    @functools.cached_property
    def _tokens(self):
        """The control plane's token issuer (its key is read once, after the control plane made it)."""
        return TokenIssuer.load_or_create(token_key_path(self.control_plane_state))

    async def _spawn(
        self, args: list[str], log_name: str, env: dict[str, str] | None = None, pod_name: str | None = None
    ):
        """Start `plait ARGS`, logging to logs/LOG_NAME.log; with `pod_name`, inside that capture-mode pod."""
        log_path = self.state_dir / "logs" / f"{log_name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [self.python, "-m", "plait", *args]
        if pod_name:
            argv = pod_argv(self.state_dir, pod_name, argv)
        with open(log_path, "ab") as out:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        return process, str(log_path)

    def _agent_args(self, pod: Pod) -> list[str]:
        in_pod = self.mode == "capture" and pod.kind != "gateway"
        control_plane = self.network.gateway if in_pod else "127.0.0.1"
        args = [
            "agent",
            "--mode",
            "gateway" if pod.kind == "gateway" else self.mode,
            "--name",
            pod.name,
            "--namespace",
            pod.namespace,
            "--ip",
            pod.ip,
            "--app-address",
            pod.app_ip,
            "--labels",
            ",".join(f"{k}={v}" for k, v in pod.labels.items()),
            "--service-account",
            pod.service_account,
            "--admin-port",
            str(pod.admin_port),
            "--status-port",
            str(pod.status_port),
            "--control-plane",
            f"{control_plane}:{CA_PORT}",
            "--control-plane-api",
            f"http://{control_plane}:{API_PORT}",
            "--drain-duration",
            "1",
            "--state-dir",
            str(self._pod_dir(pod)),
            "--token-file",
            str(self._issue_token(pod)),
            "--root-cert",
            str(self.root_cert),
            "--ca-address",
            f"{control_plane}:{CA_PORT}",
            "--cert-ttl",
            f"{round(self.cert_ttl)}s",
            "--register",
            ",".join(f"{k}={v}" for k, v in pod.ports.items()),
        ]
        if pod.probe:
            args += ["--app-probe", pod.probe]
        if pod.kind != "gateway":  # Istio's metrics on POD_IP:15090 (gateways share the host's address)
            args += ["--prometheus-port", str(PROMETHEUS_PORT)]
        if in_pod:  # and the merged ones on POD_IP:15020 (in proxy mode: on the status port)
            args += ["--probe-port", str(MERGED_PORT)]
        if pod.app_metrics:
            args += ["--prometheus-annotations", pod.app_metrics]
        if in_pod:
            args += ["--proxy-uid", str(capture.PROXY_UID)]
        proxy_config = effective_proxy_config(self.manifests.config.resources, pod.namespace, pod.labels)
        if proxy_config.concurrency is not None:
            args += ["--concurrency", str(proxy_config.concurrency)]
        args += [f"--proxy-env={name}={value}" for name, value in proxy_config.environment.items()]
        if pod.command:
            args += ["--", *pod.command]
        return args

    async def _start_pod(self, pod: Pod) -> None:
        in_pod = self.mode == "capture" and pod.kind != "gateway"
        process, pod.log = await self._spawn(self._agent_args(pod), pod.name, pod.env, pod.name if in_pod else None)
        self.processes[pod.name] = process
        pod.pid, pod.started_at = process.pid, time.time()
        self.state.save()
        self._write_scrape_targets()  # Prometheus' targets, and the dashboard's without Prometheus

    # ------------------------------------------------------------ Gateway API gateways

    async def _gateway_config(self) -> list[Resource]:
        """Gateways and GatewayClasses as the control plane holds them now."""
        api = Http(f"http://127.0.0.1:{API_PORT}")
        items = []
        for kind in ("Gateway", "GatewayClass"):
            items += (await asyncio.to_thread(api.get, f"/api/v1/config?kind={kind}"))["items"]
        return [r for item in items for r in parse_document(item, Source("control plane"))[0]]

    async def _reconcile_gateways(self, start: bool = True) -> None:
        """Run a gateway `<gateway>-istio` for each Gateway of class istio, and its Service; stop and
        remove those whose Gateway is gone (or changed its ports). `start`: start new pods now (else
        they are only added to the plan, started with the others)."""
        wanted = gatewayapi.plan(await self._gateway_config(), self.gateway_api, self.addresses.port)
        gone = [g for key, g in self.gateway_api.items() if wanted.get(key) != g]
        new = [g for key, g in wanted.items() if self.gateway_api.get(key) != g]
        api = Http(f"http://127.0.0.1:{API_PORT}")
        for deployed in gone:
            await self._remove_pod(deployed.name)
            text = yaml.safe_dump(deployed.service()).encode()
            with contextlib.suppress(ClientError):
                await asyncio.to_thread(api.request, "POST", "/api/v1/config/delete", text)
            self.state.services.pop(f"{deployed.namespace}/{deployed.name}", None)
            log.info("gateway %s/%s removed", deployed.namespace, deployed.name)
        gateway_ip = self.network.gateway if self.mode == "capture" else "127.0.0.1"
        for deployed in new:
            service = deployed.service()
            service["spec"]["clusterIP"] = self.addresses.service_ip()
            self.state.services[f"{deployed.namespace}/{deployed.name}"] = service["spec"]["clusterIP"]
            text = yaml.safe_dump(service).encode()
            await asyncio.to_thread(api.request, "POST", "/api/v1/config?filename=plait-gateway-api", text)
            pod = gateway_pod(
                deployed.name, deployed.labels, deployed.pod_ports, self.addresses, gateway_ip, deployed.namespace
            )
            self.state.pods.append(pod)
            if start:
                await self._start_pod(pod)
                self.gateway_supervisors[pod.name] = asyncio.create_task(self._supervise(pod))
            log.info("gateway %s/%s deployed (ports %s)", deployed.namespace, deployed.name, dict(deployed.ports))
        self.gateway_api = wanted
        self.state.save()

    async def _remove_pod(self, name: str) -> None:
        task = self.gateway_supervisors.pop(name, None)
        if task:
            task.cancel()
        process = self.processes.pop(name, None)
        if process:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            await _wait_all([process], 10)
        self.state.pods = [p for p in self.state.pods if p.name != name]

    async def _watch_gateways(self, interval: float = 1.0) -> None:
        """Follow Gateways added, changed or deleted while the mesh runs."""
        while not self.stop.is_set():
            await asyncio.sleep(interval)
            try:
                await self._reconcile_gateways()
            except (ClientError, OSError) as exc:
                log.warning("cannot reconcile Gateway API gateways: %s", exc)

    async def _supervise(self, pod: Pod) -> None:
        """Restart a pod whose process exited, with exponential backoff, until the mesh stops."""
        backoff = BACKOFF_START
        while not self.stop.is_set():
            process = self.processes[pod.name]
            await process.wait()
            if self.stop.is_set():
                return
            pod.restarts += 1
            log.warning("pod %s exited (%s); restart %d in %.1fs", pod.name, process.returncode, pod.restarts, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), backoff)
            if self.stop.is_set():
                return
            backoff = BACKOFF_START if time.time() - pod.started_at > 30 else min(backoff * 2, BACKOFF_MAX)
            await self._start_pod(pod)

    # ------------------------------------------------------------ Prometheus

    @property
    def prometheus_dir(self) -> Path:
        return self.state_dir / PROMETHEUS_DIR

    def _write_scrape_targets(self) -> None:
        """The ``envoy-stats`` file_sd file: every started pod's proxy; rewritten only when that set changes
        (Prometheus reads it again by itself: no restart for a pod coming or going)."""
        started = [pod for pod in self.state.pods if pod.pid]
        text = json.dumps(scrape.file_sd_groups(scrape_targets(started)), indent=2)
        path = self.prometheus_dir / "targets" / scrape.ENVOY_STATS_FILE
        if path.exists() and path.read_text() == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)

    async def _start_prometheus(self) -> None:
        """Prometheus on 127.0.0.1:`prometheus_port`, config and data in the state dir (bounded retention)."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(f"Prometheus is not installed ({PROMETHEUS_INSTALL})")
        if not _port_free(self.prometheus_port):
            raise RuntimeError(
                f"port {self.prometheus_port} is in use: choose another with --prometheus-port (0: no Prometheus)"
            )
        directory = self.prometheus_dir.resolve()  # Prometheus reads file_sd paths relative to its config
        (directory / "targets").mkdir(parents=True, exist_ok=True)
        config = scrape.prometheus_config(str(directory / "targets"), f"127.0.0.1:{API_PORT}", self.scrape_interval)
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self._write_scrape_targets()
        listen = f"127.0.0.1:{self.prometheus_port}"
        argv = scrape.prometheus_argv(binary, str(directory / "prometheus.yml"), str(directory / "data"), listen)
        log_path = self.state_dir / "logs" / "prometheus.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            self.prometheus = await asyncio.create_subprocess_exec(
                *argv,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        self.state.prometheus, self.state.prometheus_pid = f"http://{listen}", self.prometheus.pid
        self.state.save()
        await self._wait_prometheus_ready(log_path)

    async def _wait_prometheus_ready(self, log_path: Path, timeout: float = 30) -> None:
        api = Http(self.state.prometheus, what="Prometheus", timeout=2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.prometheus.returncode is not None:
                raise RuntimeError(f"Prometheus exited ({self.prometheus.returncode}); see {log_path}")
            try:
                await asyncio.to_thread(api.get, "/-/ready")
                return
            except ClientError:
                await asyncio.sleep(0.2)
        raise RuntimeError(f"Prometheus was not ready in {timeout:.0f} s; see {log_path}")

    # ------------------------------------------------------------ the mesh

    async def _start_control_plane(self) -> None:
        for port in (CA_PORT, API_PORT, DASHBOARD_PORT):
            if not _port_free(port):
                raise RuntimeError(
                    f"port {port} is in use: another control plane (another 'plait up'?) is "
                    "running on this machine; stop it with 'plait down' first"
                )
        config_dir = self.state_dir / "mesh"
        host = "0.0.0.0" if self.mode == "capture" else "127.0.0.1"  # capture: pods reach it over the bridge
        self.control_plane, _ = await self._spawn(
            [
                "control-plane",
                "--config-dir",
                str(config_dir),
                "--xds-auth",
                "strict",
                "--http-port",
                str(API_PORT),
                "--ca-port",
                str(CA_PORT),
                "--state-dir",
                str(self.control_plane_state),
                "--host",
                host,
                "--dashboard-port",
                str(DASHBOARD_PORT),
                *(
                    ["--dashboard-prometheus", f"http://127.0.0.1:{self.prometheus_port}"]
                    if self.prometheus_port
                    else [
                        "--dashboard-targets",
                        str((self.prometheus_dir / "targets" / scrape.ENVOY_STATS_FILE).resolve()),
                    ]
                ),
            ],
            "control-plane",
        )
        self.state.dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"
        self.state.control_plane_pid = self.control_plane.pid
        api = Http(f"http://127.0.0.1:{API_PORT}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.control_plane.returncode is not None:
                raise RuntimeError(f"the control plane exited; see {self.state_dir / 'logs' / 'control-plane.log'}")
            try:
                await asyncio.to_thread(api.get, "/ready")
                self._publish_root_cert()
                return
            except ClientError:
                await asyncio.sleep(0.1)
        raise RuntimeError("the control plane did not become ready in 30 s")

    def _publish_root_cert(self) -> None:
        write_file(self.root_cert, root_cert_path(self.control_plane_state).read_bytes(), mode=0o644)

    async def _apply_config(self) -> None:
        docs = gateway_services(self.ingress_port, self.egress_port, self.ingress_tls_port) + config_documents(
            self.manifests, self.addresses, self.state
        )
        docs.append(collector_service(self.addresses, self.state))
        text = yaml.safe_dump_all(docs, sort_keys=False)
        api = Http(f"http://127.0.0.1:{API_PORT}")
        await asyncio.to_thread(api.request, "POST", "/api/v1/config?filename=plait-up", text.encode())
        address = self.network.gateway if self.mode == "capture" else "127.0.0.1"  # where the pods reach it
        body = json.dumps(control_plane_workload(address)).encode()
        await asyncio.to_thread(api.request, "PUT", "/api/v1/workloads/istio-system/istiod", body, "application/json")

    def plan(self) -> list[Pod]:
        pods = [p for d in self.manifests.deployments for p in pods_for(d, self.addresses, self.mode)]
        gateway_ip = self.network.gateway if self.mode == "capture" else "127.0.0.1"
        pods.append(
            gateway_pod(
                "istio-ingressgateway",
                {"app": "istio-ingressgateway", "istio": "ingressgateway"},
                {"http2": self.ingress_port, "https": self.ingress_tls_port},
                self.addresses,
                gateway_ip,
            )
        )
        pods.append(
            gateway_pod(
                "istio-egressgateway",
                {"app": "istio-egressgateway", "istio": "egressgateway"},
                {"http2": self.egress_port},
                self.addresses,
                gateway_ip,
            )
        )
        return pods

    def _hosts(self, namespace: str) -> dict[str, list[str]]:
        """A pod's hosts file: each service's VIP with the names Kubernetes DNS would give it."""
        out = {}
        for ref, vip in self.state.services.items():
            ns, name = ref.split("/")
            names = [f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
            out[vip] = ([name] if ns == namespace else []) + names
        for host, address in self.state.external_hosts.items():
            out.setdefault(address, []).append(host)
        return out

    def _create_namespaces(self) -> None:
        """Capture mode: the bridge, a network namespace per pod, Istio's iptables rules in each."""
        capture.ensure_bridge(self.network)
        rules = iptables.CaptureConfig.from_flags(outbound_ranges_exclude=f"{self.network.gateway}/32")
        for pod in self.state.pods:
            if pod.kind == "gateway":
                continue
            namespace = capture.add_pod(self.network, pod.name, pod.ip, self._hosts(pod.namespace))
            iptables.apply(rules, netns=namespace)

    def _remove_namespaces(self) -> None:
        """Only this mesh's pods; the bridge too once no namespace is left on it."""
        for pod in self.state.pods:
            if pod.kind != "gateway":
                for pid in capture.namespace_pids(self.network.namespace(pod.name)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                capture.remove_pod(self.network, pod.name)
        if not capture.namespaces(self.network):
            capture.teardown(self.network)

    async def run(self, started: asyncio.Event | None = None) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._start_control_plane()
            await self._apply_config()
            self.state.pods = self.plan()
            if self.mode == "capture":
                self._create_namespaces()
            if self.prometheus_port:
                await self._start_prometheus()
            await self._reconcile_gateways(start=False)
            for pod in self.state.pods:
                await self._start_pod(pod)
            deployed = {g.name for g in self.gateway_api.values()}
            supervisors = [asyncio.create_task(self._supervise(p)) for p in self.state.pods if p.name not in deployed]
            self.gateway_supervisors = {
                p.name: asyncio.create_task(self._supervise(p)) for p in self.state.pods if p.name in deployed
            }
            watcher = asyncio.create_task(self._watch_gateways())
            if started:
                started.set()
            await self.stop.wait()
            for task in [*supervisors, watcher, *self.gateway_supervisors.values()]:
                task.cancel()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """SIGTERM every pod (agents drain their Envoys), then the control plane; SIGKILL stragglers."""
        self.stop.set()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        await _wait_all(list(self.processes.values()), 10)
        if self.prometheus:
            with contextlib.suppress(ProcessLookupError):
                self.prometheus.send_signal(signal.SIGTERM)
            await _wait_all([self.prometheus], 10)
        if self.control_plane:
            with contextlib.suppress(ProcessLookupError):
                self.control_plane.send_signal(signal.SIGTERM)
            await _wait_all([self.control_plane], 10)
        if self.mode == "capture":
            self._remove_namespaces()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection in TIME_WAIT is no server
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


async def _wait_all(processes: list[asyncio.subprocess.Process], timeout: float) -> None:
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), timeout)
    except TimeoutError:
        for p in processes:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        await asyncio.gather(*(p.wait() for p in processes))
