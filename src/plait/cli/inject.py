"""``plait kube-inject``: print manifests with sidecars injected, offline (istioctl kube-inject).

A thin shell over `plait.inject.kube_inject`: read the YAML documents (a file or ``-``), build
`InjectSettings` from the flags, write the injected documents, print the skipped workloads on
stderr. ``register(app)`` adds the command.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from plait.inject import InjectError, InjectSettings, kube_inject
from plait.inject.mesh_config import apply_mesh_config, mesh_config_from_text
from plait.inject.settings import ENVOY_LOG_LEVELS

HELP = "\n\n".join(
    [
        "Print Kubernetes manifests with the sidecar injected, as [bold]istioctl kube-inject[/] does: offline, "
        "from the same builder as the injection webhook.",
        (
            "Every Pod and every pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, "
            "Job, CronJob; also inside a List) gets the [bold]istio-init[/] init container ([bold]plait iptables[/]), "
            "the [bold]istio-proxy[/] container ([bold]plait agent[/], uid 1337), the istio-token and root-certificate "
            "volumes and [bold]sidecar.istio.io/status[/]. Namespace labels are not known offline, so every workload is "
            'injected unless it says [bold]sidecar.istio.io/inject: "false"[/], uses hostNetwork, or is in kube-system '
            "or kube-public; those are left as they are and named on stderr. Already-injected workloads are unchanged. "
            "Other objects pass through."
        ),
        "  [bold]plait kube-inject -f bookinfo.yaml | kubectl apply -f -[/]",
    ]
)


def _read_documents(path: Path) -> list[Any]:
    name = "stdin" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        return list(yaml.safe_load_all(text))
    except OSError as exc:
        raise _fail(f"{name}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise _fail(f"{name}: not valid YAML: {exc}") from None


def _with_mesh_config(settings: InjectSettings, path: Path) -> InjectSettings:
    try:
        text = path.read_text()
    except OSError as exc:
        raise _fail(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return apply_mesh_config(settings, mesh_config_from_text(text, str(path)), str(path))
    except InjectError as exc:
        raise _fail(str(exc)) from None


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def kube_inject_command(
    filename: Annotated[Path, typer.Option("-f", "--filename", help="Manifests to inject (YAML); '-' reads stdin.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.", show_default=False)
    ] = None,
    revision: Annotated[str, typer.Option(help="The control plane's revision ('' is 'default').")] = "",
    image: Annotated[
        str | None, typer.Option(help="The proxy image (istio-proxy and istio-init).", show_default=False)
    ] = None,
    control_plane: Annotated[
        str | None,
        typer.Option(
            help="Where sidecars reach xDS and the CA (TLS, HOST:PORT). Default: istiod.istio-system.svc:15012, "
            "or istiod-REVISION… with --revision.",
            show_default=False,
        ),
    ] = None,
    trust_domain: Annotated[
        str | None,
        typer.Option(
            help="The mesh's trust domain. Default: the mesh config's, else cluster.local.", show_default=False
        ),
    ] = None,
    cluster_id: Annotated[str, typer.Option(help="ISTIO_META_CLUSTER_ID of the sidecars.")] = "Kubernetes",
    log_level: Annotated[
        str, typer.Option(help="Envoy's log level (sidecar.istio.io/logLevel overrides it).")
    ] = "warning",
    hold_application: Annotated[
        bool,
        typer.Option(
            "--hold-application-until-proxy-starts",
            help="Start app containers only once the proxy is ready, in every pod (proxy.istio.io/config can say so "
            "per pod).",
        ),
    ] = False,
    mesh_config_file: Annotated[
        Path | None,
        typer.Option(
            "--meshConfigFile",
            "--mesh-config-file",
            help="Istio's MeshConfig (or the istio ConfigMap): trustDomain and defaultConfig's discoveryAddress, "
            "holdApplicationUntilProxyStarts, concurrency, terminationDrainDuration, proxyMetadata are used.",
            show_default=False,
        ),
    ] = None,
) -> None:
    if log_level not in ENVOY_LOG_LEVELS:
        raise typer.BadParameter(f"{log_level!r} is not one of {', '.join(ENVOY_LOG_LEVELS)}", param_hint="--log-level")
    settings = InjectSettings(
        revision=revision,
        cluster_id=cluster_id,
        log_level=log_level,
        control_plane=f"istiod-{revision}.istio-system.svc:15012" if revision else InjectSettings().control_plane,
    )
    if mesh_config_file is not None:
        settings = _with_mesh_config(settings, mesh_config_file)
    explicit = {
        "proxy_image": image,
        "trust_domain": trust_domain,
        "control_plane": control_plane,
        "hold_application_until_proxy_starts": hold_application or None,
    }
    settings = dataclasses.replace(settings, **{k: v for k, v in explicit.items() if v is not None})
    documents = _read_documents(filename)
    try:
        result = kube_inject(documents, settings)
    except InjectError as exc:
        raise _fail(f"{'stdin' if str(filename) == '-' else filename}: {exc}") from None
    for warning in result.warnings:
        typer.echo(warning, err=True)
    text = yaml.safe_dump_all(result.documents, sort_keys=False, width=1000)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


def register(app: typer.Typer) -> None:
    app.command(name="kube-inject", help=HELP)(kube_inject_command)
