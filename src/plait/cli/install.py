"""``plait install``, ``manifest generate``, ``profile list|dump``, ``uninstall``, ``verify-install`` and
``check``: plait in a Kubernetes cluster, driven by Istio's IstioOperator as istioctl is.

Thin shells over `plait.install`: the settings come from `-f` files and `--set` flags through the
pure `operator.resolve`, the objects from the pure `manifests`, the verdicts from the pure `checks`;
`apply` and `facts` talk to the cluster with kubectl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from plait.install.apply import InstallError, Kubectl, install, legacy_apis, uninstall
from plait.install.bookinfo import deploy_bookinfo, how_to_open
from plait.install.checks import GROUP_TITLES, check_results, pre_check_results, verify_results
from plait.install.facts import gather_facts, gather_verify_facts
from plait.install.manifests import components, manifest
from plait.install.operator import OperatorError, Resolved, resolve
from plait.install.profiles import PROFILES
from plait.install.settings import DEFAULT_IMAGE, InstallSettings

Files = Annotated[
    list[Path] | None,
    typer.Option(
        "-f",
        "--filename",
        help="An IstioOperator file (install.istio.io/v1alpha1) written for Istio; repeatable, merged in order "
        "over the profile.",
    ),
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override one field, istioctl's path syntax: --set profile=demo, --set revision=canary, "
        "--set values.global.istioNamespace=mesh, --set components.ingressGateways[0].k8s.service.type=NodePort, "
        "--set components.ingressGateways[name:istio-ingressgateway].enabled=false.",
    ),
]
Revision = Annotated[
    str | None,
    typer.Option(help="Install this revision beside others (same as --set revision=R): istiod-R, istio.io/rev=R."),
]
Image = Annotated[
    str | None,
    typer.Option(
        help=f"The image of the control plane, gateways and proxies (default: hub/proxy:tag, {DEFAULT_IMAGE})."
    ),
]
Injector = Annotated[
    bool,
    typer.Option(
        "--sidecar-injector/--no-sidecar-injector",
        help="Install the sidecar injector's MutatingWebhookConfiguration (pods in istio-injection=enabled "
        "namespaces get a sidecar).",
    ),
]
Kubeconfig = Annotated[
    str | None, typer.Option(help="The cluster's kubeconfig (default: kubectl's: $KUBECONFIG, ~/.kube/config).")
]
Yes = Annotated[bool, typer.Option("-y", "--skip-confirmation", help="Do not ask before changing the cluster.")]


def _resolve(files: list[Path] | None, sets: list[str] | None, revision: str | None, image: str | None) -> Resolved:
    """The merged input; warnings go to stderr as istioctl's ``!`` lines; bad input exits 2 with the reason."""
    try:
        texts = [(str(path), path.read_text()) for path in files or []]
    except OSError as exc:
        typer.echo(f"✘ {exc}", err=True)
        raise typer.Exit(2) from None
    flags = [*(sets or []), *([f"revision={revision}"] if revision is not None else [])]
    try:
        resolved = resolve(texts, flags, image=image)
    except OperatorError as exc:
        typer.echo(f"✘ {exc}", err=True)
        raise typer.Exit(2) from None
    for warning in resolved.warnings:
        typer.echo(f"! {warning}", err=True)
    return resolved


def _settings(resolved: Resolved, sidecar_injector: bool, legacy: bool) -> InstallSettings:
    return InstallSettings(
        **{**resolved.settings.__dict__, "sidecar_injector": sidecar_injector, "legacy_apis": legacy}
    )


def manifest_generate(
    filename: Files = None,
    set_: Sets = None,
    revision: Revision = None,
    image: Image = None,
    sidecar_injector: Injector = True,
    legacy_apis_: Annotated[
        bool,
        typer.Option(
            "--legacy-apis",
            help="Write what install writes for Kubernetes before 1.25 (1.20 here): autoscaling/v2beta2, "
            "policy/v1beta1, CRDs without CEL rules. install asks the cluster instead.",
        ),
    ] = False,
) -> None:
    """Print the objects [bold]plait install[/] applies with the same flags (YAML), as [bold]istioctl manifest generate[/].

    Example: [bold]plait manifest generate --set profile=demo --revision canary > plait.yaml[/]"""
    settings = _settings(_resolve(filename, set_, revision, image), sidecar_injector, legacy_apis_)
    typer.echo(yaml.safe_dump_all(manifest(settings), sort_keys=False, width=1000), nl=False)


