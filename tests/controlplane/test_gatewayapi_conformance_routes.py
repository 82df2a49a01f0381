"""Gateway API conformance scenarios for GRPCRoute, TCPRoute and TLSRoute against real gateway Envoys.

As in test_gatewayapi_conformance.py: each scenario's manifest is copied unchanged from the upstream
suite (testdata/gateway-api-conformance, see its NOTICE) and its requests and expected answers are
ported from the scenario's Go file. The suite's base is re-created: Gateway `same-namespace` and the
Services grpc-infra-backend-v1/v2/v3 (appProtocol kubernetes.io/h2c, as upstream), tcp-backend,
tls-backend and tls-backend-2 in gateway-conformance-infra, each a loopback backend that names itself
(gRPC: in its reply; TLS: after the handshake, with the SNI it saw). Manifests that bring their own
Gateways get them applied as written, with `{GATEWAY_CLASS_NAME}` filled in (as the upstream suite
does) and each listener port mapped to a free port (the test machine's gateways run on the host); a
`plait agent` runs each such Gateway's proxy for the scenario. Scenarios that check status only are
checked on the lowered status (what `plait get` shows).
"""

from __future__ import annotations

import collections
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from plait.api import load_text
from plait.lower import lower
from plait.testing.backends import TcpBackend, loopback_subnet
from plait.testing.live import AgentProcess, ControlPlaneProcess, free_port, wait_until
from plait.testing.protocol_backends import GrpcBackend, TlsBackend, grpc_call

DATA = Path(__file__).parent / "testdata" / "gateway-api-conformance"
CERTS = Path(__file__).parents[1] / "xds" / "testdata" / "certs"
NS = "gateway-conformance-infra"
CONVERGE = 10.0
ECHO = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
GATEWAY_LABEL = "gateway.networking.k8s.io/gateway-name"

# backend name → (loopback host number, Service port, port name or appProtocol, targetPort)
BACKENDS = {
    "grpc-infra-backend-v1": (41, 8080, "kubernetes.io/h2c", None),
    "grpc-infra-backend-v2": (42, 8080, "kubernetes.io/h2c", None),
    "grpc-infra-backend-v3": (43, 8080, "kubernetes.io/h2c", None),
    "tcp-backend": (50, 8443, "echo-tcp-tls", None),
    "tls-backend": (61, 443, None, 8443),
    "tls-backend-2": (62, 443, None, 8443),
}
TCP_BACKENDS = {"tcp-backend-v1": 51, "tcp-backend-v2": 52, "tcp-backend-v3": 53}  # Services in the manifest


def base(net: str, port: int) -> str:
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "same-namespace", "namespace": NS},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {"name": "http", "port": port, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}}
            ],
        },
    }
    docs: list[dict] = [gateway]
    for name, (_host, svc_port, protocol, target) in BACKENDS.items():
        port_spec: dict = {"port": svc_port, "protocol": "TCP"}
        if protocol and "/" in protocol:
            port_spec["appProtocol"] = protocol
        elif protocol:
            port_spec["name"] = protocol
        if target:
            port_spec["targetPort"] = target
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"selector": {"app": name}, "ports": [port_spec]},
            }
        )
    for name, host in {**{n: b[0] for n, b in BACKENDS.items()}, **TCP_BACKENDS}.items():
        docs.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "WorkloadEntry",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"address": f"{net}.{host}", "labels": {"app": name}},
            }
        )
    return yaml.safe_dump_all(docs)


def manifest(scenario: str, ports: dict[tuple[str, str], int] | None = None) -> str:
    """The scenario's manifest as the upstream suite applies it: the class filled in; with `ports`, each
    listener's port mapped ((gateway, listener) → port)."""
    text = (DATA / f"{scenario}.yaml").read_text().replace("{GATEWAY_CLASS_NAME}", "istio")
    if ports is None:
        return text
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        if doc["kind"] == "Gateway":
            for listener in doc["spec"]["listeners"]:
                listener["port"] = ports[(doc["metadata"]["name"], listener["name"])]
    return yaml.safe_dump_all(docs)


