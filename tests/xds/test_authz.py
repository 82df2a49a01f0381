"""AuthorizationPolicy → Envoy RBAC: the translation field by field, Envoy's matching rules as simulated,
decisions through the mesh (Bookinfo), and a real Envoy answering 200/403 as the simulation says."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from plait.api import load_paths, load_text
from plait.model import MeshSnapshot, Proxy
from plait.testing.backends import HttpBackend, TcpBackend, loopback_subnet
from plait.testing.envoy import run_envoy
from plait.testing.http import http_request
from plait.xds.generator import generate
from plait.xds.resources import ResourceSet
from plait.xds.simulate import Caller, Request, simulate_mesh
from plait.xds.simulate.inbound import check_endpoint, with_mesh_identity
from plait.xds.simulate.outcome import Endpoint
from plait.xds.simulate.rbac import Peer, evaluate_rbac, permission_matches, principal_matches
from plait.xds.static import envoy_validate, static_bootstrap
from plait.xds.translate import rbac
from plait.xds.translate.common import http_connection_manager, socket_address, tcp_proxy

BOOKINFO = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo"
WORKLOAD = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 10.0.0.3, labels: {app: reviews, version: v1}, serviceAccount: reviews}
"""


def policy(spec: dict, name: str = "p", namespace: str = "default") -> str:
    return json.dumps(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def snapshot_of(*documents: str) -> MeshSnapshot:
    return MeshSnapshot(load_text("\n---\n".join([WORKLOAD, *documents])).raise_for_errors())


def reviews(snapshot: MeshSnapshot) -> Proxy:
    return Proxy.from_workload_entry(snapshot.workload("reviews-v1"))


def filters(*documents: str, tcp: bool = False) -> list[dict]:
    snapshot = snapshot_of(*documents)
    build = rbac.inbound_network_filters if tcp else rbac.inbound_http_filters
    return build(snapshot, reviews(snapshot), 9080)


def only_rule(*documents: str, action: str = "ALLOW", tcp: bool = False) -> dict:
    """The Envoy policy of the single rule of policy `p`."""
    rules = next(
        f["typed_config"]["rules"]
        for f in filters(*documents, tcp=tcp)
        if f["typed_config"]["rules"]["action"] == rbac.ENVOY_ACTIONS[action]
    )
    return rules["policies"]["ns[default]-policy[p]-rule[0]"]


def principal_ids(rule: dict) -> list[dict]:
    return rule["principals"][0]["and_ids"]["ids"]


def permission_rules(rule: dict) -> list[dict]:
    return rule["permissions"][0]["and_rules"]["rules"]


# ------------------------------------------------------------------ translation


def test_filters_run_audit_deny_allow_and_name_the_rule() -> None:
    found = filters(
        policy({"action": "ALLOW", "rules": [{}]}, "a"),
        policy({"action": "DENY", "rules": [{}]}, "d"),
        policy({"action": "AUDIT", "rules": [{}, {}]}, "l"),
    )
    assert [f["name"] for f in found] == ["envoy.filters.http.rbac"] * 3
    configs = [f["typed_config"] for f in found]
    assert [c["rules"]["action"] for c in configs] == ["LOG", "DENY", "ALLOW"]
    assert [c["rules_stat_prefix"] for c in configs] == ["audit", "deny", "allow"]
    assert all(c["track_per_rule_stats"] for c in configs)
    assert list(configs[0]["rules"]["policies"]) == ["ns[default]-policy[l]-rule[0]", "ns[default]-policy[l]-rule[1]"]
    assert rbac.parse_policy_name("ns[default]-policy[l]-rule[1]") == ("default", "l", 1)


def test_no_policy_no_filter_and_only_the_actions_in_use() -> None:
    assert filters() == []
    assert [f["typed_config"]["rules"]["action"] for f in filters(policy({"action": "DENY", "rules": [{}]}))] == [
        "DENY"
    ]


def test_empty_spec_matches_nothing_and_an_empty_rule_everything() -> None:
    assert only_rule(policy({})) == {
        "permissions": [{"not_rule": {"any": True}}],
        "principals": [{"not_id": {"any": True}}],
    }
    assert only_rule(policy({"rules": [{}]})) == {
        "permissions": [{"and_rules": {"rules": [{"any": True}]}}],
        "principals": [{"and_ids": {"ids": [{"any": True}]}}],
    }


def test_principals_with_wildcards_are_spiffe_uri_sans() -> None:
    rule = only_rule(
        policy(
            {
                "rules": [
                    {
                        "from": [
                            {
                                "source": {
                                    "principals": [
                                        "cluster.local/ns/default/sa/productpage",
                                        "cluster.local/ns/ops/*",
                                        "*/sa/admin",
                                        "*",
                                    ]
                                }
                            }
                        ]
                    }
                ]
            }
        )
    )
    names = [p["authenticated"]["principal_name"] for p in principal_ids(rule)[0]["or_ids"]["ids"]]
    assert names == [
        {"exact": "spiffe://cluster.local/ns/default/sa/productpage"},
        {"prefix": "spiffe://cluster.local/ns/ops/"},
        {"safe_regex": {"regex": "spiffe://.*/sa/admin"}},
        {"safe_regex": {"regex": ".+"}},
    ]


def test_namespaces_and_service_accounts_are_regexes_on_the_principal() -> None:
    rule = only_rule(
        policy(
            {"rules": [{"from": [{"source": {"namespaces": ["prod", "team-*"], "notNamespaces": ["prod.legacy"]}}]}]}
        )
    )
    namespaces, not_namespaces = principal_ids(rule)
    # Istio refuses serviceAccounts beside namespaces or principals in one source: a source of their own
    (accounts,) = principal_ids(
        only_rule(policy({"rules": [{"from": [{"source": {"serviceAccounts": ["ops/deployer", "bot"]}}]}]}))
    )

    def regexes(ids: list[dict]) -> list[str]:
        return [p["authenticated"]["principal_name"]["safe_regex"]["regex"] for p in ids]

    assert regexes(accounts["or_ids"]["ids"]) == [
        "spiffe://.+/ns/ops/(.+/|)sa/deployer(/.+)?",
        "spiffe://.+/ns/default/(.+/|)sa/bot(/.+)?",
    ]
    assert regexes(namespaces["or_ids"]["ids"]) == [".*/ns/prod/.*", ".*/ns/team-.*/.*"]
    assert regexes(not_namespaces["not_id"]["or_ids"]["ids"]) == [r".*/ns/prod\.legacy/.*"]


def test_trust_domains_are_prefixes_of_the_principal_and_match_as_istio() -> None:
    """Istio's source.trustDomains (extended channel): exact, ``*`` present, one ``*`` inside the domain."""
    rule = only_rule(
        policy(
            {
                "rules": [
                    {
                        "from": [
                            {
                                "source": {
                                    "trustDomains": ["cluster.local", "*.corp.example", "*"],
                                    "notTrustDomains": ["legacy.local"],
                                }
                            }
                        ]
                    }
                ]
            }
        )
    )
    domains, not_domains = principal_ids(rule)
    assert [p["authenticated"]["principal_name"] for p in domains["or_ids"]["ids"]] == [
        {"prefix": "spiffe://cluster.local/"},
        {"safe_regex": {"regex": r"spiffe://[^/]*\.corp\.example/.*"}},
        {"prefix": "spiffe://"},
    ]
    assert not_domains["not_id"]["or_ids"]["ids"] == [
        {"authenticated": {"principal_name": {"prefix": "spiffe://legacy.local/"}}}
    ]
    matcher = {
        "and_ids": {
            "ids": principal_ids(
                only_rule(
                    policy(
                        {
                            "rules": [
                                {
                                    "from": [
                                        {
                                            "source": {
                                                "trustDomains": ["*.corp.example"],
                                                "notTrustDomains": ["old.corp.example"],
                                            }
                                        }
                                    ]
                                }
                            ]
                        }
                    )
                )
            )
        }
    }
    for principal, expected in (
        ("spiffe://eu.corp.example/ns/a/sa/b", True),
        ("spiffe://old.corp.example/ns/a/sa/b", False),
        ("spiffe://cluster.local/ns/corp.example/sa/b", False),
        (None, False),
    ):
        assert principal_matches(matcher, Peer(dest_port=80, principal=principal)) is expected, principal


def test_ip_blocks_are_the_peer_and_remote_ip_blocks_the_forwarded_client() -> None:
    rule = only_rule(
        policy(
            {
                "rules": [
                    {
                        "from": [
                            {
                                "source": {
                                    "ipBlocks": ["10.1.2.3", "10.2.0.0/16"],
                                    "notIpBlocks": ["10.2.9.0/24"],
                                    "remoteIpBlocks": ["2001:db8::1"],
                                }
                            }
                        ]
                    }
                ]
            }
        )
    )
    remote, direct, not_direct = principal_ids(rule)
    assert remote == {"or_ids": {"ids": [{"remote_ip": {"address_prefix": "2001:db8::1", "prefix_len": 128}}]}}
    assert direct == {
        "or_ids": {
            "ids": [
                {"direct_remote_ip": {"address_prefix": "10.1.2.3", "prefix_len": 32}},
                {"direct_remote_ip": {"address_prefix": "10.2.0.0", "prefix_len": 16}},
            ]
        }
    }
    assert not_direct == {
        "not_id": {"or_ids": {"ids": [{"direct_remote_ip": {"address_prefix": "10.2.9.0", "prefix_len": 24}}]}}
    }


def test_request_principals_are_issuer_and_subject_in_the_jwt_payload() -> None:
    rule = only_rule(
        policy(
            {
                "rules": [
                    {
                        "from": [
                            {
                                "source": {
                                    "requestPrincipals": ["https://accounts.example.com/alice"],
                                    "notRequestPrincipals": ["*"],
                                }
                            }
                        ]
                    }
                ]
            }
        )
    )
    wanted, unwanted = principal_ids(rule)

    def pair(ids: dict) -> list[tuple[list[str], dict]]:
        return [
            ([k["key"] for k in m["metadata"]["path"]], m["metadata"]["value"]["string_match"])
            for m in ids["and_ids"]["ids"]
        ]

    assert all(m["metadata"]["filter"] == "envoy.filters.http.jwt_authn" for m in wanted["and_ids"]["ids"])
    assert pair(wanted) == [
        (["payload", "iss"], {"exact": "https://accounts.example.com"}),
        (["payload", "sub"], {"exact": "alice"}),
    ]
    assert pair(unwanted["not_id"]) == [
        (["payload", "iss"], {"safe_regex": {"regex": ".+"}}),
        (["payload", "sub"], {"safe_regex": {"regex": ".+"}}),
    ]


def test_operations_hosts_methods_paths_ports() -> None:
    rule = only_rule(
        policy(
            {
                "rules": [
                    {
                        "to": [
                            {
                                "operation": {
                                    "hosts": ["Shop.example.com", "*.example.org"],
                                    "methods": ["GET"],
                                    "notMethods": ["DELETE"],
                                    "paths": ["/api/*", "*.css", "/exact", "*", "/users/{*}/profile"],
                                    "notPaths": ["/api/admin*"],
                                    "ports": ["9080"],
                                    "notPorts": ["15000"],
                                }
                            }
                        ]
                    }
                ]
            }
        )
    )
    hosts, methods, not_methods, paths, not_paths, ports, not_ports = permission_rules(rule)
    assert [r["header"] for r in hosts["or_rules"]["rules"]] == [
        {"name": ":authority", "string_match": {"exact": "Shop.example.com", "ignore_case": True}},
        {"name": ":authority", "string_match": {"suffix": ".example.org", "ignore_case": True}},
    ]
    assert methods == {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}}
    assert not_methods["not_rule"]["or_rules"]["rules"][0]["header"]["string_match"] == {"exact": "DELETE"}
    assert [r.get("url_path", {}).get("path") for r in paths["or_rules"]["rules"]] == [
        {"prefix": "/api/"},
        {"suffix": ".css"},
        {"exact": "/exact"},
        {"safe_regex": {"regex": ".+"}},
        None,
    ]
    assert paths["or_rules"]["rules"][4]["uri_template"]["typed_config"]["path_template"] == "/users/*/profile"
    assert not_paths == {"not_rule": {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/api/admin"}}}]}}}
    assert ports == {"or_rules": {"rules": [{"destination_port": 9080}]}}
    assert not_ports == {"not_rule": {"or_rules": {"rules": [{"destination_port": 15000}]}}}


def test_when_conditions_go_to_their_side() -> None:
    rule = only_rule(
        policy(
            {
                "rules": [
                    {
                        "when": [
                            {"key": "request.headers[x-token]", "values": ["abc*"], "notValues": ["*"]},
                            {"key": "source.ip", "values": ["10.0.0.0/8"]},
                            {"key": "request.auth.claims[groups]", "values": ["admin", "ops"]},
                            {"key": "request.auth.claims[org][unit]", "values": ["core"]},
                            {"key": "destination.port", "values": ["9080"]},
                            {"key": "connection.sni", "values": ["*.svc.cluster.local"]},
                        ]
                    }
                ]
            }
        )
    )
    header, not_header, source_ip, groups, nested = principal_ids(rule)
    assert header == {"or_ids": {"ids": [{"header": {"name": "x-token", "string_match": {"prefix": "abc"}}}]}}
    assert not_header == {"not_id": {"or_ids": {"ids": [{"header": {"name": "x-token", "present_match": True}}]}}}
    assert source_ip["or_ids"]["ids"][0] == {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}
    strings = {
        "or_match": {"value_matchers": [{"string_match": {"exact": "admin"}}, {"string_match": {"exact": "ops"}}]}
    }
    assert groups["metadata"]["path"] == [{"key": "payload"}, {"key": "groups"}]
    assert groups["metadata"]["value"] == {
        "or_match": {"value_matchers": [{"list_match": {"one_of": strings}}, strings]}
    }
    assert [k["key"] for k in nested["metadata"]["path"]] == ["payload", "org", "unit"]
    assert permission_rules(rule) == [
        {"or_rules": {"rules": [{"destination_port": 9080}]}},
        {"or_rules": {"rules": [{"requested_server_name": {"suffix": ".svc.cluster.local"}}]}},
    ]


def test_each_from_entry_is_one_principal_each_to_entry_one_permission() -> None:
    rule = only_rule(
        policy(
            {
                "rules": [
                    {
                        "from": [{"source": {"namespaces": ["a"]}}, {"source": {"ipBlocks": ["10.0.0.1"]}}],
                        "to": [{"operation": {"methods": ["GET"]}}, {"operation": {"ports": ["8080"]}}],
                        "when": [{"key": "remote.ip", "values": ["1.2.3.4"]}],
                    }
                ]
            }
        )
    )
    assert len(rule["principals"]) == 2 and len(rule["permissions"]) == 2
    # a principal-side `when` condition is ANDed into every from entry
    assert all(
        p["and_ids"]["ids"][-1] == {"or_ids": {"ids": [{"remote_ip": {"address_prefix": "1.2.3.4", "prefix_len": 32}}]}}
        for p in rule["principals"]
    )


def test_tcp_drops_allow_rules_that_need_http_and_http_conditions_of_deny_rules() -> None:
    allow = policy(
        {
            "rules": [
                {"to": [{"operation": {"methods": ["GET"]}}]},
                {"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"]}}]},
            ]
        },
        "a",
    )
    deny = policy(
        {
            "action": "DENY",
            "rules": [
                {"to": [{"operation": {"paths": ["/admin"], "ports": ["9080"]}}]},
                {"when": [{"key": "request.headers[x]", "values": ["1"]}]},
            ],
        },
        "d",
    )
    found = {f["typed_config"]["rules"]["action"]: f["typed_config"] for f in filters(allow, deny, tcp=True)}
    assert [f for f in found] == ["DENY", "ALLOW"]
    assert found["ALLOW"]["stat_prefix"] == "tcp.allow."
    assert list(found["ALLOW"]["rules"]["policies"]) == ["ns[default]-policy[a]-rule[1]"]
    deny_rules = found["DENY"]["rules"]["policies"]
    assert permission_rules(deny_rules["ns[default]-policy[d]-rule[0]"]) == [
        {"or_rules": {"rules": [{"destination_port": 9080}]}}
    ]
    assert deny_rules["ns[default]-policy[d]-rule[1]"] == {  # every condition needed HTTP: it denies every connection
        "permissions": [{"and_rules": {"rules": [{"any": True}]}}],
        "principals": [{"and_ids": {"ids": [{"any": True}]}}],
    }


