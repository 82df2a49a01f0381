"""``plait validate``, ``plait translate`` and ``plait version``: config checked and translated offline.

``register(app)`` adds the commands to the ``plait`` CLI.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Annotated

import typer
import yaml

from plait import __version__
from plait.api.resources import api_kind
from plait.cli.common import FilesOption, load_or_exit, proxy_for
from plait.cli.console import err, out
from plait.client import ClientError, Http, control_plane_url
from plait.host.envoy_binary import find_envoy
from plait.lower import with_gateway_api
from plait.model import MeshSnapshot
from plait.xds.generator import generate


def validate(filename: FilesOption) -> None:
    """Check Istio configuration as strictly as Istio does.

    Every error names the file, the document, the object and the field, and says what was
    expected. Exit code 1 if anything is wrong (warnings alone do not fail).

    Example: [bold]plait validate -f samples/bookinfo/networking/virtual-service-reviews-80-20.yaml[/]
    """
    result = load_or_exit(filename)
    counts = Counter(api_kind(r.kind) for r in result.resources)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no objects"
    warn = f", {len(result.warnings)} warning(s)" if result.warnings else ""
    out.print(f"[green]valid[/]: {summary}{warn}")


def translate(
    filename: FilesOption,
    proxy: Annotated[
        str, typer.Option("--proxy", help="Workload (WorkloadEntry name or namespace/name) whose proxy to show.")
    ],
    type_: Annotated[
        list[str],
        typer.Option(
            "--type",
            "-t",
            help=(
                "cds, eds, lds, rds or sds (secrets, private keys redacted); repeatable. Default: cds, eds, lds, rds."
            ),
        ),
    ] = [],  # noqa: B006
    mode: Annotated[str, typer.Option(help="Sidecar mode: 'capture' (iptables) or 'proxy' (HTTP_PROXY).")] = "capture",
    output: Annotated[str, typer.Option("-o", "--output", help="yaml or json")] = "yaml",
) -> None:
    """Show the Envoy resources one proxy would receive, in Envoy's own form.

    A workload labelled istio=ingressgateway or istio=egressgateway is translated as a gateway.

    Example: [bold]plait translate -f mesh/ --proxy productpage-v1 --type rds[/]
    """
    types = type_ or ["cds", "eds", "lds", "rds"]
    unknown = [t for t in types if t not in ("cds", "eds", "lds", "rds", "sds")]
    if unknown or mode not in ("capture", "proxy") or output not in ("yaml", "json"):
        err.print("[red]error[/]: --type takes cds, eds, lds, rds, sds; --mode capture or proxy; -o yaml or json")
        raise typer.Exit(2)
    snapshot = MeshSnapshot(with_gateway_api(load_or_exit(filename, show_warnings=False).resources))
    resources = generate(snapshot, proxy_for(snapshot, proxy, mode)).to_dict(types)
    if output == "json":
        out.print(json.dumps(resources, indent=2), markup=False)
    else:
        out.print(yaml.safe_dump(resources, sort_keys=False), markup=False, end="")


def version(
    control_plane: Annotated[
        str | None,
        typer.Option(
            "--control-plane", help="Control plane host, host:port or URL (default $PLAIT_CONTROL_PLANE or localhost)."
        ),
    ] = None,
) -> None:
    """Print the versions of this client, the control plane (if one answers) and Envoy."""
    out.print(f"client version: {__version__}")
    try:
        remote = Http(control_plane_url(control_plane), timeout=3).get("/version")
        out.print(f"control plane version: {remote['plait']}")
    except ClientError:
        out.print("control plane version: none running at " + control_plane_url(control_plane))
    try:
        text = subprocess.run([find_envoy(), "--version"], capture_output=True, text=True, timeout=30).stdout
        out.print(f"envoy version: {text.split('version:')[-1].strip()}")
    except (FileNotFoundError, subprocess.SubprocessError) as exc:
        out.print(f"envoy version: not available ({exc})")


def register(app: typer.Typer) -> None:
    """Add ``plait validate``, ``plait translate`` and ``plait version`` to the CLI."""
    app.command()(validate)
    app.command()(translate)
    app.command()(version)
