"""Publishing: content-hash versions, the conversion caches, consistency checks, bad resources,
and which proxies a change can affect."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from plait.api import load_paths, load_text
from plait.model import MeshSnapshot, Proxy
from plait.xds.generator import changed_virtual_hosts, generate, route_names
from plait.xds.publish import Publisher, change_impact, content_hash, inconsistencies
from plait.xds.resources import ResourceSet

BOOKINFO = Path(__file__).parents[2] / "src/plait/demo/bookinfo"
NETWORKING = BOOKINFO / "networking"


def bookinfo(*files: str) -> MeshSnapshot:
    paths = [BOOKINFO / "services.yaml", NETWORKING / "destination-rule-all.yaml", *(NETWORKING / f for f in files)]
    return MeshSnapshot(load_paths(paths).raise_for_errors())


def productpage(snapshot: MeshSnapshot) -> Proxy:
    return Proxy.from_workload_entry(snapshot.workload("productpage-v1"))


def versions(published) -> dict[str, dict[str, str]]:
    return {short: {n: r.version for n, r in m.resources.items()} for short, m in published.types.items()}


def test_versions_are_content_hashes_stable_across_runs_and_key_order():
    assert content_hash({"a": 1, "b": [1, {"c": 2, "d": 3}]}) == content_hash({"b": [1, {"d": 3, "c": 2}], "a": 1})
    snapshot = bookinfo("virtual-service-reviews-jason-v2-v3.yaml")
    first = Publisher().publish(generate(snapshot, productpage(snapshot)))
    second = Publisher().publish(generate(snapshot, productpage(snapshot)))
    assert versions(first) == versions(second)
    assert {s: m.version for s, m in first.types.items()} == {s: m.version for s, m in second.types.items()}


def test_an_unchanged_resource_is_converted_once_and_shared():
    snapshot = bookinfo()
    publisher = Publisher()
    first = publisher.publish(generate(snapshot, productpage(snapshot)))
    converted = publisher.conversions
    reviews = Proxy.from_workload_entry(snapshot.workload("reviews-v2"))
    second = publisher.publish(generate(snapshot, reviews), first)
    assert publisher.conversions == converted  # same namespace and ports: identical resources
    for short in first.types:
        assert second.types[short] is first.types[short]  # no change: the very same map, nothing to send
    name = "outbound|9080|v1|reviews.default.svc.cluster.local"
    assert second.types["cds"].resources[name] is first.types["cds"].resources[name]


def test_one_changed_virtual_host_is_the_only_one_converted_again():
    snapshot = bookinfo()
    publisher = Publisher()
    before = publisher.publish(generate(snapshot, productpage(snapshot)))
    changed = bookinfo("virtual-service-reviews-test-v2.yaml")
    vhosts = publisher.vhost_conversions
    after = publisher.publish(generate(changed, productpage(changed)), before)
    assert publisher.vhost_conversions == vhosts + 1
    assert after.types["rds"].version != before.types["rds"].version
    assert after.types["cds"] is before.types["cds"]


def test_route_configurations_converted_by_virtual_host_equal_parse_dict_of_the_whole():
    snapshot = bookinfo("virtual-service-reviews-jason-v2-v3.yaml")
    resources = generate(snapshot, productpage(snapshot))
    published = Publisher().publish(resources)
    for name, config in resources.routes.items():
        whole = json_format.ParseDict(config, route_pb2.RouteConfiguration())
        assert route_pb2.RouteConfiguration.FromString(published.types["rds"].resources[name].value) == whole


def test_decoded_resources_are_envoy_json():
    snapshot = bookinfo()
    resources = generate(snapshot, productpage(snapshot))
    published = Publisher().publish(resources)
    cluster = published.types["cds"].resources["outbound|9080||reviews.default.svc.cluster.local"].to_dict()
    assert cluster["name"] == "outbound|9080||reviews.default.svc.cluster.local" and cluster["type"] == "EDS"


def test_references_to_missing_resources_are_inconsistencies():
    snapshot = bookinfo("virtual-service-all-v1.yaml")
    resources = generate(snapshot, productpage(snapshot))
    assert inconsistencies(resources) == []
    broken = copy.deepcopy(resources)
    del broken.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
    del broken.endpoints["outbound|9080|v1|ratings.default.svc.cluster.local"]
    del broken.routes["9080"]
    problems = Publisher().publish(broken).inconsistencies
    assert (
        "cds outbound|9080|v1|ratings.default.svc.cluster.local asks for endpoints "
        "outbound|9080|v1|ratings.default.svc.cluster.local, which are not generated" in problems
    )
    assert "lds 0.0.0.0_9080 refers to route configuration 9080, which is not generated" in problems
    broken.routes = dict(resources.routes)
    assert (
        "rds 9080 routes to cluster outbound|9080|v1|reviews.default.svc.cluster.local, which is not generated"
        in inconsistencies(broken)
    )


def test_weighted_clusters_tcp_proxies_and_grpc_services_are_checked():
    resources = ResourceSet()
    resources.add_routes(
        [
            {
                "name": "r",
                "virtual_hosts": [
                    {
                        "name": "v",
                        "domains": ["*"],
                        "routes": [
                            {
                                "match": {"prefix": "/"},
                                "route": {
                                    "weighted_clusters": {
                                        "clusters": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]
                                    }
                                },
                            }
                        ],
                    }
                ],
            }
        ]
    )
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {"rds": {"route_config_name": "r"}}}
    tcp = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {"cluster": "c"}}
    grpc = {"envoy_grpc": {"cluster_name": "authz"}}
    sds = {"envoy_grpc": {"cluster_name": "sds-grpc"}}  # in every bootstrap: not a dangling reference
    resources.add_listeners(
        [{"name": "l", "filter_chains": [{"filters": [hcm]}, {"filters": [tcp]}], "access_log": [grpc, sds]}]
    )
    resources.add_clusters([{"name": "a", "type": "STATIC"}])
    assert inconsistencies(resources) == [
        "rds r routes to cluster b, which is not generated",
        "lds l refers to cluster authz, which is not generated",
        "lds l refers to cluster c, which is not generated",
    ]


def test_a_secret_asked_for_over_ads_must_be_served():
    ref = {"name": "gw-cert", "sds_config": {"ads": {}, "resource_api_version": "V3"}}
    agent = {"name": "default", "sds_config": {"api_config_source": {"api_type": "GRPC"}}}  # the agent serves it
    socket = {"typed_config": {"common_tls_context": {"tls_certificate_sds_secret_configs": [ref, agent]}}}
    resources = ResourceSet()
    resources.add_listeners([{"name": "gw", "filter_chains": [{"transport_socket": socket}]}])
    resources.add_clusters([{"name": "up", "type": "STATIC", "transport_socket": socket}])
    assert inconsistencies(resources) == [
        "lds gw refers to secret gw-cert, which nothing serves (credentialName gw-cert: no Secret with that name "
        "in the proxy's namespace holds it)",
        "cds up refers to secret gw-cert, which nothing serves (credentialName gw-cert: no Secret with that name "
        "in the proxy's namespace holds it)",
    ]
    resources.add_secrets([{"name": "gw-cert"}])
    assert inconsistencies(resources) == []


def test_a_resource_that_fails_conversion_is_dropped_or_keeps_its_last_good_version():
    snapshot = bookinfo()
    resources = generate(snapshot, productpage(snapshot))
    publisher = Publisher()
    good = publisher.publish(resources)
    name = "outbound|9080||reviews.default.svc.cluster.local"
    bad = copy.deepcopy(resources)
    bad.clusters[name]["no_such_field"] = 1
    bad.clusters["brand-new"] = {"name": "brand-new", "type": "NOT_A_TYPE"}
    published = publisher.publish(bad, good)
    assert published.types["cds"].resources[name] is good.types["cds"].resources[name]
    assert "brand-new" not in published.types["cds"].resources
    (kept,) = [e for e in published.errors if e.startswith(f"cds {name}:")]
    assert "no_such_field" in kept and kept.endswith("(kept the previous version)")
    assert any(e.startswith("cds brand-new:") for e in published.errors)
    first_time = publisher.publish(bad)  # nothing to fall back on: dropped
    assert name not in first_time.types["cds"].resources


def test_publish_routes_replaces_only_route_configurations():
    snapshot = bookinfo()
    publisher = Publisher()
    before = publisher.publish(generate(snapshot, productpage(snapshot)))
    changed = bookinfo("virtual-service-all-v1.yaml")
    routes = list(generate(changed, productpage(changed)).routes.values())
    after = publisher.publish_routes(routes, before)
    assert all(after.types[s] is before.types[s] for s in ("cds", "eds", "lds"))
    assert after.types["rds"].version == publisher.publish(generate(changed, productpage(changed))).types["rds"].version


def _virtual_hosts_of(changed: MeshSnapshot, hosts: set[str]) -> dict[str, dict[str, dict]]:
    proxy = productpage(changed)
    return changed_virtual_hosts(changed, proxy, route_names(changed, proxy), hosts)


def test_virtual_hosts_spliced_into_route_configurations_equal_publishing_the_whole_ones():
    snapshot = bookinfo()
    publisher = Publisher()
    before = publisher.publish(generate(snapshot, productpage(snapshot)))
    changed = bookinfo("virtual-service-reviews-jason-v2-v3.yaml")
    vhosts = _virtual_hosts_of(changed, {"reviews.default.svc.cluster.local"})
    assert {n: list(v) for n, v in vhosts.items()} == {"9080": ["reviews.default.svc.cluster.local:9080"]}
    converted = publisher.vhost_conversions
    spliced = publisher.publish_vhosts(vhosts, before)
    assert publisher.vhost_conversions == converted + 1  # the changed virtual host alone
    whole = Publisher().publish(generate(changed, productpage(changed)))
    assert versions(spliced) == versions(whole)
    assert spliced.types["rds"].resources["9080"].value == whole.types["rds"].resources["9080"].value
    assert all(spliced.types[s] is before.types[s] for s in ("cds", "eds", "lds"))
    # back as it was: the very resource published first (one object per content)
    undone = publisher.publish_vhosts(_virtual_hosts_of(snapshot, {"reviews.default.svc.cluster.local"}), spliced)
    assert undone.types["rds"].resources["9080"] is before.types["rds"].resources["9080"]


def test_a_splice_that_cannot_be_done_says_so_and_a_dangling_route_is_an_inconsistency():
    snapshot = bookinfo()
    publisher = Publisher()
    before = publisher.publish(generate(snapshot, productpage(snapshot)))
    vhosts = _virtual_hosts_of(snapshot, {"reviews.default.svc.cluster.local"})
    assert Publisher().publish_vhosts(vhosts, before) is None  # published by another publisher: no parts known
    assert publisher.publish_vhosts({"9080": {"nowhere:9080": {"name": "nowhere:9080"}}}, before) is None
    bad = copy.deepcopy(vhosts)
    bad["9080"]["reviews.default.svc.cluster.local:9080"]["routes"][0]["no_such_field"] = 1
    assert publisher.publish_vhosts(bad, before) is None  # fails conversion: the whole-configuration path reports it
    dangling = copy.deepcopy(vhosts)
    dangling["9080"]["reviews.default.svc.cluster.local:9080"]["routes"][0]["route"] = {"cluster": "outbound|1|x|y"}
    assert publisher.publish_vhosts(dangling, before).inconsistencies == (
        "rds 9080 routes to cluster outbound|1|x|y, which is not generated",
    )


# ------------------------------------------------------------------ change impact

VS_TCP = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-ratings, namespace: default}
spec:
  hosts: [ratings]
  tcp:
  - route:
    - destination: {host: ratings}
"""


