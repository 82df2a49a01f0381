"""Which Gateway API gateways the local mesh runs, and the Service in front of each (pure)."""

from __future__ import annotations

import itertools

from plait.api import load_text
from plait.runtime.gatewayapi import plan

GATEWAYS = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: alt, port: 8080, protocol: HTTP}
  - {name: same-port, port: 80, protocol: HTTP, hostname: a.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other-class}
spec:
  gatewayClassName: nginx
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


def test_a_gateway_of_class_istio_gets_a_proxy_and_a_service() -> None:
    ports = itertools.count(20000)
    wanted = plan(load_text(GATEWAYS).resources, {}, lambda: next(ports))
    assert list(wanted) == ["infra/web"]
    web = wanted["infra/web"]
    assert (web.name, web.namespace, web.ports) == ("web-istio", "infra", ((80, 20000), (8080, 20001)))
    assert web.labels["gateway.networking.k8s.io/gateway-name"] == "web"
    service = web.service()
    assert service["metadata"] == {
        "name": "web-istio",
        "namespace": "infra",
        "labels": {"gateway.networking.k8s.io/gateway-name": "web"},
    }
    assert service["spec"]["ports"] == [
        {"name": "port-80", "port": 80, "targetPort": 20000},
        {"name": "port-8080", "port": 8080, "targetPort": 20001},
    ]


def test_a_running_gateway_keeps_its_ports_and_a_changed_one_gets_new_ones() -> None:
    ports = itertools.count(20000)
    first = plan(load_text(GATEWAYS).resources, {}, lambda: next(ports))
    assert plan(load_text(GATEWAYS).resources, first, lambda: next(ports)) == first
    changed = GATEWAYS.replace("port: 8080", "port: 9090")
    again = plan(load_text(changed).resources, first, lambda: next(ports))
    assert again["infra/web"].ports == ((80, 20002), (9090, 20003))
    assert plan([], first, lambda: next(ports)) == {}
