"""Pieces of Istio's validation rules shared by the kinds (rules_networking, rules_security).

Pydantic checks each field alone; the rules look across fields. Each kind's
check takes a validated spec and yields ``(field path inside spec, message)``
findings, every one an error: a document with any is refused, as Istio's
admission webhook (pkg/config/validation) refuses it. Pure functions.
"""

from __future__ import annotations

import http
import ipaddress
import re
from collections.abc import Iterator
from typing import Any

from plait.api.hosts import check_host, matches

Finding = tuple[str, str]

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Istio's port protocols (pkg/config/protocol), compared without case.
PROTOCOLS = ("HTTP", "HTTPS", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB", "TCP", "TLS", "UDP", "MONGO", "REDIS", "MYSQL")
# x-envoy-retry-on and x-envoy-retry-grpc-on policies Istio accepts in retryOn (besides HTTP status codes).
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
_STATUS_CODES = frozenset(int(s) for s in http.HTTPStatus)


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def selector(path: str, labels: dict[str, str]) -> Iterator[Finding]:
    """Workload selectors match labels exactly: no empty keys, no wildcards (Istio's rule)."""
    for key, value in labels.items():
        if not key:
            yield path, f"empty label key in selector ({key}={value})"
        if "*" in key or "*" in value:
            yield path, f"wildcards are not supported in selectors ({key}={value}); name labels exactly"


def protocol_name(path: str, protocol: str | None) -> Iterator[Finding]:
    if protocol and protocol.upper() not in PROTOCOLS:
        yield path, f"unsupported protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}"


def port_name(path: str, name: str) -> Iterator[Finding]:
    if not DNS1123_LABEL.match(name):
        yield (
            path,
            (
                f"port name {name!r} is not valid; expected a DNS label (lower-case letters, digits "
                "and '-'), e.g. 'http-web'"
            ),
        )


def port_number(path: str, number: int) -> Iterator[Finding]:
    if not 1 <= number <= 65535:
        yield path, f"port {number} is not a port number (1-65535)"


def export_to(path: str, entries: list[str]) -> Iterator[Finding]:
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if entry in seen:
            yield f"{path}[{i}]", f"duplicate exportTo entry {entry!r}"
        seen.add(entry)
    if "*" in seen and len(entries) > 1:
        yield path, "exportTo '*' (everyone) cannot be combined with other entries"


def empty_strings(path: str, values: list[str]) -> Iterator[Finding]:
    for i, value in enumerate(values):
        if value == "":
            yield f"{path}[{i}]", "empty value; remove it or write a value"


def duplicates(values: list[Any]) -> list[int]:
    """Indices of values seen earlier in the list."""
    seen: set[Any] = set()
    out = []
    for i, value in enumerate(values):
        if value in seen:
            out.append(i)
        seen.add(value)
    return out


def unset(model: Any) -> bool:
    """Was the object written as ``{}`` (no field set)?"""
    return not model.model_fields_set


def check_destination_host(path: str, host: str) -> Iterator[Finding]:
    if host == "*":
        yield path, "'*' is not a destination host; name the service, e.g. 'reviews' or '*.example.com'"
        return
    try:
        check_host(host)
    except ValueError as exc:
        yield path, str(exc)


def status_code(text: str) -> bool:
    return text.isdigit() and int(text) in _STATUS_CODES


def hosts_overlap(a: str, b: str) -> bool:
    return matches(a, b) or matches(b, a)
