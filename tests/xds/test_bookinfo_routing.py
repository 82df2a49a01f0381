"""Istio's Bookinfo routing tasks, checked through simulation: the requests of each task land where
Istio's documentation says they do, with the faults it describes, from sidecars in both modes and
through the ingress gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from plait.api import load_paths, load_text
from plait.model import MeshSnapshot, Proxy
from plait.xds.simulate import Outcome, Request, simulate_mesh

BOOKINFO = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo"
BASE = [
    BOOKINFO / "services.yaml",
    BOOKINFO / "networking" / "bookinfo-gateway.yaml",
    BOOKINFO / "networking" / "destination-rule-all.yaml",
]
JASON = {"end-user": "jason"}
MODES = ["capture", "proxy"]


def reviews(version: str = "") -> str:
    return f"outbound|9080|{version}|reviews.default.svc.cluster.local"


def ratings(version: str = "") -> str:
    return f"outbound|9080|{version}|ratings.default.svc.cluster.local"


def mesh(*samples: str) -> MeshSnapshot:
    return MeshSnapshot(load_paths(BASE + [BOOKINFO / "networking" / s for s in samples]).raise_for_errors())


def send(
    snapshot: MeshSnapshot, workload: str, url: str, headers: dict[str, str] | None = None, mode: str = "capture"
) -> Outcome:
    proxy = Proxy.from_workload_entry(snapshot.workload(workload), mode=mode)  # type: ignore[arg-type]
    return simulate_mesh(snapshot, proxy, Request.from_url(url, headers=(headers or {}).items()))


def to_reviews(snapshot: MeshSnapshot, headers: dict[str, str] | None = None, mode: str = "capture") -> Outcome:
    return send(snapshot, "productpage-v1", "http://reviews:9080/reviews/0", headers, mode)


def to_ratings(snapshot: MeshSnapshot, headers: dict[str, str] | None = None, mode: str = "capture") -> Outcome:
    return send(snapshot, "reviews-v2", "http://ratings:9080/ratings/0", headers, mode)


@pytest.mark.parametrize("mode", MODES)
def test_without_virtual_service_reviews_round_robins_over_every_version(mode: str) -> None:
    outcome = to_reviews(mesh(), mode=mode)
    assert outcome.cluster_names == [reviews()] and outcome.route == "default"
    assert sorted(e.address for e in outcome.clusters[0].endpoints) == [
        "10.244.0.13:9080",
        "10.244.0.14:9080",
        "10.244.0.15:9080",
    ]


@pytest.mark.parametrize("mode", MODES)
def test_all_v1(mode: str) -> None:
    snapshot = mesh("virtual-service-all-v1.yaml")
    for headers in (None, JASON):
        outcome = to_reviews(snapshot, headers, mode)
        assert outcome.cluster_names == [reviews("v1")]
        assert outcome.virtual_service == "default/reviews"
        assert [e.address for e in outcome.clusters[0].endpoints] == ["10.244.0.13:9080"]
    assert to_ratings(snapshot, mode=mode).cluster_names == [ratings("v1")]
    details = send(snapshot, "productpage-v1", "http://details:9080/details/0", mode=mode)
    assert details.cluster_names == ["outbound|9080|v1|details.default.svc.cluster.local"]


@pytest.mark.parametrize("mode", MODES)
def test_reviews_test_v2_sends_jason_to_v2_and_others_to_v1(mode: str) -> None:
    snapshot = mesh("virtual-service-reviews-test-v2.yaml")
    jason = to_reviews(snapshot, JASON, mode)
    assert (jason.cluster_names, jason.vs_route) == ([reviews("v2")], "http[0].match[0]")
    other = to_reviews(snapshot, {"end-user": "anna"}, mode)
    assert (other.cluster_names, other.vs_route) == ([reviews("v1")], "http[1]")
    assert to_reviews(snapshot, mode=mode).cluster_names == [reviews("v1")]


@pytest.mark.parametrize("mode", MODES)
def test_reviews_jason_v2_v3(mode: str) -> None:
    snapshot = mesh("virtual-service-reviews-jason-v2-v3.yaml")
    assert to_reviews(snapshot, JASON, mode).cluster_names == [reviews("v2")]
    others = to_reviews(snapshot, mode=mode)
    assert others.cluster_names == [reviews("v3")]
    assert [e.address for e in others.clusters[0].endpoints] == ["10.244.0.15:9080"]


@pytest.mark.parametrize("mode", MODES)
def test_reviews_80_20_splits_exactly_80_20_between_v1_and_v2(mode: str) -> None:
    snapshot = mesh("virtual-service-reviews-80-20.yaml")
    for headers in (None, JASON):
        outcome = to_reviews(snapshot, headers, mode)
        assert outcome.action == "weighted_clusters"
        assert [(c.name, c.weight, c.percent) for c in outcome.clusters] == [
            (reviews("v1"), 80, 80.0),
            (reviews("v2"), 20, 20.0),
        ]


@pytest.mark.parametrize("mode", MODES)
def test_ratings_delay_holds_jason_7s_and_nobody_else(mode: str) -> None:
    snapshot = mesh("virtual-service-ratings-test-delay.yaml")
    jason = to_ratings(snapshot, JASON, mode)
    assert jason.cluster_names == [ratings("v1")]
    fault = jason.policies.fault
    assert (fault.delay, fault.delay_percent, fault.abort_http_status) == ("7s", 100.0, None)
    other = to_ratings(snapshot, mode=mode)
    assert other.cluster_names == [ratings("v1")] and other.policies.fault is None


@pytest.mark.parametrize("mode", MODES)
def test_ratings_abort_answers_jason_500(mode: str) -> None:
    snapshot = mesh("virtual-service-ratings-test-abort.yaml")
    fault = to_ratings(snapshot, JASON, mode).policies.fault
    assert (fault.abort_http_status, fault.abort_percent, fault.delay) == (500, 100.0, None)
    assert to_ratings(snapshot, mode=mode).policies.fault is None


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/productpage", "http[0].match[0]"),
        ("/static/style.css", "http[0].match[1]"),
        ("/login", "http[0].match[2]"),
        ("/api/v1/products/1", "http[0].match[4]"),
    ],
)
def test_gateway_sends_bookinfo_paths_to_productpage(path: str, rule: str) -> None:
    outcome = send(mesh(), "istio-ingressgateway", f"http://bookinfo.example.com{path}")
    assert outcome.listener == "0.0.0.0_80"
    assert outcome.cluster_names == ["outbound|9080||productpage.default.svc.cluster.local"]
    assert (outcome.virtual_service, outcome.vs_route) == ("default/bookinfo", rule)
    assert [e.address for e in outcome.clusters[0].endpoints] == ["10.244.0.16:9080"]


@pytest.mark.parametrize("path", ["/unknown", "/productpage/extra", "/"])
def test_gateway_answers_404_to_other_paths(path: str) -> None:
    outcome = send(mesh(), "istio-ingressgateway", f"http://bookinfo.example.com{path}")
    assert (outcome.status, outcome.response_flag, outcome.clusters) == (404, "NR", [])


RATINGS_FOR_REVIEWS_V2_ONLY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match: [{sourceLabels: {app: reviews, version: v2}}]
    route: [{destination: {host: ratings, subset: v1}}]
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_virtual_service_for_other_sources_leaves_the_default_route(mode: str) -> None:
    snapshot = MeshSnapshot(
        [*load_paths(BASE).raise_for_errors(), *load_text(RATINGS_FOR_REVIEWS_V2_ONLY).raise_for_errors()]
    )
    chosen = send(snapshot, "reviews-v2", "http://ratings:9080/ratings/0", mode=mode)
    assert (chosen.cluster_names, chosen.virtual_service) == ([ratings("v1")], "default/ratings")
    other = send(snapshot, "reviews-v3", "http://ratings:9080/ratings/0", mode=mode)
    assert (other.cluster_names, other.route, other.status) == ([ratings()], "default", None)