def test_scope_root_namespace_namespace_and_selector() -> None:
    found = filters(
        policy({"rules": [{}]}, "mesh", "istio-system"),
        policy({"selector": {"matchLabels": {"app": "reviews"}}, "rules": [{}]}, "mine"),
        policy({"selector": {"matchLabels": {"app": "ratings"}}, "rules": [{}]}, "theirs"),
        policy({"rules": [{}]}, "elsewhere", "shop"),
    )
    assert list(found[0]["typed_config"]["rules"]["policies"]) == [
        "ns[istio-system]-policy[mesh]-rule[0]",
        "ns[default]-policy[mine]-rule[0]",
    ]


def test_every_kind_of_rule_is_valid_envoy_config() -> None:
    everything = policy(
        {
            "rules": [
                {
                    "from": [
                        {
                            "source": {
                                "principals": ["*"],
                                "notPrincipals": ["a*"],
                                "requestPrincipals": ["i/s", "*"],
                                "namespaces": ["n*"],
                                "ipBlocks": ["10.0.0.0/8"],
                                "remoteIpBlocks": ["1.1.1.1"],
                                "notRemoteIpBlocks": ["::1"],
                                "trustDomains": ["td", "*.td", "*"],
                                "notTrustDomains": ["x.td"],
                            }
                        },
                        {"source": {"serviceAccounts": ["s"]}},
                    ],  # Istio refuses it beside namespaces/principals
                    "to": [{"operation": {"hosts": ["*"], "methods": ["*T"], "paths": ["/{**}"], "ports": ["1"]}}],
                    "when": [
                        {"key": k, "values": ["v*"]}
                        for k in (
                            "request.headers[h]",
                            "source.namespace",
                            "source.principal",
                            "source.serviceAccount",
                            "source.trustDomain",
                            "request.auth.principal",
                            "request.auth.audiences",
                            "request.auth.presenter",
                            "request.auth.claims[a][b]",
                            "connection.sni",
                        )
                    ]
                    + [
                        {"key": "destination.ip", "values": ["10.0.0.1"]},
                        {"key": "remote.ip", "notValues": ["10.0.0.1"]},
                    ],
                }
            ]
        }
    )
    documents = (
        everything,
        policy({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["X"]}}]}]}, "d"),
        policy({"action": "AUDIT", "rules": [{}]}, "l"),
        policy({}, "none"),
    )
    http = http_connection_manager(
        "inbound_0.0.0.0_9080", route_config={"name": "r", "virtual_hosts": []}, authz=filters(*documents)
    )
    tcp = [*filters(*documents, tcp=True), tcp_proxy("t", "app")]
    app = {
        "name": "app",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "app",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address("127.0.0.1", 9)}}]}],
        },
    }
    resources = ResourceSet()
    resources.add_clusters([app])
    resources.add_listeners(
        [
            {"name": "http", "address": socket_address("127.0.0.1", 9080), "filter_chains": [{"filters": [http]}]},
            {"name": "tcp", "address": socket_address("127.0.0.1", 9300), "filter_chains": [{"filters": tcp}]},
        ]
    )
    verdict = envoy_validate(static_bootstrap(resources))
    assert verdict.ok, verdict.output


