"""Zero trust in the local mesh, end to end with real Envoys, in both modes (issue 5).

Bookinfo runs under `plait up` with certificates that live CERT_TTL seconds (agents renew them at
half life, so they rotate every few seconds under every test here). Checked as a user, or an
attacker, would see it:

* sidecar to sidecar traffic is mutual TLS (Envoy's TLS counters on both ends; the client checks the
  server's SPIFFE id), each sidecar holds a certificate for its own identity chaining to the mesh's
  root (`plait proxy-config secret`);
* PeerAuthentication: a plaintext client (no sidecar: straight from the host to a pod's inbound) is
  served under PERMISSIVE and refused under STRICT (mesh-wide, namespace, workload, and a
  portLevelMtls DISABLE exception), while the product page through the ingress gateway, which has an
  identity of its own, keeps working;
* AuthorizationPolicy: Istio's "only productpage may call reviews" (others get 403 "RBAC: access
  denied") and a DENY on one path;
* RequestAuthentication on the ingress gateway, as Istio's "authorization with JWT" task, with RS256
  tokens minted here against an inline JWKS;
* rotation under a steady request loop with zero failed requests;
* a pod asking the CA for another identity is refused, and the control plane logs it;
* capture mode: a pod cannot read the control plane's keys, use its debug API without a token, or
  reach another pod's Envoy admin API.

Requests "from a pod" are made as its app makes them: in capture mode curl runs inside the pod exactly
as the mesh runs pods (`plait.runtime.local.pod_argv`: the pod's network namespace, the control
plane's state hidden, no CAP_SYS_ADMIN/CAP_SYS_PTRACE), so the pod's sidecar captures them; in proxy
mode they go through the pod's sidecar as its HTTP proxy.

Proxy mode offers no isolation between pods: every app and sidecar runs as the host's user on the
host's loopback, so any of them can read the control plane's files and every pod's token, use any
sidecar as its proxy (and so borrow its identity) and reach every Envoy admin API. Its only security
check here is what still holds there: each Envoy admin API listens on 127.0.0.1 alone. Use capture
mode where isolation matters.

Only one local mesh runs on a machine at a time (fixed ports 15012/15014); the two modes'
meshes run one after the other.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from plait.ca.authority import root_cert_path
from plait.ca.tokens import token_key_path
from plait.cli import envoyconfig
from plait.client import Http
from plait.controlplane.api import admin_token_path
from plait.runtime import netns
from plait.runtime.local import TOKEN_FILE, Pod, State, control_plane_state, pod_argv
from plait.testing.http import Reply, http_request
from plait.testing.live import free_port, wait_until
from plait.testing.live import run_plait as plait
from plait.testing.localmesh import down_leaves_nothing, envoy_admin, listening, wait_for_no_other_mesh

MODES = ["proxy", "capture"]  # capture needs root (CI runs as root) and fails loudly without it
BOOKINFO = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo"
CERT_TTL = 10  # seconds: agents renew at half life, so every certificate rotates every ~5 s
TRUST = "spiffe://cluster.local/ns/default/sa/"
ISSUER = SUBJECT = "testing@secure.istio.io"  # as in Istio's JWT tasks

STRICT_MESH_WIDE = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"""
STRICT_NAMESPACE = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
"""
STRICT_DETAILS = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: details, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  mtls: {mode: STRICT}
"""
DETAILS_PORT_9080_DISABLE = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: details, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: DISABLE}
"""
ALLOW_PRODUCTPAGE_TO_REVIEWS = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}
    to:
    - operation: {methods: ["GET"]}
"""
DENY_DETAILS_OF_BOOK_1 = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-book-1, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/details/1"]}
"""
REQUIRE_JWT_AT_INGRESS = f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: ALLOW
  rules:
  - from:
    - source: {{requestPrincipals: ["{ISSUER}/{SUBJECT}"]}}
"""


# ------------------------------------------------------------------ the mesh and how requests reach it


@dataclass(frozen=True)
class CurlReply:
    exit_code: int  # curl's: 0 when an HTTP answer came back
    status: int  # 0 without an HTTP answer
    body: str


