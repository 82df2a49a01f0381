"""EnvoyFilter: validation as Istio's, which filters apply to which proxy and in what order, the patch
operations on each kind of object, and a real Envoy running a Lua filter added by a patch."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from plait.api import load_text
from plait.api.extensions import KNOWN_METADATA_KEYS
from plait.model import MeshSnapshot, Proxy
from plait.testing.ads_client import make_node
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.envoy import run_envoy
from plait.testing.http import http_request
from plait.xds.envoyfilter import envoy_filters_for, proxy_metadata
from plait.xds.generator import generate, generate_routes
from plait.xds.hub import XdsHub
from plait.xds.publish import Publisher
from plait.xds.simulate import Request, simulate_mesh
from plait.xds.static import envoy_validate, static_bootstrap
from plait.xds.translate.protomerge import merge_any, merge_message

TESTDATA = Path(__file__).parent / "testdata"
REGISTRY = """
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: api, namespace: default}
spec: {address: 10.0.0.2, labels: {app: api}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web, namespace: default}
spec: {address: 10.0.0.3, labels: {app: web}}
"""
HCM = "envoy.filters.network.http_connection_manager"


def envoy_filter(patches: list[dict], name: str = "ef", namespace: str = "default", **spec) -> str:
    return json.dumps(
        {
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"configPatches": patches, **spec},
        }
    )


def snapshot_of(*documents: str) -> MeshSnapshot:
    return MeshSnapshot(load_text("\n---\n".join([REGISTRY, *documents])).raise_for_errors())


def proxy_of(snapshot: MeshSnapshot, name: str = "api", **changes) -> Proxy:
    return replace(Proxy.from_workload_entry(snapshot.workload(name)), **changes)


def resources_of(*documents: str, workload: str = "api", **changes):
    snapshot = snapshot_of(*documents)
    return generate(snapshot, proxy_of(snapshot, workload, **changes))


def http_filter_names(listener: dict) -> list[list[str]]:
    return [
        [f["name"] for f in item["typed_config"]["http_filters"]]
        for chain in listener["filter_chains"]
        for item in chain["filters"]
        if item["name"] == HCM
    ]


# ------------------------------------------------------------------ validation


LUA = {
    "name": "envoy.filters.http.lua",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "defaultSourceCode": {
            "inlineString": "function envoy_on_response(response_handle)\n"
            '  response_handle:headers():add("x-reviewed-by", "lua")\nend\n'
        },
    },
}
SUB_ROUTER = {"filterChain": {"filter": {"name": HCM, "subFilter": {"name": "envoy.filters.http.router"}}}}


@pytest.mark.parametrize(
    ("patch", "path", "expected"),
    [
        ({"patch": {"operation": "ADD", "value": LUA}}, "spec.configPatches[0]", "missing applyTo"),
        ({"applyTo": "HTTP_FILTER"}, "spec.configPatches[0]", "missing patch"),
        ({"applyTo": "HTTP_FILTER", "patch": {"value": LUA}}, "spec.configPatches[0]", "missing patch.operation"),
        ({"applyTo": "CLUSTER", "patch": {"operation": "ADD"}}, "spec.configPatches[0]", "patch.value is required"),
        (
            {"applyTo": "CLUSTER", "match": {"listener": {}}, "patch": {"operation": "REMOVE"}},
            "spec.configPatches[0]",
            "applyTo CLUSTER needs a cluster match",
        ),
        (
            {"applyTo": "NETWORK_FILTER", "match": {"listener": SUB_ROUTER}, "patch": {"operation": "REMOVE"}},
            "spec.configPatches[0]",
            "subFilter can be used with applyTo HTTP_FILTER only",
        ),
        (
            {
                "applyTo": "HTTP_FILTER",
                "match": {"listener": {"filterChain": {"filter": {"subFilter": {"name": "x"}}}}},
                "patch": {"operation": "REMOVE"},
            },
            "spec.configPatches[0]",
            "filter has no name to match on",
        ),
        (
            {
                "applyTo": "HTTP_FILTER",
                "patch": {
                    "operation": "ADD",
                    "value": {
                        "name": "x",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope"},
                    },
                },
            },
            "spec.configPatches[0]",
            "referenced type unknown",
        ),
        (
            {
                "applyTo": "HTTP_FILTER",
                "patch": {
                    "operation": "ADD",
                    "value": {
                        "name": "x",
                        "typed_config": {"@type": "type.googleapis.com/envoy.config.filter.http.lua.v2.Lua"},
                    },
                },
            },
            "spec.configPatches[0]",
            "hint: use Envoy's v3 API",
        ),
        (
            {"applyTo": "CLUSTER", "patch": {"operation": "ADD", "value": {"connect_timeout": "soon"}}},
            "spec.configPatches[0]",
            "patch.value: not a valid envoy.config.cluster.v3.Cluster",
        ),
        (
            {"applyTo": "CLUSTER", "match": {"proxy": {"proxyVersion": "(1"}}, "patch": {"operation": "REMOVE"}},
            "spec.configPatches[0].match.proxy.proxyVersion",
            "not valid RE2 syntax",
        ),
        ({"applyTo": "LISTENERS", "patch": {"operation": "REMOVE"}}, "spec.configPatches[0].applyTo", "LISTENER"),
    ],
)
def test_invalid_patches_are_refused_with_the_field_and_the_reason(patch: dict, path: str, expected: str) -> None:
    result = load_text(envoy_filter([patch]), "ef.yaml")
    assert [(p.path, p.file, p.kind, p.name) for p in result.errors] == [(path, "ef.yaml", "EnvoyFilter", "ef")]
    assert expected in result.errors[0].message


def test_durations_may_be_written_as_istio_reads_them() -> None:
    """Istio decodes values with Go's duration syntax (its integration tests write ``500ms``)."""
    value = {
        "name": "c",
        "dns_refresh_rate": "500ms",
        "connectTimeout": "1m30s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": "1h"},
            }
        },
    }
    cluster = resources_of(
        envoy_filter(
            [
                {
                    "applyTo": "CLUSTER",
                    "match": {"context": "SIDECAR_OUTBOUND"},
                    "patch": {"operation": "ADD", "value": value},
                }
            ]
        )
    ).clusters["c"]
    assert (cluster["dns_refresh_rate"], cluster["connect_timeout"]) == ("0.500s", "90s")
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["common_http_protocol_options"]["idle_timeout"] == "3600s"


