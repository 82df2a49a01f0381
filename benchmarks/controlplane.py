"""Control-plane benchmark: `plait control-plane` serving the synthetic 1,000-service mesh to
2,000 simulated proxies, then to real Envoys run by `plait agent`.

Run:  .venv/bin/python benchmarks/controlplane.py [--services 1000] [--proxies 2000] [--client-processes 2]
          [--envoys 20] [--envoy-xds sotw|delta] [--debounce 0ms] [--repeat 3] [--only SCENARIO ...]
          [--out benchmarks/results/controlplane.json]        (about 25 minutes with the defaults)

Only public interfaces are used: the control plane is a real process
(`plait.testing.live.ControlPlaneProcess`) whose config directory holds the mesh as
YAML files (one per namespace); the change is made through its HTTP API (what
`plait apply` calls); its state is read from /debug/syncz and /metrics, its memory
and CPU from /proc. Each repeat runs, in this order:

* ``sotw``, ``delta``, ``sotw_scoped``, ``delta_scoped``: N simulated proxies
  (`plait.testing.ads_client.AdsClient`, keep_resources=False, each on its own TCP
  connection), the sidecars of the first N workloads taken service by service (so every
  namespace gets its share), spread over a few client processes, connect at once (a
  connect storm). Figures: per proxy, the time from the start of the storm until it is
  synced (clients' own view): median, p99, all (the last), and last / median (fairness:
  no proxy starved); then /debug/syncz's view, polled once they all are; the CPU the
  client processes used meanwhile (they share the cores with the control plane). Then
  svc-0010's VirtualService changes (weights 90/10 → 80/20), which every proxy holding
  svc-0010's routes sees: all of them on SotW; on delta (automatic scoping: virtual
  hosts one by one, VHDS) those whose workload serves, called or may call it, as the
  others fetch its virtual host on their first call; with a Sidecar per namespace (its
  own namespace + istio-system) only those of svc-0010's namespace. Each client notes when it ACKed the new
  version; convergence is measured from the apply call and from its answer, and the
  control plane's own ``plait_xds_convergence_seconds`` for that update is read back.
* ``memory_sotw``, ``memory_delta``: a fresh control plane, N/5 proxies, then the
  rest; per-proxy memory is the slope of settled RSS between the two counts. Then an
  endpoint of svc-0001 changes (its ``version`` label), so every proxy is sent that
  service's endpoints and acknowledges them (on SotW, an EDS request naming every
  cluster it holds); what that adds per proxy, once all are synced again and settled;
  and the same after 40 such changes (a long-running control plane's history).
* ``memory_floor_sotw``, ``memory_floor_delta``: the same slope for a bare grpc.aio server
  with the control plane's server options that answers each first request with an empty
  response (`floor_server`): what gRPC holds per proxy (its connection and stream), the
  floor below plait's own figure.
* ``envoys``: real Envoys, each run by ``plait agent --mode proxy`` on its own
  127.0.N.x address, started together; time until /debug/syncz shows them all
  SYNCED, and convergence of the same change polled from /debug/syncz; RSS of the
  Envoys, the agents and the control plane.

Prints a table (medians over the repeats, min and max, issue 17's targets) and writes JSON.
Reports only; asserts nothing. Every process is stopped by PID, on errors too.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
from common import machine, usage
from envoy.service.discovery.v3 import discovery_pb2

from plait.model import Proxy
from plait.testing.ads_client import AdsClient, make_node
from plait.testing.backends import loopback_subnet
from plait.testing.live import AgentProcess, ControlPlaneProcess, PlaitProcess, free_port
from plait.testing.synthetic import (
    GATEWAY_NAMESPACE,
    MeshShape,
    mesh_resources,
    mesh_yaml,
    virtual_service_yaml,
    workload_entry_yaml,
)
from plait.xds.server import PENDING_STREAMS

CHANGED_SERVICE = 10  # svc-0010 (namespace mesh-2): its VirtualService's weights change
CHANGED_ENDPOINT_SERVICE = 1  # svc-0001: its last endpoint's version label changes (memory scenarios)
ENDPOINT_CHANGES = 40  # that many times (v3, v4, v3, ...), memory read after the first and the last
CONNECT_TIMEOUT = 180.0
CONVERGE_TIMEOUT = 60.0
UNREACHED_GRACE = 0.5  # after the reached proxies ACKed: how long to watch that no other proxy changes
MAX_ENVOYS = 253  # addresses in one 127.0.N subnet (.1 to .253)
SCENARIOS = (
    "sotw",
    "delta",
    "sotw_scoped",
    "delta_scoped",
    "memory_sotw",
    "memory_floor_sotw",
    "memory_delta",
    "memory_floor_delta",
    "envoys",
)

SIMULATED = ("sotw", "delta", "sotw_scoped", "delta_scoped")
# (scenario, figure, target, unit): issue 17's targets for 1,000 services and 2,000 simulated proxies:
# all synced within 10 s of a connect storm, none starved (the last no later than a few times the
# median: 3 here), a mesh-wide change at p99 ≤ 250 ms from the apply call, ≤ 30 KB per proxy.
TARGETS = [
    *[(s, "sync_all_s", 10.0, "s") for s in SIMULATED],
    *[(s, "sync_max_over_p50", 3.0, "×") for s in SIMULATED],
    *[(s, "convergence_p99_s", 0.25, "s") for s in SIMULATED],
    *[(s, "per_proxy_kb", 30.0, "KB") for s in ("memory_sotw", "memory_delta")],
]


# ------------------------------------------------------------------ measuring processes


def metric(text: str, name: str) -> float:
    """An unlabelled sample from Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def hub_figures(cp: ControlPlaneProcess) -> dict[str, float]:
    text = cp.api.get("/metrics")
    return {
        name: metric(text, f"plait_xds_{name}")
        for name in ("convergence_seconds_sum", "convergence_seconds_count", "push_seconds_sum", "push_seconds_count")
    }


