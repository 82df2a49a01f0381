"""proxy-status and proxy-config: what the control plane sent, and what each Envoy holds (its
configuration and, for `proxy-config secret`, its certificates)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
import yaml
from rich.console import Console
from rich.table import Table

from plait.cli import envoyconfig
from plait.cli.console import err, out
from plait.cli.controlplane import ControlPlane, fail
from plait.cli.kubeforward import ForwardError, PortForward, ready_pods
from plait.client import HTTP_PORT, ClientError, Http, control_plane_url, decode
from plait.runtime import netns

TYPES = ("cds", "lds", "eds", "rds")
ENVOY_ADMIN_PORT = 15000  # a sidecar's or gateway's Envoy admin, on the pod's loopback
NETNS_DIR = Path("/run/netns")
Kubeconfig = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig",
        help="Reach a control plane in a Kubernetes cluster (port-forwarding through its API, as istioctl does). "
        "Default: $KUBECONFIG when set and neither --control-plane nor $PLAIT_CONTROL_PLANE is given.",
    ),
]
IstioNamespace = Annotated[
    str, typer.Option("-i", "--istio-namespace", help="The control plane's namespace, on Kubernetes.")
]
Revision = Annotated[str, typer.Option("-r", "--revision", help="The control plane revision to ask, on Kubernetes.")]
Admin = Annotated[
    str | None,
    typer.Option(
        "--admin",
        help="The proxy's Envoy admin address (host:port). Default: the address its agent reported, "
        "read inside the pod's network namespace for a capture-mode pod of the local mesh (root).",
    ),
]


@dataclass(frozen=True)
class Cluster:
    """A control plane in a Kubernetes cluster, reached by port-forwarding (`plait.cli.kubeforward`)."""

    kubeconfig: str | None
    namespace: str = "istio-system"
    revision: str = ""

    @property
    def selector(self) -> str:
        return "app=istiod" + (f",istio.io/rev={self.revision}" if self.revision else "")


def cluster_of(control_plane: str | None, kubeconfig: str | None, namespace: str, revision: str) -> Cluster | None:
    """The cluster to ask, when the control plane is to be found in one: --kubeconfig, or $KUBECONFIG
    unless a control plane was named (--control-plane, $PLAIT_CONTROL_PLANE); else None (the local mesh)."""
    named = control_plane or os.environ.get("PLAIT_CONTROL_PLANE")
    if kubeconfig or (os.environ.get("KUBECONFIG") and not named):
        return Cluster(kubeconfig, namespace, revision)
    return None


@contextmanager
def control_planes_reached(
    control_plane: str | None, cluster: Cluster | None, port: int = HTTP_PORT
) -> Iterator[list[str]]:
    """The URLs of the control plane's `port` (its HTTP API by default): the one given (or the local
    one), or on Kubernetes one per ready istiod pod, each through a port-forward (each replica serves
    its own proxies)."""
    if cluster is None:
        url = urlsplit(control_plane_url(control_plane))
        yield [url._replace(netloc=f"{url.hostname}:{port}").geturl() if port != HTTP_PORT else url.geturl()]
        return
    try:
        with ExitStack() as forwards:
            pods = ready_pods(cluster.kubeconfig, cluster.namespace, cluster.selector)
            yield [
                f"http://{forwards.enter_context(PortForward(cluster.kubeconfig, cluster.namespace, port, pod=pod))}"
                for pod in pods
            ]
    except ForwardError as exc:
        err.print(f"[red]error[/]: {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None


def _statuses(urls: list[str]) -> list[dict]:
    """Every proxy connected to any of the control planes at `urls`, each with the name (``istiod``),
    version and URL of the one it is connected to."""
    statuses = []
    try:
        for url in urls:
            api = Http(url)
            served_by = api.get("/version") or {}
            for status in api.get("/debug/syncz"):
                statuses.append(
                    {
                        **status,
                        "istiod": served_by.get("name") or "-",
                        "istiod_version": served_by.get("plait"),
                        "url": url,
                    }
                )
    except ClientError as exc:
        fail(exc)
        raise
    return statuses


def proxy_name(status: dict) -> str:
    """The name istioctl gives a proxy: ``POD.NAMESPACE`` (``productpage-v1-0.default``); the node id
    when the proxy's node carried no pod name."""
    proxy = status.get("proxy") or {}
    return (
        f"{proxy['name']}.{proxy['namespace']}" if proxy.get("name") and proxy.get("namespace") else status["proxy_id"]
    )


