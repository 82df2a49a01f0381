"""Local-mesh benchmark: how long `plait demo bookinfo -d` takes to come up (and `plait down` to stop
it), and what the mesh path client → sidecar → sidecar → app costs against the same client → app
directly, measured with wrk, in both modes (explicit proxy and transparent capture).

Run:  .venv/bin/python benchmarks/localmesh.py [--repeat 3] [--duration 10] [--connections 16]
          [--threads 2] [--modes proxy capture] [--only startup|overhead] [--no-isolate]
          [--out benchmarks/results/localmesh.json]
          (about 4½ minutes with the defaults; root for capture mode)

Needs wrk and nginx (Debian: ``apt-get install -y wrk nginx-light``).

* Start-up: for each repeat and mode, ``plait demo bookinfo -d --mode M`` in a temp dir with its
  own --state-dir and a free --ingress-port, timed from the command to its return (it returns when
  every pod is ready and every proxy SYNCED); then ``plait down``, timed too, and checked to leave
  no process or network namespace behind.
* Overhead: per mode, ``plait up -d`` of a manifest written to a temp dir: a ``backend``
  Deployment running nginx (a generated config answering a 25-byte body on $BIND_ADDRESS:$PORT)
  behind the Service ``backend:9080``, and a ``client`` Deployment (an idle process) whose sidecar
  wrk sends through. Mesh path, proxy mode: wrk on the host against the client sidecar's
  explicit-proxy listener ``<client pod ip>:15001`` with ``Host: backend:9080``. Mesh path, capture
  mode: wrk inside the client pod's network namespace against ``http://backend:9080/`` (wrk runs as
  root, not uid 1337, so iptables sends it to the sidecar). Direct, proxy mode: wrk against the
  backend nginx's own app address (the same process the mesh path reaches). Direct, capture mode:
  the backend pod's inbound is captured too, so the direct path is the same nginx config run as a
  plain process on 127.0.0.1, outside the mesh. Two loads: ``loaded`` (--connections, default 16,
  --threads 2, --duration s: the baseline's load in FACTS.md) and ``one_connection`` (1 connection,
  1 thread, half the duration: latency without queueing). Direct and mesh runs alternate, after a
  1 s warm-up of each; ratios and added latency are taken pair by pair. Envoy CPU per request
  comes from /proc/PID/stat of the two sidecar Envoys (children of the agents recorded in
  state.json) before and after each run.

As root the script re-runs itself in a network and mount namespace of its own (``unshare``, a
private copy of /etc and /run/netns; ``--no-isolate`` to skip): the local mesh uses fixed ports
(15012, 15014), 127.1.x.x/127.2.x.x addresses, the bridge ``plait0`` and ``/etc/netns``, so it
could otherwise collide with a mesh someone else runs on the machine. Loopback inside a network
namespace is the same kernel path as outside. Without root (``--modes proxy``), or with
``--no-isolate``, it waits (bounded) for the machine to be free of other meshes before each one.

Prints a table (medians, min and max over the repeats) and writes JSON. Reports only; asserts
nothing. Everything started is stopped (``plait down``; by PID if that fails).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from plait.host.processes import alive
from plait.runtime import netns
from plait.runtime.local import API_PORT, CA_PORT, State
from plait.testing.live import free_port, run_plait

MODES = ("proxy", "capture")
STARTUP_TARGET_S = 15.0
BODY = "plait localmesh benchmark"  # 25 bytes, like the baseline in FACTS.md
CLK_TCK = os.sysconf("SC_CLK_TCK")
MACHINE_WAIT_S = 120.0
ISOLATED_ENV = "PLAIT_LOCALMESH_ISOLATED"
INSTALL_HINT = "install them with: apt-get install -y wrk nginx-light   (Debian/Ubuntu, as root)"

NGINX_SCRIPT = """set -e
d={root}/nginx-$POD_NAME
mkdir -p "$d"
cat > "$d/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path $d/body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
  server {{
    listen $BIND_ADDRESS:$PORT;
    location / {{ default_type text/plain; return 200 "{body}"; }}
  }}
}}
EOF
exec nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf"
"""

MANIFEST = """apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports: [{{name: http, port: 9080, targetPort: 9080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: backend}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: backend}}}}
  template:
    metadata: {{labels: {{app: backend, version: v1}}}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.22
        command: ["sh", "{script}"]
        ports: [{{containerPort: 9080}}]
        readinessProbe: {{httpGet: {{path: /, port: 9080}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client, version: v1}}}}
    spec:
      containers:
      - name: idle
        image: busybox
        command: ["sleep", "86400"]
