"""The simulation engine follows Envoy's matching rules: listener hand-off, filter chains, virtual
host domains, route matchers, route actions. Most cases use hand-written Envoy resources, so they test
Envoy's semantics and not the generator; the last ones go through the generator."""

from __future__ import annotations

import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.xds.resources import ResourceSet
from plait.xds.simulate import (
    Connection,
    Request,
    find_virtual_host,
    route_mismatch,
    select_filter_chain,
    simulate,
    simulate_mesh,
)

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
SIDECAR = Proxy(kind="sidecar", ip="10.1.0.5", name="client", namespace="default")
VIP = {"shop": "10.0.0.1", "db": "10.0.0.2"}


def hcm(route_config: dict) -> dict:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": "test",
            "route_config": route_config,
            "normalize_path": True,
            "http_filters": [
                {
                    "name": "envoy.filters.http.fault",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
                },
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                },
            ],
        },
    }


def eds_cluster(name: str, *addresses: str) -> tuple[dict, dict]:
    cluster = {"name": name, "type": "EDS", "eds_cluster_config": {"service_name": name}}
    assignment = {
        "cluster_name": name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": a, "port_value": 8080}}}} for a in addresses
                ]
            }
        ],
    }
    return cluster, assignment


def mesh(
    routes: list[dict],
    *,
    domains: tuple[str, ...] = ("*",),
    clusters: dict[str, tuple[str, ...]] | None = None,
    vhost_extra: dict | None = None,
) -> ResourceSet:
    """A capture-mode sidecar with one HTTP listener on port 80 and one virtual host."""
    resources = ResourceSet()
    vhost = {"name": "vh", "domains": list(domains), "routes": routes, **(vhost_extra or {})}
    resources.add_listeners(
        [
            {
                "name": "virtualOutbound",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
                "use_original_dst": True,
                "filter_chains": [
                    {
                        "filters": [
                            {
                                "name": "envoy.filters.network.tcp_proxy",
                                "typed_config": {"cluster": "PassthroughCluster"},
                            }
                        ]
                    }
                ],
            },
            {
                "name": "0.0.0.0_80",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
                "bind_to_port": False,
                "filter_chains": [{"filters": [hcm({"name": "80", "virtual_hosts": [vhost]})]}],
            },
        ]
    )
    resources.add_clusters([{"name": "PassthroughCluster", "type": "ORIGINAL_DST"}])
    for name, addresses in (clusters or {"shop-v1": ("10.2.0.1",), "shop-v2": ("10.2.0.2",)}).items():
        cluster, assignment = eds_cluster(name, *addresses)
        resources.add_clusters([cluster])
        resources.add_endpoints([assignment])
    return resources


def run(resources: ResourceSet, url: str, headers: tuple[tuple[str, str], ...] = (), method: str = "GET"):
    return simulate(resources, SIDECAR, Request.from_url(url, method, headers), VIP.get)


def to(cluster: str, match: dict | None = None, **extra) -> dict:
    return {"match": match or {"prefix": "/"}, "route": {"cluster": cluster, **extra}}


# ----------------------------------------------------------------------------- requests


def test_host_header_keeps_the_port_only_when_the_url_has_one() -> None:
    assert Request.from_url("http://shop:8080/x").authority == "shop:8080"
    assert Request.from_url("http://shop/x").authority == "shop"
    assert Request.from_url("shop/cart?id=1").url == "http://shop/cart?id=1"
    assert Request.from_url("http://shop/x", headers=[("Host", "other")]).authority == "other"


@pytest.mark.parametrize("url", ["ftp://shop/", "http://:80/", "http://shop:99999/"])
def test_unusable_urls_are_rejected_with_a_reason(url: str) -> None:
    with pytest.raises(ValueError, match=r"http|host|port"):
        Request.from_url(url)


# ----------------------------------------------------------------------------- virtual hosts


def vhosts(*domain_lists: list[str]) -> dict:
    return {"virtual_hosts": [{"name": f"vh{i}", "domains": d, "routes": []} for i, d in enumerate(domain_lists)]}


