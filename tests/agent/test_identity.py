"""Workload identity in the agent: renewal timing, the certificate manager, the bootstrap, and real processes.

The manager is tested against the CA's own signing (`plait.ca.authority`, `plait.ca.tokens`)
called in-process in place of the gRPC call; the live tests run ``plait control-plane`` (its
CA on a free port, ``--xds-auth strict``) and ``plait agent`` with a pod token, and read
Envoy's admin ``/certs`` to see what it serves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import itertools
import json
import os
import re
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format
from test_agent_bootstrap import TESTDATA, canonical
from typer.testing import CliRunner

from plait.agent.bootstrap import CONTROL_PLANE_NAME, BootstrapSettings, build_bootstrap, proxy_for_mode
from plait.agent.identity import (
    MIN_ROTATION_DELAY,
    CertificateError,
    CertificateManager,
    certificate_from,
    retry_delays,
    rotation_delay,
)
from plait.agent.registration import Registration, keep_registered
from plait.agent.run import reachable_by
from plait.ca.authority import (
    SERVER_DNS_NAMES,
    CertificateAuthority,
    CsrRefused,
    check_csr,
    generate_root,
    pem,
)
from plait.ca.client import CaUnavailable, CertificateRefused
from plait.ca.tokens import InvalidToken, TokenIssuer
from plait.cli.main import app as cli_app
from plait.model.proxy import TLS_MODE_LABEL, spiffe_id
from plait.testing.backends import loopback_subnet
from plait.testing.live import (
    AgentProcess,
    ControlPlaneProcess,
    PlaitProcess,
    free_port,
    wait_until,
)
from plait.xds.hub import proxy_from_node
from plait.xds.static import envoy_validate

REVIEWS = spiffe_id("default", "reviews")
T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def seconds(n: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=n)


# ------------------------------------------------------------------ when to renew


def test_rotation_is_at_half_life() -> None:
    assert rotation_delay(T0, T0 + seconds(86400), T0) == 43200
    assert rotation_delay(T0, T0 + seconds(6), T0 + seconds(1)) == 2


def test_rotation_delay_has_a_floor_so_a_tiny_or_spent_lifetime_cannot_spin() -> None:
    assert rotation_delay(T0, T0 + seconds(0.5), T0) == MIN_ROTATION_DELAY
    assert rotation_delay(T0, T0 + seconds(10), T0 + seconds(9)) == MIN_ROTATION_DELAY
    assert rotation_delay(T0, T0 + seconds(10), T0 + seconds(60)) == MIN_ROTATION_DELAY


def test_retries_back_off_from_half_a_second_to_thirty() -> None:
    delays = retry_delays()
    assert [next(delays) for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


# ------------------------------------------------------------------ the CA's answer


def leaf_for(authority: CertificateAuthority, identity: str, ttl: int = 3600, now=None) -> tuple[bytes, list[bytes]]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    return b"key", authority.sign(csr, identity, ttl, now or datetime.datetime.now(datetime.UTC))


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    key, root = generate_root()
    return CertificateAuthority(key, (root,), Path("unused"))


def intermediate_authority(root_authority: CertificateAuthority) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "inter")]))
        .issuer_name(root_authority.root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - seconds(60))
        .not_valid_after(now + seconds(86400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_authority.signing_key, hashes.SHA256())
    )
    return CertificateAuthority(key, (cert, root_authority.root), Path("unused"))


def test_the_root_is_split_off_the_chain(authority: CertificateAuthority) -> None:
    key, chain = leaf_for(authority, REVIEWS)
    cert = certificate_from(chain, key, b"trust anchor", T0)
    assert cert.chain_pem == chain[0] and cert.root_pem == pem(authority.root)
    assert cert.identity == REVIEWS and cert.key_pem == key


def test_intermediates_stay_in_the_chain_and_the_root_does_not(authority: CertificateAuthority) -> None:
    intermediate = intermediate_authority(authority)
    key, chain = leaf_for(intermediate, REVIEWS)
    assert len(chain) == 3
    cert = certificate_from(chain, key, b"trust anchor", T0)
    assert cert.chain_pem == chain[0] + chain[1] and cert.root_pem == pem(authority.root)


def test_without_a_root_in_the_answer_the_trust_anchor_is_the_root(authority: CertificateAuthority) -> None:
    key, chain = leaf_for(authority, REVIEWS)
    assert certificate_from(chain[:1], key, b"anchor\n", T0).root_pem == b"anchor\n"


def test_renewal_counts_from_when_it_was_asked_not_from_the_backdated_not_before(
    authority: CertificateAuthority,
) -> None:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    key, chain = leaf_for(authority, REVIEWS, ttl=6, now=now)
    cert = certificate_from(chain, key, b"", now)
    assert cert.not_before == now - seconds(60)  # the CA allows for clock skew, as Istio's does
    assert rotation_delay(cert.renew_from, cert.not_after, now) == 3


# ------------------------------------------------------------------ the manager, with the CA's signing in-process


class InProcessCa:
    """`request_certificate`'s contract over the CA's own checks: the token says who, the CSR must ask
    for exactly that identity. `unavailable` calls fail with CaUnavailable first."""

    def __init__(self, authority: CertificateAuthority, tokens: TokenIssuer):
        self.authority, self.tokens, self.unavailable = authority, tokens, 0
        self.tokens_seen: list[str] = []

    async def __call__(
        self, address: str, *, root_pem: bytes, token: str, csr_pem: bytes, ttl_seconds: int
    ) -> list[bytes]:
        self.tokens_seen.append(token)
        if self.unavailable:
            self.unavailable -= 1
            raise CaUnavailable(f"CA at {address}: UNAVAILABLE: connection refused")
        try:
            caller = self.tokens.verify(token)
            identity = spiffe_id(caller.namespace, caller.service_account)
            return self.authority.sign(
                check_csr(csr_pem, identity), identity, ttl_seconds, datetime.datetime.now(datetime.UTC)
            )
        except (InvalidToken, CsrRefused) as exc:
            raise CertificateRefused(str(exc)) from None


@pytest.fixture
def tokens() -> TokenIssuer:
    return TokenIssuer(os.urandom(32))


def manager_for(ca: InProcessCa, token_file: Path, identity: str = REVIEWS, ttl: int = 3600) -> CertificateManager:
    return CertificateManager(identity, "127.0.0.1:1", pem(ca.authority.root), token_file, ttl, request=ca)


def test_the_first_certificate_waits_for_an_unavailable_ca(authority, tokens, tmp_path: Path) -> None:
    ca = InProcessCa(authority, tokens)
    ca.unavailable = 1
    (tmp_path / "token").write_text(tokens.issue("default", "reviews", "reviews-v1"))
    manager, seen = manager_for(ca, tmp_path / "token"), []
    manager.subscribe(seen.append)
    started = time.monotonic()
    cert = asyncio.run(manager.first_certificate())
    assert time.monotonic() - started >= 0.5  # the first retry's backoff
    assert len(ca.tokens_seen) == 2 and cert.identity == REVIEWS and seen == [cert] and manager.current is cert
    assert (
        x509.load_pem_x509_certificate(cert.chain_pem).public_key().public_numbers()
        == serialization.load_pem_private_key(cert.key_pem, None).public_key().public_numbers()
    )  # our key, signed


def test_a_refused_identity_is_an_error_that_names_it(authority, tokens, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(tokens.issue("default", "ratings", "ratings-v1"))
    manager = manager_for(InProcessCa(authority, tokens), tmp_path / "token")
    with pytest.raises(
        CertificateError,
        match=re.escape(
            f"the CA refused {REVIEWS}: the CSR asks for URI:{REVIEWS}; "
            "this caller may only have spiffe://cluster.local/ns/"
            "default/sa/ratings"
        ),
    ):
        asyncio.run(manager.first_certificate())
    assert manager.current is None and manager.problem.startswith(f"the CA refused {REVIEWS}")


def test_an_unreadable_token_is_an_error(authority, tokens, tmp_path: Path) -> None:
    manager = manager_for(InProcessCa(authority, tokens), tmp_path / "missing")
    with pytest.raises(CertificateError, match="cannot read the token file .*missing: No such file"):
        asyncio.run(manager.first_certificate())


def test_renewal_uses_a_new_key_and_the_token_file_as_it_is_now(authority, tokens, tmp_path: Path) -> None:
    ca = InProcessCa(authority, tokens)
    token_file = tmp_path / "token"
    token_file.write_text(tokens.issue("default", "reviews", "reviews-v1"))
    manager, seen = manager_for(ca, token_file, ttl=2), []  # renewal after 1 s (the floor)

    async def scenario() -> None:
        manager.subscribe(seen.append)
        await manager.first_certificate()
        token_file.write_text(tokens.issue("default", "reviews", "reviews-v1-rotated"))
        renewal = asyncio.create_task(manager.keep_renewed())
        try:
            async with asyncio.timeout(10):
                while len(seen) < 2:
                    await asyncio.sleep(0.05)
        finally:
            renewal.cancel()

    asyncio.run(scenario())
    assert seen[0].serial != seen[1].serial and seen[0].key_pem != seen[1].key_pem
    assert tokens.verify(ca.tokens_seen[-1]).pod == "reviews-v1-rotated"


# ------------------------------------------------------------------ the bootstrap of an agent with an identity


def sidecar_with_identity() -> BootstrapSettings:
    return BootstrapSettings(
        proxy=proxy_for_mode(
            "proxy",
            name="reviews-v1",
            namespace="default",
            ip="127.0.10.1",
            labels={"app": "reviews"},
            service_account="reviews",
            identity=REVIEWS,
        ),
        control_plane="127.0.0.1:15012",
        sds_socket="/run/plait/reviews/proxy/sds.sock",
        token="header.payload.sig",
        xds_tls=True,
    )


def test_golden_bootstrap_with_an_identity_and_real_envoy_accepts_it() -> None:
    """Like test_agent_bootstrap's goldens (same form, REFRESH_GOLDEN=1 to rewrite), for an agent with a token."""
    bootstrap = build_bootstrap(sidecar_with_identity())
    actual, golden = canonical(bootstrap), TESTDATA / "bootstrap-proxy-identity.golden.json"
    if os.environ.get("REFRESH_GOLDEN"):
        golden.write_text(actual)
    assert actual == golden.read_text(), "bootstrap-proxy-identity changed (REFRESH_GOLDEN=1 to accept)"
    verdict = envoy_validate(bootstrap)
    assert verdict.ok, verdict.output