"""


# ------------------------------------------------------------------ small helpers


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def kill(pid: int | None) -> None:
    if pid and alive(pid):
        os.kill(pid, signal.SIGKILL)


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def other_mesh(mode: str) -> str:
    """What shows another local mesh on this machine (one at a time: fixed ports, one bridge), or ''."""
    if any(port_busy(p) for p in (API_PORT, CA_PORT)):
        return f"ports {CA_PORT}/{API_PORT} are in use"
    network = netns.Network()
    if mode == "capture" and (netns.namespaces(network) or netns.link_exists(network.bridge)):
        return f"the bridge {network.bridge} or namespaces {network.prefix}* exist"
    return ""


def wait_for_machine(mode: str, timeout: float = MACHINE_WAIT_S) -> None:
    """Wait (bounded) until no other local mesh runs here; exit rather than collide with one."""
    deadline = time.monotonic() + timeout
    while (busy := other_mesh(mode)) and time.monotonic() < deadline:
        time.sleep(1)
    if busy:
        sys.exit(f"another local mesh is running ({busy}); this benchmark needs the machine to itself")


def isolate(script: Path = Path(__file__)) -> None:
    """Re-run `script` (this one by default) with this process's arguments in a network and mount
    namespace of its own (root): its meshes get their own loopback (the local mesh's fixed ports
    15012/15014, 127.1.x.x pod addresses), bridge, /run/netns and a private copy of /etc (for
    /etc/netns), so another local mesh on the machine neither disturbs the figures nor is
    disturbed; everything in the namespace goes when it ends."""
    etc_copy = tempfile.mkdtemp(prefix="localmesh-etc-")
    try:
        subprocess.run(["cp", "-a", "/etc/.", etc_copy], check=True, timeout=60)
        Path("/run/netns").mkdir(parents=True, exist_ok=True)
        setup = (
            'set -e; mount --bind "$1" /etc; mount -t tmpfs localmesh /run/netns; ip link set lo up; shift; exec "$@"'
        )
        argv = [
            "unshare",
            "--mount",
            "--net",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            setup,
            "sh",
            etc_copy,
            sys.executable,
            str(script.resolve()),
            *sys.argv[1:],
        ]
        code = subprocess.run(argv, check=False, env={**os.environ, ISOLATED_ENV: "1"}).returncode
    finally:
        shutil.rmtree(etc_copy, ignore_errors=True)
    sys.exit(code)


def preflight(modes: list[str]) -> None:
    """Exit with a clear message if a tool is missing or capture mode cannot run."""
    missing = [tool for tool in ("wrk", "nginx") if not shutil.which(tool)]
    if missing:
        sys.exit(f"missing: {', '.join(missing)}; {INSTALL_HINT}")
    if "capture" in modes and os.geteuid() != 0:
        sys.exit("capture mode needs root; run as root or pass --modes proxy")


def descendants(pid: int, depth: int = 3) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(p) for p in path.read_text().split()] if path.exists() else []
    return kids + ([d for k in kids for d in descendants(k, depth - 1)] if depth > 1 else [])


def envoy_pid(agent_pid: int) -> int:
    for pid in descendants(agent_pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        if cmdline.endswith(b"envoy"):
            return pid
    raise RuntimeError(f"no Envoy found under agent {agent_pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


# ------------------------------------------------------------------ a mesh's lifetime


def own_namespaces(state: State, mode: str) -> list[str]:
    """The network namespaces of this mesh's pods that still exist (capture mode)."""
    if mode != "capture":
        return []
    network = netns.Network()
    existing = set(netns.namespaces(network))
    return [
        network.namespace(p.name) for p in state.pods if p.kind != "gateway" and network.namespace(p.name) in existing
    ]


