"""Test hooks, off unless their environment variable is set: ways to make Envoy reject config
that plait's own validation (rightly) never lets through, so NACK handling can be tested with
real Envoys. The hook edits each generation's resources just before they are published (full
or routes-only); proxy sharing and the push path stay exactly as in production, so the live
tests exercise them. Documented in docs/control-plane.md."""

from __future__ import annotations

import os

from plait.model import Proxy
from plait.xds.resources import ResourceSet

REJECTED_ROUTE_ENV = "PLAIT_TEST_REJECTED_ROUTE"


def rejecting_routes(route_name: str):
    """A hub `mutate` hook: every HTTP route named `route_name` also sets the ``:path`` header,
    which Envoy refuses (":-prefixed or host headers may not be modified"), so it NACKs. It reads
    nothing of the proxy, so it is the same for every member of a generation group."""

    def mutate(_: Proxy, resources: ResourceSet) -> ResourceSet:
        for config in resources.routes.values():
            for vhost in config.get("virtual_hosts", []):
                for route in vhost.get("routes", []):
                    if route.get("name") == route_name:
                        route.setdefault("request_headers_to_add", []).append(
                            {"header": {"key": ":path", "value": "/rejected"}}
                        )
        return resources

    return mutate


def from_environment():
    name = os.environ.get(REJECTED_ROUTE_ENV)
    return rejecting_routes(name) if name else None
