"""Access logs as Istio's MeshConfig asks (``accessLogFile``, ``accessLogEncoding``,
``accessLogFormat``) and as the Telemetry API's ``accessLogging`` refines it.

In: the snapshot (its MeshConfig and Telemetries) and a proxy. Out: Envoy's file access logger for
the proxy's client side (outbound, gateways) and server side (inbound), or None: no access log when
``accessLogFile`` is empty and no Telemetry turns it on (Istio's default), or when a Telemetry's
rule says ``disabled``. A Telemetry's ``filter.expression`` becomes Envoy's CEL access-log filter.
The default formats are Istio's exactly (pilot's ``EnvoyTextLogFormat`` and
``EnvoyJSONLogFormatIstio``); a TEXT format of one's own gets the newline Istio adds when it lacks one.
"""

from __future__ import annotations

from typing import Literal

from plait.api.mesh import MeshConfig
from plait.api.telemetry import AccessLogging
from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot
from plait.telemetry.overrides import telemetry_levels

FILE_LOGGER = "envoy.access_loggers.file"
FILE_CONFIG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
CEL_CONFIG = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
DEV_STDOUT = "/dev/stdout"  # Istio's built-in envoy provider without accessLogFile
Side = Literal["CLIENT", "SERVER"]

ISTIO_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
ISTIO_JSON_FORMAT = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}


def log_format(mesh: MeshConfig) -> dict:
    """Envoy's SubstitutionFormatString for the mesh's encoding and format."""
    if mesh.access_log_encoding == "JSON":
        return {"json_format": mesh.json_log_format() or ISTIO_JSON_FORMAT}
    text = mesh.access_log_format or ISTIO_TEXT_FORMAT
    return {"text_format_source": {"inline_string": text if text.endswith("\n") else text + "\n"}}


def access_logging(snapshot: MeshSnapshot, proxy: Proxy, side: Side) -> AccessLogging | None:
    """The Telemetry rule for a proxy's side, as Istio picks it: the most specific Telemetry with
    access logging (one selecting the workload in its namespace, else its namespace's, else the
    root namespace's), and of its rules the first for this side."""
    for candidates in telemetry_levels(snapshot, proxy):
        rules = [rule for t in candidates for rule in t.spec.access_logging]
        if rules:
            return next((rule for rule in rules if rule.applies_to(side)), None)
    return None


def file_access_log(mesh: MeshConfig, rule: AccessLogging | None = None) -> dict | None:
    """The file logger for MeshConfig `mesh` under a Telemetry `rule` (None: the MeshConfig alone)."""
    if (rule is None and not mesh.access_log_file) or (rule is not None and rule.disabled):
        return None
    config = {"@type": FILE_CONFIG, "path": mesh.access_log_file or DEV_STDOUT, "log_format": log_format(mesh)}
    logger: dict = {"name": FILE_LOGGER, "typed_config": config}
    if rule is not None and rule.filter:
        cel = {"name": CEL_FILTER, "typed_config": {"@type": CEL_CONFIG, "expression": rule.filter.expression}}
        logger["filter"] = {"extension_filter": cel}
    return logger


def proxy_access_log(snapshot: MeshSnapshot, proxy: Proxy, side: Side) -> dict | None:
    return file_access_log(snapshot.mesh_config, access_logging(snapshot, proxy, side))