@pytest.mark.parametrize(
    ("host", "chosen"),
    [
        ("foo.example.com", "vh0"),  # exact wins over every wildcard
        ("foo-bar.example.com", "vh2"),  # the longest suffix wildcard wins
        ("x.example.com", "vh1"),
        ("api.internal", "vh3"),  # prefix wildcard when no suffix wildcard matches
        ("api.example.com", "vh1"),  # a suffix wildcard beats a prefix wildcard
        ("FOO.Example.COM", "vh0"),  # domains are matched case-insensitively
        ("foo.example.com:8080", "vh4"),  # the port is part of the Host: no exact match, only "*"
        (".example.com", "vh4"),  # "*.example.com" needs at least one character for "*"
    ],
)
def test_virtual_host_domain_search_order(host: str, chosen: str) -> None:
    config = vhosts(["foo.example.com"], ["*.example.com"], ["*-bar.example.com"], ["api.*"], ["*"])
    vhost, _ = find_virtual_host(config, host)
    assert vhost["name"] == chosen


def test_ignore_port_in_host_matching_drops_the_port() -> None:
    config = {**vhosts(["shop"]), "ignore_port_in_host_matching": True}
    vhost, why = find_virtual_host(config, "shop:8080")
    assert vhost["name"] == "vh0" and "exact" in why


def test_no_virtual_host_is_a_404_no_route() -> None:
    outcome = run(mesh([to("shop-v1")], domains=("shop",)), "http://other/")
    assert (outcome.status, outcome.response_flag) == (404, "NR")
    assert "no virtual host" in outcome.summary()


def test_strip_any_host_port_routes_on_the_bare_host() -> None:
    resources = mesh([to("shop-v1")], domains=("shop",))
    resources.listeners["0.0.0.0_80"]["filter_chains"][0]["filters"][0]["typed_config"]["strip_any_host_port"] = True
    assert run(resources, "http://shop/", (("host", "shop:8080"),)).cluster_names == ["shop-v1"]
    resources.listeners["0.0.0.0_80"]["filter_chains"][0]["filters"][0]["typed_config"]["strip_any_host_port"] = False
    assert run(resources, "http://shop/", (("host", "shop:8080"),)).response_flag == "NR"


# ----------------------------------------------------------------------------- route matching


@pytest.mark.parametrize(
    ("matcher", "value", "matches"),
    [
        ({"string_match": {"exact": "jason"}}, "jason", True),
        ({"string_match": {"exact": "jason"}}, "Jason", False),
        ({"string_match": {"exact": "jason", "ignore_case": True}}, "JASON", True),
        ({"string_match": {"prefix": "ja"}}, "jason", True),
        ({"string_match": {"suffix": "son"}}, "jason", True),
        ({"string_match": {"contains": "as"}}, "jason", True),
        ({"string_match": {"safe_regex": {"regex": "j.*n"}}}, "jason", True),
        ({"string_match": {"safe_regex": {"regex": "j.*s"}}}, "jason", False),  # RE2 full match, not search
        ({"string_match": {"exact": "jason"}, "invert_match": True}, "anna", True),
        ({"string_match": {"exact": "jason"}, "invert_match": True}, "jason", False),
        ({"present_match": True}, "anything", True),
        ({"range_match": {"start": 10, "end": 20}}, "15", True),
        ({"range_match": {"start": 10, "end": 20}}, "20", False),
    ],
)
def test_header_matchers(matcher: dict, value: str, matches: bool) -> None:
    match = {"prefix": "/", "headers": [{"name": "end-user", **matcher}]}
    request = Request.from_url("http://shop/", headers=[("end-user", value)])
    assert (route_mismatch(match, request) is None) is matches


