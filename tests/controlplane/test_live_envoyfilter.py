"""An EnvoyFilter through the production path: `plait apply` to a running control plane, pushed over
ADS to a real Envoy run by `plait agent`, acknowledged, and seen in traffic; deleted, and gone."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.http import http_request
from plait.testing.live import AgentProcess, ControlPlaneProcess, wait_until

CONVERGE = 10.0

LUA_FILTER = json.dumps(
    {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "ratings-lua", "namespace": "default"},
        "spec": {
            "workloadSelector": {"labels": {"app": "ratings"}},
            "configPatches": [
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {
                        "context": "SIDECAR_INBOUND",
                        "listener": {
                            "portNumber": 9080,
                            "filterChain": {
                                "filter": {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "subFilter": {"name": "envoy.filters.http.router"},
                                }
                            },
                        },
                    },
                    "patch": {
                        "operation": "INSERT_BEFORE",
                        "value": {
                            "name": "envoy.filters.http.lua",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                                "defaultSourceCode": {
                                    "inlineString": "function envoy_on_response(h) h:headers():add('x-patched', 'lua') end"
                                },
                            },
                        },
                    },
                }
            ],
        },
    }
)


def registry(net: str) -> str:
    return "\n---\n".join(
        json.dumps(doc)
        for doc in (
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "ratings"},
                "spec": {"selector": {"app": "ratings"}, "ports": [{"name": "http", "port": 9080}]},
            },
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "WorkloadEntry",
                "metadata": {"name": "ratings-v1"},
                "spec": {"address": f"{net}.21", "labels": {"app": "ratings", "version": "v1"}},
            },
        )
    )


class Ratings:
    """The control plane and ratings' sidecar (explicit-proxy mode, delta xDS), its app behind it."""

    def __init__(self, net: str, cp: ControlPlaneProcess, agent: AgentProcess):
        self.net, self.cp, self.agent = net, cp, agent

    def request(self):
        return http_request(f"{self.net}.21", 9080, "/", timeout=5)

    def lds(self) -> dict:
        return self.cp.statuses()[self.agent.proxy_id]["types"]["lds"]


@pytest.fixture(scope="module")
def ratings(tmp_path_factory) -> Iterator[Ratings]:
    workdir = tmp_path_factory.mktemp("live-envoyfilter")
    with (
        loopback_subnet() as net,
        ControlPlaneProcess(workdir / "mesh", workdir) as cp,
        HttpBackend("ratings-v1", f"{net}.121", 9080),
    ):
        cp.apply(registry(net))
        with AgentProcess(
            cp,
            workdir,
            mode="proxy",
            name="ratings-v1",
            ip=f"{net}.21",
            labels={"app": "ratings", "version": "v1"},
            app_address=f"{net}.121",
            xds="delta",
        ) as agent:
            yield Ratings(net, cp, agent)


def test_an_applied_envoy_filter_reaches_envoy_and_a_deleted_one_leaves_it(ratings: Ratings) -> None:
    def header() -> str | None:
        return ratings.request().headers.get("x-patched")

    assert header() is None
    ratings.cp.apply(LUA_FILTER)
    wait_until(lambda: header() == "lua", CONVERGE, "the Lua filter's header")
    wait_until(lambda: ratings.cp.synced(ratings.agent.proxy_id), CONVERGE, "the proxy to acknowledge everything")
    ratings.cp.delete(LUA_FILTER)
    wait_until(lambda: header() is None, CONVERGE, "the header to go with the EnvoyFilter")


def test_a_patch_envoy_refuses_is_nacked_and_the_last_good_listeners_keep_serving(ratings: Ratings) -> None:
    """ADD appends an HTTP filter after the router, as in Istio: Envoy refuses such a listener."""
    after_router = LUA_FILTER.replace('"INSERT_BEFORE"', '"ADD"').replace("ratings-lua", "after-router")
    ratings.cp.apply(after_router)
    try:
        wait_until(lambda: ratings.lds()["state"] == "NACKED", CONVERGE, "LDS NACKED")
        assert "router" in ratings.lds()["nack_message"]
        reply = ratings.request()
        assert (reply.status, reply.headers.get("x-patched")) == (200, None)
    finally:
        ratings.cp.delete(after_router)
    wait_until(lambda: ratings.cp.synced(ratings.agent.proxy_id), CONVERGE, "SYNCED once the bad patch is gone")
