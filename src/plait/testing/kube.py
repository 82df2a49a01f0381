"""A real Kubernetes API server for tests (`shared/tools/kube-testenv`, API-only mode: no root, ~4 s).

`KubeTestenv` starts one in a fresh directory, runs kubectl against it, and can stop and start
it again on the same directory and port (etcd's data kept), as an API-server outage looks to a
client. Found by `find_testenv`.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import urllib.request
from base64 import b64encode
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SEARCHED = ("shared/tools/kube-testenv", "../shared/tools/kube-testenv", "../../shared/tools/kube-testenv")


def find_testenv() -> Path | None:
    """Where kube-testenv is: $PLAIT_KUBE_TESTENV, else ``shared/tools/kube-testenv`` in or beside the
    current directory or the checkout (one or two levels up, as for a worktree); None if nowhere."""
    given = os.environ.get("PLAIT_KUBE_TESTENV")
    checkout = Path(__file__).resolve().parents[3]
    candidates = [Path(given)] if given else [base / p for base in (Path.cwd(), checkout) for p in SEARCHED]
    return next((p.resolve() for p in candidates if (p / "start.sh").exists()), None)


def require_testenv() -> Path:
    """`find_testenv`, or an error saying where it is looked for: a test that needs a real cluster fails
    without one, it is not skipped."""
    found = find_testenv()
    if found is None:
        raise FileNotFoundError(
            "kube-testenv not found: put shared/tools/kube-testenv beside the checkout or set PLAIT_KUBE_TESTENV"
        )
    return found


class KubeTestenv:
    def __init__(self, tool: Path, *, prefix: str = "plait-kube-", node: bool = False):
        self.tool = tool
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.node = node  # a whole node (start.sh --node, root): pods really run
        self.env: dict[str, str] = {}

    @property
    def kubeconfig(self) -> str:
        return str(self.dir / "kubeconfig")

    def start(self) -> "KubeTestenv":
        """Start (or start again, on the same port once it has one) and read DIR/env."""
        extra = {"KUBE_TESTENV_PORT": self.env["KUBE_TESTENV_SERVER"].rsplit(":", 1)[1]} if self.env else {}
        subprocess.run(
            [self.tool / "start.sh", self.dir, *(["--node"] if self.node else [])],
            check=True,
            env={**os.environ, **extra},
            stdout=subprocess.DEVNULL,
        )
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
        subprocess.run(
            [self.tool / "crds.sh"],
            check=True,
            env={**os.environ, "KUBECONFIG": self.kubeconfig},
            stdout=subprocess.DEVNULL,
        )

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        kubectl = Path(self.env["KUBE_TESTENV_BIN"]) / "kubectl"
        done = subprocess.run(
            [str(kubectl), "--kubeconfig", self.kubeconfig, *args], input=stdin, text=True, capture_output=True
        )
        if done.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def apply(self, yaml_text: str) -> str:
        return self.kubectl("apply", "--validate=false", "-f", "-", stdin=yaml_text)

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> str:
        """A kubeconfig for another identity: a client certificate (CN = user, O = groups) signed by
        the cluster's CA; what it may do is up to the RBAC objects the test creates."""
        ca_cert = x509.load_pem_x509_certificate((self.dir / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((self.dir / "ca.key").read_bytes(), password=None)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, user),
                *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem_key = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": user,
            "clusters": [
                {
                    "name": "testenv",
                    "cluster": {
                        "server": self.env["KUBE_TESTENV_SERVER"],
                        "certificate-authority-data": b64encode((self.dir / "ca.crt").read_bytes()).decode(),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
                        "client-key-data": b64encode(pem_key).decode(),
                    },
                }
            ],
            "contexts": [{"name": user, "context": {"cluster": "testenv", "user": user}}],
        }
        path = self.dir / f"kubeconfig-{user}"
        path.write_text(json.dumps(config))
        return str(path)

    def bump_etcd_revision(self, times: int = 5) -> None:
        """Write a key of no API type straight into etcd: its revision moves on with no event any watch
        sees, so after a restart of the API server (whose watch cache then starts at the new revision)
        a watch that resumes from before is told 410 Gone."""
        for i in range(times):
            body = json.dumps(
                {"key": b64encode(b"/plait-test/bump").decode(), "value": b64encode(str(i).encode()).decode()}
            ).encode()
            request = urllib.request.Request(self.env["KUBE_TESTENV_ETCD"] + "/v3/kv/put", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