def force_cleanup(state: State | None, mode: str) -> None:
    """When `plait down` failed: kill what state.json recorded, by PID, and this mesh's own namespaces."""
    if state is None:
        return
    for pid in [state.supervisor_pid, state.control_plane_pid] + [p.pid for p in state.pods]:
        kill(pid)
    for ns in own_namespaces(state, mode):
        for pid in netns.namespace_pids(ns):
            kill(pid)
    time.sleep(0.5)
    for ns in own_namespaces(state, mode):
        netns.remove_namespace(ns, netns.Network().host_veth(ns.removeprefix(netns.Network().prefix)))


def leftovers(state: State, mode: str) -> list[str]:
    pids = [p for p in [state.supervisor_pid, state.control_plane_pid] + [p.pid for p in state.pods] if p and alive(p)]
    return [f"pid {p}" for p in pids] + own_namespaces(state, mode)


def plait_down(workdir: Path, state_dir: Path, mode: str) -> float:
    """`plait down`, timed; falls back to killing by PID, and says what was left."""
    state = State.load(state_dir)
    started = time.monotonic()
    result = run_plait("down", "--state-dir", str(state_dir), cwd=workdir, timeout=90)
    elapsed = time.monotonic() - started
    left = leftovers(state, mode) if state else []
    if result.returncode != 0 or left:
        force_cleanup(state, mode)
        raise RuntimeError(f"plait down failed ({result.returncode}; left: {left}): {result.stdout}{result.stderr}")
    return elapsed


@contextmanager
def mesh_up(args: list[str], mode: str, workdir: Path):
    """Run `plait … -d --mode M` in `workdir`; yields (seconds it took to return, its state, a function
    that runs `plait down` and returns the seconds it took). Stops the mesh if the caller did not."""
    state_dir = workdir / ".plait"
    wait_for_machine(mode)
    command = [*args, "-d", "--mode", mode, "--state-dir", str(state_dir), "--ingress-port", str(free_port())]
    started = time.monotonic()
    try:
        result = run_plait(*command, cwd=workdir, timeout=180)
    except subprocess.TimeoutExpired:
        force_cleanup(State.load(state_dir), mode)
        raise
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        kept = Path(tempfile.mkdtemp(prefix=f"localmesh-failed-{mode}-"))
        shutil.copytree(state_dir / "logs", kept / "logs", dirs_exist_ok=True)
        cleanup = plait_down_quietly(workdir, state_dir, mode)
        raise RuntimeError(
            f"plait {' '.join(command)} failed (logs kept in {kept}): {result.stdout}{result.stderr}{cleanup}"
        )
    stopped = False
    try:
        yield elapsed, State.load(state_dir), lambda: plait_down(workdir, state_dir, mode)
        stopped = True
    finally:
        if not stopped:
            plait_down_quietly(workdir, state_dir, mode)


def plait_down_quietly(workdir: Path, state_dir: Path, mode: str) -> str:
    try:
        plait_down(workdir, state_dir, mode)
        return ""
    except RuntimeError as exc:
        return f"\n(cleanup: {exc})"


# ------------------------------------------------------------------ start-up


def bench_startup(modes: list[str], repeat: int) -> dict:
    results = {m: {"up_s": [], "down_s": []} for m in modes}
    for i in range(repeat):
        for mode in modes:
            with (
                tempfile.TemporaryDirectory(prefix=f"localmesh-demo-{mode}-") as tmp,
                mesh_up(["demo", "bookinfo"], mode, Path(tmp)) as (up_s, state, down),
            ):
                pods = len(state.pods)
                down_s = down()
            results[mode]["up_s"].append(round(up_s, 2))
            results[mode]["down_s"].append(round(down_s, 2))
            print(f"  start-up {mode:<8} run {i + 1}: up {up_s:5.1f} s ({pods} pods), down {down_s:4.1f} s", flush=True)
    return {m: {"up_s": stats(r["up_s"]), "down_s": stats(r["down_s"])} for m, r in results.items()}


