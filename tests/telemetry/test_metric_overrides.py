"""Telemetry ``metrics``: what is accepted and refused, how levels merge, and what the generated stats
loggers hold (a real Envoy reports it: tests/telemetry/test_metric_overrides_live.py)."""

from __future__ import annotations

import pytest

from plait.api import load_text
from plait.api.telemetry_metrics import ATTRIBUTES, tag_value_format
from plait.model import MeshSnapshot, Proxy
from plait.telemetry import metrics, overrides
from plait.xds.generator import generate

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}, {name: tcp, port: 9000}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 10.0.0.3, labels: {app: reviews, version: v1}}
"""


def telemetry(spec: str, name: str = "t", namespace: str = "istio-system") -> str:
    return f"apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"


def snapshot_of(*documents: str) -> tuple[MeshSnapshot, Proxy]:
    snapshot = MeshSnapshot(load_text("\n---\n".join([*documents, SERVICES])).raise_for_errors())
    return snapshot, Proxy.from_workload_entry(snapshot.workload("reviews-v1"))


def resolved(*documents: str) -> dict[str, dict[str, overrides.MetricConfig]]:
    snapshot, proxy = snapshot_of(*documents)
    return {side: overrides.metric_overrides(snapshot, proxy, side) for side in ("CLIENT", "SERVER")}


def stats_loggers(*documents: str) -> dict[str, list[dict]]:
    """reviews-v1's stats loggers by side (reporter), from its generated listeners."""
    snapshot, proxy = snapshot_of(*documents)
    out: dict[str, list[dict]] = {"source": [], "destination": []}
    for listener in generate(snapshot, proxy).listeners.values():
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for logger in f["typed_config"].get("access_log", []):
                    if logger["name"] == metrics.STATS_LOGGER:
                        config = logger["typed_config"]
                        stats = [*config.get("counters", []), *config.get("histograms", [])]
                        reporter = next(t["value_format"] for t in stats[0]["stat"]["tags"] if t["name"] == "reporter")
                        out[reporter].append(config)
    return out


OWN = {field: f"<own {field}>" for field in metrics.ENVIRONMENT}


def stats(loggers: list[dict]) -> dict[str, list[dict]]:
    """metric name → Istio's labels of its series (one dict per logger, label → the format that fills
    it), as the exposition spells out Envoy's tags (`metrics.expand`)."""
    out: dict[str, list[dict]] = {}
    for config in loggers:
        for stat in [*config.get("counters", []), *config.get("histograms", [])]:
            tags = [(t["name"], t["value_format"]) for t in stat["stat"]["tags"]]
            out.setdefault(stat["stat"]["name"], []).append(dict(metrics.expand(tags, OWN)))
    return out


ALL = set(metrics.HTTP_METRICS) | set(metrics.TCP_METRICS)


def test_without_metrics_rules_every_metric_has_istios_labels() -> None:
    for reporter, loggers in stats_loggers().items():
        found = stats(loggers)
        assert set(found) == ALL, reporter
        for name, tag_lists in found.items():
            labels = metrics.HTTP_LABELS if name in metrics.HTTP_METRICS else metrics.TCP_LABELS
            assert all(sorted(tags) == sorted(labels) for tags in tag_lists), name


def test_a_disabled_metric_is_left_out_on_its_side_only() -> None:
    rule = "{metrics: [{providers: [{name: prometheus}], overrides: [{match: {metric: REQUEST_COUNT, mode: CLIENT}, disabled: true}]}]}"
    found = {reporter: stats(loggers) for reporter, loggers in stats_loggers(telemetry(rule)).items()}
    assert set(found["source"]) == ALL - {"requests_total"}
    assert set(found["destination"]) == ALL


def test_all_metrics_disabled_leaves_no_stats_logger() -> None:
    rule = "{metrics: [{overrides: [{disabled: true}]}]}"  # match defaults to ALL_METRICS, CLIENT_AND_SERVER
    assert stats_loggers(telemetry(rule)) == {"source": [], "destination": []}


def test_tcp_metrics_can_be_disabled_one_by_one() -> None:
    rule = (
        "{metrics: [{overrides: [{match: {metric: TCP_OPENED_CONNECTIONS}, disabled: true},"
        " {match: {customMetric: istio_tcp_sent_bytes_total}, disabled: true}]}]}"
    )
    found = stats(stats_loggers(telemetry(rule))["destination"])
    assert set(found) == ALL - {"tcp_connections_opened_total", "tcp_sent_bytes_total"}


