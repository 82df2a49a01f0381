"""``plait explain`` and ``plait demo bookinfo``: where a request goes, and why.

Both are thin shells over ``plait.xds.simulate``: load the configuration, build
the source proxy's Envoy resources, follow the request as Envoy would, print
the outcome. Nothing runs and nothing is sent; the answer comes from the
configuration alone. When AuthorizationPolicies or RequestAuthentications are
in force, explain also says which policy allowed or denied the request at the
gateway and at each destination workload, and why (a JWT in the request is
decoded locally, its signature checked against inline keys only).
``register(app)`` adds both commands to the ``plait`` CLI.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plait.api.resources import Resource
from plait.cli.common import load_or_exit, proxy_for
from plait.lower import with_gateway_api
from plait.model import MeshSnapshot
from plait.model.services import Endpoint as RegistryEndpoint
from plait.xds.simulate import Authorization, ClusterTarget, Outcome, Policies, Request, simulate_mesh
from plait.xds.simulate.inbound import Caller, with_mesh_identity
from plait.xds.simulate.rbac import Peer
from plait.xds.translate.common import parse_cluster_name

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo" / "bookinfo"


# ----------------------------------------------------------------------------- plait explain


def parse_header(text: str) -> tuple[str, str]:
    """``'end-user: jason'`` → ``('end-user', 'jason')``; a leading ``:`` (pseudo-header) is kept."""
    lead = ":" if text.startswith(":") else ""
    name, sep, value = text[len(lead) :].partition(":")
    if not sep or not name.strip():
        raise ValueError(f"header {text!r} is not of the form 'name: value'")
    return lead + name.strip(), value.strip()


def endpoint_index(snapshot: MeshSnapshot) -> dict[str, RegistryEndpoint]:
    """Registry endpoints by ``address:port``, to name the workload behind an Envoy endpoint."""
    return {
        f"{ep.address}:{ep.port}": ep
        for svc in snapshot.services.values()
        for eps in svc.endpoints.values()
        for ep in eps
    }


def explain(
    filename: Annotated[
        list[Path],
        typer.Option("-f", "--filename", help="A YAML file or a directory of them (read recursively). Repeatable."),
    ],
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="The workload sending the request (WorkloadEntry name or namespace/name); "
            "a gateway workload (istio=ingressgateway) receives it instead.",
        ),
    ],
    url: Annotated[str, typer.Option("--url", help="The request URL, e.g. http://reviews:9080/reviews/0")],
    header: Annotated[
        list[str], typer.Option("-H", "--header", help="A request header 'name: value'. Repeatable.")
    ] = [],  # noqa: B006
    method: Annotated[str, typer.Option("--method", "-X", help="HTTP method.")] = "GET",
    mode: Annotated[str, typer.Option(help="Sidecar mode: 'capture' (iptables) or 'proxy' (HTTP_PROXY).")] = "capture",
    output: Annotated[str, typer.Option("-o", "--output", help="text or json")] = "text",
    source_principal: Annotated[
        str | None,
        typer.Option(
            "--source-principal",
            help="Assume the caller presents this mTLS identity "
            "(spiffe://cluster.local/ns/NS/sa/SA) to the destination.",
        ),
    ] = None,
    source_ip: Annotated[
        str | None,
        typer.Option(
            "--source-ip",
            help="The caller's address: the outside client of a gateway, or instead of the source workload's.",
        ),
    ] = None,
) -> None:
    """Follow a request through the source proxy's Envoy configuration, as Envoy would.

    Shows each choice and why: listener, filter chain, route configuration, virtual host, route.

    Then the VirtualService rule, the clusters with their weights and endpoints, and the policies applied;
    with AuthorizationPolicies or RequestAuthentications in force, which policy allowed or denied it, and why.

    Example: [bold]plait explain -f mesh/ --from productpage-v1 --url http://reviews:9080/ -H 'end-user: jason'[/]
    """
    if mode not in ("capture", "proxy") or output not in ("text", "json"):
        err.print("[red]error[/]: --mode takes capture or proxy; -o takes text or json")
        raise typer.Exit(2)
    try:
        request = Request.from_url(url, method, [parse_header(h) for h in header])
    except ValueError as exc:
        err.print(f"[red]error[/]: {exc}", markup=True)
        raise typer.Exit(1) from None
    snapshot = MeshSnapshot(with_gateway_api(load_or_exit(filename, show_warnings=False).resources))
    proxy = with_mesh_identity(proxy_for(snapshot, source, mode), snapshot)
    caller = Caller(ip=source_ip, principal=source_principal)
    outcome = simulate_mesh(snapshot, proxy, request, now=time.time(), caller=caller)
    workloads = endpoint_index(snapshot)
    if output == "json":
        out.print(json.dumps(outcome_json(outcome, workloads), indent=2, ensure_ascii=False), markup=False)
    else:
        print_outcome(outcome, workloads, source=proxy.workload)


def outcome_json(outcome: Outcome, workloads: dict[str, RegistryEndpoint]) -> dict:
    """The Outcome as JSON, each endpoint with the workload and labels behind it when known."""
    data = dataclasses.asdict(outcome)
    data["request"].update(url=outcome.request.url, authority=outcome.request.authority)
    data["summary"] = outcome.summary()
    for cluster in data["clusters"]:
        for endpoint in cluster["endpoints"]:
            known = workloads.get(endpoint["address"])
            endpoint["workload"] = known.workload if known else None
            endpoint["labels"] = dict(known.labels) if known else {}
    return data


def print_outcome(outcome: Outcome, workloads: dict[str, RegistryEndpoint], source: str) -> None:
    request = outcome.request
    out.print(
        f"[bold]{escape(request.method)} {escape(request.url)}[/]  from [bold]{escape(source)}[/] "
        f"({outcome.mode})\n  [dim]proxy {escape(outcome.proxy)}[/]"
    )
    for name, value in request.headers:
        out.print(f"  [dim]header[/] {escape(name)}: {escape(value)}")
    out.print()
    for hop in outcome.hops:
        if hop.stage == "route":
            print_skipped(outcome)
        out.print(f"  [cyan]{hop.stage:<13}[/] [bold]{escape(hop.name)}[/]")
        if hop.why:
            out.print(f"  {'':<13} [dim]{escape(hop.why)}[/]")
    if outcome.route is None:
        print_skipped(outcome)
    out.print()
    refused_there = refused_by_destination(outcome)
    print_result(outcome, workloads, refused_there)
    print_policies(outcome.policies)
    print_authorization(outcome.authorization)
    if refused_there:
        out.print(f"\n[red]→ {escape(outcome.summary())}[/]")
    for note in outcome.notes[:-1] if outcome.failed or outcome.action == "bypass" else outcome.notes:
        out.print(f"[yellow]note[/]: {escape(note)}")


def refused_by_destination(outcome: Outcome) -> bool:
    """The request is forwarded, and the destination's sidecar answers 401/403 (or closes the connection)."""
    checks = [a for a in outcome.authorization if a.role == "destination"]
    return outcome.failed and bool(outcome.clusters) and bool(checks) and all(a.denied for a in checks)


