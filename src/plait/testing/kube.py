"""A real Kubernetes API server for tests (`shared/tools/kube-testenv`, API-only mode: no root, ~4 s).

`KubeTestenv` starts one in a fresh directory, runs kubectl against it, and can stop and start
it again on the same directory and port (etcd's data kept), as an API-server outage looks to a
client. Found as $PLAIT_KUBE_TESTENV, else ``shared/tools/kube-testenv`` beside the checkout.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import urllib.request
from base64 import b64encode
from pathlib import Path

SEARCHED = ("../shared/tools/kube-testenv", "../../shared/tools/kube-testenv", "/work/shared/tools/kube-testenv")


def find_testenv() -> Path | None:
    """Where kube-testenv is, or None."""
    given = os.environ.get("PLAIT_KUBE_TESTENV")
    candidates = [Path(given)] if given else [Path.cwd() / p for p in SEARCHED]
    return next((p.resolve() for p in candidates if (p / "start.sh").exists()), None)


class KubeTestenv:
    def __init__(self, tool: Path, *, prefix: str = "plait-kube-"):
        self.tool = tool
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.env: dict[str, str] = {}

    @property
    def kubeconfig(self) -> str:
        return str(self.dir / "kubeconfig")

    def start(self) -> "KubeTestenv":
        """Start (or start again, on the same port once it has one) and read DIR/env."""
        extra = {"KUBE_TESTENV_PORT": self.env["KUBE_TESTENV_SERVER"].rsplit(":", 1)[1]} if self.env else {}
        subprocess.run([self.tool / "start.sh", self.dir], check=True, env={**os.environ, **extra},
                       stdout=subprocess.DEVNULL)
        lines = (self.dir / "env").read_text().splitlines()
        self.env = dict(shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export "))
        return self

    def stop(self) -> None:
        subprocess.run([self.tool / "stop.sh", self.dir], check=True, stdout=subprocess.DEVNULL)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def load_crds(self) -> None:
        """Istio's (and the Gateway API's) CRDs, made loadable by 1.20."""
        subprocess.run([self.tool / "crds.sh"], check=True, env={**os.environ, "KUBECONFIG": self.kubeconfig},
                       stdout=subprocess.DEVNULL)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        kubectl = Path(self.env["KUBE_TESTENV_BIN"]) / "kubectl"
        done = subprocess.run([str(kubectl), "--kubeconfig", self.kubeconfig, *args], input=stdin, text=True,
                              capture_output=True)
        if done.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def apply(self, yaml_text: str) -> str:
        return self.kubectl("apply", "--validate=false", "-f", "-", stdin=yaml_text)

    def bump_etcd_revision(self, times: int = 5) -> None:
        """Write a key of no API type straight into etcd: its revision moves on with no event any watch
        sees, so after a restart of the API server (whose watch cache then starts at the new revision)
        a watch that resumes from before is told 410 Gone."""
        for i in range(times):
            body = json.dumps({"key": b64encode(b"/plait-test/bump").decode(),
                               "value": b64encode(str(i).encode()).decode()}).encode()
            request = urllib.request.Request(self.env["KUBE_TESTENV_ETCD"] + "/v3/kv/put", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