def test_the_control_plane_reads_the_identity_back_from_the_node() -> None:
    settings = sidecar_with_identity()
    node = json_format.ParseDict(build_bootstrap(settings)["node"], base_pb2.Node())
    assert proxy_from_node(node) == settings.proxy
    assert proxy_from_node(node).identity == REVIEWS


def test_a_sidecar_with_an_identity_says_so_and_is_labelled_for_mtls() -> None:
    metadata = build_bootstrap(sidecar_with_identity())["node"]["metadata"]
    assert metadata["PLAIT_IDENTITY"] == REVIEWS
    assert metadata["LABELS"] == {"app": "reviews", TLS_MODE_LABEL: "istio"}


def test_a_gateway_with_an_identity_gets_no_tls_mode_label() -> None:
    proxy = proxy_for_mode(
        "gateway",
        name="ingressgateway",
        namespace="istio-system",
        ip="127.0.20.1",
        labels={"istio": "ingressgateway"},
        identity=spiffe_id("istio-system", "ingressgateway"),
    )
    metadata = build_bootstrap(BootstrapSettings(proxy=proxy))["node"]["metadata"]
    assert metadata["LABELS"] == {"istio": "ingressgateway"}
    assert metadata["PLAIT_IDENTITY"] == "spiffe://cluster.local/ns/istio-system/sa/ingressgateway"