@dataclass
class Mesh:
    mode: str
    workdir: Path
    state_dir: Path
    ingress_port: int

    def pod(self, name: str) -> Pod:
        return next(p for p in State.load(self.state_dir).pods if p.name == name)

    def in_pod(self, pod: str, argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
        """Capture mode: run `argv` inside `pod` exactly as the mesh runs the pod's processes."""
        argv = pod_argv(self.state_dir, pod, argv)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def curl(self, pod: str, url: str, headers: dict[str, str] | None = None) -> CurlReply:
        """GET `url` as `pod`'s app would: its sidecar takes it (captured, or as HTTP proxy)."""
        argv = ["curl", "-s", "--max-time", "10", "-w", "\n%{http_code}", url]
        for name, value in (headers or {}).items():
            argv[1:1] = ["-H", f"{name}: {value}"]
        if self.mode == "capture":
            done = self.in_pod(pod, argv)
        else:
            argv[1:1] = ["--proxy", f"http://{self.pod(pod).ip}:15001"]
            env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "all_proxy", "no_proxy")}
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False, env=env)
        body, _, status = done.stdout.rpartition("\n")
        return CurlReply(done.returncode, int(status or 0), body)

    def admin(self, pod: str, path: str) -> str:
        return envoy_admin(self.state_dir, pod, path)

    def counter(self, pod: str, name: str) -> int:
        """One Envoy stat of `pod` (0 while Envoy does not have it yet)."""
        for line in self.admin(pod, f"/stats?filter=^{_regex(name)}$").splitlines():
            stat, _, value = line.partition(": ")
            if stat == name:
                return int(value)
        return 0

    def inbound_listener(self, pod: str) -> str:
        """The listener a peer's connection to the pod's port 9080 lands on."""
        return "0.0.0.0_15006" if self.mode == "capture" else f"{self.pod(pod).ip}_9080"

    def secrets(self, pod: str) -> dict[str, dict]:
        """The secrets `pod`'s Envoy holds, decoded as `plait proxy-config secret -o json` shows them."""
        decoded = envoyconfig.secrets(json.loads(self.admin(pod, "/config_dump")), datetime.now(UTC))
        return {secret["name"]: secret for secret in decoded}

    def page(self, headers: dict[str, str] | None = None) -> Reply:
        return http_request("127.0.0.1", self.ingress_port, "/productpage", headers)

    def plaintext(self, pod: str, path: str) -> int | None:
        """A client without a sidecar, straight from the host to the pod's port 9080 (capture: its pod
        IP, where the pod's iptables hand it to virtualInbound; proxy: the sidecar's inbound listener).
        The status, or None when the connection was refused, reset or closed without an answer."""
        try:
            return http_request(self.pod(pod).ip, 9080, path, timeout=5).status
        except (OSError, http.client.HTTPException):
            return None

    def apply(self, text: str) -> None:
        self._config("apply", text)

    def delete(self, text: str) -> None:
        self._config("delete", text)

    def _config(self, verb: str, text: str) -> None:
        path = self.workdir / f"{verb}.yaml"
        path.write_text(text)
        done = plait(verb, "-f", str(path), cwd=self.workdir)
        assert done.returncode == 0, done.stdout + done.stderr

    def synced(self) -> bool:
        """Every proxy has acknowledged the latest configuration the control plane sent it."""
        statuses = Http("http://127.0.0.1:15014").get("/debug/syncz")
        return all(t["state"] in ("SYNCED", "NOT SENT") for s in statuses for t in s["types"].values())

    def drained(self) -> bool:
        """No Envoy still serves a connection on a replaced listener or filter chain."""
        draining = "/stats?filter=^listener_manager\\.total_(listeners|filter_chains)_draining$"
        for pod in State.load(self.state_dir).pods:
            values = [int(line.partition(": ")[2]) for line in self.admin(pod.name, draining).splitlines()]
            assert len(values) == 2, (pod.name, values)  # both gauges: the filter matches what it should
            if any(values):
                return False
        return True

    def settle(self, predicate, what: str) -> None:
        """Wait until a config change shows (`predicate`), every proxy has acknowledged it, every Envoy
        has drained what it replaced (a connection opened before the change keeps its old filter chain
        for one more request or the drain time, 1 s locally), and it shows every time."""
        eventually(predicate, what)
        eventually(self.synced, f"every proxy to acknowledge the change ({what})")
        eventually(self.drained, f"every Envoy to drain its replaced filter chains ({what})")
        eventually(lambda: all(predicate() for _ in range(5)), f"{what}, every time")

    @contextlib.contextmanager
    def applied(self, text: str):
        """`text` applied for the duration of the block, deleted after it, whatever happens."""
        self.apply(text)
        try:
            yield
        finally:
            self.delete(text)


