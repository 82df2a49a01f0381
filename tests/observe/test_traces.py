"""Traces across Bookinfo: a request through the ingress gateway is traced by every proxy on its way
(gateway → productpage → details / reviews → ratings), the apps forward the trace headers as Istio's
do, and the spans are read back through the control plane's Zipkin read API and `plait traces`."""

from __future__ import annotations

import secrets

import pytest

from plait.client import ClientError, Http
from plait.testing.http import http_request
from plait.testing.live import wait_until

ZIPKIN = Http("http://127.0.0.1:9411", what="the trace collector")
SERVICES = {
    "istio-ingressgateway.istio-system",
    "productpage.default",
    "details.default",
    "reviews.default",
    "ratings.default",
}


def traced_page(port: int) -> tuple[str, int]:
    """Load the product page under a trace of our own (B3 sampled, as a traced caller would send)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    headers = {"x-b3-traceid": trace_id, "x-b3-spanid": span_id, "x-b3-sampled": "1"}
    return trace_id, http_request("127.0.0.1", port, "/productpage", headers, timeout=20).status


def spans_of(trace_id: str, least: int, timeout: float = 30) -> list[dict]:
    """The trace's spans once there are `least` (Envoy sends its spans every 5 s); fewer after `timeout`
    raises TimeoutError."""
    found: list[dict] = []

    def enough() -> bool:
        found[:] = ZIPKIN.get(f"/api/v2/trace/{trace_id}")
        return len(found) >= least

    wait_until(enough, timeout, f"{least} spans of trace {trace_id}", interval=0.5)
    return found


def service(span: dict) -> str:
    return span["localEndpoint"]["serviceName"]


@pytest.fixture(scope="module")
def trace(bookinfo) -> list[dict]:
    """The spans of one page load whose reviews called ratings (reviews v2 or v3; v1 does not)."""
    for _ in range(6):
        trace_id, status = traced_page(bookinfo.ingress_port)
        assert status == 200
        spans_of(trace_id, 6)
        try:
            return spans_of(trace_id, 8, timeout=12)  # reviews v2/v3 also called ratings
        except TimeoutError:
            continue  # reviews v1
    pytest.fail("six page loads and none reached ratings: reviews v2/v3 never answered")


def test_one_page_load_is_one_trace_through_every_hop(trace: list[dict]):
    assert len(trace) >= 6 and len({s["traceId"] for s in trace}) == 1
    assert {service(s) for s in trace} == SERVICES
    by_id = {s["id"]: s for s in trace}

    def parent(span: dict) -> dict:
        return by_id[span["parentId"]]

    def server(name: str) -> dict:
        return next(s for s in trace if service(s) == f"{name}.default" and s["kind"] == "SERVER")

    gateway = next(s for s in trace if service(s) == "istio-ingressgateway.istio-system")
    assert gateway["parentId"] not in by_id  # the caller's own span is the root's parent
    assert parent(server("productpage")) == gateway
    for callee in ("details", "reviews"):
        hop = parent(server(callee))  # productpage's sidecar, outbound
        assert (service(hop), hop["kind"]) == ("productpage.default", "CLIENT")
        assert parent(hop) == server("productpage")  # the app forwarded the headers it was given
        assert hop["name"] == f"{callee}.default.svc.cluster.local:9080/*"
    to_ratings = parent(server("ratings"))
    assert (service(to_ratings), to_ratings["kind"]) == ("reviews.default", "CLIENT")
    assert parent(to_ratings) == server("reviews")
    for span in trace:
        assert span["tags"]["istio.canonical_service"] == service(span).split(".")[0]
        assert span["tags"]["node_id"].split("~")[0] in ("sidecar", "router")
        assert span["duration"] > 0 and span["timestamp"] > 0


def test_the_zipkin_read_api_and_plait_traces(bookinfo, trace: list[dict]):
    trace_id = trace[0]["traceId"]
    assert SERVICES <= set(ZIPKIN.get("/api/v2/services"))
    listed = ZIPKIN.get("/api/v2/traces?serviceName=ratings.default&limit=50")
    assert trace_id in {t[0]["traceId"] for t in listed}
    with pytest.raises(ClientError):
        ZIPKIN.get(f"/api/v2/trace/{secrets.token_hex(16)}")

    table = bookinfo.plait("traces", "--service", "ratings.default", "--limit", "50")
    assert table.returncode == 0, table.stderr
    row = next(row for row in map(str.split, table.stdout.splitlines()) if row and row[0] == trace_id)
    assert row[1] == "istio-ingressgateway.istio-system" and int(row[3]) == len(trace)

    drawn = bookinfo.plait("traces", trace_id)
    assert drawn.returncode == 0, drawn.stderr
    lines = drawn.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id}: {len(trace)} spans")
    assert lines[1].startswith("istio-ingressgateway.istio-system ")
    assert any("└─ ratings.default" in line for line in lines)
    assert all(line.count("|") == 2 for line in lines[1:])
