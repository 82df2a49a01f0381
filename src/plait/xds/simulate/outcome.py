"""Where a request goes and why: the `Outcome` of a simulation and the records it is made of.

`Outcome` collects each decision (`Hop`), the listener, chain, virtual host and route chosen,
the clusters (`ClusterTarget` with their `Endpoint`s) and share of traffic, the route's
`Policies` (timeout, `Retries`, `Fault`, mirrors, header edits, rewrites, hashing, CORS), and
what Envoy answers itself when it does not forward (status and response flag), and the
`Authorization` decisions of the proxies that check the request (a gateway's own filters, the
destination sidecar's jwt_authn and RBAC filters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plait.xds.simulate.jwt import JwtOutcome
from plait.xds.simulate.rbac import Peer, RbacVerdict
from plait.xds.simulate.request import Request

RESPONSE_FLAGS = {"NR": "no route", "NC": "no cluster", "UH": "no healthy upstream"}
# What the simulator does not model and reports as such (`Outcome.not_modelled`), never guessing past it.
NOT_MODELLED = (
    "several filter chains match (they differ in what the simulator does not know)",
    "a filter chain that matches on source_ports (the client's port is not known)",
    "a route matcher other than path/prefix/regex/path_separated_prefix/CONNECT, headers, query parameters, gRPC",
    "a route action other than cluster, weighted_clusters, cluster_header, redirect, direct_response",
    "a filter chain whose network filter is neither an HTTP connection manager nor tcp_proxy",
    "an HTTP filter other than fault, CORS, RBAC, jwt_authn, gRPC-Web, dynamic forward proxy, buffer and the router",
)


@dataclass
class Hop:
    """One decision on the way: what was chosen and why."""

    stage: str
    name: str
    why: str = ""


@dataclass
class Endpoint:
    address: str
    weight: int | None = None
    locality: str | None = None
    metadata: dict = field(default_factory=dict)  # the lb endpoint's (transport socket match, …)


@dataclass
class ClusterTarget:
    """One upstream cluster the request may go to, with its share of the traffic."""

    name: str
    weight: int | None = None
    percent: float = 100.0
    kind: str = ""
    endpoints: list[Endpoint] = field(default_factory=list)
    exists: bool = True
    note: str = ""
    header_changes: list[str] = field(default_factory=list)  # a weighted cluster's own, "request set x: y"


@dataclass
class Fault:
    delay: str | None = None
    delay_percent: float | None = None
    abort_http_status: int | None = None
    abort_grpc_status: int | None = None
    abort_percent: float | None = None


@dataclass
class Retries:
    attempts: int
    retry_on: str = ""
    per_try_timeout: str | None = None
    retriable_status_codes: list[int] = field(default_factory=list)
    how: list[str] = field(default_factory=list)  # host choice, locality, backoff, in words


@dataclass
class Policies:
    timeout: str | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    mirrors: list[tuple[str, float]] = field(default_factory=list)
    request_headers: list[str] = field(default_factory=list)
    response_headers: list[str] = field(default_factory=list)
    rewrite: list[str] = field(default_factory=list)
    hash_policy: list[str] = field(default_factory=list)
    cors: dict | None = None


@dataclass
class Authorization:
    """What one proxy's jwt_authn and RBAC filters do with the request (or connection)."""

    proxy: str  # the workload (namespace/name) whose filters ran
    where: str  # listener and filter chain
    peer: Peer
    role: str = "destination"  # "gateway": the gateway's own filters, on the request it receives
    jwt: JwtOutcome | None = None
    rbac: list[RbacVerdict] = field(default_factory=list)
    status: int | None = None  # 401/403 when Envoy answers instead of forwarding
    refused: bool = False  # a TCP connection closed by a network RBAC filter
    summary: str = ""  # "ALLOWED by …", "DENIED: …", in Istio's terms once explained
    details: list[str] = field(default_factory=list)
    jwt_lines: list[str] = field(default_factory=list)

    @property
    def denied(self) -> bool:
        return self.status is not None or self.refused


@dataclass
class Outcome:
    """Where a request goes and why. `status` is set when Envoy itself answers (404 NR, 503 NC, redirects…)."""

    request: Request
    proxy: str
    mode: str
    hops: list[Hop] = field(default_factory=list)
    protocol: str = "http"
    destination: str | None = None
    listener: str | None = None
    filter_chain: str | None = None
    route_config: str | None = None
    virtual_host: str | None = None
    route: str | None = None
    route_index: int | None = None
    virtual_service: str | None = None
    vs_route: str | None = None
    skipped_routes: list[str] = field(default_factory=list)
    action: str = "none"
    clusters: list[ClusterTarget] = field(default_factory=list)
    status: int | None = None
    response_flag: str | None = None
    location: str | None = None
    body: str | None = None
    upstream_path: str | None = None
    upstream_host: str | None = None
    policies: Policies = field(default_factory=Policies)
    notes: list[str] = field(default_factory=list)
    authorization: list[Authorization] = field(default_factory=list)
    refused: bool = False  # the TCP connection is closed by RBAC
    unmodelled: str | None = None  # why the simulator cannot say what Envoy does (see `not_modelled`)

    def step(self, stage: str, name: str, why: str = "") -> None:
        self.hops.append(Hop(stage, name, why))

    def fail(self, status: int | None, flag: str | None, why: str) -> Outcome:
        self.status, self.response_flag = status, flag
        self.notes.append(why)
        return self

    def not_modelled(self, why: str) -> Outcome:
        """Stop: what comes next is something the simulator does not model, so it does not guess.
        The cases (kept few, and each one listed in NOT_MODELLED): several filter chains match; a
        route matcher it does not evaluate; a route action, network filter or HTTP filter it does not follow."""
        self.unmodelled = why
        self.notes.append(f"not modelled: {why}")
        return self

    @property
    def failed(self) -> bool:
        """Envoy does not forward the request (and does not answer it with a redirect or direct response)."""
        answered = self.action in ("redirect", "direct_response", "bypass")
        return (
            self.unmodelled is not None
            or not answered
            and (self.status is not None or self.response_flag is not None or not self.clusters or self.refused)
        )

    @property
    def cluster_names(self) -> list[str]:
        return [c.name for c in self.clusters]

    def summary(self) -> str:
        """One line: where it lands, or what Envoy answers."""
        if self.unmodelled is not None:
            return f"not modelled by plait's simulator: {self.unmodelled}"
        if self.action == "redirect":
            return f"{self.status} redirect to {self.location}"
        if self.action == "direct_response":
            return f"{self.status} direct response" + (f": {self.body!r}" if self.body else "")
        if self.action == "bypass":
            return f"not through the sidecar: {self.notes[-1]}"
        if self.failed:
            what = f"{self.status or ''} {RESPONSE_FLAGS.get(self.response_flag or '', '')}".strip()
            flag = f" ({self.response_flag})" if self.response_flag else ""
            return f"{what or 'fails'}{flag}: {self.notes[-1] if self.notes else 'nothing matched'}"
        if len(self.clusters) == 1:
            return self.clusters[0].name
        return ", ".join(f"{c.percent:g}% {c.name}" for c in self.clusters)
