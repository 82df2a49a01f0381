"""A real Kubernetes node with plait installed in it, for tests (kube-testenv ``start.sh --node``, root).

`MeshNode` wraps a `KubeTestenv` started with ``node=True``: kubectl, and ``plait`` run against it.
`eventually` polls what a cluster does eventually (rollouts, config pushes, kube-proxy);
`RequestLoop` is the steady request loop fault tests count failures of;
`MeshNode.control_plane_stopped` takes Kubernetes' control plane away (the node, its pods and
kube-proxy keep running) and brings it back on the same port and data. Image
names come from the same settings as ``./dev images``: ``PLAIT_IMAGE``, ``PLAIT_BOOKINFO_HUB``,
``PLAIT_BOOKINFO_TAG``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from plait import __version__
from plait.demo.bookinfo.apps.view import ProductPageView, read_product_page
from plait.testing.kube import KubeTestenv

IMAGE = os.environ.get("PLAIT_IMAGE", f"plait/proxy:{__version__}")
BOOKINFO_HUB = os.environ.get("PLAIT_BOOKINFO_HUB", "plait")
BOOKINFO_TAG = os.environ.get("PLAIT_BOOKINFO_TAG", __version__)
BOOKINFO_NAMESPACE = "bookinfo"  # where the tests' `bookinfo` fixture deploys it
# proxy.istio.io/config turning on the agent's DNS proxy with auto-allocated ServiceEntry addresses
DNS_CAPTURE = 'proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: "true"\n  ISTIO_META_DNS_AUTO_ALLOCATE: "true"\n'

T = TypeVar("T")


def pod_manifest(name: str, namespace: str, command: list[str], annotations: dict[str, str] | None = None) -> str:
    """A one-container Pod (Bookinfo's details image, which has python3) running `command`, as JSON."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
            "spec": {
                "containers": [
                    {
                        "name": name,
                        "image": f"{BOOKINFO_HUB}/examples-bookinfo-details-v1:{BOOKINFO_TAG}",
                        "command": command,
                    }
                ]
            },
        }
    )


def eventually(check: Callable[[], T], *, timeout: float = 120, interval: float = 1.0) -> T:
    """`check()`'s result once it stops raising AssertionError (or a RuntimeError from kubectl); the last error
    after `timeout` seconds. For what a cluster does eventually (rollouts, config pushes, kube-proxy)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, RuntimeError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


class MeshNode:
    """The node, its kubectl, and plait installed in istio-system."""

    def __init__(self, cluster: KubeTestenv):
        self.cluster = cluster
        self.install_output = ""  # what `plait install` printed
        self.demo_output = ""  # what `plait demo bookinfo --kube` printed

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.cluster.kubeconfig, "KUBECTL": self.kubectl_path}

    @property
    def kubectl_path(self) -> str:
        return str(Path(self.cluster.env["KUBE_TESTENV_BIN"]) / "kubectl")

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self.cluster.kubectl(*args, stdin=stdin)

    def apply(self, text: str, namespace: str | None = None) -> str:
        return self.kubectl(*(["-n", namespace] if namespace else []), "apply", "-f", "-", stdin=text)

    def ingress_url(self, path: str) -> str:
        """`path` on the ingress gateway, through its Service's cluster IP (the node's host reaches it)."""
        address = self.kubectl(
            "get", "service", "istio-ingressgateway", "-n", "istio-system", "-o", "jsonpath={.spec.clusterIP}"
        )
        return f"http://{address}:80{path}"

    def product_page(self, user: str | None = None) -> ProductPageView:
        """Bookinfo's product page through the ingress gateway, read (as `user` when given)."""
        request = urllib.request.Request(self.ingress_url("/productpage"))
        if user:
            request.add_header("Cookie", f"user={user}")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            return read_product_page(response.read().decode())

    def plait(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "plait", *args], input=stdin, text=True, capture_output=True, env=self.env
        )

    @contextmanager
    def dashboard(self, *args: str) -> Iterator[str]:
        """``plait dashboard ARGS --browser=false --port 0`` (a port-forward to istiod's or the addon's pod)
        while the block runs: the URL it printed. It must exit cleanly when stopped."""
        command = [sys.executable, "-m", "plait", "dashboard", *args, "--browser=false", "--port", "0"]
        process = subprocess.Popen(
            command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.cluster.dir
        )
        url = process.stdout.readline().strip()
        if not url.startswith("http://localhost:"):
            process.kill()
            raise AssertionError((url, process.stderr.read()))
        try:
            yield url
        finally:
            process.terminate()
            assert process.wait(timeout=20) == 0

    @contextmanager
    def control_plane_stopped(self) -> Iterator[None]:
        """The cluster's control plane (API server, controller-manager, scheduler) killed, as when its
        node restarts, then started again with their own command lines, logs and data once the block ends
        (the API server first; returns when it is ready). The node, its pods and kube-proxy keep running.
        The controller-manager restarts too, as it would: left running, it would count the API server's
        absence against the node's heartbeats and mark every pod not ready. New PIDs go into the node's
        ``pids`` so that ``stop.sh`` stops them."""
        pids = self.cluster.dir / "pids"
        entries = [line.split() for line in pids.read_text().splitlines() if line.strip()]
        stopped = [_StoppedProcess.kill(int(pid)) for pid, name in entries if name in CONTROL_PLANE]
        try:
            yield
        finally:
            started = {}
            for process in stopped:
                started[str(process.pid)] = process.start()
                if process is stopped[0]:
                    eventually(lambda: self.kubectl("get", "--raw", "/readyz"), timeout=60, interval=0.5)
            pids.write_text("".join(f"{started.get(pid, pid)} {name}\n" for pid, name in entries))
            time.sleep(5)  # a component that cannot start (its port still bound, …) exits within seconds
            dead = [p for p in stopped if not _running(started[str(p.pid)])]
            assert not dead, "not running after the restart: " + ", ".join(
                f"{p.command[0].decode()} (see {p.log})" for p in dead
            )


CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")  # in the order they start


def _running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and not stat.read_text().split(") ", 1)[1].startswith("Z")


@dataclass(frozen=True)
class _StoppedProcess:
    """A process of the node, killed; enough of it kept to start it again as it was."""

    pid: int
    command: list[bytes]
    environment: dict[bytes, bytes]
    cwd: str
    log: str
    umask: int

    @classmethod
    def kill(cls, pid: int) -> _StoppedProcess:
        proc = Path(f"/proc/{pid}")
        environment = dict(v.split(b"=", 1) for v in (proc / "environ").read_bytes().split(b"\0") if b"=" in v)
        umask = next(line.split()[1] for line in (proc / "status").read_text().splitlines() if line.startswith("Umask"))
        stopped = cls(
            pid,
            (proc / "cmdline").read_bytes().split(b"\0")[:-1],
            environment,
            os.readlink(proc / "cwd"),
            os.readlink(proc / "fd" / "1"),
            int(umask, 8),
        )
        os.kill(pid, signal.SIGKILL)
        while proc.exists() and not (proc / "stat").read_text().split(") ", 1)[1].startswith("Z"):
            time.sleep(0.05)
        return stopped

    def start(self) -> int:
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                self.command,
                env=self.environment,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=self.umask,
            ).pid


class RequestLoop(threading.Thread):
    """GET `url` one request after another until stopped, counting what was served and what failed
    (a status of 400 or more, a reset, a timeout)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.ok, self.failures = url, 0, []
        self.stopped = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stopped.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    response.read()
                self.ok += 1
            except urllib.error.HTTPError as exc:  # what Envoy says about its 503s (no healthy upstream, reset, …)
                body = exc.read()[:160].decode(errors="replace")
                self.failures.append(f"{time.monotonic() - started:.1f}s: {exc.code} {body!r}")
            except (urllib.error.URLError, OSError) as exc:
                self.failures.append(f"{time.monotonic() - started:.1f}s: {exc!r}")

    def served(self, count: int) -> None:
        """AssertionError until `count` requests were served (for `eventually`)."""
        assert self.ok >= count, f"{self.ok} requests served so far"

    def stop(self) -> None:
        self.stopped.set()
        self.join()

    def assert_none_failed(self) -> None:
        total = self.ok + len(self.failures)
        assert self.failures == [], f"{len(self.failures)} failed of {total}: {self.failures[:3]}"