def _source(peer: Peer) -> str:
    who = f"{peer.principal} (mTLS)" if peer.principal else "no peer certificate (plaintext)"
    return f"{who}, {peer.source_ip or 'address unknown'}"


def authorization_groups(checks: list[Authorization]) -> list[tuple[list[str], Authorization]]:
    """Workloads that decide alike, listed together: (their names, one of their decisions)."""
    groups: dict[tuple, tuple[list[str], Authorization]] = {}
    for auth in checks:
        key = (auth.summary, tuple(auth.details), tuple(auth.jwt_lines), _source(auth.peer))
        groups.setdefault(key, ([], auth))[0].append(auth.proxy + (" (gateway)" if auth.role == "gateway" else ""))
    return list(groups.values())


def print_authorization(checks: list[Authorization]) -> None:
    for proxies, auth in authorization_groups(checks):
        out.print(f"\n[cyan]authorization[/] at [bold]{escape(', '.join(proxies))}[/]  [dim]{escape(auth.where)}[/]")
        out.print(f"  {'source':<13} {escape(_source(auth.peer))}")
        for line in auth.jwt_lines:
            out.print(f"  {'jwt':<13} {escape(line)}")
        for line in auth.details:
            out.print(f"  {'':<13} [dim]{escape(line)}[/]")
        colour = "red" if auth.denied else "green"
        out.print(f"  [{colour}]→ {escape(auth.summary)}[/]")