def test_tag_overrides_remove_replace_and_add_labels() -> None:
    rule = """{metrics: [{overrides: [{match: {metric: REQUEST_COUNT, mode: SERVER}, tagOverrides: {
        grpc_response_status: {operation: REMOVE},
        destination_version: {value: "'stable'"},
        request_host: {value: request.host},
        api: {operation: UPSERT, value: "request.headers['x-api']"}}}]}]}"""
    found = stats_loggers(telemetry(rule))
    [*server] = stats(found["destination"])["requests_total"]
    for tags in server:
        assert "grpc_response_status" not in tags
        assert tags["destination_version"] == "stable"
        assert (tags["request_host"], tags["api"]) == ("%REQ(:AUTHORITY)%", "%REQ(x-api)%")
        assert list(tags)[-2:] == ["request_host", "api"]  # new labels after Istio's
    others = stats(found["destination"])["request_duration_milliseconds"] + stats(found["source"])["requests_total"]
    assert all(sorted(tags) == sorted(metrics.HTTP_LABELS) for tags in others)


def test_levels_merge_from_the_root_to_the_workload() -> None:
    root = telemetry(
        "{metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true,"
        " tagOverrides: {a: {value: \"'root'\"}, b: {value: \"'root'\"}}}]}]}"
    )
    namespace = telemetry(
        "{metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, tagOverrides: {a: {value: \"'ns'\"}}}]}]}",
        namespace="default",
    )
    workload = telemetry(
        "{selector: {matchLabels: {app: reviews}}, metrics: [{overrides: [{match: {metric: REQUEST_COUNT, mode: SERVER},"
        " disabled: false, tagOverrides: {b: {operation: REMOVE}}}]}]}",
        "w",
        "default",
    )
    found = resolved(root, namespace, workload)
    assert found["CLIENT"]["requests_total"] == overrides.MetricConfig(True, {"a": "ns", "b": "root"})
    assert found["SERVER"]["requests_total"] == overrides.MetricConfig(False, {"a": "ns", "b": None})
    other = workload.replace("app: reviews", "app: ratings")  # selects another workload: not merged in
    assert resolved(root, namespace, other)["SERVER"]["requests_total"].disabled is True
    assert resolved()["CLIENT"] == {}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'v1'", "v1"),
        ('"a b"', "a b"),
        ("request.url_path", "%PATH(NQ)%"),
        ("request.method", "%REQ(:METHOD)%"),
        ("  request.host ", "%REQ(:AUTHORITY)%"),
        ("request.headers['x-user']", "%REQ(x-user)%"),
        ('response.headers["content-type"]', "%RESP(content-type)%"),
    ],
)
def test_tag_values_become_envoy_formats(expression: str, expected: str) -> None:
    assert tag_value_format(expression) == expected


def test_every_attribute_is_an_envoy_command() -> None:
    assert all(f.startswith("%") and f.endswith("%") for f in ATTRIBUTES.values())


@pytest.mark.parametrize(
    ("spec", "path", "expected"),
    [
        ("{metrics: [{providers: [{name: stackdriver}]}]}", "spec.metrics[0].providers[0].name", "'prometheus'"),
        (
            "{metrics: [{overrides: [{match: {metric: REQUEST_COUNTS}}]}]}",
            "spec.metrics[0].overrides[0].match.metric",
            "REQUEST_COUNT",
        ),
        (
            "{metrics: [{overrides: [{match: {metric: GRPC_REQUEST_MESSAGES}}]}]}",
            "spec.metrics[0].overrides[0].match.metric",
            "not supported by plait yet",
        ),
        (
            "{metrics: [{overrides: [{match: {customMetric: my_metric}}]}]}",
            "spec.metrics[0].overrides[0].match.customMetric",
            "expected one of requests_total",
        ),
        (
            "{metrics: [{overrides: [{match: {metric: REQUEST_COUNT, customMetric: requests_total}}]}]}",
            "spec.metrics[0].overrides[0].match",
            "not both",
        ),
        (
            "{metrics: [{overrides: [{tagOverrides: {x: {value: 'upstream.address'}}}]}]}",
            "spec.metrics[0].overrides[0].tagOverrides.x.value",
            "expression 'upstream.address' is not supported by plait yet; expected a quoted string",
        ),
        (
            "{metrics: [{overrides: [{tagOverrides: {x: {value: \"source_app | ''\"}}}]}]}",
            "spec.metrics[0].overrides[0].tagOverrides.x.value",
            "request.url_path",
        ),
        (
            "{metrics: [{overrides: [{tagOverrides: {x: {operation: UPSERT}}}]}]}",
            "spec.metrics[0].overrides[0].tagOverrides.x",
            "UPSERT needs a value",
        ),
        (
            "{metrics: [{overrides: [{tagOverrides: {x-y: {operation: REMOVE}}}]}]}",
            "spec.metrics[0].overrides[0].tagOverrides",
            "not a Prometheus label name",
        ),
        ("{metrics: [{reportingInterval: 5s}]}", "spec.metrics[0].reportingInterval", "not supported by plait yet"),
    ],
)
def test_bad_metrics_rules_name_file_document_and_field(spec: str, path: str, expected: str) -> None:
    [problem] = load_text("---\n" + SERVICES + "---\n" + telemetry(spec), "telemetry.yaml").problems
    assert (problem.file, problem.document, problem.kind, problem.path) == ("telemetry.yaml", 2, "Telemetry", path)
    assert expected in problem.message, problem.message
