"""VirtualService delegation merged as Istio's MergeHTTPRoutes: which delegate routes survive under
a root route, and what they inherit."""

from __future__ import annotations

import json

import pytest

from plait.api import load_text
from plait.api import networking as net
from plait.model import MeshSnapshot
from plait.xds.translate.delegate import http_routes, merge_matches


def vs(name: str, spec: dict, namespace: str = "default") -> str:
    return json.dumps(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def match(**fields) -> net.HTTPMatchRequest:
    return net.HTTPMatchRequest.model_validate(fields)


@pytest.mark.parametrize(
    ("root", "leaf", "merged"),
    [
        ({"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/api/v2"}}, {"prefix": "/api/v2"}),
        ({"uri": {"prefix": "/api"}}, {"uri": {"exact": "/api/login"}}, {"exact": "/api/login"}),
        ({"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/other"}}, None),  # not under the root's prefix
        ({"uri": {"exact": "/a"}}, {"uri": {"exact": "/a"}}, {"exact": "/a"}),
        ({"uri": {"exact": "/a"}}, {"uri": {"prefix": "/a"}}, None),  # wider than an exact root
        ({"uri": {"regex": "/a.*"}}, {"uri": {"exact": "/a"}}, None),  # a regex admits nothing beside it
        ({"uri": {"prefix": "/api"}}, {}, {"prefix": "/api"}),  # the delegate inherits the root's
        ({"uri": {"prefix": "/api"}, "port": 80}, {"port": 8080}, None),
        ({"sourceLabels": {"app": "a"}}, {"sourceLabels": {"app": "b"}}, None),
    ],
)
def test_a_delegate_match_must_fall_within_a_root_match(root: dict, leaf: dict, merged: dict | None) -> None:
    result = merge_matches([match(**root)], [match(**leaf)])
    if merged is None:
        assert result is None
    else:
        assert result is not None and len(result) == 1
        uri = result[0].uri
        assert {uri.kind: uri.value} == merged


def test_headers_and_labels_combine_and_each_fitting_root_match_gives_one_match() -> None:
    roots = [match(uri={"prefix": "/a"}, headers={"x-team": {"exact": "core"}}), match(uri={"prefix": "/b"})]
    merged = merge_matches(roots, [match(headers={"x-user": {"exact": "jason"}}, sourceLabels={"app": "web"})])
    assert merged is not None and [m.uri.value for m in merged] == ["/a", "/b"]
    assert sorted(merged[0].headers) == ["x-team", "x-user"] and merged[0].source_labels == {"app": "web"}


def test_merged_routes_inherit_what_they_lack_and_resolve_hosts_in_the_delegates_namespace() -> None:
    root = vs(
        "root",
        {
            "hosts": ["shop"],
            "http": [
                {
                    "name": "api",
                    "match": [{"uri": {"prefix": "/api"}}],
                    "delegate": {"name": "leaf", "namespace": "team"},
                    "timeout": "3s",
                    "retries": {"attempts": 1},
                },
                {"match": [{"uri": {"prefix": "/private"}}], "delegate": {"name": "private", "namespace": "team"}},
                {"route": [{"destination": {"host": "shop"}}]},
            ],
        },
    )
    leaf = vs(
        "leaf",
        {
            "http": [
                {"name": "v2", "timeout": "1s", "route": [{"destination": {"host": "api"}}]},
                {"match": [{"uri": {"prefix": "/elsewhere"}}], "route": [{"destination": {"host": "api"}}]},
                {"route": [{"destination": {"host": "api"}}]},
            ]
        },
        "team",
    )
    private = vs("private", {"exportTo": ["."], "http": [{"route": [{"destination": {"host": "api"}}]}]}, "team")
    snapshot = MeshSnapshot(load_text("\n---\n".join([root, leaf, private])).raise_for_errors())
    routes = list(http_routes(snapshot.resources[("VirtualService", "default", "root")], snapshot))
    assert [label for label, _ in routes] == [
        "http[0].delegate[team/leaf].http[0]",
        "http[0].delegate[team/leaf].http[2]",
        "http[2]",
    ]
    first, second = routes[0][1], routes[1][1]
    assert (first.name, first.timeout, first.retries.attempts) == ("api-v2", "1s", 1)
    assert (second.name, second.timeout) == ("api", "3s")
    assert first.route[0].destination.host == "api.team.svc.cluster.local"
    assert first.delegate is None and [m.uri.value for m in first.match] == ["/api"]


def test_a_delegate_is_refused_with_gateways_or_when_it_delegates_again() -> None:
    with_gateways = load_text(vs("leaf", {"gateways": ["gw"], "http": [{"route": [{"destination": {"host": "a"}}]}]}))
    assert "must have no gateways" in str(with_gateways.errors[0])
    nested = load_text(vs("leaf", {"http": [{"delegate": {"name": "other"}}]}))
    assert "cannot delegate again" in str(nested.errors[0])
    root_with_route = load_text(
        vs(
            "root",
            {"hosts": ["a"], "http": [{"delegate": {"name": "leaf"}, "route": [{"destination": {"host": "a"}}]}]},
        )
    )
    assert "must not specify route or redirect" in str(root_with_route.errors[0])