# ------------------------------------------------------------------ wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> dict:
    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE).groups()
        return float(value) * UNITS[unit]

    requests = int(re.search(r"(\d+) requests in", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "requests": requests,
        "p50_ms": latency("50"),
        "p90_ms": latency("90"),
        "p99_ms": latency("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
    }


def wrk(url: str, load: dict, *, host: str | None = None, namespace: str | None = None, envoys: list[int] = ()) -> dict:
    """One wrk run (`load`: connections, threads, duration); with `envoys`, their CPU per request."""
    argv = ["wrk", f"-t{load['threads']}", f"-c{load['connections']}", f"-d{load['duration']}s", "--latency", url]
    if host:
        argv += ["-H", f"Host: {host}"]
    if namespace:
        argv = ["ip", "netns", "exec", namespace, *argv]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    before = [cpu_seconds(p) for p in envoys]
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=load["duration"] + 30, env=env)
    after = [cpu_seconds(p) for p in envoys]
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stdout}{result.stderr}")
    figures = parse_wrk(result.stdout)
    if figures["non_2xx"] or figures["socket_errors"]:
        print(f"    warning: {url}: {figures['non_2xx']} non-2xx, socket errors: {figures['socket_errors']}")
    if envoys:
        figures["envoy_cpu_us_per_request"] = [
            round((a - b) / figures["requests"] * 1e6, 2) for a, b in zip(after, before)
        ]
    return figures


# ------------------------------------------------------------------ overhead