def find_proxy(statuses: list[dict], proxy: str) -> dict | list[dict]:
    """The proxy `proxy` names: its node id, its ``POD.NAMESPACE`` name, its pod name alone, else a unique part
    of either; a list (empty, or of the candidates) when none or several match."""
    tries = (
        lambda s: s["proxy_id"] == proxy,
        lambda s: proxy_name(s) == proxy,
        lambda s: (s.get("proxy") or {}).get("name") == proxy,
        lambda s: proxy in s["proxy_id"] or proxy in proxy_name(s),
    )
    for matches in tries:
        found = [s for s in statuses if matches(s)]
        if found:
            return found[0] if len(found) == 1 else found
    return []


def _find(statuses: list[dict], proxy: str) -> dict:
    found = find_proxy(statuses, proxy)
    if isinstance(found, list):
        names = ", ".join(proxy_name(s) for s in found or statuses) or "none connected"
        which = (
            f"more than one proxy matches {proxy!r}: {names}"
            if found
            else f"no proxy matches {proxy!r}; known: {names}"
        )
        err.print(f"[red]error[/]: {which}", markup=True)
        raise typer.Exit(1)
    return found


def _state(status: dict, short: str) -> str:
    t = status.get("types", {}).get(short, {})
    state = t.get("state", "NOT SENT")
    if state == "NACKED" and t.get("nack_message"):
        return f"NACKED ({t['nack_message'][:80]})"
    return state


def proxy_status(
    proxy: Annotated[
        str | None, typer.Argument(help="Show one proxy in detail: POD.NAMESPACE, the pod name or the full node id")
    ] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="'wide' adds each proxy's full node id")] = "",
    control_plane: ControlPlane = None,
    admin: Admin = None,
    kubeconfig: Kubeconfig = None,
    istio_namespace: IstioNamespace = "istio-system",
    revision: Revision = "",
) -> None:
    """Show every connected proxy and whether it has the latest config, per xDS type, as istioctl does.

    Proxies are named POD.NAMESPACE, as istioctl names them; ISTIOD is the control plane (pod) it is
    connected to, VERSION its agent's ([bold]-o wide[/] adds Envoy's version and the node id).
    On Kubernetes ($KUBECONFIG or --kubeconfig) plait port-forwards to an istiod pod, as istioctl does.

    SYNCED: sent and acknowledged; NOT SENT: nothing sent yet; STALE: newer config sent (or about to
    be), not acknowledged yet; NACKED: Envoy rejected it (the reason is shown) and keeps serving its
    last good config.
    With a PROXY: what the control plane sent compared with what that Envoy reports holding.

    Example: [bold]plait proxy-status[/]   [bold]plait proxy-status reviews-v1-0.default[/]
    """
    if output not in ("", "wide"):
        err.print("[red]error[/]: -o takes wide")
        raise typer.Exit(2)
    cluster = cluster_of(control_plane, kubeconfig, istio_namespace, revision)
    with control_planes_reached(control_plane, cluster) as urls:
        statuses = _statuses(urls)
        if proxy:
            return _proxy_diff(_find(statuses, proxy), admin, cluster)
    wide = ("ENVOY VERSION", "NODE ID") if output == "wide" else ()
    table = Table("NAME", "CDS", "LDS", "EDS", "RDS", "ISTIOD", "VERSION", *wide, box=None, header_style="bold")
    for s in sorted(statuses, key=lambda s: (proxy_name(s), s["proxy_id"])):
        table.add_row(
            proxy_name(s),
            *(_state(s, t) for t in TYPES),
            s.get("istiod") or "-",
            s.get("proxy_version") or "-",
            *((s.get("envoy_version") or "-", s["proxy_id"]) if wide else ()),
        )
    out.print(table)
    if not statuses:
        out.print("no proxies connected")


def admin_address(status: dict) -> str:
    address = status.get("admin_address")
    if not address:
        err.print(
            f"[red]error[/]: the control plane does not know the admin address of {proxy_name(status)}; "
            "pass --admin HOST:PORT"
        )
        raise typer.Exit(1)
    return address


ADMIN_API = "the proxy's Envoy admin API"
# GET argv[1] and write the body to stdout; run inside a pod's network namespace by PodAdmin
FETCH = (
    "import sys, urllib.request\n"
    "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
    "sys.stdout.buffer.write(opener.open(sys.argv[1], timeout=30).read())"
)