# ------------------------------------------------------------------ Envoy's matching, simulated


def test_envoy_rbac_semantics() -> None:
    request = Request.from_url("http://shop/api/items?x=1", "POST", [("x-token", "abc"), ("x-token", "def")])
    peer = Peer(
        dest_port=9080,
        principal="spiffe://cluster.local/ns/a/sa/b",
        source_ip="10.0.0.5",
        request=request,
        metadata={"envoy.filters.http.jwt_authn": {"payload": {"aud": ["x", "y"], "iss": "i"}}},
    )
    assert permission_matches({"url_path": {"path": {"exact": "/api/items"}}}, peer)  # no query
    assert permission_matches({"header": {"name": ":path", "string_match": {"exact": "/api/items?x=1"}}}, peer)
    assert principal_matches({"header": {"name": "x-token", "string_match": {"exact": "abc,def"}}}, peer)
    assert not principal_matches({"header": {"name": "x-missing", "string_match": {"prefix": ""}}}, peer)
    assert principal_matches({"not_id": {"header": {"name": "x-missing", "present_match": True}}}, peer)
    assert principal_matches({"authenticated": {"principal_name": {"suffix": "/sa/b"}}}, peer)
    assert not principal_matches({"authenticated": {}}, replace(peer, principal=None))
    assert principal_matches({"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 24}}, peer)
    assert not principal_matches({"remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 24}}, peer)  # unknown
    audience = {
        "filter": "envoy.filters.http.jwt_authn",
        "path": [{"key": "payload"}, {"key": "aud"}],
        "value": {"list_match": {"one_of": {"string_match": {"exact": "y"}}}},
    }
    assert principal_matches({"metadata": audience}, peer)
    assert not principal_matches({"metadata": {**audience, "path": [{"key": "payload"}, {"key": "nope"}]}}, peer)
    assert permission_matches({"uri_template": {"typed_config": {"path_template": "/api/*"}}}, peer)
    assert not permission_matches({"uri_template": {"typed_config": {"path_template": "/*"}}}, peer)
    assert permission_matches({"requested_server_name": {"exact": ""}}, peer)  # no TLS: empty SNI
    tcp = replace(peer, request=None)
    assert not permission_matches({"header": {"name": ":method", "present_match": True}}, tcp)


def test_envoy_actions_and_the_reported_policy() -> None:
    peer = Peer(dest_port=9080)
    anything = {"permissions": [{"any": True}], "principals": [{"any": True}]}
    nothing = rbac.match_never()
    assert evaluate_rbac({"action": "ALLOW", "policies": {}}, peer).denied
    allow = evaluate_rbac({"action": "ALLOW", "policies": {"b": anything, "a": anything, "c": nothing}}, peer)
    assert not allow.denied and allow.matched == "a"  # policies are tried in name order
    assert evaluate_rbac({"action": "DENY", "policies": {"x": anything}}, peer).denied
    assert not evaluate_rbac({"action": "DENY", "policies": {"x": nothing}}, peer).denied
    log = evaluate_rbac({"action": "LOG", "policies": {"x": anything}}, peer)
    assert not log.denied and log.matched == "x"


# ------------------------------------------------------------------ through the mesh: Bookinfo


ALLOW_PRODUCTPAGE = policy(
    {
        "selector": {"matchLabels": {"app": "reviews"}},
        "rules": [
            {
                "from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}],
                "to": [{"operation": {"methods": ["GET"]}}],
            }
        ],
    },
    "allow-productpage",
)
DENY_DELETE = policy({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["DELETE"]}}]}]}, "deny-delete")


