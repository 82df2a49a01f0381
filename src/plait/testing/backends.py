"""Loopback backends that tell who answered: HTTP servers and a TCP banner/echo server, in threads.

Flows in: a name, a 127.x.y.z address and a port, and the behaviour to show
(a status, "fail the first N requests", a delay). Flows out: answers that name
the backend, and a record of what it received (`HttpBackend.requests`,
`TcpBackend.connections`) for tests to assert on. `FixedHttpServer` stands in for a
server that answers one document (a JWKS, an API's answer, Envoy's stats): every
GET gets it, and the paths asked are kept.

`HttpBackend` answers every request with JSON ``{"name", "method", "path",
"headers"}`` (header names lower-cased) over HTTP/1.1 keep-alive. `TcpBackend`
sends ``<name>\\n`` on connect, then echoes what it receives. Both are context
managers: entering binds and serves in a daemon thread, leaving stops serving
and closes the socket. A request being delayed does not hold up `stop`.
Behaviour may be changed while serving; a lock guards it and the records.

`loopback_subnet()` hands out a ``127.0.N`` prefix that no other process using
it holds (an flock per prefix), so test runs side by side do not collide;
`service_yaml` writes the Kubernetes Service and WorkloadEntries that put
backends behind a service name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socketserver
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

CONNECTION_TIMEOUT = 30.0  # an idle keep-alive connection's thread ends after this


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class _Server:
    """Serve a socketserver in a daemon thread; stop it cleanly."""

    def __init__(self, server: socketserver.BaseServer):
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _ThreadingHTTPServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class _ThreadingTCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _Backend:
    """A server run in a thread while the backend is entered as a context manager."""

    server_class: type[socketserver.BaseServer]
    address: str
    port: int
    _server: _Server | None = None

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        raise NotImplementedError

    def __enter__(self):
        self._server = _Server(self.server_class((self.address, self.port), self._handler()))
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server:
            self._server.stop()
            self._server = None


class HttpBackend(_Backend):
    """An HTTP server at ``address:port`` that answers with its own name.

    `status`: the answer's status; `fail_first`: how many first requests get
    `fail_status` instead; `delay`: seconds to wait before answering.
    """

    server_class = _ThreadingHTTPServer

    def __init__(
        self,
        name: str,
        address: str,
        port: int,
        *,
        status: int = 200,
        fail_first: int = 0,
        fail_status: int = 503,
        delay: float = 0.0,
    ):
        self.name, self.address, self.port = name, address, port
        self.status, self.fail_first, self.fail_status, self.delay = status, fail_first, fail_status, delay
        self.requests: list[ReceivedRequest] = []
        self.lock = threading.Lock()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def reset(self) -> None:
        """Forget the requests received so far (`fail_first` counts from here again)."""
        with self.lock:
            self.requests.clear()

    def _record(self, request: ReceivedRequest) -> tuple[int, float]:
        """Keep `request`; the status and delay it gets."""
        with self.lock:
            self.requests.append(request)
            failing = len(self.requests) <= self.fail_first
            return (self.fail_status if failing else self.status), self.delay

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = CONNECTION_TIMEOUT
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers: dict[str, str] = {}
                for k, v in self.headers.items():  # a repeated header: its values joined with ",", as HTTP allows
                    headers[k.lower()] = f"{headers[k.lower()]},{v}" if k.lower() in headers else v
                status, delay = backend._record(ReceivedRequest(self.command, self.path, headers, body))
                if delay:
                    time.sleep(delay)
                payload = json.dumps(
                    {"name": backend.name, "method": self.command, "path": self.path, "headers": headers}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
                pass

        return Handler


class TcpBackend(_Backend):
    """A TCP server at ``address:port`` that sends ``<name>\\n`` on connect, then echoes."""

    server_class = _ThreadingTCPServer

    def __init__(self, name: str, address: str, port: int):
        self.name, self.address, self.port = name, address, port
        self.connections = 0
        self.lock = threading.Lock()

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        backend = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with backend.lock:
                    backend.connections += 1
                self.request.settimeout(CONNECTION_TIMEOUT)
                self.request.sendall(f"{backend.name}\n".encode())
                try:
                    while data := self.request.recv(65536):
                        self.request.sendall(data)
                except (TimeoutError, ConnectionError):
                    pass

        return Handler


class FixedHttpServer:
    """An HTTP server on `address` (port chosen) answering every GET with `body` and status 200;
    `paths` are the paths asked, in order. A context manager, as the backends above."""

    def __init__(self, body: str, content_type: str = "text/plain", address: str = "127.0.0.1"):
        data, paths = body.encode(), []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                paths.append(self.path)
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args) -> None:
                pass

        self.paths: list[str] = paths
        self.httpd = ThreadingHTTPServer((address, 0), Handler)
        self.address, self.port = address, self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FixedHttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


SUBNET_RANGE = range(128, 255)  # 127.0.N: kept clear of the low numbers people pick by hand
LOCK_DIRECTORY = Path(tempfile.gettempdir()) / "plait-loopback-subnets"


@contextlib.contextmanager
def loopback_subnet() -> Iterator[str]:
    """A ``127.0.N`` prefix held exclusively (across processes) until the block ends."""
    LOCK_DIRECTORY.mkdir(exist_ok=True)
    candidates = list(SUBNET_RANGE)
    random.shuffle(candidates)
    for n in candidates:
        fd = os.open(LOCK_DIRECTORY / f"127.0.{n}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield f"127.0.{n}"
        finally:
            os.close(fd)  # closing releases the lock
        return
    raise RuntimeError(f"every 127.0.N subnet in {SUBNET_RANGE} is in use")


def service_yaml(
    service: str,
    port: int,
    versions: Mapping[str, HttpBackend | TcpBackend],
    *,
    port_name: str = "http",
    namespace: str = "default",
) -> str:
    """A Kubernetes Service (selector ``app: <service>``) and one WorkloadEntry per backend.

    Each WorkloadEntry is ``<service>-<version>``, labelled ``app`` and ``version``, at the
    backend's address, its port given by the ``ports: {<port_name>: <backend port>}`` map.
    """
    documents: list[dict] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service, "namespace": namespace},
            "spec": {"selector": {"app": service}, "ports": [{"name": port_name, "port": port}]},
        }
    ]
    for version, backend in versions.items():
        documents.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "WorkloadEntry",
                "metadata": {"name": f"{service}-{version}", "namespace": namespace},
                "spec": {
                    "address": backend.address,
                    "labels": {"app": service, "version": version},
                    "ports": {port_name: backend.port},
                },
            }
        )
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in documents)