def test_the_ads_stream_carries_the_token_and_envoy_accepts_it() -> None:
    bootstrap = build_bootstrap(sidecar_with_identity())
    [service] = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"]
    assert service["initial_metadata"] == [{"key": "authorization", "value": "Bearer header.payload.sig"}]
    verdict = envoy_validate(bootstrap)
    assert verdict.ok, verdict.output


def test_xds_over_tls_checks_the_control_plane_name_against_rootca() -> None:
    [xds] = [
        c for c in build_bootstrap(sidecar_with_identity())["static_resources"]["clusters"] if c["name"] == "xds-grpc"
    ]
    tls = xds["transport_socket"]["typed_config"]
    assert tls["sni"] == CONTROL_PLANE_NAME == SERVER_DNS_NAMES[0]  # what the control plane's certificate names
    validation = tls["common_tls_context"]["combined_validation_context"]
    assert validation["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": CONTROL_PLANE_NAME}}
    ]
    plaintext = build_bootstrap(dataclasses.replace(sidecar_with_identity(), xds_tls=False))
    assert all("transport_socket" not in c for c in plaintext["static_resources"]["clusters"])


def test_without_an_identity_there_is_no_token_and_no_identity() -> None:
    settings = BootstrapSettings(proxy=proxy_for_mode("proxy", name="a", namespace="default", ip="127.0.0.1"))
    bootstrap = build_bootstrap(settings)
    assert "PLAIT_IDENTITY" not in bootstrap["node"]["metadata"]
    assert TLS_MODE_LABEL not in bootstrap["node"]["metadata"]["LABELS"]
    assert "initial_metadata" not in bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]


