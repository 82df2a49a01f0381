"""Automatic scoping benchmark: real Envoys on the synthetic 1,000-service mesh, with scoping on (the
control plane's default) and off (`plait control-plane --no-scoping`), in one run.

Run:  .venv/bin/python benchmarks/scoping.py [--services 1000] [--envoys 50] [--envoys-unscoped 10]
          [--repeat 1] [--out benchmarks/results/scoping.json]      (about 4 minutes with the defaults)

Each mode starts a real control plane on the mesh (YAML files, one per namespace, as
benchmarks/controlplane.py writes them) plus one real service, ``bench-target``, served by a loopback
HTTP backend; then N Envoys, each run by ``plait agent --mode proxy`` (delta xDS, the agent's default)
as the sidecar of one synthetic workload, started together. Figures:

* time until /debug/syncz shows every Envoy SYNCED, and each Envoy's memory then (median, max): its
  private resident memory (RssAnon: what one more Envoy costs) and its RSS (which also counts the
  Envoy binary's pages, shared by every Envoy on the host), with the clusters it holds (admin API);
* the first and the second call of every Envoy to ``bench-target`` (a service it was never sent with
  scoping on: the first call waits for its cluster, fetched on demand), through its explicit-proxy
  port, timed by the client (median, p99, max);
* a route change every sidecar holds (a VirtualService for bench-target, which every Envoy called)
  until every Envoy ACKed it;
* the control plane's resident memory.

Fewer Envoys run unscoped by default: each holds every cluster (~150 MB), and the figures compared
are per Envoy. Reports only; asserts nothing. Every process is stopped by PID, on errors too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import machine, usage

from controlplane import (
    distribution,
    envoy_agents,
    envoy_convergence,
    envoy_pid,
    summarise,
    wait_envoys_synced,
    write_config_dir,
)
from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.http import http_request
from plait.testing.live import AgentProcess, ControlPlaneProcess, PlaitProcess
from plait.testing.synthetic import MeshShape

TARGET_PORT = 8080
TARGET_HOST = "bench-target.mesh-0.svc.cluster.local"
TARGET_ADDRESS = 254  # net.254: the backend behind bench-target (the Envoys take net.1 onwards)
ENVOY_MEMORY_TARGET_MB = 40.0  # the "memory per Envoy"


def target_yaml(net: str) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: bench-target, namespace: mesh-0}}
spec: {{selector: {{app: bench-target}}, ports: [{{name: http, port: {TARGET_PORT}}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: bench-target-v1, namespace: mesh-0}}
spec: {{address: {net}.{TARGET_ADDRESS}, labels: {{app: bench-target}}, ports: {{http: {TARGET_PORT}}}}}
"""


