"""mTLS cost benchmark: what automatic mutual TLS between sidecars costs on the mesh path client →
sidecar → sidecar → nginx, against plaintext, with connection reuse on (Envoy's pools, the default)
and off (a new sidecar-to-sidecar connection, so a new TLS handshake, for every request).

Run:  .venv/bin/python benchmarks/mtls.py [--repeat 3] [--duration 8] [--connections 16] [--threads 2]
          [--modes proxy capture] [--no-isolate] [--out benchmarks/results/mtls.json]
          (about 6 minutes with the defaults; root for capture mode)

Needs wrk and nginx (Debian: ``apt-get install -y wrk nginx-light``).

The mesh is localmesh.py's overhead mesh (an nginx ``backend`` behind ``backend:9080`` and an idle
``client`` whose sidecar wrk sends through, the same mesh path and wrk loads, Envoy CPU from /proc),
brought up once per mode; the four configurations are switched live on it with ``plait apply -f``
and ``plait delete -f`` of two documents:

* ``mtls``: nothing applied. Both pods' agents hold workload certificates, so the client sidecar
  uses auto mTLS to the backend (PERMISSIVE by default);
* ``plaintext``: a mesh-wide PeerAuthentication (istio-system) with mtls mode DISABLE: the backend
  sidecar accepts plaintext only and clients skip auto mTLS, as Istio does;
* ``*_no_reuse``: a DestinationRule for the backend with
  ``trafficPolicy.connectionPool.http.maxRequestsPerConnection: 1``: every request opens a new
  client-sidecar → backend-sidecar connection.

After each switch the script waits until the client sidecar's backend cluster shows it
(``transport_socket_matches`` for auto mTLS, ``max_requests_per_connection: 1``) and the backend
sidecar's listeners do (a TLS filter chain, or none), read from their admin APIs' config_dump, then
warms up 1 s. The configurations run in the order plaintext, mtls, mtls_no_reuse, plaintext_no_reuse,
reversed on every other repeat, so the two sides of each pair are neighbours in time. Each runs
the two loads (c16: --connections, --threads, --duration s; c1: 1 connection, half the duration);
around each wrk run the client sidecar's counters for the backend cluster (``ssl.handshake``,
``ssl.session_reused``, ``upstream_cx_total``, ``ssl.versions.*``, ``ssl.ciphers.*``) are read,
showing how many TLS handshakes (of which resumed sessions) and connections the run made, and with
what TLS.

In capture mode the client pod's network namespace gets ``net.ipv4.tcp_tw_reuse=1``: connections
the client sidecar closes sit in TIME_WAIT for 60 s, and without reuse (which Linux does by default
only on loopback, so in proxy mode already) the plaintext runs without connection reuse exhaust
the ~28k ephemeral ports and end up measuring connect()'s search for a free one. (mTLS ones barely
leave TIME_WAIT behind: the backend's close_notify reaches the closed client socket, which resets.)

Derived figures, taken pair by pair within a repeat then as medians: the cost of mTLS with reuse
(mtls − plaintext), without reuse (mtls_no_reuse − plaintext_no_reuse), and the handshake's
(the second minus the first), and, for scale, a new plaintext connection per request
(plaintext_no_reuse − plaintext): Envoy CPU µs per request (both sidecars), latency ms, req/s ratios.

As root the script re-runs itself in a network and mount namespace of its own (localmesh.py's
``isolate``), so meshes others run on the machine neither collide with nor disturb it. Prints a
table and writes JSON. Reports only; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import localmesh as lm
from common import machine

from plait.host.envoy_binary import find_envoy
from plait.runtime import netns
from plait.runtime.local import Pod
from plait.testing.live import run_plait

BACKEND_CLUSTER = "outbound|9080||backend.default.svc.cluster.local"
CONFIGS = ("plaintext", "mtls", "mtls_no_reuse", "plaintext_no_reuse")  # one step apart, in this order
SWITCH_TIMEOUT_S = 30.0
# the client sidecar's counters of the backend cluster (summed over its transport socket matches)
COUNTERS = {
    "ssl.handshake": "ssl_handshakes",
    "ssl.session_reused": "ssl_sessions_reused",
    "upstream_cx_total": "connections",
}
TLS_PARAMETERS = re.compile(r"ssl\.(versions|ciphers|curves|sigalgs)\.")
ADMIN_FETCH = (
    "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)

PLAINTEXT_DOC = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: DISABLE}
"""