def gateway_listeners(scenario: str) -> list[tuple[str, str, int]]:
    """(gateway, listener, port) of each listener of the scenario's own Gateways."""
    docs = [d for d in yaml.safe_load_all(manifest(scenario)) if d]
    return [
        (d["metadata"]["name"], lst["name"], lst["port"])
        for d in docs
        if d["kind"] == "Gateway"
        for lst in d["spec"]["listeners"]
    ]


# ---------------------------------------------------------------- the live suite


class Suite:
    def __init__(self, net: str, port: int, cp: ControlPlaneProcess, workdir: Path, grpc_backends: dict):
        self.net, self.port, self.cp, self.workdir, self.grpc_backends = net, port, cp, workdir, grpc_backends

    def call(self, method: str, metadata: dict[str, str] | None = None, authority: str = "example.com"):
        """A unary call to the same-namespace Gateway: (the backend's name, its reply) or the error code."""
        try:
            reply, _ = grpc_call(
                f"{self.net}.2", self.port, ECHO + "/" + method, authority=authority, metadata=metadata
            )
        except grpc.RpcError as failed:
            return failed.code(), None
        return reply["name"], reply

    def answers(self, case: tuple) -> bool:
        method, metadata, expected = case
        return self.call(method, metadata)[0] == expected


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("conformance-routes")
    port = free_port()
    cert, key = CERTS / "cert.pem", CERTS / "key.pem"
    with loopback_subnet() as net, ControlPlaneProcess(workdir / "mesh", workdir) as cp:
        cp.apply(base(net, port))
        grpc_backends = {n: GrpcBackend(n, f"{net}.{BACKENDS[n][0]}", 8080) for n in BACKENDS if n.startswith("grpc")}
        backends: list = list(grpc_backends.values())
        backends.append(TlsBackend("tcp-backend", f"{net}.50", 8443, cert, key))
        backends += [
            TlsBackend(n, f"{net}.{BACKENDS[n][0]}", 8443, cert, key) for n in ("tls-backend", "tls-backend-2")
        ]
        backends += [TcpBackend(n, f"{net}.{host}", 3000) for n, host in TCP_BACKENDS.items()]
        for b in backends:
            b.__enter__()
        agent = AgentProcess(
            cp, workdir, mode="gateway", name="same-namespace-istio", namespace=NS, ip=f"{net}.2",
            labels={GATEWAY_LABEL: "same-namespace"},
        )  # fmt: skip
        try:
            agent.start()
            wait_until(lambda: cp.synced(agent.proxy_id), CONVERGE, "the gateway SYNCED", interval=0.1)
            yield Suite(net, port, cp, workdir, grpc_backends)
        finally:
            agent.stop()
            for b in backends:
                b.__exit__(None, None, None)


UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
V1, V2 = "grpc-infra-backend-v1", "grpc-infra-backend-v2"

# scenario → (method, request metadata, expected backend or status code), ported from the Go tests
GRPC_SCENARIOS: dict[str, list[tuple]] = {
    "grpcroute-exact-method-matching": [("Echo", {}, V1), ("EchoTwo", {}, V2), ("EchoThree", {}, UNIMPLEMENTED)],
    "grpcroute-header-matching": [
        ("Echo", {"version": "one"}, V1),
        ("Echo", {"version": "two"}, V2),
        ("Echo", {"version": "two", "color": "orange"}, V1),
        ("Echo", {"version": "two", "color": "blue"}, V2),
        ("Echo", {"color": "orange"}, UNIMPLEMENTED),
        ("Echo", {"some-other-header": "one"}, UNIMPLEMENTED),
        ("Echo", {"color": "blue"}, V1),
        ("Echo", {"color": "green"}, V1),
        ("Echo", {"color": "red"}, V2),
        ("Echo", {"color": "yellow"}, V2),
        ("Echo", {"color": "purple"}, UNIMPLEMENTED),
    ],
    "grpcroute-named-rule": [("Echo", {}, V1), ("EchoTwo", {}, V2)],
    "grpcroute-request-header-modifier": [
        ("Echo", {"some-other-header": "this-header-should-be-set"}, V1),
        ("Echo", {"some-other-header": "this-header-should-be-set", "x-header-set": "overwritten"}, V1),
        ("Echo", {"x-header-remove": "this-should-be-removed"}, V1),
        ("EchoTwo", {"x-header-set-2": "set-header-2", "x-header-remove-2": "should-be-removed-2"}, V2),
    ],
}


