"""The Telemetry kind's ``metrics`` (telemetry.istio.io): which of Istio's standard metrics a proxy
reports, and with which labels.

Each ``metrics`` rule names ``providers`` (only Istio's built-in ``prometheus``; none means it) and
``overrides``: a ``match`` (an Istio ``metric``, ``ALL_METRICS`` by default, or a ``customMetric``
naming a standard metric by its Prometheus name, and a ``mode``: ``CLIENT``, ``SERVER`` or
``CLIENT_AND_SERVER``), ``disabled``, and ``tagOverrides``: a label name → ``REMOVE``, or
``UPSERT`` with a ``value`` expression. Of Istio's CEL expressions plait takes a quoted string
literal and the request attributes Envoy's substitution formatters can give (`ATTRIBUTES`,
``request.headers['name']``, ``response.headers['name']``); any other expression is refused,
naming it. `tag_value_format` turns an accepted expression into Envoy's format string.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from plait.api.common import IstioModel

PROMETHEUS_PROVIDER = "prometheus"

# Istio's IstioMetric enum → the metric's Prometheus name without ``istio_`` (as Istio's stats filter).
ISTIO_METRICS = {
    "REQUEST_COUNT": "requests_total",
    "REQUEST_DURATION": "request_duration_milliseconds",
    "REQUEST_SIZE": "request_bytes",
    "RESPONSE_SIZE": "response_bytes",
    "TCP_OPENED_CONNECTIONS": "tcp_connections_opened_total",
    "TCP_CLOSED_CONNECTIONS": "tcp_connections_closed_total",
    "TCP_SENT_BYTES": "tcp_sent_bytes_total",
    "TCP_RECEIVED_BYTES": "tcp_received_bytes_total",
}
ALL_METRICS = "ALL_METRICS"
GRPC_METRICS = ("GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES")  # Istio's, for streams: not made by plait

# Istio's request attributes (CEL) → Envoy's substitution formatter giving the same value.
ATTRIBUTES = {
    "request.host": "%REQ(:AUTHORITY)%",
    "request.method": "%REQ(:METHOD)%",
    "request.path": "%REQ(:PATH)%",
    "request.url_path": "%PATH(NQ)%",
    "request.scheme": "%REQ(:SCHEME)%",
    "request.referer": "%REQ(REFERER)%",
    "request.useragent": "%REQ(USER-AGENT)%",
    "request.id": "%REQ(X-REQUEST-ID)%",
    "request.protocol": "%PROTOCOL%",
    "response.code": "%RESPONSE_CODE%",
    "response.code_details": "%RESPONSE_CODE_DETAILS%",
    "response.flags": "%RESPONSE_FLAGS%",
    "response.grpc_status": "%GRPC_STATUS_NUMBER%",
    "source.address": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "source.port": "%DOWNSTREAM_REMOTE_PORT%",
    "destination.address": "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%",
    "destination.port": "%DOWNSTREAM_LOCAL_PORT%",
    "xds.cluster_name": "%UPSTREAM_CLUSTER%",
    "xds.route_name": "%ROUTE_NAME%",
}
_HEADER = re.compile(
    r"""(request|response)\.headers\[(?:'([!#$%&*+.^_`|~0-9A-Za-z-]+)'|"([!#$%&*+.^_`|~0-9A-Za-z-]+)")\]"""
)
_LITERAL = re.compile(r"""'([^'%\\]*)'|"([^"%\\]*)\"""")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
EXPECTED_VALUE = (
    f"a quoted string ('v1') or one of {', '.join(ATTRIBUTES)}, request.headers['NAME'], response.headers['NAME']"
)


def tag_value_format(expression: str) -> str:
    """Envoy's format string for an accepted tag value expression; ValueError naming it otherwise."""
    text = expression.strip()
    if text in ATTRIBUTES:
        return ATTRIBUTES[text]
    if header := _HEADER.fullmatch(text):
        return f"%{'REQ' if header[1] == 'request' else 'RESP'}({header[2] or header[3]})%"
    if literal := _LITERAL.fullmatch(text):
        return literal[1] if literal[1] is not None else literal[2]
    raise ValueError(f"expression {expression!r} is not supported by plait yet; expected {EXPECTED_VALUE}")


class MetricsProvider(IstioModel):
    name: str = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _prometheus_only(cls, name: str) -> str:
        if name != PROMETHEUS_PROVIDER:
            raise ValueError(f"provider {name!r} is not supported by plait yet; expected Istio's built-in 'prometheus'")
        return name


class MetricSelector(IstioModel):
    metric: str | None = None
    custom_metric: str | None = None
    mode: Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"] = "CLIENT_AND_SERVER"

    @field_validator("metric")
    @classmethod
    def _istio_metric(cls, metric: str) -> str:
        known = ", ".join((ALL_METRICS, *ISTIO_METRICS))
        if metric in GRPC_METRICS:
            raise ValueError(f"metric {metric} is not supported by plait yet; expected one of {known}")
        if metric != ALL_METRICS and metric not in ISTIO_METRICS:
            raise ValueError(f"metric {metric!r} is not one of Istio's; expected one of {known}")
        return metric

    @field_validator("custom_metric")
    @classmethod
    def _standard_only(cls, name: str) -> str:
        if name.removeprefix("istio_") not in ISTIO_METRICS.values():
            known = ", ".join(ISTIO_METRICS.values())
            raise ValueError(f"custom metric {name!r} is not supported by plait yet; expected one of {known}")
        return name

    @model_validator(mode="after")
    def _one_of(self) -> "MetricSelector":
        if self.metric is not None and self.custom_metric is not None:
            raise ValueError("set metric or customMetric, not both")
        return self

    def metrics(self) -> tuple[str, ...]:
        """The Prometheus names (without ``istio_``) this selector picks."""
        if self.custom_metric is not None:
            return (self.custom_metric.removeprefix("istio_"),)
        if self.metric in (None, ALL_METRICS):
            return tuple(ISTIO_METRICS.values())
        return (ISTIO_METRICS[self.metric],)

    def sides(self) -> tuple[str, ...]:
        return ("CLIENT", "SERVER") if self.mode == "CLIENT_AND_SERVER" else (self.mode,)


class TagOverride(IstioModel):
    operation: Literal["UPSERT", "REMOVE"] = "UPSERT"
    value: str | None = None

    @field_validator("value")
    @classmethod
    def _expression(cls, value: str) -> str:
        tag_value_format(value)
        return value

    @model_validator(mode="after")
    def _value_for_upsert(self) -> "TagOverride":
        if self.operation == "UPSERT" and not self.value:
            raise ValueError(f"operation UPSERT needs a value: {EXPECTED_VALUE}")
        return self


class MetricsOverride(IstioModel):
    match: MetricSelector = MetricSelector()
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = {}

    @field_validator("tag_overrides")
    @classmethod
    def _label_names(cls, tags: dict[str, TagOverride]) -> dict[str, TagOverride]:
        for name in tags:
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ValueError(f"tag {name!r} is not a Prometheus label name; expected [a-zA-Z_][a-zA-Z0-9_]*")
        return tags


class Metrics(IstioModel):
    providers: list[MetricsProvider] = []
    overrides: list[MetricsOverride] = []
