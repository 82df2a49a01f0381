"""Tap cost benchmark: the Envoy CPU per request that the tap logger adds while nobody taps (it should
be about nothing: a runtime lookup per request).

Run:  .venv/bin/python benchmarks/tap.py [--repeat 5] [--duration 8] [--connections 16]
          [--threads 2] [--out benchmarks/results/tap.json]
          (about 1½ minutes with the defaults)

Needs wrk and nginx (Debian: ``apt-get install -y wrk nginx-light``).

Two Envoys with one worker each in front of one nginx, built as benchmarks/telemetry.py builds its
``source`` Envoy (a client sidecar's connection manager with Istio's metrics and the peer headers):

* ``no-tap``: that, without the tap logger;
* ``tap-off``: the same plus the tap logger every plait HCM carries (`plait.telemetry.tap`), its
  runtime key ``plait.tap`` at 0 in a runtime layer, as a proxy nobody taps has it (its ``xds-grpc``
  cluster points nowhere: nothing is ever sent).

Every repeat runs wrk against each in turn (order reversed on every other repeat, 1 s warm-up);
Envoy CPU per request comes from /proc/PID/stat. The cost is taken within each repeat (tap-off −
no-tap), then as the median over the repeats. Prints a table, writes JSON. Reports only; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import localmesh as lm
from common import machine

import telemetry as bench
from plait.telemetry import metrics, tap
from plait.testing.envoy import run_envoy
from plait.testing.live import free_port
from plait.xds.translate.common import XDS_CLUSTER, socket_address

CONFIGS = ("no-tap", "tap-off")


def bootstrap(config: str, listen_port: int, admin_port: int, prometheus_port: int, nginx_port: int) -> dict:
    boot = bench.bootstrap("source", listen_port, admin_port, prometheus_port, nginx_port)
    if config == "tap-off":
        hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["access_log"].append(tap.tap_access_log("out", XDS_CLUSTER))
        nowhere = {
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {
                "cluster_name": XDS_CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address("127.0.0.1", free_port())}}]}],
            },
        }
        boot["static_resources"]["clusters"].append(nowhere)
        boot["layered_runtime"] = {
            "layers": [{"name": tap.RUNTIME_LAYER, "static_layer": tap.runtime_layer(False)["layer"]}]
        }
    return boot


def run(opts: argparse.Namespace) -> dict:
    os.environ.update(metrics.proxy_environment(bench.CLIENT))
    load = {"connections": opts.connections, "threads": opts.threads, "duration": opts.duration}
    warm = {**load, "duration": 1}
    with tempfile.TemporaryDirectory(prefix="plait-bench-tap-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        script = workdir / "nginx.sh"
        script.write_text(lm.NGINX_SCRIPT.format(root=workdir, body=lm.BODY))
        nginx_url = stack.enter_context(lm.host_nginx(workdir, script))
        nginx_port = int(nginx_url.rsplit(":", 1)[1].strip("/"))
        envoys = {}
        for config in CONFIGS:
            ports = {"listen": free_port(), "admin": free_port(), "prometheus": free_port()}
            boot = bootstrap(config, ports["listen"], ports["admin"], ports["prometheus"], nginx_port)
            envoy = stack.enter_context(run_envoy(boot, admin_port=ports["admin"], workdir=workdir / config))
            envoys[config] = (envoy, ports)
        repeats = []
        for index in range(opts.repeat):
            figures = {}
            for config in CONFIGS if index % 2 == 0 else tuple(reversed(CONFIGS)):
                envoy, ports = envoys[config]
                url = f"http://127.0.0.1:{ports['listen']}/"
                lm.wrk(url, warm)
                result = lm.wrk(url, load, envoys=[envoy.pid])
                figures[config] = {**result, "envoy_cpu_us_per_request": result["envoy_cpu_us_per_request"][0]}
                print(
                    f"  repeat {index + 1} {config:8} {figures[config]['rps']:9.0f} req/s  "
                    f"{figures[config]['envoy_cpu_us_per_request']:6.2f} µs/request"
                )
            repeats.append(figures)
        sent = envoys["tap-off"][0].admin("/stats?filter=grpc_access_log")
    deltas = [r["tap-off"]["envoy_cpu_us_per_request"] - r["no-tap"]["envoy_cpu_us_per_request"] for r in repeats]
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
        "tap_off_extra_cpu_us_per_request": lm.stats(deltas),
        "tap_off_envoy_stats": sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tap.json")
    opts = parser.parse_args()
    results = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **run(opts)}
    cpu = results["tap_off_extra_cpu_us_per_request"]
    print(f"tap configured, off: {cpu['median']:+.2f} µs/request (min {cpu['min']:+.2f}, max {cpu['max']:+.2f})")
    print(f"tap-off Envoy's gRPC access log stats: {results['tap_off_envoy_stats'].strip() or 'none'}")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {opts.out}")


if __name__ == "__main__":
    main()
