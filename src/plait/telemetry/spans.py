"""Spans as collectors receive them: Zipkin v2 JSON and OTLP/HTTP (protobuf or JSON), read into one form.

In: a request body (bytes) and its content type. Out: a list of spans in Zipkin v2's JSON shape
(``traceId``, ``id``, ``parentId``, ``name``, ``kind``, ``timestamp`` and ``duration`` in
microseconds, ``localEndpoint``, ``remoteEndpoint``, ``tags``, ``annotations``), which is also what
the Zipkin read API answers, so Zipkin's and Jaeger's UIs and scripts read it as they read Zipkin.
A body that is not what its format says raises `SpanError` naming the format, the span and the
field. Pure: no I/O, no state.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

HEX_ID = re.compile(r"^[0-9a-f]{1,32}$")
KINDS = ("CLIENT", "SERVER", "PRODUCER", "CONSUMER")
# OTLP's SpanKind numbers and names → Zipkin's kinds (INTERNAL and UNSPECIFIED have none)
OTLP_KINDS = {3: "CLIENT", 2: "SERVER", 4: "PRODUCER", 5: "CONSUMER"}
OTLP_KIND_NAMES = {"SPAN_KIND_CLIENT": 3, "SPAN_KIND_SERVER": 2, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
OTLP_STATUS_ERROR = 2
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
MAX_TAG = 4096  # a longer tag value is cut: a collector's memory is bounded by spans, not their size


class SpanError(ValueError):
    """A body that is not valid spans of its format; the message says where and what was expected."""


def normalize_id(value: object, width: int, where: str) -> str:
    """A hex id, lower-case and left-padded to `width` (16 or 32); Zipkin accepts shorter ones."""
    if not isinstance(value, str) or not HEX_ID.match(value.lower()) or len(value) > width:
        raise SpanError(f"{where}: expected up to {width} hex digits, got {value!r}")
    return value.lower().rjust(16 if len(value) <= 16 else 32, "0")


def _endpoint(value: object, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpanError(f"{where}: expected an object such as {{'serviceName': 'reviews.default'}}")
    out = {k: value[k] for k in ("serviceName", "ipv4", "ipv6", "port") if value.get(k) not in (None, "")}
    if "serviceName" in out:
        out["serviceName"] = str(out["serviceName"]).lower()
    return out


def _number(span: dict, key: str, where: str) -> int | None:
    value = span.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SpanError(f"{where}.{key}: expected a non-negative number of microseconds, got {value!r}")
    return int(value)


def zipkin_span(span: object, where: str) -> dict:
    """One Zipkin v2 span, checked and normalised (ids padded, service names lower-case)."""
    if not isinstance(span, dict):
        raise SpanError(f"{where}: expected a span object")
    out: dict[str, Any] = {
        "traceId": normalize_id(span.get("traceId"), 32, f"{where}.traceId"),
        "id": normalize_id(span.get("id"), 16, f"{where}.id"),
    }
    if span.get("parentId"):
        out["parentId"] = normalize_id(span["parentId"], 16, f"{where}.parentId")
    if span.get("kind") is not None:
        if span["kind"] not in KINDS:
            raise SpanError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {span['kind']!r}")
        out["kind"] = span["kind"]
    out["name"] = str(span.get("name") or "").lower()
    for key in ("timestamp", "duration"):
        value = _number(span, key, where)
        if value is not None:
            out[key] = value
    for key in ("localEndpoint", "remoteEndpoint"):
        endpoint = _endpoint(span.get(key), f"{where}.{key}")
        if endpoint:
            out[key] = endpoint
    tags = span.get("tags") or {}
    if not isinstance(tags, dict):
        raise SpanError(f"{where}.tags: expected an object of strings")
    if tags:
        out["tags"] = {str(k): str(v)[:MAX_TAG] for k, v in tags.items()}
    annotations = span.get("annotations") or []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise SpanError(f"{where}.annotations: expected a list of {{timestamp, value}} objects")
    if annotations:
        out["annotations"] = [
            {"timestamp": int(a.get("timestamp", 0)), "value": str(a.get("value", ""))} for a in annotations
        ]
    for flag in ("shared", "debug"):
        if span.get(flag):
            out[flag] = True
    return out


def parse_zipkin(body: bytes) -> list[dict]:
    """Zipkin v2 JSON (``POST /api/v2/spans``): a list of spans."""
    try:
        spans = json.loads(body or b"[]")
    except ValueError as exc:
        raise SpanError(f"Zipkin v2 JSON: not JSON: {exc}") from None
    if not isinstance(spans, list):
        raise SpanError("Zipkin v2 JSON: expected a list of spans")
    return [zipkin_span(span, f"Zipkin v2 JSON: span {i}") for i, span in enumerate(spans)]


def _attribute_value(value: dict) -> str:
    """An OTLP AnyValue as a tag's string."""
    for key in ("stringValue", "boolValue", "intValue", "doubleValue"):
        if key in value:
            v = value[key]
            return ("true" if v else "false") if key == "boolValue" else str(v)
    if "arrayValue" in value:
        return json.dumps([_attribute_value(v) for v in value["arrayValue"].get("values", [])])
    return json.dumps(value)


