"""The trace collector: Zipkin v2 and OTLP parsing, the bounded store, Zipkin's read API (pure), and
the HTTP shell on a free port."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2
from typer.testing import CliRunner

from plait.cli.main import app
from plait.controlplane.collector import Collector, serve_collector
from plait.telemetry.spans import SpanError, parse_otlp, parse_zipkin
from plait.telemetry.tracestore import TraceQuery, TraceStore, trace_query
from plait.telemetry.traceview import merge_traces, summarize, tree_lines
from plait.testing.live import free_port

TRACE = "463ac35c9f6413ad48485a3953bb6124"
NOW_US = 1_700_000_000_000_000


def zipkin(
    trace: str, span: str, service: str, *, parent: str | None = None, ts: int = NOW_US, dur: int = 1000, **more
):
    out = {"traceId": trace, "id": span, "name": "get", "kind": "SERVER", "timestamp": ts, "duration": dur}
    out["localEndpoint"] = {"serviceName": service}
    if parent:
        out["parentId"] = parent
    return {**out, **more}


def test_zipkin_spans_are_normalised():
    spans = parse_zipkin(
        json.dumps(
            [zipkin("ABC", "1", "Productpage.Default", tags={"http.status_code": 200}, name="Productpage:9080/*")]
        ).encode()
    )
    assert spans == [
        {
            "traceId": "0000000000000abc",
            "id": "0000000000000001",
            "kind": "SERVER",
            "name": "productpage:9080/*",
            "timestamp": NOW_US,
            "duration": 1000,
            "localEndpoint": {"serviceName": "productpage.default"},
            "tags": {"http.status_code": "200"},
        }
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "Zipkin v2 JSON: not JSON"),
        (b"{}", "expected a list of spans"),
        (json.dumps([{"traceId": "xyz", "id": "1"}]).encode(), "span 0.traceId: expected up to 32 hex digits"),
        (json.dumps([zipkin(TRACE, "1", "a", kind="BOTH")]).encode(), "span 0.kind: expected one of CLIENT"),
        (json.dumps([zipkin(TRACE, "1", "a", duration=-3)]).encode(), "span 0.duration: expected a non-negative"),
    ],
)
def test_bad_zipkin_bodies_say_where(body, message):
    with pytest.raises(SpanError, match=message):
        parse_zipkin(body)


def otlp_request(start_us: int = NOW_US) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "ratings.default"
    span = resource_spans.instrumentation_library_spans.add().spans.add()
    span.trace_id, span.span_id, span.parent_span_id = (
        bytes.fromhex(TRACE),
        bytes.fromhex("00f067aa0ba902b7"),
        b"\x01" * 8,
    )
    span.name, span.kind = "GET /ratings/0", trace_pb2.Span.SPAN_KIND_SERVER
    span.start_time_unix_nano, span.end_time_unix_nano = start_us * 1000, start_us * 1000 + 2_500_000
    tag = span.attributes.add()
    tag.key, tag.value.int_value = "http.status_code", 500
    span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
    return request


def test_otlp_protobuf_and_json_give_the_same_spans():
    expected = [
        {
            "traceId": TRACE,
            "id": "00f067aa0ba902b7",
            "parentId": "0101010101010101",
            "kind": "SERVER",
            "name": "get /ratings/0",
            "timestamp": NOW_US,
            "duration": 2500,
            "localEndpoint": {"serviceName": "ratings.default"},
            "tags": {"http.status_code": "500", "error": "true"},
        }
    ]
    assert parse_otlp(otlp_request().SerializeToString(), "application/x-protobuf") == expected
    as_json = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ratings.default"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE.upper(),
                                "spanId": "00f067aa0ba902b7",
                                "parentSpanId": "0101010101010101",
                                "name": "GET /ratings/0",
                                "kind": "SPAN_KIND_SERVER",
                                "startTimeUnixNano": str(NOW_US * 1000),
                                "endTimeUnixNano": str(NOW_US * 1000 + 2_500_000),
                                "attributes": [{"key": "http.status_code", "value": {"intValue": "500"}}],
                                "status": {"code": 2},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    assert parse_otlp(json.dumps(as_json).encode(), "application/json") == expected
    with pytest.raises(SpanError, match="OTLP protobuf: not an ExportTraceServiceRequest"):
        parse_otlp(b"\xff\xff\xff", "application/x-protobuf")


def test_the_store_keeps_at_most_max_spans_dropping_the_oldest_traces():
    store = TraceStore(max_spans=10)
    for t in range(1, 8):  # 7 traces of 3 spans: 21 spans into room for 10
        trace = f"{t:032x}"
        store.add(parse_zipkin(json.dumps([zipkin(trace, f"{t}{s}", "a") for s in range(3)]).encode()))
        assert store.span_count <= 10
    assert store.span_count == 9 and store.trace_count == 3 and store.dropped_spans == 12
    assert store.trace(f"{1:032x}") is None
    assert [len(store.trace(f"{t:032x}")) for t in (5, 6, 7)] == [3, 3, 3]
    huge = parse_zipkin(json.dumps([zipkin("f" * 32, f"{s:x}", "a") for s in range(1, 15)]).encode())
    store.add(huge)  # one trace larger than the store: it keeps its newest spans
    assert store.trace_count == 1 and [s["id"] for s in store.trace("f" * 32)] == [f"{s:016x}" for s in range(5, 15)]


def bookinfo_store() -> TraceStore:
    store = TraceStore()
    for t, (ts, slow) in enumerate(
        [(NOW_US - 5_000_000, False), (NOW_US - 1_000_000, True), (NOW_US - 7200 * 10**6, True)]
    ):
        trace = f"{t + 1:032x}"
        spans = [
            zipkin(
                trace, "a1", "istio-ingressgateway.istio-system", ts=ts, dur=90_000 if slow else 9_000, kind="CLIENT"
            ),
            zipkin(trace, "b2", "productpage.default", parent="a1", ts=ts + 100, dur=80_000 if slow else 8_000),
            zipkin(
                trace, "c3", "productpage.default", parent="b2", ts=ts + 200, dur=3_000, kind="CLIENT", name="reviews"
            ),
            zipkin(trace, "d4", "reviews.default", parent="c3", ts=ts + 300, dur=2_000),
        ]
        store.add(parse_zipkin(json.dumps(spans).encode()))
    return store


def test_zipkin_queries():
    store, now_ms = bookinfo_store(), NOW_US // 1000
    assert store.services() == ["istio-ingressgateway.istio-system", "productpage.default", "reviews.default"]
    assert store.span_names("productpage.default") == ["get", "reviews"]
    ids = [[s["traceId"][-1] for s in trace][0] for trace in store.traces(TraceQuery(), now_ms)]
    assert ids == ["2", "1", "3"]  # newest first
    one_hour = trace_query({"lookback": "3600000", "serviceName": "productpage.default"})
    assert [t[0]["traceId"][-1] for t in store.traces(one_hour, now_ms)] == ["2", "1"]
    slow = trace_query({"serviceName": "productpage.default", "minDuration": "50000", "limit": "5"})
    assert [t[0]["traceId"][-1] for t in store.traces(slow, now_ms)] == ["2", "3"]
    assert [t[0]["traceId"][-1] for t in store.traces(trace_query({"limit": "1"}), now_ms)] == ["2"]
    assert store.traces(trace_query({"serviceName": "ratings.default"}), now_ms) == []
    assert len(store.trace("0000000000000002")) == 4  # a 64-bit id finds the 128-bit trace
    with pytest.raises(ValueError, match="minDuration: expected a non-negative whole number, got '1s'"):
        trace_query({"minDuration": "1s"})


def http(method: str, url: str, body: bytes | None = None, content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_collector_over_http():
    async def main() -> None:
        port = free_port()
        runner = await serve_collector(Collector(TraceStore(max_spans=100)), "127.0.0.1", port)
        assert runner is not None
        base = f"http://127.0.0.1:{port}"
        try:
            now_us = int(time.time() * 1e6)
            spans = [zipkin(TRACE, "a1", "productpage.default", ts=now_us)]
            calls = [
                ("POST", "/api/v2/spans", json.dumps(spans).encode(), "application/json"),
                ("POST", "/v1/traces", otlp_request(now_us).SerializeToString(), "application/x-protobuf"),
                ("POST", "/api/v2/spans", b"[{", "application/json"),
                ("GET", "/api/v2/services", None, ""),
                ("GET", "/api/v2/spans?serviceName=productpage.default", None, ""),
                ("GET", f"/api/v2/trace/{TRACE}", None, ""),
                ("GET", "/api/v2/trace/0000000000000bad", None, ""),
                ("GET", "/api/v2/traces?serviceName=productpage.default&limit=5", None, ""),
                ("GET", "/api/v2/traces?minDuration=x", None, ""),
            ]
            results = [await asyncio.to_thread(http, m, base + path, body, ct) for m, path, body, ct in calls]
        finally:
            await runner.cleanup()
        status = [code for code, _ in results]
        assert status == [202, 200, 400, 200, 200, 200, 404, 200, 400]
        assert b"Zipkin v2 JSON: not JSON" in results[2][1]
        assert json.loads(results[3][1]) == ["productpage.default", "ratings.default"]
        assert json.loads(results[4][1]) == ["get"]
        assert {s["id"] for s in json.loads(results[5][1])} == {"00000000000000a1", "00f067aa0ba902b7"}
        assert [len(t) for t in json.loads(results[7][1])] == [2]

    asyncio.run(main())


def test_traces_from_two_collectors_merge_and_draw_as_a_tree():
    spans = [s for t in bookinfo_store().traces(TraceQuery(), NOW_US // 1000) for s in t if s["traceId"].endswith("2")]
    half = len(spans) // 2
    merged = merge_traces([spans[:half]], [spans[half - 1 :]])  # one span reported to both replicas
    assert len(merged) == 1 and sorted(s["id"] for s in merged[0]) == sorted(s["id"] for s in spans)
    summary = summarize(merged[0])
    assert (summary.root_service, summary.spans, summary.duration_us) == (
        "istio-ingressgateway.istio-system",
        4,
        90_000,
    )
    lines = tree_lines(merged[0], width=20)
    assert lines[0] == f"trace {'2':0>32}: 4 spans, 90.0ms"
    assert [line.split("|")[0].rsplit(None, 2)[0] for line in lines[1:]] == [
        "istio-ingressgateway.istio-system get (client)",
        "└─ productpage.default get (server)",
        "   └─ productpage.default reviews (client)",
        "      └─ reviews.default get (server)",
    ]
    bars = [line.split("|")[1] for line in lines[1:]]
    assert bars[0] == "█" * 20 and all(len(b) == 20 for b in bars)
    assert bars[3].strip() == "█"  # 2 ms of 90 ms: one cell
    assert [line.split("|")[0].split()[-2:] for line in lines[1:]][-1] == ["+300µs", "2.0ms"]


def test_plait_traces_lists_and_draws_from_a_collector():
    async def main() -> list:
        port = free_port()
        store = TraceStore()
        now_us = int(time.time() * 1e6)
        for t in (1, 2):
            spans = [
                zipkin(f"{t:032x}", "a1", "istio-ingressgateway.istio-system", ts=now_us - t * 1000, dur=t * 40_000),
                zipkin(f"{t:032x}", "b2", "productpage.default", parent="a1", ts=now_us - t * 1000 + 5, dur=30_000),
            ]
            store.add(parse_zipkin(json.dumps(spans).encode()))
        runner = await serve_collector(Collector(store), "127.0.0.1", port)
        url = f"http://127.0.0.1:{port}"
        try:
            return [
                await asyncio.to_thread(CliRunner().invoke, app, ["traces", "--zipkin", url, *args])
                for args in ([], ["--min-duration", "50ms"], [f"{2:032x}"], ["--service", "nobody.default"], ["ffff"])
            ]
        finally:
            await runner.cleanup()

    listed, slow, tree, none, missing = asyncio.run(main())
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.output.splitlines()]
    assert rows[0][:3] == ["TRACE", "ID", "ROOT"]
    assert [(r[0][-1], r[1], r[3], r[4]) for r in rows[1:]] == [
        ("1", "istio-ingressgateway.istio-system", "2", "40.0ms"),
        ("2", "istio-ingressgateway.istio-system", "2", "80.0ms"),
    ]
    assert [line.split()[0][-1] for line in slow.output.splitlines()[1:]] == ["2"]
    assert tree.exit_code == 0 and "└─ productpage.default get (server)" in tree.output
    assert "no traces found" in none.output
    assert missing.exit_code == 1 and "trace ffff not found" in missing.output