def test_registration_sends_the_token_as_it_is_in_the_file(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.method, request.headers.get("Authorization", "")))
        return web.json_response({})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        token = tmp_path / "token"
        token.write_text("first\n")
        proxy = sidecar_with_identity().proxy
        reg = Registration(
            api=f"http://127.0.0.1:{port}", proxy=proxy, address=proxy.ip, ports={"http": 9080}, token_file=token
        )
        stop = asyncio.Event()

        async def ready() -> bool:
            token.write_text("second\n")
            return True

        task = asyncio.create_task(keep_registered(reg, ready, stop))
        async with asyncio.timeout(5):
            while not seen:
                await asyncio.sleep(0.01)
        stop.set()
        await task
        await runner.cleanup()
        assert reg.body(True)["labels"][TLS_MODE_LABEL] == "istio"

    asyncio.run(scenario())
    assert seen == [("PUT", "Bearer second"), ("PUT", "Bearer second")]


# ------------------------------------------------------------------ real control plane, real agents

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: upstream}
spec:
  hosts: [upstream.example]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: upstream}
spec:
  host: upstream.example
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress: [{hosts: ["*/upstream.example"]}]  # declared: sent without a first call (automatic scoping)
"""


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory) -> Iterator[ControlPlaneProcess]:
    """With strict xDS authentication (xDS only over TLS on the CA's port, a stream needs the pod's token)
    and a CA that grants what agents ask."""
    work = tmp_path_factory.mktemp("identity")
    (work / "mesh").mkdir()
    (work / "mesh" / "upstream.yaml").write_text(MESH)  # ISTIO_MUTUAL: Envoy asks SDS for default and ROOTCA
    with ControlPlaneProcess(
        work / "mesh", work, extra_args=["--xds-auth", "strict", "--workload-cert-ttl", "1h"]
    ) as cp:
        yield cp


@pytest.fixture(scope="module")
def subnet() -> Iterator[str]:
    with loopback_subnet() as prefix:
        yield prefix


def agent(
    cp: ControlPlaneProcess,
    tmp_path: Path,
    ip: str,
    *,
    sa: str = "reviews",
    token_sa: str | None = None,
    ttl: str = "1h",
    flags: tuple[str, ...] = (),
) -> AgentProcess:
    token = cp.issue_token("default", token_sa or sa, f"{sa}-v1")
    return AgentProcess(
        cp,
        tmp_path,
        mode="proxy",
        name=f"{sa}-v1",
        ip=ip,
        labels={"app": sa},
        tls=True,
        extra_args=[
            "--service-account",
            sa,
            "--token-file",
            str(token),
            "--root-cert",
            str(cp.root_cert_path),
            "--ca-address",
            cp.ca_address,
            "--cert-ttl",
            ttl,
            *flags,
        ],
    )


def served_leaves(process: AgentProcess) -> list[dict]:
    """The leaf certificates Envoy's ``/certs`` lists (one per TLS context using ``default``)."""
    certs = process.admin.get("/certs")["certificates"]
    return [c["cert_chain"][0] for c in certs if c.get("cert_chain")]


