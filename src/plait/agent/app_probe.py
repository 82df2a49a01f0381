"""The app's own probes, run by the agent for the kubelet (Istio's /app-health on the status port 15020).

The injector rewrites each app container's readiness, liveness and startup probe (and
httpGet/tcpSocket lifecycle hooks) into ``GET /app-health/CONTAINER/readyz`` (``livez``,
``startupz``, …) on the agent, and hands the originals over in ``ISTIO_KUBE_APP_PROBERS``: JSON,
path → ``{"httpGet"|"tcpSocket"|"grpc": …, "timeoutSeconds": N}``. `parse_app_probers` checks that
JSON; `run_prober` performs one probe against the app on the pod's loopback (the agent runs as
uid 1337 and talks to 127.0.0.1, so iptables does not send it through Envoy and STRICT mTLS does
not refuse it), with the kubelet's rules: HTTP(S) 200-399 passes (certificates are not checked;
redirects are not followed), a TCP connect passes, a gRPC health check answering SERVING passes.

Every probe is bounded by its timeoutSeconds (default 1 s, as Kubernetes').
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc

DEFAULT_TIMEOUT = 1.0
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}


class ProberError(ValueError):
    """ISTIO_KUBE_APP_PROBERS is not what the injector writes; the message says where."""


@dataclass(frozen=True)
class AppProber:
    """One original probe: what to check, where, and for how long."""

    kind: str  # httpGet | tcpSocket | grpc
    port: int
    path: str = "/"
    scheme: str = "HTTP"
    host: str | None = None  # the probe's own host; default: the app's address
    headers: tuple[tuple[str, str], ...] = ()
    service: str = ""  # gRPC health service name
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class ProbeResult:
    status: int  # the HTTP status the agent answers with
    detail: str


def parse_app_probers(text: str | None) -> dict[str, AppProber]:
    """ISTIO_KUBE_APP_PROBERS → path → prober; ProberError naming the path and field on bad input."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProberError(f"ISTIO_KUBE_APP_PROBERS is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProberError("ISTIO_KUBE_APP_PROBERS: expected an object, path → probe")
    return {path: _prober(path, spec) for path, spec in raw.items()}


def _prober(path: str, spec: Any) -> AppProber:
    where = f"ISTIO_KUBE_APP_PROBERS[{path!r}]"
    if not path.startswith("/app-health/") or not isinstance(spec, dict):
        raise ProberError(f"{where}: expected a /app-health/CONTAINER/KIND path and an object")
    kinds = [k for k in ("httpGet", "tcpSocket", "grpc") if isinstance(spec.get(k), dict)]
    if len(kinds) != 1:
        raise ProberError(f"{where}: expected exactly one of httpGet, tcpSocket, grpc")
    action = spec[kinds[0]]
    port = action.get("port")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ProberError(f"{where}.{kinds[0]}.port: expected a port number, got {port!r}")
    timeout = spec.get("timeoutSeconds") or DEFAULT_TIMEOUT
    headers = tuple((h.get("name", ""), h.get("value", "")) for h in action.get("httpHeaders") or ())
    return AppProber(
        kind=kinds[0],
        port=port,
        path=action.get("path") or "/",
        scheme=action.get("scheme") or "HTTP",
        host=action.get("host") or None,
        headers=headers,
        service=action.get("service") or "",
        timeout=float(timeout),
    )


async def run_prober(prober: AppProber, app_address: str) -> ProbeResult:
    """Probe the app once; 200 if it passes, else the app's status (HTTP) or 503, with why."""
    host = prober.host or app_address
    try:
        async with asyncio.timeout(prober.timeout):
            if prober.kind == "httpGet":
                return await _http(prober, host)
            if prober.kind == "tcpSocket":
                _, writer = await asyncio.open_connection(host, prober.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return ProbeResult(200, f"tcp {host}:{prober.port} connected")
            return await _grpc(prober, host)
    except TimeoutError:
        return ProbeResult(503, f"{prober.kind} {host}:{prober.port}: no answer in {prober.timeout:g}s")
    except (OSError, aiohttp.ClientError) as exc:
        return ProbeResult(503, f"{prober.kind} {host}:{prober.port}: {exc}")


async def _http(prober: AppProber, host: str) -> ProbeResult:
    scheme = "https" if prober.scheme.upper() == "HTTPS" else "http"
    url = f"{scheme}://{_bracket(host)}:{prober.port}{prober.path}"
    headers = {"User-Agent": "kube-probe/plait", **dict(prober.headers)}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, allow_redirects=False, ssl=False) as response,
    ):
        if 200 <= response.status < 400:
            return ProbeResult(200, f"GET {url}: {response.status}")
        return ProbeResult(response.status, f"GET {url}: {response.status}")


async def _grpc(prober: AppProber, host: str) -> ProbeResult:
    service = prober.service.encode()
    request = b"\x0a" + _varint(len(service)) + service if service else b""
    async with grpc.aio.insecure_channel(f"{_bracket(host)}:{prober.port}") as channel:
        check = channel.unary_unary(HEALTH_CHECK, request_serializer=None, response_deserializer=None)
        try:
            answer = await check(request, timeout=prober.timeout)
        except grpc.aio.AioRpcError as exc:
            return ProbeResult(503, f"grpc health {host}:{prober.port}: {exc.code().name} {exc.details() or ''}")
    if answer == SERVING:
        return ProbeResult(200, f"grpc health {host}:{prober.port}: SERVING")
    return ProbeResult(503, f"grpc health {host}:{prober.port}: not SERVING ({answer.hex() or 'UNKNOWN'})")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
