"""Validation: Istio users' YAML is accepted as it is, and mistakes are named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from plait.api import ConfigError, load_paths, load_text
from plait.api.common import parse_duration

SAMPLES = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo"
ISTIO_SAMPLES = sorted((SAMPLES / "networking").glob("*.yaml"))

VS = """\
apiVersion: {version}
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews}}
"""


def only_error(text: str):
    result = load_text(text, "test.yaml")
    assert len(result.errors) == 1, [str(p) for p in result.problems]
    assert result.resources == [] or result.errors
    return result.errors[0]


@pytest.mark.parametrize(
    "version", ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"]
)
def test_all_istio_api_versions_are_accepted(version: str) -> None:
    result = load_text(VS.format(version=version))
    assert not result.errors
    (vs,) = result.resources
    assert vs.namespace == "default"
    assert vs.spec.http[0].route[0].destination.host == "reviews"


@pytest.mark.parametrize("path", ISTIO_SAMPLES, ids=lambda p: p.name)
def test_istio_bookinfo_samples_validate_unchanged(path: Path) -> None:
    result = load_paths([SAMPLES / "services.yaml", path])
    assert not result.errors, [str(p) for p in result.errors]
    assert result.resources


def test_shipped_samples_match_istio_originals() -> None:
    shared = Path(__file__).parents[3] / "shared" / "istio-samples" / "bookinfo" / "networking"
    if not shared.exists():
        pytest.fail(f"{shared} is missing: the Istio samples are part of the test environment")
    for path in ISTIO_SAMPLES:
        assert path.read_text() == (shared / path.name).read_text(), f"{path.name} differs from Istio's"


def test_multi_document_files_and_lists() -> None:
    text = (
        VS.format(version="networking.istio.io/v1")
        + "---\n---\n"
        + """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: reviews, namespace: shop}
  spec: {ports: [{name: http, port: 9080}]}
"""
    )
    result = load_text(text)
    assert [r.kind for r in result.resources] == ["VirtualService", "Service"]
    assert result.resources[1].namespace == "shop"


def test_error_names_file_document_object_field_and_expectation() -> None:
    text = (
        "---\n"
        + VS.format(version="networking.istio.io/v1")
        + "---\n"
        + """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: prod}
spec:
  host: ratings
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 10}}
"""
    )
    problem = only_error(text)
    assert problem.file == "test.yaml"
    assert problem.document == 1  # 0-based index of the document in its file
    assert (problem.kind, problem.namespace, problem.name) == ("DestinationRule", "prod", "ratings")
    assert problem.path == "spec.trafficPolicy.connectionPool.tcp.connectTimeout"
    assert "duration" in problem.message
    text_form = str(problem)
    for part in ("test.yaml", "document 1", "DestinationRule prod/ratings", "connectTimeout"):
        assert part in text_form


@pytest.mark.parametrize(
    "snippet, path, words",
    [
        (
            "  http:\n  - route: [{destination: {host: reviews}}]\n    timout: 5s\n",
            "spec.http[0].timout",
            "unknown field",
        ),
        (
            "  http:\n  - route: [{destination: {host: reviews}}]\n    timeout: soon\n",
            "spec.http[0].timeout",
            "not a duration",
        ),
        (
            "  http:\n  - route: [{destination: {host: reviews}}]\n    retries: {attempts: many}\n",
            "spec.http[0].retries.attempts",
            "integer",
        ),
        (
            "  http:\n  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 0}\n"
            "    - {destination: {host: reviews, subset: v2}}\n",
            "spec.http[0].route",
            "add up to 0",
        ),
        (
            "  http:\n  - match: [{uri: {regex: '(?<=x)y'}}]\n    route: [{destination: {host: reviews}}]\n",
            "spec.http[0].match[0].uri.regex",
            "RE2",
        ),
        (
            "  http:\n  - match: [{headers: {'x user': {exact: a}}}]\n    route: [{destination: {host: reviews}}]\n",
            "spec.http[0].match[0].headers",
            "not a valid HTTP header name",
        ),
        (
            "  http:\n  - match: [{uri: {exact: /a, prefix: /b}}]\n    route: [{destination: {host: reviews}}]\n",
            "spec.http[0].match[0].uri",
            "only one of",
        ),
        (
            "  http:\n  - fault: {abort: {percentage: {value: 50}}}\n    route: [{destination: {host: reviews}}]\n",
            "spec.http[0].fault.abort",
            "httpStatus",
        ),
        (
            "  http:\n  - fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}\n"
            "    route: [{destination: {host: reviews}}]\n",
            "spec.http[0].fault.delay.percentage.value",
            "100",
        ),
        (
            "  http:\n  - redirect: {uri: /x}\n    route: [{destination: {host: reviews}}]\n",
            "spec.http[0]",
            "only one of",
        ),
        ("  http:\n  - name: nothing\n", "spec.http[0]", "needs one of"),
    ],
)
def test_virtual_service_mistakes(snippet: str, path: str, words: str) -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n"
        "  hosts: [reviews]\n" + snippet
    )
    problem = only_error(text)
    assert problem.path == path, str(problem)
    assert words in problem.message, str(problem)


@pytest.mark.parametrize(
    "spec, path, words",
    [
        (
            "host: r\ntrafficPolicy: {loadBalancer: {simple: FASTEST}}",
            "spec.trafficPolicy.loadBalancer.simple",
            "ROUND_ROBIN",
        ),
        (
            "host: r\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: a, useSourceIp: true}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "exactly one",
        ),
        ("host: r\nsubsets: [{name: v1}, {name: v1}]", "spec", "repeated: v1"),
        ("host: r\ntrafficPolicy: {tls: {mode: MUTUAL}}", "spec.trafficPolicy.tls", "clientCertificate"),
        (
            "host: r\ntrafficPolicy: {outlierDetection: {baseEjectionTime: 1h30x}}",
            "spec.trafficPolicy.outlierDetection.baseEjectionTime",
            "not a duration",
        ),
        ("host: 'bad host!'", "spec.host", "not a valid host"),
    ],
)
def test_destination_rule_mistakes(spec: str, path: str, words: str) -> None:
    body = "\n".join("  " + line for line in spec.splitlines())
    problem = only_error(
        f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r}}\nspec:\n{body}\n"
    )
    assert problem.path == path, str(problem)
    assert words in problem.message, str(problem)


def test_gateway_service_entry_and_sidecar_rules() -> None:
    gw = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
"""
    assert "tls.mode" in only_error(gw).message
    se = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"""
    assert "wildcard" in only_error(se).message
    sidecar = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress: [{hosts: [reviews]}]
"""
    problem = only_error(sidecar)
    assert problem.path == "spec.egress[0].hosts" and "namespace/host" in problem.message


