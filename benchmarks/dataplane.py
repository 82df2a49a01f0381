"""Data plane against bare Envoy: in one run, on the same loopback path, the same nginx backend and
the same wrk loads, a bare pair of minimal Envoys (the floor) and plait's sidecar pair with mutual
TLS and Istio's metrics on; per-sidecar Envoy CPU per request and the pair's added latency, as
ratios plait / bare.

Run:  .venv/bin/python benchmarks/dataplane.py [--repeat 3] [--duration 3] [--connections 16]
          [--threads 2] [--configs default no_metrics no_tracing no_sampling plaintext
                     no_xfcc no_peer_headers leaner no_fault_cors lean] [--no-isolate]
          [--out benchmarks/results/dataplane.json]
          (about 5 minutes with the defaults; as root it isolates itself, see below)

Needs wrk and nginx (Debian: ``apt-get install -y wrk nginx-light``).

Paths, all ending at one nginx process (localmesh.py's overhead mesh, proxy mode: the ``backend``
pod's nginx answering a 25-byte body, and an idle ``client`` pod whose sidecar wrk sends through):

* ``direct``: wrk → nginx (the backend pod's app address);
* ``bare`` (the floor): wrk → bare client Envoy → bare server Envoy → nginx. Each bare Envoy has a
  static bootstrap of one listener (HTTP connection manager with the router and nothing else, a
  static route to its one cluster), one STATIC cluster (HTTP/1.1, as plait's sidecar-to-sidecar
  clusters of an ``http`` port), an admin listener, no stats sinks, tags, tracing or access logs;
  plaintext. It runs the same ``envoy`` binary as plait's sidecars, with their command-line flags
  read from the client sidecar's /proc/PID/cmdline (``--concurrency``, ``--disable-hot-restart``,
  ``--log-level``);
* ``bare_mtls``: the same pair with mutual TLS between them, from Envoy's defaults as plait's
  sidecars use them (TLS 1.2 upstream, an EC P-256 workload certificate with a SPIFFE identity
  issued by plait's CA code, each side requiring the other's): the floor for what mTLS itself costs;
* ``plait``: wrk → client sidecar's explicit-proxy listener (``Host: backend:9080``) → backend
  sidecar → nginx, in one or more configurations switched live with ``plait apply``/``delete``:
  ``default`` (nothing applied: auto mTLS, Istio's metrics with the client's peer headers, tracing
  at 1 %, the tap logger off, the fault and cors filters); each without one of them:
  ``no_metrics`` (a root-namespace Telemetry disabling ALL_METRICS: no stats access loggers),
  ``no_tracing`` (the MeshConfig ConfigMap ``istio`` with ``enableTracing: false``),
  ``no_sampling`` (a Telemetry with randomSamplingPercentage 0: tracing configured, nothing
  sampled), ``plaintext`` (a mesh-wide PeerAuthentication DISABLE), ``no_xfcc`` (an EnvoyFilter
  setting the inbound connection managers' forward_client_cert_details from APPEND_FORWARD to
  FORWARD_ONLY: no x-forwarded-client-cert built per request), ``no_peer_headers`` and
  ``no_fault_cors`` (EnvoyFilters removing the HTTP filter header_mutation, i.e. the
  x-plait-peer header, or fault and cors: the latter only when named); ``leaner`` (all of these
  off, but the sampling one that no_tracing covers), and, only when named, ``lean`` (no metrics, no
  tracing, plaintext).
  After each switch the script waits until both sidecars' config_dump shows it, then warms up 1 s.

Loads: ``c16`` (--connections, --threads, --duration s: throughput and Envoy CPU per request) and
``c1`` (1 connection, 1 thread, --duration s: latency without queueing). Every repeat runs each
path under both loads; the order of the paths reverses on every other repeat, so that bare and
plait runs are neighbours in time. Envoy CPU per request is utime+stime from /proc/PID/stat of
each Envoy (bare: the two this script starts; plait: the sidecars under the agents in
state.json) around each wrk run, divided by the requests wrk made.

Derived figures, pair by pair within a repeat, then medians [min–max] over the repeats: per
sidecar, CPU per request plait / bare (c16; target ≤ 1.1; and / bare_mtls); the pair's added p99 at one connection
(path p99 − direct p99), plait / bare (target ≤ 2), the same for p90 and p50; and what ``default``
costs over each other configuration (CPU µs per request per sidecar, added latency). The target's
added-p99 ratio is also taken from the medians over the repeats ((plait − direct) / (bare − direct)),
steadier than the pairwise one when one repeat's direct p99 is a scheduling hiccup. Before the
runs, each Envoy's idle CPU (3 s without traffic, from /proc/PID/task/*/schedstat).

As root the script re-runs itself in a network and mount namespace of its own (localmesh.py's
``isolate``), so meshes others run on the machine neither collide with nor disturb it. Prints a
table and writes JSON. Reports only; asserts nothing. Everything started is stopped.
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
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import localmesh as lm
import mtls
from common import machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from plait.ca.authority import CertificateAuthority, generate_root, key_pem
from plait.host.envoy_binary import find_envoy
from plait.testing.live import free_port, run_plait

CPU_TARGET = 1.1
ADDED_P99_TARGET = 2.0
SIDES = ("client", "server")
FLOORS = ("bare", "bare_mtls")  # the bare pair in plaintext, and with mutual TLS as plait's sidecars speak it
BARE_IDENTITY = "spiffe://cluster.local/ns/default/sa/bare"
SWITCH_TIMEOUT_S = 30.0
SIDECAR_FLAGS = ("--concurrency", "--log-level")  # flags with a value copied from plait's sidecar

NO_METRICS_DOC = """apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: ALL_METRICS}
      disabled: true