def install_command(
    filename: Files = None,
    set_: Sets = None,
    revision: Revision = None,
    yes: Yes = False,
    kubeconfig: Kubeconfig = None,
    image: Image = None,
    sidecar_injector: Injector = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each part to become ready.")] = 300,
) -> None:
    """Install plait (Istio's CRDs, istiod[-REV], gateways) into the cluster and wait until it is ready,
    as [bold]istioctl install[/].

    The input is Istio's IstioOperator: a profile (default, demo, minimal, remote, empty; see plait
    profile list), then the -f files in order, then the --set flags. Fields plait does not implement
    are named on stderr and ignored.

    Example: [bold]plait install --set profile=demo -y[/]

    Example (a canary beside the default revision): [bold]plait install --revision canary -y[/]"""
    resolved = _resolve(filename, set_, revision, image)
    kubectl = Kubectl(kubeconfig=kubeconfig)
    parts = ", ".join(name for name, _ in components(resolved.settings))
    revision_note = f" revision {resolved.settings.revision!r}" if resolved.settings.revision else ""
    question = (
        f'This will install the plait "{resolved.spec["profile"]}" profile{revision_note} '
        f"(with components: {parts}) into the cluster. Proceed?"
    )
    if not yes and not typer.confirm(question):
        raise typer.Exit(1)
    try:
        settings = _settings(resolved, sidecar_injector, legacy_apis(kubectl))
        install(kubectl, settings, lambda line: typer.echo(f"✔ {line}"), timeout=timeout)
    except InstallError as exc:
        typer.echo(f"✘ {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("✔ Installation complete")


def uninstall_command(
    revision: Annotated[str | None, typer.Option(help="Remove this revision's control plane and gateways.")] = None,
    purge: Annotated[
        bool, typer.Option("--purge", help="Remove every revision and Istio's CRDs (and so all Istio config!).")
    ] = False,
    yes: Yes = False,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Remove what [bold]plait install[/] made, found by its labels (app.kubernetes.io/managed-by=plait,
    istio.io/rev), and nothing else; namespaces stay. Without --revision: the default revision.

    Example: [bold]plait uninstall --revision 1-9-1 -y[/]   [bold]plait uninstall --purge -y[/]"""
    if purge and revision is not None:
        typer.echo("✘ --purge removes every revision; give --revision or --purge, not both", err=True)
        raise typer.Exit(2)
    what = "All plait resources and Istio's CRDs" if purge else f"Revision {revision or 'default'} of plait"
    if not yes and not typer.confirm(f"{what} will be removed from the cluster. Proceed?"):
        raise typer.Exit(1)
    try:
        removed = uninstall(Kubectl(kubeconfig=kubeconfig), revision or "", purge, lambda line: typer.echo(f"  {line}"))
    except InstallError as exc:
        typer.echo(f"✘ {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("✔ Uninstall complete" if removed else "✔ Nothing to remove: no object of that install was found")


def profile_list() -> None:
    """The installation profiles, as [bold]istioctl profile list[/]."""
    typer.echo("plait configuration profiles:")
    for name in PROFILES:
        typer.echo(f"    {name}")


def profile_dump(
    profile: Annotated[
        str | None, typer.Argument(help="The profile (default: the one -f/--set choose, else default).")
    ] = None,
    config_path: Annotated[
        str | None, typer.Option("--config-path", "-p", help="Print only this part, e.g. components.ingressGateways.")
    ] = None,
    filename: Files = None,
    set_: Sets = None,
) -> None:
    """Print a profile's IstioOperator (merged with -f files and --set flags), as [bold]istioctl profile dump[/].

    Example: [bold]plait profile dump demo --config-path components.egressGateways[/]"""
    if profile is not None and profile not in PROFILES:
        typer.echo(f"✘ unknown profile {profile!r}; one of {', '.join(PROFILES)}", err=True)
        raise typer.Exit(2)
    spec = _resolve(filename, [*([f"profile={profile}"] if profile else []), *(set_ or [])], None, None).spec
    document = {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "spec": spec}
    node = spec
    for key in (config_path or "").split(".") if config_path else []:
        if not isinstance(node, dict) or key not in node:
            typer.echo(f"✘ --config-path {config_path}: {key!r} is not in the profile", err=True)
            raise typer.Exit(2)
        node = node[key]
    typer.echo(yaml.safe_dump(node if config_path else document, sort_keys=False, width=1000), nl=False)


def _print_groups(results, title_of) -> bool:
    ok = True
    group = None
    for result in results:
        if result.group != group:
            group = result.group
            typer.echo(f"\n{title_of(group)}\n{'-' * len(title_of(group))}")
        typer.echo(f"{'√' if result.ok else ('‼' if result.warning else '×')} {result.name}")
        if not result.ok:
            typer.echo(f"    {result.detail}")
            typer.echo(f"    see: {result.hint}")
            ok = ok and result.warning
    return ok


def check_command(
    pre: Annotated[bool, typer.Option("--pre", help="Check that the cluster is ready for plait install.")] = False,
    filename: Files = None,
    set_: Sets = None,
    revision: Revision = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Check the cluster (--pre: before installing; else: the installed mesh), as [bold]linkerd check[/]:
    the API and its version, permissions, CRDs, the control plane, the webhooks, the root certificate,
    the proxies' sync state and versions. Each failure says how to fix it.

    Example: [bold]plait check --pre[/]   [bold]plait check --revision canary[/]"""
    settings = _resolve(filename, set_, revision, None).settings
    facts = gather_facts(Kubectl(kubeconfig=kubeconfig), settings, pre=pre)
    results = pre_check_results(facts, settings) if pre else check_results(facts, settings)
    ok = _print_groups(results, GROUP_TITLES.__getitem__)
    typer.echo("\nStatus check results are " + ("√" if ok else "×"))
    if not ok:
        raise typer.Exit(1)


def verify_install(
    filename: Files = None,
    set_: Sets = None,
    revision: Revision = None,
    kubeconfig: Kubeconfig = None,
    sidecar_injector: Injector = True,
) -> None:
    """Check that every object [bold]plait install[/] would make with these flags is in the cluster and its
    Deployments are ready, as [bold]istioctl verify-install[/].

    Example: [bold]plait verify-install -f control-plane.yaml[/]"""
    kubectl = Kubectl(kubeconfig=kubeconfig)
    resolved = _resolve(filename, set_, revision, None)
    try:
        settings = _settings(resolved, sidecar_injector, legacy_apis(kubectl))
        found = gather_verify_facts(kubectl, settings)
    except InstallError as exc:
        typer.echo(f"✘ {exc}", err=True)
        raise typer.Exit(1) from None
    failed = 0
    for result in verify_results(manifest(settings), found):
        typer.echo(f"{'✔' if result.ok else '✘'} {result.name}: {result.detail}")
        failed += not result.ok
    if failed:
        typer.echo(f"✘ plait installation verification failed: {failed} resources are missing or not ready")
        raise typer.Exit(1)
    typer.echo("✔ plait is installed and verified successfully")


def demo_bookinfo_kube(kubeconfig: str | None, namespace: str, image: str, hub: str, tag: str) -> None:
    """Istio's getting-started on the cluster kubectl names (`plait demo bookinfo --kube`)."""
    kubectl = Kubectl(kubeconfig=kubeconfig)
    try:
        settings = InstallSettings(image=image, legacy_apis=legacy_apis(kubectl))
        deploy_bookinfo(kubectl, settings, typer.echo, namespace=namespace, hub=hub, tag=tag)
    except InstallError as exc:
        typer.echo(f"✘ {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("Open the product page through the ingress gateway (no load balancer here):")
    typer.echo(how_to_open(settings))


def register(app: typer.Typer) -> None:
    manifest_app = typer.Typer(help="Kubernetes manifests of plait's control plane.", no_args_is_help=True)
    manifest_app.command(name="generate")(manifest_generate)
    app.add_typer(manifest_app, name="manifest")
    profile_app = typer.Typer(help="Istio's installation profiles, as plait installs them.", no_args_is_help=True)
    profile_app.command(name="list")(profile_list)
    profile_app.command(name="dump")(profile_dump)
    app.add_typer(profile_app, name="profile")
    app.command(name="install")(install_command)
    app.command(name="uninstall")(uninstall_command)
    app.command(name="verify-install")(verify_install)
    app.command(name="check")(check_command)