def test_an_agent_with_a_token_serves_its_spiffe_certificate(control_plane, subnet, tmp_path: Path) -> None:
    register = ("--register", "http=9080", "--control-plane-api", f"http://127.0.0.1:{control_plane.http_port}")
    with agent(control_plane, tmp_path, f"{subnet}.1", flags=register) as sidecar:
        wait_until(lambda: served_leaves(sidecar), 10, "Envoy to load the workload certificate")
        leaves = served_leaves(sidecar)
        assert {leaf["subject_alt_names"][0]["uri"] for leaf in leaves} == {REVIEWS}
        root = x509.load_pem_x509_certificate(control_plane.root_cert_path.read_bytes())
        roots = [c["ca_cert"][0] for c in sidecar.admin.get("/certs")["certificates"] if c.get("ca_cert")]
        assert roots and {int(r["serial_number"], 16) for r in roots} == {root.serial_number}
        secrets = sidecar.admin.get("/config_dump?resource=dynamic_active_secrets")["configs"]
        assert {s["name"] for s in secrets} == {"default", "ROOTCA"}
        wait_until(
            lambda: {w["name"] for w in control_plane.api.get("/api/v1/workloads")} >= {"reviews-v1"},
            10,
            "the registration",
        )
        registered = {w["name"]: w for w in control_plane.api.get("/api/v1/workloads")}
        assert registered["reviews-v1"]["labels"][TLS_MODE_LABEL] == "istio"
        bootstrap = tmp_path / "agent-reviews-v1" / "envoy-bootstrap.json"
        assert stat.S_IMODE(bootstrap.stat().st_mode) == 0o600  # it holds the token
        assert json.loads(bootstrap.read_text())["node"]["metadata"]["PLAIT_IDENTITY"] == REVIEWS
        sock = tmp_path / "agent-reviews-v1" / "proxy" / "sds.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    log = sidecar.log_path.read_text()
    took = re.search(rf"certificate for {re.escape(REVIEWS)}: serial \w+, valid until .* \(took (\d+) ms\)", log)
    assert took, log
    assert log.index("certificate for") < log.index("Envoy started")  # Envoy starts with its certificate there


def test_envoy_gets_its_config_over_tls_with_its_token(control_plane, subnet, tmp_path: Path) -> None:
    """The fixture's control plane is strict: no plaintext port, so whatever Envoy holds came over TLS."""
    with agent(control_plane, tmp_path, f"{subnet}.5") as sidecar:
        stats = {
            s["name"]: s.get("value")
            for s in sidecar.admin.get("/stats?format=json&filter=^cluster\\.xds-grpc\\.")["stats"]
            if "name" in s
        }
        assert stats["cluster.xds-grpc.ssl.handshake"] >= 1 and stats["cluster.xds-grpc.ssl.connection_error"] == 0

        def synced() -> bool:
            [status] = [s for s in control_plane.api.get("/debug/syncz") if s["proxy_id"] == sidecar.proxy_id]
            states = {short: t["state"] for short, t in status["types"].items()}
            return set(states.values()) <= {"SYNCED", "NOT SENT"} and states["lds"] == "SYNCED"

        wait_until(synced, 10, "its config acknowledged")


def test_certificates_rotate_at_half_life_before_they_expire(control_plane, subnet, tmp_path: Path) -> None:
    with agent(control_plane, tmp_path, f"{subnet}.2", ttl="6s") as sidecar:
        seen: dict[int, tuple[float, datetime.datetime]] = {}  # serial -> (first seen, its expiry)

        def three_serials() -> bool:
            for leaf in served_leaves(sidecar):
                expiry = datetime.datetime.fromisoformat(leaf["expiration_time"])
                seen.setdefault(int(leaf["serial_number"], 16), (time.time(), expiry))
            return len(seen) >= 3

        wait_until(three_serials, 15, "two rotations of a 6s certificate")
    by_time = sorted(seen.values())
    for (_, expiry), (replaced_at, _) in itertools.pairwise(by_time):
        remaining = expiry.timestamp() - replaced_at
        assert remaining > 1, f"replaced only {remaining:.1f}s before it expired"  # at half life: ~3 s left
    assert "renewal in 3s" in sidecar.log_path.read_text()