def _regex(stat: str) -> str:
    return "".join("\\" + c if c in ".|[]()^$*+?{}" else c for c in stat)


def complete(reply: Reply) -> bool:
    """The product page with its details and its reviews, as productpage got them over the mesh."""
    html = reply.body.decode(errors="replace")
    return reply.status == 200 and "<h2>Book Details</h2>" in html and "<h2>Book Reviews</h2>" in html


def eventually(predicate, what: str, timeout: float = 15) -> None:
    wait_until(predicate, timeout, what, interval=0.2)


def page_keeps_working(mesh: Mesh) -> None:
    """The product page works after a policy change. Right after one, a request may meet a 503
    ("connection termination"): a listener whose filter chain changed drains its connections, as in
    Istio (PERMISSIVE and STRICT match mTLS differently there too); then every request succeeds."""
    eventually(lambda: complete(mesh.page()), "the product page")
    assert all(complete(mesh.page()) for _ in range(5))


@pytest.fixture(scope="module", params=MODES)
def mesh(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"security-{request.param}")
    mesh = Mesh(request.param, workdir, workdir / "state", free_port())
    wait_for_no_other_mesh()
    started = time.monotonic()
    try:
        gateway = BOOKINFO / "networking" / "bookinfo-gateway.yaml"
        up = plait(
            "up",
            "-f",
            str(BOOKINFO / "manifests"),
            "-f",
            str(gateway),
            "-d",
            "--mode",
            mesh.mode,
            "--state-dir",
            str(mesh.state_dir),
            "--cert-ttl",
            f"{CERT_TTL}s",
            "--ingress-port",
            str(mesh.ingress_port),
            "--ingress-tls-port",
            str(free_port()),
            cwd=workdir,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        print(f"{mesh.mode}: mesh ready in {time.monotonic() - started:.1f}s")
        yield mesh
    finally:
        if State.load(mesh.state_dir):  # nothing to stop when `plait up` refused to start
            down_leaves_nothing(mesh.workdir, mesh.state_dir, mesh.mode)


capture_only = pytest.mark.parametrize("mesh", ["capture"], indirect=True)


# ------------------------------------------------------------------ mutual TLS and identities


def test_sidecars_talk_mutual_tls_with_their_own_spiffe_identities(mesh: Mesh) -> None:
    assert complete(mesh.page())
    # server side: details' inbound listener did TLS handshakes; client side: productpage's clusters
    # (and the ingress gateway's to productpage) did
    assert mesh.counter("details-v1-0", f"listener.{mesh.inbound_listener('details-v1-0')}.ssl.handshake") > 0
    for service in ("details", "reviews"):
        assert (
            mesh.counter(
                "productpage-v1-0", f"cluster.outbound|9080||{service}.default.svc.cluster.local.ssl.handshake"
            )
            > 0
        )
    assert (
        mesh.counter(
            "istio-ingressgateway", "cluster.outbound|9080||productpage.default.svc.cluster.local.ssl.handshake"
        )
        > 0
    )
    # the client accepts only the destination's service account
    clusters = envoyconfig.clusters(json.loads(mesh.admin("productpage-v1-0", "/config_dump")))
    reviews = next(c for c in clusters if c["name"] == "outbound|9080||reviews.default.svc.cluster.local")
    assert f'"{TRUST}bookinfo-reviews"' in json.dumps(reviews) and "bookinfo-ratings" not in json.dumps(reviews)

    root = x509.load_pem_x509_certificate((mesh.state_dir / "root-cert.pem").read_bytes())
    gateway = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    for pod, identity in (
        ("productpage-v1-0", TRUST + "bookinfo-productpage"),
        ("details-v1-0", TRUST + "bookinfo-details"),
        ("istio-ingressgateway", gateway),
    ):
        secrets = mesh.secrets(pod)
        assert secrets["default"]["identity"] == [identity], secrets["default"]
        assert secrets["default"]["valid"] and secrets["default"]["root"]["chains_to"] == "ROOTCA"
        assert secrets["ROOTCA"]["certificates"][0]["sha256"] == root.fingerprint(hashes.SHA256()).hex()


def test_proxy_config_secret_shows_the_identity_and_its_root(mesh: Mesh) -> None:
    """What a user runs on the host; in capture mode the CLI reads the admin API (on the pod's own
    loopback) from inside the pod's network namespace."""
    done = plait("proxy-config", "secret", "productpage-v1-0", cwd=mesh.workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    default = next(line for line in done.stdout.splitlines() if line.split()[:1] == ["default"])
    assert f"{TRUST}bookinfo-productpage" in default and "chains to ROOTCA" in default, done.stdout
    assert "ACTIVE" in default and " true " in default
    diff = plait("proxy-status", "productpage-v1-0", cwd=mesh.workdir)
    assert diff.returncode == 0 and "Envoy holds what the control plane sent." in diff.stdout, diff.stdout + diff.stderr


# ------------------------------------------------------------------ PeerAuthentication


@pytest.mark.parametrize("policy", [STRICT_MESH_WIDE, STRICT_NAMESPACE], ids=["mesh-wide", "namespace"])
def test_strict_refuses_a_plaintext_client_and_permissive_accepts_it(mesh: Mesh, policy: str) -> None:
    refusals = "tcp.inbound|9080|strict-mtls-refused-plaintext.downstream_cx_total"  # the chain that refuses
    assert mesh.plaintext("details-v1-0", "/details/0") == 200  # PERMISSIVE, the default
    with mesh.applied(policy):
        mesh.settle(lambda: mesh.plaintext("details-v1-0", "/details/0") is None, "STRICT to refuse plaintext")
        before = mesh.counter("details-v1-0", refusals)
        assert mesh.plaintext("details-v1-0", "/details/0") is None
        assert mesh.counter("details-v1-0", refusals) == before + 1  # refused by the inbound listener itself
        assert mesh.plaintext("ratings-v1-0", "/ratings/0") is None
        page_keeps_working(mesh)  # the gateway and the sidecars use mTLS
    mesh.settle(lambda: mesh.plaintext("details-v1-0", "/details/0") == 200, "plaintext to be served again")


def test_workload_strict_and_a_port_level_exception(mesh: Mesh) -> None:
    with mesh.applied(STRICT_DETAILS):
        mesh.settle(lambda: mesh.plaintext("details-v1-0", "/details/0") is None, "details to be STRICT")
        assert mesh.plaintext("ratings-v1-0", "/ratings/0") == 200  # other workloads stay PERMISSIVE
        page_keeps_working(mesh)
    with mesh.applied(STRICT_NAMESPACE), mesh.applied(DETAILS_PORT_9080_DISABLE):
        mesh.settle(lambda: mesh.plaintext("ratings-v1-0", "/ratings/0") is None, "the namespace to be STRICT")
        mesh.settle(lambda: mesh.plaintext("details-v1-0", "/details/0") == 200, "details' port 9080 DISABLE")
    mesh.settle(lambda: mesh.plaintext("ratings-v1-0", "/ratings/0") == 200, "PERMISSIVE again")


# ------------------------------------------------------------------ AuthorizationPolicy


def test_only_productpage_may_call_reviews(mesh: Mesh) -> None:
    reviews = "http://reviews:9080/reviews/0"
    # pooled connections to every reviews pod, which must not outlive the policy change (see settle)
    assert all(mesh.curl("ratings-v1-0", reviews).status == 200 for _ in range(10))
    with mesh.applied(ALLOW_PRODUCTPAGE_TO_REVIEWS):
        mesh.settle(lambda: mesh.curl("ratings-v1-0", reviews).status == 403, "the policy to deny ratings")
        for caller in ("ratings-v1-0", "details-v1-0"):
            denied = mesh.curl(caller, reviews)
            assert (denied.status, denied.body) == (403, "RBAC: access denied"), (caller, denied)
        # productpage, by its certificate, still gets reviews
        page_keeps_working(mesh)
        assert b"Reviewer1" in mesh.page().body
        assert mesh.curl("productpage-v1-0", reviews).status == 200
    mesh.settle(lambda: mesh.curl("ratings-v1-0", reviews).status == 200, "ratings to be allowed again")


def test_a_deny_policy_on_one_path(mesh: Mesh) -> None:
    with mesh.applied(DENY_DETAILS_OF_BOOK_1):
        mesh.settle(lambda: mesh.curl("ratings-v1-0", "http://details:9080/details/1").status == 403, "the DENY")
        assert mesh.curl("ratings-v1-0", "http://details:9080/details/1").body == "RBAC: access denied"
        assert mesh.curl("ratings-v1-0", "http://details:9080/details/0").status == 200
        page_keeps_working(mesh)  # the page asks for book 0
    mesh.settle(lambda: mesh.curl("ratings-v1-0", "http://details:9080/details/1").status == 200, "the delete")


# ------------------------------------------------------------------ RequestAuthentication


class Issuer:
    """An RS256 JWT issuer: a key made here, its JWKS, and tokens signed with it."""

    def __init__(self, kid: str = "plait-test"):
        self.key, self.kid = rsa.generate_private_key(public_exponent=65537, key_size=2048), kid

    def jwks(self) -> str:
        numbers = self.key.public_key().public_numbers()
        return json.dumps(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "alg": "RS256",
                        "use": "sig",
                        "kid": self.kid,
                        "n": _b64(_uint(numbers.n)),
                        "e": _b64(_uint(numbers.e)),
                    }
                ]
            }
        )

    def token(self, *, subject: str = SUBJECT, lifetime: int = 3600, signer: rsa.RSAPrivateKey | None = None) -> str:
        now = int(time.time())
        header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": self.kid}).encode())
        claims = {"iss": ISSUER, "sub": subject, "iat": min(now, now + lifetime) - 60, "exp": now + lifetime}
        payload = _b64(json.dumps(claims).encode())
        signature = (signer or self.key).sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(number: int) -> bytes:
    return number.to_bytes((number.bit_length() + 7) // 8, "big")


def request_authentication(issuer: Issuer) -> str:
    """Istio's task's RequestAuthentication on the ingress gateway, with the keys inline."""
    return yaml.safe_dump(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": {"name": "jwt-example", "namespace": "istio-system"},
            "spec": {
                "selector": {"matchLabels": {"istio": "ingressgateway"}},
                "jwtRules": [{"issuer": ISSUER, "jwks": issuer.jwks()}],
            },
        },
        sort_keys=False,
    )


