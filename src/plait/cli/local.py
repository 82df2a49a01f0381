"""`plait up`, `plait down`, `plait status`: the local mesh from Kubernetes manifests, no cluster."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from plait import __version__
from plait.api.common import parse_duration
from plait.cli import install as install_cli
from plait.cli.console import err, out, print_problems
from plait.cli.explain import bookinfo
from plait.client import ClientError, Http
from plait.host.processes import alive
from plait.runtime.local import (
    API_PORT,
    PROMETHEUS_ADDON_PORT,
    PROMETHEUS_INSTALL,
    LocalMesh,
    Pod,
    State,
    crash_looping,
    log_tail,
)
from plait.runtime.manifests import load_manifests
from plait.runtime.netns import why_not_capture

StateDir = Annotated[Path, typer.Option(help="Run directory: logs, the control plane's config, state.")]
UP_TIMEOUT = 180.0
PrometheusPort = Annotated[
    int,
    typer.Option(
        help="Run Prometheus (when installed) on 127.0.0.1:PORT, scraping every proxy and the control plane "
        "with Istio's job names; 0: none."
    ),
]
ScrapeInterval = Annotated[str, typer.Option(help="Prometheus' scrape interval (Istio's default: 15s).")]


def prometheus_port_or_none(port: int) -> int | None:
    """The port to run Prometheus on, or None (asked for none, or not installed: then say how to install it)."""
    if not port:
        return None
    if shutil.which("prometheus") is None:
        out.print(f"Prometheus is not installed: no metrics store ({PROMETHEUS_INSTALL} to have one)")
        return None
    return port


def pick_mode(requested: str) -> tuple[str, str]:
    """The mode to run and why: `auto` is capture when it can be (Linux, root, ip, iptables), else proxy."""
    reason = why_not_capture()
    if requested == "capture" and reason:
        err.print(f"[red]error[/]: {reason}")
        raise typer.Exit(1)
    if requested != "auto":
        return requested, "as asked"
    return ("proxy", reason) if reason else ("capture", "root with network namespaces and iptables")


def _pod_rows(state: State) -> list[tuple[str, ...]]:
    try:
        api = Http(f"http://127.0.0.1:{API_PORT}", timeout=2)
        # workloads first: syncz answers once their registrations are in what proxies were sent
        workloads = {(w["namespace"], w["name"]): w for w in api.get("/api/v1/workloads")}
        syncz = {s["proxy_id"]: s for s in api.get("/debug/syncz")}
    except ClientError:
        syncz, workloads = {}, {}
    rows = []
    for pod in state.pods:
        status = next((s for pid, s in syncz.items() if f"~{pod.name}.{pod.namespace}~" in pid), None)
        # NOT SENT is fine for a type the proxy has nothing of (a gateway without routes)
        synced = (
            status
            and all(t["state"] in ("SYNCED", "NOT SENT") for t in status["types"].values())
            and status["types"]["cds"]["state"] == "SYNCED"
        )
        ready = workloads.get((pod.namespace, pod.name), {}).get("ready", False)
        rows.append(
            (
                f"{pod.namespace}/{pod.name}",
                pod.ip,
                "ready" if ready else "starting",
                "SYNCED" if synced else ("connected" if status else "-"),
                str(pod.restarts),
            )
        )
    return rows


def status_table(state: State, rows: list[tuple[str, ...]] | None = None) -> Table:
    table = Table(
        "POD",
        "ADDRESS",
        "READY",
        "PROXY",
        "RESTARTS",
        box=None,
        header_style="bold",
        title=f"plait local mesh ({state.mode} mode) — ingress {state.ingress}"
        + (f" — Prometheus {state.prometheus}" if state.prometheus else ""),
        title_justify="left",
    )
    for row in _pod_rows(state) if rows is None else rows:
        table.add_row(*row)
    return table


def ready_pods(rows: list[tuple[str, ...]]) -> set[str]:
    """``namespace/name`` of the pods whose status row says ready."""
    return {row[0] for row in rows if row[2] == "ready"}


def crash_report(pod: Pod) -> str:
    """What `plait up` says of a crash-looping pod: its name, its restarts, the last lines of its log."""
    tail = "\n".join(f"  | {line}" for line in log_tail(pod.log)) or "  (its log is empty)"
    return (
        f"pod {pod.namespace}/{pod.name} keeps crashing: restarted {pod.restarts} times without becoming "
        f"ready. Last lines of its log ({pod.log}):\n{tail}"
    )


def _all_ready(rows: list[tuple[str, ...]]) -> bool:
    return bool(rows) and all(r[2] == "ready" and r[3] == "SYNCED" for r in rows)


def _load_or_exit(files: list[Path]):

    manifests = load_manifests(files)
    if manifests.errors:
        print_problems(manifests.errors)
        err.print(f"[red]{len(manifests.errors)} error(s)[/]; nothing was started.")
        raise typer.Exit(1)
    return manifests


async def _foreground(mesh: LocalMesh, quiet: bool) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, mesh.stop.set)
    started = asyncio.Event()
    task = asyncio.create_task(mesh.run(started))
    if quiet:
        await task
        return
    await asyncio.wait({task, asyncio.create_task(started.wait())}, return_when=asyncio.FIRST_COMPLETED)
    reported: set[str] = set()
    with Live(status_table(mesh.state), console=out, refresh_per_second=2) as live:
        while not task.done():
            rows = await asyncio.to_thread(_pod_rows, mesh.state)
            live.update(status_table(mesh.state, rows))
            for pod in crash_looping(mesh.state.pods, ready_pods(rows)):
                if pod.name not in reported:
                    reported.add(pod.name)
                    live.console.print(crash_report(pod), markup=False, style="red")
            await asyncio.wait({task}, timeout=1.0)
    await task
    out.print("stopped; nothing left running.")


def up(
    filename: Annotated[
        list[Path],
        typer.Option(
            "-f",
            "--filename",
            help="Kubernetes manifests (Deployments, Services, …) and Istio config: files or directories.",
        ),
    ],
    mode: Annotated[
        str, typer.Option(help="auto (capture when root on Linux, else proxy), capture or proxy.")
    ] = "auto",
    detach: Annotated[bool, typer.Option("-d", "--detach", help="Return once every pod is ready and synced.")] = False,
    state_dir: StateDir = Path(".plait"),
    ingress_port: Annotated[int, typer.Option(help="Host port of the ingress gateway (its port 80).")] = 8080,
    ingress_tls_port: Annotated[
        int, typer.Option(help="Host port of the ingress gateway's port 443 (HTTPS servers).")
    ] = 8443,
    cert_ttl: Annotated[
        str,
        typer.Option(
            help="Lifetime of the workload certificates the CA issues to every pod "
            "(agents renew them at half life); e.g. 1m to watch rotation."
        ),
    ] = "24h",
    prometheus_port: PrometheusPort = PROMETHEUS_ADDON_PORT,
    prometheus_scrape_interval: ScrapeInterval = "15s",
    quiet: Annotated[bool, typer.Option(hidden=True)] = False,
    landing: Annotated[str, typer.Option(hidden=True, help="Path to suggest opening on the ingress.")] = "/",
) -> None:
    """Run a mesh on this machine from ordinary Kubernetes manifests: no cluster needed.

    Each Deployment replica becomes a pod: its container's command runs as a local process (the image
    is ignored, so the same files work on Kubernetes) beside a sidecar Envoy run by plait agent. An
    ingress gateway listens on 127.0.0.1:--ingress-port. Modes: [bold]capture[/] (root: a network
    namespace per pod with Istio's iptables rules; apps never see the proxy) or [bold]proxy[/] (any
    user: apps reach services through their sidecar as HTTP_PROXY). Ctrl-C stops everything.

    Example: [bold]plait up -f samples/bookinfo/ -d[/]  then  [bold]plait status[/], [bold]plait apply -f …[/], [bold]plait down[/]
    """
    manifests = _load_or_exit(filename)
    cert_seconds = _duration_or_exit(cert_ttl, "--cert-ttl")
    _duration_or_exit(prometheus_scrape_interval, "--prometheus-scrape-interval")
    chosen, why = pick_mode(mode)
    if mode == "auto":
        out.print(f"mode: {chosen} ({why})")
    existing = State.load(state_dir)
    if existing and existing.supervisor_pid and alive(existing.supervisor_pid):
        err.print(
            f"[red]error[/]: a mesh is already running from {state_dir} (pid {existing.supervisor_pid}); "
            "stop it with 'plait down' first"
        )
        raise typer.Exit(1)
    # the detached child is told what its parent decided
    prometheus = (prometheus_port or None) if quiet else prometheus_port_or_none(prometheus_port)
    if detach:
        return _detach(
            filename,
            chosen,
            state_dir,
            ingress_port,
            ingress_tls_port,
            landing,
            cert_ttl,
            ["--prometheus-port", str(prometheus or 0), "--prometheus-scrape-interval", prometheus_scrape_interval],
        )
    mesh = LocalMesh(
        manifests,
        state_dir,
        mode=chosen,
        ingress_port=ingress_port,
        ingress_tls_port=ingress_tls_port,
        landing=landing,
        cert_ttl=cert_seconds,
        prometheus_port=prometheus,
        scrape_interval=prometheus_scrape_interval,
    )
    try:
        asyncio.run(_foreground(mesh, quiet))
    except RuntimeError as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(1) from None


def _duration_or_exit(text: str, flag: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        err.print(f"[red]error[/]: {flag}: {exc}")
        raise typer.Exit(2) from None


def _detach(
    files: list[Path],
    mode: str,
    state_dir: Path,
    ingress_port: int,
    ingress_tls_port: int,
    landing: str,
    cert_ttl: str,
    extra: list[str],
) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "plait",
        "up",
        "--mode",
        mode,
        "--state-dir",
        str(state_dir),
        "--ingress-port",
        str(ingress_port),
        "--ingress-tls-port",
        str(ingress_tls_port),
        "--landing",
        landing,
        "--cert-ttl",
        cert_ttl,
        *extra,
        "--quiet",
    ] + [a for f in files for a in ("-f", str(f))]
    with open(state_dir / "logs" / "up.log", "ab") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    started = time.monotonic()
    with out.status("starting the mesh…") as spinner:
        while time.monotonic() - started < UP_TIMEOUT:
            if process.poll() is not None:
                log_lines = (state_dir / "logs" / "up.log").read_text(errors="replace").strip().splitlines()
                reason = next((line for line in reversed(log_lines) if "error" in line.lower()), "")
                err.print(
                    f"the mesh stopped{': ' + reason.removeprefix('error: ') if reason else ''} "
                    f"(log: {state_dir / 'logs' / 'up.log'})",
                    markup=False,
                    style="red",
                )
                raise typer.Exit(1)
            state = State.load(state_dir)
            rows = _pod_rows(state) if state else []
            if state and state.pods and _all_ready(rows):
                out.print(status_table(state, rows))
                out.print(
                    f"ready in {time.monotonic() - started:.1f}s. Open {state.ingress}  —  "
                    "'plait status' to watch, 'plait down' to stop."
                )
                if state.prometheus:
                    out.print(f"Prometheus: {state.prometheus}  ('plait dashboard prometheus', 'plait stat deploy')")
                if state.dashboard:
                    out.print(f"Dashboard: {state.dashboard}  ('plait dashboard')")
                return
            crashing = crash_looping(state.pods, ready_pods(rows)) if state else []
            if crashing:
                _fail_crash_looping(crashing, state_dir)
            if state:
                spinner.update(f"starting the mesh… {len(ready_pods(rows))}/{len(state.pods)} pods ready")
            time.sleep(0.5)
    err.print(
        f"[red]error[/]: not every pod was ready after {UP_TIMEOUT:.0f}s; see 'plait status' and {state_dir / 'logs'}"
    )
    raise typer.Exit(1)


def _fail_crash_looping(pods: list[Pod], state_dir: Path) -> None:
    for pod in pods:
        err.print(crash_report(pod), markup=False, style="red")
    err.print(
        f"error: {len(pods)} pod(s) keep crashing; the mesh is still running ('plait status' to watch, "
        f"'plait down' to stop; logs in {state_dir / 'logs'})",
        markup=False,
        style="red",
    )
    raise typer.Exit(1)


def down(state_dir: StateDir = Path(".plait")) -> None:
    """Stop the local mesh started with 'plait up -d': pods drained, processes stopped, nothing left behind."""
    state = State.load(state_dir)
    if state is None or not state.supervisor_pid or not alive(state.supervisor_pid):
        out.print(f"no mesh running from {state_dir}")
        return
    os.kill(state.supervisor_pid, signal.SIGTERM)
    with out.status("stopping the mesh…"):
        deadline = time.monotonic() + 60
        while alive(state.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    pids = [state.control_plane_pid, state.prometheus_pid] + [pod.pid for pod in state.pods]
    leftovers = [p for p in pids if p and alive(p)]
    if leftovers:
        err.print(f"[red]error[/]: processes still running: {leftovers}")
        raise typer.Exit(1)
    out.print("stopped; nothing left running.")


def status(state_dir: StateDir = Path(".plait")) -> None:
    """List the local mesh's pods (address, ready, proxy sync, restarts), its services and the mode."""
    state = State.load(state_dir)
    if state is None:
        out.print(f"no mesh running from {state_dir} (start one with 'plait up -f …' or 'plait demo bookinfo')")
        raise typer.Exit(1)
    out.print(status_table(state))
    services = Table("SERVICE", "ADDRESS", box=None, header_style="bold")
    for name, vip in sorted(state.services.items()):
        services.add_row(name, vip)
    out.print(services)