def hub_update(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the control plane itself measured for the update(s) between two looks at /metrics:
    regeneration time, and change → last affected proxy ACKed (Istio's convergence)."""
    return {
        "hub_updates": after["push_seconds_count"] - before["push_seconds_count"],
        "hub_push_s": after["push_seconds_sum"] - before["push_seconds_sum"],
        "hub_convergence_s": after["convergence_seconds_sum"] - before["convergence_seconds_sum"],
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def distribution(prefix: str, seconds: list[float]) -> dict[str, float]:
    return {
        f"{prefix}_p50_s": percentile(seconds, 0.5),
        f"{prefix}_p99_s": percentile(seconds, 0.99),
        f"{prefix}_max_s": max(seconds),
    }


# ------------------------------------------------------------------ the mesh


def write_config_dir(directory: Path, shape: MeshShape, *, scoped: bool) -> Path:
    """The synthetic mesh as a user would keep it: one YAML file per namespace (plus, when
    `scoped`, a Sidecar per mesh namespace importing only itself and istio-system)."""
    by_namespace: dict[str, list[str]] = {}
    for document in mesh_yaml(shape).split("---\n"):
        namespace = re.search(r"namespace: ([\w.-]+)", document).group(1)
        by_namespace.setdefault(namespace, []).append(document)
    if scoped:
        for index in range(shape.namespaces):
            namespace = shape.namespace(index)
            by_namespace[namespace].append(f"""apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: {namespace}}}
spec:
  egress:
  - hosts: ["./*", "{GATEWAY_NAMESPACE}/*"]
""")
    directory.mkdir(parents=True)
    for namespace, documents in by_namespace.items():
        (directory / f"{namespace}.yaml").write_text("---\n".join(documents))
    return directory


def sidecars(shape: MeshShape, count: int) -> list[dict]:
    """The sidecars of `count` workloads: endpoint 0 of every service, then endpoint 1, ...
    (Proxy fields, labels as a plain dict so they can be sent to another process)."""
    entries = {r.name: r for r in mesh_resources(shape) if r.kind == "WorkloadEntry"}
    if count > shape.services * shape.endpoints_per_service:
        raise SystemExit(
            f"--proxies {count}: the mesh has only {shape.services * shape.endpoints_per_service} workloads"
        )
    out = []
    for i in range(count):
        endpoint, service = divmod(i, shape.services)
        proxy = Proxy.from_workload_entry(entries[shape.workload_name(service, endpoint)])
        out.append(
            {
                "kind": proxy.kind,
                "ip": proxy.ip,
                "name": proxy.name,
                "namespace": proxy.namespace,
                "labels": dict(proxy.labels),
                "mode": proxy.mode,
                "service_account": proxy.service_account,
            }
        )
    return out


def change_endpoint(cp: ControlPlaneProcess, shape: MeshShape, *, version: str) -> None:
    """Apply svc-0001's last WorkloadEntry with this version label: every proxy gets new endpoints."""
    last = shape.endpoints_per_service - 1
    result = cp.apply(workload_entry_yaml(shape, CHANGED_ENDPOINT_SERVICE, last, version=version))
    if not result.get("updated"):
        raise RuntimeError(f"the endpoint change was not applied: {result}")


def change_virtual_service(cp: ControlPlaneProcess, shape: MeshShape) -> tuple[float, float]:
    """Apply svc-0010's VirtualService with new weights; (monotonic time of the call, of its answer)."""
    text = virtual_service_yaml(shape, CHANGED_SERVICE, v1_weight=80)
    started = time.monotonic()
    result = cp.apply(text)
    answered = time.monotonic()
    if not result.get("updated"):
        raise RuntimeError(f"the VirtualService change was not applied: {result}")
    return started, answered


# ------------------------------------------------------------------ simulated proxies: the client processes


def client_process(pipe, target: str, specs: list[tuple[int, dict]], delta: bool) -> None:
    """A client process: one AdsClient per spec (global index, Proxy fields) on its own event loop,
    driven by commands from the benchmark over `pipe`."""
    asyncio.run(_client_loop(pipe, target, specs, delta))


async def _client_loop(pipe, target: str, specs: list[tuple[int, dict]], delta: bool) -> None:
    clients = {
        i: AdsClient(target, make_node(Proxy(**fields)), delta=delta, keep_resources=False) for i, fields in specs
    }
    namespaces = {i: fields["namespace"] for i, fields in specs}
    loop = asyncio.get_running_loop()
    pipe.send(("ready",))
    try:
        while True:
            try:
                command, *args = await loop.run_in_executor(None, pipe.recv)
            except EOFError:  # the benchmark is gone
                return
            if command == "connect":
                pipe.send(("connected", await _connect(clients, *args)))
            elif command == "watch":
                pipe.send(("watched", await _watch(pipe, clients, namespaces, *args)))
            elif command == "stop":
                return
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)


async def _connect(clients: dict, first: int, end: int, timeout: float) -> dict[int, float | str]:
    """Start clients first..end-1 at once; per client the monotonic time it was synced, or why not."""

    async def synced_at(client) -> float | str:
        t0 = time.monotonic()
        try:
            await client.start()
            await client.wait_synced(timeout)
        except (TimeoutError, ConnectionError, grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            return f"after {time.monotonic() - t0:.1f}s: {type(error).__name__}: {error} {client.error!r}"
        return time.monotonic()

    batch = {i: c for i, c in clients.items() if first <= i < end}
    return dict(zip(batch, await asyncio.gather(*(synced_at(c) for c in batch.values()))))


def holds_route_to(client: AdsClient, host: str) -> bool:
    """Does the client hold the routes of `host`? All of them, unless it is sent virtual hosts one by
    one (a sidecar scoped automatically: VHDS), then only if it holds that host's."""
    vhosts = client.held["vhds"]
    return not vhosts or any(name.rpartition("/")[2].startswith(f"{host}:") for name in vhosts)


async def _watch(pipe, clients: dict, namespaces: dict, reached: list[str] | None, host: str, timeout: float) -> dict:
    """Note what every connected client holds, say "armed", then wait for the clients in `reached`
    namespaces (all when None) that hold `host`'s routes to ACK something new; the others must not change."""
    live = {i: c for i, c in clients.items() if c.versions}
    before = {i: dict(c.versions) for i, c in live.items()}
    expected = [i for i in live if (reached is None or namespaces[i] in reached) and holds_route_to(live[i], host)]

    async def acked_at(i: int) -> float | None:
        try:
            await live[i].wait_for(lambda c: c.versions != before[i], timeout)
        except (TimeoutError, ConnectionError):
            return None
        return time.monotonic()

    pipe.send(("armed",))
    acked = dict(zip(expected, await asyncio.gather(*(acked_at(i) for i in expected))))
    await asyncio.sleep(UNREACHED_GRACE)
    unexpected = sum(live[i].versions != before[i] for i in live if i not in acked)
    return {"acked": acked, "unexpected": unexpected}


class ClientFleet:
    """Simulated proxies spread over spawned client processes (round robin), stopped by PID."""

    def __init__(self, target: str, proxies: list[dict], processes: int, *, delta: bool):
        context = multiprocessing.get_context("spawn")
        self.workers = []
        for k in range(processes):
            ours, theirs = context.Pipe()
            specs = [(i, p) for i, p in enumerate(proxies) if i % processes == k]
            process = context.Process(
                target=client_process, args=(theirs, target, specs, delta), daemon=True, name=f"ads-clients-{k}"
            )
            process.start()
            theirs.close()
            self.workers.append((process, ours))

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self.workers]

    def _answers(self, tag: str, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        answers = []
        for process, pipe in self.workers:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"client process {process.pid} did not answer {tag!r} within {timeout:.0f}s")
            got, *payload = pipe.recv()
            if got != tag:
                raise RuntimeError(f"client process {process.pid} answered {got!r}, expected {tag!r}")
            answers.append(payload[0] if payload else None)
        return answers

    def _send(self, *command) -> None:
        for _, pipe in self.workers:
            pipe.send(command)

    def wait_ready(self, timeout: float = 60.0) -> None:
        self._answers("ready", timeout)

    def connect(self, first: int, end: int, timeout: float = CONNECT_TIMEOUT) -> dict[int, float | str]:
        self._send("connect", first, end, timeout)
        merged: dict[int, float | str] = {}
        for answer in self._answers("connected", timeout + 30):
            merged.update(answer)
        return merged

    def arm(self, reached: list[str] | None, host: str, timeout: float = CONVERGE_TIMEOUT) -> None:
        """Every client notes what it holds; afterwards `watched()` says when each ACKed something new."""
        self._send("watch", reached, host, timeout)
        self._answers("armed", 30)

    def watched(self, timeout: float = CONVERGE_TIMEOUT) -> tuple[dict[int, float | None], int]:
        acked, unexpected = {}, 0
        for answer in self._answers("watched", timeout + 30):
            acked.update(answer["acked"])
            unexpected += answer["unexpected"]
        return acked, unexpected

    def stop(self) -> None:
        for process, pipe in self.workers:
            if process.is_alive():
                try:
                    pipe.send(("stop",))
                except OSError:
                    pass
        for process, _ in self.workers:
            process.join(10)
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
                process.join(5)


# ------------------------------------------------------------------ simulated proxies: scenarios


def all_synced_in_syncz(cp: ControlPlaneProcess, count: int) -> bool:
    statuses = cp.api.get("/debug/syncz")
    return sum(all(t["state"] == "SYNCED" for t in s["types"].values()) for s in statuses) >= count


def poll(predicate, timeout: float, what: str, interval: float) -> float:
    """Poll until `predicate()`; the monotonic time it first held. TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def connected_and_synced(fleet: ClientFleet, cp: ControlPlaneProcess, first: int, end: int) -> dict[str, float]:
    """Connect proxies first..end-1 at once (a connect storm): per proxy, seconds from the start of
    the storm until it was synced (clients' view; p50, p99, max = all synced, and max / p50: how much
    longer the last waited than the median); until /debug/syncz shows all end proxies SYNCED (polled
    once the clients are); CPU the client processes used meanwhile."""
    clients_before = sum(usage(pid).cpu_s for pid in fleet.pids)
    started = time.monotonic()
    synced = fleet.connect(first, end)
    clients_cpu = sum(usage(pid).cpu_s for pid in fleet.pids) - clients_before
    failed = {i: r for i, r in synced.items() if isinstance(r, str)}
    if failed:
        raise RuntimeError(f"{len(failed)} simulated proxies never synced, e.g. {sorted(failed.values())[:3]}")
    in_syncz = poll(lambda: all_synced_in_syncz(cp, end), 60, "/debug/syncz to show every proxy SYNCED", 0.1)
    seconds = [t - started for t in synced.values()]
    sync = distribution("sync", seconds)
    return {
        "sync_all_s": sync.pop("sync_max_s"),
        **sync,
        "sync_max_over_p50": max(seconds) / sync["sync_p50_s"],
        "sync_all_syncz_s": in_syncz - started,
        "clients_cpu_connect_s": clients_cpu,
    }


def converged(fleet: ClientFleet, cp: ControlPlaneProcess, shape: MeshShape, reached: list[str] | None) -> dict:
    """Apply the VirtualService change; per reached proxy, seconds until it ACKed the new version.
    Reached: every proxy holding svc-0010's routes (with automatic scoping, those whose workload serves,
    called or may call it: the others fetch its virtual host, new, on their first call)."""
    fleet.arm(reached, shape.hostname(CHANGED_SERVICE))
    metrics_before = hub_figures(cp)
    started, answered = change_virtual_service(cp, shape)
    acked, unexpected = fleet.watched()
    times = [t for t in acked.values() if t is not None]
    if not times:
        raise RuntimeError("no simulated proxy received the VirtualService change")
    figures = {
        "apply_call_s": answered - started,
        "reached": len(times),
        "expected_reached": len(acked),
        "not_reached_in_time": len(acked) - len(times),
        "unexpected_changes": unexpected,
        **distribution("convergence", [t - started for t in times]),
        **distribution("push_convergence", [t - answered for t in times]),
    }
    figures.update(hub_update(metrics_before, hub_figures(cp)))
    return figures


def run_simulated(
    args: argparse.Namespace, shape: MeshShape, proxies: list[dict], workdir: Path, *, delta: bool, scoped: bool
) -> dict:
    config = write_config_dir(workdir / "mesh", shape, scoped=scoped)
    cp = ControlPlaneProcess(config, workdir, debounce=args.debounce)
    fleet = ClientFleet(cp.address, proxies, args.client_processes, delta=delta)
    try:
        cp.start()
        fleet.wait_ready()
        before = usage(cp.pid)
        figures = connected_and_synced(fleet, cp, 0, len(proxies))
        synced = usage(cp.pid)
        time.sleep(args.settle)
        settled = usage(cp.pid)
        reached = [shape.namespace(CHANGED_SERVICE)] if scoped else None
        figures.update(converged(fleet, cp, shape, reached))
        after = usage(cp.pid)
    finally:
        fleet.stop()
        cp.stop()
    return {
        **figures,
        "proxies": len(proxies),
        "cp_rss_before_mb": before.rss_mb,
        "cp_rss_synced_mb": synced.rss_mb,
        "cp_rss_settled_mb": settled.rss_mb,
        "cp_peak_rss_synced_mb": synced.peak_rss_mb,
        "cp_peak_rss_mb": after.peak_rss_mb,
        "cp_cpu_before_s": before.cpu_s,
        "cp_cpu_connect_s": synced.cpu_s - before.cpu_s,
        "cp_cpu_change_s": after.cpu_s - settled.cpu_s,
    }


def run_memory(args: argparse.Namespace, shape: MeshShape, proxies: list[dict], workdir: Path, *, delta: bool) -> dict:
    """RSS with a few proxies and with all of them, each after a settle period; the slope per proxy."""
    few = max(1, len(proxies) // 5)
    config = write_config_dir(workdir / "mesh", shape, scoped=False)
    cp = ControlPlaneProcess(config, workdir, debounce=args.debounce)
    fleet = ClientFleet(cp.address, proxies, args.client_processes, delta=delta)
    try:
        cp.start()
        fleet.wait_ready()
        time.sleep(args.settle)
        empty = usage(cp.pid)
        connected_and_synced(fleet, cp, 0, few)
        time.sleep(args.settle)
        with_few = usage(cp.pid)
        connected_and_synced(fleet, cp, few, len(proxies))
        time.sleep(args.settle)
        with_all = usage(cp.pid)
        changes = []
        for n in range(ENDPOINT_CHANGES):
            change_endpoint(cp, shape, version=f"v{3 + n % 2}")
            time.sleep(1.0)  # the update is pushed after the apply call answers
            poll(lambda: all_synced_in_syncz(cp, len(proxies)), 60, "/debug/syncz to show every proxy SYNCED", 0.2)
            if n in (0, ENDPOINT_CHANGES - 1):
                time.sleep(args.settle)
                changes.append(usage(cp.pid))
        changed, changed_often = changes
    finally:
        fleet.stop()
        cp.stop()
    return {
        "few_proxies": few,
        "proxies": len(proxies),
        "cp_rss_empty_mb": empty.rss_mb,
        "cp_rss_few_mb": with_few.rss_mb,
        "cp_rss_all_mb": with_all.rss_mb,
        "cp_peak_rss_mb": with_all.peak_rss_mb,
        "per_proxy_kb": (with_all.rss_mb - with_few.rss_mb) * 1024 / (len(proxies) - few),
        "per_proxy_raw_kb": (with_all.rss_mb - empty.rss_mb) * 1024 / len(proxies),
        "cp_rss_endpoint_change_mb": changed.rss_mb,
        "per_proxy_endpoint_change_kb": (changed.rss_mb - with_all.rss_mb) * 1024 / len(proxies),
        "cp_rss_endpoint_changes_mb": changed_often.rss_mb,
        "per_proxy_endpoint_changes_kb": (changed_often.rss_mb - with_all.rss_mb) * 1024 / len(proxies),
    }


def floor_server(port: int) -> None:
    """The floor a Python ADS server cannot go below: a grpc.aio server with the control plane's server
    options that answers each client's first request of a type with an empty response of that type
    (enough for a simulated proxy to be synced) and keeps nothing of its own."""
    asyncio.run(_floor(port))


async def _floor(port: int) -> None:
    nonces = itertools.count(1)

    async def answer(requests, _context, response):
        async for request in requests:
            if not request.response_nonce:
                yield response(type_url=request.type_url, nonce=str(next(nonces)))

    def method(request, response):
        return grpc.stream_stream_rpc_method_handler(
            functools.partial(answer, response=response),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )

    handler = grpc.method_handlers_generic_handler(
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        {
            "StreamAggregatedResources": method(discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse),
            "DeltaAggregatedResources": method(
                discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse
            ),
        },
    )
    server = grpc.aio.server(options=PENDING_STREAMS)
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def run_memory_floor(args: argparse.Namespace, proxies: list[dict], *, delta: bool) -> dict:
    """`run_memory`'s slope for `floor_server`: what gRPC itself holds per proxy (a connection and a stream)."""
    few = max(1, len(proxies) // 5)
    port = free_port("127.0.0.1")
    server = multiprocessing.get_context("spawn").Process(target=floor_server, args=(port,), daemon=True)
    server.start()
    fleet = ClientFleet(f"127.0.0.1:{port}", proxies, args.client_processes, delta=delta)
    try:
        fleet.wait_ready()
        time.sleep(args.settle)
        empty = usage(server.pid)
        looks = []
        for first, end in ((0, few), (few, len(proxies))):
            failed = {i: r for i, r in fleet.connect(first, end).items() if isinstance(r, str)}
            if failed:
                raise RuntimeError(
                    f"{len(failed)} clients of the floor server never synced: {list(failed.values())[:3]}"
                )
            time.sleep(args.settle)
            looks.append(usage(server.pid))
    finally:
        fleet.stop()
        server.kill()
        server.join()
    with_few, with_all = looks
    return {
        "few_proxies": few,
        "proxies": len(proxies),
        "floor_rss_empty_mb": empty.rss_mb,
        "floor_rss_all_mb": with_all.rss_mb,
        "per_proxy_kb": (with_all.rss_mb - with_few.rss_mb) * 1024 / (len(proxies) - few),
    }


# ------------------------------------------------------------------ real Envoys


def envoy_agents(
    cp: ControlPlaneProcess, shape: MeshShape, workdir: Path, net: str, count: int, xds: str
) -> list[AgentProcess]:
    """Explicit-proxy sidecars of the first `count` services' first workloads, on net.1, net.2, ...
    Each agent's ports are checked against all others: `free_port()` releases the port it found,
    so with a hundred picks the kernel hands the same one out twice now and then."""
    used = {cp.xds_port, cp.http_port}
    agents = []
    for i in range(count):
        for _ in range(20):
            agent = AgentProcess(
                cp,
                workdir,
                mode="proxy",
                name=shape.workload_name(i, 0),
                namespace=shape.namespace(i),
                ip=f"{net}.{i + 1}",
                labels={"app": shape.service_name(i), "version": "v1"},
                xds=xds,
            )
            ports = {agent.admin_port, agent.status_port}
            if len(ports) == 2 and not ports & used:
                break
        else:
            raise RuntimeError("could not find two unused ports for an agent")
        used |= ports
        agents.append(agent)
    return agents


def settled(status: dict) -> bool:
    """Every type acknowledged; endpoints may be NOT SENT (a scoped sidecar holding no EDS cluster asks none)."""
    return all(t["state"] == "SYNCED" or (k == "eds" and t["state"] == "NOT SENT") for k, t in status["types"].items())


def synced_ids(statuses: list[dict], ids: set[str]) -> set[str]:
    return {s["proxy_id"] for s in statuses if s["proxy_id"] in ids and settled(s)}


def wait_envoys_synced(cp: ControlPlaneProcess, agents: list[AgentProcess], timeout: float) -> list[dict]:
    ids = {a.proxy_id for a in agents}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for agent in agents:
            agent.check_alive()
        statuses = cp.api.get("/debug/syncz")
        if synced_ids(statuses, ids) == ids:
            return statuses
        time.sleep(0.1)
    raise TimeoutError(f"not every Envoy was SYNCED within {timeout:.0f}s")


def routes_acked(status: dict) -> tuple[str, str]:
    """The route versions a proxy acknowledged: its route configurations' and (scoped sidecars) virtual hosts'."""
    types = status["types"]
    return types["rds"]["acked_version"], types.get("vhds", {}).get("acked_version", "")


def envoy_convergence(
    cp: ControlPlaneProcess, shape: MeshShape, ids: set[str], change: Callable[[], tuple[float, float]] | None = None
) -> dict[str, float]:
    """Apply the change (svc-0010's VirtualService unless given), then poll /debug/syncz until every
    Envoy has ACKed new routes (route configurations or virtual hosts at a new version, everything else
    SYNCED); per Envoy, when that was first seen."""
    before = {s["proxy_id"]: routes_acked(s) for s in cp.api.get("/debug/syncz")}
    metrics_before = hub_figures(cp)
    started, answered = change() if change is not None else change_virtual_service(cp, shape)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while len(seen) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids) - len(seen)} Envoys did not ACK the change within {CONVERGE_TIMEOUT:.0f}s")
        statuses = cp.api.get("/debug/syncz")
        now = time.monotonic()
        for s in statuses:
            if (
                s["proxy_id"] in ids
                and s["proxy_id"] not in seen
                and routes_acked(s) != before.get(s["proxy_id"])
                and settled(s)
            ):
                seen[s["proxy_id"]] = now
        time.sleep(0.01)
    return {
        "apply_call_s": answered - started,
        **distribution("convergence", [t - started for t in seen.values()]),
        **distribution("push_convergence", [t - answered for t in seen.values()]),
        **hub_update(metrics_before, hub_figures(cp)),
    }


