"""The Deployment and Service Istio's gateway controller makes for a Gateway of class istio (golden)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from plait.api import load_text
from plait.install.gatewayapi import gateway_manifests
from plait.install.settings import InstallSettings

GOLDEN = Path(__file__).parent / "testdata" / "golden" / "gateway-api-egress-gateway.yaml"
EGRESS_GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: egress-gateway
  namespace: istio-system
  annotations:
    networking.istio.io/service-type: ClusterIP
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, hostname: ifconfig.me, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: https, hostname: ifconfig.me, port: 443, protocol: TLS, tls: {mode: Passthrough}}
"""


def test_egress_gateway_manifests_match_the_golden() -> None:
    (gateway,) = load_text(EGRESS_GATEWAY).raise_for_errors()
    objects = gateway_manifests(InstallSettings(), gateway)
    text = yaml.safe_dump_all(objects, sort_keys=False)
    if os.environ.get("REFRESH_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "regenerate with REFRESH_GOLDEN=1 and review"
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Deployment", "egress-gateway-istio") in kinds and ("Service", "egress-gateway-istio") in kinds
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["spec"]["type"] == "ClusterIP"  # the annotation, as Istio
    assert [p["port"] for p in service["spec"]["ports"]] == [80, 443]
    assert service["spec"]["selector"]["gateway.networking.k8s.io/gateway-name"] == "egress-gateway"


def test_without_the_annotation_the_service_is_a_load_balancer() -> None:
    text = EGRESS_GATEWAY.replace("  annotations:\n    networking.istio.io/service-type: ClusterIP\n", "")
    (gateway,) = load_text(text).raise_for_errors()
    service = next(o for o in gateway_manifests(InstallSettings(), gateway) if o["kind"] == "Service")
    assert service["spec"]["type"] == "LoadBalancer"
