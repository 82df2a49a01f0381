"""The synthetic mesh: the shape asked for, and translated config that the real Envoy accepts."""

from collections import Counter

import pytest

from plait.model import MeshSnapshot
from plait.testing.synthetic import MeshShape, gateway_proxy, mesh_resources, sidecar_proxy
from plait.xds.generator import generate
from plait.xds.static import envoy_validate, static_bootstrap

SHAPE = MeshShape(services=20, endpoints_per_service=3, namespaces=4)


@pytest.fixture(scope="module")
def snapshot() -> MeshSnapshot:
    return MeshSnapshot(mesh_resources(SHAPE))


def test_object_counts():
    kinds = Counter(r.kind for r in mesh_resources(SHAPE))
    assert kinds == {
        "Service": 20,
        "WorkloadEntry": 20 * 3 + 1,
        "DestinationRule": 2,
        "VirtualService": 2 + 1,
        "Gateway": 1,
    }


def test_services_spread_over_namespaces_with_versioned_endpoints(snapshot):
    assert len(snapshot.services) == 20
    assert Counter(s.namespace for s in snapshot.services.values()) == {f"mesh-{i}": 5 for i in range(4)}
    for service in snapshot.services.values():
        (port,) = service.ports
        assert (port.name, port.number) == ("http", 8080)
        endpoints = service.endpoints[8080]
        assert [e.labels["version"] for e in endpoints] == ["v1", "v2", "v1"]
        assert {e.labels["app"] for e in endpoints} == {service.name}


def test_sidecar_config_counts(snapshot):
    resources = generate(snapshot, sidecar_proxy(snapshot, SHAPE))
    subset_clusters = [c for c in resources.clusters if c.split("|")[2:3] in (["v1"], ["v2"])]
    assert len(subset_clusters) == 2 * SHAPE.routed_services
    assert len(resources.endpoints) == 20 + 2 * SHAPE.routed_services
    assert {"virtualOutbound", "virtualInbound", "0.0.0.0_8080"} <= set(resources.listeners)
    assert len(resources.routes["8080"]["virtual_hosts"]) >= 20


def test_gateway_is_a_router_with_its_routes(snapshot):
    proxy = gateway_proxy(snapshot)
    resources = generate(snapshot, proxy)
    assert proxy.kind == "router"
    assert list(resources.listeners) == ["0.0.0.0_80"]
    domains = {d for vh in resources.routes["http.80"]["virtual_hosts"] for d in vh["domains"]}
    assert {"shop.example.com", "api.example.com", "www.example.com"} <= domains


@pytest.mark.parametrize("which", ["sidecar", "gateway"])
def test_envoy_accepts_the_generated_config(snapshot, which):
    proxy = sidecar_proxy(snapshot, SHAPE) if which == "sidecar" else gateway_proxy(snapshot)
    verdict = envoy_validate(static_bootstrap(generate(snapshot, proxy)))
    assert verdict.ok, verdict.output
