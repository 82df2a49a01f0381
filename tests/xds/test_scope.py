"""Automatic scoping in the hub, without a network: what a delta sidecar is sent of its clusters, what
it learns from on-demand requests (Envoy's ODCDS), and that nothing else ever differs from a full
generation. Real Envoys doing the same: tests/controlplane/test_scoping_live.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from plait.api import load_paths, load_text
from plait.model import MeshSnapshot, Proxy
from plait.testing.ads_client import make_node
from plait.xds.generator import generate
from plait.xds.hub import XdsHub
from plait.xds.publish import TYPES, Publisher
from plait.xds.resources import TYPE_URLS
from plait.xds.scope import CALLED, SERVES, pinned_clusters, scoped_host

BOOKINFO = Path(__file__).parents[2] / "src/plait/demo/bookinfo"
TESTDATA = Path(__file__).parent / "testdata"
REVIEWS = "reviews.default.svc.cluster.local"
PRODUCTPAGE = "productpage.default.svc.cluster.local"


def cluster(host: str, subset: str = "") -> str:
    return f"outbound|9080|{subset}|{host}"


def bookinfo(*extra: str) -> MeshSnapshot:
    resources = load_paths(
        [BOOKINFO / "services.yaml", BOOKINFO / "networking/destination-rule-all.yaml"]
    ).raise_for_errors()
    return MeshSnapshot(resources + load_text("\n---\n".join(extra)).raise_for_errors() if extra else resources)


def workload(snapshot: MeshSnapshot, entry: str, **changes) -> Proxy:
    return dataclasses.replace(Proxy.from_workload_entry(snapshot.workload(f"default/{entry}")), **changes)


class DeltaEnvoy:
    """Drives one hub connection as a delta Envoy does: wildcard CDS, then names asked for on demand."""

    def __init__(self, hub: XdsHub, proxy: Proxy, *, held: dict[str, str] | None = None, delta: bool = True):
        self.hub, self.proxy_id = hub, make_node(proxy).id
        self.conn = hub.connect(make_node(proxy), delta=delta, wake=lambda: None)
        self.clusters: dict[str, str] = dict(held or {})
        self.removed: list[str] = []
        self._take(self.conn.receive(self._request(initial=held or {})))

    def _request(self, *, subscribe=(), nonce: str = "", initial: dict | None = None):
        if not self.conn.stream.delta:
            return discovery_pb2.DiscoveryRequest(type_url=TYPE_URLS["cds"], response_nonce=nonce)
        return discovery_pb2.DeltaDiscoveryRequest(
            type_url=TYPE_URLS["cds"],
            resource_names_subscribe=list(subscribe),
            response_nonce=nonce,
            initial_resource_versions=initial or {},
        )

    def _take(self, responses) -> list[str]:
        got = []
        for response in responses:
            if response.type != "cds":
                continue
            if not self.conn.stream.delta:
                self.clusters = {}
            for resource in response.payload.resources:
                self.clusters[resource.name] = resource.version
                got.append(resource.name)
            for name in response.payload.removed:
                self.clusters.pop(name, None)
                self.removed.append(name)
            self.conn.receive(self._request(nonce=response.nonce))  # ACK
        return got

    def ask(self, *names: str) -> list[str]:
        """An on-demand request (the on_demand filter found no cluster for a route): what came back."""
        return self._take(self.conn.receive(self._request(subscribe=names)))

    def pushes(self) -> list[str]:
        return self._take(self.conn.take_pushes())

    def outbound_hosts(self) -> set[str]:
        return {h for n in self.conn.stream.held("cds") if (h := scoped_host(n))}


def test_a_delta_sidecar_is_sent_only_what_its_workload_serves_until_it_calls():
    snapshot = bookinfo()
    hub = XdsHub(snapshot, scoping=True)
    envoy = DeltaEnvoy(hub, workload(snapshot, "productpage-v1"))
    full = Publisher().publish(generate(snapshot, workload(snapshot, "productpage-v1"))).types["cds"].resources
    held = envoy.conn.stream.held("cds")
    assert envoy.outbound_hosts() == {PRODUCTPAGE}
    assert {n for n in full if scoped_host(n) is None} <= set(held)  # inbound, passthrough, blackhole…
    assert len(full) - len(held) == 12  # details (2), ratings (3), reviews (4)… and their subsets
    scope = hub.scope_of(envoy.proxy_id)
    assert scope["scoped"] and scope["hosts"] == {PRODUCTPAGE: SERVES}
    assert scope["clusters"] == {"sent": len(held), "generated": len(full)}


def test_an_on_demand_request_brings_every_cluster_of_that_service():
    snapshot = bookinfo()
    hub = XdsHub(snapshot, scoping=True)
    envoy = DeltaEnvoy(hub, workload(snapshot, "productpage-v1"))
    got = envoy.ask(cluster(REVIEWS, "v2"))
    assert sorted(got) == sorted([cluster(REVIEWS), *(cluster(REVIEWS, v) for v in ("v1", "v2", "v3"))])
    assert envoy.outbound_hosts() == {PRODUCTPAGE, REVIEWS}
    assert hub.scope_of(envoy.proxy_id)["hosts"][REVIEWS] == CALLED
    assert envoy.ask(cluster(REVIEWS, "v2")) == [cluster(REVIEWS, "v2")]  # asked again: answered again
    assert all(s.state == "SYNCED" for s in envoy.conn.stream.statuses().values() if s.sent_version)


def test_a_cluster_nobody_generates_is_answered_as_removed_at_once():
    snapshot = bookinfo()
    hub = XdsHub(snapshot, scoping=True)
    envoy = DeltaEnvoy(hub, workload(snapshot, "productpage-v1"))
    nowhere = cluster("nowhere.default.svc.cluster.local")
    assert envoy.ask(nowhere) == [] and envoy.removed == [nowhere]
    assert envoy.outbound_hosts() == {PRODUCTPAGE}


def test_replicas_of_a_workload_share_what_one_learned_and_others_do_not():
    snapshot = bookinfo()
    hub = XdsHub(snapshot, scoping=True)
    first = DeltaEnvoy(hub, workload(snapshot, "productpage-v1"))
    replica = DeltaEnvoy(hub, workload(snapshot, "productpage-v1", ip="10.9.9.9", name="productpage-v1-b"))
    details = DeltaEnvoy(hub, workload(snapshot, "details-v1"))
    first.ask(cluster(REVIEWS))
    assert REVIEWS in {scoped_host(n) for n in replica.pushes()}
    assert REVIEWS in replica.outbound_hosts()
    assert details.pushes() == [] and REVIEWS not in details.outbound_hosts()


def test_a_reconnecting_sidecar_keeps_the_clusters_it_holds():
    """A new control plane (or stream) has learned nothing: what the Envoy says it holds is learned."""
    snapshot = bookinfo()
    first = DeltaEnvoy(XdsHub(snapshot, scoping=True), workload(snapshot, "productpage-v1"))
    first.ask(cluster(REVIEWS))
    hub = XdsHub(snapshot, scoping=True)
    again = DeltaEnvoy(hub, workload(snapshot, "productpage-v1"), held=first.clusters)
    assert again.removed == [] and again.clusters == first.clusters
    assert hub.scope_of(again.proxy_id)["hosts"][REVIEWS] == CALLED


def test_learned_hosts_stay_through_a_regeneration():
    snapshot = bookinfo()
    hub = XdsHub(snapshot, scoping=True)
    envoy = DeltaEnvoy(hub, workload(snapshot, "productpage-v1"))
    envoy.ask(cluster(REVIEWS))
    change = load_text((BOOKINFO / "networking/virtual-service-all-v1.yaml").read_text()).raise_for_errors()
    hub.update(snapshot.with_changes(upserts=change), [r.key for r in change])
    envoy.pushes()
    assert envoy.outbound_hosts() == {PRODUCTPAGE, REVIEWS}


def test_an_authorization_policy_that_lets_it_call_a_service_puts_that_service_in_scope():
    allow = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-from-productpage, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]}]
"""
    snapshot = bookinfo(allow)
    hub = XdsHub(snapshot, scoping=True)
    page = DeltaEnvoy(hub, workload(snapshot, "productpage-v1"))
    details = DeltaEnvoy(hub, workload(snapshot, "details-v1"))
    assert page.outbound_hosts() == {PRODUCTPAGE, REVIEWS}
    assert (
        hub.scope_of(page.proxy_id)["hosts"][REVIEWS]
        == "allowed by AuthorizationPolicy default/reviews-from-productpage"
    )
    assert REVIEWS not in details.outbound_hosts()


