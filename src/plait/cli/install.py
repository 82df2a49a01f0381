"""``plait manifest generate`` and ``plait install``: plait's control plane and ingress gateway in a cluster.

Thin shells over `plait.install`: the settings come from flags, the objects from the pure
`manifests`, and `install` applies them with kubectl, printing istioctl's progress lines.
"""

from __future__ import annotations

from typing import Annotated

import typer
import yaml

from plait import __version__
from plait.install.apply import InstallError, Kubectl, install
from plait.install.bookinfo import deploy_bookinfo, how_to_open
from plait.install.manifests import InstallSettings, manifest

Namespace = Annotated[str, typer.Option(help="The control plane's namespace.")]
Image = Annotated[str, typer.Option(help="The image of the control plane, the gateway and the proxies.")]
Gateway = Annotated[bool, typer.Option("--ingress-gateway/--no-ingress-gateway", help="Install istio-ingressgateway.")]
Injector = Annotated[
    bool,
    typer.Option(
        "--sidecar-injector/--no-sidecar-injector",
        help="Install the sidecar injector's MutatingWebhookConfiguration (pods in istio-injection=enabled "
        "namespaces get a sidecar).",
    ),
]
DEFAULT_IMAGE = f"plait/proxy:{__version__}"


def _settings(namespace: str, image: str, ingress_gateway: bool, sidecar_injector: bool) -> InstallSettings:
    return InstallSettings(
        namespace=namespace, image=image, ingress_gateway=ingress_gateway, sidecar_injector=sidecar_injector
    )


def manifest_generate(
    namespace: Namespace = "istio-system",
    image: Image = DEFAULT_IMAGE,
    ingress_gateway: Gateway = True,
    sidecar_injector: Injector = True,
) -> None:
    """Print the objects `plait install` applies (YAML), as [bold]istioctl manifest generate[/]."""
    objects = manifest(_settings(namespace, image, ingress_gateway, sidecar_injector))
    typer.echo(yaml.safe_dump_all(objects, sort_keys=False, width=1000), nl=False)


def install_command(
    yes: Annotated[bool, typer.Option("-y", "--skip-confirmation", help="Do not ask before installing.")] = False,
    kubeconfig: Annotated[
        str | None, typer.Option(help="The cluster's kubeconfig (default: kubectl's: $KUBECONFIG, ~/.kube/config).")
    ] = None,
    namespace: Namespace = "istio-system",
    image: Image = DEFAULT_IMAGE,
    ingress_gateway: Gateway = True,
    sidecar_injector: Injector = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each part to become ready.")] = 300,
) -> None:
    """Install plait's control plane (istiod) and ingress gateway into the cluster and wait until they are ready,
    as [bold]istioctl install[/]. Istio's CRDs must be there already."""
    if not yes and not typer.confirm(f"This will install plait into namespace {namespace!r} of the cluster. Proceed?"):
        raise typer.Exit(1)
    settings = _settings(namespace, image, ingress_gateway, sidecar_injector)
    try:
        install(Kubectl(kubeconfig=kubeconfig), settings, lambda line: typer.echo(f"✔ {line}"), timeout=timeout)
    except InstallError as exc:
        typer.echo(f"✘ {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("✔ Installation complete")


def demo_bookinfo_kube(kubeconfig: str | None, namespace: str, image: str, hub: str, tag: str) -> None:
    """Istio's getting-started on the cluster kubectl names (`plait demo bookinfo --kube`)."""
    settings = InstallSettings(image=image)
    try:
        deploy_bookinfo(Kubectl(kubeconfig=kubeconfig), settings, typer.echo, namespace=namespace, hub=hub, tag=tag)
    except InstallError as exc:
        typer.echo(f"✘ {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("Open the product page through the ingress gateway (no load balancer here):")
    typer.echo(how_to_open(settings))


def register(app: typer.Typer) -> None:
    manifest_app = typer.Typer(help="Kubernetes manifests of plait's control plane.", no_args_is_help=True)
    manifest_app.command(name="generate")(manifest_generate)
    app.add_typer(manifest_app, name="manifest")
    app.command(name="install")(install_command)
