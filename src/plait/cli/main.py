"""Entry point: ``plait <command>``. Builds the CLI from the command modules; each command is a thin
shell over the library, and each module adds its own commands with ``register(app)``.

Only this module (and ``plait.__main__``) knows every command module: they import the shared helpers
(`common`, `console`), never this module, so the CLI has no import cycle.
"""

from __future__ import annotations

import typer

from plait.cli import (
    agent,
    analyze,
    config,
    controlplane,
    dashboard,
    explain,
    inject,
    install,
    iptables,
    local,
    logs,
    proxies,
    stat,
    tap,
    traces,
)

app = typer.Typer(
    name="plait",
    help="plait: a service mesh. Istio's configuration API, Envoy's data plane, a Python control plane.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

for module in (
    config,
    analyze,
    explain,
    controlplane,
    agent,
    proxies,
    local,
    iptables,
    inject,
    install,
    dashboard,
    stat,
    tap,
    logs,
    traces,
):
    module.register(app)


def main() -> None:
    app()
