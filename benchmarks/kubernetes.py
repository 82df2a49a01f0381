"""Kubernetes benchmark: `plait control-plane --kubeconfig` reading a real API server (kube-testenv,
API-only mode) that holds 1,000 Services, their Pods and EndpointSlices (5,000 endpoints), and the
time from `kubectl apply` of a VirtualService to every simulated proxy having ACKed it.

The test cluster's service range is a /24, so the first 200 Services get a ClusterIP and the others
are headless (clusterIP: None); all have endpoints.

Run:  .venv/bin/python benchmarks/kubernetes.py [--services 1000] [--endpoints 5] [--namespaces 10]
          [--proxies 50] [--repeat 5] [--out benchmarks/results/kubernetes.json]      (~3 minutes)

Everything goes through public interfaces: the objects are created with kubectl (the tests write
the EndpointSlices a controller would), the control plane is a real process, the proxies are
`plait.testing.ads_client.AdsClient`s (sidecars of the first pods of namespace ns-00, in this
process; every proxy sees every Service, so each change reaches all of them). Figures: object
creation time, control-plane start until /ready (listing everything included), proxies' initial
sync, then per change of svc-0010's VirtualService (weights v1/v2 alternating 90/10 and 80/20):
kubectl start → every proxy ACKed a new RDS version (p50/max over proxies, median over repeats),
and the control plane's RSS. Reports only; asserts nothing. Everything started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from common import machine, usage

from plait.model import Proxy
from plait.testing.ads_client import AdsClient, make_node
from plait.testing.kube import KubeTestenv, find_testenv
from plait.testing.live import ControlPlaneProcess

CLUSTER_IPS = 200  # the test cluster's service range is a /24: the other Services are headless


def objects(services: int, endpoints: int, namespaces: int) -> list[dict]:
    """Namespaces, then per service: a Service, its pods (v1/v2 alternating) and one EndpointSlice."""
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{n:02d}"}} for n in range(namespaces)
    ]
    for s in range(services):
        name, namespace = f"svc-{s:04d}", f"ns-{s % namespaces:02d}"
        spec = {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080}]}
        if s >= CLUSTER_IPS:
            spec["clusterIP"] = "None"
        docs.append(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        )
        slice_endpoints = []
        for e in range(endpoints):
            pod, address = f"{name}-{e}", f"10.{100 + s // 250}.{s % 250}.{e + 1}"
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod,
                        "namespace": namespace,
                        "labels": {"app": name, "version": f"v{e % 2 + 1}"},
                    },
                    "spec": {
                        "containers": [
                            {"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 9080}]}
                        ]
                    },
                }
            )
            slice_endpoints.append(
                {
                    "addresses": [address],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod},
                }
            )
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1beta1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-a",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
                "endpoints": slice_endpoints,
            }
        )
    return docs


def virtual_service(v1_weight: int, namespaces: int) -> dict:
    host = f"svc-0010.ns-{10 % namespaces:02d}.svc.cluster.local"
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "svc-0010", "namespace": f"ns-{10 % namespaces:02d}"},
        "spec": {
            "hosts": [host],
            "http": [
                {
                    "route": [
                        {"destination": {"host": host, "subset": "v1"}, "weight": v1_weight},
                        {"destination": {"host": host, "subset": "v2"}, "weight": 100 - v1_weight},
                    ]
                }
            ],
        },
    }


def destination_rule(namespaces: int) -> dict:
    host = f"svc-0010.ns-{10 % namespaces:02d}.svc.cluster.local"
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "svc-0010", "namespace": f"ns-{10 % namespaces:02d}"},
        "spec": {"host": host, "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]},
    }


def proxies(args: argparse.Namespace) -> list[Proxy]:
    """Sidecars of the first pods of namespace ns-00 (services 0, namespaces, 2·namespaces, …)."""
    out = []
    for i in range(args.proxies):
        e, k = divmod(i, args.services // args.namespaces)
        s = k * args.namespaces
        out.append(
            Proxy(
                kind="sidecar",
                ip=f"10.{100 + s // 250}.{s % 250}.{e + 1}",
                name=f"svc-{s:04d}-{e}",
                namespace="ns-00",
                labels={"app": f"svc-{s:04d}", "version": f"v{e % 2 + 1}"},
            )
        )
    return out


async def measure(cluster: KubeTestenv, cp: ControlPlaneProcess, args: argparse.Namespace) -> dict:
    clients = [AdsClient(cp.address, make_node(p), keep_resources=False) for p in proxies(args)]
    started = time.monotonic()
    await asyncio.gather(*(c.start() for c in clients))
    await asyncio.gather(*(c.wait_synced(120) for c in clients))
    figures: dict = {"proxies_synced_s": time.monotonic() - started, "changes": []}
    try:
        for r in range(args.repeat):
            before = [c.versions.get("rds") for c in clients]
            text = yaml.safe_dump(virtual_service(80 if r % 2 == 0 else 90, args.namespaces))
            t0 = time.monotonic()
            await asyncio.to_thread(cluster.apply, text)
            t1 = time.monotonic()
            acked = await asyncio.gather(*(acked_at(c, b) for c, b in zip(clients, before)))
            figures["changes"].append(
                {"kubectl_s": t1 - t0, "p50_s": statistics.median(a - t0 for a in acked), "max_s": max(acked) - t0}
            )
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return figures


async def acked_at(client: AdsClient, before: str | None) -> float:
    await client.wait_for(lambda c: c.versions.get("rds") != before, 60)
    return time.monotonic()


def run(args: argparse.Namespace) -> dict:
    tool = find_testenv()
    if tool is None:
        raise SystemExit("kube-testenv not found: set PLAIT_KUBE_TESTENV")
    cluster = KubeTestenv(tool, prefix="plait-kube-bench-").start()
    try:
        cluster.load_crds()
        docs = objects(args.services, args.endpoints, args.namespaces)
        path = cluster.dir / "objects.yaml"
        path.write_text(
            yaml.safe_dump_all(docs[: args.namespaces]) + "---\n" + yaml.safe_dump_all(docs[args.namespaces :])
        )
        started = time.monotonic()
        cluster.kubectl("create", "-f", str(path))
        created = time.monotonic() - started
        cluster.apply(yaml.safe_dump_all([destination_rule(args.namespaces), virtual_service(90, args.namespaces)]))
        with tempfile.TemporaryDirectory(prefix="plait-kube-bench-cp-") as workdir:
            cp = ControlPlaneProcess(
                Path(workdir) / "unused", Path(workdir), extra_args=["--kubeconfig", cluster.kubeconfig]
            )
            started = time.monotonic()
            try:
                cp.start()  # returns once /ready answers: every type listed, first snapshot built
                ready_s = time.monotonic() - started
                figures = asyncio.run(measure(cluster, cp, args))
                figures["control_plane_rss_mb"] = round(usage(cp.pid).rss_mb, 1)
            finally:
                cp.stop()
        return {"objects_created": len(docs), "kubectl_create_s": created, "control_plane_ready_s": ready_s, **figures}
    finally:
        cluster.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--proxies", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/kubernetes.json")
    args = parser.parse_args()
    figures = run(args)
    changes = figures["changes"]
    summary = {
        "change_p50_s": statistics.median(c["p50_s"] for c in changes),
        "change_max_s": statistics.median(c["max_s"] for c in changes),
        "kubectl_apply_s": statistics.median(c["kubectl_s"] for c in changes),
    }
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args),
        **figures,
        **summary,
    }
    for key, value in result.items():
        if key not in ("machine", "args", "changes"):
            print(f"{key:28} {value:.3f}" if isinstance(value, float) else f"{key:28} {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