def test_a_typed_struct_of_a_type_plait_does_not_know_is_accepted_as_istio_accepts_it() -> None:
    """Istio's own stats filters were TypedStructs of ``stats.PluginConfig``; protobuf sees only a string."""
    value = {
        "name": "istio.stats",
        "typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/stats.PluginConfig",
            "value": {},
        },
    }
    result = load_text(
        envoy_filter([{"applyTo": "HTTP_FILTER", "patch": {"operation": "INSERT_FIRST", "value": value}}])
    )
    assert not result.errors


def test_selector_and_target_refs_together_are_refused() -> None:
    result = load_text(
        envoy_filter(
            [],
            workloadSelector={"labels": {"app": "x"}},
            targetRefs=[{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "g"}],
        )
    )
    assert "only one of targetRefs or workloadSelector" in result.errors[0].message


@pytest.mark.parametrize(
    ("patch", "path", "expected"),
    [
        (
            {"applyTo": "CLUSTER", "patch": {"operation": "ADD", "value": {"name": "c", "colour": "blue"}}},
            "spec.configPatches[0].patch.value",
            "unknown fields are ignored, as in Istio",
        ),
        (
            {"applyTo": "EXTENSION_CONFIG", "patch": {"operation": "ADD", "value": {"name": "e"}}},
            "spec.configPatches[0].applyTo",
            "not supported by plait yet",
        ),
        (
            {"applyTo": "HTTP_FILTER", "patch": {"operation": "ADD", "filterClass": "AUTHZ", "value": LUA}},
            "spec.configPatches[0].patch.filterClass",
            "Istio ignores it too",
        ),
        (
            {
                "applyTo": "HTTP_FILTER",
                "patch": {
                    "operation": "INSERT_BEFORE",
                    "value": {
                        "name": "my-wasm",
                        "config_discovery": {
                            "config_source": {"ads": {}},
                            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"],
                        },
                    },
                },
            },
            "spec.configPatches[0].patch.value",
            "which plait does not serve yet",
        ),
        (
            {
                "applyTo": "CLUSTER",
                "match": {"proxy": {"proxyVersion": r"^1\.2[0-9].*"}},
                "patch": {"operation": "REMOVE"},
            },
            "spec.configPatches[0].match.proxy.proxyVersion",
            "matches no plait proxy",
        ),
        (
            {"applyTo": "CLUSTER", "match": {"proxy": {"proxyVersion": "0" * 1025}}, "patch": {"operation": "REMOVE"}},
            "spec.configPatches[0].match.proxy.proxyVersion",
            "longer than 1024 characters",
        ),
        (
            {"applyTo": "CLUSTER", "patch": {"operation": "REPLACE", "value": {"name": "c"}}},
            "spec.configPatches[0].patch.operation",
            "REPLACE has no effect on CLUSTER",
        ),
        (
            {
                "applyTo": "HTTP_FILTER",
                "match": {"listener": {"filterChain": {"filter": {"name": "envoy.http_connection_manager"}}}},
                "patch": {"operation": "ADD", "value": LUA},
            },
            "spec.configPatches[0].match.listener",
            "deprecated filter name",
        ),
    ],
)
def test_what_has_no_effect_is_accepted_with_a_warning(patch: dict, path: str, expected: str) -> None:
    result = load_text(envoy_filter([patch]))
    assert not result.errors and len(result.resources) == 1
    assert [(w.path, expected in w.message) for w in result.warnings] == [(path, True)]


