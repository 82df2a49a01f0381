"""The control plane's HTTP API and debug port (15014): what the CLI, agents and people talk to.

    GET  /ready                          200 once config is loaded and the ADS server listens
    GET  /metrics                        Prometheus text
    GET  /version                        plait version
    GET  /debug/syncz                    every connected proxy and its per-type sync state
    GET  /debug/config_dump?proxy=ID     what was last sent to that proxy
    GET  /api/v1/config[?kind=&namespace=&name=]   stored objects
    POST /api/v1/config[?dryRun=true&filename=F]   apply YAML: every document, or none
    POST /api/v1/config/delete           delete the objects named by a YAML body
    GET  /api/v1/workloads               registered workloads
    PUT  /api/v1/workloads/{ns}/{name}   register (JSON: address, labels, ports, serviceAccount, ready)
    PUT  /api/v1/workloads/{ns}/{name}/ready   {"ready": true|false}
    DELETE /api/v1/workloads/{ns}/{name}

Handlers only translate between HTTP and `MeshState`/the hub; errors are JSON
``{"problems": [...]}`` with the same fields `plait validate` prints.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from plait import __version__
from plait.api.errors import Problem
from plait.api.loader import LoadResult, parse_text
from plait.controlplane.mesh import MeshState
from plait.sources.files import Change
from plait.sources.workloads import parse_workload


class HubView(Protocol):
    metrics: CollectorRegistry

    def statuses(self) -> list[Any]: ...

    def config_dump(self, proxy_id: str) -> dict | None: ...


def problem_dict(p: Problem) -> dict:
    return dataclasses.asdict(p)


def change_dict(change: Change) -> dict:
    as_ref = lambda keys: [f"{k[0]} {k[1]}/{k[2]}" for k in keys]  # noqa: E731
    return {"created": as_ref(change.created), "updated": as_ref(change.updated),
            "deleted": as_ref(change.deleted), "unchanged": as_ref(change.unchanged),
            "problems": [problem_dict(p) for p in change.problems]}


def _rejected(problems: list[Problem], status: int = 400) -> web.Response:
    return web.json_response({"problems": [problem_dict(p) for p in problems]}, status=status)


async def _json_object(request: web.Request) -> dict:
    """The request body as a JSON object, or a 400 that says what was expected."""
    try:
        body = json.loads(await request.text())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "expected a JSON object body, e.g. {\\"address\\": \\"10.0.0.1\\"}"}',
                                 content_type="application/json")
    return body


class Api:
    def __init__(self, state: MeshState, hub: HubView, own_metrics: CollectorRegistry):
        self.state, self.hub, self.own_metrics = state, hub, own_metrics
        self.serving = False  # set once the ADS server listens

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.get("/ready", self.ready), web.get("/metrics", self.metrics), web.get("/version", self.version),
            web.get("/debug/syncz", self.syncz), web.get("/debug/config_dump", self.config_dump),
            web.get("/api/v1/config", self.get_config), web.post("/api/v1/config", self.apply),
            web.post("/api/v1/config/delete", self.delete),
            web.get("/api/v1/workloads", self.list_workloads),
            web.put("/api/v1/workloads/{namespace}/{name}", self.register),
            web.put("/api/v1/workloads/{namespace}/{name}/ready", self.set_ready),
            web.delete("/api/v1/workloads/{namespace}/{name}", self.deregister),
        ])
        return app

    async def ready(self, _: web.Request) -> web.Response:
        ok = self.serving and self.state.rebuilds > 0
        return web.Response(text="ready\n" if ok else "not ready\n", status=200 if ok else 503)

    async def metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.hub.metrics) + generate_latest(self.own_metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def version(self, _: web.Request) -> web.Response:
        return web.json_response({"plait": __version__})

    async def syncz(self, _: web.Request) -> web.Response:
        return web.json_response([s.to_dict() for s in self.hub.statuses()])

    async def config_dump(self, request: web.Request) -> web.Response:
        proxy = request.query.get("proxy", "")
        dump = self.hub.config_dump(proxy)
        if dump is None:
            return web.json_response({"error": f"no connected proxy {proxy!r}; see /debug/syncz"}, status=404)
        return web.json_response(dump)

    # ------------------------------------------------------------ configuration

    async def get_config(self, request: web.Request) -> web.Response:
        q = request.query
        items = [r.to_dict() for key, r in sorted(self.state.store.resources.items())
                 if (not q.get("kind") or key[0].lower() == q["kind"].lower())
                 and (not q.get("namespace") or key[1] == q["namespace"])
                 and (not q.get("name") or key[2] == q["name"])]
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
            return _rejected(change.problems, status=404 if all("not found" in p.message
                                                                for p in change.problems) else 400)
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
            return _rejected([Problem(message=str(exc), kind="WorkloadEntry", namespace=body["namespace"],
                                      name=body["name"])])
        self.state.registry.register(workload)
        self.state.changed()
        return web.json_response(dataclasses.asdict(workload))

    async def set_ready(self, request: web.Request) -> web.Response:
        ready = bool((await _json_object(request)).get("ready"))
        key = self.state.registry.set_ready(request.match_info["namespace"], request.match_info["name"], ready)
        if key is None:
            return web.json_response({"error": "no such workload"}, status=404)
        self.state.changed()
        return web.json_response({"ready": ready})

    async def deregister(self, request: web.Request) -> web.Response:
        key = self.state.registry.deregister(request.match_info["namespace"], request.match_info["name"])
        if key is None:
            return web.json_response({"error": "no such workload"}, status=404)
        self.state.changed()
        return web.json_response({"deleted": f"{key[1]}/{key[2]}"})
