"""`plait explain` and `plait demo bookinfo`, run as a user runs them."""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from plait.cli.main import app

BOOKINFO = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo"
runner = CliRunner()


def explain(*args: str, sample: str = "virtual-service-reviews-jason-v2-v3.yaml"):
    files = [
        "services.yaml",
        "networking/bookinfo-gateway.yaml",
        "networking/destination-rule-all.yaml",
        f"networking/{sample}",
    ]
    return runner.invoke(app, ["explain", *[a for f in files for a in ("-f", str(BOOKINFO / f))], *args])


def test_explain_names_the_listener_route_cluster_and_endpoint() -> None:
    result = explain("--from", "productpage-v1", "--url", "http://reviews:9080/reviews/0", "-H", "end-user: jason")
    assert result.exit_code == 0, result.output
    for expected in (
        "0.0.0.0_9080",
        "reviews.default.svc.cluster.local:9080",
        "VirtualService default/reviews",
        "http[0].match[0]",
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "10.244.0.14:9080",
        "default/reviews-v2",
        "version=v2",
        "retries",
    ):
        assert expected in result.output, expected


def test_explain_without_the_header_shows_the_skipped_rule_and_v3() -> None:
    result = explain("--from", "productpage-v1", "--url", "http://reviews:9080/reviews/0")
    assert result.exit_code == 0, result.output
    assert "outbound|9080|v3|reviews.default.svc.cluster.local" in result.output
    assert "skipped" in result.output and "end-user" in result.output


def test_explain_shows_weights_and_faults() -> None:
    split = explain(
        "--from", "productpage-v1", "--url", "http://reviews:9080/", sample="virtual-service-reviews-80-20.yaml"
    )
    assert "outbound|9080|v1|reviews.default.svc.cluster.local  80%" in split.output
    assert "outbound|9080|v2|reviews.default.svc.cluster.local  20%" in split.output
    delay = explain(
        "--from",
        "reviews-v2",
        "--url",
        "http://ratings:9080/ratings/0",
        "-H",
        "end-user: jason",
        sample="virtual-service-ratings-test-delay.yaml",
    )
    assert "delay 7s (100%)" in delay.output and "VirtualService default/ratings" in delay.output


def test_explain_a_gateway_request_that_matches_nothing() -> None:
    result = explain("--from", "istio-ingressgateway", "--url", "http://bookinfo.example.com/unknown")
    assert result.exit_code == 0, result.output
    assert "404 no route (NR)" in result.output and "path is not '/productpage'" in result.output


def test_explain_json() -> None:
    result = explain("--from", "productpage-v1", "--url", "http://reviews:9080/", "-o", "json", "--mode", "proxy")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["listener"] == "explicit_proxy" and data["virtual_service"] == "default/reviews"
    assert data["summary"] == "outbound|9080|v3|reviews.default.svc.cluster.local"
    assert data["clusters"][0]["endpoints"][0]["workload"] == "default/reviews-v3"


def test_unknown_workload_exits_1_and_lists_the_known_ones() -> None:
    result = explain("--from", "nobody", "--url", "http://reviews:9080/")
    assert result.exit_code == 1
    assert "no workload 'nobody'" in result.output and "default/productpage-v1" in result.output


def test_bad_url_and_bad_header_exit_1_with_a_reason() -> None:
    url = explain("--from", "productpage-v1", "--url", "http://reviews:port/")
    assert url.exit_code == 1 and "port" in url.output
    header = explain("--from", "productpage-v1", "--url", "http://reviews:9080/", "-H", "no-colon")
    assert header.exit_code == 1 and "name: value" in header.output


