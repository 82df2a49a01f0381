"""``plait analyze``: Istio's analysis messages for a cluster and/or files (istioctl analyze).

A thin shell over `plait.analysis`: read the cluster (as the control plane's Kubernetes source
reads it, once) and the files, run the analyzers, keep the messages of the selected namespace,
print them as istioctl does, and exit as istioctl does (79 when a message is at least
--failure-threshold, 65 when a file is not YAML). ``register(app)`` adds the command.
"""

from __future__ import annotations

import asyncio
import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
import yaml

from plait.analysis import Level, Message, analyze, sorted_unique
from plait.analysis.inputs import Reading
from plait.api.loader import yaml_files
from plait.cli.console import err
from plait.inject.policy import IGNORED_NAMESPACES

EXIT_FOUND_ISSUES = 79  # istioctl's ExitAnalyzerFoundIssues
EXIT_DATA_ERROR = 65  # istioctl's ExitDataError: a file could not be parsed
DOCS = "https://istio.io/latest/docs/reference/config/analysis"


class Output(str, Enum):
    log = "log"
    json = "json"
    yaml = "yaml"


class Threshold(str, Enum):
    Info = "Info"
    Warning = "Warning"
    Error = "Error"


def _truth(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise typer.BadParameter(f"{value!r}: expected true or false", param_hint="--use-kube")


async def read_cluster(reading: Reading, kubeconfig: str | None) -> None:
    """List the cluster once, as the control plane's Kubernetes source does (every Istio kind in
    the version served, Services, Pods, Namespaces), leaving out the namespaces Istio never
    injects, as istioctl does."""
    from plait.sources.kube_objects import NAMESPACES, PODS  # the Kubernetes client: only when asked for
    from plait.sources.kubernetes import KubernetesSource, connect

    source = KubernetesSource(await connect(kubeconfig))
    following = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.wait_synced(), 60)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await source.api.close()
    keep = [r for r in source.resources.values() if r.namespace not in IGNORED_NAMESPACES]
    objects = [
        {**obj, "kind": watched.kind}
        for watched in (NAMESPACES, PODS)
        for obj in source.view.collections[watched.kind].objects.values()
        if ((obj.get("metadata") or {}).get("name") if watched is NAMESPACES else obj["metadata"].get("namespace"))
        not in IGNORED_NAMESPACES
    ]
    problems = [p for p in source.problems if p.namespace not in IGNORED_NAMESPACES]
    reading.add_cluster([r for r in keep if r.kind != "WorkloadEntry"], problems, objects)


def read_files(reading: Reading, names: list[str]) -> None:
    for name in names:
        path = Path(name)
        if not path.exists():
            err.print(f"[red]error[/]: {name}: no such file or directory")
            raise typer.Exit(1)
        for file in yaml_files(path):
            reading.add_text(file.read_text(encoding="utf-8"), str(file))


def selected(messages: list[Message], namespace: str | None, threshold: Level) -> list[Message]:
    """The messages istioctl prints: of the selected namespace (cluster-scoped objects are their own
    namespace), at least `threshold`, sorted, without duplicates."""
    kept = [
        m for m in messages if m.type.level.at_least(threshold) and (namespace is None or m.scope in ("", namespace))
    ]
    return sorted_unique(kept)


def render(messages: list[Message], output: Output) -> str:
    if output is Output.json:
        return json.dumps([m.as_dict() for m in messages], indent=2)
    if output is Output.yaml:
        return yaml.safe_dump([m.as_dict() for m in messages], sort_keys=False).rstrip()
    return "\n".join(str(m) for m in messages)


def analyze_command(
    files: Annotated[list[str] | None, typer.Argument(help="YAML files or directories (recursively).")] = None,
    file: Annotated[
        list[str] | None, typer.Option("--file", "-f", help="A YAML file or directory; repeatable.")
    ] = None,
    kubeconfig: Annotated[str | None, typer.Option(help="Kubeconfig of the cluster; default $KUBECONFIG.")] = None,
    use_kube: Annotated[
        str, typer.Option("--use-kube", "-k", help="Read the cluster too (true) or only the files (false).")
    ] = "true",
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Report on this namespace (default: default).")
    ] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Report on every namespace.")] = False,
    output: Annotated[Output, typer.Option("--output", "-o", help="log, json or yaml.")] = Output.log,
    failure_threshold: Annotated[
        Threshold, typer.Option(help="Exit with 79 when a message is at least this level.")
    ] = Threshold.Error,
    output_threshold: Annotated[
        Threshold, typer.Option(help="Print messages of at least this level.")
    ] = Threshold.Info,
) -> None:
    """Analyze Istio configuration and print Istio's analysis messages, as [bold]istioctl analyze[/]:
    config that is valid alone but wrong in the mesh (a VirtualService naming a missing subset, host
    or gateway; a Gateway selecting no pod; a namespace not labelled for injection…), with Istio's
    codes (IST0101 ReferencedResourceNotFound, …).

    Reads the cluster ($KUBECONFIG or --kubeconfig) unless --use-kube=false, and the files given,
    which take precedence over the cluster's objects of the same name. Exits with 79 when a message
    is at least --failure-threshold (Error), 65 when a file is not YAML.

    Example: [bold]plait analyze -A[/]    [bold]plait analyze --use-kube=false -f samples/bookinfo/networking/[/]
    """
    names = [*(files or ()), *(file or ())]
    with_cluster = _truth(use_kube)
    if not names and not with_cluster:
        err.print("[red]error[/]: nothing to analyze: give files, or let it read the cluster (--use-kube=true)")
        raise typer.Exit(64)
    reading = Reading()
    read_files(reading, names)
    if with_cluster:
        _read_cluster_or_exit(reading, kubeconfig)
    for problem in reading.unreadable:
        err.print(f"[red]error[/]: {problem}")
    chosen = None if all_namespaces else (namespace or ("default" if with_cluster else None))
    messages = selected(analyze(reading.inputs()), chosen, Level(output_threshold.value))
    target = "all namespaces" if chosen is None else f"namespace: {chosen}"
    if messages:
        typer.echo(render(messages, output))
    elif output is not Output.log:
        typer.echo(render([], output))
    else:
        err.print(f"\u2714 No validation issues found when analyzing {target}.")
    if any(m.type.level.at_least(Level(failure_threshold.value)) for m in messages):
        err.print(f"Error: Analyzers found issues when analyzing {target}.\nSee {DOCS} for more information.")
        raise typer.Exit(EXIT_FOUND_ISSUES)
    if reading.unreadable:
        raise typer.Exit(EXIT_DATA_ERROR)


def _read_cluster_or_exit(reading: Reading, kubeconfig: str | None) -> None:
    from plait.sources.kube_objects import KubeConfigError

    try:
        asyncio.run(read_cluster(reading, kubeconfig))
    except KubeConfigError as error:
        err.print(f"[red]error[/]: Kubernetes: {error}")
        raise typer.Exit(1) from None
    except TimeoutError:
        err.print("[red]error[/]: Kubernetes: the cluster could not be read within 60 s")
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.command(name="analyze")(analyze_command)