def envoy_pid(agent: AgentProcess, workdir: Path) -> int:
    return int((workdir / f"agent-{agent.name}" / "envoy.pid").read_text())


def run_envoys(args: argparse.Namespace, shape: MeshShape, workdir: Path) -> dict:
    config = write_config_dir(workdir / "mesh", shape, scoped=False)
    cp = ControlPlaneProcess(config, workdir, debounce=args.debounce)
    agents: list[AgentProcess] = []
    with loopback_subnet() as net:
        try:
            cp.start()
            before = usage(cp.pid)
            agents = envoy_agents(cp, shape, workdir, net, args.envoys, args.envoy_xds)
            started, started_wall = time.monotonic(), time.time()
            for agent in agents:
                PlaitProcess.start(agent)  # start only: AgentProcess.start would wait for each to be ready
            statuses = wait_envoys_synced(cp, agents, args.envoy_timeout)
            synced = time.monotonic()
            connected = [
                s["connected_at"] - started_wall for s in statuses if s["proxy_id"] in {a.proxy_id for a in agents}
            ]
            cp_synced = usage(cp.pid)
            time.sleep(args.settle)
            envoys = [usage(envoy_pid(a, workdir)) for a in agents]
            agent_usage = [usage(a.pid) for a in agents]
            figures = envoy_convergence(cp, shape, {a.proxy_id for a in agents})
            after = usage(cp.pid)
        finally:
            for agent in agents:  # all at once: each drains for half a second
                agent.signal(signal.SIGTERM)
            for agent in agents:
                agent.stop()
            cp.stop()
    return {
        "envoys": len(agents),
        "sync_all_s": synced - started,
        "connected_all_s": max(connected),
        "connected_first_s": min(connected),
        **figures,
        "envoy_rss_total_mb": sum(u.rss_mb for u in envoys),
        "envoy_rss_each_mb": statistics.mean(u.rss_mb for u in envoys),
        "envoy_cpu_total_s": sum(u.cpu_s for u in envoys),
        "agent_rss_total_mb": sum(u.rss_mb for u in agent_usage),
        "agent_cpu_total_s": sum(u.cpu_s for u in agent_usage),
        "cp_rss_before_mb": before.rss_mb,
        "cp_rss_synced_mb": cp_synced.rss_mb,
        "cp_peak_rss_mb": after.peak_rss_mb,
        "cp_cpu_connect_s": cp_synced.cpu_s - before.cpu_s,
    }


