"""The mesh model: hostnames, protocols, the registry and scoping, as Istio defines them."""

from __future__ import annotations

import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.model.hosts import client_names, fqdn, matches
from plait.model.protocol import Protocol, from_port

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  clusterIP: 10.96.0.12
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: web}]
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: finance}
spec:
  selector: {app: ledger}
  ports: [{name: grpc, port: 7000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}, ports: {web: 8080}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ledger-1, namespace: finance}
spec: {address: 10.0.0.2, labels: {app: ledger}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-root, namespace: istio-system}
spec: {host: "*.svc.cluster.local", trafficPolicy: {loadBalancer: {simple: RANDOM}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-local, namespace: finance}
spec: {host: reviews.default.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
"""


@pytest.fixture(scope="module")
def snapshot() -> MeshSnapshot:
    return MeshSnapshot(load_text(MESH).raise_for_errors())


def test_fqdn_expands_short_names_only() -> None:
    assert fqdn("reviews", "default") == "reviews.default.svc.cluster.local"
    assert fqdn("reviews.prod", "default") == "reviews.prod"
    assert fqdn("*.example.com", "default") == "*.example.com"


def test_wildcard_matching() -> None:
    assert matches("*", "anything.example")
    assert matches("*.example.com", "a.example.com")
    assert not matches("*.example.com", "example.org")
    assert matches("*.com", "*.example.com")


def test_client_names_cover_kubernetes_dns_forms() -> None:
    names = client_names("reviews.default.svc.cluster.local", 9080, "default", ("10.96.0.12",))
    for expected in (
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default.svc:9080",
        "reviews.default.svc.cluster.local",
        "10.96.0.12:9080",
    ):
        assert expected in names
    assert "reviews" not in client_names("reviews.default.svc.cluster.local", 9080, "other")


@pytest.mark.parametrize(
    "name, app_protocol, expected",
    [
        ("http", None, Protocol.HTTP),
        ("http-web", None, Protocol.HTTP),
        ("grpc-web", None, Protocol.GRPC_WEB),
        ("grpc", None, Protocol.GRPC),
        ("tcp-db", None, Protocol.TCP),
        ("https", None, Protocol.HTTPS),
        ("mongo", None, Protocol.MONGO),
        ("web", None, Protocol.AUTO),
        ("", None, Protocol.AUTO),
        ("web", "http", Protocol.HTTP),
        ("http", "tcp", Protocol.TCP),
        ("x", "kubernetes.io/h2c", Protocol.HTTP2),
    ],
)
def test_protocol_selection(name: str, app_protocol: str | None, expected: Protocol) -> None:
    assert from_port(name, app_protocol) is expected


def test_service_endpoints_follow_selector_and_named_target_port(snapshot: MeshSnapshot) -> None:
    svc = snapshot.services["reviews.default.svc.cluster.local"]
    (ep,) = svc.endpoints[9080]
    assert (ep.address, ep.port, ep.workload) == ("10.0.0.1", 8080, "default/reviews-v1")
    assert svc.addresses == ("10.96.0.12",)


def test_destination_rule_precedence(snapshot: MeshSnapshot) -> None:
    reviews = snapshot.services["reviews.default.svc.cluster.local"]
    ledger = snapshot.services["ledger.finance.svc.cluster.local"]
    in_default = Proxy(kind="sidecar", ip="10.0.0.9", name="client", namespace="default")
    in_finance = Proxy(kind="sidecar", ip="10.0.0.8", name="client", namespace="finance")
    assert snapshot.destination_rule_for(in_default, reviews).name == "reviews"  # service namespace
    assert snapshot.destination_rule_for(in_finance, reviews).name == "reviews-local"  # client namespace first
    assert snapshot.destination_rule_for(in_default, ledger).name == "reviews-root"  # root namespace fallback


def test_inbound_ports_of_a_workload(snapshot: MeshSnapshot) -> None:
    proxy = Proxy.from_workload_entry(snapshot.workload("reviews-v1"))
    (inbound,) = snapshot.inbound_ports(proxy)
    assert inbound.endpoint.port == 8080 and inbound.service.name == "reviews"


def test_with_changes_reuses_registry_unless_registry_kinds_change(snapshot: MeshSnapshot) -> None:
    vs = load_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"
        "spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}\n"
    ).resources
    routed = snapshot.with_changes(upserts=vs)
    assert routed.services is snapshot.services and len(routed.virtual_services) == 1
    removed = routed.with_changes(deletes=[("WorkloadEntry", "default", "reviews-v1")])
    assert removed.services["reviews.default.svc.cluster.local"].endpoints[9080] == ()


def test_node_id_in_istio_form() -> None:
    proxy = Proxy(kind="sidecar", ip="10.0.0.1", name="reviews-v1-abc", namespace="default")
    assert proxy.id == "sidecar~10.0.0.1~reviews-v1-abc.default~default.svc.cluster.local"
    again = Proxy.from_node_id(proxy.id)
    assert (again.kind, again.ip, again.name, again.namespace) == ("sidecar", "10.0.0.1", "reviews-v1-abc", "default")