NO_REUSE_DOC = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: default}
spec:
  host: backend
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
"""


def is_mtls(config: str) -> bool:
    return config.startswith("mtls")


def reuses(config: str) -> bool:
    return not config.endswith("_no_reuse")


# ------------------------------------------------------------------ the sidecars' admin APIs


class Sidecar:
    """One pod's sidecar Envoy, through its admin API (on the pod's loopback: inside its network namespace
    in capture mode)."""

    def __init__(self, pod: Pod, mode: str):
        self.pod = pod
        self.namespace = netns.Network().namespace(pod.name) if mode == "capture" else None

    def admin(self, path: str) -> str:
        argv = [sys.executable, "-c", ADMIN_FETCH, f"http://127.0.0.1:{self.pod.admin_port}{path}"]
        if self.namespace:
            argv = ["ip", "netns", "exec", self.namespace, *argv]
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=15, env=env).stdout

    def backend_counters(self) -> dict[str, int]:
        """The client's counters of the backend cluster, by name after the cluster's (histograms, whose
        values are not integers, left out)."""
        query = urllib.parse.quote(f"^cluster\\.{re.escape(BACKEND_CLUSTER)}\\.")
        lines = [line.partition(": ") for line in self.admin(f"/stats?filter={query}").splitlines()]
        prefix = f"cluster.{BACKEND_CLUSTER}."
        return {name.removeprefix(prefix): int(value) for name, _, value in lines if value.isdigit()}

    def reuse_time_wait_ports(self) -> None:
        """Let the pod's new connections reuse local ports in TIME_WAIT (see the module's docstring)."""
        subprocess.run(
            ["ip", "netns", "exec", self.namespace, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"],
            check=True,
            timeout=15,
        )

    def backend_cluster(self) -> dict | None:
        dump = json.loads(self.admin("/config_dump?resource=dynamic_active_clusters"))
        return next((c["cluster"] for c in dump.get("configs", []) if c["cluster"]["name"] == BACKEND_CLUSTER), None)

    def accepts_tls(self) -> bool:
        """Whether an inbound listener has a TLS filter chain (mTLS PERMISSIVE/STRICT, not DISABLE)."""
        return "DownstreamTlsContext" in self.admin("/config_dump?resource=dynamic_listeners")


def client_shows(client: Sidecar, config: str) -> bool:
    cluster = client.backend_cluster()
    if cluster is None:
        return False
    options = json.dumps(cluster.get("typed_extension_protocol_options", {}))
    no_reuse = '"max_requests_per_connection": 1' in options
    return bool(cluster.get("transport_socket_matches")) == is_mtls(config) and no_reuse != reuses(config)


# ------------------------------------------------------------------ switching configurations


def switch(current: str, target: str, workdir: Path, client: Sidecar, backend: Sidecar) -> None:
    """Apply or delete the two documents so the mesh runs `target`; return once both sidecars show it."""
    changes = []
    if is_mtls(current) != is_mtls(target):
        changes.append(("delete" if is_mtls(target) else "apply", "plaintext.yaml"))
    if reuses(current) != reuses(target):
        changes.append(("delete" if reuses(target) else "apply", "no-reuse.yaml"))
    for verb, name in changes:
        result = run_plait(verb, "-f", name, cwd=workdir, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"plait {verb} -f {name} failed: {result.stdout}{result.stderr}")
    deadline = time.monotonic() + SWITCH_TIMEOUT_S
    while not (client_shows(client, target) and backend.accepts_tls() == is_mtls(target)):
        if time.monotonic() > deadline:
            warming = BACKEND_CLUSTER in client.admin("/config_dump?resource=dynamic_warming_clusters")
            raise RuntimeError(
                f"the sidecars did not show configuration {target} within {SWITCH_TIMEOUT_S:.0f} s"
                + (
                    " (the client's backend cluster is still warming: Envoy waits for its endpoints to be sent again)"
                    if warming
                    else ""
                )
            )
        time.sleep(0.2)


def connection_figures(before: dict[str, int], after: dict[str, int]) -> dict:
    """What the client sidecar's backend counters moved by: TLS handshakes (of which resumed sessions),
    connections, and the TLS versions, ciphers, curves and signature algorithms used."""
    moved = {name: value - before.get(name, 0) for name, value in after.items() if value != before.get(name, 0)}
    figures = {
        counter: sum(v for name, v in moved.items() if name == stat or name.endswith("." + stat))
        for stat, counter in COUNTERS.items()
    }
    figures["tls"] = {name.removeprefix("ssl."): v for name, v in moved.items() if TLS_PARAMETERS.match(name)}
    return figures


def measure(mesh: dict, load: dict, client: Sidecar) -> dict:
    """One wrk run through the mesh, with both Envoys' CPU and the client's handshakes and connections."""
    before = client.backend_counters()
    figures = lm.wrk(mesh["url"], load, host=mesh.get("host"), namespace=mesh.get("namespace"), envoys=mesh["envoys"])
    return {**figures, **connection_figures(before, client.backend_counters())}


def config_order(repeat_index: int) -> tuple[str, ...]:
    return CONFIGS if repeat_index % 2 == 0 else tuple(reversed(CONFIGS))


def run_configs(
    mesh: dict, workdir: Path, client: Sidecar, backend: Sidecar, opts: argparse.Namespace, mode: str
) -> list[dict]:
    """Every repeat: the four configurations, each warmed up then measured under both loads."""
    warm_up = {**lm.loads(opts)["loaded"], "duration": 1}
    current, runs = "mtls", []
    for i in range(opts.repeat):
        for config in config_order(i):
            switch(current, config, workdir, client, backend)
            current = config
            lm.wrk(mesh["url"], warm_up, host=mesh.get("host"), namespace=mesh.get("namespace"))
            for name, load in lm.loads(opts).items():
                run = {"repeat": i, "config": config, "load": name, **measure(mesh, load, client)}
                runs.append(run)
                print(
                    f"  {mode:<8} run {i + 1} {config:<19} {name:<14} {run['rps']:6.0f} req/s "
                    f"p50 {run['p50_ms']:.3f} ms p99 {run['p99_ms']:.3f} ms, Envoy CPU "
                    f"{sum(run['envoy_cpu_us_per_request']):5.1f} µs/req, {run['ssl_handshakes']} handshakes "
                    f"({run['ssl_sessions_reused']} resumed), "
                    f"{run['connections']} connections / {run['requests']} requests",
                    flush=True,
                )
    return runs


# ------------------------------------------------------------------ figures


def per_config(runs: list[dict]) -> dict:
    """Medians [min–max] of one load and configuration's runs."""
    out = {f: lm.stats([r[f] for r in runs]) for f in ("rps", "p50_ms", "p99_ms")}
    out["envoy_cpu_us_per_request"] = {
        "client_sidecar": lm.stats([r["envoy_cpu_us_per_request"][0] for r in runs]),
        "backend_sidecar": lm.stats([r["envoy_cpu_us_per_request"][1] for r in runs]),
        "both": lm.stats([round(sum(r["envoy_cpu_us_per_request"]), 2) for r in runs]),
    }
    for counter in COUNTERS.values():
        out[counter] = lm.stats([r[counter] for r in runs])
        out[f"{counter}_per_request"] = lm.stats([round(r[counter] / r["requests"], 4) for r in runs])
    out["tls"] = dict(sum((Counter(r["tls"]) for r in runs), Counter()))
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    out["socket_errors"] = [r["socket_errors"] for r in runs if r["socket_errors"]]
    return out