# ------------------------------------------------------------------ which filters, in which order


def test_root_namespace_filters_come_first_then_priority_then_name() -> None:
    remove = [{"applyTo": "CLUSTER", "match": {"cluster": {"name": "nothing"}}, "patch": {"operation": "REMOVE"}}]
    snapshot = snapshot_of(
        envoy_filter(remove, "b"),
        envoy_filter(remove, "a"),
        envoy_filter(remove, "z", "istio-system"),
        envoy_filter(remove, "early", priority=-5),
        envoy_filter(remove, "other", "elsewhere"),
        envoy_filter(remove, "web-only", workloadSelector={"labels": {"app": "web"}}),
        envoy_filter(
            remove, "gw", targetRefs=[{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "api"}]
        ),
    )
    order = [f"{ef.namespace}/{ef.name}" for ef in envoy_filters_for(snapshot, proxy_of(snapshot))]
    assert order == ["default/early", "istio-system/z", "default/a", "default/b"]
    web = [ef.name for ef in envoy_filters_for(snapshot, proxy_of(snapshot, "web"))]
    assert web == ["early", "z", "a", "b", "web-only"]
    gateway = proxy_of(snapshot, labels={"gateway.networking.k8s.io/gateway-name": "api"})
    assert "gw" in [ef.name for ef in envoy_filters_for(snapshot, gateway)]


def test_proxy_version_and_metadata_match_what_plait_agents_report() -> None:
    def patch(proxy_match: dict, name: str) -> dict:
        return {
            "applyTo": "CLUSTER",
            "match": {"context": "SIDECAR_OUTBOUND", "proxy": proxy_match},
            "patch": {"operation": "ADD", "value": {"name": name, "connect_timeout": "1s"}},
        }

    clusters = resources_of(
        envoy_filter(
            [
                patch({"proxyVersion": r"^1\.2.*"}, "istio-1-2"),
                patch({"proxyVersion": r"^0\."}, "plait-0"),
                patch({"metadata": {"NAMESPACE": "default"}}, "in-default"),
                patch({"metadata": {"CLUSTER_ID": "k8s"}}, "unknown-key"),
            ]
        )
    ).clusters
    assert {"plait-0", "in-default"} <= set(clusters) and not {"istio-1-2", "unknown-key"} & set(clusters)


def test_every_metadata_key_plait_reports_is_known_to_validation() -> None:
    snapshot = snapshot_of()
    reported = proxy_metadata(proxy_of(snapshot, identity="spiffe://cluster.local/ns/default/sa/api"))
    assert set(reported) == set(KNOWN_METADATA_KEYS)