@pytest.mark.parametrize(
    ("matcher", "matches"),
    [
        ({"string_match": {"exact": "jason"}}, False),
        ({"string_match": {"exact": "jason"}, "invert_match": True}, False),  # Envoy: a missing header fails it
        ({"string_match": {"exact": "jason"}, "invert_match": True, "treat_missing_header_as_empty": True}, True),
        ({"present_match": True}, False),
        ({"present_match": True, "invert_match": True}, True),
        ({"present_match": False}, True),
    ],
)
def test_header_matchers_on_a_missing_header(matcher: dict, matches: bool) -> None:
    match = {"prefix": "/", "headers": [{"name": "end-user", **matcher}]}
    assert (route_mismatch(match, Request.from_url("http://shop/")) is None) is matches


CLAIM = {
    "filter": "envoy.filters.http.jwt_authn",
    "path": [{"key": "payload"}, {"key": "groups"}],
    "value": {
        "or_match": {
            "value_matchers": [
                {"list_match": {"one_of": {"string_match": {"exact": "g1"}}}},
                {"string_match": {"exact": "g1"}},
            ]
        }
    },
}


def test_dynamic_metadata_matchers_are_reported_when_nothing_evaluates_them() -> None:
    reason = route_mismatch({"prefix": "/", "dynamic_metadata": [CLAIM]}, Request.from_url("http://shop/"))
    assert reason == (
        "wants JWT claim groups exact 'g1' (or a list holding it): dynamic metadata is not simulated here"
    )


@pytest.mark.parametrize("verdict", [True, False])
def test_dynamic_metadata_matchers_take_the_evaluators_verdict(verdict: bool) -> None:
    seen: list[dict] = []

    def check(mm: dict) -> bool:
        seen.append(mm)
        return verdict

    result = route_mismatch({"prefix": "/", "dynamic_metadata": [CLAIM]}, Request.from_url("http://shop/"), check)
    assert (result is None) is verdict and seen == [CLAIM]


def test_repeated_headers_are_matched_joined_with_commas() -> None:
    match = {"prefix": "/", "headers": [{"name": "x-tag", "string_match": {"exact": "a,b"}}]}
    assert route_mismatch(match, Request.from_url("http://shop/", headers=[("x-tag", "a"), ("x-tag", "b")])) is None


@pytest.mark.parametrize(
    ("match", "path", "matches"),
    [
        ({"prefix": "/api"}, "/api/v1", True),
        ({"prefix": "/api"}, "/API/v1", False),
        ({"prefix": "/api", "case_sensitive": False}, "/API/v1", True),
        ({"path": "/login"}, "/login?next=/", True),  # the query is not part of the path
        ({"path": "/login"}, "/login/", False),
        ({"safe_regex": {"regex": "/api/v[0-9]+"}}, "/api/v1/x", False),
        ({"safe_regex": {"regex": "/api/v[0-9]+/.*"}}, "/api/v1/x?q=1", True),
        ({"path_separated_prefix": "/api"}, "/api/x", True),
        ({"path_separated_prefix": "/api"}, "/apix", False),
    ],
)
def test_path_matchers(match: dict, path: str, matches: bool) -> None:
    assert (route_mismatch(match, Request.from_url("http://shop" + path)) is None) is matches


@pytest.mark.parametrize(
    ("query", "matches"), [("?v=2", True), ("?v=2&v=3", True), ("?v=3&v=2", False), ("?x=1", False), ("", False)]
)
def test_query_parameter_matchers_use_the_first_value(query: str, matches: bool) -> None:
    match = {"prefix": "/", "query_parameters": [{"name": "v", "string_match": {"exact": "2"}}]}
    assert (route_mismatch(match, Request.from_url("http://shop/" + query)) is None) is matches


def test_query_parameter_presence() -> None:
    match = {"prefix": "/", "query_parameters": [{"name": "debug", "present_match": True}]}
    assert route_mismatch(match, Request.from_url("http://shop/?debug")) is None
    assert "debug" in route_mismatch(match, Request.from_url("http://shop/?x=1"))


def test_the_first_matching_route_wins_and_earlier_ones_say_why_they_did_not() -> None:
    routes = [
        to("shop-v2", {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]}),
        to("shop-v1", {"prefix": "/cart"}),
        to("shop-v2"),
    ]
    outcome = run(mesh(routes), "http://shop/cart/1")
    assert outcome.cluster_names == ["shop-v1"] and outcome.route_index == 1
    assert "end-user" in outcome.skipped_routes[0]
    assert run(mesh(routes), "http://shop/cart", (("end-user", "jason"),)).cluster_names == ["shop-v2"]


