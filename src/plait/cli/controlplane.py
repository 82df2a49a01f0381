"""Commands that run or talk to the control plane: control-plane, apply, delete, get, proxy-status."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

import typer
import yaml
from rich.table import Table

from plait import dashboard
from plait.api.common import parse_duration
from plait.api.errors import Problem
from plait.api.loader import yaml_files
from plait.api.resources import Resource
from plait.ca.authority import MAX_WORKLOAD_TTL, CaError
from plait.cli.console import err, out, print_problems
from plait.client import ClientError, Http, control_plane_url
from plait.controlplane.api import admin_token_path
from plait.controlplane.app import Settings, run
from plait.controlplane.injector import control_plane_address
from plait.controlplane.meshfile import mesh_config_update
from plait.inject.settings import InjectError, InjectSettings
from plait.sources.kube_objects import KubeConfigError

ControlPlane = Annotated[
    str | None,
    typer.Option(
        "--control-plane",
        help="Control plane host, host:port (HTTP API, default port 15014) or URL. "
        "Default: $PLAIT_CONTROL_PLANE or localhost.",
    ),
]
Files = Annotated[
    list[str],
    typer.Option("-f", "--filename", help="YAML file, directory (recursive) or '-' for standard input. Repeatable."),
]


def fail(exc: ClientError, verb: str = "applied") -> None:
    if exc.problems:
        print_problems([Problem(**p) for p in exc.problems])
        err.print(
            f"[red]{sum(p['severity'] == 'error' for p in exc.problems)} error(s)[/]; nothing was {verb}. "
            "Fix them and run the command again."
        )
    else:
        err.print(f"[red]error[/]: {exc}")
    raise typer.Exit(1)


def read_inputs(filenames: list[str]) -> list[tuple[str, str]]:
    """(name, text) for every YAML input; '-' reads standard input."""
    inputs = []
    for name in filenames:
        if name == "-":
            inputs.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(name)
        if not path.exists():
            err.print(f"[red]error[/]: {name}: no such file or directory")
            raise typer.Exit(1)
        inputs += [(str(f), f.read_text()) for f in yaml_files(path)]
    return inputs


def _joined(filenames: list[str]) -> tuple[str, str]:
    """Every input as one multi-document request, so it is applied all together or not at all."""
    inputs = read_inputs(filenames)
    name = inputs[0][0] if len(inputs) == 1 else ", ".join(n for n, _ in inputs)
    return name, "\n---\n".join(text for _, text in inputs)


class XdsAuth(str, Enum):
    permissive = "permissive"
    strict = "strict"


def control_plane(
    config_dir: Annotated[
        Path, typer.Option(help="Directory of Istio YAML; watched for edits. Not used with --kubernetes.")
    ] = Path("mesh"),
    kubernetes: Annotated[
        bool,
        typer.Option(
            "--kubernetes",
            help="Read the mesh from a Kubernetes cluster instead of --config-dir: watch its Services, "
            "EndpointSlices, Pods, Namespaces and Istio CRDs (kubectl apply changes the mesh). "
            "The cluster is the one --kubeconfig names, else $KUBECONFIG, else the pod's own "
            "service account when run in the cluster, else ~/.kube/config.",
        ),
    ] = False,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Kubeconfig file of the cluster to read (implies --kubernetes).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (use 0.0.0.0 to serve other hosts).")] = "127.0.0.1",
    xds_port: Annotated[
        int, typer.Option(help="Plaintext ADS (gRPC) port for Envoy, unauthenticated; none with --xds-auth strict.")
    ] = 15010,
    http_port: Annotated[int, typer.Option(help="HTTP API, debug and /metrics port.")] = 15014,
    dashboard_port: Annotated[
        int,
        typer.Option(
            help="The mesh dashboard's port (Kiali's 20001; 0: none), bound on --host; open to the host itself, "
            "others need the admin token. 'plait dashboard' opens it."
        ),
    ] = 0,
    dashboard_prometheus: Annotated[
        str | None, typer.Option(help="The Prometheus the dashboard reads metrics from, e.g. http://127.0.0.1:9090.")
    ] = None,
    dashboard_targets: Annotated[
        str | None,
        typer.Option(
            help="Without --dashboard-prometheus: the proxies whose /stats/prometheus the dashboard reads itself "
            "(every 5 s), as Prometheus finds them: a file_sd JSON file, or an http_sd URL (e.g. "
            "http://127.0.0.1:15014/api/v1/prometheus/targets, this control plane's own on Kubernetes)."
        ),
    ] = None,
    zipkin_port: Annotated[
        int,
        typer.Option(
            help="The trace collector's port (Zipkin v2 and OTLP/HTTP in, Zipkin's read API out); 0: no collector."
        ),
    ] = 9411,
    debounce: Annotated[str, typer.Option(help="Coalesce changes for this long before pushing.")] = "100ms",
    scoping: Annotated[
        bool,
        typer.Option(
            envvar="PLAIT_SCOPING",
            help="Automatic scoping: a sidecar on delta xDS (the agent's default) is sent only the clusters and "
            "virtual hosts of the services its workload serves, calls, is allowed to call (AuthorizationPolicy) or "
            "declares in a Sidecar; a first call to another service fetches them on demand (VHDS and ODCDS: one "
            "round trip to the control plane). Listeners and policies stay whole. --no-scoping (or PLAIT_SCOPING=false, "
            "e.g. in components.pilot.k8s.env) sends every proxy every cluster, as Istio without Sidecar resources.",
        ),
    ] = True,
    state_dir: Annotated[
        Path,
        typer.Option(
            help="Where the control plane keeps its state. The CA lives in DIR/ca/ (mode 0700, keys 0600): "
            "its root, its key unless --cacerts is given, and the key that signs pod tokens. Agents trust "
            "DIR/ca/root-cert.pem."
        ),
    ] = Path(".plait/control-plane"),
    ca_port: Annotated[
        int,
        typer.Option(
            help="TLS port (gRPC), istiod's 15012: the CA (Istio's IstioCertificateService; agents send a CSR and "
            "their pod token and get their workload certificate) and xDS authenticated by pod token."
        ),
    ] = 15012,
    cacerts: Annotated[
        Path | None,
        typer.Option(
            help="Istio's plug-in CA directory (the files of the cacerts secret: ca-cert.pem, ca-key.pem, "
            "root-cert.pem, cert-chain.pem), to sign with your own intermediate under your own root. "
            "Default: a self-signed root generated in --state-dir."
        ),
    ] = None,
    workload_cert_ttl: Annotated[
        str,
        typer.Option(
            help="Lifetime of workload certificates when the agent asks for none, e.g. 24h or 10m (at most "
            "2160h, Istio's 90 days). Agents renew at half life."
        ),
    ] = "24h",
    xds_auth: Annotated[
        XdsAuth,
        typer.Option(
            help="xDS is always served over TLS on --ca-port, where a stream needs gRPC metadata "
            "'authorization: Bearer <pod token>' whose namespace and service account match the node's "
            "(NAMESPACE / SERVICE_ACCOUNT metadata). permissive: plaintext xDS on --xds-port too, open to "
            "any Envoy (istiod's 15010). strict: no plaintext port; every proxy is authenticated and "
            "its xDS encrypted."
        ),
    ] = XdsAuth.permissive,
    proxy_image: Annotated[
        str | None,
        typer.Option(
            help="On Kubernetes: the image of the sidecars the injector adds (istio-proxy, and istio-init "
            "unless --init-image). Default: plait/proxy:<plait's version>."
        ),
    ] = None,
    init_image: Annotated[str | None, typer.Option(help="On Kubernetes: the istio-init image.")] = None,
    revision: Annotated[
        str,
        typer.Option(
            help="On Kubernetes: the revision this control plane serves (Istio's istio.io/rev). The injector "
            "takes pods of namespaces labelled istio.io/rev=REVISION (or, for the default revision, "
            "istio-injection=enabled) and points them at istiod-REVISION.<namespace>.svc:15012."
        ),
    ] = "",
    webhook_port: Annotated[
        int,
        typer.Option(
            help="On Kubernetes: TLS port of the admission webhooks (/validate, /inject), istiod's 15017 "
            "(Service istiod port 443)."
        ),
    ] = 15017,
    mesh_config: Annotated[
        Path | None,
        typer.Option(
            help="On Kubernetes: Istio's MeshConfig (plain MeshConfig YAML, or a ConfigMap whose data.mesh holds "
            "it), read at start and followed (a changed file is in force within seconds; a wrong one is logged "
            "and the last good one kept), as istiod's --meshConfig; plait install mounts ConfigMap istio[-REV] at "
            "/etc/istio/config/mesh. Used: defaultConfig (the injector's proxy defaults: discoveryAddress, "
            "proxyMetadata, holdApplicationUntilProxyStarts, …) and the access log settings (accessLogFile, "
            "accessLogEncoding, accessLogFormat). Locally, put ConfigMap istio in --config-dir instead."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the control plane (plait's istiod): serve xDS to Envoys from a directory of Istio config,
    and sign workload certificates.

    Envoys connect over ADS (state-of-the-world or delta) on --xds-port (plaintext) or, with their pod
    token, over TLS on --ca-port; the CLI and agents use the HTTP API on --http-port. Config changes (plait apply,
    or edits in --config-dir) are pushed to the proxies they concern within the debounce interval. Agents get SPIFFE certificates
    (spiffe://cluster.local/ns/NS/sa/SA) from the CA on --ca-port, proving who they are with a pod
    token; the CA signs only the token's own identity.

    With --kubernetes (or --kubeconfig), the mesh is read from a cluster instead: its Services,
    EndpointSlices, Pods and Istio objects, changed with kubectl. An invalid Istio object there is left
    out (its last good version stays in force) and reported in the log and by plait get.

    Example: [bold]plait control-plane --config-dir mesh/[/]  then  [bold]plait apply -f reviews-80-20.yaml[/]

    Example: [bold]plait control-plane --kubeconfig ~/.kube/config[/]  then  [bold]kubectl apply -f reviews-80-20.yaml[/]
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cert_ttl = parse_duration(workload_cert_ttl)
    except ValueError as exc:
        err.print(f"[red]error[/]: --workload-cert-ttl: {exc}")
        raise typer.Exit(2) from None
    if not 60 <= cert_ttl <= MAX_WORKLOAD_TTL:
        err.print(f"[red]error[/]: --workload-cert-ttl {workload_cert_ttl} must be between 1m and 2160h")
        raise typer.Exit(2)
    inject = injector_settings(proxy_image, init_image, revision)
    if mesh_config is not None:
        check_mesh_config(mesh_config, inject)
    settings = Settings(
        config_dir=config_dir,
        host=host,
        xds_port=xds_port,
        http_port=http_port,
        zipkin_port=zipkin_port or None,
        debounce=parse_duration(debounce),
        scoping=scoping,
        state_dir=state_dir,
        ca_port=ca_port,
        cacerts_dir=cacerts,
        workload_cert_ttl=int(cert_ttl),
        xds_auth=xds_auth.value,
        kubernetes=kubernetes or kubeconfig is not None,
        kubeconfig=kubeconfig,
        inject=inject,
        webhook_port=webhook_port,
        mesh_config=mesh_config,
        gateway_manifests=deployed_gateway(inject) if (kubernetes or kubeconfig is not None) else None,
    )
    try:
        asyncio.run(_serve(settings, dashboard_port, dashboard_prometheus, dashboard_targets))
    except CaError as exc:
        err.print(f"[red]error[/]: certificate authority: {exc}")
        raise typer.Exit(1) from None
    except KubeConfigError as exc:
        err.print(f"[red]error[/]: Kubernetes: {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(f"[red]error[/]: cannot start the control plane: {exc}")
        raise typer.Exit(1) from None


async def _serve(settings: Settings, dashboard_port: int, prometheus: str | None, targets: str | None) -> None:
    """The control plane, and beside it in this process the dashboard (reading the control plane's API)."""
    if not dashboard_port:
        return await run(settings)
    stop = asyncio.Event()
    api_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    backends = dashboard.Backends(
        api=f"http://{api_host}:{settings.http_port}",
        prometheus=prometheus.rstrip("/") if prometheus else None,
        zipkin=f"http://{api_host}:{settings.zipkin_port}" if settings.zipkin_port else None,
        targets=targets,
        token_file=admin_token_path(settings.state_dir),
    )
    plane = asyncio.create_task(run(settings, stop=stop))
    board = asyncio.create_task(dashboard.serve(backends, settings.host, dashboard_port, stop))
    done, _ = await asyncio.wait((plane, board), return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    await asyncio.gather(plane, board, return_exceptions=True)
    for task in done:
        task.result()  # a failure to start (a port in use) is raised here


def check_mesh_config(path: Path, inject: InjectSettings) -> None:
    """--mesh-config must be readable and valid at start (it is then followed: `controlplane.meshfile`);
    exits saying what is wrong with the file."""
    try:
        mesh_config_update(path.read_text(), str(path), inject)
    except OSError as exc:
        err.print(f"[red]error[/]: --mesh-config {path}: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    except InjectError as exc:
        err.print(f"[red]error[/]: --mesh-config: {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def deployed_gateway(inject: InjectSettings) -> Callable[[Resource], list[dict]]:
    """What a Gateway API Gateway of class istio gets on Kubernetes: its `<gateway>-istio` proxy, with this
    control plane's image, namespace and revision (`plait.install.gatewayapi`)."""
    from plait.install.gatewayapi import gateway_manifests  # the installer: only on Kubernetes
    from plait.install.settings import InstallSettings

    namespace = os.environ.get("POD_NAMESPACE") or "istio-system"
    settings = InstallSettings(namespace=namespace, image=inject.proxy_image, revision=inject.revision)
    return lambda gateway: gateway_manifests(settings, gateway)


def injector_settings(proxy_image: str | None, init_image: str | None, revision: str) -> InjectSettings:
    """The sidecar injector's settings from the flags; the control plane's address is Istio's Service
    ``istiod[-REVISION]`` in the control plane's namespace ($POD_NAMESPACE, else istio-system)."""
    return InjectSettings(
        **({"proxy_image": proxy_image} if proxy_image else {}),
        init_image=init_image,
        revision=revision,
        control_plane=control_plane_address(revision, os.environ.get("POD_NAMESPACE") or "istio-system"),
    )


def _summarise(result: dict, verb: str) -> None:
    print_problems([Problem(**p) for p in result.get("problems", [])])
    for label in ("created", "updated", "deleted", "unchanged"):
        for ref in result.get(label, []):
            out.print(f"{ref} {label}")
    if not any(result.get(k) for k in ("created", "updated", "deleted", "unchanged")):
        out.print(f"nothing to {verb}")


def apply(
    filename: Files,
    control_plane: ControlPlane = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate against the live config; change nothing.")
    ] = False,
) -> None:
    """Create or update Istio config in the running mesh: every document, or none.

    The input is validated with the rest of the mesh's config first; on any error nothing changes
    and the errors name file, document, object and field. Applied objects are stored in the
    control plane's config directory, so a restart keeps them.

    Example: [bold]plait apply -f samples/bookinfo/networking/virtual-service-reviews-80-20.yaml[/]
    """
    name, text = _joined(filename)
    query = "?" + urlencode({"filename": name, **({"dryRun": "true"} if dry_run else {})})
    try:
        result = Http(control_plane_url(control_plane)).request("POST", "/api/v1/config" + query, text.encode())
    except ClientError as exc:
        fail(exc)
    _summarise(result, "apply")


def delete(filename: Files, control_plane: ControlPlane = None) -> None:
    """Delete the objects the YAML names (kind, namespace, name) from the running mesh: all, or none.

    Example: [bold]plait delete -f virtual-service-reviews-80-20.yaml[/]
    """
    name, text = _joined(filename)
    try:
        result = Http(control_plane_url(control_plane)).request(
            "POST", "/api/v1/config/delete?" + urlencode({"filename": name}), text.encode()
        )
    except ClientError as exc:
        fail(exc, "deleted")
    _summarise(result, "delete")


KIND_NAMES = {
    "vs": "VirtualService",
    "dr": "DestinationRule",
    "se": "ServiceEntry",
    "gw": "Gateway",
    "we": "WorkloadEntry",
    "svc": "Service",
    "gtw": "Gateway",  # the Gateway API's short name; `gateway` lists both kinds, as they share the name
}


def kind_name(text: str) -> str:
    """kubectl habits: ``vs``, ``virtualservice`` and ``virtualservices`` all mean VirtualService."""
    lowered = text.lower()
    if lowered in KIND_NAMES:
        return KIND_NAMES[lowered]
    if lowered.endswith("ies"):
        return lowered[:-3] + "y"
    return lowered.removesuffix("s")


def get(
    kind: Annotated[
        str,
        typer.Argument(
            help="VirtualService, DestinationRule, ServiceEntry, Gateway, Sidecar, WorkloadEntry, Service, HTTPRoute, "
            "GRPCRoute, TCPRoute, TLSRoute, "
            "GatewayClass or ReferenceGrant (any case)"
        ),
    ],
    name: Annotated[str | None, typer.Argument(help="Object name; all when omitted")] = None,
    namespace: Annotated[str | None, typer.Option("-n", "--namespace", help="Namespace; all when omitted")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table, yaml or json")] = "table",
    control_plane: ControlPlane = None,
) -> None:
    """List stored Istio config, as kubectl get does.

    Example: [bold]plait get virtualservice reviews -o yaml[/]
    """
    query = "?" + urlencode(
        {k: v for k, v in (("kind", kind_name(kind)), ("name", name), ("namespace", namespace)) if v}
    )
    try:
        items = Http(control_plane_url(control_plane)).get("/api/v1/config" + query)["items"]
    except ClientError as exc:
        fail(exc)
    if name and not items:
        err.print(f"[red]error[/]: {kind} {namespace or '*'}/{name} not found")
        raise typer.Exit(1)
    if output == "json":
        out.print(json.dumps(items if not name else items[0], indent=2), markup=False)
    elif output == "yaml":
        out.print(yaml.safe_dump_all(items, sort_keys=False), markup=False, end="")
    elif not items:
        out.print("No resources found")
    else:
        with_status = any("status" in item for item in items)
        table = Table("NAMESPACE", "NAME", "KIND", *(["STATUS"] if with_status else []), box=None, header_style="bold")
        for item in items:
            cells = [item["metadata"]["namespace"], item["metadata"]["name"], item["kind"]]
            table.add_row(*cells, *([status_summary(item.get("status", {}))] if with_status else []))
        out.print(table)


def status_summary(status: dict) -> str:
    """Gateway API conditions in a line: ``Accepted Programmed``, a false one with its reason
    (``ResolvedRefs=False(RefNotPermitted)``), a route's per parent."""

    def conditions(conds: list[dict]) -> str:
        return " ".join(c["type"] if c["status"] == "True" else f"{c['type']}=False({c['reason']})" for c in conds)

    if "parents" in status:
        return "; ".join(f"{p['parentRef']['name']}: {conditions(p['conditions'])}" for p in status["parents"])
    return conditions(status.get("conditions", []))


def register(app: typer.Typer) -> None:
    app.command("control-plane")(control_plane)
    app.command()(apply)
    app.command()(delete)
    app.command()(get)