def _attributes(items: object) -> dict[str, str]:
    if not isinstance(items, list):
        return {}
    return {str(a.get("key")): _attribute_value(a.get("value") or {}) for a in items if isinstance(a, dict)}


def _hex_from_base64(value: str) -> str:
    return base64.b64decode(value).hex()


def _otlp_span(span: dict, service: str, decode: Callable[[str], str], where: str) -> dict:
    kind = span.get("kind", 0)
    kind = OTLP_KIND_NAMES.get(kind, 0) if isinstance(kind, str) else kind
    start, end = int(span.get("startTimeUnixNano") or 0), int(span.get("endTimeUnixNano") or 0)
    tags = _attributes(span.get("attributes"))
    status = span.get("status") or {}
    if status.get("code") in (OTLP_STATUS_ERROR, "STATUS_CODE_ERROR"):
        tags["error"] = status.get("message") or "true"
    zipkin = {
        "traceId": decode(span.get("traceId") or ""),
        "id": decode(span.get("spanId") or ""),
        "parentId": decode(span["parentSpanId"]) if span.get("parentSpanId") else None,
        "name": span.get("name"),
        "kind": OTLP_KINDS.get(kind),
        "timestamp": start // 1000,
        "duration": max(end - start, 0) // 1000,
        "localEndpoint": {"serviceName": service},
        "tags": tags,
        "annotations": [
            {"timestamp": int(e.get("timeUnixNano") or 0) // 1000, "value": e.get("name", "")}
            for e in span.get("events") or []
        ],
    }
    return zipkin_span({k: v for k, v in zipkin.items() if v is not None}, where)


def _otlp_spans(request: dict, decode: Callable[[str], str], what: str) -> Iterator[dict]:
    resource_spans = request.get("resourceSpans") or []
    if not isinstance(resource_spans, list):
        raise SpanError(f"{what}: resourceSpans: expected a list")
    for r, resource_span in enumerate(resource_spans):
        resource = _attributes((resource_span.get("resource") or {}).get("attributes"))
        service = resource.get("service.name", "unknown")
        scopes = resource_span.get("scopeSpans") or resource_span.get("instrumentationLibrarySpans") or []
        for s, scope in enumerate(scopes):
            for i, span in enumerate(scope.get("spans") or []):
                yield _otlp_span(span, service, decode, f"{what}: resourceSpans[{r}].scopeSpans[{s}].spans[{i}]")


def parse_otlp(body: bytes, content_type: str) -> list[dict]:
    """OTLP/HTTP ``POST /v1/traces``: an ExportTraceServiceRequest, protobuf (ids as bytes) or JSON
    (ids as hex), each span with its resource's ``service.name``."""
    if content_type in PROTOBUF_TYPES:
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise SpanError(f"OTLP protobuf: not an ExportTraceServiceRequest: {exc}") from None
        as_dict = json_format.MessageToDict(message, use_integers_for_enums=True)
        return list(_otlp_spans(as_dict, _hex_from_base64, "OTLP protobuf"))
    try:
        request = json.loads(body or b"{}")
    except ValueError as exc:
        raise SpanError(f"OTLP JSON: not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise SpanError("OTLP JSON: expected an ExportTraceServiceRequest object with resourceSpans")
    return list(_otlp_spans(request, str, "OTLP JSON"))
