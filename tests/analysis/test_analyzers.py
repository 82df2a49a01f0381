"""The analyzers of `plait analyze` (plait.analysis), one by one, on YAML read as the CLI reads it:
each message is compared whole, as istioctl prints it (Istio's code, level, origin and text)."""

from __future__ import annotations

import pytest

from plait.analysis import analyze
from plait.analysis.analyzers import (
    gateway_selectors,
    injection,
    port_names,
    schema_errors,
    subsets_select_pods,
    unknown_annotations,
    virtual_service_references,
)
from plait.analysis.inputs import Reading, plait_reads
from plait.analysis.messages import Level, sorted_unique

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: shop}
spec:
  hosts: [httpbin.org]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: shop, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: reviews:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ingress, namespace: istio-system, labels: {istio: ingressgateway}}
spec: {containers: [{name: istio-proxy, image: proxy:1}]}
"""


def read(*texts: str, file: str = "mesh.yaml"):
    reading = Reading()
    for text in texts:
        reading.add_text(text, file)
    return reading.inputs()


def lines(messages) -> list[str]:
    return [str(m) for m in sorted_unique(messages)]


def test_a_virtual_service_naming_a_missing_host_subset_or_gateway():
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gateway, mesh, other/edge]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v9}}]
    mirror: {host: details, subset: v1}
  - route: [{destination: {host: reviews.shop.svc.cluster.local, subset: v2}}]
  tcp:
  - route: [{destination: {host: httpbin.org}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: other}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/*"]}]
"""
    assert lines(virtual_service_references(read(SERVICES, vs))) == [
        'Error [IST0101] (VirtualService shop/reviews mesh.yaml) Referenced gateway not found: "bookinfo-gateway"',
        "Error [IST0101] (VirtualService shop/reviews mesh.yaml) Referenced host+subset in destinationrule not found: "
        '"reviews+v9"',
        'Error [IST0101] (VirtualService shop/reviews mesh.yaml) Referenced mirror host not found: "details"',
        "Error [IST0101] (VirtualService shop/reviews mesh.yaml) Referenced mirror+subset in destinationrule not "
        'found: "details+v1"',
    ]


def test_a_gateway_whose_selector_matches_no_pod():
    gateways = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: shop}
spec:
  selector: {istio: egressgateway, app: egress}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
    assert lines(gateway_selectors(read(PODS, gateways))) == [
        'Error [IST0101] (Gateway shop/egress mesh.yaml) Referenced selector not found: "app=egress,istio=egressgateway"'
    ]


def test_a_subset_selecting_no_pod_of_its_service():
    messages = subsets_select_pods(read(SERVICES, PODS))
    assert lines(messages) == [
        "Error [IST0173] (DestinationRule shop/reviews mesh.yaml) The Subset v2 defined in the DestinationRule does "
        "not select any pods. Which may lead to 503 UH (NoHealthyUpstream)."
    ]
    other_namespace = PODS.replace("name: reviews-v1, namespace: shop", "name: reviews-v1, namespace: elsewhere")
    assert len(subsets_select_pods(read(SERVICES, other_namespace))) == 2  # a Service selects its own namespace's pods


def test_namespaces_not_injected_or_labelled_twice_and_pods_missing_their_proxy():
    objects = """
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: both, labels: {istio-injection: enabled, istio.io/rev: canary}}
---
apiVersion: v1
kind: Namespace
metadata: {name: opted-out, labels: {istio-injection: disabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {containers: [{name: app, image: web:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: injected, namespace: shop}
spec: {containers: [{name: app, image: web:1}, {name: istio-proxy, image: proxy:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: batch, namespace: shop, labels: {sidecar.istio.io/inject: "false"}}
spec: {containers: [{name: app, image: web:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: node-agent, namespace: shop}
spec: {hostNetwork: true, containers: [{name: app, image: web:1}]}
"""
    assert lines(injection(read(objects))) == [
        "Warning [IST0103] (Pod shop/web mesh.yaml) The pod shop/web is missing the Istio proxy. This can often be "
        "resolved by restarting or redeploying the workload.",
        "Warning [IST0123] (Namespace both mesh.yaml) The namespace has more than one type of injection labels "
        "[istio-injection=enabled istio.io/rev=canary], which may lead to undefined behavior. Make sure only one "
        "injection label exists.",
        "Info [IST0102] (Namespace plain mesh.yaml) The namespace is not enabled for Istio injection. Run 'kubectl "
        "label namespace plain istio-injection=enabled' to enable it, or 'kubectl label namespace plain "
        "istio-injection=disabled' to explicitly mark it as not needing injection.",
    ]