@contextmanager
def host_nginx(workdir: Path, script: Path):
    """The backend's nginx as a plain process on 127.0.0.1, outside the mesh; yields its URL."""
    port = free_port()
    env = {**os.environ, "POD_NAME": "host", "BIND_ADDRESS": "127.0.0.1", "PORT": str(port)}
    log = open(workdir / "host-nginx.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        ["sh", str(script)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_busy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start; see {workdir / 'host-nginx.log'}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()  # sh exec'd nginx: this is nginx's master; it stops its worker
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def paths_for(mode: str, state: State, direct_url: str | None) -> tuple[dict, dict]:
    """(mesh, direct) wrk targets for this mode."""
    pods = {p.name: p for p in state.pods}
    client, backend = pods["client-0"], pods["backend-0"]
    envoys = [envoy_pid(client.pid), envoy_pid(backend.pid)]
    if mode == "proxy":
        mesh = {"url": f"http://{client.ip}:15001/", "host": "backend:9080", "envoys": envoys}
        direct = {"url": f"http://{backend.app_ip}:{backend.ports['port-9080']}/"}
    else:
        mesh = {"url": "http://backend:9080/", "namespace": netns.Network().namespace(client.name), "envoys": envoys}
        direct = {"url": direct_url}
    return mesh, direct


def call_once(mesh: dict) -> None:
    """A second of traffic through the mesh path: automatic scoping sends the client's sidecar the
    backend's cluster once it calls it, and the benchmarks read that cluster's configuration."""
    wrk(
        mesh["url"],
        {"connections": 1, "threads": 1, "duration": 1},
        host=mesh.get("host"),
        namespace=mesh.get("namespace"),
    )


def loads(opts: argparse.Namespace) -> dict[str, dict]:
    """`loaded`: the baseline's load (16 connections); `one_connection`: latency without queueing."""
    return {
        "loaded": {"connections": opts.connections, "threads": opts.threads, "duration": opts.duration},
        "one_connection": {"connections": 1, "threads": 1, "duration": max(1, opts.duration // 2)},
    }


def run_pairs(mesh: dict, direct: dict, opts: argparse.Namespace, mode: str) -> dict:
    """For each repeat and load: direct, then mesh. Returns {load: {"direct": [...], "mesh": [...]}}."""

    def through_mesh(load: dict, envoys: list[int] = ()) -> dict:
        return wrk(mesh["url"], load, host=mesh.get("host"), namespace=mesh.get("namespace"), envoys=envoys)

    warm_up = {**loads(opts)["loaded"], "duration": 1}
    through_mesh(warm_up)
    wrk(direct["url"], warm_up)
    runs = {name: {"direct": [], "mesh": []} for name in loads(opts)}
    for i in range(opts.repeat):
        for name, load in loads(opts).items():
            d, m = wrk(direct["url"], load), through_mesh(load, mesh["envoys"])
            runs[name]["direct"].append(d)
            runs[name]["mesh"].append(m)
            print(
                f"  overhead {mode:<8} {name:<14} run {i + 1}: direct {d['rps']:6.0f} req/s p50 {d['p50_ms']:.3f} ms"
                f" | mesh {m['rps']:6.0f} req/s p50 {m['p50_ms']:.3f} ms, Envoy CPU "
                f"{sum(m['envoy_cpu_us_per_request']):.0f} µs/req",
                flush=True,
            )
    return runs


def summarise(runs: dict) -> dict:
    """Medians of one load's runs, Envoy CPU per request, and mesh/direct ratios taken pair by pair."""
    out = {}
    for path in ("direct", "mesh"):
        out[path] = {f: stats([r[f] for r in runs[path]]) for f in ("rps", "p50_ms", "p99_ms")}
        out[path]["non_2xx"] = sum(r["non_2xx"] for r in runs[path])
    per_request = [r["envoy_cpu_us_per_request"] for r in runs["mesh"]]
    out["mesh"]["envoy_cpu_us_per_request"] = {
        "client_sidecar": stats([c for c, _ in per_request]),
        "backend_sidecar": stats([b for _, b in per_request]),
        "both": stats([round(c + b, 2) for c, b in per_request]),
    }
    pairs = list(zip(runs["direct"], runs["mesh"]))
    out["ratios_mesh_over_direct"] = {
        f: stats([round(m[f] / d[f], 3) for d, m in pairs]) for f in ("rps", "p50_ms", "p99_ms")
    }
    out["added_latency_ms"] = {f: stats([round(m[f] - d[f], 3) for d, m in pairs]) for f in ("p50_ms", "p99_ms")}
    return out


def bench_overhead(modes: list[str], opts: argparse.Namespace) -> dict:
    results = {}
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix=f"localmesh-overhead-{mode}-") as tmp:
            workdir = Path(tmp)
            script = workdir / "backend.sh"
            script.write_text(NGINX_SCRIPT.format(root=workdir, body=BODY))
            (workdir / "app.yaml").write_text(MANIFEST.format(script=script))
            with (
                host_nginx(workdir, script) as host_url,
                mesh_up(["up", "-f", "app.yaml"], mode, workdir) as (up_s, state, down),
            ):
                mesh, direct = paths_for(mode, state, host_url if mode == "capture" else None)
                runs = run_pairs(mesh, direct, opts, mode)
                down()
            results[mode] = {
                "mesh_target": {k: v for k, v in mesh.items() if k != "envoys"},
                "direct_target": direct,
                "up_s": round(up_s, 2),
                "loads": loads(opts),
                **{name: summarise(r) for name, r in runs.items()},
            }
    return results


# ------------------------------------------------------------------ report


def tool_version(argv: list[str]) -> str:
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    return (result.stdout + result.stderr).strip().splitlines()[0]


def isolate_unless(no_isolate: bool, script: Path) -> None:
    """As root, re-run `script` in a network and mount namespace of its own (see `isolate`) unless told not to
    or already there."""
    if os.geteuid() == 0 and not no_isolate and os.environ.get(ISOLATED_ENV) != "1":
        isolate(script)


def mesh_path_tools(envoy: str) -> dict:
    """The versions of what a mesh-path benchmark runs: wrk, nginx and Envoy."""
    return {
        "wrk": tool_version(["wrk", "-v"]),
        "nginx": tool_version(["nginx", "-v"]),
        "envoy": tool_version([envoy, "--version"]),
    }


def print_report(report: dict) -> None:
    if "startup" in report:
        print(f"\nStart-up of `plait demo bookinfo -d` (target ≤ {STARTUP_TARGET_S:.0f} s), seconds")
        print(f"{'mode':<8} {'figure':<6} {'median':>7} {'min':>6} {'max':>6}  verdict")
        for mode, r in report["startup"].items():
            for figure in ("up_s", "down_s"):
                s = r[figure]
                verdict = ("pass" if s["median"] <= STARTUP_TARGET_S else "FAIL") if figure == "up_s" else ""
                print(f"{mode:<8} {figure[:-2]:<6} {s['median']:7.2f} {s['min']:6.2f} {s['max']:6.2f}  {verdict}")
    if "overhead" in report:
        print("\nMesh path (client → sidecar → sidecar → nginx) against direct (client → nginx); medians [min–max]")
        print(
            f"{'mode':<8} {'load':<7} {'path':<7} {'req/s':>24} {'p50 ms':>20} {'p99 ms':>20} {'Envoy CPU µs/req':>17}"
        )
        for mode, by_load in report["overhead"].items():
            for name in by_load["loads"]:
                print_load(mode, name, by_load[name])


def cell(values: dict, fmt: str) -> str:
    return f"{values['median']:{fmt}} [{values['min']:{fmt}}–{values['max']:{fmt}}]"


def print_load(mode: str, name: str, r: dict) -> None:
    load = "c16" if name == "loaded" else "c1"
    for path, rps_fmt in (("direct", ".0f"), ("mesh", ".0f"), ("ratios_mesh_over_direct", ".3f")):
        cells = [cell(r[path]["rps"], rps_fmt), cell(r[path]["p50_ms"], ".3f"), cell(r[path]["p99_ms"], ".3f")]
        cpu = r[path].get("envoy_cpu_us_per_request", {}).get("both")
        cpu_cell = f"{cpu['median']:.1f} (both)" if cpu else ""
        label = "ratio" if path.startswith("ratios") else path
        print(f"{mode:<8} {load:<7} {label:<7} {cells[0]:>24} {cells[1]:>20} {cells[2]:>20} {cpu_cell:>17}")
    added = r["added_latency_ms"]
    print(
        f"{mode:<8} {load:<7} added latency: p50 {added['p50_ms']['median']:+.3f} ms, "
        f"p99 {added['p99_ms']['median']:+.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--only", choices=("startup", "overhead"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "localmesh.json")
    parser.add_argument(
        "--no-isolate",
        action="store_true",
        help="run on the machine's own network (default as root: a namespace of its own)",
    )
    opts = parser.parse_args()
    preflight(opts.modes)
    isolated = os.environ.get(ISOLATED_ENV) == "1"
    if os.geteuid() == 0 and not opts.no_isolate and not isolated:
        isolate()
    started = time.monotonic()
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "wrk": tool_version(["wrk", "-v"]),
            "nginx": tool_version(["nginx", "-v"]),
        },
        "settings": {
            "repeat": opts.repeat,
            "duration_s": opts.duration,
            "connections": opts.connections,
            "wrk_threads": opts.threads,
            "body_bytes": len(BODY),
            "modes": opts.modes,
            "isolated_namespace": isolated,
        },
    }
    if opts.only in (None, "startup"):
        report["startup"] = bench_startup(opts.modes, opts.repeat)
    if opts.only in (None, "overhead"):
        report["overhead"] = bench_overhead(opts.modes, opts)
    report["wall_s"] = round(time.monotonic() - started, 1)
    print_report(report)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwall time {report['wall_s']} s; wrote {opts.out}")


if __name__ == "__main__":
    main()