@pytest.mark.parametrize("scenario", sorted(GRPC_SCENARIOS))
def test_grpc_conformance_scenario(suite: Suite, scenario: str) -> None:
    text, cases = manifest(scenario), GRPC_SCENARIOS[scenario]
    suite.cp.apply(text)
    try:
        wait_until(lambda: all(suite.answers(c) for c in cases), CONVERGE, f"{scenario} in force", interval=0.2)
        for method, metadata, expected in cases:
            got, reply = suite.call(method, metadata)
            assert got == expected, (method, metadata, got)
            if reply is not None:  # upstream also checks the method the backend saw
                assert reply["method"] == f"{ECHO}/{method}"
    finally:
        suite.cp.delete(text)


def test_grpc_request_header_modifier_changes_what_the_backend_sees(suite: Suite) -> None:
    """Beyond upstream's checks (backend and method): the first rule for Echo sets X-Header-Set, the one
    for EchoTwo sets, adds and removes."""
    text = manifest("grpcroute-request-header-modifier")
    suite.cp.apply(text)
    try:
        overwrite = {"x-header-set": "this-value-should-be-overwritten"}

        def overwritten() -> bool:  # eventually consistent, as upstream's checks: the previous test deleted it
            reply = suite.call("Echo", overwrite)[1]
            return reply is not None and reply["metadata"].get("x-header-set") == "set-overwrites-values"

        wait_until(overwritten, CONVERGE, "the route in force", interval=0.2)
        for _ in range(10):
            assert suite.call("Echo", overwrite)[1]["metadata"]["x-header-set"] == "set-overwrites-values"
        sent = {"x-header-set-2": "set-header-2", "x-header-remove-2": "gone", "some-other-header": "kept"}
        _, reply = suite.call("EchoTwo", sent)
        seen = reply["metadata"]
        assert (seen["x-header-set-1"], seen["x-header-set-2"]) == ("header-set-1", "header-set-2")
        assert (seen["x-header-add-1"], seen["some-other-header"]) == ("header-add-1", "kept")
        assert "x-header-remove-2" not in seen
    finally:
        suite.cp.delete(text)


def test_grpcroute_weight(suite: Suite) -> None:
    text = manifest("grpcroute-weight")
    suite.cp.apply(text)
    try:
        wait_until(lambda: suite.call("Echo")[0] in (V1, V2), CONVERGE, "the weighted route", interval=0.2)
        landed = collections.Counter(suite.call("Echo")[0] for _ in range(200))
        assert set(landed) == {V1, V2}, landed  # grpc-infra-backend-v3 has weight 0
        assert 118 <= landed[V1] <= 182, landed  # 140 expected; bounds ~5 standard deviations
    finally:
        suite.cp.delete(text)


# ---------------------------------------------------------------- scenarios with their own Gateways


@dataclass(frozen=True)
class Probe:
    """A connection to a Gateway's listener: TLS with `sni`, or plain TCP; who must answer (None: the
    connection must be refused or closed)."""

    gateway: str
    listener: str
    backend: str | None
    sni: str | None = None


def _connect(address: str, port: int, sni: str | None) -> str | None:
    """The answering backend's name, or None when the connection is closed before it answers."""
    try:
        with socket.create_connection((address, port), timeout=5) as raw:
            if sni is None:
                return raw.makefile("rb").readline().decode().split(" ")[0].strip() or None
            context = ssl.create_default_context(cafile=CERTS / "cert.pem")
            context.check_hostname = False  # the test certificate is not the backends' names; routing is by SNI
            with context.wrap_socket(raw, server_hostname=sni) as conn:
                line = conn.makefile("rb").readline().decode().split()
                assert line[1] == sni, line  # the backend saw the SNI the client sent (passthrough)
                return line[0]
    except (ssl.SSLError, ConnectionError, TimeoutError, OSError, IndexError):
        return None