def test_nothing_matching_is_a_404_no_route() -> None:
    outcome = run(mesh([to("shop-v1", {"path": "/only"})]), "http://shop/else")
    assert (outcome.status, outcome.response_flag, outcome.clusters) == (404, "NR", [])
    assert outcome.skipped_routes == ["#0: path is not '/only'"]


def test_dot_segments_are_removed_before_routing() -> None:
    outcome = run(mesh([to("shop-v1", {"path": "/productpage"})]), "http://shop/static/../productpage")
    assert outcome.cluster_names == ["shop-v1"]
    assert any("normalize_path" in note for note in outcome.notes)


# ----------------------------------------------------------------------------- route actions


def test_weighted_clusters_report_their_shares_and_endpoints() -> None:
    v2 = {"name": "shop-v2", "weight": 20, "response_headers_to_add": [{"header": {"key": "x-v", "value": "2"}}]}
    action = {
        "weighted_clusters": {"clusters": [{"name": "shop-v1", "weight": 80}, v2, {"name": "shop-v3", "weight": 0}]}
    }
    outcome = run(mesh([{"match": {"prefix": "/"}, "route": action}]), "http://shop/")
    assert [(c.name, c.percent) for c in outcome.clusters] == [("shop-v1", 80.0), ("shop-v2", 20.0), ("shop-v3", 0.0)]
    assert [e.address for e in outcome.clusters[0].endpoints] == ["10.2.0.1:8080"]
    assert outcome.clusters[1].header_changes == ["response add x-v: 2"]
    assert outcome.status is None  # the missing shop-v3 never gets traffic
    assert "no such cluster" in outcome.clusters[2].note


def test_redirect_builds_the_location() -> None:
    route = {
        "match": {"prefix": "/old"},
        "redirect": {"https_redirect": True, "path_redirect": "/new", "response_code": "PERMANENT_REDIRECT"},
    }
    outcome = run(mesh([route]), "http://shop:80/old?x=1")
    assert (outcome.action, outcome.status, outcome.location) == ("redirect", 308, "https://shop/new?x=1")


def test_redirect_with_prefix_rewrite_and_host() -> None:
    route = {"match": {"prefix": "/v1/"}, "redirect": {"host_redirect": "api.example.com", "prefix_rewrite": "/v2/"}}
    outcome = run(mesh([route]), "http://shop:80/v1/items")
    assert (outcome.status, outcome.location) == (301, "http://api.example.com/v2/items")
    port = {"match": {"prefix": "/"}, "redirect": {"port_redirect": 8443, "https_redirect": True}}
    assert run(mesh([port]), "http://shop:80/x").location == "https://shop:8443/x"
    keep = {"match": {"prefix": "/"}, "redirect": {"https_redirect": True}}
    assert run(mesh([keep]), "http://shop/x", (("host", "shop:8080"),)).location == "https://shop:8080/x"


def test_direct_response() -> None:
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 418, "body": {"inline_string": "teapot"}}}
    outcome = run(mesh([route]), "http://shop/")
    assert (outcome.action, outcome.status, outcome.body) == ("direct_response", 418, "teapot")


def test_missing_cluster_is_503_no_cluster_and_empty_cluster_is_503_no_healthy_upstream() -> None:
    missing = run(mesh([to("nowhere")]), "http://shop/")
    assert (missing.status, missing.response_flag) == (503, "NC")
    empty = run(mesh([to("shop-v1")], clusters={"shop-v1": ()}), "http://shop/")
    assert (empty.status, empty.response_flag) == (503, "UH")