def with_files(snapshot: MeshSnapshot, *files: str):
    added = load_paths([NETWORKING / f for f in files]).raise_for_errors()
    return snapshot.with_changes(upserts=added), [r.key for r in added]


def test_impact_of_a_virtual_service_is_its_hosts_and_routes_only():
    snapshot = bookinfo()
    new, keys = with_files(snapshot, "virtual-service-reviews-test-v2.yaml")
    impact = change_impact(snapshot, new, keys)
    assert impact.hosts == {"reviews.default.svc.cluster.local"} and impact.routes_only and not impact.everything
    assert impact.affects("sidecar", "default", {"reviews.default.svc.cluster.local"})
    assert not impact.affects("sidecar", "other", {"details.default.svc.cluster.local"})
    tcp = load_text(VS_TCP).raise_for_errors()
    assert not change_impact(snapshot, snapshot.with_changes(upserts=tcp), [tcp[0].key]).routes_only


def test_an_edit_to_a_delegate_virtual_service_reaches_every_proxy():
    snapshot = bookinfo()
    delegate = load_text("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-routes, namespace: default}
spec:
  http: [{route: [{destination: {host: reviews}}]}]
""").raise_for_errors()
    impact = change_impact(snapshot, snapshot.with_changes(upserts=delegate), [delegate[0].key])
    assert impact.everything  # no hosts: the roots that bring it in are not indexed


def test_impact_of_gateways_sidecars_rules_and_endpoints():
    snapshot = bookinfo()
    new, keys = with_files(snapshot, "bookinfo-gateway.yaml")
    impact = change_impact(snapshot, new, keys)
    assert impact.routers and impact.affects("router", "istio-system", set())
    dr_key = ("DestinationRule", "default", "reviews")
    assert change_impact(snapshot, snapshot.with_changes(deletes=[dr_key]), [dr_key]).hosts == {
        "reviews.default.svc.cluster.local"
    }
    we = snapshot.workload("ratings-v1")
    moved = dataclasses.replace(we, spec=we.spec.model_copy(update={"address": "10.244.9.9"}))
    impact = change_impact(snapshot, snapshot.with_changes(upserts=[moved]), [we.key])
    assert impact.hosts == {"ratings.default.svc.cluster.local"} and not impact.routes_only
    sidecar = ("Sidecar", "default", "default")
    assert change_impact(snapshot, snapshot, [sidecar]).namespaces == {"default"}
    assert change_impact(snapshot, snapshot, [("Sidecar", "istio-system", "default")]).everything
    secret = change_impact(snapshot, snapshot, [("Secret", "web", "shop-cert")])  # read in its namespace only
    assert secret.namespaces == {"web"} and not secret.routes_only and not secret.everything
    assert change_impact(snapshot, snapshot, [("Secret", "istio-system", "gw-cert")]).namespaces == {"istio-system"}


def test_unsure_changes_reach_everyone():
    snapshot = bookinfo()
    assert change_impact(snapshot, snapshot, None).everything
    assert change_impact(snapshot, snapshot, [("AuthorizationPolicy", "default", "x")]).everything
    new_service = load_text("""apiVersion: v1
kind: Service
metadata: {name: extra, namespace: default}
spec:
  ports: [{name: http, port: 80}]
""").raise_for_errors()
    assert change_impact(snapshot, snapshot.with_changes(upserts=new_service), [new_service[0].key]).everything
