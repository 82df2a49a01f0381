"""`plait dashboard prometheus`: the address of the local mesh's Prometheus, printed and (with a browser
present) opened, as `istioctl dashboard prometheus`. In: the local mesh's state (``state.json``). Out: the
URL on stdout; an error naming how to get a Prometheus when the mesh runs none."""

from __future__ import annotations

import os
import sys
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from plait.cli.console import err, out
from plait.runtime.local import PROMETHEUS_INSTALL, State

StateDir = Annotated[Path, typer.Option(help="The local mesh's run directory.")]


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
    browser: Annotated[bool, typer.Option(help="Open it in a browser when one is present.")] = True,
) -> None:
    """Prometheus of the local mesh ('plait up', 'plait demo bookinfo'): print its URL and open it.

    Example: [bold]plait dashboard prometheus[/]  then query e.g. istio_requests_total{reporter="destination"}
    """
    state = State.load(state_dir)
    if state is None:
        err.print(
            f"[red]error[/]: no mesh running from {state_dir} (start one with 'plait up' or 'plait demo bookinfo')"
        )
        raise typer.Exit(1)
    if not state.prometheus:
        err.print(
            "[red]error[/]: this mesh runs no Prometheus: install it ("
            f"{PROMETHEUS_INSTALL}) and start the mesh again without --prometheus-port 0"
        )
        raise typer.Exit(1)
    out.print(state.prometheus, markup=False, highlight=False)
    if browser:
        open_in_browser(state.prometheus)


def register(app: typer.Typer) -> None:
    dashboard = typer.Typer(
        name="dashboard", help="Open the mesh's dashboards (as istioctl dashboard).", no_args_is_help=True
    )
    dashboard.command("prometheus")(prometheus)
    app.add_typer(dashboard, name="dashboard")