# ------------------------------------------------------------------ running and reporting


def scenarios(args: argparse.Namespace, shape: MeshShape, proxies: list[dict]) -> list[tuple[str, object]]:
    """(name, function of a work directory) in the order one repeat runs them."""
    out = []
    for scoped in (False, True):
        for delta in (False, True):
            name = ("delta" if delta else "sotw") + ("_scoped" if scoped else "")
            out.append(
                (
                    name,
                    lambda d, delta=delta, scoped=scoped: run_simulated(
                        args, shape, proxies, d, delta=delta, scoped=scoped
                    ),
                )
            )
    for delta in (False, True):
        out.append(
            (
                "memory_delta" if delta else "memory_sotw",
                lambda d, delta=delta: run_memory(args, shape, proxies, d, delta=delta),
            )
        )
        out.append(
            (
                "memory_floor_delta" if delta else "memory_floor_sotw",
                lambda d, delta=delta: run_memory_floor(args, proxies, delta=delta),
            )
        )
    if args.envoys:
        out.append(("envoys", lambda d: run_envoys(args, shape, d)))
    return [(name, scenario) for name, scenario in out if not args.only or name in args.only]


def summarise(runs: list[dict]) -> dict[str, dict[str, float]]:
    return {
        figure: {
            "median": statistics.median(r[figure] for r in runs),
            "min": min(r[figure] for r in runs),
            "max": max(r[figure] for r in runs),
        }
        for figure in runs[0]
    }