def test_a_token_for_another_service_account_is_refused_and_the_agent_exits_1(
    control_plane, subnet, tmp_path: Path
) -> None:
    impostor = agent(control_plane, tmp_path, f"{subnet}.3", sa="reviews", token_sa="ratings")
    PlaitProcess.start(impostor)  # not AgentProcess.start: it would wait for readiness
    assert impostor.process.wait(20) == 1
    log = impostor.log_path.read_text()
    assert f"error: the CA refused {REVIEWS}: " in log and "spiffe://cluster.local/ns/default/sa/ratings" in log
    assert "Envoy started" not in log


def test_envoy_as_the_proxy_user_reaches_the_socket_and_its_command_line_has_no_token(
    control_plane, subnet, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.fail("running Envoy as uid 1337 needs root; CI runs this as root")
    assert not reachable_by(tmp_path, 1337)  # pytest's temporary directory is 0700: Envoy cannot reach the state dir
    with agent(control_plane, tmp_path, f"{subnet}.4", flags=("--proxy-uid", "1337")) as sidecar:
        wait_until(lambda: served_leaves(sidecar), 10, "Envoy (uid 1337) to load the workload certificate")
        envoy_pid = int((tmp_path / "agent-reviews-v1" / "envoy.pid").read_text())
        assert Path(f"/proc/{envoy_pid}/status").read_text().count("\t1337\t") >= 1  # Uid: 1337 …
        command_line = Path(f"/proc/{envoy_pid}/cmdline").read_bytes()
        token = Path(sidecar.args[sidecar.args.index("--token-file") + 1]).read_bytes()
        assert token not in command_line and b"-c\x00/tmp/plait-proxy-" in command_line
        proxy_dir = Path(command_line.split(b"\x00")[command_line.split(b"\x00").index(b"-c") + 1].decode()).parent
        assert proxy_dir.stat().st_uid == 1337 and stat.S_IMODE(proxy_dir.stat().st_mode) == 0o700
    assert not proxy_dir.exists()  # removed on exit


def test_while_the_ca_is_unreachable_the_agent_is_not_ready_and_stops_without_starting_envoy(
    start_agent, authority: CertificateAuthority, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("header.payload.signature")
    (tmp_path / "root.pem").write_bytes(pem(authority.root))
    ca = f"127.0.0.1:{free_port()}"  # nothing listens there
    waiting = start_agent(
        "--token-file",
        str(tmp_path / "token"),
        "--root-cert",
        str(tmp_path / "root.pem"),
        "--ca-address",
        ca,
        control_plane_port=free_port(),
    )
    wait_until(lambda: "unavailable" in waiting.readiness()[1], 10, "the agent to report the CA unavailable")
    status, reason = waiting.readiness()
    assert status == 503 and reason.startswith(f"no workload certificate yet: the CA at {ca} is unavailable")
    waiting.process.send_signal(signal.SIGTERM)
    assert waiting.wait_exit() == 0
    assert "stopped before the CA answered; Envoy was never started" in waiting.log()
    assert "Envoy started" not in waiting.log() and not (waiting.state_dir / "proxy" / "sds.sock").exists()


def test_token_file_without_root_cert_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app,
        ["agent", "--name", "a", "--ip", "127.0.0.1", "--token-file", str(tmp_path / "token")],
        env={"PLAIT_ROOT_CERT": ""},
    )
    assert result.exit_code == 2
    assert "--token-file needs the CA's root certificate" in result.output


@pytest.mark.parametrize("ttl, message", [("1s", "shorter than the 2s minimum"), ("soon", "is not a duration")])
def test_cert_ttl_is_checked(tmp_path: Path, ttl: str, message: str) -> None:
    result = CliRunner().invoke(
        cli_app,
        ["agent", "--name", "a", "--ip", "127.0.0.1", "--token-file", "t", "--root-cert", "r", "--cert-ttl", ttl],
    )
    assert result.exit_code == 2 and message in result.output


def test_the_tls_port_without_a_token_is_a_usage_error_that_says_what_to_do() -> None:
    result = CliRunner().invoke(
        cli_app,
        ["agent", "--name", "a", "--ip", "127.0.0.1", "--control-plane", "127.0.0.1:15012"],
        env={"PLAIT_TOKEN_FILE": ""},
    )
    assert result.exit_code == 2
    said = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # unwrapped from rich's error box
    assert "port 15012 is the control plane's TLS port, where xDS needs a pod token: give --token-file" in said