def test_unknown_istio_annotations_on_namespaces_services_pods_and_deployments():
    objects = """
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: shop
  annotations: {networking.istio.io/exportTo: ".", sidecar.istio.io/bogus: "1", example.com/mine: "x"}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {annotations: {sidecar.istio.io/proxyCPU: 100m}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  annotations: {sidecar.istio.io/proxyCPU: 100m, traffic.sidecar.istio.io/excludeEverything: "true"}
spec: {containers: [{name: app, image: web:1}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop, annotations: {networking.istio.io/nonsense: "x"}}
spec: {host: reviews}
"""
    assert lines(unknown_annotations(read(objects))) == [
        "Warning [IST0108] (Pod shop/web mesh.yaml) Unknown annotation: traffic.sidecar.istio.io/excludeEverything",
        "Warning [IST0108] (Service shop/reviews mesh.yaml) Unknown annotation: sidecar.istio.io/bogus",
    ]  # Istio's own kinds are not checked for annotations, as istioctl


def test_service_ports_not_named_after_their_protocol():
    services = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http-web, port: 80}
  - {name: web, port: 8080, targetPort: 9080}
  - {name: metrics, port: 9090, appProtocol: http}
  - {name: grpc-web-ui, port: 7070}
  - {name: dns, port: 53, protocol: UDP}
  - {port: 9000}
"""
    assert lines(port_names(read(services))) == [
        "Info [IST0118] (Service shop/web mesh.yaml) Port name  (port: 9000, targetPort: 0) doesn't follow the "
        "naming convention of Istio port.",
        "Info [IST0118] (Service shop/web mesh.yaml) Port name web (port: 8080, targetPort: 9080) doesn't follow the "
        "naming convention of Istio port.",
    ]


def test_invalid_objects_are_schema_validation_errors_with_their_field_path():
    bad = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - timeout: 5 seconds
    route: [{destination: {host: reviews}}]
"""
    inputs = read(bad)
    assert inputs.resources == ()
    (message,) = schema_errors(inputs)
    assert message.type.level is Level.ERROR
    assert str(message) == (
        "Error [IST0106] (VirtualService shop/reviews mesh.yaml) Schema validation error: spec.http[0].timeout: "
        "'5 seconds' is not a duration; expected a number with a unit, e.g. '10s', '250ms', '1m'"
    )


@pytest.mark.parametrize(
    "kind, api_version, reads",
    [
        ("VirtualService", "networking.istio.io/v1alpha3", True),
        ("VirtualService", "networking.istio.io/v2", True),  # plait's loader says which versions it reads
        ("Gateway", "gateway.networking.k8s.io/v1", False),  # the Gateway API's, not Istio's
        ("Service", "v1", True),
        ("Deployment", "apps/v1", False),
    ],
)
def test_which_objects_plait_parses(kind, api_version, reads):
    assert plait_reads(kind, api_version) is reads


def test_messages_sort_as_istioctl_and_lines_are_not_repeated():
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: shop}
spec:
  hosts: [a]
  http:
  - route: [{destination: {host: nowhere}}]
  - route: [{destination: {host: nowhere}}]
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
"""
    messages = analyze(read(vs))
    assert len(messages) == 3
    assert [m.type.code for m in sorted_unique(messages)] == ["IST0101", "IST0102"]  # errors first; duplicate dropped


def test_files_win_over_the_cluster_for_the_same_object():
    reading = Reading()
    cluster_ns = {"kind": "Namespace", "metadata": {"name": "shop"}}
    reading.add_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n", "ns.yaml"
    )
    reading.add_cluster([], [], [cluster_ns])  # read after the file: the file still wins
    assert injection(reading.inputs()) == []
    reading.add_text(": not yaml: [", "broken.yaml")
    assert reading.unreadable and reading.unreadable[0].startswith("broken.yaml: ")