def print_skipped(outcome: Outcome) -> None:
    for skipped in outcome.skipped_routes:
        out.print(f"  [dim]{'skipped':<13} route {escape(skipped)}[/]")


def _labels(endpoint_address: str, workloads: dict[str, RegistryEndpoint]) -> str:
    known = workloads.get(endpoint_address)
    if known is None:
        return ""
    labels = " ".join(f"{k}={v}" for k, v in sorted(known.labels.items()))
    return f"{escape(known.workload or '')}  [dim]{escape(labels)}[/]"


def print_result(outcome: Outcome, workloads: dict[str, RegistryEndpoint], refused_there: bool = False) -> None:
    if not refused_there and (outcome.failed or outcome.action in ("redirect", "direct_response", "bypass")):
        colour = "red" if outcome.failed else "yellow"
        out.print(f"[{colour}]→ {escape(outcome.summary())}[/]")
        return
    out.print("[green]→ lands on[/]" + (" (TCP)" if outcome.protocol == "tcp" else ""))
    for cluster in outcome.clusters:
        note = f"  [yellow]{escape(cluster.note)}[/]" if cluster.note else ""
        out.print(f"  [bold]{escape(cluster.name)}[/]  {cluster.percent:g}%  [dim]{cluster.kind}[/]{note}")
        for endpoint in cluster.endpoints:
            out.print(f"      {escape(endpoint.address)}  {_labels(endpoint.address, workloads)}")
        for change in cluster.header_changes:
            out.print(f"      [dim]header {escape(change)}[/]")
    if outcome.upstream_path and outcome.upstream_path != request_target(outcome.request):
        out.print(f"  [dim]upstream path[/] {escape(outcome.upstream_path)}")


def request_target(request: Request) -> str:
    return request.path + (f"?{request.query}" if request.query else "")


def describe_fault(policies: Policies) -> str:
    fault = policies.fault
    if fault is None:
        return ""
    parts = []
    if fault.delay:
        parts.append(f"delay {fault.delay} ({fault.delay_percent:g}%)")
    if fault.abort_http_status is not None or fault.abort_grpc_status is not None:
        code = fault.abort_http_status if fault.abort_http_status is not None else f"grpc {fault.abort_grpc_status}"
        parts.append(f"abort {code} ({fault.abort_percent:g}%)")
    return ", ".join(parts)


def policy_lines(policies: Policies) -> list[tuple[str, str]]:
    """(name, description) for each policy the route applies."""
    lines = [("timeout", policies.timeout or "")]
    if policies.retries:
        r = policies.retries
        codes = f" (status {', '.join(map(str, r.retriable_status_codes))})" if r.retriable_status_codes else ""
        per_try = f", {r.per_try_timeout} per try" if r.per_try_timeout else ""
        how = f"; {', '.join(r.how)}" if r.how else ""
        lines.append(("retries", f"{r.attempts} on {r.retry_on}{codes}{per_try}{how}"))
    lines.append(("fault", describe_fault(policies)))
    lines += [("mirror", f"{cluster} ({share:g}%)") for cluster, share in policies.mirrors]
    lines += [("rewrite", change) for change in policies.rewrite]
    lines += [("request header", change) for change in policies.request_headers]
    lines += [("response header", change) for change in policies.response_headers]
    lines += [("hash", key) for key in policies.hash_policy]
    if policies.cors:
        lines.append(("cors", ", ".join(f"{k}={v}" for k, v in policies.cors.items() if k != "@type")))
    return [(name, text) for name, text in lines if text]


def print_policies(policies: Policies) -> None:
    lines = policy_lines(policies)
    if lines:
        out.print("\n[cyan]policies[/]")
    for name, text in lines:
        out.print(f"  {name:<16} {escape(text)}")


# ----------------------------------------------------------------------------- plait demo bookinfo


@dataclass(frozen=True)
class Scenario:
    title: str
    lesson: str
    files: tuple[str, ...]  # VirtualService files applied in order, as `kubectl apply` would


