"""Telemetry cost benchmark: the Envoy CPU that Istio's standard metrics (and metrics with Istio's access
log) add per request, per proxy, and how long a Prometheus scrape of one proxy takes.

Run:  .venv/bin/python benchmarks/telemetry.py [--repeat 5] [--duration 8] [--connections 16]
          [--threads 2] [--out benchmarks/results/telemetry.json]
          (about 3½ minutes with the defaults)

Needs wrk and nginx (Debian: ``apt-get install -y wrk nginx-light``).

One nginx (localmesh.py's: a 25-byte body) on 127.0.0.1, and three Envoys with one worker each,
each an HTTP proxy in front of it built from plait's own pieces: the connection manager the
translator makes (`plait.xds.translate.common.http_connection_manager`), a cluster with the
service's metadata and an endpoint with the workload's (`plait.telemetry.metrics`), and:

* ``off``: no metrics (what plait sent before);
* ``source``: a client sidecar's outbound side: the reporter=source loggers and the filter that
  stamps the peer-identity headers (`source_tags`, `peer_identity_filter`);
* ``destination``: a server sidecar's inbound side: the reporter=destination loggers of a
  mutual-TLS chain (`destination_tags(mtls=True)`: peer headers read, certificate SANs, which are
  empty here as the benchmark runs plaintext);
* ``source+log``: ``source`` plus the file access log ``meshConfig.accessLogFile`` turns on (Istio's
  TEXT format, `plait.telemetry.logs`), written to a file in the benchmark's directory.

The Envoys run side by side, idle but for the one being measured; every repeat runs wrk (--connections,
--threads, --duration s, after 1 s of warm-up) against each in turn, in an order reversed on every
other repeat. Envoy CPU per request comes from /proc/PID/stat before and after each run. The cost of
metrics is taken within each repeat (source − off, destination − off, source+log − off), then as medians over the
repeats. Scrape: after the runs, GET /stats/prometheus 20 times from the ``source`` Envoy's 15090-style
listener (the Lua rename) and from its admin API (no rename); medians. Prints a table, writes JSON.
Reports only; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import localmesh as lm
from common import machine

from plait.api.mesh import MeshConfig
from plait.model.protocol import Protocol
from plait.model.proxy import Proxy
from plait.model.services import Endpoint, Port, Service
from plait.telemetry import logs, metrics
from plait.telemetry.prometheus import prometheus_cluster, prometheus_listener
from plait.testing.envoy import run_envoy
from plait.testing.live import free_port
from plait.xds.translate.common import ROUTER_FILTER, http_connection_manager, socket_address

CONFIGS = ("off", "source", "destination", "source+log")
SCRAPES = 20
SERVICE = Service(
    hostname="backend.default.svc.cluster.local",
    namespace="default",
    name="backend",
    origin="Service",
    ports=(Port("http", 9080, Protocol.HTTP),),
)
CLIENT = Proxy(kind="sidecar", ip="127.0.0.1", name="client-v1", labels={"app": "client", "version": "v1"})


def bootstrap(
    config: str, listen_port: int, admin_port: int, prometheus_port: int, nginx_port: int, log_file: Path
) -> dict:
    hcm = http_connection_manager(
        f"bench_{config}",
        route_config={
            "name": "backend",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}],
                }
            ],
        },
    )
    typed = hcm["typed_config"]
    if config in ("source", "source+log"):
        typed["access_log"] = metrics.http_access_logs(metrics.source_tags())
        at = next(i for i, f in enumerate(typed["http_filters"]) if f["name"] == ROUTER_FILTER)
        typed["http_filters"].insert(at, metrics.peer_identity_filter())
    elif config == "destination":
        typed["access_log"] = metrics.http_access_logs(metrics.destination_tags(mtls=True))
    if config == "source+log":
        typed["access_log"].append(logs.file_access_log(MeshConfig(accessLogFile=str(log_file))))
    endpoint = Endpoint(
        "127.0.0.1", nginx_port, labels={"app": "backend", "version": "v1"}, workload="default/backend-v1"
    )
    backend = {
        "name": "backend",
        "type": "STATIC",
        "connect_timeout": "1s",
        "metadata": metrics.cluster_metadata(SERVICE),
        "load_assignment": {
            "cluster_name": "backend",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {"address": socket_address("127.0.0.1", nginx_port)},
                            "metadata": {
                                "filter_metadata": {metrics.METADATA_KEY: metrics.endpoint_metadata(endpoint)}
                            },
                        }
                    ]
                }
            ],
        },
    }
    listener = {
        "name": "bench",
        "address": socket_address("127.0.0.1", listen_port),
        "filter_chains": [{"filters": [hcm]}],
    }
    return {
        "static_resources": {
            "listeners": [listener, prometheus_listener("127.0.0.1", prometheus_port, metrics.own_values({}))],
            "clusters": [backend, prometheus_cluster(admin_port)],
        }
    }


def get_seconds(url: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = time.perf_counter()
    with opener.open(url, timeout=10) as response:
        response.read()
    return time.perf_counter() - start


def run(opts: argparse.Namespace) -> dict:
    os.environ.update(metrics.proxy_environment(CLIENT))  # the agent would give these to its Envoy
    load = {"connections": opts.connections, "threads": opts.threads, "duration": opts.duration}
    warm = {**load, "duration": 1}
    with tempfile.TemporaryDirectory(prefix="plait-bench-telemetry-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        script = workdir / "nginx.sh"
        script.write_text(lm.NGINX_SCRIPT.format(root=workdir, body=lm.BODY))
        nginx_url = stack.enter_context(lm.host_nginx(workdir, script))
        nginx_port = int(nginx_url.rsplit(":", 1)[1].strip("/"))
        envoys = {}
        for config in CONFIGS:
            ports = {"listen": free_port(), "admin": free_port(), "prometheus": free_port()}
            log_file = workdir / f"{config}-access.log"
            boot = bootstrap(config, ports["listen"], ports["admin"], ports["prometheus"], nginx_port, log_file)
            envoy = stack.enter_context(run_envoy(boot, admin_port=ports["admin"], workdir=workdir / config))
            envoys[config] = (envoy, ports)
        repeats = []
        for index in range(opts.repeat):
            order = CONFIGS if index % 2 == 0 else tuple(reversed(CONFIGS))
            figures = {}
            for config in order:
                envoy, ports = envoys[config]
                url = f"http://127.0.0.1:{ports['listen']}/"
                lm.wrk(url, warm)
                result = lm.wrk(url, load, envoys=[envoy.pid])
                figures[config] = {**result, "envoy_cpu_us_per_request": result["envoy_cpu_us_per_request"][0]}
                print(
                    f"  repeat {index + 1} {config:12} {figures[config]['rps']:9.0f} req/s  "
                    f"{figures[config]['envoy_cpu_us_per_request']:6.2f} µs/request"
                )
            repeats.append(figures)
        envoy, ports = envoys["source"]
        renamed = [get_seconds(f"http://127.0.0.1:{ports['prometheus']}/stats/prometheus") for _ in range(SCRAPES)]
        raw = [get_seconds(f"http://127.0.0.1:{ports['admin']}/stats/prometheus") for _ in range(SCRAPES)]
        size = len(envoy.admin("/stats/prometheus"))

    def cost(config: str) -> dict:
        deltas = [r[config]["envoy_cpu_us_per_request"] - r["off"]["envoy_cpu_us_per_request"] for r in repeats]
        ratios = [r[config]["rps"] / r["off"]["rps"] for r in repeats]
        return {"extra_cpu_us_per_request": lm.stats(deltas), "rps_ratio": lm.stats(ratios)}

    return {
        "load": load,
        "repeats": repeats,
        "per_config": {
            c: {
                "envoy_cpu_us_per_request": lm.stats([r[c]["envoy_cpu_us_per_request"] for r in repeats]),
                "rps": lm.stats([r[c]["rps"] for r in repeats]),
            }
            for c in CONFIGS
        },
        "cost": {c: cost(c) for c in CONFIGS if c != "off"},
        "scrape": {
            "bytes": size,
            "port_15090_ms": round(statistics.median(renamed) * 1000, 2),
            "admin_ms": round(statistics.median(raw) * 1000, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "telemetry.json")
    opts = parser.parse_args()
    results = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **run(opts)}
    for config, figures in results["cost"].items():
        cpu, ratio = figures["extra_cpu_us_per_request"], figures["rps_ratio"]
        print(
            f"{config:12} +{cpu['median']:.2f} µs/request (min {cpu['min']:.2f}, max {cpu['max']:.2f}); "
            f"req/s × {ratio['median']:.2f}"
        )
    scrape = results["scrape"]
    print(
        f"scrape: {scrape['bytes']} bytes; 15090 (Lua rename) {scrape['port_15090_ms']} ms, admin {scrape['admin_ms']} ms"
    )
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {opts.out}")


if __name__ == "__main__":
    main()
