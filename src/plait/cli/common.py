"""What several commands share: the ``-f`` option, loading config or exiting, and a workload's proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from plait.api import LoadResult, load_paths
from plait.cli.console import err, print_problems
from plait.model import MeshSnapshot, Proxy

FilesOption = Annotated[
    list[Path],
    typer.Option("-f", "--filename", help="A YAML file or a directory of them (read recursively). Repeatable."),
]


def load_or_exit(paths: list[Path], show_warnings: bool = True) -> LoadResult:
    """Load config; on any error print every problem and exit 1 (nothing is used)."""
    result = load_paths(paths)
    if result.errors:
        print_problems(result.problems)
        err.print(
            f"[red]{len(result.errors)} error(s)[/]; nothing from this input was used. Fix them and run the command again."
        )
        raise typer.Exit(1)
    if show_warnings:
        print_problems(result.warnings)
    return result


def proxy_for(snapshot: MeshSnapshot, workload: str, mode: str) -> Proxy:
    """The proxy of a WorkloadEntry (``name`` or ``namespace/name``); exit 1 naming the known ones if none."""
    we = snapshot.workload(workload)
    if we is None:
        names = ", ".join(f"{w.namespace}/{w.name}" for w in snapshot.workload_entries) or "none"
        err.print(f"[red]error[/]: no workload {workload!r} in the configuration; known WorkloadEntries: {names}")
        raise typer.Exit(1)
    return Proxy.from_workload_entry(we, mode=mode)  # type: ignore[arg-type]
