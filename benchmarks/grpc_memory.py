"""What the gRPC server itself holds per connection: the floor under the control plane's memory per proxy.

Run:  .venv/bin/python benchmarks/grpc_memory.py [--connections 2000] [--out benchmarks/results/grpc-memory.json]
          (about 2 minutes; the ``h2`` rows need the h2 package: ``.venv/bin/pip install h2``)

A server process and two client processes on 127.0.0.1. Each client connection (a grpc.aio channel
of its own, as each Envoy has) opens one bidirectional stream and sends `count` requests of `size`
bytes, waiting for a 2-byte answer to each, then stays open. The server drops every request once
answered (requests come boxed and are taken out, as plait's ADS server does: gRPC keeps the last
object it handed over). Figure: the server's RSS growth per connection, once all are open and 3 s
have passed.

* ``grpcio``: a grpc.aio server with the control plane's server options (`PENDING_STREAMS`).
  Cases: 100 bytes once (an idle xDS connection's floor), 75 KB once, twice and four times (a SotW
  EDS request names every cluster the proxy holds: ~75 KB for 1,200 clusters, and comes again with
  every acknowledgement).
* ``h2``: the same traffic answered by an asyncio server speaking HTTP/2 with the h2 library (gRPC's
  framing by hand, no flow-control tuning): what a Python HTTP/2 stack other than gRPC's core holds.

Reports only; asserts nothing. Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import struct
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
from common import machine, usage

from plait.testing.live import free_port
from plait.xds.server import PENDING_STREAMS, boxed

METHOD = "/plait.bench.Echo/Stream"
ANSWER = b"ok"
CASES = [(100, 1), (75_000, 1), (75_000, 2), (75_000, 4)]
CLIENT_PROCESSES = 2


# ------------------------------------------------------------------ servers


def grpcio_server(port: int) -> None:
    async def stream(requests, _context):
        async for received in requests:
            received.take()
            yield ANSWER

    async def main() -> None:
        handler = grpc.method_handlers_generic_handler(
            METHOD.split("/")[1],
            {METHOD.split("/")[2]: grpc.stream_stream_rpc_method_handler(stream, request_deserializer=boxed(bytes))},
        )
        server = grpc.aio.server(options=PENDING_STREAMS)
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def h2_server(port: int) -> None:
    import h2.config
    import h2.connection
    import h2.events

    config = h2.config.H2Configuration(client_side=False, header_encoding=None)
    message = b"\0" + struct.pack(">I", len(ANSWER)) + ANSWER

    class Connection(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport, self.h2, self.pending = transport, h2.connection.H2Connection(config=config), {}
            self.h2.initiate_connection()
            transport.write(self.h2.data_to_send())

        def data_received(self, data: bytes) -> None:
            for event in self.h2.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    self.pending[event.stream_id] = b""
                    self.h2.send_headers(
                        event.stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")]
                    )
                elif isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    buffered = self.pending[event.stream_id] + event.data
                    while len(buffered) >= 5 and len(buffered) >= (end := 5 + struct.unpack(">I", buffered[1:5])[0]):
                        buffered = buffered[end:]  # one whole gRPC message: answer it
                        self.h2.send_data(event.stream_id, message)
                    self.pending[event.stream_id] = buffered
                elif isinstance(event, h2.events.StreamEnded):
                    self.h2.send_headers(event.stream_id, [(b"grpc-status", b"0")], end_stream=True)
                elif isinstance(event, h2.events.StreamReset):
                    self.pending.pop(event.stream_id, None)
            if out := self.h2.data_to_send():
                self.transport.write(out)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Connection, "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    asyncio.run(main())


SERVERS = {"grpcio": grpcio_server, "h2": h2_server}


# ------------------------------------------------------------------ clients


def clients(port: int, connections: int, size: int, count: int, pipe) -> None:
    async def one(opened: list) -> None:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        call = channel.stream_stream(METHOD)()
        for _ in range(count):
            await call.write(b"x" * size)
            if await call.read() != ANSWER:
                raise RuntimeError("unexpected answer")
        opened.append((channel, call))

    async def main() -> None:
        opened: list = []
        for _ in range(0, connections, 100):
            await asyncio.gather(*(one(opened) for _ in range(min(100, connections - len(opened)))))
        pipe.send(len(opened))
        await asyncio.Event().wait()

    asyncio.run(main())


def measure(server_name: str, connections: int, size: int, count: int) -> dict:
    context = multiprocessing.get_context("spawn")
    port = free_port("127.0.0.1")
    server = context.Process(target=SERVERS[server_name], args=(port,), daemon=True)
    server.start()
    workers = []
    try:
        time.sleep(1.5)
        before = usage(server.pid).rss_mb
        for k in range(CLIENT_PROCESSES):
            ours, theirs = context.Pipe()
            share = connections // CLIENT_PROCESSES + (k < connections % CLIENT_PROCESSES)
            worker = context.Process(target=clients, args=(port, share, size, count, theirs), daemon=True)
            worker.start()
            workers.append((worker, ours))
        opened = 0
        for worker, pipe in workers:
            if not pipe.poll(120):
                raise TimeoutError(f"client process {worker.pid} did not open its connections in 120 s")
            opened += pipe.recv()
        time.sleep(3)
        after = usage(server.pid).rss_mb
    finally:
        for worker, _ in workers:
            worker.kill()
        server.kill()
        server.join()
    return {
        "server": server_name,
        "request_bytes": size,
        "requests": count,
        "connections": opened,
        "per_connection_kb": (after - before) * 1024 / opened,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "grpc-memory.json")
    args = parser.parse_args()
    try:
        import h2  # noqa: F401

        servers = ["grpcio", "h2"]
    except ImportError:
        print("h2 is not installed: only the grpcio rows (.venv/bin/pip install h2 for the others)", file=sys.stderr)
        servers = ["grpcio"]
    rows = []
    for server_name in servers:
        for size, count in CASES:
            row = measure(server_name, args.connections, size, count)
            rows.append(row)
            print(f"{server_name:7} {size:>7} B × {count}: {row['per_connection_kb']:6.1f} KB per connection")
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "grpc_memory",
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
