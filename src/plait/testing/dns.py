"""A fake upstream nameserver for tests: answers every A query with one address, over UDP and TCP.

`FakeNameserver(answer)` runs in the test's event loop; `silent = True` makes it swallow queries
(a slow or dead cluster DNS). ``python -m plait.testing.dns --listen IP:PORT --answer IP`` runs one
as a process (in another network namespace, for the runtime tests). `query` is a small client.
"""

from __future__ import annotations

import argparse
import asyncio
import struct

import dns.asyncquery
import dns.message
import dns.rdatatype
import dns.rrset

from plait.agent.dnsproxy import serve_udp_and_tcp


class FakeNameserver:
    def __init__(self, answer: str):
        self.answer = answer
        self.silent = False
        self.asked: list[str] = []  # names it was asked, in order
        self.port = 0
        self._servers: list = []

    def respond(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        self.asked.append(query.question[0].name.to_text())
        if self.silent:
            return None
        response = dns.message.make_response(query)
        if query.question[0].rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(query.question[0].name, 5, "IN", "A", self.answer))
        return response.to_wire()

    async def start(self, address: str = "127.0.0.1", port: int = 0) -> None:
        self._servers = await serve_udp_and_tcp(address, port, lambda: _Udp(self), self._serve_tcp)
        self.port = self._servers[0].get_extra_info("sockname")[1]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            response = self.respond(await reader.readexactly(length))
            if response is not None:
                writer.write(struct.pack("!H", len(response)) + response)
                await writer.drain()
                return
            await reader.read()  # silent: hold the connection until the client gives up
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: FakeNameserver):
        self.server = server

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        response = self.server.respond(data)
        if response is not None:
            self.transport.sendto(response, addr)


async def query(
    name: str, address: str, port: int, rdtype: str = "A", *, tcp: bool = False, timeout: float = 5.0
) -> dns.message.Message:
    """Ask `address:port` one question over UDP (or TCP) and return the response."""
    ask = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    return await ask(dns.message.make_query(name, rdtype), address, timeout=timeout, port=port)


def addresses(response: dns.message.Message) -> list[str]:
    """The A/AAAA addresses in a response's answer section."""
    return [
        rdata.address
        for rrset in response.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for rdata in rrset
    ]


async def _serve(listen: str, answer: str) -> None:
    host, _, port = listen.rpartition(":")
    server = FakeNameserver(answer)
    await server.start(host, int(port))
    print(f"fake nameserver on {host}:{server.port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:53")
    parser.add_argument("--answer", required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.listen, args.answer))


if __name__ == "__main__":
    main()