"""

NO_TRACING_DOC = """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    enableTracing: false
"""

NO_SAMPLING_DOC = """apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: no-sampling, namespace: default}
spec:
  tracing:
  - randomSamplingPercentage: 0
"""

REMOVE_FILTER = """  - applyTo: HTTP_FILTER
    match:
      listener:
        filterChain:
          filter: {{name: envoy.filters.network.http_connection_manager, subFilter: {{name: {name}}}}}
    patch: {{operation: REMOVE}}
"""


def remove_filters(name: str, filters: tuple[str, ...]) -> str:
    """An EnvoyFilter removing these HTTP filters from every connection manager of every proxy."""
    head = f"apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: {name}, namespace: istio-system}}\n"
    return head + "spec:\n  configPatches:\n" + "".join(REMOVE_FILTER.format(name=f) for f in filters)


PEER_HEADERS = "envoy.filters.http.header_mutation"  # the client's x-plait-peer header for the server's metrics
FAULT_CORS = ("envoy.filters.http.fault", "envoy.filters.http.cors")


NO_XFCC_DOC = """apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: no-xfcc, namespace: istio-system}
spec:
  configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter: {name: envoy.filters.network.http_connection_manager}
    patch:
      operation: MERGE
      value:
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          forward_client_cert_details: FORWARD_ONLY
"""  # not SANITIZE: that is the enum's 0, which a MERGE leaves alone (as Istio's does)


@dataclass(frozen=True)
class Document:
    """A document applied on top of the default mesh: its text, a pattern the sidecars' listeners
    (config_dump) match until it applies, the other documents whose pattern it removes too, and
    whether the pattern is only in the backend sidecar's (an inbound setting)."""

    text: str
    mark: str
    hides: frozenset[str] = frozenset()
    inbound_only: bool = False