L4_SCENARIOS: dict[str, list[Probe]] = {
    "tlsroute-simple-same-namespace": [Probe("gateway-tlsroute", "https", "tcp-backend", "abc.example.com")],
    "tlsroute-hostname-intersection": [
        Probe("gw-tlsroute-exact-hostname-x-1", "listener-exact-hostname", "tls-backend", "abc.example.com"),
        Probe("gw-tlsroute-exact-hostname-x-1", "listener-exact-hostname", None, "non.matching.com"),
        Probe("gw-tlsroute-more-specific-wc-hostname-x-2", "listener-more-specific-wc-hostname", "tls-backend", "abc.example.com"),
        Probe("gw-tlsroute-more-specific-wc-hostname-x-2", "listener-more-specific-wc-hostname", "tls-backend-2", "other.example.com"),
        Probe("gw-tlsroute-more-specific-wc-hostname-x-2", "listener-more-specific-wc-hostname", None, "non.matching.com"),
        Probe("gw-tlsroute-less-specific-wc-hostname-x-3", "listener-less-specific-wc-hostname", "tls-backend", "abc.example.com"),
        Probe("gw-tlsroute-less-specific-wc-hostname-x-3", "listener-less-specific-wc-hostname", "tls-backend-2", "other.example.com"),
        Probe("gw-tlsroute-less-specific-wc-hostname-x-3", "listener-less-specific-wc-hostname", None, "non.matching.org"),
        Probe("gw-tlsroute-empty-hostname-x-4", "listener-empty-hostname", "tls-backend", "abc.example.com"),
        Probe("gw-tlsroute-empty-hostname-x-4", "listener-empty-hostname", "tls-backend-2", "other.example.com"),
        Probe("gw-tlsroute-empty-hostname-x-4", "listener-empty-hostname", None, "non.matching.org"),
    ],
    "tlsroute-invalid-backendref-nonexistent": [
        Probe("gateway-tlsroute-invalid-backend-ref-nonexistent", "tls", None, "example.com")
    ],
    "tlsroute-invalid-backendref-unknown-kind": [
        Probe("gateway-tlsroute-invalid-backend-ref-unknown-kind", "tls", None, "example.com")
    ],
}  # fmt: skip


def _configured(cp: ControlPlaneProcess, proxy_id: str) -> bool:
    """Every type acknowledged, or NOT SENT: a gateway with only TCP/TLS listeners gets no routes (RDS)."""
    status = cp.statuses().get(proxy_id)
    return bool(status) and all(t["state"] in ("SYNCED", "NOT SENT") for t in status["types"].values())


def _own_gateways(suite: Suite, scenario: str):
    """Apply the scenario with its Gateways on free ports and run a proxy for each: (ports, agents)."""
    listeners = gateway_listeners(scenario)
    free = {(gw, port): free_port() for gw, _, port in listeners}  # listeners sharing a port still share it
    ports = {(gw, name): free[(gw, port)] for gw, name, port in listeners}
    gateways = sorted({gw for gw, _, _ in listeners})
    addresses = {gw: f"{suite.net}.{10 + i}" for i, gw in enumerate(gateways)}
    text = manifest(scenario, ports)
    suite.cp.apply(text)
    agents = [
        AgentProcess(
            suite.cp, suite.workdir, mode="gateway", name=f"gw{i}-istio", namespace=NS, ip=addresses[gw],
            labels={GATEWAY_LABEL: gw},
        )  # a short pod name: the agent's state directory holds a Unix socket (108 characters at most)
        for i, gw in enumerate(gateways)
    ]  # fmt: skip
    return text, ports, addresses, agents


