"""The dashboard's HTTP server: the static page and its JSON API, on a port of its own (Kiali's 20001).

    GET /                      the page (static/index.html) and /static/… its assets (no CDN)
    GET /api/graph?namespace=&window=1m|5m|1h&type=app|versionedApp|workload|service   the service graph
    GET /api/graph/series?namespace=&window=&type=&node=ID|edge=ID   one node's or edge's figures over the window
    GET /api/workloads[?namespace=&window=]   pods: health, sidecar, proxy sync state
    GET /api/services[?namespace=&window=]    Services and ServiceEntries with their health
    GET /api/config[?namespace=]              Istio objects with their problems and analysis messages
    GET /api/namespaces                       namespaces of config objects, registered pods and proxies
    GET /api/tap?target=deploy/NAME&namespace=NS   the control plane's tap stream (JSON lines), passed through
    GET /api/traces/services                  services with traces in the collector
    GET /api/traces?service=&minDuration=MS&limit=N   recent traces, summarised (newest first)
    GET /api/traces/{traceId}                 one trace as a waterfall (spans with offsets, depths)

In: the control plane's HTTP API (`Backends.api`, its admin token when it has one), Prometheus
(`Backends.prometheus`) and the control plane's trace collector (`Backends.zipkin`, Zipkin's read API).
Out: JSON built by `graph`, `series` and `views`. Access as the control plane's API:
callers on the host itself (127.0.0.1, ::1) need nothing, others the admin token (``Authorization:
Bearer``). Without Prometheus the figures are rates between the last two reads of every proxy's own stats
(`ProxyStats`, given the proxies to read: a Prometheus file_sd file, or an http_sd URL such as istiod's
``/api/v1/prometheus/targets``), over time the rates between its reads of the last hour; without that either,
the metric endpoints answer 503 saying so.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from plait.analysis import Inputs, analyze
from plait.analysis.analyzers import KubeObject
from plait.analysis.inputs import Reading
from plait.dashboard import graph, series, views
from plait.telemetry.stat import Sample, parse_exposition, rates

log = logging.getLogger("plait.dashboard")
STATIC = Path(__file__).parent / "static"
DEFAULT_PORT = 20001  # Kiali's
HOST_PEERS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
TIMEOUT = aiohttp.ClientTimeout(total=10)


class BackendError(Exception):
    """A backend (the control plane, Prometheus) did not answer as expected."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


def no_metrics() -> BackendError:
    return BackendError(
        "no Prometheus: the dashboard's figures come from the mesh's Prometheus (locally 'plait up' starts one when "
        "Debian's prometheus is installed; on Kubernetes: plait install --set addons.prometheus=true, or without "
        "it istiod reads the proxies itself)",
        status=503,
    )


@dataclass(frozen=True)
class Backends:
    api: str  # the control plane's HTTP API, e.g. http://127.0.0.1:15014
    prometheus: str | None = None
    zipkin: str | None = None  # the control plane's trace collector (Zipkin's read API)
    # without Prometheus: the proxies to read, Prometheus' file_sd JSON file or an http_sd URL (http://…)
    targets: str | None = None
    token_file: Path | None = None  # the control plane's admin token (read when needed: created at its start)

    def token(self) -> str | None:
        if self.token_file is None or not self.token_file.exists():
            return None
        return self.token_file.read_text().strip() or None