def test_a_match_names_one_kind_of_object() -> None:
    result = load_text(
        envoy_filter(
            [{"applyTo": "CLUSTER", "match": {"cluster": {}, "listener": {}}, "patch": {"operation": "REMOVE"}}]
        )
    )
    assert "set only one of listener, routeConfiguration, cluster (got listener, cluster)" in result.errors[0].message


# ------------------------------------------------------------------ operations


def lua_before_router(context: str = "SIDECAR_INBOUND") -> dict:
    return {
        "applyTo": "HTTP_FILTER",
        "match": {"context": context, "listener": {"portNumber": 8080, **SUB_ROUTER}},
        "patch": {"operation": "INSERT_BEFORE", "value": LUA},
    }


def test_insert_before_router_reaches_every_inbound_chain_of_the_port_only() -> None:
    resources = resources_of(envoy_filter([lua_before_router()]), identity="spiffe://cluster.local/ns/default/sa/api")
    inbound = http_filter_names(resources.listeners["virtualInbound"])
    patched = [names for names in inbound if "envoy.filters.http.lua" in names]
    # the port's TLS and plaintext chains; the passthrough chains (other ports) stay as they were
    assert len(inbound) == 4 and len(patched) == 2
    assert all(names[-2:] == ["envoy.filters.http.lua", "envoy.filters.http.router"] for names in patched)
    assert "envoy.filters.http.lua" not in json.dumps(resources.listeners["0.0.0.0_8080"])


def test_the_same_patch_on_outbound_context_leaves_inbound_alone() -> None:
    resources = resources_of(envoy_filter([lua_before_router("SIDECAR_OUTBOUND")]))
    assert http_filter_names(resources.listeners["0.0.0.0_8080"])[0][-2] == "envoy.filters.http.lua"
    assert "envoy.filters.http.lua" not in json.dumps(resources.listeners["virtualInbound"])


def test_merge_on_the_hcm_merges_its_typed_config_and_keeps_the_rest() -> None:
    merge = {
        "applyTo": "NETWORK_FILTER",
        "match": {"listener": {"filterChain": {"filter": {"name": HCM}}}},
        "patch": {
            "operation": "MERGE",
            "value": {
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
                    "xff_num_trusted_hops": 5,
                    "commonHttpProtocolOptions": {"idleTimeout": "30s"},
                }
            },
        },
    }
    hcm = resources_of(envoy_filter([merge])).listeners["0.0.0.0_8080"]["filter_chains"][0]["filters"][0]
    config = hcm["typed_config"]
    assert config["xff_num_trusted_hops"] == 5 and config["common_http_protocol_options"] == {"idle_timeout": "30s"}
    assert (
        config["rds"]["route_config_name"] == "8080"
        and config["http_filters"][-1]["name"] == "envoy.filters.http.router"
    )


def test_a_merge_aimed_at_every_http_filter_changes_only_those_of_its_type() -> None:
    merge = {
        "applyTo": "HTTP_FILTER",
        "match": {"context": "SIDECAR_OUTBOUND"},
        "patch": {
            "operation": "MERGE",
            "value": {
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                    "suppress_envoy_headers": True,
                }
            },
        },
    }
    named = {
        **merge,
        "match": {
            "context": "SIDECAR_OUTBOUND",
            "listener": {"filterChain": {"filter": {"name": HCM, "subFilter": {"name": "envoy.filters.http.cors"}}}},
        },
    }
    hcm = resources_of(envoy_filter([merge])).listeners["0.0.0.0_8080"]["filter_chains"][0]["filters"][0]
    configs = {f["name"]: f["typed_config"] for f in hcm["typed_config"]["http_filters"]}
    assert configs["envoy.filters.http.router"]["suppress_envoy_headers"] is True
    assert configs["envoy.filters.http.cors"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
    }
    hcm = resources_of(envoy_filter([named])).listeners["0.0.0.0_8080"]["filter_chains"][0]["filters"][0]
    configs = {f["name"]: f["typed_config"] for f in hcm["typed_config"]["http_filters"]}
    assert configs["envoy.filters.http.cors"]["@type"].endswith("router.v3.Router")  # named: replaced


