"""The agent's DNS proxy (Istio's ``ISTIO_META_DNS_CAPTURE``): UDP and TCP on 127.0.0.1:15053.

The pod's DNS queries (port 53, captured by ``plait iptables --redirect-dns``) arrive here. Names in
the mesh's name table are answered at once from memory (`dnslookup.LookupTable`); everything else
is forwarded, over the transport it came on, to the upstream nameservers from the pod's
/etc/resolv.conf, one after the other, each with a timeout; SERVFAIL when none answers. The
agent's own upstream queries leave as the proxy user (uid 1337), which the capture rules skip.
Because table names never wait on the upstream, mesh names keep resolving when cluster DNS is slow
or down.

`NameTableFollower` keeps the table current: it long-polls the proxy's table from the control
plane's HTTP API (``/api/v1/nametable?proxy=ID&wait=30`` with the last ETag: the control plane
answers as soon as the table changes, or 304 after 30 s), and asks again at once. A failed fetch
keeps the last table and is retried after a pause; nothing here ever stops the agent.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message

from plait.agent.dnslookup import LookupTable, ResolvConf, servfail
from plait.model import Proxy
from plait.xds.nametable import NameTable, from_json

log = logging.getLogger("plait.agent.dns")
DNS_PROXY_PORT = 15053
UPSTREAM_TIMEOUT = 2.0  # seconds for each upstream nameserver
RETRY_SECONDS = 2.0  # pause after a failed name-table fetch
LONG_POLL_SECONDS = 30  # how long the control plane may hold a name-table request


@dataclass(frozen=True)
class DnsSettings:
    """The agent's DNS proxy: where it listens, its upstreams, and where its name table comes from."""

    resolv: ResolvConf  # upstream nameservers and search domains (the pod's /etc/resolv.conf)
    api: str  # the control plane's HTTP API, e.g. http://istiod.istio-system.svc:15014
    address: str = "127.0.0.1"
    port: int = DNS_PROXY_PORT
    auto_allocate: bool = False  # ask for VIPs for ServiceEntry hosts without addresses
    token_file: Path | None = None  # the pod's token, sent as Authorization: Bearer


async def start_dns(settings: DnsSettings, proxy: Proxy) -> tuple[DnsProxy, asyncio.Task]:
    """Serve DNS and keep the name table current; cancel the task and stop the proxy to end both."""
    server = DnsProxy(settings.resolv, proxy.namespace)
    await server.start(settings.address, settings.port)
    follower = NameTableFollower(
        settings.api, proxy, server.update, token_file=settings.token_file, auto_allocate=settings.auto_allocate
    )
    return server, asyncio.create_task(follower.run(), name="name-table")


