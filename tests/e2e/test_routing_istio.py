"""Routing behaviours that must be Istio's, through a real Envoy and checked against the simulation:
the default route when a VirtualService has no route for a client, JWT claim routing at a gateway,
retry settings, weights that do not add up to 100."""

from __future__ import annotations

import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.testing.backends import service_yaml
from plait.testing.http import Reply, http_request
from plait.xds.simulate import Outcome, Request, simulate_mesh

REVIEWS_SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

CANARY_ONLY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: canary}}]
    route: [{destination: {host: reviews, subset: v2}}]
"""


class LabelledSidecar:
    """A client sidecar (explicit-proxy mode) with labels, and the simulation of the same mesh."""

    def __init__(self, mesh, labels: dict[str, str], *yaml_parts: str):
        self.proxy = Proxy(kind="sidecar", ip=mesh.client_ip, name="client", namespace="default", mode="proxy",
                           labels=labels)
        self.snapshot = MeshSnapshot(load_text("---\n".join(yaml_parts)).raise_for_errors())
        self.envoy, self.ip = mesh.envoy(self.proxy, *yaml_parts), mesh.client_ip

    def get(self, url: str, headers: dict[str, str] | None = None) -> Reply:
        return http_request(self.ip, EXPLICIT_PROXY_PORT, url, headers)

    def simulate(self, url: str, headers: dict[str, str] | None = None) -> Outcome:
        return simulate_mesh(self.snapshot, self.proxy, Request.from_url(url, headers=(headers or {}).items()))


@pytest.mark.parametrize(("labels", "expected"), [({"app": "canary"}, {"reviews-v2"}),
                                                   ({"app": "client"}, {"reviews-v1", "reviews-v2"})],
                         ids=["matching-source", "other-source"])
def test_a_virtual_service_with_no_route_for_the_client_leaves_the_default_route(mesh, labels, expected):
    v1, v2 = mesh.http_backend("reviews-v1", 11), mesh.http_backend("reviews-v2", 12)
    sidecar = LabelledSidecar(mesh, labels, service_yaml("reviews", 9080, {"v1": v1, "v2": v2}), REVIEWS_SUBSETS,
                              CANARY_ONLY)
    answers = {sidecar.get("http://reviews:9080/reviews/1").backend for _ in range(12)}
    assert answers == expected  # 12 round-robin requests reach both versions
    simulated = sidecar.simulate("http://reviews:9080/reviews/1")
    if labels["app"] == "canary":
        assert (simulated.virtual_service, simulated.cluster_names) == (
            "default/reviews", ["outbound|9080|v2|reviews.default.svc.cluster.local"])
    else:
        assert (simulated.route, simulated.virtual_service, simulated.cluster_names) == (
            "default", None, ["outbound|9080||reviews.default.svc.cluster.local"])
