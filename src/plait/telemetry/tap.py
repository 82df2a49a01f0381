"""Tap: live request events from the proxies of a workload, at no cost while nobody taps.

In: Envoy's gRPC access log entries (``HTTPAccessLogEntry``, `event_from_entry`) and tap
requests (`Target`, `TapFilter`). Out: the access logger every HCM carries (`tap_access_log`:
gated by the runtime key ``plait.tap`` at 0 %, so while it is off Envoy only reads a runtime value
per request), the bootstrap's RTDS layer that turns the key on (`rtds_layer`, `runtime_layer`),
plain event dicts (what the control plane streams to tap clients) and linkerd's ``req``/``rsp``/``end``
lines (`tap_lines`). Pure: no I/O, no clock; the control plane's `plait.controlplane.tap` moves
the messages, `plait.telemetry.top` aggregates the events for ``plait top``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from plait.telemetry.metrics import ENVIRONMENT, GROUP_SEPARATOR, METADATA_KEY, PEER_HEADER, SOURCE_GROUP_LABELS

RUNTIME_KEY = "plait.tap"  # percent of requests the tap logger sends: 0 unless a session taps the proxy
RUNTIME_LAYER = "plait-tap"  # the RTDS resource (and layer) name every proxy subscribes to
RUNTIME_TYPE = "type.googleapis.com/envoy.service.runtime.v3.Runtime"
GRPC_LOGGER = "envoy.access_loggers.http_grpc"
GRPC_CONFIG = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
LOG_NAMES = {"in": "plait-tap-inbound", "out": "plait-tap-outbound"}  # the ALS log_name: the event's side
FLUSH_INTERVAL = "0.2s"  # Envoy's buffer_flush_interval: events reach the control plane within it
TLS_MATCH = "envoy.transport_socket_match"  # the EDS endpoint metadata auto-mTLS matches on
TARGET_KINDS = {
    "deploy": "deployment",
    "deployment": "deployment",
    "po": "pod",
    "pod": "pod",
    "ns": "namespace",
    "namespace": "namespace",
}
SERVICE_KINDS = ("svc", "service")  # for --to only
# A Deployment's pods: NAME-N in the local mesh, NAME-<pod-template-hash>-<5> on Kubernetes
_POD_SUFFIX = re.compile(r"-(\d+|[a-z0-9]{5,10}-[a-z0-9]{5})")


class TapError(ValueError):
    """A tap request that cannot be served, said for people."""


def _environment_tag(tag: str, field: str) -> dict:
    return {"tag": tag, "environment": {"name": ENVIRONMENT[field], "default_value": ""}}


PEER_TAG = "source_peer"  # the caller sidecar's peer header, whose fields are SOURCE_GROUP_LABELS (`metrics`)


def _peer_fields(tags: dict[str, str]) -> dict[str, str]:
    """source_workload and source_namespace from the peer header's fields (none without it)."""
    if PEER_TAG not in tags:
        return {}
    fields = dict(zip(SOURCE_GROUP_LABELS, tags[PEER_TAG].split(GROUP_SEPARATOR)))
    return {
        "source_workload": fields.get("source_workload", ""),
        "source_namespace": fields.get("source_workload_namespace", ""),
    }


def _host_tag(tag: str, key: str, field: str) -> dict:
    path = {"key": key, "path": [{"key": field}]}
    return {"tag": tag, "metadata": {"kind": {"host": {}}, "metadata_key": path, "default_value": ""}}