def test_unknown_kind_and_api_version_and_bad_yaml() -> None:
    assert (
        "unsupported kind 'VirtualServic'"
        in only_error("apiVersion: networking.istio.io/v1\nkind: VirtualServic\nmetadata: {name: a}\n").message
    )
    assert "apiVersion" in only_error(VS.format(version="networking.istio.io/v2")).path
    problem = only_error("kind: [unclosed\n")
    assert "not valid YAML at line 2" in problem.message


def test_istio_kinds_without_a_model_are_not_supported_yet_and_kubernetes_kinds_ignored() -> None:
    result = load_text(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: w}\n"
        "spec: {url: oci://x}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
    )
    assert result.resources == []
    (error,) = result.errors
    assert error.message == "kind WasmPlugin (extensions.istio.io/v1alpha1) is not supported by plait yet"
    assert (error.kind, error.path) == ("WasmPlugin", "kind")
    assert "not acted on" in result.warnings[0].message and result.warnings[0].kind == "Deployment"


def test_nothing_is_used_when_anything_is_wrong() -> None:
    text = (
        VS.format(version="networking.istio.io/v1")
        + "---\n"
        + VS.format(version="networking.istio.io/v1")
        .replace("name: reviews", "name: broken")
        .replace("host: reviews}", "host: reviews, port: {number: 0}}")
    )
    result = load_text(text)
    assert len(result.errors) == 1
    with pytest.raises(ConfigError) as raised:
        result.raise_for_errors()
    assert "spec.http[0].route[0].destination.port.number" in str(raised.value)


def test_duplicates_are_errors_and_dangling_references_warnings() -> None:
    vs = VS.format(version="networking.istio.io/v1").replace("{host: reviews}", "{host: reviews, subset: v9}")
    result = load_text(vs + "---\n" + vs)
    assert any("defined twice" in p.message for p in result.errors)
    warnings = [p.message for p in result.warnings]
    assert any("subset 'v9'" in w for w in warnings)
    assert any("no Service or ServiceEntry defines host 'reviews.default.svc.cluster.local'" in w for w in warnings)


@pytest.mark.parametrize(
    "text, seconds", [("10s", 10), ("250ms", 0.25), ("1h30m", 5400), ("1.5s", 1.5), ("0s", 0), ("100us", 0.0001)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
