"""``plait tap`` and ``plait top``: live requests of a workload's proxies, as linkerd's.

Both open a tap session on the control plane (``GET /api/v1/tap``, `plait.controlplane.tap`), which
turns the tap of the target's proxies on for as long as the connection lasts, and read its JSON
lines: ``tap`` prints each request as linkerd's ``req``/``rsp``/``end`` lines (or the event as JSON),
``top`` folds them into linkerd top's table (`plait.telemetry.top`), redrawn each second.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import urlencode, urlsplit

import typer
from rich.live import Live
from rich.table import Table

from plait.cli.console import err, out
from plait.cli.controlplane import ControlPlane
from plait.cli.proxies import IstioNamespace, Kubeconfig, cluster_of, control_planes_reached
from plait.client import ClientError, Http
from plait.telemetry.tap import TapError, Target, tap_lines
from plait.telemetry.top import COLUMNS, TopTable

READ_TIMEOUT = 10.0  # the control plane sends a line each second; this long without one, it is gone

TargetArg = Annotated[str, typer.Argument(help="What to tap: deploy/NAME, po/NAME or ns/NAMESPACE.")]
Namespace = Annotated[str, typer.Option("-n", "--namespace", help="The target's namespace.")]
PathPrefix = Annotated[str, typer.Option("--path", help="Only requests whose path starts with this.")]
Method = Annotated[str, typer.Option("--method", help="Only requests with this HTTP method.")]
To = Annotated[
    str, typer.Option("--to", help="Only requests to this destination: deploy/NAME, po/NAME, ns/NS or svc/NAME.")
]
Duration = Annotated[
    float | None, typer.Option("--duration", help="Stop after this many seconds (default: until Ctrl-C).")
]


class TapSession:
    """A tap session at the control plane's API `url`: iterate for its events (``first`` is its
    ``tapping`` message). It lasts until `close` (or the end of a ``with`` block), which any thread
    may call."""

    def __init__(self, url: str, query: dict[str, str], duration: float | None = None):
        api = Http(url)
        self.base = api.base
        parts = urlsplit(api.base)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=READ_TIMEOUT)
        self.until = None if duration is None else time.monotonic() + duration
        try:
            self.connection.request("GET", "/api/v1/tap?" + urlencode(query), headers=api.headers(None, ""))
            self.response = self.connection.getresponse()
        except OSError as error:
            raise ClientError(f"cannot reach the control plane at {api.base} ({error}); is it running?") from None
        if self.response.status != 200:
            body = self.response.read()
            self.connection.close()
            problem = json.loads(body).get("error") if body.startswith(b"{") else body.decode()
            raise ClientError(problem, self.response.status)
        self.first = next(iter(self))

    def __iter__(self) -> Iterator[dict]:
        while self.until is None or time.monotonic() < self.until:
            try:
                line = self.response.readline()
            except TimeoutError:
                raise ClientError(f"the control plane at {self.base} stopped answering") from None
            if not line:
                raise ClientError(f"the control plane at {self.base} ended the tap session")
            if line.strip():
                yield json.loads(line)

    def close(self) -> None:
        if self.connection.sock is not None:
            with contextlib.suppress(OSError):
                self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()

    def __enter__(self) -> TapSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _query(target: str, namespace: str, path: str, method: str, to: str) -> dict[str, str]:
    try:
        Target.parse(target, namespace)
        if to:
            Target.parse(to, namespace, services=True)
    except TapError as error:
        err.print(f"[red]error[/]: {error}")
        raise typer.Exit(2) from None
    query = {"target": target, "namespace": namespace, "path": path, "method": method, "to": to}
    return {k: v for k, v in query.items() if v}


def _session(
    query: dict[str, str], duration: float | None, control_plane: str | None, kubeconfig: str | None, istio_ns: str
) -> Iterator[dict]:
    """The events, after saying which proxies are tapped; exits 1 with the reason on an error."""
    cluster = cluster_of(control_plane, kubeconfig, istio_ns, "")
    with contextlib.ExitStack() as stack:
        urls = stack.enter_context(control_planes_reached(control_plane, cluster))
        try:
            # on Kubernetes each istiod replica serves its own proxies: one session on each
            sessions = [stack.enter_context(TapSession(url, query, duration)) for url in urls]
            for session in sessions:
                _say_tapping(session.first)
            streams = [iter(session) for session in sessions]
            yield from _merged(streams) if len(streams) > 1 else streams[0]
        except ClientError as error:
            err.print(f"[red]error[/]: {error}")
            raise typer.Exit(1) from None


def _merged(streams: list[Iterator[dict]]) -> Iterator[dict]:
    """Several control planes' events, read in turn (each sends a line at least every second)."""
    while streams:
        for stream in list(streams):
            try:
                yield next(stream)
            except StopIteration:
                streams.remove(stream)


def _say_tapping(message: dict) -> None:
    proxies = message.get("proxies", [])
    if proxies:
        err.print(f"tapping {len(proxies)} prox{'y' if len(proxies) == 1 else 'ies'} of {message.get('target')}")
    else:
        err.print(f"[yellow]warning[/]: no connected proxy is one of {message.get('target')} (yet); waiting")


def tap(
    target: TargetArg,
    namespace: Namespace = "default",
    path: PathPrefix = "",
    method: Method = "",
    to: To = "",
    output: Annotated[str, typer.Option("-o", "--output", help="'' (linkerd's lines) or json.")] = "",
    duration: Duration = None,
    control_plane: ControlPlane = None,
    kubeconfig: Kubeconfig = None,
    istio_namespace: IstioNamespace = "istio-system",
) -> None:
    """Watch a workload's requests live, as linkerd tap: req, rsp and end lines within moments of each
    request. The workload's proxies send nothing while nobody taps."""
    if output not in ("", "json"):
        err.print(f"[red]error[/]: -o {output!r}: expected json or nothing")
        raise typer.Exit(2)
    query = _query(target, namespace, path, method, to)
    try:
        for event in _session(query, duration, control_plane, kubeconfig, istio_namespace):
            if output == "json":
                out.print(json.dumps(event), markup=False, highlight=False)
            else:
                for line in tap_lines(event):
                    out.print(line, markup=False, highlight=False)
    except KeyboardInterrupt:
        pass


def top_table(table: TopTable, limit: int | None = None) -> Table:
    shown = Table(*COLUMNS, box=None, header_style="bold")
    for row in table.rows(limit):
        shown.add_row(*row.cells())
    return shown


def top(
    target: TargetArg,
    namespace: Namespace = "default",
    path: PathPrefix = "",
    method: Method = "",
    to: To = "",
    duration: Duration = None,
    limit: Annotated[int, typer.Option("--max-rows", help="Rows shown (the busiest).")] = 30,
    control_plane: ControlPlane = None,
    kubeconfig: Kubeconfig = None,
    istio_namespace: IstioNamespace = "istio-system",
) -> None:
    """The busiest paths of a workload's traffic, live, as linkerd top: count, best, worst and last
    latency, success rate. With --duration, the table once at the end."""
    query = _query(target, namespace, path, method, to)
    table = TopTable()
    events = _session(query, duration, control_plane, kubeconfig, istio_namespace)
    try:
        if duration is not None:
            for event in events:
                table.add(event)
            out.print(top_table(table, limit))
            return
        with Live(top_table(table, limit), console=out, refresh_per_second=1) as live:
            for event in events:
                table.add(event)
                live.update(top_table(table, limit))
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    app.command("tap")(tap)
    app.command("top")(top)
