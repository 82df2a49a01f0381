"""A small asyncio client for Envoy's admin API on 127.0.0.1 (no threads, so forking stays safe).

One request per connection (``Connection: close``); bodies come back whole,
whether Envoy sends a Content-Length or chunks. Every call has a timeout and
raises `AdminUnavailable` when Envoy does not answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

DEFAULT_TIMEOUT = 2.0


class AdminUnavailable(Exception):
    """Envoy's admin API did not answer (not started yet, restarting, or gone)."""


class EnvoyAdmin:
    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.host = host
        self.port = port

    async def get(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bytes]:
        return await self.request("GET", path, timeout)

    async def post(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bytes]:
        return await self.request("POST", path, timeout)

    async def request(self, method: str, path: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bytes]:
        """(status, body) of one admin request."""
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(method, path)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            where = f"{self.host}:{self.port}{path.split('?', 1)[0]}"
            raise AdminUnavailable(f"Envoy admin {where}: {exc or type(exc).__name__}") from exc

    async def stats(self, names: list[str]) -> dict[str, int]:
        """Values of these counters/gauges; a stat Envoy does not have yet is left out."""
        pattern = "^(" + "|".join(name.replace(".", r"\.") for name in names) + ")$"
        status, body = await self.get(f"/stats?filter={pattern}")
        if status != 200:
            raise AdminUnavailable(f"Envoy admin /stats answered {status}")
        return parse_stats(body.decode())

    async def _exchange(self, method: str, path: str) -> tuple[int, bytes]:
        status, _, body = await exchange(self.host, self.port, method, path)
        return status, body


async def exchange(
    host: str, port: int, method: str, path: str, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to host:port: (status, response headers in lower case, body). No timeout of
    its own: callers bound it."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
            f"Connection: close\r\nContent-Length: 0\r\n\r\n".encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.split("\r\n")
        found = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        if found.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        elif "content-length" in found:
            body = await reader.readexactly(int(found["content-length"]))
        else:
            body = await reader.read()
        return int(status_line.split()[1]), found, body
    finally:
        writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)  # the CRLF after each chunk
    return b"".join(chunks)


def parse_stats(text: str) -> dict[str, int]:
    """Envoy's ``/stats`` text (``name: value`` lines) → integer stats; histograms are skipped."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out