@dataclass
class PodAdmin:
    """The Envoy admin API of a capture-mode pod of the local mesh: on the pod's own loopback, so the
    request runs inside the pod's network namespace (needs root, as `plait up` in capture mode did;
    istioctl port-forwards through the Kubernetes API instead)."""

    namespace: str
    address: str

    def get(self, path: str) -> Any:
        url = f"http://{self.address}{path}"
        try:
            done = subprocess.run(
                netns.exec_argv(self.namespace, [sys.executable, "-c", FETCH, url]),
                capture_output=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClientError(
                f"cannot reach {ADMIN_API} at {url} in network namespace {self.namespace}: {exc}"
            ) from None
        if done.returncode != 0:
            why = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            hint = " (entering a pod's network namespace needs root)" if os.geteuid() != 0 else ""
            raise ClientError(f"cannot reach {ADMIN_API} at {url} in network namespace {self.namespace}: {why}{hint}")
        return decode(done.stdout)


@contextmanager
def admin_api(status: dict, override: str | None, cluster: Cluster | None = None) -> Iterator[Http | PodAdmin]:
    """Where to read a proxy's Envoy: --admin if given; on Kubernetes its pod's 15000 through a
    port-forward; a capture-mode sidecar of the local mesh through its network namespace; else the
    admin address its agent reported."""
    proxy = status.get("proxy", {})
    if override:
        yield Http(f"http://{override}", what=ADMIN_API)
    elif cluster is not None and proxy.get("name") and proxy.get("namespace"):
        try:
            with PortForward(cluster.kubeconfig, proxy["namespace"], ENVOY_ADMIN_PORT, pod=proxy["name"]) as address:
                yield Http(f"http://{address}", what=ADMIN_API)
        except ForwardError as exc:
            raise ClientError(f"cannot reach {ADMIN_API} of pod {proxy_name(status)}: {exc}") from None
    else:
        yield _local_admin(status)


def _local_admin(status: dict) -> Http | PodAdmin:
    address, proxy = admin_address(status), status.get("proxy", {})
    if proxy.get("mode") == "capture" and proxy.get("kind") == "sidecar":
        namespace = netns.Network().namespace(proxy["name"])
        if (NETNS_DIR / namespace).exists():
            return PodAdmin(namespace, address)
    return Http(f"http://{address}", what=ADMIN_API)


def _proxy_diff(status: dict, admin: str | None, cluster: Cluster | None) -> None:
    try:
        sent = Http(status["url"]).get(f"/debug/config_dump?proxy={status['proxy_id']}")
        with admin_api(status, admin, cluster) as envoy:
            held = envoyconfig.resource_names(envoy.get("/config_dump?include_eds"))
    except ClientError as exc:
        fail(exc)
        raise
    clean = True
    for short in TYPES:
        names = {r.get("name") or r.get("cluster_name") for r in sent.get(short, [])}
        missing = sorted(names - held[short])
        # Envoy lists endpoints of every cluster (static, DNS too), so only missing EDS names count.
        extra = [] if short == "eds" else sorted(held[short] - names)
        state = _state(status, short)
        if missing or extra or state != "SYNCED":
            clean = False
        out.print(
            f"{short.upper()}: {state}; sent {len(names)}, Envoy holds {len(held[short])}"
            + (f"; not in Envoy: {', '.join(missing[:5])}" if missing else "")
            + (f"; only in Envoy: {', '.join(extra[:5])}" if extra else "")
        )
    out.print("Envoy holds what the control plane sent." if clean else "Envoy differs from what was sent (above).")
    for problem in status.get("refused", []):  # dangling references: the newest config was not pushed
        out.print(f"REFUSED (the last good config stays): {problem}", markup=False)


CONFIG_KINDS = ("cluster", "listener", "route", "endpoint", "bootstrap", "secret", "scope")
IDENTITY_METADATA = "PLAIT_IDENTITY"  # node metadata: the SPIFFE id, set by an agent that serves certificates
NO_IDENTITY = (
    "no secrets: this proxy has no workload identity (no certificate, so no mTLS); start its agent "
    "with --token-file (the pod's token) so that it gets certificates from the control plane's CA"
)
NOT_USED_YET = (
    "no secrets yet: this proxy's identity is {}, but nothing in its configuration uses a certificate "
    "yet (Envoy asks its agent for 'default' and 'ROOTCA' only once a listener or cluster needs them)"
)


def proxy_config(
    kind: Annotated[str, typer.Argument(help="cluster, listener, route, endpoint, bootstrap, secret or scope")],
    proxy: Annotated[
        str, typer.Argument(help="The proxy: POD.NAMESPACE (as proxy-status names it), the pod name or the node id")
    ],
    output: Annotated[str, typer.Option("-o", "--output", help="short, yaml or json")] = "short",
    control_plane: ControlPlane = None,
    admin: Admin = None,
    kubeconfig: Kubeconfig = None,
    istio_namespace: IstioNamespace = "istio-system",
    revision: Revision = "",
) -> None:
    """Show what one Envoy holds, read from its admin API: a short table by default, as istioctl does.

    [bold]secret[/] decodes its certificates (default: the workload's SPIFFE identity; ROOTCA: the
    trust bundle): identity, serial, validity and the root each chain leads to.

    [bold]scope[/] asks the control plane instead: which mesh services' clusters and routes (virtual
    hosts) the sidecar is sent (automatic scoping) and why: it serves them, called them, its Sidecar
    declares them or an AuthorizationPolicy lets it call them. A first call to any other service
    fetches its virtual host and clusters on demand.

    Example: [bold]plait proxy-config route reviews-v1-0.default[/]   [bold]plait proxy-config secret reviews-v1-0[/]
    """
    if kind.rstrip("s") not in CONFIG_KINDS or output not in ("short", "yaml", "json"):
        err.print(f"[red]error[/]: KIND is one of {', '.join(CONFIG_KINDS)}; -o is short, yaml or json")
        raise typer.Exit(2)
    kind = kind.rstrip("s")
    if kind == "scope" and admin:
        err.print("[red]error[/]: proxy-config scope asks the control plane, not the Envoy: leave --admin out")
        raise typer.Exit(2)
    cluster = cluster_of(control_plane, kubeconfig, istio_namespace, revision)
    try:
        if admin:
            status = {}
        else:
            with control_planes_reached(control_plane, cluster) as urls:
                status = _find(_statuses(urls), proxy)
                if kind == "scope":
                    return _show_scope(Http(status["url"]).get(f"/debug/scopez?proxy={status['proxy_id']}"), output)
        with admin_api(status, admin, cluster) as envoy:
            dump = envoy.get("/config_dump?include_eds" if kind == "endpoint" else "/config_dump")
            data = envoy.get("/clusters?format=json") if kind == "endpoint" and output == "short" else None
    except ClientError as exc:
        fail(exc)
        raise
    if kind == "secret":
        return _show_secrets(dump, output)
    if output != "short" or kind == "bootstrap":
        full = {
            "cluster": envoyconfig.clusters,
            "listener": envoyconfig.listeners,
            "route": envoyconfig.routes,
            "endpoint": envoyconfig.endpoints,
            "bootstrap": envoyconfig.bootstrap,
        }[kind](dump)
        return _dump(full, output)
    headers, rows = {
        "cluster": (("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"), lambda: envoyconfig.cluster_rows(dump)),
        "listener": (("NAME", "ADDRESS", "PORT", "MATCH", "DESTINATION"), lambda: envoyconfig.listener_rows(dump)),
        "route": (("NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"), lambda: envoyconfig.route_rows(dump)),
        "endpoint": (("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"), lambda: envoyconfig.endpoint_rows(data)),
    }[kind]
    _table(headers, rows())


def _show_scope(scope: dict, output: str) -> None:
    if output != "short":
        return _dump(scope, output)
    clusters = scope["clusters"]
    if not scope["scoped"]:
        why = (
            "the control plane runs with --no-scoping"
            if not scope["scoping"]
            else f"a {scope['stream']} xDS stream (on-demand clusters need delta; the agent's default)"
            if scope["stream"] != "delta"
            else "gateways hold every cluster their routes name"
        )
        out.print(f"not scoped ({why}): sent all {clusters['generated']} clusters", markup=False)
        return
    vhosts = scope.get("virtual_hosts") or {}
    routes = f", {vhosts['sent']} of {vhosts['generated']} virtual hosts" if vhosts.get("generated") else ""
    out.print(
        f"scoped: sent {clusters['sent']} of {clusters['generated']} clusters{routes}; a first call to another "
        "mesh service fetches its routes and clusters on demand",
        markup=False,
    )
    _table(("SERVICE FQDN", "WHY"), sorted(scope["hosts"].items()))


def _dump(data: object, output: str) -> None:
    """-o yaml / -o json (yaml for -o short of what has no table)."""
    text = json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False)
    out.print(text, markup=False, end="" if output != "json" else "\n")


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Rows as a table that is never cut short: a line too long for the terminal wraps, as kubectl's do."""
    table = Table(*headers, box=None, header_style="bold")
    for row in rows:
        table.add_row(*row)
    needed = sum(max(len(cell) for cell in column) + 2 for column in zip(headers, *rows, strict=True))
    wide = Console(
        file=out.file,
        highlight=False,
        soft_wrap=True,
        width=max(needed, out.width),
        force_terminal=out.is_terminal,
        no_color=out.no_color,
    )
    wide.print(table)


def _show_secrets(dump: dict, output: str) -> None:
    secrets = envoyconfig.secrets(dump, datetime.now(UTC))
    if output != "short":
        return _dump(secrets, output)
    if not secrets:
        identity = envoyconfig.bootstrap(dump).get("node", {}).get("metadata", {}).get(IDENTITY_METADATA)
        out.print(NOT_USED_YET.format(identity) if identity else NO_IDENTITY, markup=False)
        return
    _table(
        (
            "RESOURCE NAME",
            "TYPE",
            "STATUS",
            "VALID CERT",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
            "IDENTITY",
            "ROOT",
        ),
        envoyconfig.secret_rows(secrets),
    )


def register(app: typer.Typer) -> None:
    app.command("proxy-status")(proxy_status)
    app.command("proxy-config")(proxy_config)
