"""``plait traces``: recent traces from the control plane's collector, and one trace as a tree.

Reads Zipkin's read API on the control plane's collector port (9411): the local mesh's, the one
``--control-plane`` names, or on Kubernetes every ready istiod pod's through a port-forward (each
replica holds the spans its proxies sent it), merged by trace id. Drawing is `plait.telemetry.traceview`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

import typer

from plait.api.common import parse_duration
from plait.cli.console import err, out
from plait.cli.controlplane import ControlPlane
from plait.cli.proxies import IstioNamespace, Kubeconfig, Revision, _table, cluster_of, control_planes_reached
from plait.client import ClientError, Http
from plait.telemetry import traceview
from plait.telemetry.tracestore import trace_start

ZIPKIN_PORT = 9411
COLLECTOR = "the trace collector"
HOW_TO_START = "is the mesh up (plait up, plait demo bookinfo)? The control plane serves traces on --zipkin-port (9411)"


def _fetch(urls: list[str], path: str) -> list:
    """What each collector answers for `path` (a 404 is an empty answer)."""
    answers = []
    for url in urls:
        try:
            answers.append(Http(url, what=COLLECTOR).get(path) or [])
        except ClientError as exc:
            if exc.status == 404:
                continue
            err.print(f"[red]error[/]: cannot read traces from {url}: {exc}; {HOW_TO_START}", highlight=False)
            raise typer.Exit(1) from None
    return answers


def _list(urls: list[str], query: dict[str, str], limit: int, output: str) -> None:
    found = traceview.merge_traces(*_fetch(urls, f"/api/v2/traces?{urlencode(query)}"))
    found = sorted(found, key=trace_start, reverse=True)[:limit]
    if output == "json":
        out.print(json.dumps(found, indent=2), markup=False, highlight=False)
        return
    if not found:
        out.print("no traces found (Istio samples 1% of requests by default; send x-client-trace-id to force one)")
        return
    rows = []
    for summary in map(traceview.summarize, found):
        start = datetime.fromtimestamp(summary.start_us / 1e6).strftime("%H:%M:%S.%f")[:-3]
        rows.append(
            (
                summary.trace_id,
                summary.root_service,
                summary.root_operation,
                str(summary.spans),
                traceview.format_duration(summary.duration_us),
                start,
            )
        )
    _table(("TRACE ID", "ROOT SERVICE", "OPERATION", "SPANS", "DURATION", "START"), rows)


def _show(urls: list[str], trace_id: str, output: str) -> None:
    merged = traceview.merge_traces(*([trace] for trace in _fetch(urls, f"/api/v2/trace/{trace_id}") if trace))
    if not merged:
        err.print(f"[red]error[/]: trace {trace_id} not found (the collector keeps the newest spans only)")
        raise typer.Exit(1)
    if output == "json":
        out.print(json.dumps(merged[0], indent=2), markup=False, highlight=False)
        return
    for line in traceview.tree_lines(merged[0]):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def traces(
    trace_id: Annotated[str | None, typer.Argument(help="Draw this trace as a tree with timings.")] = None,
    service: Annotated[
        str | None, typer.Option("-s", "--service", help="Only traces with a span of this service (reviews.default).")
    ] = None,
    min_duration: Annotated[
        str | None, typer.Option("--min-duration", help="Only traces with a span at least this long (100ms, 1s).")
    ] = None,
    limit: Annotated[int, typer.Option("-l", "--limit", min=1, help="At most this many traces, newest first.")] = 20,
    lookback: Annotated[str, typer.Option("--lookback", help="How far back to look (Zipkin's lookback).")] = "1h",
    output: Annotated[str, typer.Option("-o", "--output", help="'json': the spans as Zipkin's API gives them.")] = "",
    zipkin: Annotated[
        str | None,
        typer.Option("--zipkin", help="The collector's URL. Default: the control plane's host, port 9411."),
    ] = None,
    control_plane: ControlPlane = None,
    kubeconfig: Kubeconfig = None,
    istio_namespace: IstioNamespace = "istio-system",
    revision: Revision = "",
) -> None:
    """List recent traces (id, root service and operation, spans, duration, start), or draw one.

    Spans come from every sidecar and gateway (Envoy's Zipkin tracer) to the control plane's collector,
    which also serves Zipkin's API on port 9411 for Zipkin's or Jaeger's UI and scripts.
    On Kubernetes ($KUBECONFIG or --kubeconfig) plait port-forwards to every istiod pod and merges.

    Example: [bold]plait traces --service productpage.default --min-duration 50ms[/]
    [bold]plait traces 463ac35c9f6413ad48485a3953bb6124[/]
    """
    if output not in ("", "json"):
        err.print("[red]error[/]: -o takes json")
        raise typer.Exit(2)
    query = {"limit": str(limit)}
    try:
        query["lookback"] = str(round(parse_duration(lookback) * 1000))
        if min_duration:
            query["minDuration"] = str(round(parse_duration(min_duration) * 1_000_000))
    except ValueError as exc:
        err.print(f"[red]error[/]: --min-duration/--lookback: {exc}")
        raise typer.Exit(2) from None
    if service:
        query["serviceName"] = service
    if zipkin:
        return (
            _show([zipkin.rstrip("/")], trace_id, output)
            if trace_id
            else _list([zipkin.rstrip("/")], query, limit, output)
        )
    cluster = cluster_of(control_plane, kubeconfig, istio_namespace, revision)
    with control_planes_reached(control_plane, cluster, ZIPKIN_PORT) as urls:
        if trace_id:
            _show(urls, trace_id, output)
        else:
            _list(urls, query, limit, output)


def register(app: typer.Typer) -> None:
    app.command("traces")(traces)