def verdicts(summary: dict) -> list[dict]:
    return [
        {
            "scenario": s,
            "figure": f,
            "target": target,
            "unit": unit,
            "measured": summary[s][f]["median"],
            "pass": summary[s][f]["median"] <= target,
        }
        for s, f, target, unit in TARGETS
        if s in summary
    ]


def run(args: argparse.Namespace) -> dict:
    shape = MeshShape(services=args.services)
    proxies = sidecars(shape, args.proxies)
    started = time.monotonic()
    runs: dict[str, list[dict]] = {}
    for repeat in range(args.repeat):
        for name, scenario in scenarios(args, shape, proxies):
            workdir = Path(tempfile.mkdtemp(prefix=f"plait-cp-bench-{name}-"))
            t = time.monotonic()
            try:
                runs.setdefault(name, []).append(scenario(workdir))
            except BaseException:
                print(f"{name} failed; logs kept in {workdir}", file=sys.stderr)
                raise
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"repeat {repeat + 1}/{args.repeat}: {name} done in {time.monotonic() - t:.1f}s", file=sys.stderr)
    summary = {name: summarise(r) for name, r in runs.items()}
    return {
        "benchmark": "controlplane",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "shape": {
            "services": shape.services,
            "endpoints_per_service": shape.endpoints_per_service,
            "namespaces": shape.namespaces,
            "routed_every": shape.routed_every,
        },
        "changed_virtual_service": f"{shape.namespace(CHANGED_SERVICE)}/{shape.service_name(CHANGED_SERVICE)}",
        "wall_seconds": time.monotonic() - started,
        "summary": summary,
        "targets": verdicts(summary),
        "runs": runs,
    }


