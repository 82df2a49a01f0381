"""One real Kubernetes node per session with plait installed in it (kube-testenv ``start.sh --node``).

`mesh_node` starts the node (root), builds and loads the images (``./dev images --load``, cached),
loads Istio's CRDs and runs ``plait install -y``; it is stopped and removed at the end. `bookinfo`
deploys Bookinfo on it as ``plait demo bookinfo --kube`` does, once per session. Set
``PLAIT_KUBE_TESTENV`` to use another kube-testenv, ``PLAIT_KUBE_NODE_PREFIX`` for its directory's
name (default /tmp/plait-node-…).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from plait.testing.kube import KubeTestenv, require_testenv
from plait.testing.kubenode import BOOKINFO_HUB, BOOKINFO_NAMESPACE, BOOKINFO_TAG, IMAGE, MeshNode, eventually

CHECKOUT = Path(__file__).resolve().parents[2]


UMASK_FIX = "  umask 022  # added by plait's tests: pods' root directories must be readable by non-root users\n"


def _with_node_umask(tool: Path) -> Path:
    """kube-testenv's start.sh runs with umask 077 and its containerd inherits it, so every container's
    root directory is 0700 and no container running as non-root (istio-proxy as uid 1337, the gateway)
    can start. Until kube-testenv's lib/node-up.sh sets ``umask 022`` in node_up itself, the tests run
    a copy of the tool with that one line added (and use the tool as it is once it has it)."""
    script = (tool / "lib" / "node-up.sh").read_text()
    if "umask 022" in script:
        return tool
    copy = Path(tempfile.mkdtemp(prefix="plait-kube-testenv-")) / "kube-testenv"
    shutil.copytree(tool, copy, symlinks=True)
    head, sep, rest = script.partition("node_up() {\n")
    assert sep, "kube-testenv's lib/node-up.sh has no node_up function any more"
    (copy / "lib" / "node-up.sh").write_text(head + sep + UMASK_FIX + rest)
    return copy


def _check_containerd_umask(directory: Path) -> None:
    """Fail at once, saying why, where the node's containerd would give pods a root directory of mode 0700
    (no container running as non-root, such as istio-proxy as uid 1337, could start)."""
    pids = dict(reversed(line.split()[:2]) for line in (directory / "pids").read_text().splitlines() if line.strip())
    status = Path(f"/proc/{pids['containerd']}/status").read_text()
    umask = next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:"))
    if int(umask, 8) & 0o055:
        pytest.fail(
            f"kube-testenv runs containerd with umask {umask}: pods' root directories are not readable by non-root "
            "containers (istio-proxy runs as uid 1337); kube-testenv's lib/node-up.sh must set umask 022 in node_up"
        )


@pytest.fixture(scope="session")
def mesh_node() -> Iterator[MeshNode]:
    tool = require_testenv()
    if os.geteuid() != 0:
        pytest.fail("a kube-testenv node needs root (CI runs as root): run the tests as root")
    prefix = os.environ.get("PLAIT_KUBE_NODE_PREFIX", "plait-node-")
    tool = _with_node_umask(tool)
    cluster = KubeTestenv(tool, prefix=prefix, node=True)
    try:
        cluster.start()
        _check_containerd_umask(cluster.dir)
        env = {**os.environ, "PLAIT_KUBE_TESTENV": str(tool)}
        subprocess.run([CHECKOUT / "dev", "images", "--load", cluster.dir], check=True, env=env)
        cluster.load_crds()
        node = MeshNode(cluster)
        installed = node.plait("install", "-y", "--image", IMAGE, "--set", "addons.prometheus=true", "--timeout", "180")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        node.install_output = installed.stdout
        yield node
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def bookinfo(mesh_node: MeshNode) -> MeshNode:
    """Bookinfo as ``plait demo bookinfo --kube`` deploys it, in its own namespace."""
    node = mesh_node
    node.kubectl("create", "namespace", BOOKINFO_NAMESPACE)
    eventually(lambda: node.kubectl("get", "serviceaccount", "default", "-n", BOOKINFO_NAMESPACE), timeout=30)
    demo = node.plait(
        "demo", "bookinfo", "--kube", "--namespace", BOOKINFO_NAMESPACE, "--image", IMAGE,
        "--bookinfo-hub", BOOKINFO_HUB, "--bookinfo-tag", BOOKINFO_TAG,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    node.demo_output = demo.stdout
    return node