class Dashboard:
    def __init__(self, backends: Backends, read_interval: float = 5.0):
        self.backends, self.read_interval = backends, read_interval
        self.session: aiohttp.ClientSession | None = None
        self.proxies: ProxyStats | None = None
        self._reading: asyncio.Task | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._access, self._errors])
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/api/graph", self.graph),
                web.get("/api/graph/series", self.series),
                web.get("/api/workloads", self.workloads),
                web.get("/api/services", self.services),
                web.get("/api/config", self.config),
                web.get("/api/namespaces", self.namespaces),
                web.get("/api/tap", self.tap),
                web.get("/api/traces/services", self.trace_services),
                web.get("/api/traces", self.traces),
                web.get("/api/traces/{trace_id}", self.trace),
                web.static("/static", STATIC, follow_symlinks=False),
            ]
        )
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _: web.Application) -> None:
        self.session = aiohttp.ClientSession(timeout=TIMEOUT)
        if not self.backends.prometheus and self.backends.targets:
            self.proxies = ProxyStats(self.backends.targets, self.session, self.read_interval)
            self._reading = asyncio.create_task(self.proxies.run())

    async def _close(self, _: web.Application) -> None:
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    # ------------------------------------------------------------ middleware

    @web.middleware
    async def _access(self, request: web.Request, handler: Callable[[web.Request], Awaitable]) -> web.StreamResponse:
        token = self.backends.token()
        if token is None or _peer_ip(request) in HOST_PEERS:
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return await handler(request)
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "the dashboard needs the control plane's admin token (Authorization: Bearer)"}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="plait"'},
        )

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable]) -> web.StreamResponse:
        try:
            return await handler(request)
        except graph.GraphError as error:
            return web.json_response({"error": str(error)}, status=400)
        except BackendError as error:
            return web.json_response({"error": str(error)}, status=error.status)

    # ------------------------------------------------------------ backends

    async def _get(self, base: str, path: str, what: str, params: dict | None = None) -> object:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {t}"} if base == self.backends.api and (t := self.backends.token()) else {}
        try:
            async with self.session.get(base + path, params=params, headers=headers) as response:
                if response.status != 200:
                    raise BackendError(f"{what} answered {response.status} to GET {path}: {await response.text()}")
                return await response.json()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise BackendError(f"{what} at {base} did not answer: {error or type(error).__name__}") from None

    async def _control_plane(self, path: str, params: dict | None = None) -> object:
        return await self._get(self.backends.api, path, "the control plane", params)

    async def _metrics(self, wanted: dict[str, graph.Ask], window: str) -> tuple[dict[str, graph.Series], str]:
        """The sums `wanted` over `window` from Prometheus, else over the proxies' last read interval; and which."""
        if self.backends.prometheus:
            names = list(wanted)
            answers = await asyncio.gather(
                *(
                    self._get(
                        self.backends.prometheus, "/api/v1/query", "Prometheus", {"query": wanted[n].promql(window)}
                    )
                    for n in names
                )
            )
            return {name: graph.series(answer) for name, answer in zip(names, answers)}, "prometheus"
        if self.proxies is not None:
            rates = self.proxies.latest
            if rates is None:
                raise BackendError(
                    f"no Prometheus: reading the proxies' stats every {self.proxies.interval:.0f} s; the first rates "
                    "come after two reads",
                    status=503,
                )
            return graph.evaluate(rates, wanted), "proxies"
        raise no_metrics()

    async def _series(self, query: series.SeriesQuery) -> tuple[dict[float, dict[str, graph.Series]], str]:
        """The graph's sums at each step of the window: Prometheus' ``query_range``, else the proxies' reads."""
        now = time.time()
        if self.backends.prometheus:
            params = series.range_params(query, now)
            wanted = series.asks()
            answers = await asyncio.gather(
                *(
                    self._get(
                        self.backends.prometheus,
                        "/api/v1/query_range",
                        "Prometheus",
                        {"query": ask.promql(series.rate_range(query)), **params},
                    )
                    for ask in wanted.values()
                )
            )
            matrices = {name: series.matrix(answer) for name, answer in zip(wanted, answers)}
            return series.by_time(matrices, series.steps(params)), "prometheus"
        if self.proxies is not None:
            return series.proxy_answers(query, self.proxies.history, now), "proxies"
        raise no_metrics()

    # ------------------------------------------------------------ routes

    async def index(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def graph(self, request: web.Request) -> web.Response:
        query = _graph_query(request.query)
        (answers, source), registry, syncz = await asyncio.gather(
            self._metrics(graph.asks(query), query.window),
            self._control_plane("/api/v1/workloads"),
            self._control_plane("/debug/syncz"),
        )
        gateways = views.gateways(registry, syncz)
        return web.json_response(graph.build(query, answers, gateways, source=source))

    async def series(self, request: web.Request) -> web.Response:
        q = request.query
        query = series.SeriesQuery(_graph_query(q), node=q.get("node", ""), edge=q.get("edge", ""))
        (answers, source), registry, syncz = await asyncio.gather(
            self._series(query),
            self._control_plane("/api/v1/workloads"),
            self._control_plane("/debug/syncz"),
        )
        return web.json_response(series.build(query, answers, views.gateways(registry, syncz), source=source))

    async def _health(self, window: str) -> dict[str, graph.Series]:
        if window not in graph.WINDOWS:
            raise graph.GraphError(f"window={window!r}: expected one of {', '.join(graph.WINDOWS)}")
        try:
            return (await self._metrics(views.health_asks(), window))[0]
        except BackendError as error:
            log.debug("no health figures: %s", error)
            return {}

    async def workloads(self, request: web.Request) -> web.Response:
        registry, syncz, rates = await asyncio.gather(
            self._control_plane("/api/v1/workloads"),
            self._control_plane("/debug/syncz"),
            self._health(request.query.get("window", "1m")),
        )
        rows = views.workloads(registry, syncz, rates.get("workloads", []), request.query.get("namespace"))
        return web.json_response({"workloads": rows, "metrics": bool(rates)})

    async def services(self, request: web.Request) -> web.Response:
        config, rates = await asyncio.gather(
            self._control_plane("/api/v1/config"), self._health(request.query.get("window", "1m"))
        )
        rows = views.services(config["items"], rates.get("services", []), request.query.get("namespace"))
        return web.json_response({"services": rows, "metrics": bool(rates)})

    async def config(self, request: web.Request) -> web.Response:
        config, registry = await asyncio.gather(
            self._control_plane("/api/v1/config"), self._control_plane("/api/v1/workloads")
        )
        messages = [
            {"kind": m.kind, "namespace": m.namespace, "name": m.name, "level": m.type.level.value}
            | {"code": m.type.code, "message": m.text}
            for m in analyze(_analysis_inputs(config["items"], registry))
        ]
        rows = views.config(config["items"], config.get("problems", []), messages)
        namespace = request.query.get("namespace")
        rows = [r for r in rows if not namespace or r["namespace"] in (namespace, "")]
        return web.json_response({"objects": rows})

    async def namespaces(self, _: web.Request) -> web.Response:
        config, registry, syncz = await asyncio.gather(
            self._control_plane("/api/v1/config"),
            self._control_plane("/api/v1/workloads"),
            self._control_plane("/debug/syncz"),
        )
        names = {i.get("metadata", {}).get("namespace") for i in config["items"]}
        names |= {w.get("namespace") for w in registry} | {s.get("proxy", {}).get("namespace") for s in syncz}
        return web.json_response({"namespaces": sorted(n for n in names if n)})

    def _collector(self) -> str:
        if not self.backends.zipkin:
            raise BackendError("no trace collector: the control plane runs without one (--zipkin-port 0)", status=503)
        return self.backends.zipkin

    async def trace_services(self, _: web.Request) -> web.Response:
        return web.json_response({"services": await self._get(self._collector(), "/api/v2/services", "the collector")})

    async def traces(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            min_ms, limit = float(q.get("minDuration") or 0), int(q.get("limit") or 20)
        except ValueError:
            raise graph.GraphError("minDuration (ms) and limit must be numbers") from None
        params = {"limit": str(limit), "lookback": str(3600 * 1000)}
        if q.get("service"):
            params["serviceName"] = q["service"]
        if min_ms > 0:
            params["minDuration"] = str(int(min_ms * 1000))
        found = await self._get(self._collector(), "/api/v2/traces", "the collector", params)
        return web.json_response({"traces": views.trace_summaries(found)})

    async def trace(self, request: web.Request) -> web.Response:
        path = f"/api/v2/trace/{request.match_info['trace_id']}"
        return web.json_response(views.waterfall(await self._get(self._collector(), path, "the collector")))

    async def tap(self, request: web.Request) -> web.StreamResponse:
        """The control plane's tap session, streamed through as it comes (JSON lines) until either side ends."""
        assert self.session is not None
        token = self.backends.token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = self.backends.api + "/api/v1/tap"
        try:
            upstream = await self.session.get(
                url, params=request.query, headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)
            )
        except aiohttp.ClientError as error:
            raise BackendError(f"the control plane at {self.backends.api} did not answer: {error}") from None
        async with upstream:
            if upstream.status != 200:
                return web.Response(status=upstream.status, body=await upstream.read(), content_type="application/json")
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, ConnectionResetError):
                pass
            return response