DOCUMENTS = {
    "plaintext.yaml": Document(mtls.PLAINTEXT_DOC, "DownstreamTlsContext", inbound_only=True),
    "no-xfcc.yaml": Document(NO_XFCC_DOC, "APPEND_FORWARD", inbound_only=True),
    "no-metrics.yaml": Document(NO_METRICS_DOC, re.escape("envoy.access_loggers.stats")),
    "no-tracing.yaml": Document(NO_TRACING_DOC, '"random_sampling"', frozenset({"no-sampling.yaml"})),
    "no-sampling.yaml": Document(NO_SAMPLING_DOC, r'"random_sampling": \{\s*"value"'),  # 0 %: an empty value
    "no-peer-headers.yaml": Document(remove_filters("no-peer-headers", (PEER_HEADERS,)), re.escape(PEER_HEADERS)),
    "no-fault-cors.yaml": Document(remove_filters("no-fault-cors", FAULT_CORS), re.escape(FAULT_CORS[0])),
}
LEAN = {"plaintext.yaml", "no-metrics.yaml", "no-tracing.yaml"}
APPLIED = {
    "default": set(),
    "no_metrics": {"no-metrics.yaml"},
    "no_tracing": {"no-tracing.yaml"},
    "plaintext": {"plaintext.yaml"},
    "lean": LEAN,
    "leaner": LEAN | {"no-peer-headers.yaml", "no-fault-cors.yaml", "no-xfcc.yaml"},
    # finer, not run by default
    "no_sampling": {"no-sampling.yaml"},
    "no_peer_headers": {"no-peer-headers.yaml"},
    "no_fault_cors": {"no-fault-cors.yaml"},
    "no_xfcc": {"no-xfcc.yaml"},
}
CONFIGS = tuple(APPLIED)
DEFAULT_CONFIGS = (
    "default",
    "no_metrics",
    "no_tracing",
    "no_sampling",
    "plaintext",
    "no_xfcc",
    "no_peer_headers",
    "leaner",
)


# ------------------------------------------------------------------ the bare pair


def socket_address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


@dataclass(frozen=True)
class TlsFiles:
    """One workload certificate (with its key) both bare Envoys present, the root that signed it, and
    its SPIFFE identity, which each side requires of the other."""

    cert: Path
    key: Path
    root: Path
    identity: str


def bare_tls_files(workdir: Path, identity: str = BARE_IDENTITY) -> TlsFiles:
    """A fresh root and a workload certificate from plait's own CA code (EC P-256, as a sidecar's)."""
    key, root = generate_root()
    authority = CertificateAuthority(key, (root,), workdir / "bare-ca-key.pem")
    workload_key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(workload_key, hashes.SHA256())
    chain = authority.sign(csr, identity, ttl_seconds=86400, now=datetime.now(UTC))
    files = TlsFiles(workdir / "bare-cert.pem", workdir / "bare-key.pem", workdir / "bare-root.pem", identity)
    files.cert.write_bytes(b"".join(chain[:-1]))
    files.key.write_bytes(key_pem(workload_key))
    files.root.write_bytes(chain[-1])
    return files


