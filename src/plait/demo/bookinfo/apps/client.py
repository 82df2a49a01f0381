"""Calls from one Bookinfo app to another, made the way Istio's Bookinfo apps make them.

Where a service lives comes from Istio's own environment variables:
``<SERVICE>_HOSTNAME`` (default: the service name, e.g. ``reviews``),
``SERVICES_DOMAIN`` (appended as ``.<domain>`` when set) and
``<SERVICE>_SERVICE_PORT`` (default 9080), giving e.g. ``http://reviews:9080``.

Requests go through `urllib.request`, which honours ``HTTP_PROXY`` and
``NO_PROXY``: in the local mesh's proxy mode that sends them to the pod's
sidecar. Timeouts are per socket operation, like the ``timeout=`` of the
Python ``requests`` library Istio's productpage uses.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message

# Istio's list of tracing headers an app copies from its incoming request to its outgoing ones.
TRACE_HEADERS = (
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "sw8",
)
# Context and session headers Istio's productpage and reviews also copy.
CONTEXT_HEADERS = ("user-agent", "cookie", "authorization", "jwt")


def service_url(service: str) -> str:
    """The base URL of a Bookinfo service, e.g. ``http://ratings:9080``."""
    prefix = service.upper()
    host = os.environ.get(f"{prefix}_HOSTNAME", service)
    domain = os.environ.get("SERVICES_DOMAIN")
    port = os.environ.get(f"{prefix}_SERVICE_PORT", "9080")
    return f"http://{host}{'.' + domain if domain else ''}:{port}"


def forwarded_headers(incoming: Message, names: tuple[str, ...]) -> dict[str, str]:
    """The headers among `names` present on the incoming request, with their values."""
    return {name: incoming[name] for name in names if incoming[name] is not None}


@dataclass(frozen=True)
class Reply:
    """The outcome of a call: `status` is None when no HTTP response came back (refused, timed out)."""

    status: int | None
    payload: object = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.payload is not None


def get_json(url: str, headers: dict[str, str], timeout: float) -> Reply:
    """GET `url` and decode its JSON body; never raises for network or HTTP errors."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _decoded(response.status, response.read())
    except urllib.error.HTTPError as error:  # an HTTP response, but not a 2xx/3xx one
        error.close()
        return Reply(error.code, None, f"HTTP {error.code}")
    except (OSError, http.client.HTTPException, ValueError) as error:  # refused, timed out, reset, bad URL
        return Reply(None, None, f"{type(error).__name__}: {error}")


def _decoded(status: int, body: bytes) -> Reply:
    try:
        return Reply(status, json.loads(body))
    except ValueError:
        return Reply(status, None, "response is not JSON")