def bookinfo(*documents: str, mtls: bool = True) -> MeshSnapshot:
    """Bookinfo's services; with `mtls`, every workload has a sidecar with certificates (tlsMode label)."""
    text = (BOOKINFO / "services.yaml").read_text()
    if mtls:
        text = re.sub(
            r"labels: \{app: (\w+), version: (v\d)\}",
            r"labels: {app: \1, version: \2, security.istio.io/tlsMode: istio}",
            text,
        )
    resources = load_text("\n---\n".join([text, *documents])).raise_for_errors()
    return MeshSnapshot(resources + load_paths([BOOKINFO / "networking" / "destination-rule-all.yaml"]).resources)


def ask(
    snapshot: MeshSnapshot,
    source: str,
    url: str,
    method: str = "GET",
    headers=(),
    mode: str = "capture",
    caller: Caller = Caller(),
):
    proxy = with_mesh_identity(Proxy.from_workload_entry(snapshot.workload(source), mode=mode), snapshot)  # type: ignore[arg-type]
    return simulate_mesh(snapshot, proxy, Request.from_url(url, method, headers), caller=caller)


@pytest.mark.parametrize("mode", ["capture", "proxy"])
def test_productpage_may_call_reviews_and_ratings_may_not(mode: str) -> None:
    snapshot = bookinfo(ALLOW_PRODUCTPAGE, DENY_DELETE)
    allowed = ask(snapshot, "productpage-v1", "http://reviews:9080/reviews/0", mode=mode)
    assert not allowed.failed
    assert [a.proxy for a in allowed.authorization] == [
        "default/reviews-v1",
        "default/reviews-v2",
        "default/reviews-v3",
    ]
    assert allowed.authorization[0].summary == (
        "ALLOWED by default/allow-productpage rules[0] (from[0].source.principals matched "
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage; to[0].operation.methods matched GET)"
    )
    assert allowed.authorization[0].peer.principal == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    denied = ask(snapshot, "ratings-v1", "http://reviews:9080/reviews/0", mode=mode)
    assert denied.status == 403
    assert denied.authorization[0].summary == (
        "DENIED: no ALLOW policy matched (policies in force: default/allow-productpage)"
    )
    assert (
        "from[0].source.principals did not match spiffe://cluster.local/ns/default/sa/bookinfo-ratings"
        in denied.authorization[0].details[-1]
    )
    assert denied.summary().startswith("403: default/reviews-v1 (and 2 more): DENIED: no ALLOW policy matched")