def table(results: dict) -> str:
    targets = {(t["scenario"], t["figure"]): t for t in results["targets"]}
    s = results["settings"]
    heading = (
        f"plait control-plane benchmark: {results['shape']['services']} services, {s['proxies']} simulated "
        f"proxies in {s['client_processes']} processes, {s['envoys']} Envoys ({s['envoy_xds']}), "
        f"debounce {s['debounce']}, {s['repeat']} repeats, {results['machine']['cores']} cores, "
        f"{results['wall_seconds']:.0f} s"
    )
    lines = [heading, ""]
    for scenario, figures in results["summary"].items():
        lines.append(f"{scenario}")
        for figure, v in figures.items():
            target = targets.get((scenario, figure))
            verdict = (
                f"≤ {target['target']:g} {target['unit']}  {'PASS' if target['pass'] else 'MISS'}" if target else ""
            )
            lines.append(f"  {figure:26} {v['median']:10.3f} {v['min']:10.3f} {v['max']:10.3f}   {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--proxies", type=int, default=2000, help="simulated proxies")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the simulated proxies run in")
    parser.add_argument("--envoys", type=int, default=20, help="real Envoys (0 to skip)")
    parser.add_argument("--envoy-xds", choices=("sotw", "delta"), default="sotw", help="the Envoys' xDS flavour")
    parser.add_argument("--envoy-timeout", type=float, default=240.0, help="seconds for the Envoys to be SYNCED")
    parser.add_argument("--debounce", default="0ms", help="the control plane's --debounce (its default is 100ms)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading memory")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "controlplane.json")
    args = parser.parse_args(argv)
    if not 0 <= args.envoys <= MAX_ENVOYS:
        parser.error(f"--envoys must be between 0 and {MAX_ENVOYS} (one 127.0.N subnet)")
    results = run(args)
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
