"""A tiny HTTP server shared by the Bookinfo apps: routing, one log line per request, clean stop.

Each app describes itself as a list of `Route`s (method, path regex, handler).
`serve` binds ``BIND_ADDRESS:PORT`` (defaults 0.0.0.0:9080), answers with
HTTP/1.1 keep-alive (so a sidecar can pool connections), logs one line per
request on stdout and returns once SIGTERM or SIGINT arrives. In a Kubernetes pod it keeps serving
for `SHUTDOWN_DELAY_SECONDS` (default 5 there, 0 elsewhere) after SIGTERM, as Kubernetes' graceful
termination asks of apps: the pod leaves the Services' endpoints while it is told to stop, and the
proxies calling it learn that a moment later. 5 s is the sidecar's own drain period (Istio's
``terminationDrainDuration``): the sidecar accepts requests that long, so the app answers them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

DEFAULT_PORT = 9080


@dataclass(frozen=True)
class Request:
    """What a handler sees of an incoming request; header lookups ignore case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    params: tuple[str, ...] = ()

    def form(self) -> dict[str, str]:
        """The body as an HTML form (application/x-www-form-urlencoded), first value per field."""
        fields = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[0] for name, values in fields.items()}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """`pattern` must match the whole path; its groups become `Request.params`."""

    method: str
    pattern: str
    handler: Handler


def json_response(payload: object, status: int = 200) -> Response:
    return Response(status, json.dumps(payload).encode(), "application/json")


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode())


def html_response(page: str, status: int = 200) -> Response:
    return Response(status, page.encode(), "text/html; charset=utf-8")


def redirect(location: str, cookies: tuple[str, ...] = ()) -> Response:
    headers = [("Location", location)] + [("Set-Cookie", cookie) for cookie in cookies]
    return Response(302, b"", headers=headers)


def dispatch(routes: list[Route], request: Request) -> Response:
    """Find the route for the request: 404 if no pattern matches the path, 405 if only the method differs."""
    path_matched = False
    for route in routes:
        match = re.fullmatch(route.pattern, request.path)
        if match is None:
            continue
        if route.method != request.method:
            path_matched = True
            continue
        return route.handler(_with_params(request, match.groups()))
    if path_matched:
        return text_response("method not allowed\n", 405)
    return text_response("not found\n", 404)


def _with_params(request: Request, params: tuple[str, ...]) -> Request:
    return Request(request.method, request.path, request.query, request.headers, request.body, params)


def _handler_class(app_name: str, routes: list[Route]) -> type[BaseHTTPRequestHandler]:
    class BookinfoHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"bookinfo-{app_name}"

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            started = time.monotonic()
            url = urlsplit(self.path)
            request = Request(self.command, url.path, parse_qs(url.query), self.headers, self._body())
            try:
                response = dispatch(routes, request)
            except Exception as error:  # a bug in a handler must not take the server down
                response = text_response(f"internal error: {error!r}\n", 500)
            self._send(response)
            elapsed_ms = (time.monotonic() - started) * 1000
            log(
                app_name,
                f'{self.client_address[0]} "{self.command} {self.path}" {response.status} '
                f"{len(response.body)} {elapsed_ms:.1f}ms",
            )

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                return read_chunked(self.rfile)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, response: Response) -> None:
            self.send_response_only(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, fmt: str, *args: object) -> None:
            log(app_name, f"{self.client_address[0]} {fmt % args}")

    return BookinfoHandler


def read_chunked(stream: BinaryIO) -> bytes:
    """A chunked request body (what a proxy may send when the client gave no Content-Length)."""
    body = bytearray()
    while size := int(stream.readline().split(b";", 1)[0].strip() or b"0", 16):
        body += stream.read(size)
        stream.readline()  # the CRLF after each chunk
    while stream.readline().strip():  # trailer fields, up to the blank line
        pass
    return bytes(body)


def log(app_name: str, line: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {app_name} {line}", flush=True)


def _server_class(address: str) -> type[ThreadingHTTPServer]:
    if ":" not in address:
        return ThreadingHTTPServer
    return type("ThreadingHTTPServerV6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})


def shutdown_delay(environ: dict[str, str]) -> float:
    """Seconds to keep serving after SIGTERM: $SHUTDOWN_DELAY_SECONDS, else 5 in a Kubernetes pod, else 0."""
    default = "5" if environ.get("KUBERNETES_SERVICE_HOST") else "0"
    return float(environ.get("SHUTDOWN_DELAY_SECONDS", default))


def serve(app_name: str, routes: list[Route]) -> None:
    """Serve `routes` on BIND_ADDRESS:PORT until SIGTERM or SIGINT, then close the listening socket."""
    address = os.environ.get("BIND_ADDRESS", "0.0.0.0")
    port = int(os.environ.get("PORT", DEFAULT_PORT))
    server = _server_class(address)((address, port), _handler_class(app_name, routes))

    delay = shutdown_delay(dict(os.environ))

    def stop(signum: int, _frame: object) -> None:
        wait = delay if signum == signal.SIGTERM else 0.0
        log(app_name, f"stopping on signal {signal.Signals(signum).name}" + (f" in {wait:g} s" if wait else ""))
        threading.Thread(target=lambda: (time.sleep(wait), server.shutdown()), daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(app_name, f"listening on http://{address}:{port}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
