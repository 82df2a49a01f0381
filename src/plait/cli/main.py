"""Entry point: ``plait <command>``. Each command is a thin shell over the library."""

from __future__ import annotations

import os

# Agents and the local mesh start processes while gRPC threads run; gRPC's fork handlers would
# only log that they are skipped (we exec right after fork), so turn them off before gRPC loads.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import json  # noqa: E402
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
import yaml

from plait import __version__
from plait.api import LoadResult, load_paths
from plait.cli.console import err, out, print_problems  # noqa: F401 (commands import them from here)
from plait.model import MeshSnapshot, Proxy

app = typer.Typer(
    name="plait",
    help="plait: a service mesh. Istio's configuration API, Envoy's data plane, a Python control plane.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

FilesOption = Annotated[list[Path], typer.Option(
    "-f", "--filename", help="A YAML file or a directory of them (read recursively). Repeatable.")]


def load_or_exit(paths: list[Path], show_warnings: bool = True) -> LoadResult:
    """Load config; on any error print every problem and exit 1 (nothing is used)."""
    result = load_paths(paths)
    if result.errors:
        print_problems(result.problems)
        err.print(f"[red]{len(result.errors)} error(s)[/]; nothing from this input was used. Fix them and run the command again.")
        raise typer.Exit(1)
    if show_warnings:
        print_problems(result.warnings)
    return result


def proxy_for(snapshot: MeshSnapshot, workload: str, mode: str) -> Proxy:
    we = snapshot.workload(workload)
    if we is None:
        names = ", ".join(f"{w.namespace}/{w.name}" for w in snapshot.workload_entries) or "none"
        err.print(f"[red]error[/]: no workload {workload!r} in the configuration; known WorkloadEntries: {names}")
        raise typer.Exit(1)
    return Proxy.from_workload_entry(we, mode=mode)  # type: ignore[arg-type]


@app.command()
def validate(filename: FilesOption) -> None:
    """Check Istio configuration as strictly as Istio does.

    Every error names the file, the document, the object and the field, and says what was
    expected. Exit code 1 if anything is wrong (warnings alone do not fail).

    Example: [bold]plait validate -f samples/bookinfo/networking/virtual-service-reviews-80-20.yaml[/]
    """
    result = load_or_exit(filename)
    counts = Counter(r.kind for r in result.resources)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no objects"
    warn = f", {len(result.warnings)} warning(s)" if result.warnings else ""
    out.print(f"[green]valid[/]: {summary}{warn}")


@app.command()
def translate(
    filename: FilesOption,
    proxy: Annotated[str, typer.Option("--proxy", help="Workload (WorkloadEntry name or namespace/name) whose proxy to show.")],
    type_: Annotated[list[str], typer.Option("--type", "-t", help="cds, eds, lds, rds or sds (secrets, private keys redacted); repeatable. Default: cds, eds, lds, rds.")] = [],  # noqa: B006
    mode: Annotated[str, typer.Option(help="Sidecar mode: 'capture' (iptables) or 'proxy' (HTTP_PROXY).")] = "capture",
    output: Annotated[str, typer.Option("-o", "--output", help="yaml or json")] = "yaml",
) -> None:
    """Show the Envoy resources one proxy would receive, in Envoy's own form.

    A workload labelled istio=ingressgateway or istio=egressgateway is translated as a gateway.

    Example: [bold]plait translate -f mesh/ --proxy productpage-v1 --type rds[/]
    """
    from plait.xds.generator import generate

    types = type_ or ["cds", "eds", "lds", "rds"]
    unknown = [t for t in types if t not in ("cds", "eds", "lds", "rds", "sds")]
    if unknown or mode not in ("capture", "proxy") or output not in ("yaml", "json"):
        err.print("[red]error[/]: --type takes cds, eds, lds, rds, sds; --mode capture or proxy; -o yaml or json")
        raise typer.Exit(2)
    snapshot = MeshSnapshot(load_or_exit(filename, show_warnings=False).resources)
    resources = generate(snapshot, proxy_for(snapshot, proxy, mode)).to_dict(types)
    if output == "json":
        out.print(json.dumps(resources, indent=2), markup=False)
    else:
        out.print(yaml.safe_dump(resources, sort_keys=False), markup=False, end="")


@app.command()
def version(control_plane: Annotated[str | None, typer.Option(
        "--control-plane", help="Control plane host, host:port or URL (default $PLAIT_CONTROL_PLANE or localhost).")] = None,
) -> None:
    """Print the versions of this client, the control plane (if one answers) and Envoy."""
    import subprocess

    from plait.cli.client import ClientError, Http, control_plane_url
    from plait.xds.static import find_envoy

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


from plait.cli import agent as _agent, controlplane as _controlplane, explain as _explain, iptables as _iptables, local as _local, proxies as _proxies  # noqa: E402,I001

_explain.register(app)
_controlplane.register(app)
_agent.register(app)
_proxies.register(app)
_local.register(app)
_iptables.register(app)


def main() -> None:
    app()
