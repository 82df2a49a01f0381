"""Sidecar injection webhook benchmark: how much a Pod creation costs with the injector in the path,
seen from the API server's client.

A real API server (kube-testenv, API-only mode: pods are stored, not run) and a real
`plait control-plane --kubeconfig` process serving /inject on its webhook port, registered by the
MutatingWebhookConfiguration `plait.controlplane.injector.mutating_webhook_configuration` builds
(the control plane's leader sets its caBundle, as in a cluster). Pods are created one at a time
with the Kubernetes client, alternating between a namespace labelled ``istio-injection=enabled``
(the API server calls the webhook and stores the injected pod) and an unlabelled one (the
namespaceSelector leaves the webhook out): the difference is the webhook's cost per pod (TLS
call, the namespace lookup, Istio's decision, the patch, the API server applying it and storing a
larger object).

Run:  .venv/bin/python benchmarks/webhook.py [--pods 300] [--out benchmarks/results/webhook.json]   (~1 minute)

Reports p50/p90/p99/mean per namespace; asserts nothing. Everything started is stopped.
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
from common import machine
from kubernetes_asyncio import client

from plait.controlplane.injector import mutating_webhook_configuration
from plait.testing.kube import KubeTestenv, find_testenv
from plait.testing.kubeapi import api_client
from plait.testing.live import ControlPlaneProcess, free_port

INJECTED, PLAIN = "bench-injected", "bench-plain"


def pod(name: str) -> dict:
    """A pod as Bookinfo's reviews: one container, a port, an HTTP readiness probe, a service account."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "reviews", "version": "v1"}},
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "containers": [
                {
                    "name": "reviews",
                    "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2",
                    "ports": [{"containerPort": 9080}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": 9080}},
                }
            ],
        },
    }


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50_ms": round(at(0.5) * 1000, 2),
        "p90_ms": round(at(0.9) * 1000, 2),
        "p99_ms": round(at(0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


async def create(core: client.CoreV1Api, namespace: str, name: str) -> tuple[float, bool]:
    """(seconds the create took, whether the stored pod is injected)."""
    started = time.perf_counter()
    stored = await core.create_namespaced_pod(namespace, pod(name))
    took = time.perf_counter() - started
    return took, any(c.name == "istio-proxy" for c in stored.spec.containers)


async def wait_for_injector(core: client.CoreV1Api) -> int:
    """Create pods until one is injected (the API server has the configuration and trusts the
    certificate); returns how many were tried."""
    for attempt in range(600):
        try:
            if (await create(core, INJECTED, f"warmup-{attempt}"))[1]:
                return attempt + 1
        except client.exceptions.ApiException as error:  # not served or not trusted yet
            if "failed calling webhook" not in str(error.body):
                raise
        await asyncio.sleep(0.1)
    raise SystemExit("the injector never answered")


async def measure(kubeconfig: str, pods: int) -> dict:
    api = await api_client(kubeconfig)
    core = client.CoreV1Api(api)
    try:
        warmup = await wait_for_injector(core)
        times: dict[str, list[float]] = {INJECTED: [], PLAIN: []}
        injected = 0
        for i in range(pods):
            for namespace in (INJECTED, PLAIN) if i % 2 == 0 else (PLAIN, INJECTED):
                took, was_injected = await create(core, namespace, f"pod-{i}")
                times[namespace].append(took)
                injected += was_injected and namespace == INJECTED
        return {
            "warmup_pods": warmup,
            "with_webhook": percentiles(times[INJECTED]),
            "without_webhook": percentiles(times[PLAIN]),
            "injected": injected,
            "webhook_cost_p50_ms": round(
                (statistics.median(times[INJECTED]) - statistics.median(times[PLAIN])) * 1000, 2
            ),
        }
    finally:
        await api.close()


def run(args: argparse.Namespace) -> dict:
    tool = find_testenv()
    if tool is None:
        raise SystemExit("kube-testenv not found: set PLAIT_KUBE_TESTENV")
    cluster = KubeTestenv(tool, prefix="plait-webhook-bench-").start()
    try:
        namespaces = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": INJECTED, "labels": {"istio-injection": "enabled"}},
            },
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PLAIN}},
        ]
        cluster.apply(yaml.safe_dump_all(namespaces))
        webhook_port = free_port()
        configuration = mutating_webhook_configuration(
            b"set by the control plane's leader", url=f"https://localhost:{webhook_port}/inject"
        )
        cluster.apply(yaml.safe_dump(configuration))
        with tempfile.TemporaryDirectory(prefix="plait-webhook-bench-cp-") as workdir:
            cp = ControlPlaneProcess(
                Path(workdir) / "unused",
                Path(workdir),
                extra_args=[
                    "--kubeconfig",
                    cluster.kubeconfig,
                    "--webhook-port",
                    str(webhook_port),
                    "--log-level",
                    "warning",
                ],
            )
            with cp:
                return asyncio.run(measure(cluster.kubeconfig, args.pods))
    finally:
        cluster.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=300, help="pods created in each namespace")
    parser.add_argument("--out", default="benchmarks/results/webhook.json")
    args = parser.parse_args()
    figures = run(args)
    result = {
        "benchmark": "webhook",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args),
        **figures,
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