BOOKINFO = Path(__file__).parents[1] / "demo" / "bookinfo"


def demo_bookinfo(
    detach: Annotated[bool, typer.Option("-d", "--detach", help="Return once every pod is ready and synced.")] = False,
    mode: Annotated[
        str, typer.Option(help="auto (capture when root on Linux, else proxy), capture or proxy.")
    ] = "auto",
    state_dir: StateDir = Path(".plait"),
    ingress_port: Annotated[int, typer.Option(help="Host port of the ingress gateway.")] = 8080,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain", help="Start nothing: show how each of Istio's Bookinfo routing samples routes requests."
        ),
    ] = False,
    kube: Annotated[
        bool,
        typer.Option(
            "--kube",
            help="On the Kubernetes cluster $KUBECONFIG names instead: install plait if absent, label the namespace "
            "istio-injection=enabled, apply Istio's bookinfo.yaml and gateway, wait, say how to open the page.",
        ),
    ] = False,
    kubeconfig: Annotated[str | None, typer.Option(help="With --kube: the cluster's kubeconfig.")] = None,
    namespace: Annotated[str, typer.Option(help="With --kube: Bookinfo's namespace.")] = "default",
    image: Annotated[str, typer.Option(help="With --kube: plait's image.")] = install_cli.DEFAULT_IMAGE,
    bookinfo_hub: Annotated[str, typer.Option(help="With --kube: where the Bookinfo images are.")] = "plait",
    bookinfo_tag: Annotated[str, typer.Option(help="With --kube: the Bookinfo images' tag.")] = __version__,
    prometheus_port: PrometheusPort = PROMETHEUS_ADDON_PORT,
    prometheus_scrape_interval: ScrapeInterval = "15s",
) -> None:
    """Istio's Bookinfo on this machine: productpage, details, reviews v1/v2/v3, ratings, each with a
    sidecar, behind an ingress gateway programmed by Istio's bookinfo-gateway.yaml, with the trace
    sampling of Istio's demo profile (every request traced: [bold]plait traces[/]).

    Then, as in Istio's tasks: [bold]plait apply -f src/plait/demo/bookinfo/networking/destination-rule-all.yaml[/]
    and [bold]…/virtual-service-reviews-jason-v2-v3.yaml[/], log in as jason on the product page, and watch the stars change.

    Example: [bold]plait demo bookinfo -d[/]  then open http://127.0.0.1:8080/productpage

    With [bold]--kube[/], Istio's getting-started on a cluster: [bold]plait demo bookinfo --kube[/]
    """
    if explain:
        return bookinfo()
    if kube:
        return install_cli.demo_bookinfo_kube(kubeconfig, namespace, image, bookinfo_hub, bookinfo_tag)
    up(
        filename=[
            BOOKINFO / "manifests",
            BOOKINFO / "networking" / "bookinfo-gateway.yaml",
            BOOKINFO / "demo-profile.yaml",
        ],
        mode=mode,
        detach=detach,
        state_dir=state_dir,
        ingress_port=ingress_port,
        ingress_tls_port=8443,
        landing="/productpage",
        prometheus_port=prometheus_port,
        prometheus_scrape_interval=prometheus_scrape_interval,
    )


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    demo = typer.Typer(name="demo", help="Sample applications, run in a local mesh or explained.", no_args_is_help=True)
    demo.command("bookinfo")(demo_bookinfo)
    app.add_typer(demo, name="demo")