def tls_context(kind: str, tls: TlsFiles) -> dict:
    """A transport socket with the certificate, requiring the peer's (`kind`: Downstream or Upstream)."""
    context: dict = {
        "@type": f"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}TlsContext",
        "common_tls_context": {
            "tls_certificates": [
                {"certificate_chain": {"filename": str(tls.cert)}, "private_key": {"filename": str(tls.key)}}
            ],
            "validation_context": {
                "trusted_ca": {"filename": str(tls.root)},
                "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": tls.identity}}],
            },
        },
    }
    if kind == "Downstream":
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def bare_bootstrap(
    listen_port: int,
    admin_port: int,
    upstream: tuple[str, int],
    *,
    downstream_tls: TlsFiles | None = None,
    upstream_tls: TlsFiles | None = None,
) -> dict:
    """A minimal static Envoy: one HTTP listener on 127.0.0.1 (connection manager + router, every
    request to one cluster), one STATIC HTTP/1.1 cluster to `upstream`, an admin listener; with
    `downstream_tls` the listener, with `upstream_tls` the cluster speaks mutual TLS."""
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "bare",
        "route_config": {
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}
            ]
        },
        "http_filters": [router],
    }
    chain: dict = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
    if downstream_tls:
        chain["transport_socket"] = tls_context("Downstream", downstream_tls)
    listener = {"name": "bare", "address": socket_address("127.0.0.1", listen_port), "filter_chains": [chain]}
    cluster = {
        "name": "up",
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": {
            "cluster_name": "up",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(*upstream)}}]}],
        },
    }
    if upstream_tls:
        cluster["transport_socket"] = tls_context("Upstream", upstream_tls)
    return {
        "admin": {"address": socket_address("127.0.0.1", admin_port)},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


def sidecar_flags(envoy_pid: int) -> tuple[str, list[str]]:
    """The binary a sidecar Envoy runs and the flags the bare Envoys copy from its command line."""
    argv = [a.decode() for a in Path(f"/proc/{envoy_pid}/cmdline").read_bytes().split(b"\0") if a]
    flags = ["--disable-hot-restart"] if "--disable-hot-restart" in argv else []
    for flag in SIDECAR_FLAGS:
        if flag in argv:
            flags += [flag, argv[argv.index(flag) + 1]]
    return os.path.realpath(f"/proc/{envoy_pid}/exe"), flags


def admin_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as response:  # noqa: S310
            return response.read().strip() == b"LIVE"
    except OSError:
        return False


@contextmanager
def bare_envoy(workdir: Path, name: str, command: list[str], upstream: tuple[str, int], **tls: TlsFiles | None):
    """Start one bare Envoy (`command`: the binary and its flags; `tls`: bare_bootstrap's); yields
    (its PID, its listener port). Stopped on exit."""
    port, admin = free_port(), free_port()
    config = workdir / f"bare-{name}.json"
    config.write_text(json.dumps(bare_bootstrap(port, admin, upstream, **tls), indent=2) + "\n")
    log_path = workdir / f"bare-{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [command[0], "-c", str(config), *command[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 15
        while not admin_ready(admin):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare Envoy {name} did not start; see {log_path}")
            time.sleep(0.05)
        yield process.pid, port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def bare_pair(workdir: Path, name: str, command: list[str], nginx: tuple[str, int], tls: TlsFiles | None = None):
    """Both bare Envoys of one path, server side first (mutual TLS between them with `tls`); yields
    the path's target: its URL and the Envoys' PIDs, client first."""
    with (
        bare_envoy(workdir, f"{name}-server", command, nginx, downstream_tls=tls) as (server_pid, server_port),
        bare_envoy(workdir, f"{name}-client", command, ("127.0.0.1", server_port), upstream_tls=tls) as (
            client_pid,
            client_port,
        ),
    ):
        yield {"url": f"http://127.0.0.1:{client_port}/", "envoys": [client_pid, server_pid]}


# ------------------------------------------------------------------ plait's configurations


def hidden(config: str) -> set[str]:
    """The documents whose mark the sidecars lack under `config`: those applied and those they hide."""
    applied = APPLIED[config]
    return applied | {h for name in applied for h in DOCUMENTS[name].hides}


def shows(client: mtls.Sidecar, backend: mtls.Sidecar, config: str) -> bool:
    """Whether both sidecars' config_dump shows `config`: the client's backend cluster with auto mTLS
    or without, and each document's mark in the listeners where it does not apply, none where it does."""
    cluster = client.backend_cluster()
    if cluster is None or bool(cluster.get("transport_socket_matches")) == ("plaintext.yaml" in APPLIED[config]):
        return False
    backend_listeners = backend.admin("/config_dump?resource=dynamic_listeners")
    client_listeners = client.admin("/config_dump?resource=dynamic_listeners")
    for name, document in DOCUMENTS.items():
        dumps = [backend_listeners] if document.inbound_only else [backend_listeners, client_listeners]
        if any(bool(re.search(document.mark, dump)) == (name in hidden(config)) for dump in dumps):
            return False
    return True


def switch(current: str, target: str, workdir: Path, client: mtls.Sidecar, backend: mtls.Sidecar) -> None:
    """Apply or delete documents so the mesh runs `target`; return once both sidecars show it."""
    for name in sorted(APPLIED[current] - APPLIED[target]):
        run_or_fail("delete", name, workdir)
    for name in sorted(APPLIED[target] - APPLIED[current]):
        run_or_fail("apply", name, workdir)
    deadline = time.monotonic() + SWITCH_TIMEOUT_S
    while not shows(client, backend, target):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sidecars did not show configuration {target} within {SWITCH_TIMEOUT_S:.0f} s")
        time.sleep(0.2)


def run_or_fail(verb: str, name: str, workdir: Path) -> None:
    result = run_plait(verb, "-f", name, cwd=workdir, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"plait {verb} -f {name} failed: {result.stdout}{result.stderr}")


# ------------------------------------------------------------------ runs


def idle_cpu(envoys: dict[str, list[int]], seconds: float = 3.0) -> dict[str, list[float]]:
    """Each Envoy's CPU with no traffic (ms per second, one window for all): the background work
    (stats flushes, xDS, timers) every request figure includes a share of."""
    before = {path: [cpu_ns(p) for p in pids] for path, pids in envoys.items()}
    time.sleep(seconds)
    return {
        path: [round((cpu_ns(p) - b) / seconds / 1e6, 2) for p, b in zip(pids, before[path])]
        for path, pids in envoys.items()
    }


def cpu_ns(pid: int) -> int:
    """A process's CPU time so far in ns, summed over its threads (schedstat: finer than /proc/PID/stat's ticks)."""
    return sum(int(t.read_text().split()[0]) for t in Path(f"/proc/{pid}/task").glob("*/schedstat"))


def loads(opts: argparse.Namespace) -> dict[str, dict]:
    return {
        "c16": {"connections": opts.connections, "threads": opts.threads, "duration": opts.duration},
        "c1": {"connections": 1, "threads": 1, "duration": opts.duration},
    }


def measure_path(path: str, target: dict, opts: argparse.Namespace, repeat: int) -> list[dict]:
    """The path under each load (after a 1 s warm-up); one record per load."""
    runs = []
    warm_up = {**loads(opts)["c16"], "duration": 1}
    lm.wrk(target["url"], warm_up, host=target.get("host"))
    for name, load in loads(opts).items():
        figures = lm.wrk(target["url"], load, host=target.get("host"), envoys=target.get("envoys", ()))
        runs.append({"repeat": repeat, "path": path, "load": name, **figures})
        cpu = figures.get("envoy_cpu_us_per_request")
        print(
            f"  run {repeat + 1} {path:<27} {name:<4} {figures['rps']:7.0f} req/s p50 {figures['p50_ms']:.3f} ms"
            f" p99 {figures['p99_ms']:.3f} ms" + (f", Envoy CPU µs/req {cpu[0]:.1f} + {cpu[1]:.1f}" if cpu else ""),
            flush=True,
        )
    return runs


def run_all(paths: dict, configs: list[str], mesh: dict, opts: argparse.Namespace, switch_to) -> list[dict]:
    """Every repeat: direct, bare and each plait configuration, in an order reversed every other repeat."""
    order = ["direct", *FLOORS, *(f"plait_{c}" for c in configs)]
    runs = []
    for i in range(opts.repeat):
        for path in order if i % 2 == 0 else reversed(order):
            if path.startswith("plait_"):
                switch_to(path.removeprefix("plait_"))
                runs += measure_path(path, mesh, opts, i)
            else:
                runs += measure_path(path, paths[path], opts, i)
    return runs


# ------------------------------------------------------------------ figures


def by_key(runs: list[dict]) -> dict:
    return {(r["repeat"], r["path"], r["load"]): r for r in runs}


def per_path(runs: list[dict]) -> dict:
    """Medians [min–max] of one path and load's runs."""
    out = {f: lm.stats([r[f] for r in runs]) for f in ("rps", "p50_ms", "p90_ms", "p99_ms")}
    if "envoy_cpu_us_per_request" in runs[0]:
        out["envoy_cpu_us_per_request"] = {
            side: lm.stats([r["envoy_cpu_us_per_request"][i] for r in runs]) for i, side in enumerate(SIDES)
        }
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    out["socket_errors"] = [r["socket_errors"] for r in runs if r["socket_errors"]]
    return out


def pairwise(runs: list[dict], path: str, baseline: str = "bare") -> dict:
    """`path` against `baseline` pair by pair within each repeat: per-sidecar CPU per request ratio
    (c16 and c1), added latency (path − direct) ratio and difference at each load."""
    runs_by = by_key(runs)
    repeats = sorted({r["repeat"] for r in runs})
    out: dict = {}
    for load in ("c16", "c1"):
        pairs = [(runs_by[i, baseline, load], runs_by[i, path, load], runs_by[i, "direct", load]) for i in repeats]
        figures: dict = {}
        for s, side in enumerate(SIDES):
            figures[f"cpu_ratio_{side}"] = lm.stats(
                [round(p["envoy_cpu_us_per_request"][s] / b["envoy_cpu_us_per_request"][s], 3) for b, p, _ in pairs]
            )
            figures[f"cpu_extra_us_{side}"] = lm.stats(
                [round(p["envoy_cpu_us_per_request"][s] - b["envoy_cpu_us_per_request"][s], 2) for b, p, _ in pairs]
            )
        for f in ("p50_ms", "p90_ms", "p99_ms"):
            added = [(b[f] - d[f], p[f] - d[f]) for b, p, d in pairs]
            figures[f"added_{f}_baseline"] = lm.stats([round(a, 3) for a, _ in added])
            figures[f"added_{f}"] = lm.stats([round(a, 3) for _, a in added])
            figures[f"added_{f}_extra"] = lm.stats([round(a - b, 3) for b, a in added])
            ratios = [round(a / b, 3) for b, a in added if b > 0]  # the baseline adding nothing: no ratio
            figures[f"added_{f}_ratio"] = lm.stats(ratios) if ratios else None
        figures["rps_ratio"] = lm.stats([round(p["rps"] / b["rps"], 3) for b, p, _ in pairs])
        out[load] = figures
    return out


def summarise(runs: list[dict], configs: list[str]) -> dict:
    paths = ["direct", *FLOORS, *(f"plait_{c}" for c in configs)]
    per = {
        load: {p: per_path([r for r in runs if r["path"] == p and r["load"] == load]) for p in paths}
        for load in ("c16", "c1")
    }
    against_bare = {c: pairwise(runs, f"plait_{c}") for c in configs}
    against_bare_mtls = {c: pairwise(runs, f"plait_{c}", "bare_mtls") for c in configs}
    against_default = {c: pairwise(runs, "plait_default", f"plait_{c}") for c in configs if c != "default"}
    return {
        "paths": per,
        "plait_over_bare": against_bare,
        "plait_over_bare_mtls": against_bare_mtls,
        "default_over_config": against_default,
    }


def added_ratio_of_medians(per_load: dict, path: str, f: str, floor: str = "bare") -> float | None:
    """(path − direct) / (floor − direct) of the medians over the repeats: steadier than the pairwise
    ratio when the direct path's tail is noisy (on a shared machine it is)."""
    direct, bare, mesh = (per_load[p][f]["median"] for p in ("direct", floor, path))
    return round((mesh - direct) / (bare - direct), 3) if bare > direct else None


def verdicts(summary: dict) -> dict:
    """The issue's targets against the default configuration's medians."""
    default = summary["plait_over_bare"].get("default")
    if default is None:
        return {}
    cpu = {side: default["c16"][f"cpu_ratio_{side}"]["median"] for side in SIDES}
    over_mtls = summary["plait_over_bare_mtls"]["default"]["c16"]
    pairwise_added = (default["c1"]["added_p99_ms_ratio"] or {}).get("median")
    added = added_ratio_of_medians(summary["paths"]["c1"], "plait_default", "p99_ms")
    return {
        "cpu_ratio_per_sidecar": cpu,
        "cpu_target": CPU_TARGET,
        "cpu_pass": all(v <= CPU_TARGET for v in cpu.values()),
        "cpu_ratio_per_sidecar_over_bare_mtls": {side: over_mtls[f"cpu_ratio_{side}"]["median"] for side in SIDES},
        "added_p99_c1_ratio_over_bare_mtls": added_ratio_of_medians(
            summary["paths"]["c1"], "plait_default", "p99_ms", "bare_mtls"
        ),
        "added_p99_c1_ratio": added,
        "added_p99_c1_ratio_pairwise_median": pairwise_added,
        "added_p50_c1_ratio": added_ratio_of_medians(summary["paths"]["c1"], "plait_default", "p50_ms"),
        "added_p90_c1_ratio": added_ratio_of_medians(summary["paths"]["c1"], "plait_default", "p90_ms"),
        "added_p99_target": ADDED_P99_TARGET,
        "added_p99_pass": None if added is None else added <= ADDED_P99_TARGET,
    }


# ------------------------------------------------------------------ report


def ratio_cell(values: dict | None) -> str:
    return lm.cell(values, ".2f") if values else "n/a (bare added ≤ 0)"


def verdict_word(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[passed]


def print_report(summary: dict, verdict: dict) -> None:
    print("\nPaths (medians [min–max]); Envoy CPU µs per request: client-side + server-side Envoy")
    print(f"{'load':<5} {'path':<27} {'req/s':>22} {'p50 ms':>20} {'p90 ms':>20} {'p99 ms':>20} {'CPU µs/req':>16}")
    for load, per in summary["paths"].items():
        for path, r in per.items():
            cpu = r.get("envoy_cpu_us_per_request")
            cpu_cell = f"{cpu['client']['median']:.1f} + {cpu['server']['median']:.1f}" if cpu else ""
            print(
                f"{load:<5} {path:<27} {lm.cell(r['rps'], '.0f'):>22} {lm.cell(r['p50_ms'], '.3f'):>20} "
                f"{lm.cell(r['p90_ms'], '.3f'):>20} {lm.cell(r['p99_ms'], '.3f'):>20} {cpu_cell:>16}"
            )
    for floor in FLOORS:
        print(f"\nplait against the {floor} pair, pair by pair (medians [min–max])")
        print(
            f"{'config':<21} {'CPU ratio client (c16)':>24} {'CPU ratio server (c16)':>24} {'added p99 c1 ratio':>22}"
            f" {'of medians: p99':>16} {'p90':>6} {'p50':>6}"
        )
        for config, r in summary[f"plait_over_{floor}"].items():
            of_medians = [
                added_ratio_of_medians(summary["paths"]["c1"], f"plait_{config}", f, floor)
                for f in ("p99_ms", "p90_ms", "p50_ms")
            ]
            print(
                f"{config:<21} {lm.cell(r['c16']['cpu_ratio_client'], '.2f'):>24} "
                f"{lm.cell(r['c16']['cpu_ratio_server'], '.2f'):>24} {ratio_cell(r['c1']['added_p99_ms_ratio']):>22} "
                + " ".join(f"{'n/a' if v is None else f'{v:.2f}':>{w}}" for v, w in zip(of_medians, (16, 6, 6)))
            )
    print("\nWhat the default configuration costs over each other one (c16 CPU µs/req per sidecar; c1 added p99)")
    for config, r in summary["default_over_config"].items():
        print(
            f"  default − {config:<21} client {r['c16']['cpu_extra_us_client']['median']:+6.1f} µs, "
            f"server {r['c16']['cpu_extra_us_server']['median']:+6.1f} µs, "
            f"added p99 at c1 {r['c1']['added_p99_ms_extra']['median']:+.3f} ms"
        )
    if verdict:
        cpu = verdict["cpu_ratio_per_sidecar"]
        print(
            f"\nTargets: CPU per request per sidecar ≤ {CPU_TARGET}× bare: client {cpu['client']:.2f}×, "
            f"server {cpu['server']:.2f}× → {verdict_word(verdict['cpu_pass'])}; added p99 at c1 ≤ "
            f"{ADDED_P99_TARGET}× bare (ratio of medians): {verdict['added_p99_c1_ratio']}× → "
            f"{verdict_word(verdict['added_p99_pass'])} (added p90: {verdict['added_p90_c1_ratio']}×, "
            f"p50: {verdict['added_p50_c1_ratio']}×)"
        )


# ------------------------------------------------------------------ main


def bench(opts: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="dataplane-") as tmp:
        workdir = Path(tmp)
        script = workdir / "backend.sh"
        script.write_text(lm.NGINX_SCRIPT.format(root=workdir, body=lm.BODY))
        (workdir / "app.yaml").write_text(lm.MANIFEST.format(script=script))
        for name, document in DOCUMENTS.items():
            (workdir / name).write_text(document.text)
        with lm.mesh_up(["up", "-f", "app.yaml"], "proxy", workdir) as (up_s, state, down):
            mesh, direct = lm.paths_for("proxy", state, None)
            lm.call_once(mesh)
            pods = {p.name: p for p in state.pods}
            nginx = (pods["backend-0"].app_ip, pods["backend-0"].ports["port-9080"])
            client, backend = mtls.Sidecar(pods["client-0"], "proxy"), mtls.Sidecar(pods["backend-0"], "proxy")
            current = ["default"]

            def switch_to(config: str) -> None:
                switch(current[0], config, workdir, client, backend)
                current[0] = config

            binary, flags = sidecar_flags(mesh["envoys"][0])
            command = [binary, *flags]
            with (
                bare_pair(workdir, "plain", command, nginx) as bare,
                bare_pair(workdir, "mtls", command, nginx, bare_tls_files(workdir)) as bare_mtls,
            ):
                floors = {"bare": bare, "bare_mtls": bare_mtls}
                idle = idle_cpu({**{p: t["envoys"] for p, t in floors.items()}, "plait_default": mesh["envoys"]})
                runs = run_all({"direct": direct, **floors}, opts.configs, mesh, opts, switch_to)
            down()
    summary = summarise(runs, opts.configs)
    return {
        "targets": {
            "mesh": {k: v for k, v in mesh.items() if k != "envoys"},
            "direct": direct,
            **{p: t["url"] for p, t in floors.items()},
        },
        "envoy": {"binary": binary, "flags": flags},
        "up_s": round(up_s, 2),
        "loads": loads(opts),
        "idle_cpu_ms_per_s": idle,
        "summary": summary,
        "verdict": verdicts(summary),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--configs", nargs="+", choices=CONFIGS, default=list(DEFAULT_CONFIGS), help="plait's, in order"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dataplane.json")
    parser.add_argument(
        "--no-isolate",
        action="store_true",
        help="run on the machine's own network (default as root: a namespace of its own)",
    )
    opts = parser.parse_args()
    if "default" not in opts.configs or len(set(opts.configs)) != len(opts.configs):
        sys.exit("--configs: name default (the configuration the targets are about), and each configuration once")
    lm.preflight(["proxy"])
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
            "configs": opts.configs,
            "mode": "proxy",
            "isolated_namespace": isolated,
        },
        **bench(opts),
    }
    report["wall_s"] = round(time.monotonic() - started, 1)
    print(f"\nIdle Envoy CPU, ms per second (client-side, server-side): {report['idle_cpu_ms_per_s']}")
    print_report(report["summary"], report["verdict"])
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwall time {report['wall_s']} s; wrote {opts.out}")


if __name__ == "__main__":
    main()
