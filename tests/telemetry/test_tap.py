"""Tap's pure parts: targets and filters, Envoy's access log entry → event → linkerd's lines, the
session registry, top's table, and the runtime layer the control plane sends."""

from __future__ import annotations

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.runtime.v3 import rtds_pb2
from google.protobuf import json_format

from plait.telemetry.tap import (
    RUNTIME_KEY,
    TapError,
    TapFilter,
    Target,
    event_from_entry,
    pod_of_node,
    runtime_layer,
    tap_access_log,
    tap_lines,
)
from plait.telemetry.tapsessions import TapSessions
from plait.telemetry.top import TopTable, latency


@pytest.mark.parametrize(
    "text, pod, namespace, expected",
    [
        ("deploy/reviews-v2", "reviews-v2-0", "default", True),  # the local mesh's pod names
        ("deploy/reviews-v2", "reviews-v2-5d8f7c9b6-x2k4p", "default", True),  # Kubernetes'
        ("deploy/reviews", "reviews-v2-0", "default", False),
        ("deploy/reviews-v2", "reviews-v2-0", "other", False),
        ("po/reviews-v2-0", "reviews-v2-0", "default", True),
        ("po/reviews-v2-0", "reviews-v2-1", "default", False),
        ("ns/default", "anything-0", "default", True),
        ("ns/default", "anything-0", "other", False),
    ],
)
def test_targets_match_their_pods(text: str, pod: str, namespace: str, expected: bool) -> None:
    assert Target.parse(text, "default").matches(pod, namespace) is expected


def test_a_namespace_target_is_its_own_namespace_and_bad_targets_say_what_is_expected() -> None:
    assert Target.parse("ns/bookinfo", "default") == Target("namespace", "bookinfo", "bookinfo")
    with pytest.raises(TapError, match="expected one of deploy/NAME, po/NAME, ns/NS$"):
        Target.parse("svc/reviews")
    assert Target.parse("svc/reviews", services=True).kind == "service"
    with pytest.raises(TapError, match="cannot tap 'deploy/'"):
        Target.parse("deploy/")


def test_node_ids_name_pod_and_namespace() -> None:
    assert pod_of_node("sidecar~10.244.0.5~reviews-v2-0.default~default.svc.cluster.local") == (
        "reviews-v2-0",
        "default",
    )
    with pytest.raises(TapError, match="kind~ip~pod.namespace~domain"):
        pod_of_node("envoy-1")


EVENT = {"pod": "reviews-v2-0", "namespace": "default", "path": "/reviews/0?x=1", "method": "GET"}


@pytest.mark.parametrize(
    "tap_filter, accepted",
    [
        (TapFilter(), True),
        (TapFilter(path="/reviews"), True),
        (TapFilter(path="/ratings"), False),
        (TapFilter(method="get"), True),
        (TapFilter(method="POST"), False),
        (TapFilter(to=Target.parse("deploy/ratings-v1", services=True)), True),
        (TapFilter(to=Target.parse("deploy/details-v1", services=True)), False),
        (TapFilter(to=Target.parse("svc/ratings", services=True)), True),
        (TapFilter(to=Target.parse("svc/ratings", "other", services=True)), False),
    ],
)
def test_filters(tap_filter: TapFilter, accepted: bool) -> None:
    event = {**EVENT, "dst_workload": "ratings-v1-0", "dst_namespace": "default", "authority": "ratings:9080"}
    assert tap_filter.accepts(event) is accepted


def entry(**tags: str) -> accesslog_pb2.HTTPAccessLogEntry:
    return json_format.ParseDict(
        {
            "common_properties": {
                "downstream_remote_address": {"socket_address": {"address": "192.0.2.9", "port_value": 0}},  # XFF
                "downstream_direct_remote_address": {"socket_address": {"address": "10.244.0.3", "port_value": 40000}},
                "downstream_local_address": {"socket_address": {"address": "10.244.0.5", "port_value": 9080}},
                "upstream_remote_address": {"socket_address": {"address": "10.244.0.7", "port_value": 9080}},
                "tls_properties": {"tls_version": "TLSv1_3"},
                "time_to_first_downstream_tx_byte": "0.001500s",
                "time_to_last_downstream_tx_byte": "0.002250s",
                "start_time": "2026-12-07T03:00:00Z",
                "response_flags": {"no_healthy_upstream": True},
                "stream_id": "stream-1",
                "custom_tags": tags,
            },
            "request": {
                "request_method": "GET",
                "authority": "reviews:9080",
                "path": "/reviews/0",
                "request_id": "r-1",
            },
            "response": {"response_code": 200, "response_body_bytes": 375},
        },
        accesslog_pb2.HTTPAccessLogEntry(),
    )


