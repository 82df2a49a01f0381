"""Translation benchmark: how fast plait turns a 1,000-service mesh into one proxy's Envoy config.

Run:  .venv/bin/python benchmarks/translate.py [--services 1000] [--repeat 7]
          [--out benchmarks/results/translate.json] [--profile]

Measures (each repeated, median with min/max): building the MeshSnapshot; full
translation for one sidecar (capture mode) and for the ingress gateway; the
same ResourceSets converted to protobuf (json_format.ParseDict) and serialised,
reported apart; the incremental path after one VirtualService changes
(with_changes → affected_route_names → generate_routes; its with_changes step
and the rebuilt routes' protobuf conversion are also reported apart). Also peak RSS, the
memory held by the snapshot and one proxy's resources, resource counts and
sizes. Prints a table with pass/fail against the targets and writes JSON.
`--profile` adds cProfile's top functions for the sidecar translation and the
incremental path. Reports only; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from common import machine
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2, json_format

# json_format resolves an `@type` only once its message type is imported: every type the translation emits.
import plait.xds.publish  # noqa: E402,F401 - imports every message type the translator's `@type`s name
from plait.api import Resource
from plait.model import MeshSnapshot, Proxy
from plait.testing.synthetic import (
    MeshShape,
    gateway_proxy,
    load_one,
    mesh_resources,
    sidecar_proxy,
    virtual_service_yaml,
)
from plait.xds.generator import affected_route_names, generate, generate_routes
from plait.xds.resources import TYPE_URLS, ResourceSet

MESSAGE_TYPES = {
    "cds": cluster_pb2.Cluster,
    "eds": endpoint_pb2.ClusterLoadAssignment,
    "lds": listener_pb2.Listener,
    "rds": route_pb2.RouteConfiguration,
}

# (figure, target, unit); the machine has 2 cores and is noisy, so compare medians.
TARGETS = [
    ("translate_sidecar", 300.0, "ms"),
    ("translate_gateway", 300.0, "ms"),
    ("incremental_vs_change", 20.0, "ms"),
    ("peak_rss", 200.0, "MB"),
]


# ------------------------------------------------------------------ measuring


def timed(fn: Callable[[], object], repeat: int) -> dict:
    """Run `fn` `repeat` times after a gc.collect() each; milliseconds: median, min, max, all runs."""
    runs = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs}


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def traced_mb(build: Callable[[], object]) -> float:
    """Python heap still held by what `build` returns (tracemalloc), in MB."""
    gc.collect()
    tracemalloc.start()
    kept = build()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return held / 2**20


# ------------------------------------------------------------------ the work being measured


def to_messages(resources: ResourceSet) -> list:
    """Each resource as its Envoy message type, as the ADS server will need it."""
    return [
        json_format.ParseDict(item, MESSAGE_TYPES[short]())
        for short in TYPE_URLS
        for item in resources.of_type(short).values()
    ]


def serialise(messages: list) -> list[any_pb2.Any]:
    """Messages packed into Any, as they go into a DiscoveryResponse."""
    return [
        any_pb2.Any(type_url="type.googleapis.com/" + m.DESCRIPTOR.full_name, value=m.SerializeToString())
        for m in messages
    ]


def to_protobuf(resources: ResourceSet) -> list[any_pb2.Any]:
    return serialise(to_messages(resources))


def routes_to_protobuf(routes: list[dict]) -> list[any_pb2.Any]:
    """Rebuilt route configurations as an incremental push would send them."""
    return serialise([json_format.ParseDict(r, route_pb2.RouteConfiguration()) for r in routes])


def incremental(
    snapshot: MeshSnapshot, proxy: Proxy, changed_vs: Resource, hosts: list[str]
) -> tuple[list[str], list[dict]]:
    """The rebuild after one VirtualService changed: a new snapshot, then only the routes it can affect."""
    updated = snapshot.with_changes(upserts=[changed_vs])
    names = affected_route_names(updated, proxy, hosts)
    return names, generate_routes(updated, proxy, only=names)


# ------------------------------------------------------------------ describing


def counts(resources: ResourceSet) -> dict:
    virtual_hosts = [vh for rc in resources.routes.values() for vh in rc.get("virtual_hosts", [])]
    return {
        "clusters": len(resources.clusters),
        "endpoint_assignments": len(resources.endpoints),
        "lb_endpoints": sum(
            len(group.get("lb_endpoints", []))
            for cla in resources.endpoints.values()
            for group in cla.get("endpoints", [])
        ),
        "listeners": len(resources.listeners),
        "route_configurations": len(resources.routes),
        "virtual_hosts": len(virtual_hosts),
        "routes": sum(len(vh.get("routes", [])) for vh in virtual_hosts),
        "json_bytes": len(json.dumps(resources.to_dict(), separators=(",", ":"))),
        "protobuf_bytes": sum(a.ByteSize() for a in to_protobuf(resources)),
    }


def profile_top(fn: Callable[[], object], limit: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


# ------------------------------------------------------------------ running


def run(args: argparse.Namespace) -> dict:
    shape = MeshShape(services=args.services, endpoints_per_service=args.endpoints, namespaces=args.namespaces)
    rss_start = current_rss_mb()
    start = time.perf_counter()
    resources = mesh_resources(shape)
    load_ms = (time.perf_counter() - start) * 1000
    rss_loaded = current_rss_mb()

    # First build doubles as warm-up and as the RSS attribution for snapshot + one proxy.
    snapshot = MeshSnapshot(resources)
    sidecar, gateway = sidecar_proxy(snapshot, shape), gateway_proxy(snapshot)
    sidecar_resources = generate(snapshot, sidecar)
    rss_built = current_rss_mb()
    gateway_resources = generate(snapshot, gateway)
    to_protobuf(sidecar_resources)

    routed = shape.routed_every if shape.services > shape.routed_every else 0  # a VS the sidecar sees, not its own
    changed_vs = load_one(virtual_service_yaml(shape, routed, v1_weight=80))
    hosts = [shape.hostname(routed)]
    rebuilt_names, rebuilt_routes = incremental(snapshot, sidecar, changed_vs, hosts)
    sidecar_messages = to_messages(sidecar_resources)
    gateway_messages = to_messages(gateway_resources)

    n = args.repeat
    timings = {
        "snapshot_build": timed(lambda: MeshSnapshot(resources), n),
        "translate_sidecar": timed(lambda: generate(snapshot, sidecar), n),
        "translate_gateway": timed(lambda: generate(snapshot, gateway), n),
        "protobuf_parse_sidecar": timed(lambda: to_messages(sidecar_resources), n),
        "protobuf_serialise_sidecar": timed(lambda: serialise(sidecar_messages), n),
        "protobuf_parse_gateway": timed(lambda: to_messages(gateway_resources), n),
        "protobuf_serialise_gateway": timed(lambda: serialise(gateway_messages), n),
        "translate_and_protobuf_sidecar": timed(lambda: to_protobuf(generate(snapshot, sidecar)), n),
        "incremental_vs_change": timed(lambda: incremental(snapshot, sidecar, changed_vs, hosts), n),
        "incremental_with_changes_only": timed(lambda: snapshot.with_changes(upserts=[changed_vs]), n),
        "incremental_routes_to_protobuf": timed(lambda: routes_to_protobuf(rebuilt_routes), n),
    }
    peak = peak_rss_mb()
    memory = {
        "rss_start_mb": rss_start,
        "rss_resources_loaded_mb": rss_loaded,
        "rss_increase_snapshot_and_sidecar_mb": rss_built - rss_loaded,
        "traced_snapshot_mb": traced_mb(lambda: MeshSnapshot(resources)),
        "traced_sidecar_resources_mb": traced_mb(lambda: generate(snapshot, sidecar)),
        "peak_rss_mb": peak,
    }
    results = {
        "benchmark": "translate",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "shape": {
            "services": shape.services,
            "endpoints_per_service": shape.endpoints_per_service,
            "namespaces": shape.namespaces,
            "routed_every": shape.routed_every,
            "objects": len(resources),
        },
        "repeat": n,
        "load_text_ms": load_ms,
        "timings_ms": timings,
        "incremental_rebuilt_routes": rebuilt_names,
        "memory_mb": memory,
        "counts": {"sidecar": counts(sidecar_resources), "gateway": counts(gateway_resources)},
    }
    results["targets"] = verdicts(results)
    if args.profile:
        results["profile"] = {
            "translate_sidecar": profile_top(lambda: generate(snapshot, sidecar)),
            "incremental_vs_change": profile_top(lambda: incremental(snapshot, sidecar, changed_vs, hosts)),
            "snapshot_build": profile_top(lambda: MeshSnapshot(resources)),
        }
    return results


def verdicts(results: dict) -> list[dict]:
    out = []
    for name, target, unit in TARGETS:
        measured = results["memory_mb"]["peak_rss_mb"] if name == "peak_rss" else results["timings_ms"][name]["median"]
        out.append({"name": name, "measured": measured, "target": target, "unit": unit, "pass": measured <= target})
    return out


# ------------------------------------------------------------------ reporting


def table(results: dict) -> str:
    targets = {t["name"]: t for t in results["targets"]}
    shape = results["shape"]
    lines = [
        f"plait translation benchmark: {shape['services']} services × {shape['endpoints_per_service']} endpoints, "
        f"{shape['objects']} objects, {results['repeat']} runs, {results['machine']['cores']} cores",
        f"(load_text of the mesh YAML, once: {results['load_text_ms']:.0f} ms)",
        "",
        f"{'figure':34} {'median':>9} {'min':>9} {'max':>9}   target",
    ]
    for name, t in results["timings_ms"].items():
        verdict = ""
        if name in targets:
            verdict = f"≤ {targets[name]['target']:.0f} ms  {'PASS' if targets[name]['pass'] else 'MISS'}"
        lines.append(f"{name:34} {t['median']:9.1f} {t['min']:9.1f} {t['max']:9.1f}   {verdict}")
    lines.append("")
    for name, value in results["memory_mb"].items():
        verdict = ""
        if name == "peak_rss_mb":
            verdict = (
                f"   ≤ {targets['peak_rss']['target']:.0f} MB  {'PASS' if targets['peak_rss']['pass'] else 'MISS'}"
            )
        lines.append(f"{name:40} {value:9.1f} MB{verdict}")
    lines.append("")
    lines.append(f"incremental path rebuilt route configurations: {results['incremental_rebuilt_routes']}")
    keys = list(results["counts"]["sidecar"])
    lines.append(f"{'counts':22}" + "".join(f"{k:>16}" for k in ("sidecar", "gateway")))
    for key in keys:
        lines.append(f"{key:22}" + "".join(f"{results['counts'][p][key]:>16,}" for p in ("sidecar", "gateway")))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=3, help="WorkloadEntries per service")
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "translate.json")
    parser.add_argument("--profile", action="store_true", help="add cProfile's top functions to the output")
    args = parser.parse_args(argv)
    results = run(args)
    print(table(results))
    for name, text in results.get("profile", {}).items():
        print(f"\n--- profile: {name} (sorted by cumulative time) ---\n{text}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
