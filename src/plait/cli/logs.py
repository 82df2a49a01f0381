"""``plait logs POD [-c CONTAINER] [-f] [--tail N]``: a pod's log, as ``kubectl logs``.

The local mesh's pods (`plait.runtime.podlogs`: ``istio-proxy`` is the agent's and Envoy's lines,
with the access log when ``meshConfig.accessLogFile`` is ``/dev/stdout``); on Kubernetes
(``--kubeconfig``, or ``$KUBECONFIG`` when no local mesh runs here) the API server's ``pods/log``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from plait.cli.console import err, out
from plait.cli.local import StateDir
from plait.runtime import podlogs
from plait.runtime.local import State

Kubeconfig = Annotated[
    str | None,
    typer.Option("--kubeconfig", help="Read the pod's log from this Kubernetes cluster (default: the local mesh's)."),
]


def _print(line: str) -> None:
    out.print(line, markup=False, highlight=False)


def logs(
    pod: Annotated[str, typer.Argument(help="The pod (plait status lists the local mesh's).")],
    container: Annotated[
        str | None,
        typer.Option("-c", "--container", help="istio-proxy (the sidecar: agent, Envoy, access log) or the app's."),
    ] = None,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing lines as they are written.")] = False,
    namespace: Annotated[str, typer.Option("-n", "--namespace", help="The pod's namespace.")] = "default",
    tail: Annotated[int, typer.Option("--tail", help="Only the last N lines (-1: all).")] = -1,
    state_dir: StateDir = Path(".plait"),
    kubeconfig: Kubeconfig = None,
) -> None:
    """Print a pod's log, as kubectl logs: the application's by default, the proxy's with -c istio-proxy."""
    state = None if kubeconfig else State.load(state_dir)
    if state is None and (kubeconfig or os.environ.get("KUBECONFIG")):
        asyncio.run(_kubernetes_logs(kubeconfig, pod, namespace, container, follow, tail))
        return
    if state is None:
        err.print(
            f"[red]error[/]: no local mesh runs from {state_dir} (start one with 'plait up'), and no --kubeconfig"
        )
        raise typer.Exit(1)
    found = next((p for p in state.pods if p.name == pod and p.namespace == namespace), None)
    if found is None:
        known = ", ".join(f"{p.namespace}/{p.name}" for p in state.pods)
        err.print(f"[red]error[/]: pod {namespace}/{pod} not found in the local mesh; its pods: {known}")
        raise typer.Exit(1)
    try:
        chosen = podlogs.check_container(found, container)
    except podlogs.PodLogError as error:
        err.print(f"[red]error[/]: {error}")
        raise typer.Exit(1) from None
    path = Path(found.log)
    lines, end = podlogs.read(path, chosen, tail if tail >= 0 else None)
    for line in lines:
        _print(line)
    if follow:
        try:
            for line in podlogs.follow(path, chosen, end):
                _print(line)
        except KeyboardInterrupt:
            pass


async def _kubernetes_logs(
    kubeconfig: str | None, pod: str, namespace: str, container: str | None, follow: bool, tail: int
) -> None:
    """The pods/log subresource, as kubectl logs reads it (streamed with --follow)."""
    # imported here: the Kubernetes client takes a quarter of a second to import (see plait.controlplane.app)
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    from plait.sources.kube_objects import KubeConfigError
    from plait.sources.kubernetes import load_configuration

    try:
        configuration = await load_configuration(kubeconfig)
    except KubeConfigError as error:
        err.print(f"[red]error[/]: {error}")
        raise typer.Exit(1) from None
    options = {"follow": follow, "_preload_content": False}
    if container:
        options["container"] = container
    if tail >= 0:
        options["tail_lines"] = tail
    async with client.ApiClient(configuration) as api:
        try:
            response = await client.CoreV1Api(api).read_namespaced_pod_log(pod, namespace, **options)
        except ApiException as error:
            err.print(f"[red]error[/]: pods/log of {namespace}/{pod}: {error.status} {error.reason}: {error.body}")
            raise typer.Exit(1) from None
        async for line in response.content:
            _print(line.decode(errors="replace").rstrip("\n"))


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
