"""Small blocking HTTP clients: the control plane's API and an Envoy's admin API.

Used by the CLI, the local mesh runtime and the test harnesses, so it sits below all of them and
imports nothing from plait.

Requests to the control plane carry ``Authorization: Bearer $PLAIT_API_TOKEN`` when that is set:
the API answers anyone on its own host (127.0.0.1, ::1) and others only with its admin token
(the file ``api-token`` in the control plane's state directory).
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

DEFAULT_CONTROL_PLANE = "localhost"
HTTP_PORT = 15014
CONTROL_PLANE = "the control plane"
TOKEN_ENV = "PLAIT_API_TOKEN"


class ClientError(Exception):
    """The server could not be reached or refused the request; `problems` when it said why."""

    def __init__(self, message: str, status: int | None = None, problems: list[dict] | None = None):
        super().__init__(message)
        self.status, self.problems = status, problems or []


def control_plane_url(value: str | None = None) -> str:
    """``--control-plane`` / ``PLAIT_CONTROL_PLANE``: a host, ``host:port`` (the HTTP API port), or a URL."""
    value = value or os.environ.get("PLAIT_CONTROL_PLANE") or DEFAULT_CONTROL_PLANE
    if value.startswith(("http://", "https://")):
        return value.rstrip("/")
    host, _, port = value.partition(":")
    return f"http://{host}:{port or HTTP_PORT}"


@dataclass
class Http:
    base: str
    what: str = CONTROL_PLANE
    timeout: float = 30.0
    token: str | None = None  # sent as a bearer token; the control plane's defaults to $PLAIT_API_TOKEN

    def __post_init__(self) -> None:
        if self.token is None and self.what == CONTROL_PLANE:
            self.token = os.environ.get(TOKEN_ENV, "").strip() or None

    def headers(self, body: bytes | None, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/yaml") -> Any:
        req = urllib.request.Request(
            self.base + path, data=body, method=method, headers=self.headers(body, content_type)
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through HTTP_PROXY
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            data = exc.read()
            try:
                payload = json.loads(data)
            except ValueError:
                payload = {}
            raise ClientError(
                payload.get("error") or f"{self.what} answered {exc.code}", exc.code, payload.get("problems")
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            hint = (
                " Start one with 'plait control-plane', or point --control-plane / PLAIT_CONTROL_PLANE at it"
                if self.what == CONTROL_PLANE
                else ""
            )
            raise ClientError(f"cannot reach {self.what} at {self.base} ({reason}); is it running?{hint}") from None
        return decode(data)

    def get(self, path: str) -> Any:
        return self.request("GET", path)


def decode(data: bytes) -> Any:
    """A response body: None when empty, parsed JSON when it is JSON, else text."""
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")