def change_target_routes(cp: ControlPlaneProcess) -> tuple[float, float]:
    """A route change for bench-target, which every Envoy called: a VirtualService with a timeout
    (monotonic time of the apply call, of its answer)."""
    started = time.monotonic()
    result = cp.apply("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench-target, namespace: mesh-0}
spec:
  hosts: [bench-target]
  http: [{route: [{destination: {host: bench-target}}], timeout: 7s}]
""")
    answered = time.monotonic()
    if not result.get("created"):
        raise RuntimeError(f"the VirtualService was not created: {result}")
    return started, answered


def private_mb(pid: int) -> float:
    """Resident memory of the process's own (anonymous) pages: what one more Envoy costs. Its RSS also
    counts the Envoy binary's file pages (~50 MB here), which every Envoy on the host shares."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no RssAnon in /proc/{pid}/status")


def clusters_held(agent: AgentProcess) -> int:
    dump = agent.admin.get("/config_dump?resource=dynamic_active_clusters")
    return len(dump.get("configs", []))


def calls(agents: list[AgentProcess]) -> tuple[list[float], list[float]]:
    """Every Envoy's first and second call to bench-target (seconds, as the client saw them)."""
    first, second = [], []
    for agent in agents:
        for out in (first, second):
            started = time.monotonic()
            reply = http_request(agent.ip, EXPLICIT_PROXY_PORT, f"http://{TARGET_HOST}:{TARGET_PORT}/", timeout=15)
            out.append(time.monotonic() - started)
            if reply.status != 200 or reply.backend != "bench-target-v1":
                raise RuntimeError(f"{agent.name}: a call to bench-target got {reply.status} from {reply.backend}")
    return first, second


def run_mode(args: argparse.Namespace, shape: MeshShape, workdir: Path, *, scoping: bool) -> dict:
    count = args.envoys if scoping else args.envoys_unscoped
    config = write_config_dir(workdir / "mesh", shape, scoped=False)
    agents: list[AgentProcess] = []
    with loopback_subnet() as net, HttpBackend("bench-target-v1", f"{net}.{TARGET_ADDRESS}", TARGET_PORT):
        (config / "bench-target.yaml").write_text(target_yaml(net))
        cp = ControlPlaneProcess(config, workdir, debounce="0ms", extra_args=[] if scoping else ["--no-scoping"])
        try:
            cp.start()
            agents = envoy_agents(cp, shape, workdir, net, count, "delta")
            started = time.monotonic()
            for agent in agents:
                PlaitProcess.start(agent)  # start only: AgentProcess.start would wait for each to be ready
            wait_envoys_synced(cp, agents, args.envoy_timeout)
            synced = time.monotonic() - started
            time.sleep(args.settle)
            pids = [envoy_pid(a, workdir) for a in agents]
            envoys, private = [usage(pid).rss_mb for pid in pids], [private_mb(pid) for pid in pids]
            held = [clusters_held(a) for a in agents]
            cp_synced = usage(cp.pid).rss_mb
            first, second = calls(agents)
            held_after = [clusters_held(a) for a in agents]
            figures = envoy_convergence(cp, shape, {a.proxy_id for a in agents}, lambda: change_target_routes(cp))
        finally:
            for agent in agents:  # all at once: each drains for half a second
                agent.signal(signal.SIGTERM)
            for agent in agents:
                agent.stop()
            cp.stop()
    return {
        "envoys": len(agents),
        "sync_all_s": synced,
        "envoy_rss_median_mb": statistics.median(envoys),
        "envoy_rss_max_mb": max(envoys),
        "envoy_private_median_mb": statistics.median(private),
        "envoy_private_max_mb": max(private),
        "clusters_held_median": statistics.median(held),
        "clusters_held_after_call_median": statistics.median(held_after),
        **distribution("first_call", first),
        **distribution("second_call", second),
        "convergence_p50_s": figures["convergence_p50_s"],
        "convergence_p99_s": figures["convergence_p99_s"],
        "cp_rss_synced_mb": cp_synced,
    }


def run(args: argparse.Namespace) -> dict:
    shape = MeshShape(services=args.services)
    started = time.monotonic()
    runs: dict[str, list[dict]] = {}
    for repeat in range(args.repeat):
        for name, scoping in (("scoped", True), ("unscoped", False)):
            workdir = Path(tempfile.mkdtemp(prefix=f"plait-scoping-bench-{name}-"))
            t = time.monotonic()
            try:
                runs.setdefault(name, []).append(run_mode(args, shape, workdir, scoping=scoping))
            except BaseException:
                print(f"{name} failed; logs kept in {workdir}", file=sys.stderr)
                raise
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"repeat {repeat + 1}/{args.repeat}: {name} done in {time.monotonic() - t:.1f}s", file=sys.stderr)
    summary = {name: summarise(r) for name, r in runs.items()}
    scoped, unscoped = summary["scoped"], summary["unscoped"]
    return {
        "benchmark": "scoping",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "wall_seconds": time.monotonic() - started,
        "summary": summary,
        "ratios": {
            "envoy_private_unscoped_over_scoped": unscoped["envoy_private_median_mb"]["median"]
            / scoped["envoy_private_median_mb"]["median"],
            "first_call_over_second_p50_scoped": scoped["first_call_p50_s"]["median"]
            / scoped["second_call_p50_s"]["median"],
        },
        "targets": [
            {
                "figure": f"{figure} (scoped)",
                "target": ENVOY_MEMORY_TARGET_MB,
                "measured": scoped[figure]["median"],
                "pass": scoped[figure]["median"] <= ENVOY_MEMORY_TARGET_MB,
            }
            for figure in ("envoy_private_max_mb", "envoy_rss_max_mb")
        ],
        "runs": runs,
    }


def table(results: dict) -> str:
    s = results["settings"]
    lines = [
        f"plait scoping benchmark: {s['services']} services, {s['envoys']} Envoys scoped, {s['envoys_unscoped']} "
        f"unscoped, {s['repeat']} repeats, {results['machine']['cores']} cores, {results['wall_seconds']:.0f} s",
        "",
        f"  {'figure':34} {'scoped':>12} {'unscoped':>12}",
    ]
    scoped, unscoped = results["summary"]["scoped"], results["summary"]["unscoped"]
    for figure in scoped:
        lines.append(f"  {figure:34} {scoped[figure]['median']:12.3f} {unscoped[figure]['median']:12.3f}")
    lines.append("")
    lines += [f"  {name}: {value:.2f}" for name, value in results["ratios"].items()]
    lines += [
        f"  target {t['figure']} ≤ {t['target']:g}: {t['measured']:.1f} {'PASS' if t['pass'] else 'MISS'}"
        for t in results["targets"]
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--envoys", type=int, default=50, help="real Envoys with scoping on")
    parser.add_argument("--envoys-unscoped", type=int, default=10, help="real Envoys with scoping off")
    parser.add_argument("--envoy-timeout", type=float, default=300.0, help="seconds for the Envoys to be SYNCED")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading memory")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scoping.json")
    args = parser.parse_args(argv)
    if not 1 <= args.envoys < TARGET_ADDRESS or not 1 <= args.envoys_unscoped < TARGET_ADDRESS:
        parser.error(f"--envoys and --envoys-unscoped must be between 1 and {TARGET_ADDRESS - 1}")
    results = run(args)
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
