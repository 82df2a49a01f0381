"""Automatic scoping in the hub, without a network: what a delta sidecar is sent of its clusters, what
it learns from on-demand requests (Envoy's ODCDS), and that nothing else ever differs from a full
generation. Real Envoys doing the same: tests/controlplane/test_scoping_live.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from plait.api import load_paths, load_text
from plait.model import MeshSnapshot, Proxy
from plait.testing.ads_client import make_node
from plait.xds.generator import generate
from plait.xds.hub import XdsHub
from plait.xds.publish import TYPES, Publisher
from plait.xds.resources import TYPE_URLS
from plait.xds.scope import (
    CALLED,
    SERVES,
    VHDS_READY,
    SplitRoute,
    on_demand_route_configs,
    pinned_clusters,
    scoped_host,
)
from plait.xds.simulate.routes import find_virtual_host

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

    def ask_host(self, *names: str) -> dict[str, str | None]:
        """Envoy's on-demand VHDS request (``<route config>/<Host header>``): what answers each name
        (the resource whose alias it is), None when the answer says nothing serves it."""
        answers: dict[str, str | None] = {}
        requests = [vhds_request(*names)]
        if self.conn.stream.status("vhds").state == "NOT SENT":  # Envoy subscribes (wildcard) with its first RDS
            requests.insert(0, vhds_request())
        for response in (r for request in requests for r in self.conn.receive(request)):
            if response.type == "vhds":
                for resource in response.to_proto().resources:
                    answers.update(
                        {alias: resource.name if resource.HasField("resource") else None for alias in resource.aliases}
                    )
            self.conn.receive(
                discovery_pb2.DeltaDiscoveryRequest(type_url=TYPE_URLS[response.type], response_nonce=response.nonce)
            )
        return answers

    def virtual_hosts(self) -> dict[str, route_components_pb2.VirtualHost]:
        return {
            n: route_components_pb2.VirtualHost.FromString(r.value) for n, r in self.conn.stream.held("vhds").items()
        }

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


def _request_host(domain: str) -> str:
    """A Host header a domain matches (a wildcard's own text is not one)."""
    return "x" + domain[1:] if domain.startswith("*") else domain[:-1] + "x" if domain.endswith("*") else domain


def test_a_scoped_view_differs_from_the_full_generation_only_by_what_envoy_can_fetch():
    """Every testdata workload: listeners, endpoints and secrets are the full generation's; a left-out
    cluster is a mesh service's, named by no listener except through routes or on-demand TCP proxies;
    a route configuration whose listener can fetch virtual hosts (the on_demand filter) is sent
    without them (VHDS), the others whole. Asking for every left-out cluster, and for a host of every
    virtual host, gives back exactly the full set: each answer is the virtual host Envoy's own domain
    search picks in the full configuration."""
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
                    if short not in ("cds", "rds", "vhds"):
                        assert view.types[short].version == full.types[short].version, (case, proxy.id, short)
                fetched = on_demand_route_configs(resources.listeners.values())
                for name, config in resources.routes.items():
                    sent = json_format.MessageToDict(
                        route_pb2.RouteConfiguration.FromString(view.types["rds"].resources[name].value),
                        preserving_proto_field_name=True,
                    )
                    if name not in fetched:
                        assert view.types["rds"].resources[name].version == full.types["rds"].resources[name].version, (
                            name
                        )
                        continue
                    assert "virtual_hosts" not in sent and sent["vhds"]["config_source"]["ads"] == {}, (case, name)
                    for vhost in config["virtual_hosts"]:
                        for domain in vhost["domains"]:
                            if domain == "*":
                                continue
                            asked = f"{name}/{_request_host(domain)}"
                            picked, _ = find_virtual_host(config, _request_host(domain))
                            answer = envoy.ask_host(asked)[asked]
                            assert answer == f"{name}/{picked['name']}", (case, proxy.id, asked)
                    held = {
                        n.partition("/")[2]: v for n, v in envoy.virtual_hosts().items() if n.startswith(f"{name}/")
                    }
                    expected = {v["name"] for v in config["virtual_hosts"] if "*" not in v["domains"]}
                    assert set(held) - {VHDS_READY} == expected, (case, proxy.id, name)
                left_out = set(full.types["cds"].resources) - set(envoy.conn.stream.held("cds"))
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


def _split(*vhosts: dict) -> SplitRoute:
    config = {"name": "80", "virtual_hosts": list(vhosts), "validate_clusters": False}
    return SplitRoute(Publisher().convert("rds", "80", config))


def _vhost(name: str, *domains: str) -> dict:
    return {
        "name": name,
        "domains": list(domains),
        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}],
    }