class DnsProxy:
    """Answers from `self.table`, forwards the rest; `update(table)` swaps the table atomically."""

    def __init__(self, resolv: ResolvConf, proxy_namespace: str, *, upstream_timeout: float = UPSTREAM_TIMEOUT):
        self.resolv, self.proxy_namespace, self.upstream_timeout = resolv, proxy_namespace, upstream_timeout
        self.table = LookupTable(NameTable(), proxy_namespace, resolv.search)
        self._servers: list = []
        self.port = 0

    def update(self, table: NameTable) -> None:
        self.table = LookupTable(table, self.proxy_namespace, self.resolv.search)
        log.info("DNS name table: %d host(s)", len(table.table))

    async def start(self, address: str, port: int) -> None:
        self._servers = await serve_udp_and_tcp(address, port, lambda: _Udp(self), self._serve_tcp)
        self.port = self._servers[0].get_extra_info("sockname")[1]
        log.info("DNS proxy on %s:%d (UDP and TCP), upstream %s", address, self.port, self.resolv.nameservers or "none")

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()

    async def resolve(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """The response to one query's bytes; None for bytes that are not a DNS query (dropped)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = self.table.answer(query) or await self._forward(query, tcp=tcp)
        try:
            return response.to_wire(max_size=65535 if tcp else _udp_limit(query))
        except dns.exception.TooBig:  # too big for UDP: say so (TC); the client asks again over TCP
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC | (response.flags & dns.flags.AA)
            return truncated.to_wire()

    async def _forward(self, query: dns.message.Message, *, tcp: bool) -> dns.message.Message:
        ask = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
        for address, port in self.resolv.nameservers:
            try:
                return await ask(query, address, timeout=self.upstream_timeout, port=port)
            except (dns.exception.DNSException, OSError) as exc:
                log.warning("upstream %s:%d failed for %s: %s", address, port, query.question[0].name, exc)
        return servfail(query)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                response = await self.resolve(await reader.readexactly(length), tcp=True)
                if response is None:
                    break
                writer.write(struct.pack("!H", len(response)) + response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, proxy: DnsProxy):
        self.proxy = proxy
        self.transport: asyncio.DatagramTransport | None = None
        self._replies: set[asyncio.Task] = set()  # held until done (the loop keeps only weak references)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        task = asyncio.get_running_loop().create_task(self._reply(data, addr))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _reply(self, data: bytes, addr) -> None:
        response = await self.proxy.resolve(data, tcp=False)
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)


async def serve_udp_and_tcp(address: str, port: int, udp_protocol, tcp_handler, attempts: int = 20) -> list:
    """A UDP endpoint and a TCP server on the same port: [udp transport, tcp server]. Port 0 picks a
    free one, trying again when the UDP port the system chose is taken for TCP."""
    loop = asyncio.get_running_loop()
    for attempt in range(attempts):
        transport, _ = await loop.create_datagram_endpoint(udp_protocol, local_addr=(address, port))
        chosen = transport.get_extra_info("sockname")[1]
        try:
            return [transport, await asyncio.start_server(tcp_handler, address, chosen)]
        except OSError:
            transport.close()
            if port or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _udp_limit(query: dns.message.Message) -> int:
    """512 bytes, or the client's EDNS buffer size (beyond it a response is truncated, as a server must)."""
    return max(512, query.payload) if query.edns >= 0 else 512


class NameTableFollower:
    """Polls the control plane for `proxy`'s name table and hands each new one to `on_table`."""

    def __init__(
        self,
        api: str,
        proxy: Proxy,
        on_table: Callable[[NameTable], None],
        *,
        token_file: Path | None = None,
        auto_allocate: bool = False,
        interval: float = RETRY_SECONDS,
    ):
        self.api, self.proxy, self.on_table = api.rstrip("/"), proxy, on_table
        self.token_file, self.auto_allocate, self.interval = token_file, auto_allocate, interval
        self.etag: str | None = None

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=LONG_POLL_SECONDS + 15)) as session:
            while True:
                if await self.fetch(session) is None:
                    await asyncio.sleep(self.interval)

    async def fetch(self, session: aiohttp.ClientSession) -> bool | None:
        """Fetch once (waiting up to LONG_POLL_SECONDS for a change once there is a table): True when a
        new table was handed over, False when it is unchanged, None on an error (logged; the old table
        stays)."""
        params = {"proxy": self.proxy.id, **({"autoAllocate": "true"} if self.auto_allocate else {})}
        if self.etag:
            params["wait"] = str(LONG_POLL_SECONDS)
        try:
            async with session.get(f"{self.api}/api/v1/nametable", params=params, headers=self._headers()) as response:
                if response.status == 304:
                    return False
                if response.status != 200:
                    log.warning("name table: %s answered %d: %s", self.api, response.status, await response.text())
                    return None
                table = from_json(await response.json())
                self.etag = response.headers.get("ETag")
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.warning("name table from %s: %s (keeping the last one)", self.api, exc or type(exc).__name__)
            return None
        self.on_table(table)
        return True

    def _headers(self) -> dict[str, str]:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        if self.token_file is not None:
            try:
                headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
            except OSError as exc:
                log.warning("cannot read the token file %s: %s", self.token_file, exc.strerror)
        return headers
