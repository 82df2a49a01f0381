"""The control plane's HTTP API and debug port (15014): what the CLI, agents and people talk to.

    GET  /ready                          200 once config is loaded and the ADS server listens
    GET  /metrics                        Prometheus text
    GET  /version                        plait version and this control plane's name ($POD_NAME, else the host name)
    GET  /debug/syncz                    every connected proxy and its per-type sync state
    GET  /debug/config_dump?proxy=ID     what was last sent to that proxy
    GET  /debug/scopez?proxy=ID          which mesh clusters that sidecar is sent (automatic scoping), and why
    GET  /api/v1/config[?kind=&namespace=&name=]   stored objects
    POST /api/v1/config[?dryRun=true&filename=F]   apply YAML: every document, or none
    POST /api/v1/config/delete           delete the objects named by a YAML body
    GET  /api/v1/nametable?proxy=ID[&autoAllocate=true][&wait=SECONDS]   that proxy's DNS name table
                                         (Istio's NDS, as JSON; ETag / If-None-Match → 304, after up
                                         to `wait` seconds, at most 60, unless it changes meanwhile)
    GET  /api/v1/workloads               registered workloads
    PUT  /api/v1/workloads/{ns}/{name}   register (JSON: address, labels, ports, serviceAccount, ready)
    PUT  /api/v1/workloads/{ns}/{name}/ready   {"ready": true|false}
    DELETE /api/v1/workloads/{ns}/{name}
    GET  /api/v1/tap?target=deploy/NAME&namespace=NS[&path=&method=&to=]   a tap session: JSON lines
                                         while the connection lasts (`plait.controlplane.tap` adds it)

Handlers only translate between HTTP and `MeshState`/the hub; errors are JSON
``{"problems": [...]}`` with the same fields `plait validate` prints.

Access (when the control plane gives an admin token; without one everything is open, as before):
requests from the host itself (peer 127.0.0.1 or ::1; not 127.1.x.y, where proxy-mode pods
live) are allowed; from elsewhere, /ready, /metrics, /version and /api/v1/nametable are open (as
istiod's 15014; the name table holds service names and addresses, what cluster DNS tells anyone),
workload registration (PUT/DELETE /api/v1/workloads/{ns}/{name}…) takes a pod's token for that
namespace and service account, and everything else takes the admin token: 401 without it, 403
when a pod's token does not entitle it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from plait import __version__
from plait.api.errors import Problem
from plait.api.loader import LoadResult, parse_text
from plait.api.resources import api_kind
from plait.ca.authority import load_or_create_secret
from plait.ca.tokens import InvalidToken
from plait.controlplane.mesh import MeshState
from plait.lower import lower
from plait.model import Proxy
from plait.sources.files import Change
from plait.sources.workloads import parse_workload
from plait.xds.nametable import build_name_table

log = logging.getLogger("plait.controlplane")
HOST_PEERS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
MAX_NAME_TABLE_WAIT = 60.0  # seconds a name-table request may wait for a change
OPEN_ROUTES = ("/ready", "/metrics", "/version", "/api/v1/nametable", "/api/v1/prometheus/targets")
WORKLOAD_ROUTES = ("/api/v1/workloads/{namespace}/{name}", "/api/v1/workloads/{namespace}/{name}/ready")
HOW_TO_GET_ACCESS = (
    "run the CLI on the control plane's host, or set PLAIT_API_TOKEN to the control plane's "
    "admin token (the file api-token in its state directory)"
)


def admin_token_path(state_dir: Path) -> Path:
    return state_dir / "api-token"


def load_or_create_admin_token(path: Path) -> str:
    """The admin token kept in `path`, created the first time (random, 0600, in a 0700 directory).
    It survives restarts, so a token handed out keeps working; delete the file and restart to change it."""
    return load_or_create_secret(path, lambda: secrets.token_urlsafe(32).encode()).decode().strip()


class PodIdentity(Protocol):
    namespace: str
    service_account: str


TokenVerifier = Callable[[str], PodIdentity]  # raises InvalidToken, e.g. plait.ca.tokens.TokenIssuer.verify


class HubView(Protocol):
    metrics: CollectorRegistry

    def statuses(self) -> list[Any]: ...

    def config_dump(self, proxy_id: str) -> dict | None: ...

    def scope_of(self, proxy_id: str) -> dict | None: ...

    def proxy(self, proxy_id: str) -> Proxy | None: ...


def problem_dict(p: Problem) -> dict:
    return dataclasses.asdict(p)


def change_dict(change: Change) -> dict:
    as_ref = lambda keys: [f"{k[0]} {k[1]}/{k[2]}" for k in keys]  # noqa: E731
    return {
        "created": as_ref(change.created),
        "updated": as_ref(change.updated),
        "deleted": as_ref(change.deleted),
        "unchanged": as_ref(change.unchanged),
        "problems": [problem_dict(p) for p in change.problems],
    }


def _rejected(problems: list[Problem], status: int = 400) -> web.Response:
    return web.json_response({"problems": [problem_dict(p) for p in problems]}, status=status)


async def _json_object(request: web.Request) -> dict:
    """The request body as a JSON object, or a 400 that says what was expected."""
    try:
        body = json.loads(await request.text())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "expected a JSON object body, e.g. {\\"address\\": \\"10.0.0.1\\"}"}',
            content_type="application/json",
        )
    return body


def _error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": message}), content_type="application/json")


def _unauthorized(message: str) -> web.HTTPException:
    error = _error(web.HTTPUnauthorized, message)
    error.headers["WWW-Authenticate"] = 'Bearer realm="plait"'
    return error


def _peer_ip(request: web.Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The TCP peer's address (never a forwarded header); an IPv4-mapped IPv6 address as IPv4."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not isinstance(peer, tuple):
        return None
    try:
        ip = ipaddress.ip_address(peer[0].split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def _per_proxy(request: web.Request, view: Callable[[str], dict | None]) -> web.Response:
    """A debug view of one connected proxy (``?proxy=NODE_ID``); 404 when none is connected."""
    proxy = request.query.get("proxy", "")
    found = view(proxy)
    if found is None:
        return web.json_response({"error": f"no connected proxy {proxy!r}; see /debug/syncz"}, status=404)
    return web.json_response(found)


def _seconds(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise _error(web.HTTPBadRequest, f"{name}={text!r}: expected a number of seconds")
    return value


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Access:
    """Who may call which route; `admin_token` None leaves the API open to every peer (the old default)."""

    def __init__(self, admin_token: str | None = None, token_verifier: TokenVerifier | None = None):
        self.admin_token = admin_token.encode() if admin_token else None
        self.token_verifier = token_verifier

    def check(self, request: web.Request) -> None:
        """Return if the request may go on to its handler; raise 401 otherwise."""
        if self._trusted(request) or self._route(request) in OPEN_ROUTES:
            return
        if self._route(request) in WORKLOAD_ROUTES and request.method in ("PUT", "DELETE"):
            self._verified(request)
            return
        log.warning("refused %s %s from %s: no admin token", request.method, request.path, _peer_ip(request))
        given = " (the one given is not it)" if _bearer(request) else ""
        raise _unauthorized(
            f"{request.method} {request.path} from {_peer_ip(request)} needs the admin token"
            f"{given}: {HOW_TO_GET_ACCESS}"
        )

    def pod_identity(self, request: web.Request) -> PodIdentity | None:
        """Whose pod token authorised this request; None when no pod token was needed."""
        return None if self._trusted(request) else self._verified(request)

    def _trusted(self, request: web.Request) -> bool:
        """The API is open, or the caller is on the host, or it gave the admin token (compared in constant time)."""
        if self.admin_token is None or _peer_ip(request) in HOST_PEERS:
            return True
        token = _bearer(request)
        return token is not None and hmac.compare_digest(token.encode(), self.admin_token)

    @staticmethod
    def _route(request: web.Request) -> str | None:
        resource = request.match_info.route.resource
        return resource.canonical if resource is not None else None

    def _verified(self, request: web.Request) -> PodIdentity:
        how = "send the pod's token (the agent's --token-file) as Authorization: Bearer TOKEN"
        token = _bearer(request)
        if token is None or self.token_verifier is None:
            reason = "needs a pod's token" if token is None else "takes no pod tokens here (no token verifier)"
            raise _unauthorized(f"registering a workload from {_peer_ip(request)} {reason}: {how}")
        try:
            return self.token_verifier(token)
        except InvalidToken as exc:
            log.warning("refused %s %s from %s: %s", request.method, request.path, _peer_ip(request), exc)
            raise _unauthorized(f"the pod token is not valid ({exc}): {how}") from None


class Api:
    def __init__(
        self,
        state: MeshState,
        hub: HubView,
        own_metrics: CollectorRegistry,
        *,
        admin_token: str | None = None,
        token_verifier: TokenVerifier | None = None,
        name: str = "",
        scrape_targets: Callable[[], list[dict]] | None = None,
    ):
        self.state, self.hub, self.own_metrics = state, hub, own_metrics
        self.scrape_targets = scrape_targets  # on Kubernetes: the pods Prometheus scrapes (http_sd_configs)
        self.name = name  # this control plane's (its pod's) name, as proxy-status shows it
        self.access = Access(admin_token, token_verifier)
        self.serving = False  # set once the ADS server listens
        self._tables_snapshot: object = None  # the snapshot `_tables` were built from
        self._tables: dict[tuple, tuple[str, bytes]] = {}
        self._snapshot_changed = asyncio.Event()  # replaced by a fresh one after each new snapshot
        self._stopping = False

    def stopping(self) -> None:
        """The control plane is stopping: answer waiting name-table requests at once."""
        self._stopping = True
        self.snapshot_changed()

    def snapshot_changed(self) -> None:
        """A new snapshot is in `state`: wake the name-table requests waiting for a change."""
        self._snapshot_changed.set()
        self._snapshot_changed = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._authenticate])
        app.add_routes(
            [
                web.get("/ready", self.ready),
                web.get("/metrics", self.metrics),
                web.get("/version", self.version),
                web.get("/debug/syncz", self.syncz),
                web.get("/debug/config_dump", self.config_dump),
                web.get("/debug/scopez", self.scopez),
                web.get("/api/v1/config", self.get_config),
                web.post("/api/v1/config", self.apply),
                web.post("/api/v1/config/delete", self.delete),
                web.get("/api/v1/nametable", self.name_table),
                web.get("/api/v1/workloads", self.list_workloads),
                web.put("/api/v1/workloads/{namespace}/{name}", self.register),
                web.put("/api/v1/workloads/{namespace}/{name}/ready", self.set_ready),
                web.delete("/api/v1/workloads/{namespace}/{name}", self.deregister),
            ]
        )
        if self.scrape_targets is not None:
            app.add_routes([web.get("/api/v1/prometheus/targets", self.prometheus_targets)])
        return app

    @web.middleware
    async def _authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.access.check(request)
        return await handler(request)

    def _entitled(self, request: web.Request, namespace: str, service_account: str | None) -> None:
        """403 unless the pod whose token authorised the request belongs to `namespace` and `service_account`."""
        identity = self.access.pod_identity(request)
        if identity is None:
            return
        if identity.namespace != namespace:
            reason = f"its token is for namespace {identity.namespace!r}, not {namespace!r}"
        elif service_account is not None and identity.service_account != service_account:
            reason = f"its token is for service account {identity.service_account!r}, not {service_account!r}"
        else:
            return
        log.warning("refused %s %s from %s: %s", request.method, request.path, _peer_ip(request), reason)
        raise _error(
            web.HTTPForbidden,
            f"this pod may not {request.method} workload {namespace}/{request.match_info['name']}: {reason}",
        )

    def _own_address(self, request: web.Request, address: str) -> None:
        """403 unless a pod registers the address it calls from: a pod cannot register an endpoint
        that sends other pods' traffic elsewhere."""
        if self.access.pod_identity(request) is None or str(_peer_ip(request)) == address:
            return
        reason = f"it calls from {_peer_ip(request)} but registers address {address}"
        log.warning("refused %s %s: %s", request.method, request.path, reason)
        raise _error(
            web.HTTPForbidden,
            f"this pod may not register workload {request.match_info['namespace']}/"
            f"{request.match_info['name']}: {reason}",
        )

    def _registered_account(self, request: web.Request) -> str | None:
        workload = self.state.registry.workloads.get(
            ("WorkloadEntry", request.match_info["namespace"], request.match_info["name"])
        )
        return workload.service_account if workload else None

    async def ready(self, _: web.Request) -> web.Response:
        ok = self.serving and self.state.rebuilds > 0
        return web.Response(text="ready\n" if ok else "not ready\n", status=200 if ok else 503)

    async def metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.hub.metrics) + generate_latest(self.own_metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def version(self, _: web.Request) -> web.Response:
        return web.json_response({"plait": __version__, "name": self.name})

    async def prometheus_targets(self, _: web.Request) -> web.Response:
        """Prometheus' HTTP service discovery: the pods annotated to be scraped (`kube_objects.scrape_targets`)."""
        assert self.scrape_targets is not None
        return web.json_response(self.scrape_targets())

    async def syncz(self, _: web.Request) -> web.Response:
        await self.state.settled()  # what proxies were sent reflects every change made before this request
        return web.json_response([s.to_dict() for s in self.hub.statuses()])

    async def config_dump(self, request: web.Request) -> web.Response:
        return _per_proxy(request, self.hub.config_dump)

    async def scopez(self, request: web.Request) -> web.Response:
        return _per_proxy(request, self.hub.scope_of)

    async def name_table(self, request: web.Request) -> web.Response:
        """The DNS name table of the proxy `?proxy=NODE_ID` (connected or not: the node id names it)."""
        node_id = request.query.get("proxy", "")
        try:
            proxy = self.hub.proxy(node_id) or Proxy.from_node_id(node_id)
        except ValueError:
            raise _error(
                web.HTTPBadRequest, f"proxy={node_id!r}: expected a node id TYPE~IP~NAME.NAMESPACE~DOMAIN"
            ) from None
        auto_allocate = request.query.get("autoAllocate", "") == "true"
        seen = request.headers.get("If-None-Match")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(_seconds(request.query.get("wait", "0"), "wait"), MAX_NAME_TABLE_WAIT)
        await self.state.settled()
        etag, body = self._name_table(proxy, auto_allocate=auto_allocate)
        while (
            seen == etag and loop.time() < deadline and not self._stopping
        ):  # long poll: answer when the table changes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._snapshot_changed.wait(), deadline - loop.time())
            etag, body = self._name_table(proxy, auto_allocate=auto_allocate)
        if seen == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="application/json", headers={"ETag": etag})

    def _name_table(self, proxy: Proxy, *, auto_allocate: bool) -> tuple[str, bytes]:
        """(ETag, JSON body) of the proxy's table, built once per snapshot for each namespace, label
        set and allocation choice (what the table depends on), however often agents poll."""
        snapshot = self.state.snapshot
        if self._tables_snapshot is not snapshot:
            self._tables_snapshot, self._tables = snapshot, {}
        key = (proxy.namespace, tuple(sorted(proxy.labels.items())), auto_allocate)
        if key not in self._tables:
            table = build_name_table(snapshot, proxy, auto_allocate=auto_allocate)
            body = json.dumps(table.to_json(), sort_keys=True).encode()
            self._tables[key] = ('"' + hashlib.sha256(body).hexdigest()[:32] + '"', body)
        return self._tables[key]

    # ------------------------------------------------------------ configuration

    async def get_config(self, request: web.Request) -> web.Response:
        q = request.query
        resources = self.state.store.resources
        status = lower(resources.values()).status  # Gateway API objects' conditions, as Istio writes them
        items = [
            {**r.to_dict(), **({"status": status[key]} if key in status else {})}
            for key, r in sorted(resources.items())
            if (not q.get("kind") or api_kind(key[0]).lower() == q["kind"].lower())
            and (not q.get("namespace") or key[1] == q["namespace"])
            and (not q.get("name") or key[2] == q["name"])
        ]
        return web.json_response({"items": items, "problems": [problem_dict(p) for p in self.state.store.problems]})

    async def _parse(self, request: web.Request) -> LoadResult:
        """Parse and validate each document; references are checked against the whole mesh by the store."""
        return parse_text(await request.text(), request.query.get("filename", "<request>"))

    async def apply(self, request: web.Request) -> web.Response:
        parsed = await self._parse(request)
        if parsed.errors:
            return _rejected(parsed.problems)
        change = self.state.store.apply(parsed.resources, dry_run=request.query.get("dryRun") == "true")
        change.problems = parsed.warnings + change.problems
        if not change.ok:
            return _rejected(change.problems)
        if change.keys and request.query.get("dryRun") != "true":
            self.state.changed()
        return web.json_response(change_dict(change))

    async def delete(self, request: web.Request) -> web.Response:
        parsed = await self._parse(request)
        if parsed.errors:
            return _rejected(parsed.problems)
        change = self.state.store.delete([r.key for r in parsed.resources])
        if not change.ok:
            return _rejected(
                change.problems, status=404 if all("not found" in p.message for p in change.problems) else 400
            )
        self.state.changed()
        return web.json_response(change_dict(change))

    # ------------------------------------------------------------ workloads

    async def list_workloads(self, _: web.Request) -> web.Response:
        return web.json_response([dataclasses.asdict(w) for w in self.state.registry.workloads.values()])

    async def register(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        body.update(namespace=request.match_info["namespace"], name=request.match_info["name"])
        try:
            workload = parse_workload(body)
        except ValueError as exc:
            return _rejected(
                [Problem(message=str(exc), kind="WorkloadEntry", namespace=body["namespace"], name=body["name"])]
            )
        self._entitled(request, workload.namespace, workload.service_account)
        self._entitled(request, workload.namespace, self._registered_account(request))  # no taking over another's
        self._own_address(request, workload.address)
        self.state.registry.register(workload)
        self.state.changed()
        return web.json_response(dataclasses.asdict(workload))

    async def set_ready(self, request: web.Request) -> web.Response:
        self._entitled(request, request.match_info["namespace"], self._registered_account(request))
        ready = bool((await _json_object(request)).get("ready"))
        key = self.state.registry.set_ready(request.match_info["namespace"], request.match_info["name"], ready)
        if key is None:
            return web.json_response({"error": "no such workload"}, status=404)
        self.state.changed()
        return web.json_response({"ready": ready})

    async def deregister(self, request: web.Request) -> web.Response:
        self._entitled(request, request.match_info["namespace"], self._registered_account(request))
        key = self.state.registry.deregister(request.match_info["namespace"], request.match_info["name"])
        if key is None:
            return web.json_response({"error": "no such workload"}, status=404)
        self.state.changed()
        return web.json_response({"deleted": f"{key[1]}/{key[2]}"})