@pytest.mark.parametrize("scenario", sorted(L4_SCENARIOS))
def test_tls_conformance_scenario(suite: Suite, scenario: str) -> None:
    probes = L4_SCENARIOS[scenario]
    text, ports, addresses, agents = _own_gateways(suite, scenario)

    def answered(p: Probe) -> str | None:
        return _connect(addresses[p.gateway], ports[(p.gateway, p.listener)], p.sni)

    try:
        for agent in agents:
            agent.start()
        for agent in agents:
            wait_until(lambda a=agent: _configured(suite.cp, a.proxy_id), CONVERGE, f"{agent.name} SYNCED", 0.1)
        wait_until(lambda: all(answered(p) == p.backend for p in probes), CONVERGE, f"{scenario} in force", 0.2)
        for probe in probes:
            assert answered(probe) == probe.backend, probe
    finally:
        for agent in agents:
            agent.stop()
        suite.cp.delete(text)


def test_grpcroute_listener_hostname_matching(suite: Suite) -> None:
    """Four listeners on one port, told apart by hostname; each GRPCRoute attaches to one or two."""
    scenario = "grpcroute-listener-hostname-matching"
    cases = [
        ("bar.com", V1),
        ("foo.bar.com", V2),
        ("baz.bar.com", "grpc-infra-backend-v3"),
        ("boo.bar.com", "grpc-infra-backend-v3"),
        ("multiple.prefixes.bar.com", "grpc-infra-backend-v3"),
        ("multiple.prefixes.foo.com", "grpc-infra-backend-v3"),
        ("foo.com", UNIMPLEMENTED),
        ("no.matching.host", UNIMPLEMENTED),
    ]
    text, ports, addresses, (agent,) = _own_gateways(suite, scenario)
    address, port = addresses[scenario], ports[(scenario, "listener-1")]

    def answer(authority: str):
        try:
            return grpc_call(address, port, ECHO + "/Echo", authority=authority)[0]["name"]
        except grpc.RpcError as failed:
            return failed.code()

    try:
        agent.start()
        wait_until(lambda: _configured(suite.cp, agent.proxy_id), CONVERGE, "the gateway SYNCED", 0.1)
        wait_until(lambda: all(answer(a) == b for a, b in cases), CONVERGE, f"{scenario} in force", 0.2)
        for authority, expected in cases:
            assert answer(authority) == expected, authority
    finally:
        agent.stop()
        suite.cp.delete(text)


def test_tcproute_weighted_routing(suite: Suite) -> None:
    text, ports, addresses, (agent,) = _own_gateways(suite, "tcproute-weighted-routing")
    address, port = addresses["tcp-weighted-gateway"], ports[("tcp-weighted-gateway", "tcp")]
    try:
        agent.start()
        wait_until(lambda: _configured(suite.cp, agent.proxy_id), CONVERGE, "the TCP gateway SYNCED", 0.1)
        wait_until(lambda: _connect(address, port, None) is not None, CONVERGE, "the TCP route in force", 0.2)
        with socket.create_connection((address, port), timeout=5) as conn:  # upstream's echo check
            reader = conn.makefile("rb")
            reader.readline()
            conn.sendall(b"ping\n")
            assert reader.readline() == b"ping\n"
        landed = collections.Counter(_connect(address, port, None) for _ in range(200))
        assert set(landed) == {"tcp-backend-v1", "tcp-backend-v2"}, landed  # tcp-backend-v3 has weight 0
        assert 118 <= landed["tcp-backend-v1"] <= 182, landed  # 140 expected; bounds ~5 standard deviations
    finally:
        agent.stop()
        suite.cp.delete(text)


# ---------------------------------------------------------------- status-only scenarios


def _status(scenario: str) -> dict:
    return lower(load_text(manifest(scenario), scenario).raise_for_errors()).status


def _route_condition(status: dict, kind: str, route: str, gateway: str, condition: str) -> tuple[str, str]:
    (parent,) = [p for p in status[(kind, NS, route)]["parents"] if p["parentRef"]["name"] == gateway]
    return next((c["status"], c["reason"]) for c in parent["conditions"] if c["type"] == condition)


