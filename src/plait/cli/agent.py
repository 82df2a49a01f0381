"""``plait agent``: run one Envoy for a workload or a gateway (Istio's pilot-agent).

A thin shell over `plait.agent.run.run_agent`: parse the flags into an
`AgentConfig`, set up logging, run the agent, exit with its status.
``register(app)`` adds the command to the ``plait`` CLI.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from plait.agent.bootstrap import DEFAULT_CONTROL_PLANE, BootstrapSettings, parse_control_plane, proxy_for_mode
from plait.agent.registration import Registration
from plait.agent.run import SDS_SOCKET, AgentConfig, default_state_dir, run_agent

MODES = ("capture", "proxy", "gateway")
ENVOY_LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")

HELP = """Run Envoy for one workload (a sidecar) or one gateway, bootstrapped to the control plane.

The agent writes Envoy's bootstrap (node id [bold]sidecar~IP~NAME.NS~NS.svc.cluster.local[/] or
[bold]router~…[/], with the labels, namespace, service account and mode as node metadata) into
--state-dir, starts Envoy, restarts it if it dies, passes its log through prefixed \\[envoy], and
serves [bold]/healthz/ready[/] on --status-port: 200 once Envoy has its first clusters and listeners
from the control plane, 503 before. SIGTERM drains Envoy for --drain-duration, then stops it.

Modes: [bold]capture[/] (sidecar; traffic redirected by iptables to 15001/15006),
[bold]proxy[/] (sidecar as an explicit HTTP proxy on IP:15001; the app gets HTTP_PROXY),
[bold]gateway[/] (an ingress or egress gateway; select it with --labels istio=ingressgateway).

After [bold]--[/], an application command is started only once the proxy is ready
(Istio's holdApplicationUntilProxyStarts); signals are forwarded to it, Envoy is drained when
it exits, and the agent exits with its status.

Sidecar for reviews-v1, explicit-proxy mode, app held until the proxy is ready:

  [bold]plait agent --mode proxy --name reviews-v1 --namespace default --ip 127.0.10.1 \\
    --labels app=reviews,version=v1 --service-account bookinfo-reviews -- python -m http.server 9080[/]

Ingress gateway:

  [bold]plait agent --mode gateway --name ingressgateway --namespace istio-system --ip 127.0.20.1 \\
    --labels istio=ingressgateway --admin-port 15100 --status-port 15121[/]
"""


def parse_labels(text: str) -> dict[str, str]:
    """``app=reviews,version=v1`` → a dict; raises typer.BadParameter on anything else."""
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE[,KEY=VALUE…], got {item!r}", param_hint="--labels")
        labels[key.strip()] = value.strip()
    return labels


def _check_choice(value: str, choices: tuple[str, ...], flag: str) -> str:
    if value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=flag)
    return value


def agent(
    name: Annotated[str, typer.Option(help="Workload (pod) name: NAME in the node id NAME.NS.")],
    ip: Annotated[str, typer.Option(help="The workload's IP, as the control plane knows it.")],
    mode: Annotated[str, typer.Option(help="capture | proxy | gateway.")] = "capture",
    namespace: Annotated[str, typer.Option(help="Workload namespace.")] = "default",
    labels: Annotated[str, typer.Option(help="Workload labels, KEY=VALUE,KEY=VALUE.")] = "",
    service_account: Annotated[str, typer.Option(help="Service account (the workload's identity).")] = "default",
    control_plane: Annotated[str, typer.Option(
        envvar="PLAIT_CONTROL_PLANE",
        help="ADS server HOST:PORT; a bare HOST or an http:// URL means that host's port 15010.",
    )] = DEFAULT_CONTROL_PLANE,
    xds: Annotated[str, typer.Option(help="sotw (state of the world) or delta xDS.")] = "sotw",
    admin_port: Annotated[int, typer.Option(help="Envoy admin port on 127.0.0.1.")] = 15000,
    status_port: Annotated[int, typer.Option(help="Readiness port (/healthz/ready), on all addresses.")] = 15021,
    app_address: Annotated[str, typer.Option(help="Where the sidecar reaches its application.")] = "127.0.0.1",
    state_dir: Annotated[Path | None, typer.Option(
        help="Bootstrap, Envoy PID file and SDS socket. Default: $TMPDIR/plait-agent/NAME.NS.")] = None,
    concurrency: Annotated[int, typer.Option(help="Envoy worker threads.")] = 1,
    drain_duration: Annotated[float, typer.Option(help="Seconds Envoy drains before it is stopped.")] = 5.0,
    log_level: Annotated[str, typer.Option(help="Envoy's log level.")] = "warning",
    register_ports: Annotated[str | None, typer.Option(
        "--register", help="Register this workload with the control plane, with these ports (NAME=PORT,…; "
                           "'' for none): ready when the proxy (and app) is, not ready while draining, "
                           "removed on exit. Needs --control-plane-api.")] = None,
    proxy_uid: Annotated[int | None, typer.Option(
        help="Run Envoy as this user: 1337 in capture mode, whose traffic iptables does not redirect.")] = None,
    app_probe: Annotated[str | None, typer.Option(
        help="With --register: the app's readiness URL (its readinessProbe); not ready until it answers 2xx.")] = None,
    control_plane_api: Annotated[str | None, typer.Option(
        help="The control plane's HTTP API for --register. Default: http://HOST:15014 of --control-plane.")] = None,
    app_command: Annotated[list[str] | None, typer.Argument(
        metavar="-- APP COMMAND", help="Started once the proxy is ready.", show_default=False)] = None,
) -> None:
    try:
        parse_control_plane(control_plane)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--control-plane") from None
    proxy = proxy_for_mode(_check_choice(mode, MODES, "--mode"), name=name, namespace=namespace, ip=ip,  # type: ignore[arg-type]
                           labels=parse_labels(labels), service_account=service_account, app_address=app_address)
    directory = state_dir or default_state_dir(name, namespace)
    config = AgentConfig(
        bootstrap=BootstrapSettings(proxy=proxy, control_plane=control_plane, admin_port=admin_port,
                                    xds=_check_choice(xds, ("sotw", "delta"), "--xds"),  # type: ignore[arg-type]
                                    sds_socket=str(directory.absolute() / SDS_SOCKET)),
        state_dir=directory, status_port=status_port, concurrency=concurrency, drain_seconds=drain_duration,
        envoy_log_level=_check_choice(log_level, ENVOY_LOG_LEVELS, "--log-level"), app_command=tuple(app_command or ()),
        proxy_uid=proxy_uid,
        registration=None if register_ports is None else Registration(
            api=control_plane_api or f"http://{parse_control_plane(control_plane)[0]}:15014", proxy=proxy, address=ip,
            ports={k: int(v) for k, v in parse_labels(register_ports).items()}, app_probe=app_probe))
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[agent] %(message)s")
    try:
        code = asyncio.run(run_agent(config))
    except OSError as exc:
        typer.echo(f"[agent] error: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command(name="agent", help=HELP, no_args_is_help=True)(agent)