def test_a_sidecar_resource_with_egress_hosts_declares_what_is_in_scope():
    declared = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress: [{hosts: ["./details.default.svc.cluster.local"]}]
"""
    snapshot = bookinfo(declared)
    hub = XdsHub(snapshot, scoping=True)
    envoy = DeltaEnvoy(hub, workload(snapshot, "productpage-v1"))
    assert envoy.outbound_hosts() == {"details.default.svc.cluster.local"}  # all the Sidecar imports
    why = hub.scope_of(envoy.proxy_id)["hosts"]["details.default.svc.cluster.local"]
    assert why == "declared by its Sidecar default/productpage"


@pytest.mark.parametrize("how", ["sotw stream", "gateway", "scoping off"], ids=["sotw", "gateway", "off"])
def test_state_of_the_world_streams_gateways_and_scoping_off_get_every_cluster(how):
    services = load_paths([BOOKINFO / "services.yaml", BOOKINFO / "networking/bookinfo-gateway.yaml"])
    snapshot = MeshSnapshot(services.raise_for_errors())
    proxy = workload(snapshot, "productpage-v1")
    if how == "gateway":
        proxy = Proxy.from_node_id(
            "router~10.0.0.9~istio-ingressgateway.istio-system~istio-system.svc.cluster.local",
            labels={"istio": "ingressgateway"},
        )
    hub = XdsHub(snapshot, scoping=how != "scoping off")
    envoy = DeltaEnvoy(hub, proxy, delta=how != "sotw stream")
    full = Publisher().publish(generate(snapshot, proxy)).types["cds"].resources
    assert set(envoy.conn.stream.held("cds")) == set(full)
    assert not hub.scope_of(envoy.proxy_id)["scoped"]


def _cases():
    for path in sorted(TESTDATA.glob("*.input.yaml")):
        yield path.name, MeshSnapshot(load_text(path.read_text(), path.name).raise_for_errors())


def test_a_scoped_view_differs_from_the_full_generation_only_by_clusters_a_route_can_fetch():
    """Every testdata workload: listeners, routes, endpoints and secrets are the full generation's;
    a left-out cluster is a mesh service's, named by no listener except through routes or on-demand
    TCP proxies; and asking for every left-out cluster gives back exactly the full set."""
    publisher = Publisher()
    for case, snapshot in _cases():
        hub = XdsHub(snapshot, scoping=True)
        for we in snapshot.workload_entries:
            for mode in ("capture", "proxy"):
                proxy = Proxy.from_workload_entry(we, mode=mode)
                resources = generate(snapshot, proxy)
                full = publisher.publish(resources)
                envoy = DeltaEnvoy(hub, proxy)
                view = envoy.conn.stream.published
                for short in TYPES:
                    if short != "cds":
                        assert view.types[short].version == full.types[short].version, (case, proxy.id, short)
                left_out = set(full.types["cds"].resources) - set(view.types["cds"].resources)
                pinned = pinned_clusters(resources.listeners.values(), resources.routes.values(), resources.clusters)
                assert all(scoped_host(n) and n not in pinned for n in left_out), (case, proxy.id)
                if left_out:
                    envoy.ask(*sorted(left_out))
                assert set(envoy.conn.stream.held("cds")) == set(full.types["cds"].resources), (case, proxy.id)


def test_a_mirror_target_is_always_sent_as_envoy_does_not_fetch_it_on_demand():
    mirror = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}], mirror: {host: ratings, subset: v1}}]
"""
    snapshot = bookinfo()
    hub = XdsHub(snapshot, scoping=True)
    envoy = DeltaEnvoy(hub, workload(snapshot, "productpage-v1"))
    assert cluster("ratings.default.svc.cluster.local", "v1") not in envoy.conn.stream.held("cds")
    change = load_text(mirror).raise_for_errors()
    hub.update(snapshot.with_changes(upserts=change), [r.key for r in change])  # routes only: the cluster exists
    envoy.pushes()
    assert cluster("ratings.default.svc.cluster.local", "v1") in envoy.conn.stream.held("cds")
    assert cluster(REVIEWS, "v1") not in envoy.conn.stream.held("cds")  # the route's own: on demand
