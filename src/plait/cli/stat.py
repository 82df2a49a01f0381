"""`plait stat` and `plait edges` (linkerd viz stat / edges) for the local mesh. In: the mesh's state
(``state.json``: pods, services, Prometheus' URL) and the CLI's flags. Out: linkerd's tables (or JSON) on
stdout. The numbers come from the mesh's Prometheus when it runs one, else from two reads of every proxy's
``/stats/prometheus`` a few seconds apart (said on stderr). Thin I/O over `plait.telemetry.stat`."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated

import typer

from plait.api.common import parse_duration
from plait.cli.console import err, out
from plait.client import ClientError, Http
from plait.host.processes import alive
from plait.runtime.local import State, scrape_targets
from plait.telemetry import stat
from plait.telemetry.metrics import WORKLOAD_NAME_LABEL

StateDir = Annotated[Path, typer.Option(help="The local mesh's run directory.")]
Namespace = Annotated[str, typer.Option("-n", "--namespace", help="Namespace of the resources.")]
Output = Annotated[str, typer.Option("-o", "--output", help="table (default), wide (with TCP byte rates) or json.")]
# seconds between the two reads of the proxies without Prometheus: Envoy's histograms (the latencies) are
# exported as of its last stats flush (every 5 s), so the reads must have one between them
DIRECT_INTERVAL = 6.0
Fetch = Callable[[stat.Series, Mapping[str, str], tuple[str, ...]], dict]
Direct = Annotated[
    bool,
    typer.Option(
        "--direct", help="Read the proxies' /stats/prometheus (twice, a few seconds apart) even when Prometheus runs."
    ),
]


def _state_or_exit(state_dir: Path) -> State:
    state = State.load(state_dir)
    if state is None or not state.supervisor_pid or not alive(state.supervisor_pid):
        err.print(
            f"[red]error[/]: no mesh running from {state_dir} (start one with 'plait up' or 'plait demo bookinfo')"
        )
        raise typer.Exit(1)
    return state


def _prometheus_fetch(url: str, window: str) -> Fetch:
    api = Http(url, what="Prometheus", timeout=10)

    def fetch(series: stat.Series, matchers: Mapping[str, str], by: tuple[str, ...]) -> dict:
        query = stat.promql(series, matchers, by, window)
        return stat.vector(api.get("/api/v1/query?" + urllib.parse.urlencode({"query": query})), [*by, *series.extra])

    return fetch


def _read_proxies(state: State) -> list[stat.Sample]:
    samples = []
    for target in scrape_targets(state.pods):
        try:
            text = Http(f"http://{target.address}", what=f"proxy {target.pod}", timeout=5).get(target.metrics_path)
        except ClientError as exc:
            err.print(f"warning: {exc}", markup=False, style="yellow")
            continue
        samples += stat.parse_exposition(text or "", {"namespace": target.namespace, "pod": target.pod})
    return samples


def _direct_fetch(state: State, why: str) -> Fetch:
    err.print(
        f"{why}: rates from two reads of every proxy's /stats/prometheus {DIRECT_INTERVAL:.0f}s "
        "apart (counters since each proxy started)",
        markup=False,
    )
    before = _read_proxies(state)
    started = time.monotonic()
    time.sleep(DIRECT_INTERVAL)
    after = _read_proxies(state)
    per_second = stat.rates(before, after, time.monotonic() - started)

    def fetch(series: stat.Series, matchers: Mapping[str, str], by: tuple[str, ...]) -> dict:
        return stat.evaluate(per_second if series.rate else after, series, matchers, by)

    return fetch


def _fetcher(state: State, window: str, direct: bool) -> Fetch:
    if not direct and state.prometheus and state.prometheus_pid and alive(state.prometheus_pid):
        return _prometheus_fetch(state.prometheus, window)
    return _direct_fetch(state, "--direct" if direct else "no Prometheus in this mesh")


def inventory(state: State, kind: str) -> stat.Inventory:
    """Deployments (meshed/total pods), pods (1/1) or services (no MESHED) of the local mesh."""
    rows: dict[tuple[str, str], tuple[int, int]] = {}
    sidecars = [p for p in state.pods if p.kind != "gateway"]
    if kind == "svc":
        return stat.Inventory({tuple(ref.split("/", 1)): (0, 0) for ref in state.services})
    for pod in sidecars:
        running = 1 if pod.pid and alive(pod.pid) else 0
        if kind == "po":
            rows[(pod.namespace, pod.name)] = (running, 1)
        else:
            key = (pod.namespace, pod.labels.get(WORKLOAD_NAME_LABEL, pod.deployment))
            meshed, total = rows.get(key, (0, 0))
            rows[key] = (meshed + running, total + 1)
    return stat.Inventory(rows)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.print("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), markup=False, highlight=False)


def _query_or_exit(build: Callable):
    try:
        return build()
    except stat.QueryError as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from None


def stat_command(
    resource: Annotated[str, typer.Argument(help="deploy, svc or po.")],
    name: Annotated[str | None, typer.Argument(help="Only this one.")] = None,
    namespace: Namespace = "default",
    from_: Annotated[
        str | None,
        typer.Option("--from", help="Only requests from this workload (deploy/NAME), as its sidecar saw them."),
    ] = None,
    time_window: Annotated[str, typer.Option("-t", "--time-window", help="Window of the rates (Prometheus).")] = "1m",
    output: Output = "table",
    direct: Direct = False,
    state_dir: StateDir = Path(".plait"),
) -> None:
    """Golden metrics per deployment, service or pod, as linkerd viz stat: success rate, requests per
    second, latency percentiles, open TCP connections.

    Example: [bold]plait stat deploy[/], [bold]plait stat deploy reviews-v2 --from deploy/productpage-v1[/], [bold]plait stat svc -o json[/]
    """
    try:
        parse_duration(time_window)
    except ValueError as exc:
        err.print(f"[red]error[/]: --time-window: {exc}")
        raise typer.Exit(2) from None
    source = from_.split("/", 1)[1] if from_ and "/" in from_ else from_
    query = _query_or_exit(lambda: stat.StatQuery(stat.resource_kind(resource), namespace, name, source, time_window))
    state = _state_or_exit(state_dir)
    fetch = _fetcher(state, time_window, direct)
    try:
        results = {ask.series.key: fetch(*ask) for ask in query.plan(output == "wide")}
    except (ClientError, stat.QueryError) as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(1) from None
    rows = stat.stat_rows(query, results, inventory(state, query.kind))
    if output == "json":
        out.print_json(json.dumps(stat.stat_json(rows)))
    else:
        _print_table(stat.stat_table(rows, wide=output == "wide"))


def edges_command(
    resource: Annotated[str, typer.Argument(help="deploy or po.")] = "deploy",
    namespace: Namespace = "default",
    output: Annotated[str, typer.Option("-o", "--output", help="table (default) or json.")] = "table",
    direct: Direct = False,
    state_dir: StateDir = Path(".plait"),
) -> None:
    """Who calls whom, as linkerd viz edges: source and destination workloads and whether their traffic
    is mutual TLS (SECURED), from what the servers' sidecars counted.

    Example: [bold]plait edges deploy[/]
    """
    query = _query_or_exit(lambda: stat.EdgesQuery(stat.resource_kind(resource), namespace))
    state = _state_or_exit(state_dir)
    fetch = _fetcher(state, "1m", direct)
    try:
        results = {ask.series.key: fetch(*ask) for ask in query.plan()}
    except (ClientError, stat.QueryError) as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(1) from None
    rows = stat.edges(query, results)
    if output == "json":
        out.print_json(json.dumps(stat.edges_json(rows)))
    else:
        _print_table(stat.edges_table(rows))


def register(app: typer.Typer) -> None:
    app.command("stat")(stat_command)
    app.command("edges")(edges_command)
