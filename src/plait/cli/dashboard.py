"""`plait dashboard` (also `plait dashboard kiali`): the mesh dashboard the control plane serves (its graph,
workloads, services, config, live calls), and `plait dashboard prometheus`: the mesh's Prometheus; each
printed and (with a browser present) opened, as `istioctl dashboard kiali|prometheus`. In: the local mesh's
state (``state.json``), or on Kubernetes the pod (istiod, ``app=istiod``; the addon's ``app=prometheus``)
in the control plane's namespace, port-forwarded through the API server until Ctrl-C. Out: the URL on
stdout; an error naming how to get one when there is none. istioctl's ``--browser=false`` is accepted as
``--no-browser`` (`istio_bool_flags`)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from plait.cli.console import err, out
from plait.cli.kubeforward import ForwardError, PortForward, ready_pods
from plait.cli.proxies import IstioNamespace, Kubeconfig
from plait.runtime.local import PROMETHEUS_INSTALL, State

PROMETHEUS_PORT = 9090  # the addon's (Istio's)
DASHBOARD_PORT = 20001  # istiod's dashboard port (Kiali's)
ADDON = "plait install --set addons.prometheus=true -y"

StateDir = Annotated[Path, typer.Option(help="The local mesh's run directory.")]
Browser = Annotated[
    bool,
    typer.Option(
        help="Open it in a browser when one is present; --no-browser (istioctl's --browser=false) only prints it."
    ),
]
BOOL_FLAGS = ("browser",)
TRUE, FALSE = ("1", "t", "T", "TRUE", "true", "True"), ("0", "f", "F", "FALSE", "false", "False")  # Go's ParseBool


def istio_bool_flags(args: list[str], names: tuple[str, ...] = BOOL_FLAGS) -> list[str]:
    """istioctl's (cobra's) spelling of a bool flag with a value, ``--NAME=false`` or ``--NAME=true``, as
    typer's ``--no-NAME`` or ``--NAME``; arguments after ``--`` are left alone."""
    out = []
    for index, arg in enumerate(args):
        if arg == "--":
            return out + args[index:]
        name, equals, value = arg.partition("=")
        if equals and name.startswith("--") and name[2:] in names:
            if value not in TRUE + FALSE:
                raise typer.BadParameter(f"{value!r}: expected true or false", param_hint=name)
            arg = name if value in TRUE else f"--no-{name[2:]}"
        out.append(arg)
    return out


class _IstioFlags:
    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, istio_bool_flags(args))  # type: ignore[misc]


class DashboardGroup(_IstioFlags, TyperGroup):
    """`plait dashboard`, reading istioctl's --browser=false (the subcommands get the rewritten arguments)."""


class DashboardCommand(_IstioFlags, TyperCommand):
    """`plait dashboard kiali|prometheus`, reading istioctl's --browser=false."""


def open_in_browser(url: str) -> bool:
    """Open `url` in a graphical browser when this session has a display; False otherwise (never a
    terminal browser, which would take over the terminal)."""
    if sys.platform != "darwin" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    return browser.open(url)


def prometheus(
    state_dir: StateDir = Path(".plait"),
    browser: Browser = True,
    kubeconfig: Kubeconfig = None,
    istio_namespace: IstioNamespace = "istio-system",
    port: Annotated[int, typer.Option(help="On Kubernetes: the local port to forward (0: any free one).")] = 9090,
) -> None:
    """Prometheus of the mesh: print its URL and open it.

    Locally ('plait up', 'plait demo bookinfo') the mesh's own Prometheus. On Kubernetes ($KUBECONFIG or
    --kubeconfig, and no local mesh in --state-dir) the addon's ('plait install --set addons.prometheus=true'),
    port-forwarded to localhost:--port through the API server, as istioctl does, until Ctrl-C.

    Example: [bold]plait dashboard prometheus[/]  then query e.g. istio_requests_total{reporter="destination"}
    """
    state = State.load(state_dir)
    if kubeconfig or (state is None and os.environ.get("KUBECONFIG")):
        what = f"the Prometheus addon: {ADDON}"
        return _forward(kubeconfig, istio_namespace, "app=prometheus", PROMETHEUS_PORT, port, browser, what)
    state = _running(state, state_dir)
    if not state.prometheus:
        err.print(
            "[red]error[/]: this mesh runs no Prometheus: install it ("
            f"{PROMETHEUS_INSTALL}) and start the mesh again without --prometheus-port 0"
        )
        raise typer.Exit(1)
    _show(state.prometheus, browser)