def test_deny_wins_over_allow_and_audit_decides_nothing() -> None:
    audit = policy({"action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/reviews/*"]}}]}]}, "audit")
    snapshot = bookinfo(ALLOW_PRODUCTPAGE, DENY_DELETE, audit)
    outcome = ask(snapshot, "productpage-v1", "http://reviews:9080/reviews/0", method="DELETE")
    assert outcome.status == 403
    auth = outcome.authorization[0]
    assert auth.summary == "DENIED by DENY policy default/deny-delete rules[0] (to[0].operation.methods matched DELETE)"
    assert auth.details == ["audited by default/audit rules[0]"]
    assert not ask(snapshot, "productpage-v1", "http://reviews:9080/reviews/0").failed


def test_without_mtls_there_is_no_principal_to_allow() -> None:
    outcome = ask(bookinfo(ALLOW_PRODUCTPAGE, mtls=False), "productpage-v1", "http://reviews:9080/reviews/0")
    assert outcome.status == 403
    assert outcome.authorization[0].peer.principal is None
    assert "did not match no peer certificate (plaintext)" in outcome.authorization[0].details[0]
    assumed = ask(
        bookinfo(ALLOW_PRODUCTPAGE, mtls=False),
        "productpage-v1",
        "http://reviews:9080/reviews/0",
        caller=Caller(principal="spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
    )
    assert not assumed.failed


def test_a_plaintext_caller_of_a_strict_workload_is_refused_before_any_policy() -> None:
    strict = json.dumps(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "strict", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "STRICT"}},
        }
    )
    snapshot = bookinfo(ALLOW_PRODUCTPAGE, strict)
    client = Proxy.from_workload_entry(snapshot.workload("productpage-v1"))  # no identity: plaintext
    outcome = simulate_mesh(snapshot, client, Request.from_url("http://reviews:9080/reviews/0"))
    assert outcome.failed and outcome.refused
    assert outcome.authorization[0].summary == (
        "REFUSED: filter chain inbound|9080|plaintext-refused refuses the connection (the client sends plaintext "
        "and the port accepts only mutual TLS)"
    )