def test_route_policies_are_reported() -> None:
    action = {
        "cluster": "shop-v1",
        "timeout": "3s",
        "prefix_rewrite": "/v2/",
        "retry_policy": {"retry_on": "5xx", "num_retries": 3, "per_try_timeout": "1s"},
        "request_mirror_policies": [
            {
                "cluster": "shop-v2",
                "runtime_fraction": {"default_value": {"numerator": 250000, "denominator": "MILLION"}},
            }
        ],
        "hash_policy": [{"header": {"header_name": "x-user"}}],
    }
    route = {
        "match": {"prefix": "/v1/"},
        "route": action,
        "request_headers_to_add": [
            {"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
        "response_headers_to_remove": ["server"],
        "typed_per_filter_config": {
            "envoy.filters.http.fault": {
                "delay": {"fixed_delay": "7s", "percentage": {"numerator": 500000, "denominator": "MILLION"}},
                "abort": {"http_status": 500, "percentage": {"numerator": 100}},
            }
        },
    }
    outcome = run(mesh([route]), "http://shop/v1/items?id=3")
    p = outcome.policies
    assert p.timeout == "3s" and (p.retries.attempts, p.retries.retry_on, p.retries.per_try_timeout) == (3, "5xx", "1s")
    fault = (p.fault.delay, p.fault.delay_percent, p.fault.abort_http_status, p.fault.abort_percent)
    assert fault == ("7s", 50.0, 500, 100.0)
    assert p.mirrors == [("shop-v2", 25.0)] and p.hash_policy == ["header x-user"]
    assert p.request_headers == ["set x-a: 1"] and p.response_headers == ["remove server"]
    assert outcome.upstream_path == "/v2/items?id=3" and p.rewrite == ["path /v1/items → /v2/items"]


def test_regex_rewrite_uses_re2_groups() -> None:
    action = {
        "cluster": "shop-v1",
        "regex_rewrite": {"pattern": {"regex": "^/users/([0-9]+)/profile$"}, "substitution": "/profiles/\\1"},
    }
    outcome = run(mesh([{"match": {"prefix": "/users"}, "route": action}]), "http://shop/users/42/profile")
    assert outcome.upstream_path == "/profiles/42"


def test_envoy_default_timeout_when_the_route_sets_none() -> None:
    assert run(mesh([to("shop-v1")]), "http://shop/").policies.timeout == "15s (Envoy's default)"


# ----------------------------------------------------------------------------- listeners and filter chains


def chains(*matches: dict) -> dict:
    return {"name": "l", "filter_chains": [{"name": f"c{i}", "filter_chain_match": m} for i, m in enumerate(matches)]}


def chosen(listener: dict, **conn) -> str | None:
    picked = select_filter_chain(listener, Connection(**{"dest_ip": "10.0.0.1", "dest_port": 443, **conn}))
    return picked[0] if picked else None


def test_filter_chain_prefers_the_longest_destination_prefix() -> None:
    listener = chains(
        {"prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]},
        {"prefix_ranges": [{"address_prefix": "10.1.0.0", "prefix_len": 16}]},
        {},
    )
    assert chosen(listener, dest_ip="10.1.2.3") == "c1"
    assert chosen(listener, dest_ip="10.2.0.1") == "c0"
    assert chosen(listener, dest_ip="192.168.0.1") == "c2"


def test_filter_chain_server_names_exact_then_wildcard_then_none() -> None:
    listener = chains({"server_names": ["api.example.com"]}, {"server_names": ["*.example.com"]}, {})
    assert chosen(listener, server_name="api.example.com", transport="tls") == "c0"
    assert chosen(listener, server_name="www.example.com", transport="tls") == "c1"
    assert chosen(listener, server_name="example.org", transport="tls") == "c2"


def test_filter_chain_matching_never_backtracks() -> None:
    """A chain on the destination port hides the chains without one, even when it fails later."""
    listener = chains({"destination_port": 443, "server_names": ["a.example.com"]}, {})
    assert chosen(listener, server_name="b.example.com") is None
    assert chosen(listener, dest_port=8443, server_name="b.example.com") == "c1"
    listener["default_filter_chain"] = {"name": "fallback"}
    assert chosen(listener, server_name="b.example.com") == "fallback"


def test_filter_chain_transport_and_application_protocols() -> None:
    listener = chains({"transport_protocol": "tls"}, {"application_protocols": ["http/1.1", "h2c"]}, {})
    assert chosen(listener, transport="tls") == "c0"
    assert chosen(listener, alpn=("http/1.1",)) == "c1"
    assert chosen(listener) == "c2"


def test_capture_mode_prefers_the_exact_address_listener_then_the_wildcard_then_passthrough() -> None:
    resources = mesh([to("shop-v1")])
    tcp = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {"cluster": "shop-v2"}}
    resources.add_listeners(
        [
            {
                "name": "10.0.0.2_80",
                "address": {"socket_address": {"address": "10.0.0.2", "port_value": 80}},
                "filter_chains": [{"filters": [tcp]}],
            }
        ]
    )
    assert run(resources, "http://db/").listener == "10.0.0.2_80"
    assert run(resources, "http://db/").protocol == "tcp"
    assert run(resources, "http://shop/").listener == "0.0.0.0_80"
    passthrough = run(resources, "http://10.9.9.9:5432/")
    assert (passthrough.listener, passthrough.cluster_names) == ("virtualOutbound", ["PassthroughCluster"])
    assert passthrough.clusters[0].endpoints[0].address == "10.9.9.9:5432"
    local = run(resources, "http://127.0.0.1:80/")
    assert (local.action, local.listener, local.clusters) == ("bypass", None, [])
    assert "loopback" in local.summary()


# ----------------------------------------------------------------------------- through the generator

SHOP = """
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  clusterIP: 10.0.0.1
  selector: {app: shop}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp-db, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: shop-v1}
spec: {address: 10.2.0.1, labels: {app: shop, version: v1}, ports: {http: 8080, tcp-db: 5432}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client}
spec: {address: 10.1.0.5, labels: {app: client}}
"""


def snapshot(extra: str = "") -> MeshSnapshot:
    return MeshSnapshot(load_text(SHOP + extra).raise_for_errors())


def client(snap: MeshSnapshot, mode: str = "capture") -> Proxy:
    return Proxy.from_workload_entry(snap.workload("client"), mode=mode)  # type: ignore[arg-type]


def test_generated_capture_mode_http_and_tcp() -> None:
    snap = snapshot()
    http = simulate_mesh(snap, client(snap), Request.from_url("http://shop/cart"))
    assert (http.listener, http.cluster_names) == ("0.0.0.0_80", ["outbound|80||shop.default.svc.cluster.local"])
    assert [e.address for e in http.clusters[0].endpoints] == ["10.2.0.1:8080"]
    tcp = simulate_mesh(snap, client(snap), Request.from_url("http://shop.default.svc.cluster.local:5432/"))
    assert (tcp.protocol, tcp.listener, tcp.cluster_names) == (
        "tcp",
        "10.0.0.1_5432",
        ["outbound|5432||shop.default.svc.cluster.local"],
    )


def test_generated_explicit_proxy_mode_routes_by_host() -> None:
    snap = snapshot()
    known = simulate_mesh(snap, client(snap, "proxy"), Request.from_url("http://shop/cart"))
    assert (known.listener, known.cluster_names) == ("explicit_proxy", ["outbound|80||shop.default.svc.cluster.local"])
    unknown = simulate_mesh(snap, client(snap, "proxy"), Request.from_url("http://example.org/"))
    assert unknown.cluster_names == ["DynamicForwardProxyCluster"]


WITHOUT_HEADERS = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
  - match: [{withoutHeaders: {end-user: {exact: jason}}}]
    route: [{destination: {host: shop, port: {number: 80}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
  - route: [{destination: {host: shop, port: {number: 80}}}]
"""


def test_without_headers_matches_a_request_that_lacks_the_header() -> None:
    snap = snapshot(WITHOUT_HEADERS)
    outcome = simulate_mesh(snap, client(snap), Request.from_url("http://shop/"))
    assert outcome.vs_route == "http[0].match[0]"
    jason = simulate_mesh(snap, client(snap), Request.from_url("http://shop/", headers=[("end-user", "jason")]))
    assert jason.vs_route == "http[1]"
