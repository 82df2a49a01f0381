"""A real Kubernetes node with plait installed in it, for tests (kube-testenv ``start.sh --node``, root).

`MeshNode` wraps a `KubeTestenv` started with ``node=True``: kubectl, and ``plait`` run against it.
`eventually` polls what a cluster does eventually (rollouts, config pushes, kube-proxy). Image
names come from the same settings as ``./dev images``: ``PLAIT_IMAGE``, ``PLAIT_BOOKINFO_HUB``,
``PLAIT_BOOKINFO_TAG``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from plait import __version__
from plait.testing.kube import KubeTestenv

IMAGE = os.environ.get("PLAIT_IMAGE", f"plait/proxy:{__version__}")
BOOKINFO_HUB = os.environ.get("PLAIT_BOOKINFO_HUB", "plait")
BOOKINFO_TAG = os.environ.get("PLAIT_BOOKINFO_TAG", __version__)

T = TypeVar("T")


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

    def plait(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "plait", *args], input=stdin, text=True, capture_output=True, env=self.env
        )