def test_workloads_without_policies_are_not_checked() -> None:
    outcome = ask(bookinfo(ALLOW_PRODUCTPAGE), "productpage-v1", "http://details:9080/details/0")
    assert not outcome.failed and outcome.authorization == []


def test_an_allow_nothing_policy_denies_and_names_itself() -> None:
    snapshot = bookinfo(policy({"selector": {"matchLabels": {"app": "ratings"}}}, "ratings-closed"))
    auth = ask(snapshot, "reviews-v2", "http://ratings:9080/ratings/0").authorization[0]
    assert auth.status == 403
    assert auth.details == ["default/ratings-closed has no rules: it matches nothing"]


GATEWAY_FILES = ("networking/bookinfo-gateway.yaml",)


def gateway_snapshot(*documents: str) -> MeshSnapshot:
    extra = [(BOOKINFO / f).read_text() for f in GATEWAY_FILES]
    return bookinfo(*extra, *documents)


def test_a_gateway_checks_the_outside_client_and_the_sidecar_checks_the_gateway() -> None:
    at_gateway = policy(
        {
            "selector": {"matchLabels": {"istio": "ingressgateway"}},
            "rules": [{"from": [{"source": {"ipBlocks": ["203.0.113.0/24"]}}]}],
        },
        "ingress",
        "istio-system",
    )
    at_productpage = policy(
        {
            "selector": {"matchLabels": {"app": "productpage"}},
            "rules": [
                {
                    "from": [
                        {
                            "source": {
                                "principals": ["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]
                            }
                        }
                    ]
                }
            ],
        },
        "from-gateway",
    )
    snapshot = gateway_snapshot(at_gateway, at_productpage)
    url = "http://bookinfo.example.com/productpage"
    outside = ask(snapshot, "istio-ingressgateway", url, caller=Caller(ip="198.51.100.1"))
    assert outside.status == 403 and outside.authorization[0].role == "gateway"
    assert outside.authorization[0].proxy == "istio-system/istio-ingressgateway"
    assert outside.authorization[0].details == [
        "istio-system/ingress rules[0]: from[0].source.ipBlocks did not match 198.51.100.1"
    ]
    inside = ask(snapshot, "istio-ingressgateway", url, caller=Caller(ip="203.0.113.9"))
    gateway, productpage = inside.authorization
    assert gateway.summary.startswith("ALLOWED by istio-system/ingress rules[0] (from[0].source.ipBlocks matched")
    assert productpage.proxy == "default/productpage-v1" and productpage.peer.source_ip == "10.244.0.2"
    assert productpage.summary.startswith("ALLOWED by default/from-gateway rules[0]")


def test_remote_ip_blocks_use_x_forwarded_for_behind_a_sidecar() -> None:
    snapshot = bookinfo(
        policy(
            {
                "selector": {"matchLabels": {"app": "ratings"}},
                "rules": [{"from": [{"source": {"remoteIpBlocks": ["192.0.2.0/24"]}}]}],
            }
        )
    )
    url = "http://ratings:9080/ratings/0"
    assert ask(snapshot, "reviews-v2", url).status == 403
    assert not ask(snapshot, "reviews-v2", url, headers=[("x-forwarded-for", "10.9.9.9, 192.0.2.7")]).failed


def test_tcp_services_get_l4_decisions() -> None:
    db = """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: 10.96.0.50
  selector: {app: db}
  ports: [{name: tcp, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db, namespace: default}
spec: {address: 10.244.0.50, labels: {app: db, security.istio.io/tlsMode: istio}, serviceAccount: db}
"""
    only_reviews = policy(
        {
            "selector": {"matchLabels": {"app": "db"}},
            "rules": [
                {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-reviews"]}}]},
                {"to": [{"operation": {"methods": ["GET"]}}]},
            ],
        },
        "db-clients",
    )
    snapshot = bookinfo(db, only_reviews)
    ok = ask(snapshot, "reviews-v1", "http://db:5432/")
    assert ok.protocol == "tcp" and not ok.failed
    assert ok.authorization[0].summary.startswith("ALLOWED by default/db-clients rules[0]")
    refused = ask(snapshot, "ratings-v1", "http://db:5432/")
    assert refused.failed and refused.authorization[0].refused
    assert refused.authorization[0].summary.endswith(": the connection is closed")
    assert "default/db-clients rules[1] is not used on TCP: it needs HTTP fields" in refused.authorization[0].details


# ------------------------------------------------------------------ a real Envoy


API = """
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: default}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: 8080}}, {{name: tcp-feed, port: 9000}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: api, namespace: default}}
spec: {{address: {net}.2, labels: {{app: api}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default}}
spec: {{address: {net}.1, labels: {{app: client}}}}
"""
API_POLICIES = (  # on the TCP port: the DENY rules keep only their port, the ALLOW rules only ipBlocks
    policy(
        {
            "action": "DENY",
            "rules": [
                {"to": [{"operation": {"paths": ["/admin*"], "ports": ["8080"]}}]},
                {
                    "to": [{"operation": {"ports": ["8080"]}}],
                    "when": [{"key": "request.headers[x-debug]", "values": ["*"]}],
                },
            ],
        },
        "deny",
    ),
    policy(
        {
            "rules": [
                {"to": [{"operation": {"methods": ["GET"], "paths": ["/public/*"]}}]},
                {
                    "to": [{"operation": {"methods": ["POST"]}}],
                    "when": [{"key": "request.headers[x-token]", "values": ["secret"]}],
                },
                {"from": [{"source": {"ipBlocks": ["{net}.1/32"]}}]},
            ]
        },
        "allow",
    ),
)


@contextlib.contextmanager
def api_envoy(tmp_path: Path):
    """Workload `api` at <net>.2 (explicit-proxy mode; HTTP 8080, TCP 9000) with API_POLICIES; its app is
    backends at <net>.3."""
    with loopback_subnet() as net:
        text = "\n---\n".join([API.format(net=net), *(p.replace("{net}", net) for p in API_POLICIES)])
        snapshot = MeshSnapshot(load_text(text).raise_for_errors())
        proxy = replace(Proxy.from_workload_entry(snapshot.workload("api"), mode="proxy"), app_address=f"{net}.3")
        with (
            HttpBackend("api", f"{net}.3", 8080),
            TcpBackend("feed", f"{net}.3", 9000),
            run_envoy(static_bootstrap(generate(snapshot, proxy)), workdir=tmp_path) as envoy,
        ):
            yield net, snapshot, envoy


def test_envoy_enforces_paths_methods_headers_and_ip_blocks_as_simulated(tmp_path: Path) -> None:
    cases = [  # (source address, method, path, headers, expected status)
        ("127.0.0.1", "GET", "/public/a", {}, 200),
        ("127.0.0.1", "GET", "/private", {}, 403),
        ("127.0.0.1", "POST", "/public/a", {}, 403),
        ("127.0.0.1", "POST", "/orders", {"x-token": "secret"}, 200),
        ("127.0.0.1", "POST", "/orders", {"x-token": "guess"}, 403),
        ("127.0.0.1", "GET", "/admin/users", {}, 403),
        ("127.0.0.1", "GET", "/public/a", {"x-debug": "1"}, 403),
        ("client", "DELETE", "/anything", {}, 200),
        ("client", "GET", "/admin", {}, 403),
    ]
    with api_envoy(tmp_path) as (net, snapshot, envoy):
        client = Proxy.from_workload_entry(snapshot.workload("client"), mode="proxy")
        for source, method, path, headers, expected in cases:
            source_ip = f"{net}.1" if source == "client" else source
            with contextlib.closing(
                http.client.HTTPConnection(f"{net}.2", 8080, timeout=10, source_address=(source_ip, 0))
            ) as connection:
                connection.request(method, path, headers=headers)
                status = connection.getresponse().status
            simulated = simulate_mesh(
                snapshot,
                client,
                Request.from_url(f"http://api:8080{path}", method, list(headers.items())),
                caller=Caller(ip=source_ip),
            )
            assert (status, simulated.status or 200) == (expected, expected), (method, path, headers, source)
        deny_stats = envoy.stats(r"\.rbac\.deny\.policy\.")
        assert deny_stats["http.inbound_0.0.0.0_8080.rbac.deny.policy.ns[default]-policy[deny]-rule[0].denied"] == 2
        assert http_request(f"{net}.2", 8080, "/private").status == 403


def tcp_exchange(address: str, source_ip: str, payload: bytes = b"ping\n") -> bytes:
    """Connect from `source_ip`, send `payload`, read until the connection closes or goes quiet."""
    with socket.create_connection((address, 9000), timeout=5, source_address=(source_ip, 0)) as conn:
        conn.sendall(payload)
        conn.settimeout(1)
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := conn.recv(4096):
                received += chunk
                if payload in received:
                    break
        return received


def test_envoy_enforces_l4_rules_on_a_tcp_port_as_simulated(tmp_path: Path) -> None:
    with api_envoy(tmp_path) as (net, snapshot, envoy):
        assert b"ping" in tcp_exchange(f"{net}.2", f"{net}.1")  # ALLOW rules[2]: ipBlocks
        assert b"ping" not in tcp_exchange(f"{net}.2", "127.0.0.1")  # closed on the first bytes
        assert envoy.stats(r"^tcp\.allow\.rbac\.")["tcp.allow.rbac.denied"] == 1
        # Explicit-proxy clients reach TCP services directly (not through HTTP_PROXY): check the api side alone.
        client = Proxy.from_workload_entry(snapshot.workload("client"), mode="proxy")
        api = Proxy.from_workload_entry(snapshot.workload("api"), mode="proxy")
        for source_ip, refused in ((f"{net}.1", False), ("127.0.0.1", True)):
            auth = check_endpoint(
                snapshot,
                api,
                {},
                Endpoint(f"{net}.2:9000"),
                client,
                Request.from_url("http://api:9000/"),
                http=False,
                now=None,
                caller=Caller(ip=source_ip),
            )
            assert auth.peer.request is None and auth.refused is refused  # the network filters decided