def tap_access_log(side: str, cluster: str) -> dict:
    """Envoy's gRPC access logger of one side (``in``: a sidecar's inbound HCMs; ``out``: its
    outbound ones and gateways), sending to the control plane (the bootstrap's `cluster`,
    ``xds-grpc``) only while the runtime key ``plait.tap`` is on. Custom tags name the workloads at
    both ends (the proxy's own from its environment, the peer's from the endpoint's metadata or,
    inbound, from the caller sidecar's peer header) and, outbound, whether the endpoint speaks
    mutual TLS."""
    if side == "in":
        tags = [
            {"tag": PEER_TAG, "request_header": {"name": PEER_HEADER, "default_value": ""}},
            _environment_tag("destination_workload", "workload"),
            _environment_tag("destination_namespace", "workload_namespace"),
        ]
    else:
        tags = [
            _environment_tag("source_workload", "workload"),
            _environment_tag("source_namespace", "workload_namespace"),
            _host_tag("destination_workload", METADATA_KEY, "workload"),
            _host_tag("destination_namespace", METADATA_KEY, "workload_namespace"),
            _host_tag("tls_mode", TLS_MATCH, "tlsMode"),
        ]
    common = {
        "log_name": LOG_NAMES[side],
        "transport_api_version": "V3",
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
        "buffer_flush_interval": FLUSH_INTERVAL,
        "custom_tags": tags,
    }
    runtime = {"runtime_key": RUNTIME_KEY, "percent_sampled": {"numerator": 0, "denominator": "HUNDRED"}}
    return {
        "name": GRPC_LOGGER,
        "filter": {"runtime_filter": runtime},
        "typed_config": {"@type": GRPC_CONFIG, "common_config": common},
    }


def rtds_layer(grpc_service: dict) -> dict:
    """The bootstrap's runtime layer fed by the control plane's RuntimeDiscoveryService over
    `grpc_service` (the ADS stream's: same cluster, same token). A proxy starts without waiting
    for it long: the key is off until told otherwise."""
    source = {
        "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [grpc_service]},
        "resource_api_version": "V3",
        "initial_fetch_timeout": "1s",
    }
    return {"name": RUNTIME_LAYER, "rtds_layer": {"name": RUNTIME_LAYER, "rtds_config": source}}


def runtime_layer(tapped: bool) -> dict:
    """The RTDS resource a proxy is sent: ``plait.tap`` at 100 % while a session taps it, else 0."""
    return {"name": RUNTIME_LAYER, "layer": {RUNTIME_KEY: 100 if tapped else 0}}


# ------------------------------------------------------------------ what is tapped


def pod_of_node(node_id: str) -> tuple[str, str]:
    """The pod and namespace of an Envoy node id (Istio's ``kind~ip~pod.namespace~domain``)."""
    parts = node_id.split("~")
    pod, _, namespace = parts[2].partition(".") if len(parts) == 4 else ("", "", "")
    if not pod or not namespace:
        raise TapError(f"node id {node_id!r} is not kind~ip~pod.namespace~domain")
    return pod, namespace


@dataclass(frozen=True)
class Target:
    """``deploy/NAME``, ``po/NAME`` or ``ns/NS`` in a namespace."""

    kind: str  # deployment, pod or namespace
    name: str
    namespace: str

    @classmethod
    def parse(cls, text: str, namespace: str = "default", *, services: bool = False) -> Target:
        kind, _, name = text.partition("/")
        kinds = {**TARGET_KINDS, **dict.fromkeys(SERVICE_KINDS, "service")} if services else TARGET_KINDS
        if kind not in kinds or not name:
            shown = "deploy/NAME, po/NAME, ns/NS" + (", svc/NAME" if services else "")
            raise TapError(f"cannot tap {text!r}: expected one of {shown}")
        kind = kinds[kind]
        return cls(kind, name, name if kind == "namespace" else namespace)

    def matches(self, pod: str, namespace: str) -> bool:
        """Whether the pod `pod` in `namespace` is one of this target's (a service matches nothing here)."""
        if namespace != self.namespace:
            return False
        if self.kind == "namespace":
            return True
        if self.kind == "pod":
            return pod == self.name
        if self.kind == "deployment":
            return pod == self.name or (
                pod.startswith(self.name) and _POD_SUFFIX.fullmatch(pod, len(self.name)) is not None
            )
        return False

    def __str__(self) -> str:
        short = {"deployment": "deploy", "pod": "po", "namespace": "ns", "service": "svc"}[self.kind]
        return f"{short}/{self.name}"


@dataclass(frozen=True)
class TapFilter:
    """What of a tapped proxy's traffic a session shows: a path prefix, a method, a destination."""

    path: str = ""
    method: str = ""
    to: Target | None = None

    def accepts(self, event: Mapping) -> bool:
        if self.path and not str(event.get("path", "")).startswith(self.path):
            return False
        if self.method and str(event.get("method", "")).upper() != self.method.upper():
            return False
        return self.to is None or _is_destination(self.to, event)