def mesh(
    state_dir: StateDir = Path(".plait"),
    browser: Browser = True,
    kubeconfig: Kubeconfig = None,
    istio_namespace: IstioNamespace = "istio-system",
    port: Annotated[int, typer.Option(help="On Kubernetes: the local port to forward (0: any free one).")] = 20001,
) -> None:
    """The mesh dashboard: print its URL and open it (the graph, workloads, services, Istio config, live calls).

    Locally ('plait up', 'plait demo bookinfo') the control plane serves it on localhost:20001. On
    Kubernetes ($KUBECONFIG or --kubeconfig, and no local mesh in --state-dir) istiod's port 20001 is
    forwarded to localhost:--port through the API server, as 'istioctl dashboard kiali' does, until Ctrl-C.

    Example: [bold]plait dashboard[/]   [bold]plait dashboard --browser=false[/] (only print the URL)
    """
    state = State.load(state_dir)
    if kubeconfig or (state is None and os.environ.get("KUBECONFIG")):
        return _forward(kubeconfig, istio_namespace, "app=istiod", DASHBOARD_PORT, port, browser, "istiod's dashboard")
    state = _running(state, state_dir)
    if not state.dashboard:
        err.print("[red]error[/]: this mesh was started by an older plait, without the dashboard: restart it")
        raise typer.Exit(1)
    _show(state.dashboard, browser)


def _without_command(
    context: typer.Context,
    state_dir: StateDir = Path(".plait"),
    browser: Browser = True,
    kubeconfig: Kubeconfig = None,
    istio_namespace: IstioNamespace = "istio-system",
    port: Annotated[int, typer.Option(help="On Kubernetes: the local port to forward (0: any free one).")] = 20001,
) -> None:
    """The mesh dashboard (as 'plait dashboard kiali'), or the dashboard a subcommand names."""
    if context.invoked_subcommand is None:
        mesh(state_dir, browser, kubeconfig, istio_namespace, port)


def _running(state: State | None, state_dir: Path) -> State:
    """The local mesh's state; exits saying how to start one (or reach a cluster) when none runs."""
    if state is None:
        err.print(
            f"[red]error[/]: no mesh running from {state_dir} (start one with 'plait up' or 'plait demo bookinfo'; "
            "on Kubernetes set KUBECONFIG or --kubeconfig)"
        )
        raise typer.Exit(1)
    return state


def _show(url: str, browser: bool) -> None:
    out.print(url, markup=False, highlight=False)
    sys.stdout.flush()  # read at once by whoever waits for the URL (a port-forward keeps running)
    if browser:
        open_in_browser(url)


def _forward(kubeconfig: str | None, namespace: str, selector: str, remote: int, port: int, browser: bool, what: str):
    """Forward `port` to `remote` of the first ready pod with `selector` until SIGINT/SIGTERM."""
    try:
        pod = ready_pods(kubeconfig, namespace, selector)[0]
        with PortForward(kubeconfig, namespace, remote, pod=pod, local_port=port) as address:
            _show(f"http://{address.replace('127.0.0.1', 'localhost')}", browser)
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
    except ForwardError as error:
        err.print(f"[red]error[/]: {escape(str(error))}; {what}", highlight=False)
        raise typer.Exit(1) from None
    except OSError as error:
        err.print(f"[red]error[/]: cannot listen on localhost:{port}: {error.strerror or error} (try --port 0)")
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    dashboard = typer.Typer(
        name="dashboard", help="Open the mesh's dashboards (as istioctl dashboard).", cls=DashboardGroup
    )
    dashboard.callback(invoke_without_command=True)(_without_command)
    dashboard.command("kiali", cls=DashboardCommand)(mesh)
    dashboard.command("prometheus", cls=DashboardCommand)(prometheus)
    app.add_typer(dashboard, name="dashboard")