def test_remove_replace_and_merge_of_clusters() -> None:
    patches = [
        {"applyTo": "CLUSTER", "match": {"cluster": {"name": "BlackHoleCluster"}}, "patch": {"operation": "REMOVE"}},
        {
            "applyTo": "CLUSTER",
            "match": {"context": "SIDECAR_OUTBOUND", "cluster": {"service": "api.default.svc.cluster.local"}},
            "patch": {"operation": "MERGE", "value": {"connect_timeout": "7s", "lb_policy": "RANDOM"}},
        },
        {
            "applyTo": "CLUSTER",
            "match": {"context": "SIDECAR_INBOUND", "cluster": {"portNumber": 8080}},
            "patch": {"operation": "MERGE", "value": {"connect_timeout": "3s"}},
        },
    ]
    clusters = resources_of(envoy_filter(patches)).clusters
    assert "BlackHoleCluster" not in clusters
    outbound = clusters["outbound|8080||api.default.svc.cluster.local"]
    assert (outbound["connect_timeout"], outbound["lb_policy"]) == ("7s", "RANDOM")
    assert clusters["inbound|8080||"]["connect_timeout"] == "3s"


def test_virtual_host_and_route_patches_also_reach_routes_regenerated_alone() -> None:
    patches = [
        {
            "applyTo": "VIRTUAL_HOST",
            "match": {"routeConfiguration": {"portNumber": 8080}},
            "patch": {"operation": "MERGE", "value": {"include_request_attempt_count": True}},
        },
        {
            "applyTo": "HTTP_ROUTE",
            "match": {"routeConfiguration": {"vhost": {"route": {"name": "default"}}}},
            "patch": {"operation": "MERGE", "value": {"route": {"timeout": "9s"}}},
        },
    ]
    snapshot = snapshot_of(envoy_filter(patches))
    proxy = proxy_of(snapshot)
    for config in (generate(snapshot, proxy).routes["8080"], generate_routes(snapshot, proxy, only=["8080"])[0]):
        vhost = next(vh for vh in config["virtual_hosts"] if vh["name"].startswith("api."))
        assert vhost["include_request_attempt_count"] is True
        assert vhost["routes"][-1]["route"]["timeout"] == "9s" and "cluster" in vhost["routes"][-1]["route"]


def test_inbound_route_configurations_inside_listeners_are_patched_in_the_inbound_context() -> None:
    patch = {
        "applyTo": "VIRTUAL_HOST",
        "match": {"context": "SIDECAR_INBOUND", "routeConfiguration": {"portNumber": 8080}},
        "patch": {
            "operation": "MERGE",
            "value": {"response_headers_to_add": [{"header": {"key": "x-in", "value": "1"}}]},
        },
    }
    resources = resources_of(envoy_filter([patch]))
    inbound = resources.listeners["virtualInbound"]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    assert inbound["virtual_hosts"][0]["response_headers_to_add"][0]["header"]["key"] == "x-in"
    assert "x-in" not in json.dumps(resources.routes)


def test_listener_filters_insert_before_a_named_one() -> None:
    patch = {
        "applyTo": "LISTENER_FILTER",
        "match": {"context": "SIDECAR_INBOUND", "listener": {"listenerFilter": "envoy.filters.listener.original_dst"}},
        "patch": {
            "operation": "INSERT_BEFORE",
            "value": {
                "name": "envoy.filters.listener.proxy_protocol",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"
                },
            },
        },
    }
    names = [f["name"] for f in resources_of(envoy_filter([patch])).listeners["virtualInbound"]["listener_filters"]]
    assert names[:2] == ["envoy.filters.listener.proxy_protocol", "envoy.filters.listener.original_dst"]


def test_listener_add_and_remove() -> None:
    added = {
        "name": "extra",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15999}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                            "stat_prefix": "extra",
                            "cluster": "PassthroughCluster",
                        },
                    }
                ]
            }
        ],
    }
    patches = [
        {
            "applyTo": "LISTENER",
            "match": {"context": "SIDECAR_OUTBOUND"},
            "patch": {"operation": "ADD", "value": added},
        },
        {"applyTo": "LISTENER", "match": {"listener": {"portNumber": 8080}}, "patch": {"operation": "REMOVE"}},
    ]
    listeners = resources_of(envoy_filter(patches)).listeners
    assert "extra" in listeners and "0.0.0.0_8080" not in listeners and "virtualInbound" in listeners