SCENARIOS = (
    Scenario(
        "No VirtualService", "Istio's default: least-request load balancing over every reviews pod (v1, v2, v3).", ()
    ),
    Scenario(
        "virtual-service-all-v1.yaml", "Request routing: every service pinned to v1.", ("virtual-service-all-v1.yaml",)
    ),
    Scenario(
        "virtual-service-reviews-test-v2.yaml",
        "Routing on a header: jason gets reviews v2, everyone else v1.",
        ("virtual-service-all-v1.yaml", "virtual-service-reviews-test-v2.yaml"),
    ),
    Scenario(
        "virtual-service-reviews-jason-v2-v3.yaml",
        "jason gets reviews v2, everyone else v3.",
        ("virtual-service-all-v1.yaml", "virtual-service-reviews-jason-v2-v3.yaml"),
    ),
    Scenario(
        "virtual-service-reviews-80-20.yaml",
        "Traffic shifting: 80% of requests to v1, 20% to v2.",
        ("virtual-service-all-v1.yaml", "virtual-service-reviews-80-20.yaml"),
    ),
    Scenario(
        "virtual-service-ratings-test-delay.yaml",
        "Fault injection: ratings answers jason after a 7s delay.",
        (
            "virtual-service-all-v1.yaml",
            "virtual-service-reviews-test-v2.yaml",
            "virtual-service-ratings-test-delay.yaml",
        ),
    ),
    Scenario(
        "virtual-service-ratings-test-abort.yaml",
        "Fault injection: ratings answers jason with HTTP 500.",
        (
            "virtual-service-all-v1.yaml",
            "virtual-service-reviews-test-v2.yaml",
            "virtual-service-ratings-test-abort.yaml",
        ),
    ),
)

JASON = (("end-user", "jason"),)
# (label, source workload, URL, headers)
DEMO_REQUESTS = (
    ("productpage → reviews", "productpage-v1", "http://reviews:9080/reviews/0", ()),
    ("productpage → reviews", "productpage-v1", "http://reviews:9080/reviews/0", JASON),
    ("reviews-v2 → ratings", "reviews-v2", "http://ratings:9080/ratings/0", ()),
    ("reviews-v2 → ratings", "reviews-v2", "http://ratings:9080/ratings/0", JASON),
    ("gateway → /productpage", "istio-ingressgateway", "http://bookinfo.example.com/productpage", ()),
    ("gateway → /admin", "istio-ingressgateway", "http://bookinfo.example.com/admin", ()),
)
BASE_FILES = ("services.yaml", "networking/bookinfo-gateway.yaml", "networking/destination-rule-all.yaml")


def _load(files: list[Path]) -> list[Resource]:
    return load_or_exit(files, show_warnings=False).resources


def scenario_snapshot(base: list[Resource], scenario: Scenario, cache: dict[str, list[Resource]]) -> MeshSnapshot:
    """The base config with the scenario's files applied in order (a later object replaces an earlier one)."""
    objects = {r.key: r for r in base}
    for name in scenario.files:
        if name not in cache:
            cache[name] = _load([DEMO_DIR / "networking" / name])
        objects.update((r.key, r) for r in cache[name])
    return MeshSnapshot(objects.values())


def lands_on(outcome: Outcome, workloads: dict[str, RegistryEndpoint]) -> str:
    """A short answer: ``reviews v2``, ``reviews v1 80%, v2 20%``, ``404 no route (NR)``."""
    if outcome.response_flag == "NR":
        return "[red]404 no route (NR)[/]"
    if outcome.failed or outcome.action in ("redirect", "direct_response", "bypass"):
        return f"[red]{escape(outcome.summary())}[/]"
    parts = [escape(_cluster_short(c, workloads)) for c in outcome.clusters]
    if len(parts) == 1:
        return parts[0]
    services = {part.split(" ")[0] for part in parts}
    if len(services) == 1:  # "reviews v1 80%, v2 20%"
        return (
            services.pop()
            + " "
            + ", ".join(f"{part.partition(' ')[2]} {c.percent:g}%" for part, c in zip(parts, outcome.clusters))
        )
    return ", ".join(f"{part} {c.percent:g}%" for part, c in zip(parts, outcome.clusters))


