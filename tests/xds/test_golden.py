"""Golden tests: tests/xds/testdata/NN-name.input.yaml → NN-name.golden.yaml.

The input's first line names the proxy: ``# proxy: WORKLOAD [capture|proxy] [identity]``
(``identity``: its agent serves it mesh certificates, so it does mTLS).
Regenerate with ``REFRESH_GOLDEN=1 pytest tests/xds/test_golden.py``; a failure
prints a unified diff. Every golden is also checked by the real Envoy
(``envoy --mode validate`` on a static bootstrap holding the resources).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from plait.api import load_text
from plait.lower import with_gateway_api
from plait.model import MeshSnapshot, Proxy
from plait.xds.generator import generate
from plait.xds.publish import Publisher
from plait.xds.resources import ResourceSet
from plait.xds.static import envoy_validate, static_bootstrap

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(p.name.removesuffix(".input.yaml") for p in TESTDATA.glob("*.input.yaml"))
_PROXY_LINE = re.compile(r"^# proxy: (\S+)(?: (capture|proxy))?( identity)?$", re.M)


def translate_case(case: str):
    text = (TESTDATA / f"{case}.input.yaml").read_text()
    found = _PROXY_LINE.search(text)
    assert found, f"{case}.input.yaml must start with '# proxy: WORKLOAD [capture|proxy]'"
    snapshot = MeshSnapshot(with_gateway_api(load_text(text, f"{case}.input.yaml").raise_for_errors()))
    we = snapshot.workload(found.group(1))
    assert we is not None, f"{case}: no WorkloadEntry {found.group(1)}"
    proxy = Proxy.from_workload_entry(we, mode=found.group(2) or "capture")
    if found.group(3):
        proxy = dataclasses.replace(proxy, identity=proxy.spiffe_id)
    return generate(snapshot, proxy)


def canonical(resources) -> str:
    return yaml.safe_dump(resources.to_dict(), sort_keys=False, width=120)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    actual = canonical(translate_case(case))
    golden = TESTDATA / f"{case}.golden.yaml"
    if os.environ.get("REFRESH_GOLDEN"):
        golden.write_text(actual)
    assert golden.exists(), f"{case}: golden missing; run with REFRESH_GOLDEN=1 and review it"
    expected = golden.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), f"{case}.golden.yaml", "generated")
        )
        pytest.fail(f"translation of {case} changed (REFRESH_GOLDEN=1 to accept):\n{diff}")


@pytest.mark.parametrize("case", CASES)
def test_golden_publishes_consistently_for_every_proxy(case: str) -> None:
    """The control plane can serialise every resource (each @type's protobuf module is loaded), and
    nothing refers to a cluster, route configuration, endpoint set or secret that is not generated:
    for the golden's proxy and every other workload of the input, in both modes."""
    publisher = Publisher()
    named = publisher.publish(translate_case(case))
    assert (named.errors, named.inconsistencies) == ((), ())
    loaded = load_text((TESTDATA / f"{case}.input.yaml").read_text())
    assert loaded.problems == [], f"{case}: {loaded.problems}"  # no warnings either
    snapshot = MeshSnapshot(with_gateway_api(loaded.raise_for_errors()))
    for we in snapshot.workload_entries:
        for mode in ("capture", "proxy"):
            proxy = Proxy.from_workload_entry(we, mode=mode)
            published = publisher.publish(generate(snapshot, proxy))
            assert (published.errors, published.inconsistencies) == ((), ()), f"{case}: {proxy.id} ({mode})"


def test_credential_secrets_go_only_to_the_proxy_that_names_them() -> None:
    snapshot = MeshSnapshot(load_text((TESTDATA / "07-gateway-tls.input.yaml").read_text()).raise_for_errors())
    gateway = generate(snapshot, Proxy.from_workload_entry(snapshot.workload("istio-system/istio-ingressgateway")))
    assert sorted(gateway.secrets) == ["admin-cert", "admin-cert-cacert"]
    assert set(gateway.secrets["admin-cert"]["tls_certificate"]) == {"certificate_chain", "private_key"}
    assert "trusted_ca" in gateway.secrets["admin-cert-cacert"]["validation_context"]
    shown = yaml.safe_dump(gateway.to_dict(["sds"]))
    assert (
        "[redacted]" in shown
        and gateway.secrets["admin-cert"]["tls_certificate"]["private_key"]["inline_bytes"] not in shown
    )
    sidecar = generate(snapshot, Proxy.from_workload_entry(snapshot.workload("web/store-1")))
    assert sidecar.secrets == {}


@pytest.mark.parametrize("case", CASES)
def test_golden_is_valid_envoy_config(case: str) -> None:
    resources = yaml.safe_load((TESTDATA / f"{case}.golden.yaml").read_text())
    rs = ResourceSet()
    rs.add_clusters(resources["cds"])
    rs.add_endpoints(resources["eds"])
    rs.add_listeners(resources["lds"])
    rs.add_routes(resources["rds"])
    verdict = envoy_validate(with_test_certificates(static_bootstrap(rs)))
    assert verdict.ok, verdict.output


def with_test_certificates(bootstrap: dict) -> dict:
    """Envoy checks that certificate files exist: point the inputs' /etc/... paths at test files."""

    def swap(match: re.Match) -> str:
        path = match.group(1)
        kind = "key.pem" if path.endswith("key.pem") else "crl.pem" if path.endswith(".crl") else "cert.pem"
        return f'"filename": "{TESTDATA / "certs" / kind}"'

    return json.loads(re.sub(r'"filename": "(/etc/[^"]+)"', swap, json.dumps(bootstrap)))


def test_cases_exist() -> None:
    assert len(CASES) >= 5, "golden cases went missing"


def test_a_destination_rule_credential_is_read_from_the_proxys_namespace() -> None:
    text = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bank, namespace: shop}
spec:
  hosts: [bank.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bank, namespace: shop}
spec:
  host: bank.example.com
  exportTo: ["*"]
  trafficPolicy: {tls: {mode: SIMPLE, credentialName: bank-ca}}
---
apiVersion: v1
kind: Secret
metadata: {name: bank-ca, namespace: shop}
stringData: {cacert: CA}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: cart, namespace: shop}
spec: {address: 10.0.0.1, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: elsewhere}
spec: {address: 10.0.0.2, labels: {istio: ingressgateway}}
"""
    # Gateways: Istio gives a credentialName of a rule without workloadSelector to gateways, not sidecars.
    snapshot = MeshSnapshot(load_text(text).raise_for_errors())
    cart = generate(snapshot, Proxy.from_workload_entry(snapshot.workload("shop/cart")))
    assert list(cart.secrets) == ["bank-ca-cacert"]  # SIMPLE origination: the CA only
    assert Publisher().publish(cart).inconsistencies == ()
    other = generate(snapshot, Proxy.from_workload_entry(snapshot.workload("elsewhere/other")))
    assert other.secrets == {}
    assert [p.split(",")[0] for p in Publisher().publish(other).inconsistencies] == [
        "cds outbound|443||bank.example.com refers to secret bank-ca-cacert"
    ]