def difference(a: dict, b: dict) -> dict:
    """What run `b` adds over run `a`: CPU µs per request (both sidecars), latency ms, req/s ratio."""
    return {
        "cpu_us_per_request": sum(b["envoy_cpu_us_per_request"]) - sum(a["envoy_cpu_us_per_request"]),
        "p50_ms": b["p50_ms"] - a["p50_ms"],
        "p99_ms": b["p99_ms"] - a["p99_ms"],
        "rps_ratio": b["rps"] / a["rps"],
    }


def summarise_pairs(pairs: list[dict]) -> dict:
    return {f: lm.stats([round(p[f], 4) for p in pairs]) for f in pairs[0]}


def summarise_load(runs: list[dict]) -> dict:
    """One load: each configuration, and the pairwise costs of mTLS, of its handshake and of a new
    plaintext connection per request."""
    by = {(r["repeat"], r["config"]): r for r in runs}
    repeats = sorted({r["repeat"] for r in runs})
    mtls_reuse = [difference(by[i, "plaintext"], by[i, "mtls"]) for i in repeats]
    mtls_no_reuse = [difference(by[i, "plaintext_no_reuse"], by[i, "mtls_no_reuse"]) for i in repeats]
    handshake = [
        {f: n[f] - r[f] for f in ("cpu_us_per_request", "p50_ms", "p99_ms")} for r, n in zip(mtls_reuse, mtls_no_reuse)
    ]
    connection = [difference(by[i, "plaintext"], by[i, "plaintext_no_reuse"]) for i in repeats]
    return {
        "configs": {c: per_config([r for r in runs if r["config"] == c]) for c in CONFIGS},
        "mtls_cost_with_reuse": summarise_pairs(mtls_reuse),
        "mtls_cost_without_reuse": summarise_pairs(mtls_no_reuse),
        "handshake_cost": summarise_pairs(handshake),
        "plaintext_new_connection_cost": summarise_pairs(connection),
    }