def test_demo_bookinfo_explains_every_task() -> None:
    started = time.monotonic()
    result = runner.invoke(app, ["demo", "bookinfo", "--explain"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    for expected in (
        "No VirtualService",
        "virtual-service-all-v1.yaml",
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-reviews-jason-v2-v3.yaml",
        "virtual-service-reviews-80-20.yaml",
        "virtual-service-ratings-test-delay.yaml",
        "virtual-service-ratings-test-abort.yaml",
        "reviews v1, v2, v3",
        "reviews v1 80%, v2 20%",
        "delay 7s (100%)",
        "abort 500 (100%)",
        "bookinfo http[0].match[0]",
        "404 no route (NR)",
    ):
        assert expected in result.output, expected
    last = result.output.strip().splitlines()[-1]
    assert "plait explain" in last and "--from productpage-v1" in last and "end-user: jason" in last
    assert elapsed < 10, f"the demo took {elapsed:.1f}s"


def test_demo_tables_say_where_jason_lands() -> None:
    output = runner.invoke(app, ["demo", "bookinfo", "--explain"]).output
    jason_v2_v3 = output.split("virtual-service-reviews-jason-v2-v3.yaml", 1)[1].split("5. ", 1)[0]
    rows = [line for line in jason_v2_v3.splitlines() if line.startswith("productpage → reviews")]
    assert "reviews v3" in rows[0] and "jason" in rows[1] and "reviews v2" in rows[1]


def test_the_installed_command_runs_the_demo_and_its_hint() -> None:
    plait = Path(sys.executable).parent / "plait"
    repo = BOOKINFO.parents[3]
    demo = subprocess.run(
        [str(plait), "demo", "bookinfo", "--explain"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=repo,
    )
    assert demo.returncode == 0, demo.stderr
    hint = demo.stdout.strip().splitlines()[-1].strip()
    assert hint.startswith("plait explain ")
    again = subprocess.run(
        [str(plait), *shlex.split(hint)[1:]], capture_output=True, text=True, timeout=120, check=False, cwd=repo
    )
    assert again.returncode == 0, again.stderr
    assert "outbound|9080|v2|reviews.default.svc.cluster.local" in again.stdout


def doc_examples() -> list[tuple[list[str], str]]:
    """(arguments, shown output) of each complete `$ plait explain` example in docs/explain.md."""
    doc = (BOOKINFO.parents[3] / "docs" / "explain.md").read_text()
    examples = []
    for block in doc.split("```\n$ plait explain ")[1:]:
        text = "plait explain " + block.split("```", 1)[0]
        if "…" in text:
            continue  # abridged
        command, _, shown = text.partition("\n")
        while command.endswith("\\"):
            more, _, shown = shown.partition("\n")
            command = command[:-1] + more
        args = shlex.split(command.replace("src/plait/demo/bookinfo", str(BOOKINFO)))[1:]
        examples.append((args, shown))
    return examples


def test_the_docs_show_real_output() -> None:
    examples = doc_examples()
    assert len(examples) == 2
    for args, shown in examples:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert [line.rstrip() for line in result.output.strip().splitlines()] == shown.strip().splitlines()


# ----------------------------------------------------------------------------- authorization

AUTHZ_POLICIES = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-productpage, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
    to: [{operation: {methods: ["GET"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-delete, namespace: default}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: ["DELETE"]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ratings-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  jwtRules: [{issuer: "https://issuer.example.com", jwksUri: "https://issuer.example.com/jwks.json"}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-needs-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  rules: [{from: [{source: {requestPrincipals: ["https://issuer.example.com/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-from-partners, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules: [{from: [{source: {remoteIpBlocks: ["203.0.113.0/24"]}}]}]
"""


def secured_mesh(directory: Path) -> list[str]:
    """Bookinfo whose workloads have sidecars with certificates (tlsMode label), plus AUTHZ_POLICIES."""
    services = (BOOKINFO / "services.yaml").read_text()
    services = re.sub(
        r"labels: \{app: (\w+), version: (v\d)\}",
        r"labels: {app: \1, version: \2, security.istio.io/tlsMode: istio}",
        services,
    )
    (directory / "services.yaml").write_text(services)
    (directory / "security.yaml").write_text(AUTHZ_POLICIES)
    files = [
        directory,
        BOOKINFO / "networking" / "bookinfo-gateway.yaml",
        BOOKINFO / "networking" / "destination-rule-all.yaml",
    ]
    return [a for f in files for a in ("-f", str(f))]


def unsigned_token(**claims) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.c2lnbmF0dXJl"


def test_explain_names_the_allow_policy_and_the_field_that_matched(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["explain", *secured_mesh(tmp_path), "--from", "productpage-v1", "--url", "http://reviews:9080/reviews/0"]
    )
    assert result.exit_code == 0, result.output
    for expected in (
        "authorization at default/reviews-v1, default/reviews-v2, default/reviews-v3",
        "filter chain inbound|9080|mtls",
        "source        spiffe://cluster.local/ns/default/sa/bookinfo-productpage (mTLS), 10.244.0.16",
        "no DENY policy matched (DENY policies: default/deny-delete)",
        "→ ALLOWED by default/allow-productpage rules[0] (from[0].source.principals matched "
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage; to[0].operation.methods matched GET)",
    ):
        assert expected in result.output, expected
    assert "→ lands on" in result.output


def test_explain_a_request_no_allow_policy_lets_through(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["explain", *secured_mesh(tmp_path), "--from", "ratings-v1", "--url", "http://reviews:9080/reviews/0"]
    )
    assert result.exit_code == 0, result.output
    for expected in (
        "→ lands on",  # the client's sidecar forwards it; the destination's refuses it
        "default/allow-productpage rules[0]: from[0].source.principals did not match "
        "spiffe://cluster.local/ns/default/sa/bookinfo-ratings",
        "→ DENIED: no ALLOW policy matched (policies in force: default/allow-productpage)",
        "→ 403: default/reviews-v1 (and 2 more): DENIED: no ALLOW policy matched",
    ):
        assert expected in result.output, expected


def test_explain_a_deny_policy_and_an_assumed_identity(tmp_path: Path) -> None:
    args = [*secured_mesh(tmp_path), "--from", "ratings-v1", "--url", "http://reviews:9080/reviews/0"]
    delete = runner.invoke(
        app,
        [
            "explain",
            *args,
            "-X",
            "DELETE",
            "--source-principal",
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        ],
    )
    assert (
        "DENIED by DENY policy default/deny-delete rules[0] (to[0].operation.methods matched DELETE)" in delete.output
    )
    assumed = runner.invoke(
        app, ["explain", *args, "--source-principal", "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"]
    )
    assert "→ ALLOWED by default/allow-productpage rules[0]" in assumed.output


def test_explain_jwt_outcomes(tmp_path: Path) -> None:
    args = ["explain", *secured_mesh(tmp_path), "--from", "reviews-v2", "--url", "http://ratings:9080/ratings/0"]
    missing = runner.invoke(app, args)
    assert "no token: allowed by RequestAuthentication default/ratings-jwt (allow missing" in missing.output
    assert "from[0].source.requestPrincipals did not match no verified token" in missing.output
    assert "→ 403: default/ratings-v1: DENIED: no ALLOW policy matched" in missing.output
    token = unsigned_token(iss="https://issuer.example.com", sub="alice", exp=int(time.time()) + 600)
    valid = runner.invoke(app, [*args, "-H", f"Authorization: Bearer {token}"])
    assert (
        "token from issuer https://issuer.example.com (https://issuer.example.com/alice) in the header "
        "authorization, accepted if its signature is good; its signature is not checked here: Envoy verifies "
        "it against the keys at https://issuer.example.com/jwks.json"
    ) in valid.output
    assert (
        "→ ALLOWED by default/ratings-needs-jwt rules[0] (from[0].source.requestPrincipals matched "
        "https://issuer.example.com/alice)"
    ) in valid.output
    expired = unsigned_token(iss="https://issuer.example.com", sub="alice", exp=int(time.time()) - 3600)
    rejected = runner.invoke(app, [*args, "-H", f"Authorization: Bearer {expired}"])
    assert "→ UNAUTHENTICATED: 401 Jwt is expired" in rejected.output
    assert "→ 401: default/ratings-v1: UNAUTHENTICATED: 401 Jwt is expired" in rejected.output


def test_explain_a_gateway_policy_on_the_outside_client(tmp_path: Path) -> None:
    args = [
        "explain",
        *secured_mesh(tmp_path),
        "--from",
        "istio-ingressgateway",
        "--url",
        "http://bookinfo.example.com/productpage",
    ]
    stranger = runner.invoke(app, [*args, "--source-ip", "198.51.100.4"])
    assert "authorization at istio-system/istio-ingressgateway (gateway)" in stranger.output
    assert "from[0].source.remoteIpBlocks did not match 198.51.100.4" in stranger.output
    assert "→ 403: istio-system/istio-ingressgateway (gateway): DENIED: no ALLOW policy matched" in stranger.output
    partner = runner.invoke(app, [*args, "--source-ip", "203.0.113.8", "-o", "json"])
    data = json.loads(partner.stdout)
    assert data["status"] is None and data["summary"] == "outbound|9080||productpage.default.svc.cluster.local"
    assert data["authorization"][0]["summary"].startswith(
        "ALLOWED by istio-system/ingress-from-partners rules[0] (from[0].source.remoteIpBlocks matched 203.0.113.8)"
    )
