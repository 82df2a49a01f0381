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

from plait.agent.app_probe import AppProber, ProberError, parse_app_probers
from plait.agent.bootstrap import (
    DEFAULT_CONTROL_PLANE,
    BootstrapSettings,
    parse_control_plane,
    proxy_for_mode,
)
from plait.agent.dnslookup import ResolvConf, parse_upstream, read_resolv_conf
from plait.agent.dnsproxy import DnsSettings
from plait.agent.merged_metrics import AppScrape, ScrapeConfigError, parse_prometheus_annotations
from plait.agent.readiness import wait_for_ready_url
from plait.agent.registration import Registration
from plait.agent.run import AgentConfig, IdentitySettings, default_state_dir, run_agent
from plait.api.common import parse_duration
from plait.model.proxy import TRUST_DOMAIN, spiffe_id

MODES = ("capture", "proxy", "gateway")
CA_PORT = 15012
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

With [bold]--token-file[/] the workload has an identity,
[bold]spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT[/]: the agent makes a private key (kept in
memory), sends a CSR with the token to the CA (--ca-address, TLS checked against --root-cert), serves
the certificate and the root to Envoy over SDS ([bold]default[/], [bold]ROOTCA[/]) on a unix socket,
and renews it at half its --cert-ttl. Envoy starts only once the first certificate is there; if the
CA refuses the identity the agent exits with status 1. A sidecar with an identity is labelled
[bold]security.istio.io/tlsMode=istio[/], so other sidecars call it with mutual TLS, and the token
authenticates its xDS stream and its --register calls. When --control-plane is the CA's address
(istiod's port [bold]15012[/], which serves xDS too) Envoy reaches the control plane over TLS,
checking its certificate (istiod.istio-system.svc) against the root; port 15010 is plaintext.

After [bold]--[/], an application command is started only once the proxy is ready
(Istio's holdApplicationUntilProxyStarts); signals are forwarded to it, Envoy is drained when
it exits, and the agent exits with its status.

Sidecar for reviews-v1, explicit-proxy mode, app held until the proxy is ready:

  [bold]plait agent --mode proxy --name reviews-v1 --namespace default --ip 127.0.10.1 \\
    --labels app=reviews,version=v1 --service-account bookinfo-reviews -- python -m http.server 9080[/]

The same sidecar with a certificate from the local control plane's CA:

  [bold]plait agent --mode proxy --name reviews-v1 --ip 127.0.10.1 --labels app=reviews,version=v1 \\
    --service-account bookinfo-reviews --token-file reviews.token \\
    --root-cert .plait/control-plane/ca/root-cert.pem[/]

Ingress gateway:

  [bold]plait agent --mode gateway --name ingressgateway --namespace istio-system --ip 127.0.20.1 \\
    --labels istio=ingressgateway --admin-port 15100 --status-port 15121[/]
"""


def _parse_env(items: list[str]) -> dict[str, str]:
    """``["NAME=VALUE", …]`` → a dict (a value may hold ``=`` and ``,``)."""
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--proxy-env")
        env[name] = value
    return env


def _check_concurrency(value: int) -> int:
    if value < 0:
        raise typer.BadParameter("must be 0 (one worker per CPU) or more", param_hint="--concurrency")
    return value


WAIT_HELP = """Wait until the local proxy is ready (Istio's [bold]pilot-agent wait[/]): poll its readiness URL,
exit 0 once it answers 200, 1 after --timeout. The injector runs it as istio-proxy's postStart hook
when holdApplicationUntilProxyStarts is set, so the kubelet starts the app containers only then."""


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
    service_account: Annotated[
        str,
        typer.Option(
            help="Service account: the workload's identity, spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT."
        ),
    ] = "default",
    control_plane: Annotated[
        str,
        typer.Option(
            envvar="PLAIT_CONTROL_PLANE",
            help="ADS server HOST:PORT; a bare HOST or an http:// URL means that host's port 15010 (plaintext). "
            "HOST:15012 (the CA's address) is TLS and needs --token-file.",
        ),
    ] = DEFAULT_CONTROL_PLANE,
    xds: Annotated[
        str, typer.Option(help="delta (the default, as Istio since 1.22) or sotw (state of the world) xDS.")
    ] = "delta",
    admin_port: Annotated[int, typer.Option(help="Envoy admin port on 127.0.0.1.")] = 15000,
    status_port: Annotated[int, typer.Option(help="Readiness port (/healthz/ready), on all addresses.")] = 15021,
    prometheus_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Istio's metrics (istio_requests_total …) at /stats/prometheus on this port, from Envoy "
            "itself (Istio's 15090): on all addresses in capture mode, on --ip otherwise.",
        ),
    ] = None,
    app_address: Annotated[str, typer.Option(help="Where the sidecar reaches its application.")] = "127.0.0.1",
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Bootstrap (0600), Envoy PID file, and proxy/ with the SDS socket. "
            "Default: $TMPDIR/plait-agent/NAME.NS."
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="Envoy worker threads; 0: one per CPU (ProxyConfig concurrency).")
    ] = 1,
    proxy_env: Annotated[
        list[str] | None,
        typer.Option(
            "--proxy-env", help="NAME=VALUE in Envoy's environment (ProxyConfig environmentVariables); repeatable."
        ),
    ] = None,
    drain_duration: Annotated[float, typer.Option(help="Seconds Envoy drains before it is stopped.")] = 5.0,
    log_level: Annotated[str, typer.Option(help="Envoy's log level.")] = "warning",
    register_ports: Annotated[
        str | None,
        typer.Option(
            "--register",
            help="Register this workload with the control plane, with these ports (NAME=PORT,…; "
            "'' for none): ready when the proxy (and app) is, not ready while draining, "
            "removed on exit. Needs --control-plane-api.",
        ),
    ] = None,
    proxy_uid: Annotated[
        int | None,
        typer.Option(help="Run Envoy as this user: 1337 in capture mode, whose traffic iptables does not redirect."),
    ] = None,
    app_probe: Annotated[
        str | None,
        typer.Option(
            help="With --register: the app's readiness URL (its readinessProbe); not ready until it answers 2xx."
        ),
    ] = None,
    control_plane_api: Annotated[
        str | None,
        typer.Option(
            help="The control plane's HTTP API for --register and --dns-capture's name table. "
            "Default: http://HOST:15014 of --control-plane."
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="PLAIT_TOKEN_FILE",
            help="The pod's token (Istio's istio-token): with it the agent gets a certificate for "
            "spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT and serves it to Envoy over SDS; the CA signs "
            "only the identity the token was issued for. Re-read before each renewal. Without it: no "
            "certificates, plaintext only.",
        ),
    ] = None,
    ca_address: Annotated[
        str | None, typer.Option(help="The CA, HOST:PORT (TLS, gRPC). Default: port 15012 of the --control-plane host.")
    ] = None,
    root_cert: Annotated[
        Path | None,
        typer.Option(
            envvar="PLAIT_ROOT_CERT",
            help="PEM root certificate that the CA's TLS certificate must chain to; the local control plane "
            "writes it to STATE_DIR/ca/root-cert.pem (default .plait/control-plane/ca/root-cert.pem). "
            "Needed with --token-file.",
        ),
    ] = None,
    cert_ttl: Annotated[
        str, typer.Option(help="Lifetime to ask the CA for (24h, 1h, 90s…); the agent renews at half of it.")
    ] = "24h",
    trust_domain: Annotated[
        str, typer.Option(help="Trust domain of the identity (its SPIFFE id's host); the CA's must match.")
    ] = TRUST_DOMAIN,
    probe_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve the status port's routes on this port, with the app's rewritten probes under "
            "/app-health/CONTAINER/KIND (Istio's status port 15020; the injector passes it).",
            show_default=False,
        ),
    ] = None,
    app_probers: Annotated[
        str | None,
        typer.Option(
            envvar="ISTIO_KUBE_APP_PROBERS",
            help="The app's original probes as JSON, /app-health path → httpGet|tcpSocket|grpc (what the injector "
            "writes); the agent runs them against --app-address.",
            show_default=False,
        ),
    ] = None,
    prometheus_annotations: Annotated[
        str | None,
        typer.Option(
            envvar="ISTIO_PROMETHEUS_ANNOTATIONS",
            help="The app's metrics to merge into /stats/prometheus on the status ports, as JSON "
            '{"scrape": "true", "port": "9080", "path": "/metrics"} (the pod\'s prometheus.io annotations, '
            "which the injector writes here); scraped on --app-address.",
            show_default=False,
        ),
    ] = None,
    dns_capture: Annotated[
        bool,
        typer.Option(
            envvar="ISTIO_META_DNS_CAPTURE",
            help="Answer the pod's DNS on --dns-address:--dns-port (UDP and TCP): mesh service names and ServiceEntry "
            "hosts from the control plane's name table, everything else forwarded to --dns-upstream. With "
            "`plait iptables --redirect-dns` the pod's port-53 queries arrive here.",
        ),
    ] = False,
    dns_auto_allocate: Annotated[
        bool,
        typer.Option(
            envvar="ISTIO_META_DNS_AUTO_ALLOCATE",
            help="With --dns-capture: ServiceEntry hosts without addresses resolve to VIPs from 240.240.0.0/16.",
        ),
    ] = False,
    dns_address: Annotated[str, typer.Option(help="Where the DNS proxy listens.")] = "127.0.0.1",
    dns_port: Annotated[int, typer.Option(help="The DNS proxy's port (Istio's 15053).")] = 15053,
    dns_upstream: Annotated[
        list[str] | None,
        typer.Option(
            help="Upstream nameserver IP[:PORT] for names not in the mesh; repeatable. Default: --resolv-conf's.",
            show_default=False,
        ),
    ] = None,
    resolv_conf: Annotated[
        Path, typer.Option(help="The pod's resolv.conf: upstream nameservers and search domains.")
    ] = Path("/etc/resolv.conf"),
    app_command: Annotated[
        list[str] | None,
        typer.Argument(metavar="-- APP COMMAND", help="Started once the proxy is ready.", show_default=False),
    ] = None,
) -> None:
    try:
        parse_control_plane(control_plane)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--control-plane") from None
    identity = (
        None
        if token_file is None
        else IdentitySettings(
            token_file=token_file,
            root_cert=_root_cert(root_cert),
            ca_address=ca_address or _ca_address(control_plane),
            ttl_seconds=_ttl_seconds(cert_ttl),
        )
    )
    xds_tls = _xds_over_tls(control_plane, identity)
    proxy = proxy_for_mode(
        _check_choice(mode, MODES, "--mode"),
        name=name,
        namespace=namespace,
        ip=ip,  # type: ignore[arg-type]
        labels=parse_labels(labels),
        service_account=service_account,
        app_address=app_address,
        identity=spiffe_id(namespace, service_account, trust_domain) if identity else None,
    )
    config = AgentConfig(
        bootstrap=BootstrapSettings(
            proxy=proxy,
            control_plane=control_plane,
            admin_port=admin_port,
            prometheus_port=prometheus_port,
            xds=_check_choice(xds, ("sotw", "delta"), "--xds"),  # type: ignore[arg-type]
            xds_tls=xds_tls,
        ),
        state_dir=state_dir or default_state_dir(name, namespace),
        status_port=status_port,
        concurrency=_check_concurrency(concurrency),
        proxy_env=_parse_env(proxy_env or []),
        drain_seconds=drain_duration,
        envoy_log_level=_check_choice(log_level, ENVOY_LOG_LEVELS, "--log-level"),
        app_command=tuple(app_command or ()),
        proxy_uid=proxy_uid,
        identity=identity,
        probe_port=probe_port,
        app_probers=_app_probers(app_probers),
        app_metrics=_app_metrics(prometheus_annotations, status_port, probe_port),
        dns=_dns_settings(
            resolv_conf,
            dns_upstream or [],
            api=control_plane_api or f"http://{parse_control_plane(control_plane)[0]}:15014",
            address=dns_address,
            port=dns_port,
            auto_allocate=dns_auto_allocate,
            token_file=token_file,
        )
        if dns_capture
        else None,
        registration=None
        if register_ports is None
        else Registration(
            api=control_plane_api or f"http://{parse_control_plane(control_plane)[0]}:15014",
            proxy=proxy,
            address=ip,
            ports={k: int(v) for k, v in parse_labels(register_ports).items()},
            app_probe=app_probe,
            token_file=token_file,
        ),
    )
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[agent] %(message)s")
    try:
        code = asyncio.run(run_agent(config))
    except OSError as exc:
        typer.echo(f"[agent] error: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _dns_settings(resolv_conf: Path, upstreams: list[str], **settings) -> DnsSettings:
    """The DNS proxy's settings: search domains (and by default nameservers) from `resolv_conf`."""
    try:
        resolv = read_resolv_conf(resolv_conf)
    except OSError as exc:
        if not upstreams:
            raise typer.BadParameter(f"cannot read {resolv_conf}: {exc.strerror}", param_hint="--resolv-conf") from None
        resolv = ResolvConf(())
    try:
        nameservers = tuple(parse_upstream(u) for u in upstreams) or resolv.nameservers
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dns-upstream") from None
    return DnsSettings(resolv=ResolvConf(nameservers, resolv.search), **settings)


def _app_probers(text: str | None) -> dict[str, AppProber]:
    try:
        return parse_app_probers(text)
    except ProberError as exc:
        raise typer.BadParameter(str(exc), param_hint="--app-probers") from None


def _app_metrics(text: str | None, *status_ports: int | None) -> AppScrape | None:
    try:
        return parse_prometheus_annotations(text, tuple(p for p in status_ports if p))
    except ScrapeConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--prometheus-annotations") from None


def agent_wait(
    url: Annotated[str, typer.Option(help="The readiness URL to poll.")] = "http://localhost:15021/healthz/ready",
    timeout: Annotated[float, typer.Option(help="Seconds to wait before giving up (exit 1).")] = 60.0,
    period: Annotated[float, typer.Option(help="Seconds between two polls.")] = 0.5,
) -> None:
    if wait_for_ready_url(url, timeout=timeout, period=period):
        typer.echo(f"[agent-wait] {url} is ready", err=True)
        return
    typer.echo(f"[agent-wait] {url} not ready after {timeout:g}s", err=True)
    raise typer.Exit(1)


def _ca_address(control_plane: str) -> str:
    host = parse_control_plane(control_plane)[0]
    return f"[{host}]:{CA_PORT}" if ":" in host else f"{host}:{CA_PORT}"


def _xds_over_tls(control_plane: str, identity: IdentitySettings | None) -> bool:
    """TLS when the ADS address is the CA's (the control plane's TLS port serves both, as istiod's 15012)."""
    address = parse_control_plane(control_plane)
    if identity is not None:
        try:
            return address == parse_control_plane(identity.ca_address)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--ca-address") from None
    if address[1] == CA_PORT:
        raise typer.BadParameter(
            f"port {CA_PORT} is the control plane's TLS port, where xDS needs a pod token: "
            "give --token-file and --root-cert, or use port 15010 (plaintext)",
            param_hint="--control-plane",
        )
    return False


def _root_cert(path: Path | None) -> Path:
    if path is None:
        raise typer.BadParameter(
            "--token-file needs the CA's root certificate, e.g. "
            "--root-cert .plait/control-plane/ca/root-cert.pem (or PLAIT_ROOT_CERT)",
            param_hint="--root-cert",
        )
    return path


def _ttl_seconds(text: str) -> int:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--cert-ttl") from None
    if seconds < 2:
        raise typer.BadParameter(f"{text!r} is shorter than the 2s minimum", param_hint="--cert-ttl")
    return round(seconds)


def register(app: typer.Typer) -> None:
    app.command(name="agent", help=HELP, no_args_is_help=True)(agent)
    app.command(name="agent-wait", help=WAIT_HELP)(agent_wait)
