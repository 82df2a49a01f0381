"""The Gateway API status writer's pure part: the status subresource of each kind, and what is written —
plait's conditions with Kubernetes' fields, times kept while a condition holds, other controllers' route
parents kept."""

from __future__ import annotations

from plait.api import load_text
from plait.controlplane.gatewaystatus import stamped, status_path, wanted
from plait.lower.gatewayapi import CONTROLLER

OBJECTS = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio}
spec: {controllerName: istio.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: front, namespace: shop}
spec:
  parentRefs: [{name: web}]
  rules: [{backendRefs: [{name: nowhere, port: 80}]}]
"""


def _resources():
    loaded = load_text(OBJECTS, "objects.yaml")
    assert not loaded.errors, loaded.problems
    return {r.key: r for r in loaded.resources}


def test_each_kind_has_its_status_subresource():
    paths = sorted(status_path(r) for r in _resources().values())
    assert paths == [
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses/istio/status",
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/web/status",
        "/apis/gateway.networking.k8s.io/v1beta1/namespaces/shop/httproutes/front/status",
    ]


def test_a_first_write_stamps_every_condition_with_the_generation_and_now():
    resources = _resources()
    status = wanted(resources)
    gateway = stamped(status[("KubernetesGateway", "shop", "web")], {}, 3, "2026-12-07T06:00:00Z")
    assert gateway["addresses"] == [{"type": "Hostname", "value": "web-istio.shop.svc.cluster.local"}]
    assert gateway["conditions"][0] == {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "Resource accepted",
        "observedGeneration": 3,
        "lastTransitionTime": "2026-12-07T06:00:00Z",
    }
    [listener] = gateway["listeners"]
    assert listener["attachedRoutes"] == 1
    assert {c["observedGeneration"] for c in listener["conditions"]} == {3}
    route = stamped(status[("HTTPRoute", "shop", "front")], {}, 1, "2026-12-07T06:00:00Z")
    [parent] = route["parents"]
    assert parent["controllerName"] == CONTROLLER
    resolved = next(c for c in parent["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")


def test_a_condition_that_holds_keeps_its_time_and_one_that_flips_gets_now():
    ours = {
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted"},
            {"type": "Programmed", "status": "False", "reason": "Invalid"},
        ]
    }
    current = {
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {
                "type": "Programmed",
                "status": "True",
                "reason": "Programmed",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
        ]
    }
    out = stamped(ours, current, 2, "2026-12-07T06:00:00Z")
    assert [c["lastTransitionTime"] for c in out["conditions"]] == ["2026-01-01T00:00:00Z", "2026-12-07T06:00:00Z"]


def test_route_parents_of_other_controllers_are_kept_and_ours_replaced():
    theirs = {"parentRef": {"name": "other"}, "controllerName": "example.com/other", "conditions": []}
    stale = {"parentRef": {"name": "gone"}, "controllerName": CONTROLLER, "conditions": []}
    ours = {"parents": [{"parentRef": {"name": "web"}, "controllerName": CONTROLLER, "conditions": []}]}
    out = stamped(ours, {"parents": [theirs, stale]}, 1, "2026-12-07T06:00:00Z")
    assert [p["parentRef"]["name"] for p in out["parents"]] == ["other", "web"]


def test_without_gateway_api_objects_nothing_is_written():
    assert wanted({}) == {}