def test_proto_merge_rules() -> None:
    cluster = {
        "name": "c",
        "type": "EDS",
        "eds_cluster_config": {"service_name": "c"},
        "health_checks": [{"timeout": "1s"}],
    }
    merge_message(
        cluster,
        {"load_assignment": {"cluster_name": "c"}, "type": "STATIC", "health_checks": [{"timeout": "2s"}]},
        "envoy.config.cluster.v3.Cluster",
    )
    assert cluster["type"] == "STATIC" and [h["timeout"] for h in cluster["health_checks"]] == ["1s", "2s"]
    merge_message(cluster, {"cluster_type": {"name": "custom"}}, "envoy.config.cluster.v3.Cluster")
    assert "type" not in cluster and cluster["cluster_type"] == {"name": "custom"}  # one member of a oneof
    replaced = merge_message(
        {"health_checks": [{"timeout": "1s"}]},
        {"health_checks": [{"timeout": "5s"}]},
        "envoy.config.cluster.v3.Cluster",
        replace_lists=True,
    )
    assert replaced == {"health_checks": [{"timeout": "5s"}]}
    router = {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "dynamic_stats": False}
    other = {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1}
    assert merge_any(router, other) == other
    assert merge_any(router, {"@type": router["@type"], "suppress_envoy_headers": True}) == {
        **router,
        "suppress_envoy_headers": True,
    }


# ------------------------------------------------------------------ goldens and Envoy


def test_golden_50_applies_only_what_selects_reviews() -> None:
    snapshot = MeshSnapshot(load_text((TESTDATA / "50-envoyfilter-sidecar.input.yaml").read_text()).raise_for_errors())
    resources = generate(snapshot, Proxy.from_workload_entry(snapshot.workload("reviews-v1")))
    assert "lua_cluster" in resources.clusters  # reviews-lua's ADD
    page = generate(snapshot, Proxy.from_workload_entry(snapshot.workload("productpage-v1")))
    assert page.clusters["outbound|9080||details.default.svc.cluster.local"]["connect_timeout"] == "3s"
    assert resources.clusters["outbound|9080||details.default.svc.cluster.local"]["connect_timeout"] != "3s"
    outbound = http_filter_names(resources.listeners["0.0.0.0_9080"])[0]
    # fault removed, cors replaced; the telemetry filter (client identity) stays before the router
    assert outbound == [
        "envoy.filters.http.buffer",
        "envoy.filters.http.on_demand",
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.router",
    ]


def test_explain_follows_the_patched_routes() -> None:
    """`plait explain` simulates what the proxy is sent: the route golden 50 inserts first answers /healthz."""
    snapshot = MeshSnapshot(load_text((TESTDATA / "50-envoyfilter-sidecar.input.yaml").read_text()).raise_for_errors())
    reviews = Proxy.from_workload_entry(snapshot.workload("reviews-v1"))
    health = simulate_mesh(snapshot, reviews, Request.from_url("http://ratings:9080/healthz"))
    assert (health.status, health.route) == (200, "health")
    other = simulate_mesh(snapshot, reviews, Request.from_url("http://ratings:9080/ratings/0"))
    assert other.status is None and other.clusters[0].name == "outbound|9080||ratings.default.svc.cluster.local"


def test_a_patch_that_breaks_envoy_config_is_caught_before_envoy_gets_it() -> None:
    """ADD puts a filter after the router (as in Istio): Envoy refuses that configuration."""
    add = {
        "applyTo": "HTTP_FILTER",
        "match": {"context": "SIDECAR_OUTBOUND"},
        "patch": {"operation": "ADD", "value": LUA},
    }
    resources = resources_of(envoy_filter([add]))
    assert Publisher().publish(resources).errors == ()  # well-formed protobuf…
    verdict = envoy_validate(static_bootstrap(resources))
    assert not verdict.ok and "router" in verdict.output  # …that Envoy itself rejects


