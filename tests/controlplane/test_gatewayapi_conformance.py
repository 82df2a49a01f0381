"""Gateway API conformance scenarios against a real gateway Envoy.

Each scenario is an upstream conformance test: its HTTPRoute manifest copied unchanged
(testdata/gateway-api-conformance, see its NOTICE) and its requests and expected answers ported from
the test's Go file. The suite's base is re-created: Gateway `same-namespace` (class istio, one HTTP
listener, routes from its own namespace) and the Services infra-backend-v1/v2/v3 in
gateway-conformance-infra, each a loopback backend that answers with its name. The control plane
and a `plait agent` gateway run as processes; one scenario's route is applied at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.http import http_request
from plait.testing.live import AgentProcess, ControlPlaneProcess, free_port, wait_until

DATA = Path(__file__).parent / "testdata" / "gateway-api-conformance"
NS = "gateway-conformance-infra"
CONVERGE = 10.0


def base(net: str, port: int) -> str:
    docs = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "same-namespace", "namespace": NS},
            "spec": {
                "gatewayClassName": "istio",
                "listeners": [
                    {
                        "name": "http",
                        "port": port,
                        "protocol": "HTTP",
                        "allowedRoutes": {"namespaces": {"from": "Same"}},
                    }
                ],
            },
        }
    ]
    for i, version in enumerate(("v1", "v2", "v3"), start=31):
        name = f"infra-backend-{version}"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8080}]},
            }
        )
        docs.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "WorkloadEntry",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"address": f"{net}.{i}", "labels": {"app": name}},
            }
        )
    return yaml.safe_dump_all(docs)


@dataclass(frozen=True)
class Case:
    """A request and what must answer it: a backend (by number), or Envoy's own status; optionally the
    path and headers the backend must see, and headers it must not."""

    path: str
    backend: int | None = None
    host: str = "example.com"
    status: int = 200
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    upstream_path: str | None = None
    upstream_headers: dict[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    redirect: dict[str, str] = field(default_factory=dict)  # expected Location parts: scheme, host, path


def v(n: int, path: str, **kw) -> Case:
    return Case(path, backend=n, **kw)


def status(code: int, path: str, **kw) -> Case:
    return Case(path, status=code, **kw)


def redirect(code: int, request_path: str, **location: str) -> Case:
    return Case(request_path, status=code, redirect=location)


MODIFIED = {
    "x-header-add": "header-val-1",
    "x-header-add-append": "append-val-1,header-val-2",
    "x-header-set": "set-overwrites-values",
}
SENT = {"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1", "X-Header-Set": "set-val"}

SCENARIOS: dict[str, list[Case]] = {
    "httproute-exact-path-matching": [
        v(1, "/one"),
        v(2, "/two"),
        status(404, "/"),
        status(404, "/one/example"),
        status(404, "/two/"),
        status(404, "/Two"),
    ],
    "httproute-header-matching": [
        v(1, "/", headers={"Version": "one"}),
        v(2, "/", headers={"Version": "two"}),
        v(1, "/", headers={"Version": "two", "Color": "orange"}),
        v(2, "/", headers={"Version": "two", "Color": "blue"}),
        status(404, "/", headers={"Color": "orange"}),
        status(404, "/", headers={"Some-Other-Header": "one"}),
        v(1, "/", headers={"Color": "blue"}),
        v(1, "/", headers={"Color": "green"}),
        v(2, "/", headers={"Color": "red"}),
        v(2, "/", headers={"Color": "yellow"}),
        status(404, "/", headers={"Color": "purple"}),
    ],
    "httproute-invalid-backendref-unknown-kind": [status(500, "/v2")],
    "httproute-invalid-cross-namespace-backend-ref": [status(500, "/")],
    "httproute-invalid-nonexistent-backendref": [status(500, "/")],
    "httproute-matching": [
        v(1, "/"),
        v(1, "/example"),
        v(1, "/", headers={"Version": "one"}),
        v(2, "/v2"),
        v(2, "/v2/example"),
        v(2, "/", headers={"Version": "two"}),
        v(2, "/v2/"),
        v(1, "/v2example"),
        v(1, "/foo/v2/example"),
    ],
    "httproute-matching-across-routes": [
        v(1, "/"),
        v(1, "/example"),
        v(1, "/example", host="example.net"),
        v(1, "/example", headers={"Version": "one"}),
        v(2, "/v2"),
        v(1, "/v2", host="example.net"),
        v(2, "/v2/example"),
        v(2, "/", headers={"Version": "two"}),
    ],
    "httproute-method-matching": [
        v(1, "/", method="POST"),
        v(2, "/", method="GET"),
        status(404, "/", method="HEAD"),
        v(1, "/path1", method="GET"),
        v(2, "/", method="PUT", headers={"version": "one"}),
        v(3, "/path2", method="POST", headers={"version": "two"}),
        v(1, "/path3", method="PATCH"),
        v(1, "/path4", method="DELETE", headers={"version": "three"}),
        status(404, "/", method="PUT"),
        status(404, "/path4", method="DELETE"),
        v(1, "/path5", method="PATCH"),
        v(2, "/", method="PATCH", headers={"version": "four"}),
    ],
    "httproute-query-param-matching": [
        v(1, "/?animal=whale"),
        v(2, "/?animal=dolphin"),
        v(3, "/?animal=dolphin&color=blue"),
        v(3, "/?ANIMAL=Whale"),
        v(1, "/?animal=whale&otherparam=irrelevant"),
        v(2, "/?animal=dolphin&color=yellow"),
        status(404, "/?color=blue"),
        status(404, "/?animal=dog"),
        status(404, "/?animal=whaledolphin"),
        status(404, "/"),
        v(1, "/path1?animal=whale"),
        v(2, "/?animal=whale", headers={"version": "one"}),
        v(3, "/path2?animal=whale", headers={"version": "two"}),
        v(1, "/path3?animal=shark"),
        v(1, "/path4?animal=kraken", headers={"version": "three"}),
        status(404, "/?animal=shark"),
        status(404, "/path4?animal=kraken"),
        v(1, "/path5?animal=hydra"),
        v(3, "/?animal=hydra", headers={"version": "four"}),
    ],
    "httproute-path-match-order": [
        v(3, "/match/exact/one"),
        v(2, "/match/exact"),
        v(1, "/match"),
        v(2, "/match/prefix/one/any"),
        v(1, "/match/prefix/any"),
        v(3, "/match/any"),
    ],
    "httproute-redirect-path": [
        redirect(302, "/original-prefix/lemon", path="/replacement-prefix/lemon"),
        redirect(302, "/full/path/original", path="/full-path-replacement"),
        redirect(302, "/path-and-host", host="example.org", path="/replacement-prefix"),
        redirect(301, "/path-and-status", path="/replacement-prefix"),
        redirect(302, "/full-path-and-host", host="example.org", path="/replacement-full"),
        redirect(301, "/full-path-and-status", path="/replacement-full"),
    ],
    "httproute-redirect-host-and-status": [
        redirect(302, "/hostname-redirect", host="example.org"),
        redirect(301, "/host-and-status", host="example.org"),
    ],
    "httproute-redirect-scheme": [
        redirect(302, "/scheme", scheme="https"),
        redirect(302, "/scheme-and-host", host="example.org", scheme="https"),
        redirect(301, "/scheme-and-status", scheme="https"),
        redirect(302, "/scheme-and-host-and-status", scheme="https", host="example.org"),
    ],
    "httproute-rewrite-path": [
        v(1, "/prefix/one/two", upstream_path="/one/two"),
        v(1, "/strip-prefix/three", upstream_path="/three"),
        v(1, "/strip-prefix", upstream_path="/"),
        v(1, "/full/one/two", upstream_path="/one"),
        v(
            1,
            "/full/rewrite-path-and-modify-headers/test",
            headers=SENT,
            upstream_path="/test",
            upstream_headers=MODIFIED,
            absent=("x-header-remove",),
        ),
        v(
            1,
            "/prefix/rewrite-path-and-modify-headers/one",
            headers=SENT,
            upstream_path="/prefix/one",
            upstream_headers=MODIFIED,
            absent=("x-header-remove",),
        ),
    ],
}


class Suite:
    def __init__(self, net: str, port: int, cp: ControlPlaneProcess, backends: dict[int, HttpBackend]):
        self.net, self.port, self.cp, self.backends = net, port, cp, backends

    def send(self, case: Case):
        return http_request(f"{self.net}.2", self.port, case.path, {"host": case.host, **case.headers}, case.method)

    def answers(self, case: Case) -> bool:
        try:
            reply = self.send(case)
        except OSError:
            return False
        return reply.status == case.status and (
            case.backend is None or reply.backend == f"infra-backend-v{case.backend}"
        )


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("conformance")
    port = free_port()
    with loopback_subnet() as net, ControlPlaneProcess(workdir / "mesh", workdir) as cp:
        cp.apply(base(net, port))
        backends = {n: HttpBackend(f"infra-backend-v{n}", f"{net}.{30 + n}", 8080) for n in (1, 2, 3)}
        for b in backends.values():
            b.__enter__()
        labels = {"gateway.networking.k8s.io/gateway-name": "same-namespace"}
        agent = AgentProcess(
            cp, workdir, mode="gateway", name="same-namespace-istio", namespace=NS, ip=f"{net}.2", labels=labels
        )
        try:
            agent.start()
            wait_until(lambda: cp.synced(agent.proxy_id), CONVERGE, "the gateway SYNCED", interval=0.1)
            yield Suite(net, port, cp, backends)
        finally:
            agent.stop()
            for b in backends.values():
                b.__exit__(None, None, None)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_conformance_scenario(suite: Suite, scenario: str) -> None:
    check(suite, scenario, (DATA / f"{scenario}.yaml").read_text(), SCENARIOS[scenario])


def example_route(name: str, rules: str) -> str:
    head = f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {NS}}}\n"
    return head + "spec:\n  parentRefs: [{name: same-namespace}]\n  hostnames: [example.com]\n  rules:\n" + rules


def rule(matches: str, backend: int) -> str:
    return f"  - matches: {matches}\n    backendRefs: [{{name: infra-backend-v{backend}, port: 8080}}]\n"


# Not upstream's: routes whose matches interleave. Gateway API orders matches across all the routes of a
# hostname (an exact path first, then longer prefixes, more headers…; the older route on a tie, here the
# first by name); a per-route order would let `shop-broad`'s /shop prefix take /shop/cart.
ACROSS_ROUTES = "---\n".join(
    [
        example_route(
            "shop-broad",
            rule("[{path: {type: PathPrefix, value: /shop}}, {path: {type: PathPrefix, value: /api}}]", 1)
            + rule("[{path: {type: PathPrefix, value: /same}}]", 1),
        ),
        example_route(
            "shop-narrow",
            rule("[{path: {type: Exact, value: /shop/cart}}, {path: {type: PathPrefix, value: /shop/items}}]", 2)
            + rule("[{path: {type: PathPrefix, value: /api}, headers: [{name: x-beta, value: 'yes'}]}]", 3)
            + rule("[{path: {type: PathPrefix, value: /same}}]", 2),
        ),
    ]
)


def test_matches_are_ordered_across_the_routes_of_a_hostname(suite: Suite) -> None:
    cases = [
        v(2, "/shop/cart"),
        v(1, "/shop/cart/old"),  # not the exact path: the broad route's prefix
        v(2, "/shop/items/7"),
        v(1, "/shop/other"),
        v(3, "/api/orders", headers={"x-beta": "yes"}),
        v(1, "/api/orders"),
        v(1, "/same"),  # equally specific: the route first by name (Gateway API: the older one)
    ]
    check(suite, "matches across routes", ACROSS_ROUTES, cases)


def check(suite: Suite, scenario: str, manifest: str, cases: list[Case]) -> None:
    """Apply the manifest, wait until every case is answered as expected, check each closely, delete it."""
    suite.cp.apply(manifest)
    try:
        wait_until(lambda: all(suite.answers(c) for c in cases), CONVERGE, f"{scenario} in force", interval=0.2)
        for case in cases:
            reply = suite.send(case)
            assert reply.status == case.status, case
            if case.redirect:
                location = urlsplit(reply.headers["location"])
                got = {"scheme": location.scheme, "host": location.hostname, "path": location.path}
                assert {k: got[k] for k in case.redirect} == case.redirect, (case, reply.headers["location"])
            if case.backend is None:
                continue
            backend = suite.backends[case.backend]
            assert reply.backend == backend.name, case
            seen = backend.requests[-1]
            if case.upstream_path is not None:
                assert seen.path == case.upstream_path, (case, seen.path)
            for name, value in case.upstream_headers.items():
                assert seen.headers.get(name) == value, (case, seen.headers)
            for name in case.absent:
                assert name not in seen.headers, (case, seen.headers)
    finally:
        suite.cp.delete(manifest)