def _is_destination(to: Target, event: Mapping) -> bool:
    if to.kind == "service":
        host = str(event.get("authority", "")).partition(":")[0]
        parts = host.split(".")
        # a short name is the caller's namespace's service (the tapped pod's, for its outbound calls)
        namespace = parts[1] if len(parts) > 1 else str(event.get("namespace", ""))
        same_namespace = namespace == to.namespace
        return parts[0] == to.name and same_namespace
    workload = str(event.get("dst_workload", ""))
    namespace = str(event.get("dst_namespace", "") or to.namespace)
    return bool(workload) and to.matches(workload, namespace)


# ------------------------------------------------------------------ Envoy's entry → event


def _address(address) -> str:
    socket = address.socket_address
    return f"{socket.address}:{socket.port_value}" if socket.address else ""


def _micros(duration, present: bool) -> int | None:
    return duration.seconds * 1_000_000 + duration.nanos // 1000 if present else None


def event_from_entry(entry, side: str, pod: str, namespace: str) -> dict:
    """One ``HTTPAccessLogEntry`` from the proxy of `pod` (`side`: ``in`` or ``out``) as a tap event."""
    common, request, response = entry.common_properties, entry.request, entry.response
    tags = dict(common.custom_tags)
    tags.update(_peer_fields(tags))
    tls = common.HasField("tls_properties") if side == "in" else tags.get("tls_mode") == "istio"
    dst = _address(common.downstream_local_address if side == "in" else common.upstream_remote_address)
    return {
        "proxy": side,
        "pod": pod,
        "namespace": namespace,
        "id": request.request_id or common.stream_id,
        "src": _address(common.downstream_direct_remote_address) or _address(common.downstream_remote_address),
        "dst": dst,
        "tls": tls,
        "src_workload": tags.get("source_workload", ""),
        "src_namespace": tags.get("source_namespace", ""),
        "dst_workload": tags.get("destination_workload", ""),
        "dst_namespace": tags.get("destination_namespace", ""),
        "method": _METHODS.get(request.request_method, ""),
        "scheme": request.scheme,
        "authority": request.authority,
        "path": request.original_path or request.path,
        "status": response.response_code.value if response.HasField("response_code") else 0,
        "latency_us": _micros(
            common.time_to_first_downstream_tx_byte, common.HasField("time_to_first_downstream_tx_byte")
        ),
        "duration_us": _micros(
            common.time_to_last_downstream_tx_byte, common.HasField("time_to_last_downstream_tx_byte")
        ),
        "response_bytes": response.response_body_bytes,
        "response_flags": _flags(common.response_flags),
        "start": common.start_time.ToJsonString() if common.HasField("start_time") else "",
    }


# envoy.config.core.v3.RequestMethod's numbers (METHOD_UNSPECIFIED is 0)
_METHODS = {1: "GET", 2: "HEAD", 3: "POST", 4: "PUT", 5: "DELETE", 6: "CONNECT", 7: "OPTIONS", 8: "TRACE", 9: "PATCH"}


def _flags(flags) -> str:
    """The response flags Envoy set, by their field names (``no_healthy_upstream``…), comma-separated."""
    return ",".join(field.name for field, value in flags.ListFields() if value is True)


# ------------------------------------------------------------------ event → linkerd's lines


def _fields(event: Mapping, request_id: str) -> str:
    return (
        f"id={request_id} proxy={event['proxy']} src={event['src'] or '-'} dst={event['dst'] or '-'} "
        f"tls={'true' if event['tls'] else 'false'}"
    )


def tap_lines(event: Mapping) -> list[str]:
    """linkerd's three lines for one finished request: ``req`` (what was asked), ``rsp`` (the status and
    the time to the response's first byte) and ``end`` (the time to its last byte and the body's length).
    A request that got no response (reset) has no ``rsp`` line."""
    fields = _fields(event, event["id"])
    lines = [
        f"req {fields} :method={event['method']} :authority={event['authority']} :path={event['path']}",
    ]
    if event.get("status"):
        latency = event.get("latency_us")
        lines.append(f"rsp {fields} :status={event['status']} latency={latency if latency is not None else '-'}µs")
    duration = event.get("duration_us")
    lines.append(
        f"end {fields} duration={duration if duration is not None else '-'}µs response-length={event['response_bytes']}B"
    )
    return lines
