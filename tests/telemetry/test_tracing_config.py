"""Tracing in the generated configuration: MeshConfig's enableTracing / defaultConfig.tracing, the
Telemetry API's tracing[] with root → namespace → workload precedence, and the collector's cluster
(a real Envoy reports to it: tests/telemetry/test_traces_live.py)."""

from __future__ import annotations

import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.telemetry.tracing import ZIPKIN_CLUSTER
from plait.xds.generator import generate

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 10.0.0.3, labels: {app: reviews, version: v1}}
"""
ZIPKIN_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: zipkin, namespace: istio-system}
spec: {selector: {app: istiod}, ports: [{name: http-query, port: 9411}]}
"""


def mesh_map(mesh: str) -> str:
    body = "\n".join(f"    {line}" for line in mesh.strip().splitlines())
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{body}\n"


def telemetry(name: str, namespace: str, rule: str, selector: str = "") -> str:
    spec = f"  selector: {{matchLabels: {selector}}}\n" if selector else ""
    head = f"apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
    return f"{head}spec:\n{spec}  tracing:\n  - {rule}\n"


def resources(*docs: str):
    snapshot = MeshSnapshot(load_text("\n---\n".join([*docs, SERVICES])).raise_for_errors())
    return generate(snapshot, Proxy.from_workload_entry(snapshot.workload("reviews-v1")))


def tracings(*docs: str) -> dict[str, dict | None]:
    """Each HCM's tracing by side: INBOUND (server) and OUTBOUND (client)."""
    out: dict[str, dict | None] = {}
    for listener in resources(*docs).listeners.values():
        for chain in listener.get("filter_chains", []):
            for f in chain["filters"]:
                if f["name"].endswith("http_connection_manager"):
                    out.setdefault(listener["traffic_direction"], f["typed_config"].get("tracing"))
    return out


def test_istios_defaults_trace_one_percent_to_zipkin_istio_system():
    sides = tracings()
    assert set(sides) == {"INBOUND", "OUTBOUND"}
    for tracing in sides.values():
        assert tracing["random_sampling"] == {"value": 1.0} and tracing["client_sampling"] == {"value": 100.0}
        zipkin = tracing["provider"]["typed_config"]
        assert zipkin["collector_endpoint"] == "/api/v2/spans" and zipkin["collector_endpoint_version"] == "HTTP_JSON"
        assert zipkin["trace_context_option"] == "USE_B3_WITH_W3C_PROPAGATION" and zipkin["trace_id_128bit"]
        assert zipkin["collector_cluster"] == ZIPKIN_CLUSTER and zipkin["collector_hostname"] == "zipkin.istio-system"
        tags = {t["tag"]: t for t in tracing["custom_tags"]}
        assert tags["istio.canonical_service"]["environment"]["name"] == "CANONICAL_SERVICE"
        assert tags["istio.mesh_id"] == {"tag": "istio.mesh_id", "literal": {"value": "cluster.local"}}
    cluster = resources().clusters[ZIPKIN_CLUSTER]
    assert cluster["type"] == "STRICT_DNS" and cluster["wait_for_warm_on_init"] is False


def test_a_zipkin_service_is_reached_through_its_outbound_cluster():
    out = resources(ZIPKIN_SERVICE)
    assert ZIPKIN_CLUSTER not in out.clusters
    tracing = tracings(ZIPKIN_SERVICE)["OUTBOUND"]["provider"]["typed_config"]
    assert tracing["collector_cluster"] == "outbound|9411||zipkin.istio-system.svc.cluster.local"
    assert tracing["collector_hostname"] == "zipkin.istio-system.svc.cluster.local"


def test_mesh_config_sampling_address_and_tags():
    mesh = mesh_map(
        'defaultConfig: {tracing: {sampling: 100, zipkin: {address: "10.1.2.3:9999"}, '
        "customTags: {env: {environment: {name: STAGE, defaultValue: dev}}}}}"
    )
    tracing = tracings(mesh)["INBOUND"]
    assert tracing["random_sampling"] == {"value": 100.0}
    assert {"tag": "env", "environment": {"name": "STAGE", "default_value": "dev"}} in tracing["custom_tags"]
    cluster = resources(mesh).clusters[ZIPKIN_CLUSTER]
    assert cluster["type"] == "STATIC"
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address == {"socket_address": {"address": "10.1.2.3", "port_value": 9999}}


def test_enable_tracing_false_leaves_no_tracing_and_no_cluster():
    mesh = mesh_map("enableTracing: false")
    assert tracings(mesh) == {"INBOUND": None, "OUTBOUND": None}
    assert ZIPKIN_CLUSTER not in resources(mesh).clusters


def test_telemetry_precedence_root_then_namespace_then_workload_field_by_field():
    root = telemetry(
        "mesh-default", "istio-system", "{randomSamplingPercentage: 10, customTags: {a: {literal: {value: root}}}}"
    )
    namespace = telemetry("ns", "default", "{customTags: {a: {literal: {value: ns}}, b: {literal: {value: ns}}}}")
    workload = telemetry(
        "reviews", "default", "{randomSamplingPercentage: 50, match: {mode: SERVER}}", selector="{app: reviews}"
    )
    other = telemetry("ratings", "default", "{randomSamplingPercentage: 99}", selector="{app: ratings}")
    sides = tracings(root, namespace, workload, other)
    assert sides["INBOUND"]["random_sampling"] == {"value": 50.0}  # the workload's rule, server side only
    assert sides["OUTBOUND"]["random_sampling"] == {"value": 10.0}  # the root's
    for tracing in sides.values():
        tags = {t["tag"]: t.get("literal", {}).get("value") for t in tracing["custom_tags"]}
        assert tags["a"] == "ns" and tags["b"] == "ns"


def test_disable_span_reporting_and_istio_tags():
    rule = telemetry("quiet", "default", "{disableSpanReporting: true, enableIstioTags: false, match: {mode: CLIENT}}")
    sides = tracings(rule)
    assert "provider" not in sides["OUTBOUND"] and sides["OUTBOUND"]["custom_tags"] == []
    assert "provider" in sides["INBOUND"] and sides["INBOUND"]["custom_tags"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (mesh_map("defaultConfig: {tracing: {sampling: 101}}"), "data.mesh.defaultConfig.tracing.sampling"),
        (
            mesh_map("defaultConfig: {tracing: {zipkin: {address: zipkin}}}"),
            "data.mesh.defaultConfig.tracing.zipkin.address",
        ),
        (mesh_map("defaultConfig: {tracing: {customTags: {a: {}}}}"), "exactly one of literal, environment, header"),
        (
            telemetry("t", "default", "{providers: [{name: otel}]}"),
            "tracing provider 'otel' is not supported by plait yet",
        ),
        (telemetry("t", "default", "{randomSamplingPercentage: -1}"), "spec.tracing[0].randomSamplingPercentage"),
    ],
)
def test_bad_tracing_configuration_is_refused_naming_the_field(doc: str, message: str):
    problems = load_text(doc).problems
    assert problems and any(message in str(p) for p in problems), [str(p) for p in problems]
