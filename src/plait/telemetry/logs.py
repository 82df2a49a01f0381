"""Access logs as Istio's MeshConfig asks: ``accessLogFile``, ``accessLogEncoding``, ``accessLogFormat``.

In: the mesh's `plait.api.mesh.MeshConfig`. Out: Envoy's file access logger for every connection
manager and TCP proxy, or None when ``accessLogFile`` is empty (Istio's default: no access log).
The default formats are Istio's exactly (pilot's ``EnvoyTextLogFormat`` and
``EnvoyJSONLogFormatIstio``); a TEXT format of one's own gets the newline Istio adds when it lacks one.
"""

from __future__ import annotations

from plait.api.mesh import MeshConfig

FILE_LOGGER = "envoy.access_loggers.file"
FILE_CONFIG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

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


def file_access_log(mesh: MeshConfig) -> dict | None:
    if not mesh.access_log_file:
        return None
    config = {"@type": FILE_CONFIG, "path": mesh.access_log_file, "log_format": log_format(mesh)}
    return {"name": FILE_LOGGER, "typed_config": config}
