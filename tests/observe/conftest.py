"""One local Bookinfo mesh (`plait demo bookinfo -d`, capture mode when root) shared by the tests of what
users observe in it: metrics in Prometheus, traces, `plait stat`/`edges`/`top`/`tap`/`logs`. The fixture is
package-scoped (this directory is a package): the mesh is brought down when these tests end, before any
other test module starts a mesh of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plait.testing.live import free_port
from plait.testing.live import run_plait as plait
from plait.testing.localmesh import Browser, down_leaves_nothing, wait_for_no_other_mesh


@dataclass(frozen=True)
class ObservedMesh:
    """The running demo: its working directory, state directory, ingress port and a browser on it."""

    workdir: Path
    state_dir: Path
    ingress_port: int
    mode: str
    browser: Browser
    demo_output: str

    def plait(self, *args: str, timeout: float = 60):
        """Run a plait command against this mesh, from its working directory."""
        return plait(*args, cwd=self.workdir, timeout=timeout)


@pytest.fixture(scope="package")
def bookinfo(tmp_path_factory) -> Iterator[ObservedMesh]:
    workdir = tmp_path_factory.mktemp("observed-bookinfo")
    mode = "capture" if os.geteuid() == 0 else "proxy"
    port = free_port()
    wait_for_no_other_mesh()
    # Prometheus scraping every second (Istio's default is 15 s): metrics are in it a second or two later
    args = ["--mode", mode, "--ingress-port", str(port), "--prometheus-scrape-interval", "1s"]
    result = plait("demo", "bookinfo", "-d", *args, cwd=workdir, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield ObservedMesh(workdir, workdir / ".plait", port, mode, Browser(port), result.stdout)
    finally:
        down_leaves_nothing(workdir, workdir / ".plait", mode)
