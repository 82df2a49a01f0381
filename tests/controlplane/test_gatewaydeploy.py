"""The gateway deployment controller's pure part: which objects the Gateways of class istio want (built by
the installer's builder, as istiod is given it), and which deployed ones are stale."""

from __future__ import annotations

from plait.api import load_text
from plait.controlplane.gatewaydeploy import desired, stale
from plait.install.gatewayapi import gateway_manifests
from plait.install.settings import InstallSettings

GATEWAYS = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: shop}
spec:
  gatewayClassName: someone-else
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


def test_a_gateway_of_class_istio_wants_its_proxy_and_others_want_nothing():
    loaded = load_text(GATEWAYS, "gateways.yaml")
    assert not loaded.errors, loaded.problems
    resources = {r.key: r for r in loaded.resources}
    settings = InstallSettings(image="plait/proxy:9", revision="canary")
    wanted = desired(resources, lambda gateway: gateway_manifests(settings, gateway))
    assert sorted(wanted) == [
        ("Deployment", "shop", "web-istio"),
        ("Role", "shop", "web-istio-sds"),
        ("RoleBinding", "shop", "web-istio-sds"),
        ("Service", "shop", "web-istio"),
        ("ServiceAccount", "shop", "web-istio-service-account"),
    ]
    service = wanted[("Service", "shop", "web-istio")]["spec"]
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(80, 8080)]  # the proxy is not root
    proxy = wanted[("Deployment", "shop", "web-istio")]["spec"]["template"]["spec"]["containers"][0]
    assert proxy["image"] == "plait/proxy:9" and "istiod-canary.istio-system.svc:15012" in proxy["args"]
    deployed = [*wanted, ("Deployment", "shop", "gone-istio"), ("Service", "shop", "gone-istio")]
    assert stale(deployed, wanted) == [("Deployment", "shop", "gone-istio"), ("Service", "shop", "gone-istio")]