def test_an_inbound_entry_becomes_an_event_and_linkerds_lines() -> None:
    tags = {"source_workload": "productpage-v1-0", "destination_workload": "reviews-v2-0"}
    event = event_from_entry(entry(**tags), "in", "reviews-v2-0", "default")
    assert event == {
        "proxy": "in",
        "pod": "reviews-v2-0",
        "namespace": "default",
        "id": "r-1",
        "src": "10.244.0.3:40000",
        "dst": "10.244.0.5:9080",
        "tls": True,
        "src_workload": "productpage-v1-0",
        "src_namespace": "",
        "dst_workload": "reviews-v2-0",
        "dst_namespace": "",
        "method": "GET",
        "scheme": "",
        "authority": "reviews:9080",
        "path": "/reviews/0",
        "status": 200,
        "latency_us": 1500,
        "duration_us": 2250,
        "response_bytes": 375,
        "response_flags": "no_healthy_upstream",
        "start": "2026-12-07T03:00:00Z",
    }
    fields = "id=r-1 proxy=in src=10.244.0.3:40000 dst=10.244.0.5:9080 tls=true"
    assert tap_lines(event) == [
        f"req {fields} :method=GET :authority=reviews:9080 :path=/reviews/0",
        f"rsp {fields} :status=200 latency=1500µs",
        f"end {fields} duration=2250µs response-length=375B",
    ]


def test_an_outbound_entry_names_the_upstream_and_its_tls_mode() -> None:
    assert event_from_entry(entry(tls_mode="istio"), "out", "productpage-v1-0", "default")["tls"] is True
    event = event_from_entry(entry(), "out", "productpage-v1-0", "default")
    assert (event["dst"], event["tls"]) == ("10.244.0.7:9080", False)


def test_a_request_without_response_has_no_rsp_line() -> None:
    event = {**event_from_entry(entry(), "in", "p", "default"), "status": 0, "duration_us": None}
    lines = tap_lines(event)
    assert [line.split()[0] for line in lines] == ["req", "end"] and "duration=-µs" in lines[1]


def test_sessions_turn_proxies_on_and_route_events() -> None:
    sessions = TapSessions()
    assert not sessions.tapped("reviews-v2-0", "default")
    first = sessions.open(Target.parse("deploy/reviews-v2"), TapFilter(path="/reviews"))
    second = sessions.open(Target.parse("ns/default"), TapFilter(method="POST"))
    assert sessions.generation == 2 and len(sessions) == 2
    assert sessions.tapped("reviews-v2-0", "default") and sessions.tapped("ratings-v1-0", "default")
    assert sessions.recipients(EVENT) == [first.id]
    assert sessions.recipients({**EVENT, "method": "POST"}) == [first.id, second.id]
    sessions.close(second.id)
    assert not sessions.tapped("ratings-v1-0", "default") and sessions.generation == 3
    sessions.close(second.id)  # twice: nothing changes
    sessions.close(first.id)
    assert sessions.generation == 4 and not sessions.tapped("reviews-v2-0", "default")


def test_top_counts_paths_with_latencies_and_success() -> None:
    table = TopTable()
    base = {"src_workload": "productpage-v1-0", "dst_workload": "reviews-v2-0", "method": "GET"}
    for path, status, took in (("/reviews/0?a", 200, 3000), ("/reviews/0?b", 500, 9000), ("/reviews/0", 200, 1000)):
        table.add({**base, "path": path, "status": status, "latency_us": took})
    table.add({**base, "dst_workload": "", "dst": "10.0.0.9:9080", "path": "/x", "status": 200, "latency_us": 400})
    first, second = table.rows()
    assert first.cells() == (
        "productpage-v1-0",
        "reviews-v2-0",
        "GET",
        "/reviews/0",
        "3",
        "1ms",
        "9ms",
        "1ms",
        "66.67%",
    )
    assert second.cells()[1] == "10.0.0.9:9080" and second.as_dict()["Best"] == "400µs"
    assert [latency(v) for v in (None, 999, 1500, 2_500_000)] == ["-", "999µs", "2ms", "2.5s"]
    assert len(table.rows(limit=1)) == 1


def test_the_runtime_layer_is_a_valid_rtds_resource_and_the_logger_is_off_by_default() -> None:
    on = json_format.ParseDict(runtime_layer(True), rtds_pb2.Runtime())
    assert on.name == "plait-tap" and on.layer[RUNTIME_KEY] == 100
    assert json_format.ParseDict(runtime_layer(False), rtds_pb2.Runtime()).layer[RUNTIME_KEY] == 0
    logger = tap_access_log("out", "xds-grpc")
    assert logger["filter"]["runtime_filter"] == {
        "runtime_key": RUNTIME_KEY,
        "percent_sampled": {"numerator": 0, "denominator": "HUNDRED"},
    }
    assert logger["typed_config"]["common_config"]["log_name"] == "plait-tap-outbound"
