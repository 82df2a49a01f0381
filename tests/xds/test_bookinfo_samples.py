"""Every Istio Bookinfo sample translates, for sidecars in both modes and for the ingress gateway,
into configuration the real Envoy accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from plait.api import load_paths
from plait.model import MeshSnapshot, Proxy
from plait.xds.generator import generate
from plait.xds.static import envoy_validate, static_bootstrap

BOOKINFO = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo"
SAMPLES = sorted(p for p in (BOOKINFO / "networking").glob("*.yaml") if not p.name.startswith("destination-rule"))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_sample_translates_to_valid_envoy_config(sample: Path) -> None:
    paths = [BOOKINFO / "services.yaml", BOOKINFO / "networking" / "destination-rule-all.yaml", sample]
    if sample.name != "bookinfo-gateway.yaml":
        paths.append(BOOKINFO / "networking" / "bookinfo-gateway.yaml")
    snapshot = MeshSnapshot(load_paths(paths).raise_for_errors())
    for workload, mode in (("productpage-v1", "capture"), ("reviews-v2", "proxy"), ("istio-ingressgateway", "capture")):
        resources = generate(snapshot, Proxy.from_workload_entry(snapshot.workload(workload), mode=mode))
        assert resources.clusters and resources.listeners and resources.routes
        verdict = envoy_validate(static_bootstrap(resources))
        assert verdict.ok, f"{sample.name} for {workload} ({mode}): {verdict.output}"


def test_mtls_destination_rules_translate_to_istio_mutual_clusters() -> None:
    snapshot = MeshSnapshot(
        load_paths(
            [BOOKINFO / "services.yaml", BOOKINFO / "networking" / "destination-rule-all-mtls.yaml"]
        ).raise_for_errors()
    )
    resources = generate(snapshot, Proxy.from_workload_entry(snapshot.workload("productpage-v1")))
    cluster = resources.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
    sans = tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]
    assert (
        sans["match_typed_subject_alt_names"][0]["matcher"]["exact"]
        == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    )
    assert envoy_validate(static_bootstrap(resources)).ok