def test_a_route_a_patch_points_at_an_unknown_destination_gets_istios_503() -> None:
    """As any route to a destination the proxy does not know: an empty cluster of that name (Envoy
    answers 503), so the push stays consistent."""
    patch = {
        "applyTo": "HTTP_ROUTE",
        "match": {"context": "SIDECAR_OUTBOUND", "routeConfiguration": {"portNumber": 8080}},
        "patch": {
            "operation": "INSERT_FIRST",
            "value": {"name": "lost", "match": {"prefix": "/lost"}, "route": {"cluster": "outbound|1|nowhere|none"}},
        },
    }
    resources = resources_of(envoy_filter([patch]))
    assert resources.clusters["outbound|1|nowhere|none"]["type"] == "STATIC"
    assert "load_assignment" not in resources.clusters["outbound|1|nowhere|none"]
    assert Publisher().publish(resources).inconsistencies == ()


def test_a_lua_filter_added_by_envoy_filter_answers_through_envoy(tmp_path: Path) -> None:
    with loopback_subnet() as net:
        text = REGISTRY.replace("10.0.0.2", f"{net}.2").replace("10.0.0.3", f"{net}.1")
        snapshot = MeshSnapshot(load_text(text + "---\n" + envoy_filter([lua_before_router()])).raise_for_errors())
        proxy = replace(Proxy.from_workload_entry(snapshot.workload("api"), mode="proxy"), app_address=f"{net}.3")
        resources = generate(snapshot, proxy)
        with HttpBackend("api", f"{net}.3", 8080), run_envoy(static_bootstrap(resources), workdir=tmp_path) as envoy:
            reply = http_request(f"{net}.2", 8080, "/")
            assert (reply.status, reply.headers.get("x-reviewed-by")) == (200, "lua")
            assert envoy.stat("http.inbound_0.0.0.0_8080.downstream_rq_completed") >= 1


# ------------------------------------------------------------------ the hub


def test_the_hub_keeps_apart_proxies_an_envoy_filter_tells_apart_and_follows_its_changes() -> None:
    """Two proxies that differ only in a label the filter selects on get different clusters; a
    change of the EnvoyFilter reaches both (its change impact is everything)."""

    def add_cluster(app: str) -> str:
        return envoy_filter(
            [
                {
                    "applyTo": "CLUSTER",
                    "match": {"context": "SIDECAR_OUTBOUND"},
                    "patch": {"operation": "ADD", "value": {"name": "extra", "connect_timeout": "1s"}},
                }
            ],
            workloadSelector={"labels": {"app": app}},
        )

    registry = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n"
    snapshot = MeshSnapshot(load_text(registry + "---\n" + add_cluster("a")).raise_for_errors())
    hub = XdsHub(snapshot)
    one, two = (
        hub.connect(make_node(Proxy("sidecar", ip, name, labels={"app": app})), delta=False, wake=lambda: None)
        for ip, name, app in (("10.0.0.5", "one", "a"), ("10.0.0.6", "two", "b"))
    )

    def clusters(conn) -> set[str]:
        return set(conn.group.published.types["cds"].resources)

    assert "extra" in clusters(one) and "extra" not in clusters(two)
    changed = snapshot.with_changes(upserts=load_text(add_cluster("b")).raise_for_errors())
    hub.update(changed, changed=[("EnvoyFilter", "default", "ef")])
    assert "extra" not in clusters(one) and "extra" in clusters(two)


def test_a_gateway_keeps_its_credentials_when_an_envoy_filter_patches_it() -> None:
    """Patching works on the whole ResourceSet: the SDS secrets a Gateway's credentialName brings stay."""
    text = (
        (TESTDATA / "07-gateway-tls.input.yaml").read_text()
        + """---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: slower-connects, namespace: istio-system}
spec:
  configPatches:
  - applyTo: CLUSTER
    match: {context: GATEWAY}
    patch: {operation: MERGE, value: {connect_timeout: 3s}}
"""
    )
    snapshot = MeshSnapshot(load_text(text).raise_for_errors())
    gateway = generate(snapshot, Proxy.from_workload_entry(snapshot.workload("istio-system/istio-ingressgateway")))
    assert all(c["connect_timeout"] == "3s" for c in gateway.clusters.values())
    assert "admin-cert" in gateway.secrets
    assert Publisher().publish(gateway).inconsistencies == ()