def _cluster_short(cluster: ClusterTarget, workloads: dict[str, RegistryEndpoint]) -> str:
    parsed = parse_cluster_name(cluster.name)
    if parsed is None:
        return cluster.name
    _, _, subset, host = parsed
    service = host.split(".")[0]
    if subset:
        return f"{service} {subset}"
    versions = sorted(
        {workloads[e.address].labels.get("version", "?") for e in cluster.endpoints if e.address in workloads}
    )
    if len(versions) > 1:
        return f"{service} {', '.join(versions)}"
    return f"{service} {versions[0]}" if versions else service


def _rule(outcome: Outcome) -> str:
    if outcome.virtual_service:
        return f"{outcome.virtual_service.split('/')[-1]} {outcome.vs_route}"
    if outcome.route == "default":
        spread = any(len(c.endpoints) > 1 for c in outcome.clusters)
        return "default: all pods" if spread else "default route"
    return ""


def scenario_rows(snapshot: MeshSnapshot) -> list[tuple[str, str, str]]:
    """(request, lands on, rule) for each demo request; a fault is shown under where it lands."""
    workloads, proxies, rows = endpoint_index(snapshot), {}, []
    for label, workload, url, headers in DEMO_REQUESTS:
        proxy = proxies.setdefault(workload, proxy_for(snapshot, workload, "capture"))
        outcome = simulate_mesh(snapshot, proxy, Request.from_url(url, headers=headers))
        user = dict(headers).get("end-user")
        fault = describe_fault(outcome.policies)
        rows.append(
            (
                label + (f" [magenta]{escape(user)}[/]" if user else ""),
                lands_on(outcome, workloads) + (f"\n[yellow]{escape(fault)}[/]" if fault else ""),
                escape(_rule(outcome)),
            )
        )
    return rows


def scenario_table(scenario: Scenario, snapshot: MeshSnapshot, number: int) -> Table:
    table = Table(
        title=f"[bold]{number}. {scenario.title}[/]\n[dim]{scenario.lesson}[/]",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("request", overflow="fold")
    table.add_column("lands on", style="bold", overflow="fold")
    table.add_column("rule", overflow="fold")
    for row in scenario_rows(snapshot):
        table.add_row(*row)
    return table


def shown_path(path: Path) -> str:
    """A path as the user can type it: relative to the working directory when below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def next_step_hint() -> str:
    """The `plait explain` command line for jason's request to reviews, with paths the user can paste."""
    files = [
        "services.yaml",
        "networking/destination-rule-all.yaml",
        "networking/virtual-service-reviews-jason-v2-v3.yaml",
    ]
    args = [arg for f in files for arg in ("-f", shlex.quote(shown_path(DEMO_DIR / f)))]
    return (
        "plait explain "
        + " ".join(args)
        + " --from productpage-v1 --url http://reviews:9080/reviews/0 -H 'end-user: jason'"
    )


def bookinfo() -> None:
    """Istio's Bookinfo routing tasks, explained: for each sample VirtualService, where requests land.

    Uses the Bookinfo services and Istio's own sample files, shipped with plait; nothing is started.
    This is `plait demo bookinfo --explain`.
    """
    base = _load([DEMO_DIR / f for f in BASE_FILES])
    out.print(
        "[bold]Bookinfo[/], routed by Istio's own sample configuration, one task at a time.\n"
        "Each table follows requests through the Envoy configuration plait generates: where each lands "
        "and by which rule (VirtualService http\\[i].match\\[j]).\n"
        "[magenta]jason[/] marks a request with the header end-user: jason "
        f"(Bookinfo's logged-in user).  [dim]Files: {shown_path(DEMO_DIR)}[/]\n"
    )
    cache: dict[str, list[Resource]] = {}
    for number, scenario in enumerate(SCENARIOS, 1):
        snapshot = scenario_snapshot(base, scenario, cache)
        out.print(scenario_table(scenario, snapshot, number))
        if scenario.files:
            out.print(f"   [dim]applied: {', '.join(scenario.files)}[/]")
        out.print()
    out.print(
        "[bold]Next[/]: see every step Envoy takes for one request (listener, route, cluster, endpoints, "
        f"policies):\n  [green]{escape(next_step_hint())}[/]",
        markup=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``plait explain`` to the CLI (``plait demo bookinfo --explain`` calls `bookinfo`)."""
    app.command()(explain)