def test_a_split_route_configuration_answers_as_envoy_picks_and_never_sends_the_catch_all_whole():
    split = _split(
        _vhost("a.default.svc.cluster.local:80", "a", "a.default.svc.cluster.local"),
        _vhost("*.example.com:80", "*.example.com"),
        _vhost("api.example.com:80", "api.example.com"),
        {**_vhost("block_all", "*"), "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 502}}]},
    )
    shell = route_pb2.RouteConfiguration.FromString(split.shell.value)
    assert not shell.virtual_hosts and shell.vhds.config_source.HasField("ads")
    assert split.resolve("a").resource.name == "80/a.default.svc.cluster.local:80"
    assert split.resolve("a").host == "a.default.svc.cluster.local"
    assert split.resolve("api.example.com").resource.name == "80/api.example.com:80"  # exact before wildcard
    assert split.resolve("www.example.com").resource.name == "80/*.example.com:80"
    assert split.resolve("a.default.svc.cluster.local:80").resource.name == "80/a.default.svc.cluster.local:80"
    # a host nothing but the catch-all serves: a copy of it (REGISTRY_ONLY's 502) for that host alone
    other = split.resolve("elsewhere.org")
    copy = route_components_pb2.VirtualHost.FromString(other.resource.value)
    assert other.resource.name == copy.name == "80/elsewhere.org" and list(copy.domains) == ["elsewhere.org"]
    assert copy.routes[0].direct_response.status == 502 and other.host is None
    assert split.resolve(VHDS_READY) is None  # the marker every scoped configuration has answers nothing
    # holding the wildcard brings the exact host it would otherwise take the requests of
    assert set(split.held(["*.example.com"])) == {"80/*.example.com:80", "80/api.example.com:80", f"80/{VHDS_READY}"}
    assert set(split.held([])) == {f"80/{VHDS_READY}"}


def test_without_a_catch_all_an_unknown_host_resolves_to_nothing():
    split = _split(_vhost("a.default.svc.cluster.local:80", "a"))
    assert split.resolve("nowhere") is None


def test_a_route_change_keeps_the_domain_search_and_a_new_domain_makes_it_again():
    a, b = _vhost("a:80", "a", "a:80"), _vhost("*.example.com:80", "*.example.com")
    first = _split(a, b)
    assert first.resolve("www.example.com").resource.name == "80/*.example.com:80"
    rerouted = _split({**a, "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 503}}]}, b)
    rerouted.keep_domains_of(first)
    assert rerouted.domains() is first.domains()  # same names and domains: the search is reused
    assert rerouted.resolve("a").resource is not first.resolve("a").resource  # answered with the new routes
    renamed = _split(_vhost("a:80", "a", "a:80", "api.example.com"), b)
    renamed.keep_domains_of(first)
    assert renamed.domains() is not first.domains()
    assert renamed.resolve("api.example.com").resource.name == "80/a:80"


def vhds_request(*asked: str) -> discovery_pb2.DeltaDiscoveryRequest:
    """A VHDS request as Envoy sends them: without names first, then ``<route config>/<host>`` asks."""
    return discovery_pb2.DeltaDiscoveryRequest(type_url=TYPE_URLS["vhds"], resource_names_subscribe=asked)


def test_a_virtual_host_asked_for_by_its_host_brings_the_services_clusters_first_and_answers_with_an_alias():
    snapshot = bookinfo()
    hub = XdsHub(snapshot, scoping=True)
    envoy = DeltaEnvoy(hub, workload(snapshot, "productpage-v1"))
    assert cluster(REVIEWS, "v1") not in envoy.conn.stream.held("cds")
    envoy.conn.receive(vhds_request())
    responses = envoy.conn.receive(vhds_request("9080/reviews:9080"))
    assert [r.type for r in responses] == ["cds", "vhds", "vhds"]  # clusters first, then the virtual host
    answer = responses[-1].to_proto().resources
    assert [(r.name, list(r.aliases)) for r in answer] == [(f"9080/{REVIEWS}:9080", ["9080/reviews:9080"])]
    assert cluster(REVIEWS, "v1") in {r.name for r in responses[0].payload.resources}
    assert hub.scope_of(envoy.proxy_id)["hosts"][REVIEWS] == CALLED
    passthrough = envoy.conn.receive(vhds_request("9080/elsewhere:9080"))[-1].to_proto().resources
    copy = route_components_pb2.VirtualHost.FromString(passthrough[0].resource.value)
    assert copy.name == "9080/elsewhere:9080" and copy.routes[0].route.cluster == "PassthroughCluster"  # ALLOW_ANY
    unknown = envoy.conn.receive(vhds_request("no-such-config/x"))[-1].to_proto().resources
    assert [(r.name, list(r.aliases), r.HasField("resource")) for r in unknown] == [
        ("no-such-config/x", ["no-such-config/x"], False)  # Envoy then answers 404
    ]
