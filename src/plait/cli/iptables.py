"""``plait iptables``: install Istio's sidecar capture rules (istio-iptables' flags and rules).

A thin shell over `plait.runtime.iptables`: parse the flags into a `CaptureConfig`, then print
(``--dry-run``), install or remove (``--cleanup``) the rules. ``register(app)`` adds the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from plait.agent.dnslookup import read_resolv_conf
from plait.runtime.iptables import BACKENDS, CaptureConfig, IptablesError, apply, cleanup, render_rules

HELP = "\n\n".join(
    [
        "Install Istio's sidecar capture rules (nat table), as [bold]istio-iptables[/] does.",
        (
            "Inbound TCP goes to -z (15006), outbound TCP to -p (15001); the proxy's uid/gid (-u, -g: 1337) and "
            "127.0.0.1 are never captured; ports 15090, 15021 and 15020 are never captured inbound. Takes "
            "istio-iptables' flags; -i and -b default to '*' (what Istio's injector passes); lists are "
            "comma-separated. Run it inside the pod's network namespace (or pass --netns). Needs root."
        ),
        "Istio's init-container command, accepted as is:",
        "  [bold]plait iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020[/]",
        "DNS capture (with the agent's --dns-capture): add [bold]--redirect-dns[/].",
        "Show the rules without installing them: add [bold]--dry-run[/]. Remove them: [bold]plait iptables --cleanup[/].",
    ]
)


def iptables(
    proxy_port: Annotated[str, typer.Option("-p", "--envoy-port", help="Outbound capture port.")] = "15001",
    inbound_capture_port: Annotated[
        str, typer.Option("-z", "--inbound-capture-port", help="Inbound capture port.")
    ] = "15006",
    proxy_uid: Annotated[
        str, typer.Option("-u", "--proxy-uid", help="Uid(s) whose traffic is never captured.")
    ] = "1337",
    proxy_gid: Annotated[
        str | None,
        typer.Option(
            "-g",
            "--proxy-gid",
            help="Gid(s) whose traffic is never captured. Default: the same as -u.",
            show_default=False,
        ),
    ] = None,
    interception_mode: Annotated[
        str, typer.Option("-m", "--istio-inbound-interception-mode", help="REDIRECT (TPROXY is not supported).")
    ] = "REDIRECT",
    outbound_ranges: Annotated[
        str,
        typer.Option("-i", "--istio-service-cidr", help="Outbound IP ranges (CIDR) to capture; '*' = all, '' = none."),
    ] = "*",
    outbound_ranges_exclude: Annotated[
        str, typer.Option("-x", "--istio-service-exclude-cidr", help="Outbound IP ranges (CIDR) never captured.")
    ] = "",
    inbound_ports: Annotated[
        str, typer.Option("-b", "--istio-inbound-ports", help="Inbound ports to capture; '*' = all, '' = none.")
    ] = "*",
    inbound_ports_exclude: Annotated[
        str, typer.Option("-d", "--istio-local-exclude-ports", help="Inbound ports never captured (with -b '*').")
    ] = "",
    outbound_ports_exclude: Annotated[
        str, typer.Option("-o", "--istio-local-outbound-ports-exclude", help="Outbound ports never captured.")
    ] = "",
    outbound_ports_include: Annotated[
        str,
        typer.Option(
            "-q",
            "--istio-local-outbound-ports-include",
            help="Outbound ports always captured, whatever the destination (with -i '' : only these).",
        ),
    ] = "",
    redirect_dns: Annotated[
        bool,
        typer.Option(
            "--redirect-dns",
            envvar="ISTIO_META_DNS_CAPTURE",
            help="Send DNS (UDP and TCP port 53) to --resolv-conf's nameservers to the agent's DNS proxy (15053), "
            "except the proxy user's own queries (Istio's DNS capture).",
        ),
    ] = False,
    capture_all_dns: Annotated[
        bool,
        typer.Option("--capture-all-dns", help="With --redirect-dns: DNS to any address, not only the nameservers."),
    ] = False,
    resolv_conf: Annotated[Path, typer.Option(help="Where --redirect-dns reads the pod's nameservers.")] = Path(
        "/etc/resolv.conf"
    ),
    dry_run: Annotated[bool, typer.Option("-n", "--dry-run", help="Print the rules; change nothing.")] = False,
    remove: Annotated[
        bool,
        typer.Option(
            "--cleanup", "--cleanup-only", help="Remove the ISTIO_* chains and the jumps into them; install nothing."
        ),
    ] = False,
    backend: Annotated[
        str, typer.Option(help="nft (iptables-nft-restore) or legacy (iptables-legacy-restore).")
    ] = "nft",
    netns: Annotated[
        str | None,
        typer.Option(
            help="Network namespace (a name from `ip netns list`) to work in. Default: the current one.",
            show_default=False,
        ),
    ] = None,
) -> None:
    if backend not in BACKENDS:
        raise typer.BadParameter(f"{backend!r} is not one of {', '.join(BACKENDS)}", param_hint="--backend")
    try:
        if remove:
            removed = cleanup(backend=backend, netns=netns)  # type: ignore[arg-type]
            typer.echo("removed the ISTIO_* chains" if removed else "no ISTIO_* chains to remove", err=True)
            return
        config = CaptureConfig.from_flags(
            proxy_port=proxy_port,
            inbound_capture_port=inbound_capture_port,
            proxy_uid=proxy_uid,
            proxy_gid=proxy_gid,
            interception_mode=interception_mode,
            outbound_ranges=outbound_ranges,
            outbound_ranges_exclude=outbound_ranges_exclude,
            inbound_ports=inbound_ports,
            inbound_ports_exclude=inbound_ports_exclude,
            outbound_ports_exclude=outbound_ports_exclude,
            outbound_ports_include=outbound_ports_include,
            redirect_dns=redirect_dns,
            capture_all_dns=capture_all_dns,
            dns_servers=_nameservers(resolv_conf) if redirect_dns and not capture_all_dns else (),
        )
        if dry_run:
            typer.echo(render_rules(config), nl=False)
            return
        apply(config, backend=backend, netns=netns)  # type: ignore[arg-type]
        typer.echo(f"installed Istio's capture rules (nat table, {backend} backend)", err=True)
    except IptablesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _nameservers(resolv_conf: Path) -> list[str]:
    try:
        return [address for address, _ in read_resolv_conf(resolv_conf).nameservers]
    except OSError as exc:
        raise IptablesError(f"--redirect-dns: cannot read {resolv_conf}: {exc.strerror}") from None


def register(app: typer.Typer) -> None:
    app.command(name="iptables", help=HELP)(iptables)