def test_jwt_on_the_ingress_gateway(mesh: Mesh) -> None:
    issuer = Issuer()
    forged = issuer.token(signer=rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def status(token: str | None) -> int:
        return mesh.page({"Authorization": f"Bearer {token}"} if token else None).status

    with mesh.applied(request_authentication(issuer)):
        mesh.settle(lambda: status(forged) == 401, "the RequestAuthentication to reject a bad signature")
        assert status(issuer.token()) == 200
        expired = mesh.page({"Authorization": f"Bearer {issuer.token(lifetime=-3600)}"})
        assert (expired.status, expired.body) == (401, b"Jwt is expired")
        assert status(None) == 200  # no token: let through unless a policy asks for one
        with mesh.applied(REQUIRE_JWT_AT_INGRESS):
            mesh.settle(lambda: status(None) == 403, "the AuthorizationPolicy to require a token")
            assert complete(mesh.page({"Authorization": f"Bearer {issuer.token()}"}))
            assert status(issuer.token(subject="someone-else")) == 403
            assert status(forged) == 401
    mesh.settle(lambda: status(forged) == 200, "tokens to be ignored again")  # not checked: the app ignores it


# ------------------------------------------------------------------ rotation and the CA


def test_certificates_rotate_under_a_steady_request_loop(mesh: Mesh) -> None:
    """Two rotations of productpage's certificate (and of every other: same lifetime) while the
    product page is loaded continuously: every request succeeds."""
    serials, failures, requests = [mesh.secrets("productpage-v1-0")["default"]["certificates"][0]["serial"]], [], 0
    deadline, next_look = time.monotonic() + 3 * CERT_TTL, 0.0
    while len(set(serials)) < 3 and time.monotonic() < deadline:
        try:
            reply = mesh.page()
            if not complete(reply):
                failures.append(reply.status)
        except OSError as exc:
            failures.append(repr(exc))
        requests += 1
        if time.monotonic() >= next_look:
            serials.append(mesh.secrets("productpage-v1-0")["default"]["certificates"][0]["serial"])
            next_look = time.monotonic() + 0.5
    print(f"{mesh.mode}: {requests} requests, serials {list(dict.fromkeys(serials))}")
    assert len(set(serials)) >= 3, f"productpage's certificate did not rotate twice: {serials}"
    assert failures == [], f"{len(failures)} of {requests} requests failed: {failures[:5]}"


IMPERSONATE = """\
import asyncio, json, sys
from pathlib import Path

import grpc
from cryptography import x509

from plait.ca import wire
from plait.ca.client import SERVER_NAME, CertificateRefused, new_key_and_csr, request_certificate

address, token_file, root_file = sys.argv[1:4]
token, root = Path(token_file).read_text().strip(), Path(root_file).read_bytes()


async def raw(identity):
    # Istio's CreateCertificate as any agent sends it: the gRPC status is what the CA answered
    request = wire.IstioCertificateRequest(csr=new_key_and_csr(identity)[1].decode(), validity_duration=60)
    async with grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root),
                                       options=[("grpc.ssl_target_name_override", SERVER_NAME)]) as channel:
        call = channel.unary_unary(wire.METHOD_PATH, request_serializer=wire.IstioCertificateRequest.SerializeToString,
                                   response_deserializer=wire.IstioCertificateResponse.FromString)
        try:
            answer = await call(request, metadata=(("authorization", "Bearer " + token),), timeout=10)
        except grpc.aio.AioRpcError as error:
            return [error.code().name, error.details()]
    leaf = x509.load_pem_x509_certificate(answer.cert_chain[0].encode())
    return ["OK", [u.value for u in leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]]


async def client(identity):
    try:
        await request_certificate(address, root_pem=root, token=token, csr_pem=new_key_and_csr(identity)[1],
                                  ttl_seconds=60)
    except CertificateRefused as refused:
        return ["refused", str(refused)]
    return ["issued", ""]


own, other = sys.argv[4:6]
answers = {"own": asyncio.run(raw(own)), "other": asyncio.run(raw(other)), "client": asyncio.run(client(other))}
print(json.dumps(answers))
"""


def test_a_pod_asking_for_another_identity_is_refused_and_logged(mesh: Mesh) -> None:
    """ratings' token, presented from inside the ratings pod, gets ratings' identity and nothing else."""
    token = mesh.state_dir / "pods" / "ratings-v1-0" / TOKEN_FILE
    root = mesh.state_dir / "root-cert.pem"
    own, other = TRUST + "bookinfo-ratings", TRUST + "bookinfo-reviews"
    if mesh.mode == "capture":
        done = mesh.in_pod(
            "ratings-v1-0",
            [sys.executable, "-c", IMPERSONATE, f"{netns.Network().gateway}:15012", str(token), str(root), own, other],
            timeout=30,
        )
    else:
        done = subprocess.run(
            [sys.executable, "-c", IMPERSONATE, "127.0.0.1:15012", str(token), str(root), own, other],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    answers = json.loads(done.stdout)
    assert answers["own"] == ["OK", [own]]
    assert answers["other"][0] == "PERMISSION_DENIED" and other in answers["other"][1], answers
    assert answers["client"][0] == "refused" and other in answers["client"][1], answers
    log = mesh.state_dir / "logs" / "control-plane.log"
    eventually(
        lambda: any(
            "certificate refused (wrong_identity)" in line and other in line and "ratings-v1-0" in line
            for line in log.read_text().splitlines()
        ),
        "the refusal in the control plane's log",
        5,
    )


def test_every_proxy_gets_its_config_over_tls_and_there_is_no_plaintext_xds(mesh: Mesh) -> None:
    """`plait up` runs the control plane with --xds-auth strict: xDS only on 15012, TLS, the pod's token."""
    assert not listening(15010)
    statuses = Http("http://127.0.0.1:15014").get("/debug/syncz")
    pods = State.load(mesh.state_dir).pods
    assert {s["proxy"]["name"] for s in statuses} == {pod.name for pod in pods}  # all connected, over 15012
    for pod in pods:
        assert mesh.counter(pod.name, "cluster.xds-grpc.ssl.handshake") >= 1, pod.name
        assert mesh.counter(pod.name, "cluster.xds-grpc.ssl.connection_error") == 0, pod.name
    log = (mesh.state_dir / "logs" / "control-plane.log").read_text()
    assert "plaintext xDS off (--xds-auth strict)" in log


# ------------------------------------------------------------------ what a pod cannot reach


@capture_only
def test_a_pod_cannot_read_the_control_plane_keys(mesh: Mesh) -> None:
    private = control_plane_state(mesh.state_dir)
    secrets = [root_cert_path(private).parent / "ca-key.pem", token_key_path(private), admin_token_path(private)]
    assert all(path.is_file() for path in secrets)  # they are there, on the host
    pid = State.load(mesh.state_dir).control_plane_pid
    for path in secrets:
        for seen_as in (path.resolve(), Path(f"/proc/{pid}/root{path.resolve()}")):
            done = mesh.in_pod("ratings-v1-0", ["cat", str(seen_as)])
            assert done.returncode != 0 and done.stdout == "", f"a pod read {seen_as}"
    listing = mesh.in_pod("ratings-v1-0", ["ls", "-A", str(private.resolve())])
    assert (listing.returncode, listing.stdout) == (0, "")  # an empty directory where the keys are
    assert mesh.in_pod("ratings-v1-0", ["ls", "-A", f"/proc/{pid}/root{private.resolve()}"]).stdout == ""
    assert mesh.in_pod("ratings-v1-0", ["cat", str(mesh.state_dir / "root-cert.pem")]).returncode == 0  # public


@capture_only
def test_a_pod_cannot_use_another_pods_token(mesh: Mesh) -> None:
    """Each pod sees only its own directory under <state>/pods: not another pod's token (which the
    CA would take as that pod's identity) nor its SDS socket (which serves its private key)."""
    others = mesh.state_dir / "pods" / "reviews-v1-0"
    for stolen in (others / TOKEN_FILE, others / "proxy" / "sds.sock"):
        done = mesh.in_pod("ratings-v1-0", ["cat", str(stolen)])
        assert done.returncode != 0 and done.stdout == "", f"the ratings pod read {stolen}"
    assert mesh.in_pod("ratings-v1-0", ["ls", "-A", str(mesh.state_dir / "pods")]).stdout.split() == ["ratings-v1-0"]
    own = mesh.in_pod("ratings-v1-0", ["cat", str(mesh.state_dir / "pods" / "ratings-v1-0" / TOKEN_FILE)])
    assert own.returncode == 0 and own.stdout.count(".") == 2  # its own token: a JWT


@capture_only
def test_the_control_plane_debug_api_needs_a_token_from_a_pod(mesh: Mesh) -> None:
    api = f"http://{netns.Network().gateway}:15014"
    assert mesh.curl("ratings-v1-0", f"{api}/ready").status == 200
    for path in ("/debug/syncz", "/debug/config_dump?proxy=x", "/api/v1/config"):
        assert mesh.curl("ratings-v1-0", api + path).status == 401, path


@capture_only
def test_a_pod_cannot_reach_another_pods_envoy_admin(mesh: Mesh) -> None:
    details = mesh.pod("details-v1-0")
    own = mesh.pod("ratings-v1-0").admin_port
    assert mesh.curl("ratings-v1-0", f"http://127.0.0.1:{own}/ready").status == 200  # its own, on its loopback
    for port in (details.admin_port, 15000):
        reply = mesh.curl("ratings-v1-0", f"http://{details.ip}:{port}/config_dump")
        # Nothing answers on the pod's address: no HTTP at all, or (an HTTP request on a port no
        # Service declares goes through the inbound passthrough chains, as in Istio) Envoy's 503
        # saying the connection to the pod's address:port failed; never the admin's config dump.
        refused = reply.exit_code != 0 and (reply.status, reply.body) == (0, "")
        assert refused or (reply.status == 503 and "remote connection failure" in reply.body), (port, reply)


def test_envoy_admin_listens_on_loopback_only(mesh: Mesh) -> None:
    for pod in State.load(mesh.state_dir).pods:
        argv = ["ss", "-ltnH", f"sport = :{pod.admin_port}"]
        if mesh.mode == "capture" and pod.kind != "gateway":
            argv = netns.exec_argv(netns.Network().namespace(pod.name), argv)
        sockets = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout.split("\n")
        local = {line.split()[3] for line in sockets if line.strip()}
        assert local == {f"127.0.0.1:{pod.admin_port}"}, (pod.name, local)