def _attached(status: dict, gateway: str) -> int:
    return sum(lst["attachedRoutes"] for lst in status[("KubernetesGateway", NS, gateway)]["listeners"])


def test_tcproute_invalid_non_tcp_listener() -> None:
    status = _status("tcproute-invalid-non-tcp-listener")
    gateway = "tcp-mixed-protocol-gateway"
    assert _route_condition(status, "TCPRoute", "tcp-route", gateway, "Accepted") == ("False", "NotAllowedByListeners")
    assert _attached(status, gateway) == 0


def test_tcproute_invalid_backendref_nonexistent() -> None:
    status = _status("tcproute-invalid-backendref-nonexistent")
    route, gateway = "tcp-route-invalid-backend-ref-nonexistent", "tcp-gateway-invalid-backend"
    assert _route_condition(status, "TCPRoute", route, gateway, "ResolvedRefs") == ("False", "BackendNotFound")


def test_tlsroute_invalid_no_matching_listener_hostname() -> None:
    status = _status("tlsroute-invalid-no-matching-listener-hostname")
    for route, gateway in (
        ("tlsroute-hostname-mismatch-1", "gateway-tls-exact-hostname"),
        ("tlsroute-hostname-mismatch-2", "gateway-tls-wildcard-hostname"),
    ):
        accepted = _route_condition(status, "TLSRoute", route, gateway, "Accepted")
        assert accepted == ("False", "NoMatchingListenerHostname"), route
        assert _attached(status, gateway) == 0


def test_tlsroute_listener_passthrough_supported_kinds() -> None:
    status = _status("tlsroute-listener-passthrough-supported-kinds")
    (listener,) = status[("KubernetesGateway", NS, "gateway-tlsroute-passthrough-supported-kind")]["listeners"]
    assert listener["name"] == "tls-passthrough" and listener["attachedRoutes"] == 0
    assert listener["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "TLSRoute"}]
    resolved = next(c for c in listener["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "InvalidRouteKinds")


@pytest.mark.parametrize(
    "scenario, route, gateway, reason",
    [
        (
            "tlsroute-invalid-backendref-nonexistent",
            "invalid-backend-ref-nonexistent",
            "gateway-tlsroute-invalid-backend-ref-nonexistent",
            "BackendNotFound",
        ),
        (
            "tlsroute-invalid-backendref-unknown-kind",
            "invalid-backend-ref-unknown-kind",
            "gateway-tlsroute-invalid-backend-ref-unknown-kind",
            "InvalidKind",
        ),
    ],
)
def test_tlsroute_invalid_backend_is_accepted_with_resolved_refs_false(
    scenario: str, route: str, gateway: str, reason: str
) -> None:
    status = _status(scenario)
    assert _route_condition(status, "TLSRoute", route, gateway, "Accepted") == ("True", "Accepted")
    assert _route_condition(status, "TLSRoute", route, gateway, "ResolvedRefs") == ("False", reason)


@pytest.mark.parametrize(
    "scenario, route, reason",
    [
        ("httproute-invalid-backendref-unknown-kind", "invalid-backend-ref-unknown-kind", "InvalidKind"),
        ("httproute-invalid-nonexistent-backendref", "invalid-nonexistent-backend-ref", "BackendNotFound"),
        ("httproute-invalid-cross-namespace-backend-ref", "invalid-cross-namespace-backend-ref", "RefNotPermitted"),
    ],
)
def test_httproute_invalid_backend_status(scenario: str, route: str, reason: str) -> None:
    """The status half of these HTTPRoute scenarios (their 500s run in test_gatewayapi_conformance.py)."""
    text = base("127.0.0", 80) + "---\n" + manifest(scenario)
    status = lower(load_text(text, scenario).raise_for_errors()).status
    assert _route_condition(status, "HTTPRoute", route, "same-namespace", "Accepted") == ("True", "Accepted")
    assert _route_condition(status, "HTTPRoute", route, "same-namespace", "ResolvedRefs") == ("False", reason)
