"""A minimal HTTP client for tests: one request per connection, never through HTTP_PROXY."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass

REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    elapsed: float  # seconds from sending to the end of the body

    @property
    def backend(self) -> str | None:
        """The name of the backend that answered, or None for Envoy's own replies."""
        try:
            return json.loads(self.body).get("name")
        except (ValueError, AttributeError):
            return None


def http_request(
    address: str,
    port: int,
    target: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    timeout: float = REQUEST_TIMEOUT,
    body: bytes | None = None,
) -> Reply:
    """One request on a new connection; `target` is a path, or an absolute URL for a proxy."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        start = time.monotonic()
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        elapsed = time.monotonic() - start
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body, elapsed)
    finally:
        connection.close()