class ProxyStats:
    """Without Prometheus: every proxy's ``/stats/prometheus`` read every `interval` seconds, the proxies named
    by `targets` as Prometheus names what to scrape: a ``file_sd`` JSON file (as the local mesh writes it) or
    an ``http_sd`` URL (as istiod serves ``/api/v1/prometheus/targets``), read again before every read of
    the proxies. `latest` holds the per-second rates between the last two reads (as ``plait stat --direct``),
    whatever window is asked; `history` the graph's series of the reads of the last hour (`series.thin`)."""

    def __init__(self, targets: str, session: aiohttp.ClientSession, interval: float = 5.0):
        self.targets, self.session, self.interval = targets, session, interval
        self.latest: list[Sample] | None = None
        self.history: list[series.Read] = []
        self._metrics = {ask.metric for ask in series.asks().values()}

    async def run(self) -> None:
        previous, then = None, 0.0
        while True:
            now = time.monotonic()
            samples = await self.read()
            if previous is not None:
                self.latest = rates(previous, samples, now - then)
            previous, then = samples, now
            self._remember(samples)
            await asyncio.sleep(self.interval)

    def _remember(self, samples: list[Sample]) -> None:
        """Keep the graph's series of a read; a series' labels are shared with the previous read's (a read
        of an hour ago costs its values only)."""
        known = {s.identity: s.labels for s in self.history[-1][1]} if self.history else {}
        kept = [Sample(s.name, known.get(s.identity, s.labels), s.value) for s in samples if s.name in self._metrics]
        now = time.time()
        self.history = series.thin([*self.history, (now, kept)], now)

    async def read(self) -> list[Sample]:
        groups = await self._targets()
        reads = [
            self._read(address, group.get("labels") or {}) for group in groups for address in group.get("targets", [])
        ]
        return [sample for samples in await asyncio.gather(*reads) for sample in samples]

    async def _targets(self) -> list[dict]:
        """The target groups (``[{"targets": [HOST:PORT], "labels": {…}}]``); none when they cannot be read."""
        try:
            if self.targets.startswith(("http://", "https://")):
                async with self.session.get(self.targets, timeout=aiohttp.ClientTimeout(total=5)) as response:
                    if response.status != 200:
                        raise ValueError(f"answered {response.status}: {(await response.text())[:200]}")
                    groups = await response.json(content_type=None)
            else:
                groups = json.loads(Path(self.targets).read_text())
        except FileNotFoundError:
            return []  # no proxy started yet
        except (OSError, ValueError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("cannot read the proxies to scrape from %s: %s", self.targets, error or type(error).__name__)
            return []
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            log.warning(
                "the proxies to scrape from %s: expected a list of target groups, got %.200s", self.targets, groups
            )
            return []
        return groups

    async def _read(self, address: str, labels: dict) -> list[Sample]:
        path = labels.get("__metrics_path__", "/stats/prometheus")
        try:
            async with self.session.get(f"http://{address}{path}", timeout=aiohttp.ClientTimeout(total=3)) as r:
                text = await r.text() if r.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            return []
        return parse_exposition(text, {k: labels[k] for k in ("namespace", "pod") if k in labels})


def _graph_query(q: Mapping[str, str]) -> graph.GraphQuery:
    return graph.GraphQuery(q.get("namespace", "default"), q.get("window", "1m"), q.get("type", "versionedApp"))


def _analysis_inputs(items: list[dict], registry: list[dict]) -> Inputs:
    """The control plane's objects as `plait analyze` reads a cluster, with the registered pods as Pods."""
    reading = Reading()
    for item in items:
        reading.add_document(item, "")
    for w in registry:
        meta = {"name": w["name"], "namespace": w["namespace"], "labels": w.get("labels", {})}
        reading.objects.append(KubeObject({"kind": "Pod", "metadata": meta, "spec": {}}))
    return reading.inputs()


def _peer_ip(request: web.Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not isinstance(peer, tuple):
        return None
    try:
        ip = ipaddress.ip_address(peer[0].split("%")[0])
    except ValueError:
        return None
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


async def serve(backends: Backends, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve the dashboard on host:port until `stop` is set."""
    runner = web.AppRunner(Dashboard(backends).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("dashboard on http://%s:%d (data: %s, Prometheus %s)", host, port, backends.api, backends.prometheus)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