def bench_mode(mode: str, opts: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mtls-{mode}-") as tmp:
        workdir = Path(tmp)
        script = workdir / "backend.sh"
        script.write_text(lm.NGINX_SCRIPT.format(root=workdir, body=lm.BODY))
        (workdir / "app.yaml").write_text(lm.MANIFEST.format(script=script))
        (workdir / "plaintext.yaml").write_text(PLAINTEXT_DOC)
        (workdir / "no-reuse.yaml").write_text(NO_REUSE_DOC)
        with lm.mesh_up(["up", "-f", "app.yaml"], mode, workdir) as (up_s, state, down):
            pods = {p.name: p for p in state.pods}
            client, backend = Sidecar(pods["client-0"], mode), Sidecar(pods["backend-0"], mode)
            if mode == "capture":
                client.reuse_time_wait_ports()
            mesh, _ = lm.paths_for(mode, state, None)
            lm.call_once(mesh)
            runs = run_configs(mesh, workdir, client, backend, opts, mode)
            down()
    return {
        "mesh_target": {k: v for k, v in mesh.items() if k != "envoys"},
        "up_s": round(up_s, 2),
        "time_wait_reuse_in_client_pod": mode == "capture",
        "loads": lm.loads(opts),
        **{name: summarise_load([r for r in runs if r["load"] == name]) for name in lm.loads(opts)},
        "runs": runs,
    }


# ------------------------------------------------------------------ report

COSTS = {
    "mtls_cost_with_reuse": "mTLS, reuse",
    "mtls_cost_without_reuse": "mTLS, no reuse",
    "handshake_cost": "handshake",
    "plaintext_new_connection_cost": "new plaintext conn",
}


def print_config(prefix: str, config: str, c: dict) -> None:
    per_request = " ".join(
        f"{c[f'{counter}_per_request']['median']:{width}.4f}" for counter, width in zip(COUNTERS.values(), (15, 12, 10))
    )
    print(
        f"{prefix} {config:<19} {lm.cell(c['rps'], '.0f'):>20} {lm.cell(c['p50_ms'], '.3f'):>20} "
        f"{lm.cell(c['p99_ms'], '.3f'):>20} {c['envoy_cpu_us_per_request']['both']['median']:11.1f} {per_request}"
    )


def print_cost(prefix: str, label: str, d: dict) -> None:
    ratio = f", req/s ×{d['rps_ratio']['median']:.3f}" if "rps_ratio" in d else ""
    print(
        f"{prefix} cost of {label:<19} CPU {d['cpu_us_per_request']['median']:+6.1f} µs/req, "
        f"p50 {d['p50_ms']['median']:+.3f} ms, p99 {d['p99_ms']['median']:+.3f} ms{ratio}"
    )


def print_report(results: dict) -> None:
    print("\nmTLS against plaintext on the mesh path (client → sidecar → sidecar → nginx); medians [min–max]")
    print(
        f"{'mode':<8} {'load':<5} {'config':<19} {'req/s':>20} {'p50 ms':>20} {'p99 ms':>20} "
        f"{'CPU µs/req':>11} {'handshakes/req':>15} {'resumed/req':>12} {'conns/req':>10}"
    )
    for mode, by_load in results.items():
        for name in by_load["loads"]:
            prefix = f"{mode:<8} {'c16' if name == 'loaded' else 'c1':<5}"
            for config, figures in by_load[name]["configs"].items():
                print_config(prefix, config, figures)
            for key, label in COSTS.items():
                print_cost(prefix, label, by_load[name][key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (c1 runs: half)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--modes", nargs="+", choices=lm.MODES, default=list(lm.MODES))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mtls.json")
    parser.add_argument(
        "--no-isolate",
        action="store_true",
        help="run on the machine's own network (default as root: a namespace of its own)",
    )
    opts = parser.parse_args()
    lm.preflight(opts.modes)
    isolated = os.environ.get(lm.ISOLATED_ENV) == "1"
    lm.isolate_unless(opts.no_isolate, Path(__file__))
    started = time.monotonic()
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine(),
            **lm.mesh_path_tools(str(find_envoy())),
        },
        "settings": {
            "repeat": opts.repeat,
            "duration_s": opts.duration,
            "connections": opts.connections,
            "wrk_threads": opts.threads,
            "body_bytes": len(lm.BODY),
            "modes": opts.modes,
            "isolated_namespace": isolated,
        },
    }
    report["results"] = {mode: bench_mode(mode, opts) for mode in opts.modes}
    report["wall_s"] = round(time.monotonic() - started, 1)
    print_report(report["results"])
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwall time {report['wall_s']} s; wrote {opts.out}")


if __name__ == "__main__":
    main()
